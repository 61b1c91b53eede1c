"""One canonical row -> the example TRL trains on, and the token sequences the trainer will see.

Pure (standard library only): the controller imports it to count tokens and check lengths
exactly as the trainer will format them (amigo_burst/lifecycle/prepare.py, through train/prepare.py).

Stages 1-4 become conversational `messages` (user turn = the task, assistant turn = what the model
should write; SFT trains on the assistant turns only). Stage 5 becomes conversational `prompt` /
`chosen` / `rejected` for DPO.
"""

from __future__ import annotations

from train.schema import StageSpec

# Fields that are context, not task or answer: when a row is longer than max_seq_len, these are
# trimmed (from the side named) before the row is dropped. Stage 2's old file keeps its head (imports,
# definitions); stage 3's error output keeps its tail (a traceback ends with the exception).
CONTEXT_FIELDS: dict[int, tuple[str, str]] = {2: ("context", "keep_start"), 3: ("error", "keep_end")}
TRIM_MARK = "[... trimmed to fit max_seq_len ...]"


def _fence(code: str) -> str:
    return f"```\n{code.strip()}\n```"


def to_messages(spec: StageSpec, row: dict, system_prompt: str | None = None) -> list[dict]:
    """Stages 1-4: the conversation SFT trains on (loss on the assistant turn only)."""
    n = spec.number
    if n == 1:
        user, assistant = row["instruction"], _fence(row["code"])
    elif n == 2:
        user = f"Repository context:\n{row['context'].strip()}\n\nRequest: {row['request'].strip()}"
        assistant = _fence(row["code"])
    elif n == 3:
        explanation = (row.get("explanation") or "").strip()
        # Ask for an explanation only when the row has one to teach: a prompt asking for one that the
        # answer never gives teaches the model to ignore the request.
        ask = "Fix it and explain the bug." if explanation else "Fix it."
        user = f"This code fails:\n{_fence(row['buggy_code'])}\n\nError output:\n{_fence(row['error'])}\n\n{ask}"
        assistant = _fence(row["fixed_code"]) + (f"\n\n{explanation}" if explanation else "")
    elif n == 4:
        user = row["problem"]
        assistant = f"{row['reasoning'].strip()}\n\nAnswer: {row['answer'].strip()}"
    else:
        raise ValueError(f"stage {n} is not an SFT stage")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def to_preference(row: dict, system_prompt: str | None = None) -> dict:
    """Stage 5: conversational preference pair; TRL applies the chat template to each side."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": row["prompt"]})
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": _fence(row["chosen"])}],
        "rejected": [{"role": "assistant", "content": _fence(row["rejected"])}],
    }


def to_example(spec: StageSpec, row: dict, system_prompt: str | None = None) -> dict:
    """The dataset row the stage's TRL trainer gets."""
    if spec.trainer == "dpo":
        return to_preference(row, system_prompt)
    return {"messages": to_messages(spec, row, system_prompt)}


def sequences(spec: StageSpec, row: dict, system_prompt: str | None = None) -> list[list[dict]]:
    """The conversations the trainer tokenizes with the chat template: SFT one, DPO two
    (prompt + chosen, prompt + rejected: each must fit max_length on its own)."""
    ex = to_example(spec, row, system_prompt)
    if spec.trainer == "dpo":
        return [ex["prompt"] + ex["chosen"], ex["prompt"] + ex["rejected"]]
    return [ex["messages"]]


def trim(text: str, keep: int, side: str) -> str:
    """`text` cut to about `keep` characters at a line boundary, keeping its start or its end, with
    TRIM_MARK where the cut is (never silently: the model sees that something was left out)."""
    if keep >= len(text):
        return text
    if side == "keep_start":
        head = text[:keep]
        cut = head.rfind("\n")
        return (head[:cut] if cut > 0 else head) + "\n" + TRIM_MARK
    tail = text[len(text) - keep:]
    cut = tail.find("\n")
    return TRIM_MARK + "\n" + (tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail)
