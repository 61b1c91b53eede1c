"""One model loader for everything that runs a trained model: the benchmark (train/humaneval.py, on the
training machine and for `eval`), `try`, `export`'s merge and its parity check. The controller imports
this module (as it imports train/schema.py); torch, transformers and peft only inside functions.

    plan = plan_load(base, method="qlora", device="auto", purpose="infer")   # pure decision, with reason
    model, tok, plan = load(base, adapter, method=None, device="auto")       # method None: the adapter's
    adapter_effect(model, tok)                                               # > 0: the adapter is applied

The rules, in one place:
- device: "auto" takes CUDA when there is one; "cpu" and "cuda" are obeyed ("cuda" without one refused).
- method "qlora" (the adapter learned against an NF4 base): the base loads in NF4 exactly as training
  loaded it (double quantization, bf16 compute), on the GPU or on the CPU (bitsandbytes runs NF4 there).
- method "lora": bf16 on a GPU with native bf16, fp16 below compute capability 8.0, fp32 on the CPU. A
  GPU smaller than those weights (x1.2 for activations and the KV cache) gets the NF4 base instead, said
  in the plan's reason: a 12B LoRA chain (~24.5 GB in bf16) runs on the 6 GB laptop only that way.
- purpose "merge": the merged weights are dequantized (bf16, 2 bytes per parameter: a 12B base is
  ~24.5 GB). They go to a GPU only when it holds them x1.2; otherwise the merge runs on the CPU (RAM, not
  VRAM) and the plan says so. Never a dequantized base on a GPU smaller than it.
- the tokenizer, and with it the chat template: the adapter folder's (what the stage trained through),
  else the base's; `training_template=True` gives a base without a usable template the fallback one
  training gives it (train/model.py), so the base alone is prompted as its stages are.
`cuda_memory()` is the one question asked of the device: tests fake it and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from train.schema import ADAPTER_META, TrainInputError

FIT_MARGIN = 1.2  # weights x this must fit: activations, the KV cache, CUDA's own context
PROBE_PROMPT = "def fibonacci(n):\n    "  # the fixed prompt of the adapter check


@dataclass(frozen=True)
class LoadPlan:
    device: str  # cuda | cpu
    dtype: str  # bfloat16 | float16 | float32: the weights' (NF4's compute dtype when quantized)
    nf4: bool  # the base in NF4
    reason: str  # why this device/dtype (one line, for logs and metrics)

    def to_record(self) -> dict:
        return {"device": self.device, "dtype": self.dtype, "nf4": self.nf4, "reason": self.reason}


def cuda_memory() -> int | None:
    """Total bytes of GPU 0, or None without CUDA. The only device query of this module."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info(0)[1]


