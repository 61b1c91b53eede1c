"""Prices: SkyPilot's catalog files (each cloud's own column order and traps) where SkyPilot fetched them,
a dated snapshot of real catalog rows otherwise; `amigo-burst prices`; electricity."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

from amigo_burst.config import LocalGpuConfig
from amigo_burst.planning.pricing import DATA, gpu_memory_gib, load_prices, local_usd_per_hour, read_catalog
from tests.helpers import invoke
from tests.sky_fixtures import COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def snapshot_rows(cloud: str) -> list[dict]:
    """The shipped snapshot: rows copied verbatim from SkyPilot's public catalog."""
    with open(DATA / f"catalog_{cloud}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_catalog(home: Path, cloud: str, rows: list[dict]) -> Path:
    """~/.sky/catalogs/v8/<cloud>/vms.csv in SkyPilot's column order for that cloud."""
    d = home / ".sky" / "catalogs" / "v8" / cloud
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "vms.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS[cloud].split(","))
        w.writeheader()
        w.writerows(rows)
    return d / "vms.csv"


def test_snapshot_files_are_skypilot_catalogs_labelled_with_their_commit():
    with open(DATA / "catalog_sources.csv", newline="", encoding="utf-8") as f:
        sources = {r["cloud"]: r for r in csv.DictReader(f)}
    assert set(sources) == {"runpod", "vast", "lambda"}
    for cloud, src in sources.items():
        header = (DATA / src["file"]).read_text().splitlines()[0]
        assert header == COLUMNS[cloud], cloud  # SkyPilot's own column order: the same parser reads both
        assert src["repository"] == "skypilot-org/skypilot-catalog" and len(src["commit"]) == 8
    t = load_prices(home=Path("/nonexistent-home"))
    assert {s.kind for s in t.sources.values()} == {"snapshot"}
    assert "01acdfd4" in t.sources["runpod"].detail and t.sources["runpod"].as_of.year == 2026


def test_real_rows_and_their_traps():
    t = load_prices(home=Path("/nonexistent-home"))
    # RunPod: A100-80GB at 1.39 (the "1.64" was an older catalog version); SizeInMiB holds GB
    a100 = t.get("runpod", "A100-80GB")
    assert (a100.usd_per_hour, a100.gpu_memory_gib, a100.count) == (1.39, 80, 1)
    assert t.get("runpod", "A100") is None  # RunPod has no 40 GB A100
    # a multi-GPU row's price is the machine's: 2x H100 at 5.78 = 2.89 per GPU
    two = t.get("runpod", "H100", 2)
    assert (two.usd_per_hour, two.usd_per_gpu_hour) == (5.78, 2.89)
    # Lambda: no spot column values; A100 40 GB 1.99 in the newer catalog
    lam = t.get("lambda", "A100")
    assert (lam.usd_per_hour, lam.spot_usd_per_hour, lam.gpu_memory_gib) == (1.99, None, 40)
    assert not t.sources["lambda"].has_spot
    # Vast: SpotPrice 0.00 is "no data"; "A100" is 40 or 80 GB, kept apart by memory; total memory per row
    vast_a100 = sorted((o.gpu_memory_gib, o.usd_per_hour, o.spot_usd_per_hour) for o in t.of("vast")
                       if o.accelerator == "A100")
    assert vast_a100 == [(40, 0.76, None), (80, 0.87, None)]
    assert t.get("vast", "RTX3090", 2).gpu_memory_gib == 24  # 49152 MiB for two
    assert t.get("vast", "RTX4090").region in ("Germany, DE, EU", "Washington, US, NA")  # quoted, with commas


@pytest.mark.parametrize("cloud,info,count,gib", [
    ("runpod", "{'Gpus': [{'Name': 'A100 PCIe', 'Count': 1, 'MemoryInfo': {'SizeInMiB': 80}}], "
               "'TotalGpuMemoryInMiB': 80}", 1, 80),
    ("vast", "{'Gpus': [{'Name': 'RTX3090', 'Count': 2, 'MemoryInfo': {'SizeInMiB': 49152}}], "
             "'TotalGpuMemoryInMiB': 49152}", 2, 24),
    ("lambda", "{'Gpus': [{'Name': 'A100', 'Count': 2.0, 'MemoryInfo': {'SizeInMiB': 40960}}], "
               "'TotalGpuMemoryInMiB': 40960}", 2, 40),
    ("vast", "not a dict", 1, None),
])
def test_gpu_memory_units_per_cloud(cloud, info, count, gib):
    assert gpu_memory_gib(cloud, info, count) == gib


def test_bad_cells_are_no_price(tmp_path):
    rows = [dict(r) for r in snapshot_rows("vast")[:3]]
    rows[0]["Price"], rows[1]["Price"], rows[2]["Price"] = "nan", "", "-1"
    rows[2]["SpotPrice"] = "0.00"
    path = write_catalog(tmp_path, "vast", rows)
    offers = read_catalog(path, "vast")
    assert offers == []  # no row has a usable on-demand or spot price


def test_skypilots_catalog_wins_per_cloud_and_plan_uses_it(tmp_path):
    """A catalog SkyPilot fetched (here: written with a distinctive price) is used for its cloud, with its
    age; the other clouds keep the snapshot. The plan prices RunPod's A100-80GB at that price."""
    rows = [dict(r) for r in snapshot_rows("runpod")]
    for r in rows:
        if r["AcceleratorName"] == "A100-80GB":
            r["Price"] = r["SpotPrice"] = "0.123"
    path = write_catalog(tmp_path, "runpod", rows)
    old = time.time() - 3 * 86400
    os.utime(path, (old, old))
    t = load_prices(home=tmp_path)
    assert t.sources["runpod"].kind == "catalog" and t.sources["vast"].kind == "snapshot"
    assert t.get("runpod", "A100-80GB").usd_per_hour == 0.123
    assert "runpod: SkyPilot catalog, 3 days old" in t.summary()

    r = invoke("--config", str(ROOT / "amigo.toml"), "plan", "--json", env={"HOME": str(tmp_path)})
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["prices"]["runpod"]["source"] == "catalog" and d["prices"]["runpod"]["path"] == str(path)
    chosen = [s["chosen"] for s in d["stages"].values()]
    assert any(c["accelerator"] == "A100-80GB" and c["usd_per_hour"] == 0.123 for c in chosen), chosen


def test_an_unreadable_catalog_falls_back_to_the_snapshot(tmp_path):
    d = tmp_path / ".sky" / "catalogs" / "v8" / "lambda"
    d.mkdir(parents=True)
    (d / "vms.csv").write_bytes(b"\xff\xfe not csv")
    t = load_prices(home=tmp_path)
    assert t.sources["lambda"].kind == "snapshot" and t.get("lambda", "A100").usd_per_hour == 1.99


def test_prices_command_shows_sources_ages_and_spot(tmp_path):
    write_catalog(tmp_path, "vast", [dict(r) for r in snapshot_rows("vast")[:4]])
    # wide enough for the catalog's path in one piece (a pytest-xdist worker's temp paths are longer)
    r = invoke("prices", env={"HOME": str(tmp_path), "COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    out = r.output
    assert "vast: SkyPilot catalog, 0 min old" in out and str(tmp_path / ".sky/catalogs/v8/vast/vms.csv") in out
    assert "runpod: snapshot of skypilot-org/skypilot-catalog" in out and "@ 01acdfd4" in out
    assert "no spot data" in out  # Vast's 0.00
    lambda_part = out.split("lambda:")[1].split("runpod:")[0]
    assert "no spot" in lambda_part and "no spot data" not in lambda_part  # Lambda sells none
    assert "$1.39/h" in out.split("runpod:")[1]  # RunPod's spot column equals its price: a real number


@pytest.mark.badinput
def test_prices_refresh_offline_is_one_line(tmp_path):
    """No network (a proxy that refuses): SkyPilot's own update fails; one line, exit 2, no traceback.
    A cached catalog SkyPilot fetched before (its .meta md5 beside it) keeps its age: SkyPilot touches
    the file after a failed fetch, and `prices` puts the time back. (A subprocess: SkyPilot fixes its
    catalog folder from HOME when first imported.)"""
    import hashlib
    import subprocess
    import sys

    path = write_catalog(tmp_path, "vast", [dict(r) for r in snapshot_rows("vast")])
    meta = tmp_path / ".sky" / "catalogs" / "v8" / ".meta" / "vast" / "vms.csv.md5"
    meta.parent.mkdir(parents=True)
    meta.write_text(hashlib.md5(path.read_bytes()).hexdigest())
    old = time.time() - 5 * 86400
    os.utime(path, (old, old))
    env = {**os.environ, "HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    r = subprocess.run([sys.executable, "-m", "amigo_burst.cli", "prices", "--refresh"], env=env, capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "could not refresh" in lines[0] and "runpod, vast, lambda" in lines[0], lines
    assert path.stat().st_mtime == pytest.approx(old, abs=1)
    assert load_prices(home=tmp_path).sources["vast"].kind == "catalog"


@pytest.mark.parametrize("watts,kwh", [(115, 0.30), (60, 0.12), (140, 0.0)])
def test_local_costs_electricity(watts, kwh):
    cfg = LocalGpuConfig(board_power_w=watts, usd_per_kwh=kwh)
    assert local_usd_per_hour(cfg) == pytest.approx(watts / 1000 * kwh)
    if kwh:
        assert local_usd_per_hour(cfg) > 0  # the laptop is not free
