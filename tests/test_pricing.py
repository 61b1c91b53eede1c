"""Prices: SkyPilot catalog CSVs (each cloud's own column order), the cache, the shipped snapshot, electricity."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest

from amigo_burst.config import LocalGpuConfig
from amigo_burst.planning.pricing import load_prices, local_usd_per_hour, read_snapshot

# Column orders as SkyPilot 0.14.1 writes them (SKYPILOT-NOTES.md).
RUNPOD = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Region,SpotPrice,Price,AvailabilityZone,GpuInfo
1x_A100-80GB_SECURE,A100-80GB,1.0,8,117,CA,0.82,1.64,CA-MTL-1,"{'Gpus': []}"
1x_A100-80GB_SECURE,A100-80GB,1.0,8,117,US,0.79,1.69,US-GA-1,"{'Gpus': []}"
2x_A100-80GB_SECURE,A100-80GB,2.0,16,234,CA,1.64,3.10,CA-MTL-1,"{'Gpus': []}"
1x_RTX4090_SECURE,RTX4090,1.0,6,41,CA,,0.69,CA-MTL-1,"{'Gpus': []}"
"""
LAMBDA = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice
gpu_1x_a100_sxm4,A100,1.0,30,200,1.29,us-east-1,"{'Gpus': []}",
gpu_1x_a100_sxm4,A100,1.0,30,200,1.29,us-west-1,"{'Gpus': []}",
gpu_8x_a100_80gb_sxm4,A100-80GB,8.0,240,1800,14.32,us-east-1,"{'Gpus': []}",
"""
VAST = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region
1x-RTX_4090-16-64000,RTX4090,1,16,64,RTX_4090,0.41,0.25,US-CA
1x-RTX_4090-32-128000,RTX4090,1,32,128,RTX_4090,0.38,0.30,US-TX
1x-RTX_4090-8-32000,RTX4090,1,8,32,RTX_4090,nan,,US-NY
"""


def write_catalogs(home, clouds=("runpod", "lambda", "vast")):
    text = {"runpod": RUNPOD, "lambda": LAMBDA, "vast": VAST}
    for c in clouds:
        d = home / ".sky" / "catalogs" / "v8" / c
        d.mkdir(parents=True)
        (d / "vms.csv").write_text(text[c])


def test_catalogs_parsed_by_header_per_cloud(tmp_path):
    write_catalogs(tmp_path)
    t = load_prices(tmp_path / "proj" / ".amigo" / "prices.json", home=tmp_path)
    assert t.source == "catalog"
    rp = t.get("runpod", "A100-80GB")
    assert (rp.usd_per_hour, rp.spot_usd_per_hour, rp.instance_type) == (1.64, 0.79, "1x_A100-80GB_SECURE")
    lam = t.get("lambda", "A100")
    assert (lam.usd_per_hour, lam.spot_usd_per_hour, lam.region) == (1.29, None, "us-east-1")
    assert t.get("lambda", "A100-80GB") is None  # 8-GPU machines only: not a one-GPU price
    va = t.get("vast", "RTX4090")
    assert (va.usd_per_hour, va.spot_usd_per_hour) == (0.38, 0.25)  # cheapest of each, NaN row ignored
    assert t.cheapest("RTX4090").cloud == "vast"
    assert "SkyPilot catalogs" in t.describe()


def test_cache_written_with_timestamp_and_used_offline(tmp_path):
    write_catalogs(tmp_path, ("runpod",))
    old = time.time() - 3 * 86400
    os.utime(tmp_path / ".sky/catalogs/v8/runpod/vms.csv", (old, old))
    cache = tmp_path / "proj" / ".amigo" / "prices.json"
    first = load_prices(cache, home=tmp_path)
    d = json.loads(cache.read_text())
    assert datetime.fromisoformat(d["as_of"]) == first.as_of
    assert first.age_text() == "3 days"
    # catalogs gone (a fresh machine, offline): the cache answers and says so
    empty = tmp_path / "empty-home"
    empty.mkdir()
    again = load_prices(cache, home=empty)
    assert again.source == "cache" and again.get("runpod", "RTX4090").usd_per_hour == 0.69
    assert "cached" in again.describe() and "3 days old" in again.describe()
    assert not list(cache.parent.glob("*.tmp"))


def test_snapshot_fallback_is_marked(tmp_path):
    t = load_prices(tmp_path / "none.json", home=tmp_path)
    assert t.source == "snapshot"
    assert "snapshot" in t.describe() and "not live" in t.describe()
    snap = read_snapshot()
    assert t.prices == snap.prices
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert t.age_text(now).endswith("days")


def test_corrupt_cache_falls_back_to_snapshot(tmp_path):
    cache = tmp_path / "prices.json"
    cache.write_text("{broken")
    assert load_prices(cache, home=tmp_path).source == "snapshot"


def test_snapshot_names_are_skypilot_catalog_names():
    snap = read_snapshot()
    names = {(p.cloud, p.accelerator) for p in snap.prices}
    # per-cloud spellings (SKYPILOT-NOTES): RunPod A100-80GB / H100-SXM, Lambda A100 (40 GB), Vast A100
    assert {("runpod", "A100-80GB"), ("runpod", "H100-SXM"), ("lambda", "A100"), ("vast", "RTX4090")} <= names
    assert all(p.usd_per_hour and p.usd_per_hour > 0 for p in snap.prices)
    assert all(p.spot_usd_per_hour is None for p in snap.prices if p.cloud == "lambda")  # no spot on Lambda


@pytest.mark.parametrize("watts,kwh", [(115, 0.30), (60, 0.12), (140, 0.0)])
def test_local_costs_electricity(watts, kwh):
    cfg = LocalGpuConfig(board_power_w=watts, usd_per_kwh=kwh)
    assert local_usd_per_hour(cfg) == pytest.approx(watts / 1000 * kwh)
    if kwh:
        assert local_usd_per_hour(cfg) > 0  # the laptop is not free
