"""`amigo-burst doctor`: one line per check, each with the fix when it fails, and whether it matters.

A check that fails matters ("needed") when the project's config uses what it checks: torch where
a local target trains, CUDA and the GPU driver when that target is a real GPU (not `[local_gpu]
name = "cpu"`), SkyPilot and a cloud's credentials when a target of the config runs there, and
always python, the config and the store. The command exits 1 when a needed check fails (0 when
everything the project uses is there): other failures are shown as notes, not errors.
"""

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
from amigo_burst.targets import get_target

Check = tuple[bool, str, str]  # ok, what was found, how to fix
OK, NOTE, FAIL = "ok", "note", "fail"  # a failed check the project does not need is a NOTE


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


def check_skypilot(needed_clouds: set[str] = frozenset()) -> Iterator[tuple[Check, bool]]:
    """(check, needed) for SkyPilot itself and each cloud it knows."""
    v = _version("skypilot")
    if not v:
        yield (False, "skypilot not installed", "pip install -e '.[cloud]'"), bool(needed_clouds)
        return
    try:
        import sky  # noqa: F401 - SkyPilot makes ~/.sky/ when imported: an unwritable HOME fails here
    except OSError as e:
        yield (False, f"skypilot {v} cannot start: {e.filename or ''}: {e.strerror or e}",
               "HOME must be a writable folder (SkyPilot keeps its state in ~/.sky)"), bool(needed_clouds)
        return
    yield (True, f"skypilot {v}", ""), bool(needed_clouds)
    for cloud, (ok, fix) in enabled_clouds().items():
        what = f"SkyPilot can use {cloud}" if ok else f"SkyPilot cannot use {cloud}"
        used = cloud in needed_clouds
        yield (ok, what + (" (a target of this project)" if used and not ok else ""), fix), used


def check_store(cfg: AmigoConfig | None, cfg_error: str = "") -> Check:
    if cfg is None:
        return False, f"config: {cfg_error}", "create amigo.toml (see README) or pass --config"
    try:
        open_from_config(cfg).list_manifests("")
    except (UserError, ImportError) as e:
        return False, f"store {cfg.store.url} not reachable: {e}", "check [store] url/endpoint_url and AWS_* in .env"
    return True, f"store {cfg.store.url} reachable", ""


def project_needs(cfg: AmigoConfig | None) -> tuple[bool, bool, set[str]]:
    """(a local target trains, on a real GPU, the clouds of its other targets) for CFG's targets."""
    if cfg is None:
        return False, False, set()
    names = {cfg.targets.local, cfg.targets.cloud} | {s.target for s in cfg.stages.values() if s.target}
    infras = set()
    for name in names:
        try:
            infras.add(get_target(name, cfg.root).infra)
        except UserError:
            continue  # `config check` names a bad target; doctor checks the machine
    local = "local" in infras
    return local, local and cfg.local_gpu.name.lower() != "cpu", infras - {"local"}


def run_checks(load_cfg: Callable[[], AmigoConfig]) -> Iterator[tuple[str, str, str]]:
    """(OK | NOTE | FAIL, what was found, how to fix). load_cfg: the project's config (UserError if none)."""
    try:
        cfg, cfg_error = load_cfg(), ""
    except UserError as e:
        cfg, cfg_error = None, str(e)
    local, gpu, clouds = project_needs(cfg)

    def level(check: Check, needed: bool) -> tuple[str, str, str]:
        ok, what, fix = check
        return (OK if ok else FAIL if needed else NOTE), what, fix

    yield level(check_python(), True)
    torch_checks = list(check_torch())
    yield level(torch_checks[0], local)
    for c in torch_checks[1:]:  # CUDA
        yield level(c, gpu)
    yield level(check_local_gpu(), gpu)
    for c, needed in check_skypilot(clouds):
        yield level(c, needed)
    yield level(check_store(cfg, cfg_error), True)
