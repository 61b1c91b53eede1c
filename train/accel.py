"""Optional accelerants, each falling back cleanly; the choice and its reason go to metrics.json.

| lever | on when | why it pays |
|---|---|---|
| bf16 | CUDA compute capability >= 8.0 (Ampere+) | half the activation memory of fp32, tensor cores |
| fp16 + loss scaling | CUDA below 8.0 (T4 7.5, V100 7.0) | the same halving where bf16 is only emulated |
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

    # bf16 where the GPU computes it natively (compute capability >= 8.0). `is_bf16_supported()` is also
    # true on a T4 (7.5) or V100 (7.0), where bf16 is emulated at a fraction of fp16's speed: those get
    # fp16 mixed precision with loss scaling (fp16's 5 exponent bits underflow small gradients otherwise).
    cap = torch.cuda.get_device_capability() if cuda else None
    choice["compute_capability"] = f"{cap[0]}.{cap[1]}" if cap else None
    native_bf16 = cap is not None and cap >= (8, 0)
    want = _flag(cfg.bf16)
    choice["bf16"] = native_bf16 and want != "false"
    choice["fp16"] = cuda and not native_bf16
    if cuda and not native_bf16:
        why["bf16"] = f"compute capability {cap[0]}.{cap[1]} < 8.0 has no native bf16: fp16 with loss scaling"
    elif want == "true" and not cuda:
        why["bf16"] = "requested but no CUDA: fp32"

    # attention kernel (flash-attention 2 needs Ampere or newer too)
    flash_ok = cuda and native_bf16 and _has("flash_attn")
    if cfg.attn_implementation == "auto":
        choice["attn_implementation"] = "flash_attention_2" if flash_ok else "sdpa"
        if not flash_ok:
            why["attn_implementation"] = ("flash_attn not installed on CUDA: sdpa" if not cuda or native_bf16
                                          else "flash-attention 2 needs compute capability >= 8.0: sdpa")
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


def compute_dtype(choice: dict):
    """The half-precision dtype this machine computes in: fp16 below compute capability 8.0, else bf16
    (also QLoRA's on CPU: bitsandbytes dequantizes NF4 to it)."""
    import torch

    return torch.float16 if choice.get("fp16") else torch.bfloat16


def model_dtype(method: str, choice: dict):
    """Dtype of the frozen non-quantized weights: the compute dtype for QLoRA and for LoRA on a GPU,
    fp32 for LoRA on CPU. The trainable adapter stays fp32 in every case (model.upcast_trainable)."""
    import torch

    if method == "qlora" or choice["bf16"] or choice.get("fp16"):
        return compute_dtype(choice)
    return torch.float32


def describe(choice: dict) -> str:
    on = [k for k in ("bf16", "fp16", "packing", "liger") if choice.get(k)]
    return (
        f"device={choice['device']} attn={choice['attn_implementation']} optim={choice['optim']} "
        f"on=[{', '.join(on)}]" + "".join(f"; {k}: {v}" for k, v in choice["reasons"].items())
    )
