"""`amigo-burst clean`: free the disk that finished runs still hold, keep what they produced.

Every launch copies train/ and its inputs into .amigo/work/<run>/, and training writes its
checkpoints there (optimizer state included: GBs for a 12B model). Once a run has ended, its
adapter and metrics.json are in .amigo/runs/<run>/ (and the store) and its record in state.db:
the work copy is dead weight — except for the checkpoints `launch --resume` would continue from.

    removed   .amigo/work/<run> of every ended run whose adapter is safe elsewhere, and work folders
              no record names
    kept      running runs (never touched), the newest failed/stopped run of a stage that no later
              run succeeded (`--resume` material; --resumable removes it too), a run whose adapter
              exists only in its work copy
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.reconcile import reconcile_run
from amigo_burst.state import paths
from amigo_burst.state.records import ACTIVE, Run, open_records, pid_alive
from amigo_burst.state.store import open_from_config
from train.storage import names as manifest_names


@dataclass
class Removed:
    path: Path
    bytes: int


@dataclass
class CleanResult:
    removed: list[Removed] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (run id, why)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under PATH (each inode once: hard-linked inputs are not counted twice)."""
    seen, total = set(), 0
    for here, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(here, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def resumable(runs: list[Run]) -> set[str]:
    """Per stage, the run `launch --resume` would continue: the newest FAILED or STOPPED one, unless a
    later run of that stage succeeded (then the stage moved on)."""
    out = set()
    for stage in {r.stage for r in runs}:
        mine = [r for r in runs if r.stage == stage]  # oldest first
        ended = [r for r in mine if r.status in ("FAILED", "STOPPED")]
        if ended and not any(r.status == "SUCCEEDED" and (r.started, r.id) > (ended[-1].started, ended[-1].id)
                             for r in mine):
            out.add(ended[-1].id)
    return out


def _why_keep(cfg: AmigoConfig, run: Run, resume_ids: set[str], include_resumable: bool, store) -> str:
    """Why RUN's work copy must stay ("" when it can go)."""
    if run.status in ACTIVE or pid_alive(run.child_pid):
        return "running"
    if run.id in resume_ids and not include_resumable:
        return (f"`launch --stage {run.stage} --resume` continues from its checkpoints "
                "(`clean --resumable` removes them too)")
    if run.status in ("SUCCEEDED", "STOPPED"):
        adapter = paths.run_dir(cfg.root, run.id) / "adapter"
        here = all((adapter / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))
        if not here and store.read_manifest(manifest_names.outputs(run.id)) is None:
            return "its adapter exists only in its work copy: `amigo-burst download` it first"
    return ""


def clean(cfg: AmigoConfig, dry_run: bool = False, include_resumable: bool = False) -> CleanResult:
    records = open_records(cfg.root)
    runs = [reconcile_run(cfg, records, r) for r in records.list()]  # a dead worker's run is ended first
    by_id = {r.id: r for r in runs}
    resume_ids = resumable(runs)
    store = open_from_config(cfg, bars=False)
    work_root = paths.state_dir(cfg.root) / "work"
    result = CleanResult()
    for work in sorted(work_root.iterdir()) if work_root.is_dir() else []:
        run = by_id.get(work.name)
        if run is not None:
            why = _why_keep(cfg, run, resume_ids, include_resumable, store)
            if why:
                result.kept.append((run.id, why))
                continue
        size = tree_bytes(work)
        if not dry_run:
            try:
                shutil.rmtree(work)
            except OSError as e:
                raise UserError(f"cannot remove {work}: {e.strerror or e}") from None
        result.removed.append(Removed(work, size))
    return result
