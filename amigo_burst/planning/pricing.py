"""$/hour per (cloud, accelerator): SkyPilot's catalogs when present, else our cache, else a shipped snapshot.

Never fetches anything: it reads `~/.sky/catalogs/v8/<cloud>/vms.csv` (SkyPilot keeps
them fresh when it runs), keeps the cheapest one-GPU offer per (cloud, accelerator),
and caches that with a timestamp in `.amigo/prices.json`. Offline with no catalog the
last cache is used, else `data/prices_snapshot.csv`, and the source says so.

The laptop is not free: board power x $/kWh, e.g. 115 W x $0.30/kWh = $0.0345/h.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from amigo_burst.clouds import PRICED

SNAPSHOT = Path(__file__).parent / "data" / "prices_snapshot.csv"


@dataclass(frozen=True)
class Price:
    cloud: str
    accelerator: str
    usd_per_hour: float | None
    spot_usd_per_hour: float | None = None
    instance_type: str = ""
    region: str = ""


@dataclass(frozen=True)
class PriceTable:
    prices: tuple[Price, ...]
    source: str  # "catalog" | "cache" | "snapshot"
    as_of: datetime  # when the prices were current (catalog file time, cache time, snapshot date)
    note: str = ""

    def get(self, cloud: str, accelerator: str) -> Price | None:
        for p in self.prices:
            if p.cloud == cloud.lower() and p.accelerator == accelerator:
                return p
        return None

    def cheapest(self, accelerator: str) -> Price | None:
        """Cheapest on-demand offer for an accelerator name across clouds."""
        offers = [p for p in self.prices if p.accelerator == accelerator and p.usd_per_hour is not None]
        return min(offers, key=lambda p: p.usd_per_hour, default=None)

    def age_text(self, now: datetime | None = None) -> str:
        return age_text(self.as_of, now)

    def describe(self, now: datetime | None = None) -> str:
        what = {"catalog": "SkyPilot catalogs", "cache": "cached SkyPilot catalog prices",
                "snapshot": "shipped snapshot (not live prices)"}[self.source]
        return f"prices: {what}, {self.age_text(now)} old" + (f" ({self.note})" if self.note else "")


def age_text(then: datetime, now: datetime | None = None) -> str:
    s = max(0.0, ((now or datetime.now(timezone.utc)) - then).total_seconds())
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} days"


def _float(v: str | None) -> float | None:
    try:
        x = float(v) if v not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and x == x and x >= 0 else None  # drop NaN / negatives


def read_catalog(path: Path, cloud: str) -> list[Price]:
    """Cheapest one-GPU offer per accelerator in one SkyPilot vms.csv.

    Columns are read by header name: their order differs per cloud (RunPod puts Region
    before the prices, Lambda Price before Region, Vast Region last).
    """
    best: dict[str, Price] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            acc = (r.get("AcceleratorName") or "").strip()
            if not acc or _float(r.get("AcceleratorCount")) != 1.0:
                continue
            price, spot = _float(r.get("Price")), _float(r.get("SpotPrice"))
            if price is None and spot is None:
                continue
            cur = best.get(acc)
            p = Price(cloud, acc, price, spot, r.get("InstanceType", ""), r.get("Region", ""))
            if cur is None:
                best[acc] = p
                continue
            od = min((x for x in (cur.usd_per_hour, price) if x is not None), default=None)
            sp = min((x for x in (cur.spot_usd_per_hour, spot) if x is not None), default=None)
            keep = p if (price is not None and (cur.usd_per_hour is None or price < cur.usd_per_hour)) else cur
            best[acc] = Price(cloud, acc, od, sp, keep.instance_type, keep.region)
    return sorted(best.values(), key=lambda p: p.accelerator)


def catalog_root(home: Path | None = None) -> Path:
    return (home or Path.home()) / ".sky" / "catalogs" / "v8"


def read_snapshot(path: Path = SNAPSHOT) -> PriceTable:
    prices, dates = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            prices.append(Price(r["cloud"], r["accelerator"], _float(r["usd_per_hour"]),
                                _float(r["spot_usd_per_hour"]), r["instance_type"], r["region"]))
            dates.append(r["snapshot_date"])
    as_of = datetime.fromisoformat(max(dates)).replace(tzinfo=timezone.utc)
    return PriceTable(tuple(prices), "snapshot", as_of, f"snapshot of {max(dates)}")


def _write_cache(cache_path: Path, table: PriceTable) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"as_of": table.as_of.isoformat(), "note": table.note,
                               "prices": [asdict(p) for p in table.prices]}, indent=1))
    os.replace(tmp, cache_path)  # never a half-written cache


def _read_cache(cache_path: Path) -> PriceTable | None:
    try:
        d = json.loads(cache_path.read_text(encoding="utf-8"))
        prices = tuple(Price(**p) for p in d["prices"])
        return PriceTable(prices, "cache", datetime.fromisoformat(d["as_of"]), d.get("note", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_prices(cache_path: Path | None = None, *, home: Path | None = None) -> PriceTable:
    """Catalogs (and refresh the cache) -> cache -> shipped snapshot."""
    root = catalog_root(home)
    prices, times, clouds = [], [], []
    for cloud in PRICED:
        f = root / cloud / "vms.csv"
        if f.is_file():
            try:
                prices += read_catalog(f, cloud)
            except (OSError, csv.Error, UnicodeDecodeError):
                continue
            times.append(f.stat().st_mtime)
            clouds.append(cloud)
    if prices:
        as_of = datetime.fromtimestamp(min(times), timezone.utc)  # the oldest catalog dates the table
        table = PriceTable(tuple(prices), "catalog", as_of, ", ".join(clouds))
        if cache_path is not None:
            try:
                _write_cache(cache_path, table)
            except OSError:
                pass
        return table
    cached = _read_cache(cache_path) if cache_path is not None else None
    return cached or read_snapshot()


def local_usd_per_hour(local_gpu_cfg) -> float:
    """Electricity: board_power_w / 1000 x usd_per_kwh.  115 W x $0.30/kWh = $0.0345/h."""
    return local_gpu_cfg.board_power_w / 1000 * local_gpu_cfg.usd_per_kwh
