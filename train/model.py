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


def load_tokenizer(model_id: str):
    from transformers import AutoTokenizer

    from train.template import fallback_template

    tok = AutoTokenizer.from_pretrained(model_id)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # the mask, not the id, decides what is padding
    if not tok.chat_template:
        # Base checkpoints often ship no template; ours marks assistant turns with {% generation %}.
        tok.chat_template = fallback_template(tok.eos_token)
    return tok


def quantization_config(method: str):
    if method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    # NF4 + double quantization: 4 bits per weight + 8-bit absmax per 64-weight block, those absmax
    # quantized again per 256 blocks: 4 + 8/64 + 32/(64·256) ≈ 4.127 bits per weight.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
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
        quantization_config=quantization_config(method),
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


def enable_gradient_checkpointing(model) -> None:
    """What the Trainer does with gradient_checkpointing=True, for loops that are not a Trainer.

    use_reentrant=False: the non-reentrant variant works when no input requires grad and with
    frozen bases; enable_input_require_grads keeps the reentrant variant working too.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
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
