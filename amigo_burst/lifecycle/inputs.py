"""What a run takes to its machine: the train/ bundle, and its inputs (prepared dataset, the previous
adapter, a local base model folder) in the store or, with the rsync transport, in the workdir.

    build_bundle(workdir)          the train/ copy every target runs
    put_inputs(cfg, run, ...)      inputs/<run> and code/<run> manifests in the store
    transport_envs(...)            AMIGO_INPUTS / AMIGO_STORE_* / AMIGO_ADAPTER_FROM for the job
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.state import paths
from amigo_burst.state.store import open_from_config, store_uri
from amigo_burst.targets import REPO_ROOT, Target
from train.storage import ALWAYS_EXCLUDE
from train.storage import names as manifest_names

BASE_MODEL_DIR = "base-model"  # a local base model folder, sent to a cloud target as inputs/base-model
MACHINE_STORE_DIR = "~/.amigo/store"  # no bucket: the trainer's mirror on the rented machine's disk
MACHINE_STORE = f"file://{MACHINE_STORE_DIR}"


def model_to_send(cfg: AmigoConfig, target: Target) -> Path | None:
    """The base model folder to send with the inputs, or None: a hub id (the machine downloads it
    itself) or a local target (it reads the folder in place). AMIGO_SYNC_BASE_MODEL=1 sends it to a
    local target too: the tests run the remote path (fetch from the store) through the local runner."""
    base = cfg.resolve(cfg.model.base)
    if not base.is_dir():
        return None
    if target.is_local and os.environ.get("AMIGO_SYNC_BASE_MODEL") != "1":
        return None
    return base


def build_bundle(workdir: Path) -> None:
    """The workdir every target gets: a copy of train/ (no secrets, no caches)."""
    if (workdir / "train").exists():
        shutil.rmtree(workdir / "train")
    shutil.copytree(REPO_ROOT / "train", workdir / "train", ignore=shutil.ignore_patterns(*ALWAYS_EXCLUDE))


def link_tree(src: Path, dest: Path) -> None:
    """A copy of SRC at DEST made of hard links where the filesystem allows (a 24 GB model folder is
    not copied just to be hashed and sent), real copies where it does not."""
    def link(s: str, d: str) -> None:
        if os.path.lexists(d):  # a relaunch (--resume) into the same workdir: the copy there is the old one
            if os.path.exists(d) and os.path.samefile(s, d):
                return
            os.unlink(d)
        try:
            os.link(s, d)
        except OSError:  # another filesystem
            shutil.copy2(s, d)

    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(*ALWAYS_EXCLUDE))


def put_inputs(cfg: AmigoConfig, run_id: str, data: Path | None, adapter: Path | None,
               model: Path | None = None) -> tuple[str, int, int]:
    """Dataset (None: the target prepares it) + previous adapter (+ a local base model folder, as
    base-model/) -> store manifest inputs/<run>; train/ code -> code/<run>. Returns (inputs manifest, bytes sent, bytes already there)."""
    staging = paths.work_dir(cfg.root, run_id) / "inputs-staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if data is not None:
        try:  # a hard link: a multi-GB prepared dataset is not copied just to be hashed and uploaded
            os.link(data, staging / "data.jsonl")
        except OSError:  # another filesystem
            shutil.copy2(data, staging / "data.jsonl")
    if adapter is not None:
        shutil.copytree(adapter, staging / "adapter")
    if model is not None:  # content-addressed: an unchanged model is not sent twice
        link_tree(model, staging / BASE_MODEL_DIR)
    store = open_from_config(cfg)
    sent = skipped = 0
    for src, name in ((staging, manifest_names.inputs(run_id)), (REPO_ROOT / "train", manifest_names.code(run_id))):
        t = store.put_dir(src, name)
        sent, skipped = sent + t.bytes_sent, skipped + t.bytes_skipped
    shutil.rmtree(staging)
    return manifest_names.inputs(run_id), sent, skipped


def transport_envs(cfg, transport, manifest, workdir: Path, data: Path | None, adapter: Path | None,
                    model: Path | None = None) -> dict[str, str]:
    if transport == "store":
        envs = {"AMIGO_INPUTS": manifest, "AMIGO_STORE_URI": store_uri(cfg),
                "AMIGO_STORE_ENDPOINT": cfg.store.endpoint_url or ""}
    else:  # rsync: the inputs travel inside the workdir (SkyPilot's workdir sync is rsync: incremental)
        inputs = workdir / "inputs"
        inputs.mkdir(exist_ok=True)
        if data is not None:
            shutil.copy2(data, inputs / "data.jsonl")
        if adapter is not None:
            shutil.copytree(adapter, inputs / "adapter", dirs_exist_ok=True)
        if model is not None:
            link_tree(model, inputs / BASE_MODEL_DIR)
        # checkpoints and outputs mirrored into a store on the machine's own disk, which the worker pulls
        # to this laptop's store as they are written (lifecycle/pull.py): verified, resumable
        envs = {"AMIGO_INPUTS": "", "AMIGO_STORE_URI": MACHINE_STORE, "AMIGO_STORE_ENDPOINT": ""}
    envs["AMIGO_ADAPTER_FROM"] = "inputs/adapter" if adapter is not None else ""
    return envs


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"
