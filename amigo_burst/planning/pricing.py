"""$/hour per (cloud, accelerator, GPU count): SkyPilot's own catalog files, else a shipped snapshot of them.

Never fetches anything. Per cloud, `~/.sky/catalogs/v8/<cloud>/vms.csv` when SkyPilot has
fetched it (dated by the file's modification time), else data/catalog_<cloud>.csv: rows copied
verbatim from SkyPilot's public catalog (skypilot-org/skypilot-catalog, the commit of each
file in data/catalog_sources.csv). Both are read by the same parser, by column name: the
column order differs per cloud (RunPod puts Region before the prices, Lambda Price before
Region, Vast Region last). The traps of those files, handled here:

  - a multi-GPU row's Price is for the whole machine (SkyPilot's fetchers multiply the
    per-GPU price by the count): an Offer keeps the machine price and its count;
  - Vast's SpotPrice 0.00 means "no data", not free; Lambda has no spot (empty column);
    an empty or zero price is no price;
  - GpuInfo memory units differ: RunPod's `SizeInMiB` holds GB per GPU (80, 24, 48),
    Lambda's holds MiB per GPU, Vast's holds MiB for all GPUs of the row (2x RTX 3090:
    49152) -- per GPU = TotalGpuMemoryInMiB / count there;
  - Vast's "A100" is the 40 GB or the 80 GB card and its "H100" the SXM (80 GB) or the NVL
    (94 GB): offers are kept apart by per-GPU memory;
  - Vast regions are quoted strings with commas ("Texas, US, NA"): the csv module reads them.

The laptop is not free: board power x $/kWh, e.g. 115 W x $0.30/kWh = $0.0345/h.
"""

from __future__ import annotations

import ast
import csv
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from amigo_burst.clouds import PRICED

DATA = Path(__file__).parent / "data"
SOURCES = DATA / "catalog_sources.csv"


@dataclass(frozen=True)
class Offer:
    """The cheapest machine of one (cloud, accelerator, count, per-GPU memory) in a catalog."""

    cloud: str
    accelerator: str  # the cloud's SkyPilot name (RunPod A100-80GB, Lambda A100, Vast RTX4090)
    count: int
    usd_per_hour: float | None  # the whole machine, on demand
    spot_usd_per_hour: float | None = None  # the whole machine; None: no spot data
    gpu_memory_gib: float | None = None  # per GPU, from GpuInfo
    instance_type: str = ""
    region: str = ""

    @property
    def usd_per_gpu_hour(self) -> float | None:
        return self.usd_per_hour / self.count if self.usd_per_hour is not None else None

    @property
    def label(self) -> str:
        return f"{self.accelerator}:{self.count}"


@dataclass(frozen=True)
class CloudSource:
    """Where one cloud's prices come from."""

    cloud: str
    kind: str  # "catalog" (SkyPilot's file) | "snapshot" (shipped real rows)
    path: str
    as_of: datetime  # catalog: file time; snapshot: the day the rows were copied
    detail: str = ""  # snapshot: repository, commit; catalog: ""
    has_spot: bool = True  # the cloud sells spot at all (Lambda: no)
    note: str = ""  # why SkyPilot's own catalog file was not used (unreadable, no prices): said, not hidden


