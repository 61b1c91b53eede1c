"""`launch --resume`: which run continues, from which checkpoint, and getting that checkpoint to the machine.

    pick(runs, steps)          the rule (pure): the newest STOPPED or FAILED run of the stage that left a
                               checkpoint (stopped, preempted, budget-stopped, cancelled or crashed mid-
                               training); never a probe, never one that died before training (no checkpoint)
    find(cfg, runs, stage)     that run and its newest checkpoint, from the store and the work copy;
                               UserError naming why when there is none (a resume never restarts silently)
    place(cfg, point, workdir) the rsync transport (no bucket): the checkpoint (and the best adapter so far)
                               fetched from this laptop's store, verified, into the workdir SkyPilot syncs,
                               where the trainer's `--resume auto` finds it on a fresh machine

With a bucket (s3://) the trainer fetches the checkpoint from the store itself (train/session.py).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from amigo_burst.errors import UserError
from amigo_burst.state import paths
from amigo_burst.state.records import Run, RunStore
from amigo_burst.state.store import open_from_config
from train.storage import names as manifest_names

RESUMABLE = ("STOPPED", "FAILED")
CKPT_RE = re.compile(r"checkpoint-(\d+)$")  # the Trainer's folder names (train/mirror.py reads them too)


def local_steps(ckpt_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in a work copy: the Trainer writes trainer_state.json last."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for d in ckpt_dir.iterdir()
                  if (m := CKPT_RE.search(d.name)) and (d / "trainer_state.json").is_file())


@dataclass(frozen=True)
class ResumePoint:
    run: Run
    step: int
    manifest: str | None  # the checkpoint's manifest in the store (None: only in the local work copy)

    def line(self) -> str:
        total = (self.run.metrics or {}).get("total_steps")
        return (f"resuming {self.run.id} ({self.run.status.lower()}"
                + (f": {self.run.reason}" if self.run.reason else "") + f") from checkpoint-{self.step}"
                + (f" (step {self.step} of {total})" if total else ""))


def pick(runs: list[Run], steps: dict[str, int]) -> tuple[Run, int] | None:
    """(run, step) to resume among RUNS (one stage's, oldest first) given each run's newest checkpoint
    step (STEPS; a run with none is absent or 0): the newest resumable run that has one."""
    for r in reversed(runs):
        if r.status in RESUMABLE and not (r.artifacts or {}).get("probe") and steps.get(r.id, 0) > 0:
            return r, steps[r.id]
    return None


def checkpoints(cfg, run: Run) -> tuple[int, str | None]:
    """The newest checkpoint of RUN: (step, its store manifest or None when only the work copy has it);
    (0, None) for none. The store holds what was mirrored (a bucket) or pulled back (no bucket); the work
    copy what a run on this laptop wrote."""
    best, name = 0, None
    for m in open_from_config(cfg, bars=False).list_manifests(manifest_names.checkpoints_prefix(run.id)):
        hit = CKPT_RE.search(m)
        if hit and int(hit.group(1)) > best:
            best, name = int(hit.group(1)), m
    local = local_steps(paths.work_dir(cfg.root, run.id) / "outputs" / "checkpoints")
    if local and local[-1] > best:
        return local[-1], None
    return best, name


def find(cfg, runs: RunStore, stage: int) -> ResumePoint:
    mine = [r for r in runs.list(stage=stage)]
    found = {r.id: checkpoints(cfg, r) for r in mine if r.status in RESUMABLE}
    chosen = pick(mine, {k: v[0] for k, v in found.items()})
    if chosen is None:
        ended = [r for r in mine if r.status in RESUMABLE]
        newest = (f" (the newest, {ended[-1].id}, {ended[-1].status}: "
                  f"{ended[-1].reason or 'no reason recorded'})") if ended else ""
        raise UserError(f"--resume: no stage {stage} run left a checkpoint to continue from{newest}; "
                        f"launch without --resume starts the stage over")
    run, step = chosen
    return ResumePoint(run, step, found[run.id][1])


def place(cfg, point: ResumePoint, workdir: Path) -> None:
    """The checkpoint into WORKDIR/outputs/checkpoints/ (and best/ into outputs/), verified against the
    store's manifests: SkyPilot syncs the workdir to the new machine."""
    if point.manifest is None:
        return  # only in this work copy: already where the trainer looks
    store = open_from_config(cfg, bars=False)
    out = workdir / "outputs"
    ckpts = out / "checkpoints"
    if ckpts.exists():
        shutil.rmtree(ckpts)  # older steps: the trainer must not pick another one
    store.get_dir(point.manifest, ckpts / point.manifest.rsplit("/", 1)[1])
    outputs = manifest_names.outputs(point.run.id)
    if store.read_manifest(outputs) is not None:  # the best adapter so far (keep = "best")
        tmp = workdir / ".outputs-earlier"
        store.get_dir(outputs, tmp)
        if (tmp / "best" / "best.json").is_file():
            shutil.rmtree(out / "best", ignore_errors=True)
            os.replace(tmp / "best", out / "best")
        shutil.rmtree(tmp, ignore_errors=True)
