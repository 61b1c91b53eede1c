"""The original hardware analysis beside the computed plan: each figure, its computed value, why they differ.

The original figures (the analysis the project started from; ../shared/catalogs/README.md quotes
the price ones): RunPod rents a 40 GB A100; Vast's A100 costs $0.20-0.60/h; Lambda's 40 GB A100
$1.10/h; a 12B model with QLoRA fits 6-8 GB; stage 1 on the laptop takes 5-10 days, all five
stages 15-25 days; the cloud does it in 7-10 days for $60-250. Pure: the plan and prices come in.
"""

from __future__ import annotations

from amigo_burst.planning.estimate import Workload, estimate
from amigo_burst.planning.hardware import GpuSpec, ModelArch, gpu_for_accelerator
from amigo_burst.planning.pricing import PriceTable, short_source
from amigo_burst.planning.strategies import Plan, Strategy
from amigo_burst.planning.units import hours_text, usd_text

ROW_KEYS = ("figure", "original", "computed", "reason")


def _days(h: float | None) -> str:
    return "-" if h is None else f"{hours_text(h)} ({h / 24:.1f} days)"


def _range(xs: list[float]) -> str:
    lo, hi = min(xs), max(xs)
    return f"${lo:.2f}/h" if lo == hi else f"${lo:.2f}-{hi:.2f}/h"


def _a100(prices: PriceTable, cloud: str) -> list[tuple[float, float]]:
    """(per-GPU $/h, GiB) of every A100 offer of a cloud, whatever its name there."""
    out = []
    for o in prices.of(cloud):
        g = gpu_for_accelerator(cloud, o.accelerator, o.gpu_memory_gib)
        if g is not None and g.name.startswith("A100") and o.usd_per_gpu_hour is not None:
            out.append((o.usd_per_gpu_hour, g.memory_gib))
    return out


def _price_rows(prices: PriceTable) -> list[dict]:
    rows = []
    rp = _a100(prices, "runpod")
    forty = [p for p, m in rp if m < 60]
    rows.append({"figure": "RunPod A100 40 GB", "original": "rented on RunPod",
                 "computed": f"{_range(forty)} (40 GB)" if forty else
                 f"none: only 80 GB A100s, {_range([p for p, _ in rp])}" if rp else "no A100 in the catalog",
                 "reason": f"RunPod's catalog lists no 40 GB A100 ({_src(prices, 'runpod')})" if not forty
                 else f"RunPod's catalog ({_src(prices, 'runpod')})"})
    va = _a100(prices, "vast")
    rows.append({"figure": "Vast A100 price", "original": "$0.20-0.60/h",
                 "computed": (f"{_range([p for p, _ in va])} ({', '.join(sorted({f'{m:g} GiB' for _, m in va}))})"
                              if va else "no A100 in the catalog"),
                 "reason": f"SkyPilot's Vast prices are a median of live offers, not the cheapest listing "
                           f"({_src(prices, 'vast')})"})
    la = [p for p, m in _a100(prices, "lambda") if m < 60]
    rows.append({"figure": "Lambda A100 40 GB price", "original": "$1.10/h",
                 "computed": _range(la) if la else "no 40 GB A100 in the catalog",
                 "reason": f"Lambda's on-demand list price ({_src(prices, 'lambda')})"})
    return rows


def _src(prices: PriceTable, cloud: str) -> str:
    return short_source(prices.sources.get(cloud))


def _strategy(plan: Plan, name: str) -> Strategy | None:
    return next((s for s in plan.strategies if s.name == name), None)


def compare(plan: Plan, prices: PriceTable, arch: ModelArch, laptop: GpuSpec | None, stage1_seq: int = 2048) -> list[dict]:
    """One row per figure of the original analysis (ROW_KEYS)."""
    rows = _price_rows(prices)
    if laptop is not None:
        e = estimate(arch, laptop, Workload("qlora", stage1_seq, 1, packing=False))
        rows.append({"figure": f"{arch.name} QLoRA memory", "original": "fits 6-8 GB",
                     "computed": f"{e.peak_vram_gib:.1f} GiB at seq {stage1_seq}, micro-batch 1",
                     "reason": f"NF4 weights alone are {e.breakdown_gib['weights']:.1f} GiB (embeddings and "
                               f"head stay bf16), then LoRA states, activations, CUDA context"})
    local, cloud = _strategy(plan, "all local"), _strategy(plan, "all cloud")
    if local is not None and local.picks:
        first = local.picks[min(local.picks)]
        how = f" with {first.how}" if first.how else ""
        rows.append({"figure": "stage 1 on the laptop", "original": "5-10 days",
                     "computed": (_days(first.hours) + how) if first.cell else "does not fit",
                     "reason": _why(first.cell, plan.local_note)})
        rows.append({"figure": "all stages on the laptop", "original": "15-25 days",
                     "computed": _days(local.hours) + (f" ({local.placed} of {len(local.picks)} stages)"
                                                      if local.placed < len(local.picks) else ""),
                     "reason": local.note or "the estimator's tokens/s on the laptop, stage by stage"})
    if cloud is not None:
        gpus = sorted({p.cell.gpu_label for p in cloud.picks.values() if p.cell})
        rows.append({"figure": "all stages in the cloud", "original": "7-10 days for $60-250",
                     "computed": f"{_days(cloud.hours)} for {usd_text(cloud.usd)}",
                     "reason": f"each stage on its cheapest fitting machine ({', '.join(gpus)}); stages run "
                               f"one after another, setup and download included"})
    return rows


def _why(cell, local_note: str) -> str:
    if cell is None or cell.estimate is None:
        return local_note or "does not fit the laptop"
    e = cell.estimate
    tokens = (e.tokens_per_s * e.train_hours * 3600) if e.train_hours else 0
    return (f"{local_note + ': ' if local_note else ''}{e.model} trains {tokens / 1e6:.1f}M tokens at "
            f"{e.tokens_per_s:,.0f} tokens/s ({e.gpu}, {e.method}, {e.calibration})")
