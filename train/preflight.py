"""Checks that run before the base model loads: a mistake costs a second, not minutes of loading.

- the method of a chain: `amigo_adapter.json`, saved beside adapter_config.json, records how an adapter
  was trained (method, quantization, the base's shape); a stage continuing from it uses that method;
- the adapter fits the base: layer count, hidden size, vocabulary (adapter metadata and tensor shapes
  against the base's config.json);
- the chat template: one without `{% generation %}` markers gets the fallback (assistant_only_loss
  needs the markers), and the stage's first rows must render.

Each failure is a TrainInputError: one line, exit 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from train.schema import ADAPTER_META as META
from train.schema import TrainInputError

GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
# LoRA targets whose input is the residual stream (in_features == hidden_size) and those writing back
# to it (out_features == hidden_size), for Llama/Mistral/Qwen-style decoders.
READS_HIDDEN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
WRITES_HIDDEN = ("o_proj", "down_proj")


# --- adapter metadata: one method for the whole chain -------------------------------------------


def read_adapter_meta(adapter_dir: str | Path | None) -> dict | None:
    """The adapter's amigo_adapter.json, or None (an adapter made elsewhere, or before this file existed)."""
    if not adapter_dir:
        return None
    p = Path(adapter_dir) / META
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TrainInputError(f"{p}: unreadable ({e.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise TrainInputError(f"{p}: expected a JSON object")
    return meta


def chain_method(method: str, adapter_from: str | None) -> str:
    """The method this stage trains with: the previous adapter's (auto), refused when --method differs."""
    meta = read_adapter_meta(adapter_from)
    recorded = (meta or {}).get("method")
    if recorded and method not in ("auto", recorded):
        raise TrainInputError(
            f"--method {method} contradicts {adapter_from}: that adapter was trained with {recorded} "
            f"({META}); continue with --method {recorded} (or auto), or start over with --from-base"
        )
    if method == "auto":
        return recorded or "lora"
    return method


def adapter_meta(cfg, base_config, template_note: str | None) -> dict:
    """What finish() writes into adapter/: how this adapter was trained and on what base."""
    text = base_config.get_text_config() if hasattr(base_config, "get_text_config") else base_config
    return {
        "method": cfg.method,
        "quantization": "nf4" if cfg.method == "qlora" else None,
        "base_model": cfg.model,
        "base": {
            "model_type": getattr(text, "model_type", None),
            "hidden_size": getattr(text, "hidden_size", None),
            "num_hidden_layers": getattr(text, "num_hidden_layers", None),
            "vocab_size": getattr(text, "vocab_size", None),
        },
        "stage": cfg.stage,
        "chat_template": "fallback" if template_note else "base",
    }


# --- the adapter fits the base ------------------------------------------------------------------


def load_base_config(model_id: str):
    """The base's config.json only (kilobytes): shapes to check before loading gigabytes of weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
        raise TrainInputError(f"{model_id}: cannot read the base model's config.json ({first})") from None


def check_adapter_fits_base(adapter_from: str, model_id: str, base_config) -> list[str]:
    """TrainInputError when the adapter was trained on another base; returns notes worth a log line."""
    text = base_config.get_text_config() if hasattr(base_config, "get_text_config") else base_config
    have = {"hidden_size": getattr(text, "hidden_size", None),
            "num_hidden_layers": getattr(text, "num_hidden_layers", None),
            "vocab_size": getattr(text, "vocab_size", None)}
    meta = read_adapter_meta(adapter_from) or {}
    want = meta.get("base") or {}
    diff = [f"{k} {want[k]} vs {have[k]}" for k in have if want.get(k) is not None and have[k] is not None
            and want[k] != have[k]]
    diff += _shape_mismatches(Path(adapter_from), have["hidden_size"], have["num_hidden_layers"])
    if diff:
        raise TrainInputError(
            f"{adapter_from} does not fit --model {model_id}: {'; '.join(dict.fromkeys(diff))} "
            f"(adapter vs base): pass the base it was trained on ({meta.get('base_model') or _named_base(adapter_from)})"
        )
    notes = []
    named = _named_base(adapter_from)
    if named and named != model_id:
        notes.append(f"adapter {adapter_from} names base {named}; training on {model_id} (same shapes)")
    return notes


def _named_base(adapter_from: str) -> str | None:
    try:
        cfg = json.loads((Path(adapter_from) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise TrainInputError(f"{adapter_from}/adapter_config.json: unreadable") from None
    return cfg.get("base_model_name_or_path")


def _shape_mismatches(adapter: Path, hidden: int | None, layers: int | None) -> list[str]:
    """LoRA tensor shapes (read from the safetensors header, no weights loaded) against the base."""
    f = adapter / "adapter_model.safetensors"
    if not f.is_file():
        return []
    from safetensors import safe_open

    out = []
    with safe_open(str(f), framework="pt") as st:
        for key in st.keys():
            shape = st.get_slice(key).get_shape()
            layer = re.search(r"\.layers\.(\d+)\.", key)
            if layer and layers is not None and int(layer.group(1)) >= layers:
                out.append(f"num_hidden_layers >= {int(layer.group(1)) + 1} vs {layers}")
            if hidden is None or len(shape) != 2:
                continue
            module = re.search(r"\.(\w+)\.lora_([AB])\.", key)
            if module is None:
                continue
            name, ab = module.groups()
            if ab == "A" and name in READS_HIDDEN and shape[1] != hidden:
                out.append(f"hidden_size {shape[1]} vs {hidden}")
            if ab == "B" and name in WRITES_HIDDEN and shape[0] != hidden:
                out.append(f"hidden_size {shape[0]} vs {hidden}")
    return out


# --- the chat template --------------------------------------------------------------------------


def template_note(chat_template: str | None) -> str | None:
    """Why the base's template is replaced by the fallback, or None when it is used as shipped."""
    if not chat_template:
        return "the base ships no chat template"
    if not GENERATION.search(chat_template):
        return "the base's chat template has no {% generation %} markers (assistant-only loss needs them)"
    return None


def check_template_renders(tokenizer, dataset, spec, model_id: str, assistant_only_loss: bool, rows: int = 3) -> None:
    """Render the stage's first rows the way TRL will: a template that cannot is one line, before the model."""
    for i in range(min(rows, len(dataset))):
        ex = dataset[i]
        try:
            if spec.trainer == "dpo":
                tokenizer.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True)
                for side in ("chosen", "rejected"):
                    tokenizer.apply_chat_template(ex["prompt"] + ex[side], tokenize=True)
                continue
            out = tokenizer.apply_chat_template(ex["messages"], tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=assistant_only_loss)
        except Exception as e:  # noqa: BLE001 - jinja raises TemplateError, TypeError, ValueError...
            msg = " ".join(str(e).split())[:200] or e.__class__.__name__
            raise TrainInputError(
                f"{model_id}: its chat template cannot render stage {spec.number}'s messages (row {i + 1}): {msg}"
            ) from None
        if assistant_only_loss and not any(out.get("assistant_masks") or []):
            raise TrainInputError(
                f"{model_id}: its chat template marks no assistant tokens in row {i + 1} "
                "({% generation %} around the assistant turn is needed for assistant-only loss)"
            )
