"""Stage datasets for the trainer: read the prepared rows, validate every one, format for TRL.

The rows come prepared (train/prepare.py: canonical fields, unusable rows skipped and counted,
lengths checked against max_seq_len), so validation here is all-or-nothing and runs before any
model is loaded: a bad row in a prepared file is a broken file, and the first one raises
TrainInputError naming file:line and the field (exit 2 upstream). The formatting (conversations
for SFT, preference pairs for DPO) is train/formats.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

from train.formats import to_example, to_messages, to_preference  # noqa: F401 - formatters live in formats.py
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


def load_stage_dataset(source: str, spec: StageSpec, system_prompt: str | None = None, split: str = "train"):
    """Validated rows -> a `datasets.Dataset` in the stage's TRL format."""
    from datasets import Dataset

    rows = read_rows(source, spec, split)
    return Dataset.from_list([to_example(spec, r, system_prompt) for r in rows])
