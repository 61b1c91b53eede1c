"""The chat template a base model gets when it ships none (and the tiny test model's own).

It marks assistant turns with {% generation %} so TRL's assistant_only_loss masks everything but
the answers, and it is prefix-preserving (the prompt rendered with add_generation_prompt is a prefix
of the full conversation), which DPO needs. Role tags are plain text, learned by the stage-1 adapter.
"""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}\n"
    "{% else %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def fallback_template(eos_token: str | None) -> str:
    """CHAT_TEMPLATE ending each turn with the base's own eos token (the tiny model's is <|end|>)."""
    return CHAT_TEMPLATE.replace("<|end|>", "{{ eos_token }}") if eos_token else CHAT_TEMPLATE
