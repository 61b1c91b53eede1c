"""A tiny offline model for tests, the demo and `rehearse`: `python -m train.tiny --out DIR [--like BASE]`.

Random weights in the Llama architecture plus a byte-level BPE tokenizer trained
here with `tokenizers` on the shipped samples (train/samples/*.jsonl): no hub
access. Its chat template is train/template.py's.

Size: vocab 1,024 · hidden 64 · 2 layers · 4 heads (2 KV) · MLP 128
  embeddings + head: 2 × 1,024 × 64 = 131k; per layer: 4 attention + 3 MLP
  projections ≈ 3 × 64² + 2 × 64 × 32 + 3 × 64 × 128 ≈ 41k → about 0.2M params,
  a few ms per step on one CPU core at seq 64.

--like BASE (amigo-burst rehearse's stand-in): the same tiny sizes in the base's architecture family
(Mistral, Qwen2 or Llama: the family's config class and modules, so LoRA targets and the trainer's
code paths are the base's), with the base's own tokenizer and chat template when they can be had
offline (a local folder, or the Hugging Face cache), else the built-in tokenizer above.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from train.template import CHAT_TEMPLATE

SAMPLES = Path(__file__).parent / "samples"

SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def sample_texts(folder: Path = SAMPLES) -> list[str]:
    """Every string value of every shipped sample row: the tokenizer's training corpus."""
    texts: list[str] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(v for v in json.loads(line).values() if isinstance(v, str))
    return texts


def build_tokenizer(vocab_size: int = 1024, texts: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
    )
    tok.train_from_iterator(texts if texts is not None else sample_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


FAMILIES = ("llama", "mistral", "qwen2")


def family_of(name: str) -> str:
    """A model_type or architecture name -> the stand-in family ("mistral-nemo-12b" -> mistral)."""
    low = name.lower()
    return next((f for f in ("mistral", "qwen2") if f in low or (f == "qwen2" and "qwen" in low)), "llama")


def build_model(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0, family: str = "llama"):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    torch.manual_seed(seed)
    config_cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[family]
    extra = {"head_dim": hidden // 4} if family != "llama" else {}
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048 if family == "llama" else 32768,  # the stand-in meets stage 4's 8k rows
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **extra,  # Mistral/Qwen2 take an explicit head_dim (Nemo's is not hidden / heads)
    )
    return AutoModelForCausalLM.from_config(config)


def write_tiny(out: str | Path, vocab_size: int = 1024, hidden: int = 64, layers: int = 2) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    model = build_model(tokenizer, hidden=hidden, layers=layers)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def base_tokenizer(base: str):
    """The base's tokenizer without the network (a local folder or the HF cache), else None."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, gated, no tokenizer files: the built-in one stands in
        return None


def base_family(base: str, hint: str = "") -> str:
    """The base's model_type from its config.json (local or cached), else from the hint (the arch name)."""
    from transformers import AutoConfig

    try:
        return family_of(AutoConfig.from_pretrained(base, local_files_only=True).model_type)
    except Exception:  # noqa: BLE001 - not cached: the architecture preset's name tells the family
        return family_of(hint or base)


def write_standin(out: str | Path, base: str, hint: str = "") -> dict:
    """A tiny random-weight model of the base's family with the base's tokenizer when cached."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = base_tokenizer(base)
    source = f"{base} (cached)" if tokenizer is not None else "built-in (base tokenizer not cached)"
    if tokenizer is None:
        tokenizer = build_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    family = base_family(base, hint)
    model = build_model(tokenizer, family=family)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"like": base, "family": family, "tokenizer": source,
            "params": sum(p.numel() for p in model.parameters())}
    (out / "standin.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.tiny", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write the model and tokenizer into")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--like", metavar="BASE", help="stand-in for BASE: its family and (if cached) its tokenizer")
    p.add_argument("--family-hint", default="", help="with --like: a name telling the family when BASE's "
                                                       "config is not cached (e.g. mistral-nemo-12b)")
    a = p.parse_args(argv)
    if a.like:
        info = write_standin(a.out, a.like, a.family_hint)
        print(f"stand-in written to {a.out}: tiny {info['family']} ({info['params']:,} params), "
              f"tokenizer {info['tokenizer']}")
        return 0
    out = write_tiny(a.out, a.vocab_size, a.hidden, a.layers)
    print(f"tiny model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
