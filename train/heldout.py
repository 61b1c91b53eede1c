"""The held-out validation split: which rows a stage evaluates on instead of training on.

Rows are chosen by a hash of their content, not by position or RNG state: the same rows are held out
on every re-run and resume (a resumed run never trains on what it validated on), wherever the file's
rows sit. The system prompt is left out of the hash, so changing it does not reshuffle the split.

Size: `eval_fraction` of the rows, at least 1 once a dataset has 10 rows (none below: a 9-row demo
set cannot spare one), at most `eval_max_rows`: 2% of 56,025 stage-2 rows = 1,121, capped at 500, so
one evaluation is 500 forward passes (no backward) against 56,025 - 500 training rows per epoch.
"""

from __future__ import annotations

import hashlib
import json

MIN_ROWS = 10  # smallest dataset that holds a row out


def eval_size(n_rows: int, fraction: float, max_rows: int) -> int:
    if n_rows < MIN_ROWS or fraction <= 0 or max_rows <= 0:
        return 0
    return min(max_rows, max(1, round(n_rows * fraction)), n_rows - 1)


def _without_system(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("role") != "system"]


def row_key(example: dict) -> str:
    """sha256 of a formatted example's content (SFT `messages`, DPO `prompt`/`chosen`/`rejected`)."""
    if "messages" in example:
        content: object = _without_system(example["messages"])
    else:
        content = {k: _without_system(v) if isinstance(v, list) else v for k, v in sorted(example.items())}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def split(dataset, fraction: float, max_rows: int):
    """(train, eval or None, info). Eval = the rows whose content hashes are the smallest `eval_size`
    distinct ones; a duplicated row goes wholly to one side, so the two sides never share content."""
    keys = [row_key(ex) for ex in dataset]
    k = eval_size(len(keys), fraction, max_rows)
    info = {"rows": len(keys), "eval_rows": 0, "train_rows": len(keys), "fraction": fraction, "max_rows": max_rows}
    if k == 0:
        return dataset, None, info
    held = set(sorted(set(keys))[:k])
    eval_idx = [i for i, key in enumerate(keys) if key in held]
    train_idx = [i for i, key in enumerate(keys) if key not in held]
    if not train_idx:  # every row is one duplicated content: nothing left to train on
        return dataset, None, info
    info.update(eval_rows=len(eval_idx), train_rows=len(train_idx))
    return dataset.select(train_idx), dataset.select(eval_idx), info
