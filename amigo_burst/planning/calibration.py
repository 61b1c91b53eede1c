"""Past runs correct later estimates, per (GPU class, method).

A finished run knows what was estimated (run["estimate"], Estimate.to_dict()) and what
happened (tokens_per_s, peak_vram_gib on the record or in metrics.json). The
correction is the geometric mean of measured / default-estimate over those runs:
ratios multiply, so a run 2x faster and one 2x slower cancel to 1.0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from amigo_burst.planning.estimate import Correction
from amigo_burst.planning.hardware import gpu_class

PEAK_KEYS = ("peak_vram_gib", "peak_memory_gib", "peak_mem_gib", "peak_alloc_gib")


def _num(*values: object) -> float | None:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            return float(v)
    return None


def observation(run: dict) -> tuple[tuple[str, str], float | None, float | None] | None:
    """((gpu, method), tokens/s ratio, peak ratio) of one finished run, None if it can't calibrate."""
    if run.get("status", "SUCCEEDED") != "SUCCEEDED":
        return None
    est, met = run.get("estimate") or {}, run.get("metrics") or {}
    gpu = gpu_class(est.get("gpu")) or gpu_class(met.get("gpu_name") or met.get("gpu") or met.get("device"))
    method = est.get("method") or met.get("method")
    if not gpu or method not in ("lora", "qlora"):
        return None
    tps = _num(run.get("tokens_per_s"), met.get("tokens_per_s"))
    tps_est = _num(est.get("tokens_per_s_default"), est.get("tokens_per_s"))
    peak = _num(run.get("peak_vram_gib"), *(met.get(k) for k in PEAK_KEYS))
    peak_est = _num(est.get("peak_alloc_gib_default"), est.get("peak_alloc_gib"))
    r_tps = tps / tps_est if tps and tps_est else None
    r_peak = peak / peak_est if peak and peak_est else None
    if r_tps is None and r_peak is None:
        return None
    return (gpu, method), r_tps, r_peak


def _gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def calibrate(runs: Iterable[dict]) -> dict[tuple[str, str], Correction]:
    """{(gpu, method): Correction(tokens_per_s factor, peak factor, runs, mem_runs)}."""
    tps: dict[tuple[str, str], list[float]] = defaultdict(list)
    peak: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        obs = observation(run)
        if obs is None:
            continue
        key, r_tps, r_peak = obs
        if r_tps is not None:
            tps[key].append(r_tps)
        if r_peak is not None:
            peak[key].append(r_peak)
    out = {}
    for key in set(tps) | set(peak):
        out[key] = Correction(_gmean(tps[key]) if tps[key] else 1.0, _gmean(peak[key]) if peak[key] else 1.0,
                              len(tps[key]), len(peak[key]))
    return out


def describe(calibration: dict, gpu: str, method: str) -> str:
    c = calibration.get((gpu, method))
    return f"calibrated from {c.runs} run{'s' if c.runs != 1 else ''}" if c and c.runs else "default"


def as_rows(calibration: dict) -> list[dict]:
    """The corrections in use, one row per (GPU class, method), for the report."""
    return [{"gpu": gpu, "method": method, "tokens_per_s_factor": f"{c.tokens_per_s:.3g}" if c.runs else "-",
             "peak_factor": f"{c.peak:.3g}" if c.mem_runs else "-", "runs": max(c.runs, c.mem_runs)}
            for (gpu, method), c in sorted(calibration.items())]
