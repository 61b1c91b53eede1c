"""Training throughput and memory of the project's own training path, on random weights.

    python bench/train_bench.py --shape tiny --method lora --seq 64 --batch 2 --steps 4          # CPU
    python bench/train_bench.py --shape 8b --method lora --seq 2048 --batch 4 --steps 20         # H100
    python bench/train_bench.py --shape 8b --method lora --seq 2048 --batch 4 --steps 20 --baseline

Prints one JSON line (and appends it to --out FILE): shape, method, seq, batch, device, tokens_per_s,
median_step_s, peak_mem_gib, mfu, accelerants. Shapes are the real architectures with random weights
(nothing downloaded): Llama 3.2 1B/3B, Llama 3.1 8B, Mistral Nemo 12B; `tiny` is train.tiny's model.

Default mode runs S steps through train/ (train.model loading, train.sft.build_trainer, the same
TrainingArguments and accelerant choice as `python -m train`). --baseline is the plain reference:
transformers + PEFT, torch AdamW, SDPA, gradient checkpointing, a hand-written loop.

MFU on a 4·N·T basis: a LoRA step does the forward (2·N·T FLOPs) and the activation-gradient half of
the backward (2·N·T); frozen weights get no weight gradients. Checkpointing's recompute (another
2·N·T) is overhead, not counted. 8B at 9,600 tokens/s: 4 × 8.03e9 × 9,600 = 3.1e14 → 31% of 989 TFLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    # Llama 3.2 1B / 3B: tied embeddings, 128,256 vocab
    "1b": dict(arch="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "3b": dict(arch="llama", hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    # Llama 3.1 8B
    "8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    # Mistral Nemo 12B: head_dim 128 (not 5120/32 = 160), 131,072 vocab
    "12b": dict(arch="mistral", hidden_size=5120, intermediate_size=14336, num_hidden_layers=40,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=131072,
                tie_word_embeddings=False, rope_theta=1000000.0),
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12,
                   "4050": 44e12}


def build_model_dir(shape: str, cache: Path) -> Path:
    """A random-weight checkpoint of the shape on disk (cached), plus the tiny tokenizer."""
    import torch

    from train.tiny import build_tokenizer, write_tiny

    out = cache / shape
    if (out / "config.json").is_file():
        return out
    if shape == "tiny":
        return write_tiny(out)
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    config = (LlamaConfig if arch == "llama" else MistralConfig)(max_position_embeddings=8192, **spec)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # init on the GPU: seconds instead of minutes for 12B
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def _peak_gib(torch) -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _random_ids(n_rows: int, seq: int, vocab: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n_rows, seq), generator=g)


def run_project(a, model_dir: Path) -> dict:
    """S steps through train/: the same loading, TrainingArguments and accelerants as `python -m train`."""
    import torch
    from datasets import Dataset

    from train import model as M
    from train import sft
    from train.config import TrainConfig
    from train.session import Session

    tmp = tempfile.mkdtemp(prefix="amigo-bench-")
    cfg = TrainConfig(
        stage=1, model=str(model_dir), method=a.method, data="synthetic", output_dir=tmp,
        max_length=a.seq, per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        max_steps=a.steps, logging_steps=1, save_steps=10**9, warmup_steps=0, resume="never",
        liger=False if a.no_liger else "auto", packing="false",  # rows are exactly seq long: nothing to pack
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON line only
        session = Session(cfg)
    session.reporter.enabled = False
    tokenizer, _ = M.load_tokenizer(cfg.model)
    model = M.with_adapter(M.load_base_model(cfg.model, cfg.method, session.choice), cfg)
    n_params = model.get_nb_trainable_parameters()[1]
    ids = _random_ids(a.batch * a.steps, a.seq, model.config.vocab_size)
    dataset = Dataset.from_dict({"input_ids": ids.tolist()})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = sft.build_trainer(cfg, session, model, tokenizer, dataset, assistant_only_loss=False)
    trainer.train()
    return _result(a, session.progress.step_times, n_params, torch, session.choice)


def run_baseline(a, model_dir: Path) -> dict:
    """The plain reference: transformers + PEFT, torch AdamW, SDPA, gradient checkpointing, bf16 on GPU."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from train.model import enable_gradient_checkpointing

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa").to(device)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    enable_gradient_checkpointing(model)  # includes model.train(): from_pretrained left it in eval mode
    n_params = model.get_nb_trainable_parameters()[1]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = _random_ids(a.batch * a.steps, a.seq, model.config.vocab_size).to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(a.steps):
        batch = ids[step * a.batch:(step + 1) * a.batch]
        t = time.perf_counter()
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return _result(a, times, n_params, torch, {"baseline": "transformers+peft, torch AdamW, sdpa, grad ckpt"})


def _result(a, step_times: list[float], n_params: int, torch, accelerants: dict) -> dict:
    steady = step_times[1:] or step_times  # step 1 pays for allocation and kernel selection
    median = statistics.median(steady)
    tps = a.seq * a.batch / median
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((f for k, f in PEAK_BF16_FLOPS.items() if k in name), None)
    import peft
    import transformers

    return {
        "shape": a.shape, "method": a.method, "seq": a.seq, "batch": a.batch, "steps": a.steps,
        "mode": "baseline" if a.baseline else "project",
        "device": name, "tokens_per_s": round(tps, 1), "median_step_s": round(median, 4),
        "peak_mem_gib": round(_peak_gib(torch), 3),
        "peak_mem_kind": "cuda_max_allocated" if torch.cuda.is_available() else "process_max_rss",
        "params": n_params, "mfu": round(4 * n_params * tps / peak, 4) if peak else None,
        "accelerants": accelerants,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=["tiny", *SHAPES], default="tiny")
    p.add_argument("--method", choices=["lora", "qlora"], default="lora")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--no-liger", action="store_true", help="keep Liger kernels off even where installed")
    p.add_argument("--baseline", action="store_true", help="plain transformers+PEFT loop (LoRA only)")
    p.add_argument("--out", help="append the JSON line to this file")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "amigo-bench-models"))
    a = p.parse_args(argv)
    if a.baseline and a.method != "lora":
        p.error("--baseline is the LoRA reference; use --method lora")
    model_dir = build_model_dir(a.shape, Path(a.cache))
    result = (run_baseline if a.baseline else run_project)(a, model_dir)
    line = json.dumps(result)
    print(line, flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