@dataclass(frozen=True)
class PriceTable:
    offers: tuple[Offer, ...]
    sources: dict[str, CloudSource] = field(default_factory=dict)

    def of(self, cloud: str) -> list[Offer]:
        return [o for o in self.offers if o.cloud == cloud.lower()]

    def get(self, cloud: str, accelerator: str, count: int = 1) -> Offer | None:
        """Cheapest on-demand offer of that accelerator and count on that cloud."""
        offers = [o for o in self.of(cloud) if o.accelerator == accelerator and o.count == count
                  and o.usd_per_hour is not None]
        return min(offers, key=lambda o: o.usd_per_hour, default=None)

    def cheapest(self, accelerator: str, count: int = 1) -> Offer | None:
        """Cheapest on-demand offer for an accelerator name and count across clouds."""
        offers = [o for o in self.offers if o.accelerator == accelerator and o.count == count
                  and o.usd_per_hour is not None]
        return min(offers, key=lambda o: o.usd_per_hour, default=None)

    def summary(self, now: datetime | None = None) -> str:
        """One short line: 'runpod: SkyPilot catalog 3 h old; lambda, vast: snapshot copied 2026-12-02'."""
        parts = []
        for kind in ("catalog", "snapshot"):
            srcs = [s for _, s in sorted(self.sources.items()) if s.kind == kind]
            if not srcs:
                continue
            names = ", ".join(s.cloud for s in srcs)
            if kind == "catalog":
                oldest = min(s.as_of for s in srcs)
                parts.append(f"{names}: SkyPilot catalog{'s' if len(srcs) > 1 else ''}, "
                             f"{age_text(oldest, now)} old")
            else:
                parts.append(f"{names}: shipped snapshot of SkyPilot's catalog, copied "
                             f"{min(s.as_of for s in srcs):%Y-%m-%d}")
        notes = [f"warning: {s.note}" for _, s in sorted(self.sources.items()) if s.note]
        return "; ".join(parts + notes) or "no prices"

    def describe(self, cloud: str | None = None, now: datetime | None = None) -> str:
        """'runpod: SkyPilot catalog, 3 h old' or, for every cloud, one short clause each."""
        clouds = [cloud] if cloud else sorted(self.sources)
        return "; ".join(source_text(self.sources[c], now) for c in clouds if c in self.sources) or "no prices"


def short_source(s: CloudSource | None, now: datetime | None = None) -> str:
    """'SkyPilot catalog, 3 h old' or 'snapshot @01acdfd4'."""
    if s is None:
        return "no prices"
    if s.kind == "catalog":
        return f"SkyPilot catalog, {age_text(s.as_of, now)} old"
    return f"snapshot {s.detail.rsplit(' ', 1)[-1]}"


def source_text(s: CloudSource, now: datetime | None = None) -> str:
    if s.kind == "catalog":
        return f"{s.cloud}: SkyPilot catalog, {age_text(s.as_of, now)} old"
    days = ((now or datetime.now(timezone.utc)) - s.as_of).days  # the copy is dated to the day
    return f"{s.cloud}: snapshot {s.detail}, copied {s.as_of:%Y-%m-%d}" + (f" ({days} days ago)" if days >= 2 else "") \
        + (f"; warning: {s.note}" if s.note else "")


def age_text(then: datetime, now: datetime | None = None) -> str:
    s = max(0.0, ((now or datetime.now(timezone.utc)) - then).total_seconds())
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} days"


def _price(v: str | None) -> float | None:
    """A price cell: None for empty, unparsable, NaN, negative or zero (Vast's 0.00 spot = no data)."""
    try:
        x = float(v) if v not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) and x > 0 else None


def gpu_memory_gib(cloud: str, info: str | None, count: int) -> float | None:
    """Per-GPU memory from a GpuInfo cell (a Python dict literal), in each cloud's own units."""
    try:
        d = ast.literal_eval(info or "")
        size = float(d["Gpus"][0]["MemoryInfo"]["SizeInMiB"])
        total = float(d.get("TotalGpuMemoryInMiB") or size)
    except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None
    if cloud == "runpod":
        return size  # marketed GB per GPU, whatever the key says; a GPU's "80 GB" is 81920 MiB = 80 GiB
    if cloud == "vast":
        return total / max(count, 1) / 1024  # the row's total: 2x RTX 3090 = 49152 MiB
    return size / 1024  # Lambda: MiB per GPU


def _key(o: Offer) -> tuple:
    return o.accelerator, o.count, round(o.gpu_memory_gib or 0)


