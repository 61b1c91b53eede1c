"""`amigo-burst doctor`: one line per check, each with the fix when it fails."""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.runners.sky import enabled_clouds
from amigo_burst.state.store import open_from_config

Check = tuple[bool, str, str]  # ok, what was found, how to fix


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return ok, f"python {platform.python_version()} ({sys.executable})", "use Python 3.10 or newer"


def check_torch() -> Iterator[Check]:
    v = _version("torch")
    if not v:
        yield False, "torch not installed (needed only where training runs)", "make venv (or pip install -e '.[train]')"
        return
    yield True, f"torch {v}", ""
    import torch  # only here: ~2 s

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        yield True, f"CUDA {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.1f} GiB", ""
    else:
        yield (
            False,
            "CUDA not available: local training runs on the CPU (fine for the demo only)",
            "install a CUDA torch: TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128' make venv",
        )


def check_local_gpu() -> Check:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False, "no nvidia-smi: no local NVIDIA GPU visible", "install the NVIDIA driver (laptop) or use a cloud target"
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return bool(out), f"local GPU: {out or 'nvidia-smi gave no answer'}", "check the NVIDIA driver with nvidia-smi"


def check_skypilot() -> Iterator[Check]:
    v = _version("skypilot")
    if not v:
        yield False, "skypilot not installed", "pip install -e '.[cloud]'"
        return
    yield True, f"skypilot {v}", ""
    for cloud, (ok, fix) in enabled_clouds().items():
        yield ok, f"SkyPilot can use {cloud}" if ok else f"SkyPilot cannot use {cloud}", fix


def check_store(load_cfg: Callable[[], AmigoConfig]) -> Check:
    try:
        cfg = load_cfg()
    except UserError as e:
        return False, f"config: {e}", "create amigo.toml (see README) or pass --config"
    try:
        open_from_config(cfg).list_manifests("")
    except (UserError, ImportError) as e:
        return False, f"store {cfg.store.url} not reachable: {e}", "check [store] url/endpoint_url and AWS_* in .env"
    return True, f"store {cfg.store.url} reachable", ""


def run_checks(load_cfg: Callable[[], AmigoConfig]) -> Iterator[Check]:
    """load_cfg: the project's config, loaded only when the store check needs it (UserError if none)."""
    yield check_python()
    yield from check_torch()
    yield check_local_gpu()
    yield from check_skypilot()
    yield check_store(load_cfg)
