"""Stage datasets: read (JSONL, parquet or a hub id), validate every row, format for TRL.

Stages 1-4 become conversational `messages` (user turn = the task, assistant
turn = what the model should write; SFT trains on the assistant turns only).
Stage 5 becomes conversational `prompt` / `chosen` / `rejected` for DPO.

Validation is all-or-nothing and runs before any model is loaded: the first bad
row raises TrainInputError naming file:line and the field (exit 2 upstream).
"""

from __future__ import annotations

import json
from pathlib import Path

from train.schema import StageSpec, TrainInputError, validate_row


def read_rows(source: str, spec: StageSpec, split: str = "train") -> list[dict]:
    """All rows of a JSONL/parquet file or a hub dataset, each validated against the stage schema."""
    path = Path(source)
    if path.suffix == ".jsonl" or path.suffix == ".json":
        return _read_jsonl(path, spec)
    if path.suffix == ".parquet":
        return _read_parquet(path, spec)
    if path.exists():
        raise TrainInputError(f"{source}: unsupported dataset file (expected .jsonl or .parquet)")
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise TrainInputError(f"{source}: no such dataset file")
    return _read_hub(source, spec, split)


def _check(where: str, spec: StageSpec, row: object) -> dict:
    reason = validate_row(spec, row)
    if reason:
        raise TrainInputError(f"{where}: {reason} (stage {spec.number} {spec.name} needs {', '.join(spec.required)})")
    return row  # type: ignore[return-value]


def _read_jsonl(path: Path, spec: StageSpec) -> list[dict]:
    if not path.is_file():
        raise TrainInputError(f"{path}: no such dataset file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainInputError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            rows.append(_check(f"{path}:{lineno}", spec, row))
    if not rows:
        raise TrainInputError(f"{path}: no rows")
    return rows


def _read_parquet(path: Path, spec: StageSpec) -> list[dict]:
    if not path.is_file():
        raise TrainInputError(f"{path}: no such dataset file")
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    if not rows:
        raise TrainInputError(f"{path}: no rows")
    return [_check(f"{path}:row {i}", spec, row) for i, row in enumerate(rows)]


def _read_hub(repo_id: str, spec: StageSpec, split: str) -> list[dict]:
    """Standalone use only (the controller always passes a prepared file)."""
    from datasets import load_dataset

    ds = load_dataset(repo_id, split=split)
    return [_check(f"{repo_id}[{split}]:row {i}", spec, row) for i, row in enumerate(ds)]


# --- formatters: one canonical row -> one TRL example --------------------------------------------


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
        user = (
            f"This code fails:\n{_fence(row['buggy_code'])}\n\nError output:\n{_fence(row['error'])}\n\n"
            "Fix it and explain the bug."
        )
        assistant = _fence(row["fixed_code"])
        if (row.get("explanation") or "").strip():
            assistant += f"\n\n{row['explanation'].strip()}"
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


def load_stage_dataset(source: str, spec: StageSpec, system_prompt: str | None = None, split: str = "train"):
    """Validated rows -> a `datasets.Dataset` in the stage's TRL format."""
    from datasets import Dataset

    rows = read_rows(source, spec, split)
    if spec.trainer == "dpo":
        return Dataset.from_list([to_preference(r, system_prompt) for r in rows])
    return Dataset.from_list([{"messages": to_messages(spec, r, system_prompt)} for r in rows])
