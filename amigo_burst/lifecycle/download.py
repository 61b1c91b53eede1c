"""`amigo-burst download`: a run's outputs from the store into .amigo/runs/<id>/, optionally copied to --to.

`ensure_downloaded` is also how `launch` gets the previous stage's adapter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.stages import get_stage
from amigo_burst.state import paths
from amigo_burst.state.records import open_records
from amigo_burst.state.store import open_from_config
from train.storage import names as manifest_names


def ensure_downloaded(cfg: AmigoConfig, run_id: str) -> Path:
    """The run's outputs in .amigo/runs/<id>/ (fetched from the store, verified, if missing)."""
    dest = paths.run_dir(cfg.root, run_id)
    adapter = dest / "adapter"
    # get_dir places files one by one (each verified) and leaves .partial/ behind when it fails:
    # a half-fetched adapter (config there, weights not) is fetched again, never handed out.
    complete = all((adapter / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))
    if not complete or (dest / ".partial").exists():
        open_from_config(cfg).get_dir(manifest_names.outputs(run_id), dest)
    return dest


def download(cfg: AmigoConfig, run_id: str | None, stage: str | None, to: Path | None) -> Path:
    runs = open_records(cfg.root)
    if bool(run_id) == bool(stage):
        raise UserError("give a RUN id or --stage N (not both)")
    if to is not None and to.exists() and not to.is_dir():
        raise UserError(f"--to {to}: is a file, not a folder")
    if stage:
        n = get_stage(stage).number
        run = runs.latest(n)
        if run is None:
            raise UserError(f"no successful stage {n} run to download")
    else:
        run = runs.get(run_id)
        if run.status not in ("SUCCEEDED", "STOPPED"):
            raise UserError(f"run {run.id} is {run.status}: it has no adapter to download")
    try:
        d = ensure_downloaded(cfg, run.id)
    except UserError:  # disk full, corrupted object...: the outputs are not (all) here, say so
        runs.update(run.id, downloaded=0)
        raise
    runs.update(run.id, downloaded=1)
    adapter = d / "adapter"
    if to is None:
        return adapter
    return _copy_atomic(adapter, to / "adapter" if to.is_dir() and any(to.iterdir()) else to)


def _copy_atomic(src: Path, dest: Path) -> Path:
    """Copy into a temp folder beside dest, then rename: never a half-copied adapter at dest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".amigo-dl-", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dest.exists():
            old = dest.with_name(dest.name + ".old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {dest}: {e.strerror or e}") from None
    return dest
