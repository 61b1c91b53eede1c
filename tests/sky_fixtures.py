"""SkyPilot test helpers: catalogs written offline, an isolated SkyPilot HOME, the Slurm sandbox.

Fixtures (register with `pytest_plugins = ["tests.sky_fixtures"]`):
  sky_catalog_home   function  temp HOME with ~/.sky/catalogs/v8/{runpod,vast,lambda,common}
                               CSVs (rows: CATALOG_ROWS); SkyPilot (imported or not) reads them.
  sky_api_home       session   temp HOME + SKYPILOT_API_SERVER_LOCAL_PORT on a reserved port
                               (helpers.reserved_port); the API server the SDK starts there is
                               stopped by pid afterwards.
  slurm_sky_home     session   sky_api_home plus `scripts/slurm-sandbox.sh up HOME` and
                               `sky check slurm`: real launches on the loopback Slurm cluster.

SkyPilot fetches catalogs from the internet on first use. A catalog file with no
`.meta/<cloud>/vms.csv.md5` beside it counts as user-modified and is never refetched,
so the small files below are all the optimizer sees: no network.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import reserved_port

REPO = Path(__file__).resolve().parents[1]
CATALOG_VERSION = "v8"


def _gpu_info(name: str, count: int, mib: int) -> str:
    return str(
        {
            "Gpus": [
                {"Name": name, "Manufacturer": "NVIDIA", "Count": count, "MemoryInfo": {"SizeInMiB": mib}}
            ],
            "TotalGpuMemoryInMiB": mib * count,
        }
    )


# Column orders differ per cloud (SkyPilot's catalog fetchers write them so).
COLUMNS = {
    "runpod": "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Region,SpotPrice,Price,AvailabilityZone,GpuInfo",
    "lambda": "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice",
    "vast": "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region",
}
# A few real-looking offers per cloud, with each cloud's own accelerator names. Two regions
# at different prices for the YAMLs' GPUs, so "the optimizer picked the cheaper" is visible.
_R, _L, _V = "runpod", "lambda", "vast"
# fmt: off
CATALOG_ROWS: dict[str, list[dict]] = {
    _R: [
        dict(InstanceType="1x_A100-80GB_SECURE", AcceleratorName="A100-80GB", AcceleratorCount=1, vCPUs=8,
             MemoryGiB=117, Region="CA", SpotPrice=1.19, Price=1.89, AvailabilityZone="CA-MTL-1",
             GpuInfo=_gpu_info("A100-80GB", 1, 81920)),
        dict(InstanceType="1x_A100-80GB_SECURE", AcceleratorName="A100-80GB", AcceleratorCount=1, vCPUs=8,
             MemoryGiB=117, Region="US", SpotPrice=1.05, Price=1.64, AvailabilityZone="US-KS-2",
             GpuInfo=_gpu_info("A100-80GB", 1, 81920)),
        dict(InstanceType="1x_H100-SXM_SECURE", AcceleratorName="H100-SXM", AcceleratorCount=1, vCPUs=16,
             MemoryGiB=125, Region="US", SpotPrice=1.75, Price=2.69, AvailabilityZone="US-KS-2",
             GpuInfo=_gpu_info("H100-SXM", 1, 81559)),
        dict(InstanceType="1x_RTX4090_SECURE", AcceleratorName="RTX4090", AcceleratorCount=1, vCPUs=6,
             MemoryGiB=41, Region="US", SpotPrice=0.34, Price=0.69, AvailabilityZone="US-TX-3",
             GpuInfo=_gpu_info("RTX4090", 1, 24564)),
    ],
    _L: [
        dict(InstanceType="gpu_1x_a100_sxm4", AcceleratorName="A100", AcceleratorCount=1, vCPUs=30, MemoryGiB=200,
             Price=1.29, Region="us-east-1", GpuInfo=_gpu_info("A100", 1, 40960), SpotPrice=""),
        dict(InstanceType="gpu_1x_a100_sxm4", AcceleratorName="A100", AcceleratorCount=1, vCPUs=30, MemoryGiB=200,
             Price=1.49, Region="us-west-1", GpuInfo=_gpu_info("A100", 1, 40960), SpotPrice=""),
        dict(InstanceType="gpu_8x_a100_80gb_sxm4", AcceleratorName="A100-80GB", AcceleratorCount=8, vCPUs=240,
             MemoryGiB=1800, Price=14.32, Region="us-east-1", GpuInfo=_gpu_info("A100-80GB", 8, 81920),
             SpotPrice=""),
        dict(InstanceType="gpu_1x_h100_pcie", AcceleratorName="H100", AcceleratorCount=1, vCPUs=26, MemoryGiB=200,
             Price=2.49, Region="us-east-1", GpuInfo=_gpu_info("H100", 1, 81920), SpotPrice=""),
    ],
    _V: [
        dict(InstanceType="1x-RTX4090-16-64", AcceleratorName="RTX4090", AcceleratorCount=1, vCPUs=16,
             MemoryGiB=64, GpuInfo=_gpu_info("RTX4090", 1, 24564), Price=0.40, SpotPrice=0.25, Region="US-CA-US"),
        dict(InstanceType="1x-RTX4090-16-64", AcceleratorName="RTX4090", AcceleratorCount=1, vCPUs=16,
             MemoryGiB=64, GpuInfo=_gpu_info("RTX4090", 1, 24564), Price=0.35, SpotPrice=0.22, Region="SE-SE-SE"),
        dict(InstanceType="1x-A100-32-128", AcceleratorName="A100", AcceleratorCount=1, vCPUs=32,
             MemoryGiB=128, GpuInfo=_gpu_info("A100", 1, 81920), Price=1.10, SpotPrice=0.70, Region="US-TX-US"),
        dict(InstanceType="1x-RTX3090-8-32", AcceleratorName="RTX3090", AcceleratorCount=1, vCPUs=8,
             MemoryGiB=32, GpuInfo=_gpu_info("RTX3090", 1, 24576), Price=0.20, SpotPrice=0.12, Region="US-CA-US"),
    ],
}
# fmt: on


def write_catalogs(home: Path) -> dict[str, list[dict]]:
    """~/.sky/catalogs/v8/<cloud>/vms.csv + common/accelerators.csv under HOME; returns the rows."""
    root = home / ".sky" / "catalogs" / CATALOG_VERSION
    clouds_of: dict[str, set[str]] = {}
    display = {_R: "RunPod", _L: "Lambda", _V: "Vast"}
    for cloud, rows in CATALOG_ROWS.items():
        (root / cloud).mkdir(parents=True, exist_ok=True)
        with open(root / cloud / "vms.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS[cloud].split(","))
            w.writeheader()
            w.writerows(rows)
        for r in rows:
            clouds_of.setdefault(r["AcceleratorName"], set()).add(display[cloud])
    (root / "common").mkdir(parents=True, exist_ok=True)
    with open(root / "common" / "accelerators.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["AcceleratorName", "Clouds"])
        # RTX4050: the laptop's GPU (sky/local-rtx4050.yaml), known to no cloud catalog
        for name, clouds in sorted({**clouds_of, "RTX4050": set()}.items()):
            w.writerow([name, ", ".join(sorted(clouds))])
    return CATALOG_ROWS


def point_sky_at(catalog_dir: Path | str) -> None:
    """Make an already-imported SkyPilot read its catalogs from CATALOG_DIR (~/.sky/catalogs/v8).

    SkyPilot resolves the catalog folder and each catalog file path when its modules are
    imported (`common._ABSOLUTE_VERSIONED_CATALOG_DIR`, module-level `_df =
    read_catalog(...)`). Another test may have imported sky under the real HOME, so
    every loaded catalog frame is rebuilt against the new folder.
    """
    from sky.catalog import common

    old_dir = common._ABSOLUTE_VERSIONED_CATALOG_DIR
    common._ABSOLUTE_VERSIONED_CATALOG_DIR = str(catalog_dir)
    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("sky.") and m is not None]:
        for attr, value in list(vars(mod).items()):
            if isinstance(value, common.LazyDataFrame):
                rel = os.path.relpath(value._filename, old_dir)
                if not rel.startswith(".."):
                    setattr(mod, attr, common.read_catalog(rel))


@pytest.fixture
def sky_catalog_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict]]:
    """(home, CATALOG_ROWS): HOME points at a temp dir holding the test catalogs."""
    home = tmp_path / "home"
    rows = write_catalogs(home)
    # where SkyPilot reads catalogs after this test: where it did before, or the real HOME's
    imported = "sky.catalog.common" in sys.modules
    natural = Path(os.environ.get("HOME", "~")).expanduser() / ".sky" / "catalogs" / CATALOG_VERSION
    monkeypatch.setenv("HOME", str(home))
    from sky.catalog import common  # after HOME is set: a first import resolves paths from it

    old_dir = common._ABSOLUTE_VERSIONED_CATALOG_DIR if imported else str(natural)
    point_sky_at(home / ".sky" / "catalogs" / CATALOG_VERSION)
    yield home, rows
    point_sky_at(old_dir)


# --- an isolated API server ------------------------------------------------------------------------


def api_server_pids(port: int) -> list[int]:
    """Pids of SkyPilot API servers listening on PORT (matched by their command line)."""
    import psutil

    pids = []
    for p in psutil.process_iter(attrs=["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "-m sky.server.server" in cmd and (f"--port {port}" in cmd or f"--port={port}" in cmd):
            pids.append(p.info["pid"])
    return pids


def stop_api_server(port: int) -> None:
    """Stop the API server on PORT and its workers, by pid."""
    import psutil

    procs = []
    for pid in api_server_pids(port):
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            procs += [parent, *parent.children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def reset_sky_caches() -> None:
    """Forget what an already-imported SkyPilot client computed from the old HOME and port.

    The client keeps the API server URL, user hash and config in process-wide
    functools caches once computed (another test may have run sky under another HOME):
    clear them so the next call reads the current environment.
    """
    if "sky" not in sys.modules:
        return
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "sky" or name.startswith("sky.")):
            continue
        for value in list(vars(mod).values()):
            # isinstance only: a getattr would trigger SkyPilot's lazy imports of cloud SDKs
            if isinstance(value, functools._lru_cache_wrapper) or (
                inspect.isfunction(value) and callable(getattr(value, "cache_clear", None))
            ):
                value.cache_clear()
    from sky.utils import annotations

    from sky import skypilot_config

    annotations.clear_request_level_cache()
    skypilot_config.reload_config()


@contextlib.contextmanager
def isolated_sky_api(home: Path) -> Iterator[int]:
    """HOME and SKYPILOT_API_SERVER_LOCAL_PORT for this process (and servers it starts); yields the port."""
    port = reserved_port()
    home.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("SKYPILOT_API_SERVER_LOCAL_PORT", str(port))
        reset_sky_caches()
        try:
            yield port
        finally:
            stop_api_server(port)
    reset_sky_caches()


@pytest.fixture(scope="session")
def sky_api_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("sky-home")
    with isolated_sky_api(home):
        yield home


def cluster_autostop(cluster: str) -> tuple[int, bool]:
    """(idle minutes, tear down rather than stop) as SkyPilot recorded them for CLUSTER (sky.status's
    `autostop` and `to_down`; -1 minutes: no autostop)."""
    from sky.utils import common

    import sky

    recs = sky.get(sky.status(cluster_names=[cluster], refresh=common.StatusRefreshMode.NONE))
    assert len(recs) == 1, f"{cluster}: {len(recs)} status records"
    return recs[0]["autostop"], bool(recs[0]["to_down"])


def sky_cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`sky ARGS` from the venv, in HOME (inherits SKYPILOT_API_SERVER_LOCAL_PORT)."""
    sky_bin = Path(sys.executable).with_name("sky")
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([str(sky_bin), *args], env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def one_at_a_time(lock_path: str) -> Iterator[None]:
    """An flock held for the block: make test-e2e's workers start their API servers one after another.
    Four servers starting at once on two cores each write SkyPilot's SQLite state in their first
    requests, and a `sky check` then failed with SQLite's "database is locked" (HTTP 500; seen in a
    clean-clone CI run)."""
    import fcntl

    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sky_check_slurm(home: Path, tries: int = 3) -> subprocess.CompletedProcess:
    """`sky check slurm`, again after a few seconds when SkyPilot's own SQLite state was locked (a server
    just started still writes it); any other failure is returned at once."""
    for i in range(tries):
        check = sky_cli(home, "check", "slurm")
        if check.returncode == 0 or "database is locked" not in check.stdout + check.stderr or i == tries - 1:
            return check
        time.sleep(5 * (i + 1))
    return check


@pytest.fixture(scope="session")
def slurm_sky_home(sky_api_home: Path) -> Iterator[Path]:
    """The loopback Slurm cluster up and enabled in SkyPilot, under sky_api_home.

    Needs root on Debian 12 (installs slurm, munge, sshd on first use). The machine is left as the
    session found it: a sandbox that was up stays up (another session may be using it), one this
    session brought up is brought down again (`scripts/slurm-sandbox.sh down`).
    """
    script = REPO / "scripts" / "slurm-sandbox.sh"
    was_up = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True).returncode == 0
    t0 = time.monotonic()
    try:
        with one_at_a_time("/tmp/amigo-sky-api-start.lock"):
            up = subprocess.run(["bash", str(script), "up", str(sky_api_home)], capture_output=True, text=True,
                                timeout=900)
            assert up.returncode == 0, f"slurm sandbox up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
            check = sky_check_slurm(sky_api_home)
        assert check.returncode == 0 and "Slurm: enabled" in check.stdout, check.stdout + check.stderr
        print(f"\n[slurm_sky_home] sandbox up + sky check slurm: {time.monotonic() - t0:.1f}s"
              + ("" if was_up else " (brought up here: down again at the end)"))
        yield sky_api_home
    finally:
        if not was_up:
            subprocess.run(["bash", str(script), "down"], capture_output=True, text=True, timeout=60)