def native_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def param_count(base: str) -> int:
    """Parameters of the base, counted on the meta device from its config (nothing is loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise TrainInputError(f"cannot load the base model {base}: {_first(e)}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def plan_load(params: int, method: str, device: str = "auto", purpose: str = "infer",
              gpu_bytes: int | None = None, bf16: bool = True) -> LoadPlan:
    """Pure: where and how to load a base of `params` parameters (gpu_bytes: cuda_memory())."""
    if device == "cuda" and gpu_bytes is None:
        raise TrainInputError("--device cuda: no CUDA GPU here")
    half = "bfloat16" if bf16 else "float16"
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    if purpose == "merge":
        need = params * 2 * FIT_MARGIN  # the dequantized (bf16) model
        if gpu_bytes is not None and device != "cpu" and need <= gpu_bytes:
            return LoadPlan("cuda", half, method == "qlora", f"merge on the GPU: {gib(need)} fits its {gib(gpu_bytes)}")
        why = (f"the dequantized base ({gib(params * 2)}) x{FIT_MARGIN} exceeds the GPU's {gib(gpu_bytes)}"
               if gpu_bytes is not None and device != "cpu" else "no GPU" if gpu_bytes is None else "--device cpu")
        return LoadPlan("cpu", "bfloat16" if method == "qlora" else "float32", method == "qlora",
                        f"merge on the CPU ({why}): RAM, not VRAM, holds the dequantized weights")
    if gpu_bytes is None or device == "cpu":
        if method == "qlora":
            return LoadPlan("cpu", "bfloat16", True, "the CPU, the base in NF4 as QLoRA trained it")
        return LoadPlan("cpu", "float32", False, "the CPU in fp32")
    if method == "qlora":
        return LoadPlan("cuda", half, True, "the GPU, the base in NF4 as QLoRA trained it")
    need = params * 2 * FIT_MARGIN
    if need <= gpu_bytes:
        return LoadPlan("cuda", half, False, f"the GPU in {half}")
    return LoadPlan("cuda", half, True, f"the GPU with the base in NF4: {gib(need)} of {half} weights do not fit "
                                        f"its {gib(gpu_bytes)} (LoRA trained on the {half} base)")


def adapter_method(adapter: str | Path | None) -> str | None:
    """How the adapter's base was loaded in training (its amigo_adapter.json), None if unrecorded."""
    if adapter is None:
        return None
    try:
        meta = json.loads((Path(adapter) / ADAPTER_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    m = meta.get("method") if isinstance(meta, dict) else None
    return m if m in ("lora", "qlora") else None


def load_tokenizer(base: str, adapter: str | Path | None = None, training_template: bool = False):
    """(tokenizer, template): template is "adapter", "base", "fallback" (training's, for a base without a
    usable one) or None (no chat template: plain completion only). Left padding: batched generation."""
    from transformers import AutoTokenizer

    src = str(adapter) if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base
    try:
        tok = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise TrainInputError(f"{src}: cannot load the tokenizer ({_first(e)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # the mask, not the id, decides what is padding
    tok.padding_side = "left"
    template = ("adapter" if src != base else "base") if tok.chat_template else None
    if training_template and src == base:
        from train.preflight import template_note
        from train.template import fallback_template

        if template_note(tok.chat_template):  # the same decision train/model.py makes for every stage
            tok.chat_template, template = fallback_template(tok.eos_token), "fallback"
    return tok, template


def load(base: str, adapter: str | Path | None = None, method: str | None = None, device: str = "auto",
         purpose: str = "infer", training_template: bool = False):
    """(model in eval mode, tokenizer, LoadPlan). method None: the adapter's recorded method, else lora."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    method = method or adapter_method(adapter) or "lora"
    gpu = cuda_memory()
    plan = plan_load(param_count(base), method, device, purpose, gpu, bf16=gpu is None or native_bf16())
    tok, _ = load_tokenizer(base, adapter, training_template)
    dtype = getattr(torch, plan.dtype)
    kwargs: dict = {"dtype": dtype, "device_map": {"": 0 if plan.device == "cuda" else "cpu"}}
    if plan.nf4:  # what training used (train/model.quantization_config), with this plan's compute dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as e:
        raise TrainInputError(f"cannot load the base model {base}: {_first(e)}") from None
    missing = 0
    if adapter:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings(record=True) as caught:  # PEFT warns, and loads nothing, on unmatched keys
            warnings.filterwarnings("always", message=".*missing adapter keys")
            model = PeftModel.from_pretrained(model, str(adapter))
        missing = sum("missing adapter keys" in str(w.message) for w in caught)
    model.eval()
    model.amigo_missing_keys = missing  # read by require_applied: why an adapter changes nothing
    return model, tok, plan


def load_merged(base: str, adapter: str | Path, method: str | None = None, dtype: str = "bfloat16",
                device: str = "auto"):
    """(model, LoadPlan): base + adapter merged into plain weights of `dtype`, on the CPU. Where the merge
    runs: plan_load(purpose="merge"). A QLoRA adapter learned its update against dequant(NF4(W)), not W:
    the base is loaded in NF4 as training loaded it and dequantized, then the update goes on top (merging
    into the original W would bring back NF4's rounding error, ~1% of each weight)."""
    import torch
    from peft import PeftModel

    method = method or adapter_method(adapter) or "lora"
    model, _, plan = load(base, None, method, device, purpose="merge")
    out = getattr(torch, dtype)
    if plan.nf4:
        model = model.dequantize(dtype=out)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.to(device="cpu", dtype=out), plan


def adapter_effect(model, tok, prompt: str = PROBE_PROMPT) -> float:
    """The largest change the adapter makes to the next-token logits of a fixed prompt (base + adapter
    against the same weights with the adapter disabled). 0.0 exactly: the adapter does nothing - not
    loaded (its weights matched no module), or untrained (LoRA's B starts at zero)."""
    import torch

    enc = {k: v.to(model.device) for k, v in tok(prompt, return_tensors="pt").items()}
    with torch.inference_mode():
        on = model(**enc).logits[0, -1].float()
        with model.disable_adapter():
            off = model(**enc).logits[0, -1].float()
    return float((on - off).abs().max())


def require_applied(model, tok) -> float:
    """adapter_effect, refusing (TrainInputError) a model the adapter does not change: scoring it would
    report the base's score as the stage's."""
    effect = adapter_effect(model, tok)
    if effect == 0.0:
        why = ("its weights matched no module of the base (PEFT: missing adapter keys)"
               if getattr(model, "amigo_missing_keys", 0) else "not applied, or untrained")
        raise TrainInputError(f"the adapter does not change the model's output (logits on a fixed prompt equal "
                              f"the base's): {why}; refusing to score the base as the stage")
    return effect


def _first(e: Exception) -> str:
    return (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
