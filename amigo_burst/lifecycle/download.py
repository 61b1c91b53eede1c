"""`amigo-burst download`: a run's outputs from the store into .amigo/runs/<id>/, optionally copied to --to.

`ensure_downloaded` is also how `launch` gets the previous stage's adapter. Every call verifies
what is already in .amigo/runs/<id>/ against the store's manifest (sha256): a file that changed
there is fetched again, an object that changed in the store is refused naming the file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError, one_line
from amigo_burst.stages import get_stage
from amigo_burst.state import paths
from amigo_burst.state.records import Run, open_records
from amigo_burst.state.store import open_from_config
from train.storage import names as manifest_names

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@contextmanager
def worker_log_aside(run_dir: Path) -> Iterator[None]:
    """The outputs manifest carries the entrypoint's own train.log; the run folder's is the worker's
    (setup's output too, redacted, the inode `logs -f` holds open): set aside while the outputs are
    fetched, then put back, so a fetch never replaces it."""
    ours, aside = run_dir / "train.log", run_dir / ".train.log.worker"
    if ours.is_file():
        os.replace(ours, aside)
    try:
        yield
    finally:
        if aside.is_file():
            os.replace(aside, ours)


def ensure_downloaded(cfg: AmigoConfig, run_id: str) -> Path:
    """The run's outputs in .amigo/runs/<id>/, each file verified against the store's manifest (sha256):
    missing or changed files are fetched again (get_dir skips the ones that verify). A run whose outputs
    never reached the store (recorded before every run had a manifest) is used as it is when complete."""
    dest = paths.run_dir(cfg.root, run_id)
    store = open_from_config(cfg)
    name = manifest_names.outputs(run_id)
    complete = all((dest / "adapter" / f).is_file() for f in ADAPTER_FILES)
    if store.read_manifest(name) is None:
        if complete and not (dest / ".partial").exists():
            return dest
        raise UserError(f"run {run_id}: its outputs are neither complete in {dest} nor in the store ({store.uri})")
    with worker_log_aside(dest):
        store.get_dir(name, dest)
    return dest


def download(cfg: AmigoConfig, run_id: str | None, stage: str | None, to: Path | None) -> tuple[Run, Path]:
    """The run's outputs, verified; with --to, its adapter + metrics.json copied there. Returns
    (run, where the adapter is)."""
    runs = open_records(cfg.root)
    if bool(run_id) == bool(stage):
        raise UserError("give a RUN id or --stage N (not both)")
    if to is not None:
        check_destination(to)
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
    if to is None:
        return run, d / "adapter"
    extra = [d / "metrics.json"] if (d / "metrics.json").is_file() else []
    return run, _copy_atomic(d / "adapter", extra, to)


def check_destination(to: Path) -> None:
    """--to is a new folder, an empty one, or an earlier download (an adapter, replaced whole):
    never a file, never a folder of something else (its files would be mixed with the adapter's)."""
    if to.exists() and not to.is_dir():
        raise UserError(f"--to {to}: is a file, not a folder")
    if to.is_dir():
        try:
            entries = list(to.iterdir())
        except OSError as e:
            raise UserError(f"--to {to}: cannot read it: {e.strerror or e}") from None
        if entries and not (to / "adapter_config.json").is_file():
            raise UserError(f"--to {to}: the folder is not empty and holds no adapter: pick a new or empty "
                            "folder (an earlier download there is replaced)")


def _os_error(e: OSError) -> str:
    """An OSError as words: shutil.copytree gathers one (src, dst, why) per file into a list."""
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        why = str(e.args[0][0][-1])  # "[Errno 28] No space left on device: 'src' -> 'dst'"
        m = re.match(r"(\[Errno \d+\] [^:']+)", why)  # the paths are the caller's to name: DEST
        return one_line(m.group(1) if m else why, 200)
    return one_line(e.strerror or e, 200)


def _copy_atomic(src: Path, extra: list[Path], dest: Path) -> Path:
    """Copy SRC's files (and EXTRA files) into a temp folder beside DEST, then rename: never a
    half-copied adapter at DEST."""
    tmp = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".amigo-dl-", dir=dest.parent))
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        for f in extra:
            shutil.copy2(f, tmp / f.name)
        if dest.exists():
            old = dest.with_name(dest.name + ".old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {dest}: {_os_error(e)}") from None
    return dest
