"""Taking a stage's model home (lifecycle/export.py, ollama.py), checked by its real consumers:
transformers loads the merged folder and its logits equal base + adapter; llama.cpp (llama-cpp-python,
built from source) loads the GGUF, tokenizes as the HF tokenizer does, and generates; the Ollama
TEMPLATE renders a conversation exactly as the stage's chat template does.

Tolerances (max |logit difference| on a 23-token code prompt; the tiny model's logits span ±0.65 and
the adapter moves them by ~0.16, so each bound is far below what the adapter changes):
  LoRA, merged in fp32 ........ 1e-5 (measured 2.7e-7: only float summation order differs)
  LoRA, merged in bf16 ........ 1e-2 (measured 2.4e-3: bf16 keeps 8 bits of mantissa)
  QLoRA, merged into dequant(NF4) vs NF4 base + adapter ... 1e-2 (measured 4.5e-3: the NF4 forward
      computes in bf16); merging into the original weights instead misses by 7.8e-2 (asserted > 3x ours)
  GGUF bf16 in llama.cpp vs the merged model in transformers ... 1e-2 (measured 1.8e-3)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from amigo_burst.config import parse_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle import export as ex
from amigo_burst.lifecycle import ollama
from amigo_burst.lifecycle.models import StageModel
from amigo_burst.state.records import Run

REPO = Path(__file__).resolve().parents[1]
TEXT = "def add(a, b):\n    return a + b\n\nclass Foo:\n    pass"
CFG = parse_config('[project]\nname = "t"\n[model]\nbase = "x"\narch = "tiny"\n'
                   '[stages.1]\ndataset = { path = "d.jsonl" }\n')


def train(out: Path, model: Path, method: str) -> Path:
    subprocess.run([sys.executable, "-m", "train", "--stage", "1", "--config", "train/configs/demo.yaml",
                    "--model", str(model), "--data", "train/samples/stage1.jsonl", "--output-dir", str(out),
                    "--method", method], cwd=REPO, check=True, capture_output=True, timeout=900)
    return out / "adapter"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model) -> dict[str, StageModel]:
    d = tmp_path_factory.mktemp("export")
    return {m: StageModel(1, Run(id=f"s1-{m}", stage=1, target="local"), train(d / m, tiny_model, m),
                          str(tiny_model), m) for m in ("lora", "qlora")}


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits.float()


def prompt_ids(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)([TEXT], return_tensors="pt")["input_ids"]


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.slow
def test_lora_merge_equals_base_plus_adapter(adapters, tmp_path, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sm = adapters["lora"]
    ids = prompt_ids(tiny_model)
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), ids)
    ref = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                           str(sm.adapter)).eval(), ids)
    assert max_diff(ref, base) > 0.05, "the adapter must change the logits for the comparison to mean anything"
    for dtype, tol in (("fp32", 1e-5), ("bf16", 1e-2)):
        merged = ex.merge(CFG, sm, tmp_path / dtype, dtype, say=lambda s: None)
        files = {p.name for p in merged.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= files
        m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
        assert not any("lora" in n for n, _ in m.named_parameters())
        assert max_diff(logits(m, ids), ref) < tol, dtype
    on_disk = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert on_disk.dtype == torch.bfloat16


@pytest.mark.slow
def test_qlora_merge_matches_the_nf4_base_training_saw(adapters, tmp_path, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sm = adapters["qlora"]
    ids = prompt_ids(tiny_model)
    from train.model import quantization_config  # what training loads a QLoRA base with

    nf4 = AutoModelForCausalLM.from_pretrained(tiny_model, quantization_config=quantization_config("qlora"),
                                               dtype=torch.bfloat16)
    trained = logits(PeftModel.from_pretrained(nf4, str(sm.adapter)).eval(), ids)  # the forward training ran
    ours = max_diff(logits(AutoModelForCausalLM.from_pretrained(ex.merge(CFG, sm, tmp_path / "m", "fp32"),
                                                                dtype=torch.float32), ids), trained)
    naive = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                                      str(sm.adapter)).merge_and_unload()
    assert ours < 1e-2
    assert max_diff(logits(naive, ids), trained) > 3 * ours, "merging into the unquantized base drifts further"


@pytest.fixture(scope="module")
def merged_bf16(adapters, tmp_path_factory) -> Path:
    return ex.merge(CFG, adapters["lora"], tmp_path_factory.mktemp("mb") / "merged", "bf16", say=lambda s: None)


@pytest.mark.slow
def test_gguf_loads_in_llama_cpp_tokenizes_alike_and_matches_logits(merged_bf16, tmp_path):
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = ex.to_gguf(merged_bf16, tmp_path / "m.gguf", "bf16", say=lambda s: None)
    ids = AutoTokenizer.from_pretrained(merged_bf16)(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(merged_bf16, dtype=torch.float32)(torch.tensor([ids])).logits[0]
    llm = llama_cpp.Llama(model_path=str(gguf), logits_all=True, verbose=False, n_ctx=128)
    try:
        assert llm.metadata["tokenizer.ggml.pre"] == "gpt-2"
        assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
        llm.eval(ids)
        assert float(np.abs(np.array(llm.scores[:len(ids)]) - hf.numpy()).max()) < 1e-2
    finally:
        llm.close()


@pytest.mark.slow
def test_q4_k_m_gguf_generates_in_llama_cpp(merged_bf16, tmp_path):
    import llama_cpp

    gguf = ex.to_gguf(merged_bf16, tmp_path / "m.gguf", "Q4_K_M", say=lambda s: None)
    assert not list(tmp_path.glob("*.bf16.gguf")), "the intermediate bf16 file is removed"
    llm = llama_cpp.Llama(model_path=str(gguf), verbose=False, n_ctx=256)
    try:
        assert llm.metadata["general.file_type"] == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        out = llm("<s><|user|>\nWrite add(a, b)<|end|>\n<|assistant|>\n", max_tokens=8, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()
    assert ex.adds_bos(gguf) is False  # the tiny tokenizer adds none: the Modelfile's TEMPLATE writes <s>


def test_unknown_bpe_pre_tokenizer_is_only_answered_for_a_gpt2_split(tmp_path):
    import json

    def tj(pre, normalizer=None):
        (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}, "pre_tokenizer": pre,
                                                             "normalizer": normalizer}))
        return ex.gpt2_split(tmp_path)

    assert tj({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True})
    assert not tj({"type": "ByteLevel", "add_prefix_space": True, "use_regex": True})
    assert not tj({"type": "Sequence", "pretokenizers": []})
    assert not tj({"type": "ByteLevel", "add_prefix_space": False}, normalizer={"type": "NFC"})


# --- Ollama --------------------------------------------------------------------------------------------

CONVO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse a string."},
         {"role": "assistant", "content": "```python\ns[::-1]\n```"}, {"role": "user", "content": "In C?"}]


@pytest.fixture(scope="module")
def tok():
    from train.tiny import build_tokenizer

    return build_tokenizer(256)


def test_ollama_template_renders_like_the_chat_template(tok):
    p = ollama.pieces(tok)
    assert ollama.assemble(p, CONVO) == tok.apply_chat_template(CONVO, tokenize=False, add_generation_prompt=True)
    text = ollama.modelfile("./model.gguf", tok, adds_bos=False)
    assert text.startswith("FROM ./model.gguf\n")
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    # Ollama's Go text/template syntax, spelled out (no Go here to run it): one range, one if/else-if chain,
    # each closed; the literal text between the actions is the Jinja template's own
    assert template == (
        '<s>{{ range .Messages }}{{ if eq .Role "system" }}<|system|>\n{{ .Content }}<|end|>\n'
        '{{ else if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n'
        '{{ else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}<|end|>{{ end }}{{ end }}<|assistant|>\n')
    assert template.count("{{ end }}") == template.count("{{ if ") + template.count("{{ range ")
    assert 'PARAMETER stop "<|end|>"' in text and 'PARAMETER stop "<|user|>"' in text
    assert not ollama.go_template(p, with_bos=False).startswith("<s>"), "llama.cpp adds BOS: not twice"


def test_ollama_chatml_works_and_a_merged_system_turn_is_refused(tok):
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = ollama.pieces(tok)
    assert ollama.assemble(p, CONVO) == tok.apply_chat_template(CONVO, tokenize=False, add_generation_prompt=True)
    # Mistral-style: the system text is folded into the last user turn: no per-message TEMPLATE exists
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
                         "{% if loop.last and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n"
                         "{% endif %}{{ m['content'] }}[/INST]{% elif m['role'] == 'assistant' %}{{ m['content'] }}"
                         "{{ eos_token }}{% endif %}{% endfor %}")
    with pytest.raises(UserError, match="system message"):
        ollama.modelfile("./m.gguf", tok, adds_bos=True)
