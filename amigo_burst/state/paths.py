"""The project's .amigo/ folder: where each kind of state lives (paths only, nothing opened).

    .amigo/state.db              run records (SQLite, WAL)
    .amigo/runs/<run>/           launch.json, worker.log, train.log, metrics.json, adapter/
    .amigo/work/<run>/           the workdir the target runs in (train/ bundle, rsync inputs)
    .amigo/prepared/             validated stage datasets, named by content hash
    .amigo/prices.json           the last SkyPilot catalog prices seen (offline fallback)
    .amigo/store/                the default file:// artifact store
"""

from __future__ import annotations

from pathlib import Path


def state_dir(root: Path) -> Path:
    return root / ".amigo"


def db_path(root: Path) -> Path:
    return state_dir(root) / "state.db"


def run_dir(root: Path, run_id: str) -> Path:
    return state_dir(root) / "runs" / run_id


def runs_dir(root: Path) -> Path:
    return state_dir(root) / "runs"


def work_dir(root: Path, run_id: str) -> Path:
    return state_dir(root) / "work" / run_id


def prepared_dir(root: Path) -> Path:
    return state_dir(root) / "prepared"


def prices_cache(root: Path) -> Path:
    return state_dir(root) / "prices.json"
