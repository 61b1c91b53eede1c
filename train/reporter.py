"""Lines for humans and for the controller: stdout and train.log, rank 0 only.

    AMIGO_PROGRESS {...}   one per logging step (train/callbacks.py)
    AMIGO_DONE {...}       the run's metrics.json, last (train/session.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Reporter:
    """Lines for humans and for the controller: stdout and train.log, rank 0 only."""

    def __init__(self, out_dir: Path):
        self.enabled = rank() == 0
        self.log = out_dir / "train.log"

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        print(text, flush=True)
        with self.log.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def event(self, tag: str, data: dict) -> None:
        self.line(f"{tag} {json.dumps(data, default=str)}")
