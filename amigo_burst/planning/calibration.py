"""Past runs correct later estimates, per calibration key: GPU class, method, trainer, sequence band, GPU count.

A finished run knows what was estimated (run["estimate"], Cell.to_record()) and what happened
(metrics.json: step times, tokens, peak memory). Two kinds of measurement, kept apart:

- speed: the steady rate, tokens per optimizer step / the median step time. A probe and a whole run
  measure it the same way, so either calibrates; the whole run's wall clock (evaluations, checkpoint
  saves, the benchmark, start-up) is not a training speed: those are parts of their own (parts.py).
  A record without step times (older runs, the CPU measurements in tests/golden) gives its tokens_per_s.
- memory: the peak allocated, against the estimate at the micro-batch that really ran (an OOM back-off
  in the trainer halves it: the estimate is scaled to that batch, so the real peak is learned).

A probe or run stopped by its cap still measured its steps: STOPPED runs with step times count.
The correction is the geometric mean of measured / default-estimate over those runs: ratios
multiply, so a run 2x faster and one 2x slower cancel to 1.0. The whole-run wall clock against the
estimated hours is reported beside it (`wall`), never folded into the speed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from amigo_burst.planning.estimate import Correction, calibration_key
from amigo_burst.planning.hardware import gpu_class

PEAK_KEYS = ("peak_vram_gib", "peak_memory_gib", "peak_mem_gib", "peak_alloc_gib")


def _num(*values: object) -> float | None:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            return float(v)
    return None


def steady_tokens_per_s(metrics: dict) -> float | None:
    """Tokens per optimizer step / median step time (all ranks' tokens: num_input_tokens_seen is gathered;
    a resumed run's count includes the steps before it, so per step over all of them); None without step times."""
    seen, median = _num(metrics.get("tokens_seen")), _num(metrics.get("median_step_s"))
    steps = _num(metrics.get("steps"), metrics.get("steps_this_run"))
    return seen / steps / median if seen and steps and median else None


def _measured(run: dict) -> bool:
    """A run that measured something: finished, or stopped (a cap, a signal) after timed steps."""
    status = run.get("status", "SUCCEEDED")
    return status == "SUCCEEDED" or (status == "STOPPED" and bool((run.get("metrics") or {}).get("median_step_s")))


def key_of(run: dict) -> tuple | None:
    est, met = run.get("estimate") or {}, run.get("metrics") or {}
    gpu = gpu_class(est.get("gpu")) or gpu_class(met.get("gpu_name") or met.get("gpu") or met.get("device"))
    method = est.get("method") or met.get("method")
    if not gpu or method not in ("lora", "qlora"):
        return None
    trainer = est.get("trainer") or met.get("trainer") or "sft"
    seq = est.get("seq_len") or 2048
    return calibration_key(gpu, method, trainer, int(seq), int(est.get("gpu_count") or met.get("world_size") or 1))


def _estimated_peak(est: dict, micro_batch: int | None) -> float | None:
    """The default estimate's allocated peak, at the micro-batch that ran: weights and adapter states stay,
    activations and the loss scale with the batch."""
    peak = _num(est.get("peak_alloc_gib_default"), est.get("peak_alloc_gib"))
    planned = est.get("micro_batch")
    if peak is None or not micro_batch or not planned or micro_batch == planned:
        return peak
    bd = est.get("breakdown_gib") or {}
    fixed = (bd.get("weights") or 0) + (bd.get("lora_states") or 0)
    return fixed + (peak - fixed) * micro_batch / planned


def observation(run: dict) -> tuple[tuple, float | None, float | None] | None:
    """(calibration key, tokens/s ratio, peak ratio) of one run, None if it can't calibrate."""
    if not _measured(run):
        return None
    key = key_of(run)
    if key is None:
        return None
    est, met = run.get("estimate") or {}, run.get("metrics") or {}
    tps = steady_tokens_per_s(met) or _num(run.get("tokens_per_s"), met.get("tokens_per_s"))
    tps_est = _num(est.get("tokens_per_s_default"), est.get("tokens_per_s"))
    peak = _num(run.get("peak_vram_gib"), *(met.get(k) for k in PEAK_KEYS))
    peak_est = _estimated_peak(est, met.get("per_device_train_batch_size"))
    r_tps = tps / tps_est if tps and tps_est else None
    r_peak = peak / peak_est if peak and peak_est else None
    if r_tps is None and r_peak is None:
        return None
    return key, r_tps, r_peak


def wall_ratio(run: dict) -> float | None:
    """A whole run's hours (started to ended) over its estimated hours; None for probes and unfinished runs."""
    if run.get("status") != "SUCCEEDED" or (run.get("artifacts") or {}).get("probe"):
        return None
    from datetime import datetime

    try:
        hours = (datetime.fromisoformat(run["ended"]) - datetime.fromisoformat(run["started"])).total_seconds() / 3600
    except (KeyError, TypeError, ValueError):
        return None
    est = _num((run.get("estimate") or {}).get("hours"))
    return hours / est if est and hours > 0 else None


def _gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def calibrate(runs: Iterable[dict]) -> dict[tuple, Correction]:
    """{calibration key: Correction(tokens_per_s factor, peak factor, runs, mem_runs, peak_spread)}."""
    tps: dict[tuple, list[float]] = defaultdict(list)
    peak: dict[tuple, list[float]] = defaultdict(list)
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
        p = _gmean(peak[key]) if peak[key] else 1.0
        spread = max(peak[key]) / p - 1 if peak[key] else 0.0
        out[key] = Correction(_gmean(tps[key]) if tps[key] else 1.0, p, len(tps[key]), len(peak[key]), spread)
    return out


def describe(calibration: dict, key: tuple) -> str:
    c = calibration.get(key)
    return f"calibrated from {c.runs} run{'s' if c.runs != 1 else ''}" if c and c.runs else "default"


def as_rows(calibration: dict, runs: Iterable[dict] = ()) -> list[dict]:
    """The corrections in use, one row per key, for the report; `wall` is the whole runs' hours over their
    estimates on that key (shown, not applied)."""
    walls: dict[tuple, list[float]] = defaultdict(list)
    for run in runs:
        w, key = wall_ratio(run), key_of(run)
        if w is not None and key is not None:
            walls[key].append(w)
    rows = []
    for key, c in sorted(calibration.items()):
        gpu, method, trainer, band, count = key
        rows.append({"gpu": gpu if count == 1 else f"{gpu}:{count}", "method": method, "trainer": trainer,
                     "seq": f"<={band}", "tokens_per_s_factor": f"{c.tokens_per_s:.3g}" if c.runs else "-",
                     "peak_factor": f"{c.peak:.3g}" if c.mem_runs else "-",
                     "wall_factor": f"{_gmean(walls[key]):.3g}" if walls[key] else "-",
                     "runs": max(c.runs, c.mem_runs)})
    return rows
