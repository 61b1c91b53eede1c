"""Loading the base model (LoRA or QLoRA), the tokenizer and the adapter.

QLoRA without `prepare_model_for_kbit_training`: that helper upcasts every non-quantized
weight (embeddings, LM head, norms) to fp32. On Mistral Nemo 12B the embeddings and head are
2 × 131,072 × 5,120 = 1.34e9 params: 2.7 GB in bf16, 5.4 GB in fp32, i.e. +2.7 GB for nothing
the LoRA update needs. What we keep from it: frozen base, input embeddings that require grad
(so reentrant checkpointing has a grad path), checkpointing on, and the module in train mode.

Gradient checkpointing is only active in train mode: transformers' checkpointed layers check
`self.training`, and `from_pretrained` returns the model in eval mode. The Trainer calls
model.train() itself; our own loops (bench baseline) must too. tests/test_train_gc.py counts
the recomputed forwards to prove it.
"""

from __future__ import annotations

from pathlib import Path

from train.schema import TrainInputError


def load_tokenizer(model_id: str):
    """(tokenizer, note): note says why the fallback template replaced the base's, None when it did not.

    Base checkpoints often ship no template, or one without {% generation %} markers (Mistral NeMo's):
    TRL's assistant-only loss needs the markers, so both get ours. Every stage of a chain decides the
    same way on the same base, so stage 5 sees the format stages 1-4 trained on.
    """
    from transformers import AutoTokenizer

    from train.preflight import template_note
    from train.template import fallback_template

    try:
        tok = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
        raise TrainInputError(f"{model_id}: cannot load the tokenizer ({first})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # the mask, not the id, decides what is padding
    note = template_note(tok.chat_template)
    if note:
        tok.chat_template = fallback_template(tok.eos_token)
    return tok, note


def quantization_config(method: str, choice: dict | None = None):
    if method != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    from train.accel import compute_dtype

    # NF4 + double quantization: 4 bits per weight + 8-bit absmax per 64-weight block, those absmax
    # quantized again per 256 blocks: 4 + 8/64 + 32/(64·256) ≈ 4.127 bits per weight. Dequantized to
    # bf16 for the matmuls (fp16 below compute capability 8.0).
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(choice or {}),
    )


def load_base_model(model_id: str, method: str, choice: dict):
    """The frozen base: bf16/fp32 for LoRA, NF4 for QLoRA, on this process's device."""
    import os

    from transformers import AutoModelForCausalLM

    from train.accel import model_dtype

    kwargs = {}
    if choice["device"] == "cuda":
        # one process per GPU under torchrun: put the whole model on this rank's GPU
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(
        model_id,
        dtype=model_dtype(method, choice),
        attn_implementation=choice["attn_implementation"],
        quantization_config=quantization_config(method, choice),
        **kwargs,
    )
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lora_config(cfg):
    from peft import LoraConfig

    # r=16 on all seven projections of Llama-3.1-8B, r × (in + out) each: q, o 4096+4096; k, v 4096+1024;
    # gate, up, down 4096+14336 → 16 × (2·8,192 + 2·5,120 + 3·18,432) = 16 × 81,920 = 1.31M per layer,
    # × 32 layers = 41.9M trainable params (0.5% of 8.03B).
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def with_adapter(base, cfg):
    """Stage 1 (or --from-base): a fresh LoRA adapter. Stages 2-5: the previous adapter, trainable."""
    from peft import PeftModel, get_peft_model

    if cfg.adapter_from:
        return PeftModel.from_pretrained(base, str(Path(cfg.adapter_from)), is_trainable=True)
    return get_peft_model(base, lora_config(cfg))


def upcast_trainable(model) -> int:
    """Trainable (adapter) weights to fp32; returns how many tensors changed dtype.

    TRL casts the adapter to bf16 when the base is quantized (sft_trainer.py / dpo_trainer.py, "QLoRA ...
    converted to bf16"). bf16 keeps 8 significant bits: an update below 2^-9 of a weight rounds away. At
    lr 5e-6 (stage 5) on weights of ~0.06, one Adam step of ~5e-6 is ~1e-4 of the weight, well under half
    a bf16 step (2^-9 ≈ 2e-3): most elements never change. In fp32 (24 bits) every update lands. The
    NF4 base still computes in bf16 (PEFT casts the layer input to the adapter's dtype and the output
    back); the optimizer, built at train(), then keeps fp32 states too. Costs 2 extra bytes per
    adapter parameter: 40M params → 80 MB.
    """
    import torch

    changed = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            changed += 1
    return changed


def enable_gradient_checkpointing(model) -> None:
    """What the Trainer does with activation_checkpointing=True, for loops that are not a Trainer.

    use_reentrant=False: the non-reentrant variant works when no input requires grad and with
    frozen bases; enable_input_require_grads keeps the reentrant variant working too.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()


def trainable_digest(model) -> str:
    """sha256 over the trainable weights (the adapter): equal across DDP ranks when they agree."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
