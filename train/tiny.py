"""A tiny offline model for tests and the demo: `python -m train.tiny --out DIR`.

Random weights in the Llama architecture plus a byte-level BPE tokenizer trained
here with `tokenizers` on the shipped samples (train/samples/*.jsonl): no hub
access. Its chat template is train/template.py's.

Size: vocab 1,024 · hidden 64 · 2 layers · 4 heads (2 KV) · MLP 128
  embeddings + head: 2 × 1,024 × 64 = 131k; per layer: 4 attention + 3 MLP
  projections ≈ 3 × 64² + 2 × 64 × 32 + 3 × 64 × 128 ≈ 41k → about 0.2M params,
  a few ms per step on one CPU core at seq 64.
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


def build_model(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def write_tiny(out: str | Path, vocab_size: int = 1024, hidden: int = 64, layers: int = 2) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    model = build_model(tokenizer, hidden=hidden, layers=layers)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.tiny", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write the model and tokenizer into")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args(argv)
    out = write_tiny(a.out, a.vocab_size, a.hidden, a.layers)
    print(f"tiny model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
