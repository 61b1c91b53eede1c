"""Optional accelerants, each falling back cleanly; the choice and its reason go to metrics.json.

| lever | on when | why it pays |
|---|---|---|
| bf16 | CUDA with bf16 support | half the activation memory of fp32, tensor cores |
| flash_attention_2 + packing (TRL bfd) | flash_attn importable on CUDA | no pad tokens: with code rows of 200-2,000 tokens padded to 2,048, ~half of each batch is padding |
| Liger kernels | liger_kernel importable on CUDA | fused linear cross-entropy never materialises the logits: 4 × 2,048 × 128,256 × 4 B (fp32 upcast) = 4.2 GB at seq 2048 × batch 4 on Llama 3 |
| paged_adamw_8bit | CUDA + bitsandbytes | optimizer states 2 × 1 B instead of 2 × 4 B per trainable parameter, paged to CPU under pressure |

Packing needs a varlen attention kernel: TRL's bfd packing is padding-free and relies on position_ids,
which SDPA ignores (sequences would attend across their boundaries), so without flash attention we pad.
"""

from __future__ import annotations

import importlib.util


def _flag(value) -> str:
    return str(value).lower()


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose(cfg, trainer: str = "sft") -> dict:
    """Resolve each `auto|true|false` knob against what this machine has. Pure apart from probing imports."""
    import torch

    cuda = torch.cuda.is_available()
    choice: dict = {"device": "cuda" if cuda else "cpu", "reasons": {}}
    why = choice["reasons"]

    # bf16
    want = _flag(cfg.bf16)
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    choice["bf16"] = bf16_ok and want != "false"
    if want == "true" and not bf16_ok:
        why["bf16"] = "requested but no CUDA bf16 support: fp32"

    # attention kernel
    flash_ok = cuda and _has("flash_attn")
    if cfg.attn_implementation == "auto":
        choice["attn_implementation"] = "flash_attention_2" if flash_ok else "sdpa"
        if not flash_ok:
            why["attn_implementation"] = "flash_attn not installed on CUDA: sdpa"
    elif cfg.attn_implementation == "flash_attention_2" and not flash_ok:
        choice["attn_implementation"] = "sdpa"
        why["attn_implementation"] = "flash_attention_2 requested but unavailable: sdpa"
    else:
        choice["attn_implementation"] = cfg.attn_implementation

    # packing (SFT only: DPO pairs are padded per pair)
    want = _flag(cfg.packing)
    varlen = choice["attn_implementation"].startswith("flash")
    choice["packing"] = trainer == "sft" and varlen and want != "false"
    if want != "false" and not choice["packing"]:
        why["packing"] = "dpo pairs are not packed" if trainer != "sft" else "needs a flash-attention kernel: padding"

    # Liger
    want = _flag(cfg.liger)
    liger_ok = cuda and _has("liger_kernel")
    choice["liger"] = liger_ok and want != "false"
    if want != "false" and not liger_ok:
        why["liger"] = "liger_kernel not installed" if cuda else "liger kernels are CUDA-only"

    # optimizer
    if cfg.optim == "auto":
        choice["optim"] = "paged_adamw_8bit" if cuda and _has("bitsandbytes") else "adamw_torch"
        if not cuda:
            why["optim"] = "paged 8-bit AdamW needs CUDA: adamw_torch"
    elif "8bit" in cfg.optim and not cuda:
        choice["optim"] = "adamw_torch"
        why["optim"] = f"{cfg.optim} needs CUDA: adamw_torch"
    else:
        choice["optim"] = cfg.optim
    return choice


def model_dtype(method: str, choice: dict):
    """Dtype of the non-quantized weights: bf16 for QLoRA (NF4 compute dtype) and for LoRA on a bf16 GPU,
    fp32 for LoRA on CPU."""
    import torch

    if method == "qlora" or choice["bf16"]:
        return torch.bfloat16
    return torch.float32


def describe(choice: dict) -> str:
    on = [k for k in ("bf16", "packing", "liger") if choice.get(k)]
    return (
        f"device={choice['device']} attn={choice['attn_implementation']} optim={choice['optim']} "
        f"on=[{', '.join(on)}]" + "".join(f"; {k}: {v}" for k, v in choice["reasons"].items())
    )