def read_catalog(path: Path, cloud: str) -> list[Offer]:
    """The cheapest on-demand and the cheapest spot price per (accelerator, count, memory) of one vms.csv."""
    best: dict[tuple, Offer] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            acc = (r.get("AcceleratorName") or "").strip()
            count = _price(r.get("AcceleratorCount"))
            price, spot = _price(r.get("Price")), _price(r.get("SpotPrice"))
            if not acc or not count or count != int(count) or (price is None and spot is None):
                continue  # CPU-only machines, fractional GPUs, rows without any price
            o = Offer(cloud, acc, int(count), price, spot, gpu_memory_gib(cloud, r.get("GpuInfo"), int(count)),
                      (r.get("InstanceType") or "").strip(), (r.get("Region") or "").strip())
            cur = best.get(_key(o))
            best[_key(o)] = o if cur is None else _merge(cur, o)
    return sorted(best.values(), key=lambda o: (o.accelerator, o.count, o.gpu_memory_gib or 0))


def _merge(a: Offer, b: Offer) -> Offer:
    """Cheapest on-demand (its instance and region) and cheapest spot of two rows of one key."""
    spot = min((x for x in (a.spot_usd_per_hour, b.spot_usd_per_hour) if x is not None), default=None)
    if a.usd_per_hour is None or (b.usd_per_hour is not None and b.usd_per_hour < a.usd_per_hour):
        a, b = b, a
    return Offer(a.cloud, a.accelerator, a.count, a.usd_per_hour, spot, a.gpu_memory_gib, a.instance_type, a.region)


def catalog_root(home: Path | None = None) -> Path:
    return (home or Path.home()) / ".sky" / "catalogs" / "v8"


def snapshot_sources() -> dict[str, dict]:
    with open(SOURCES, newline="", encoding="utf-8") as f:
        return {r["cloud"]: r for r in csv.DictReader(f)}


def read_snapshot(cloud: str) -> tuple[list[Offer], CloudSource]:
    meta = snapshot_sources()[cloud]
    path = DATA / meta["file"]
    as_of = datetime.fromisoformat(meta["copied"]).replace(tzinfo=timezone.utc)
    detail = f"of {meta['repository']} {meta['path']} @ {meta['commit']}"
    return read_catalog(path, cloud), CloudSource(cloud, "snapshot", str(path), as_of, detail, cloud != "lambda")


def load_prices(*, home: Path | None = None, clouds: tuple[str, ...] = PRICED) -> PriceTable:
    """Per cloud: SkyPilot's catalog under HOME when it is there and readable, else the snapshot."""
    offers: list[Offer] = []
    sources: dict[str, CloudSource] = {}
    for cloud in clouds:
        f = catalog_root(home) / cloud / "vms.csv"
        got, note = None, ""
        if f.is_file():
            try:
                got = read_catalog(f, cloud)
            except (OSError, csv.Error, UnicodeDecodeError) as e:
                note = f"{f} is unreadable ({e.__class__.__name__})"
            if got == []:
                note = f"{f} has no priced GPU rows"
            if note:  # SkyPilot reads that file too when it launches: the user should know
                note += ": using the shipped snapshot (remove that file, then `amigo-burst prices --refresh` fetches a fresh one)"
        if got:
            as_of = datetime.fromtimestamp(f.stat().st_mtime, timezone.utc)
            offers += got
            sources[cloud] = CloudSource(cloud, "catalog", str(f), as_of, "", cloud != "lambda")
        else:
            snap, src = read_snapshot(cloud)
            offers += snap
            sources[cloud] = replace(src, note=note)
    return PriceTable(tuple(offers), sources)


def local_usd_per_hour(local_gpu_cfg) -> float:
    """Electricity: board_power_w / 1000 x usd_per_kwh.  115 W x $0.30/kWh = $0.0345/h."""
    return local_gpu_cfg.board_power_w / 1000 * local_gpu_cfg.usd_per_kwh
