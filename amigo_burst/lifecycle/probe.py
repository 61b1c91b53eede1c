"""`amigo-burst probe` and `launch --probe`: a few real steps on a target, measured, then the whole stage re-estimated.

    probe(cfg, ProbeOptions(stage=2, cloud="vast", steps=20), console) -> ProbeResult

The probe is an ordinary launch (same dataset, machine, micro-batch, accumulation, method) capped
at K steps and recorded as a probe: `runs.latest` never takes it for the stage's run, and
calibration reads it like any finished run. The measured speed is the steady one, tokens per
optimizer step / the median step time (the first steps pay warm-up and compilation, which the
estimate carries as setup), and the record keeps it, so the next estimate for that GPU class and
method is calibrated from it. Then the stage is estimated again, calibrated, for its full token
count. A cloud probe tears its cluster down, unless `launch --probe` keeps it for the run.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import LaunchOptions, launch, resolve_target
from amigo_burst.planning.budget import limits
from amigo_burst.state import ids
from amigo_burst.state.records import open_records

DEFAULT_STEPS = 20  # a couple of minutes on a cloud GPU; enough steps for a median past the warm-up
JSON_KEYS = ("target", "gpu", "gpu_count", "method", "measured_tokens_per_s", "measured_peak_vram_gib",
             "est_tokens_per_s", "est_peak_vram_gib", "projected_hours", "projected_usd")


@dataclass(kw_only=True, frozen=True)
class ProbeOptions:
    stage: int
    cloud: str | None = None
    steps: int = DEFAULT_STEPS
    gpu: str | None = None
    max_usd: float | None = None
    keep_cluster: str | None = None  # launch --probe: run on this cluster name and leave it up
    force: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 10_000:
            raise UserError(f"--steps must be 1-10000, got {self.steps}")


@dataclass(frozen=True)
class ProbeResult:
    run_id: str
    target: str
    gpu: str | None
    gpu_count: int
    method: str
    measured_tokens_per_s: float | None
    measured_peak_vram_gib: float | None
    est_tokens_per_s: float | None
    est_peak_vram_gib: float | None
    projected_hours: float | None
    projected_usd: float | None
    launch_gpu: str | None = None  # what the run after `launch --probe` must rent: the probed machine
    budget_usd: float | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in JSON_KEYS}


def steady_tokens_per_s(metrics: dict) -> float | None:
    """Tokens per optimizer step / median step time (all ranks' tokens: num_input_tokens_seen is gathered);
    metrics.json's wall-clock tokens_per_s when the step times are missing."""
    steps, seen, median = metrics.get("steps_this_run"), metrics.get("tokens_seen"), metrics.get("median_step_s")
    if steps and seen and median:
        return seen / steps / median
    return metrics.get("tokens_per_s")


def probe(cfg: AmigoConfig, opts: ProbeOptions, console) -> ProbeResult:
    """Run the probe, record what it measured, re-estimate the stage; UserError when it did not finish."""
    target = resolve_target(cfg, opts.stage, opts.cloud)
    records = open_records(cfg.root)
    from_base = opts.stage > 1 and records.latest(opts.stage - 1) is None  # the adapter does not change speed
    lo = LaunchOptions(stage=opts.stage, cloud=target.name, from_base=from_base, gpu=opts.gpu, force=opts.force,
                       probe_steps=opts.steps, keep=opts.keep_cluster is not None, cluster=opts.keep_cluster)
    run = launch(cfg, lo, console)
    if run.status != "SUCCEEDED":
        raise UserError(f"probe {run.id} {run.status}: {run.reason or 'see amigo-burst logs ' + run.id}")
    est = run.estimate or {}
    measured = steady_tokens_per_s(run.metrics or {})
    records.update(run.id, tokens_per_s=measured)  # calibration reads the record: the steady figure
    full = est.get("tokens") or planner.stage_tokens(cfg, opts.stage)  # launch's count of the prepared dataset
    runs = planner.past_runs(cfg)
    gpu = est.get("accelerator") and f"{est['accelerator']}:{est.get('gpu_count', 1)}"
    if target.is_local or not est.get("accelerator"):
        cell = (planner.estimate_for_target(cfg, opts.stage, target.name, full, runs) if target.is_local
                else planner.cpu_cell(cfg, opts.stage, target, full, runs))
    else:
        cell = planner.estimate_for_target(cfg, opts.stage, target.name, full, runs, gpu=gpu)
    budget = planner.budget_for(cfg, opts.stage, max_usd=opts.max_usd)
    return ProbeResult(
        run.id, target.name, est.get("gpu"), int(est.get("gpu_count") or 1), est.get("method") or "-",
        _r(measured), _r((run.metrics or {}).get("peak_mem_allocated_gib")), _r(est.get("tokens_per_s")),
        _r(est.get("peak_alloc_gib")), _r(cell.hours), _r(cell.usd), cell.launch_gpu, budget.usd)


def _r(x, n: int = 4):
    """N significant figures: a 30-second stage is 0.008333 h, its electricity $0.0002867."""
    if not isinstance(x, (int, float)) or not math.isfinite(x) or x == 0:
        return x if isinstance(x, (int, float)) else None
    return round(x, max(0, n - 1 - math.floor(math.log10(abs(x)))))


def launch_after_probe(cfg: AmigoConfig, opts: LaunchOptions, console, steps: int = DEFAULT_STEPS) -> object:
    """`launch --probe`: probe on the cluster the run will use, then launch only if the re-estimate keeps
    to the budget (or the user says so at a terminal); without a terminal, refuse in one line."""
    target = resolve_target(cfg, opts.stage, opts.cloud)
    keep = None if target.is_local else ids.cluster_name(ids.new_run_id(opts.stage, target.alias))
    result = probe(cfg, ProbeOptions(stage=opts.stage, cloud=target.name, steps=steps, gpu=opts.gpu,
                                     max_usd=opts.max_usd, keep_cluster=keep, force=opts.force), console)
    console.print(f"probe: {result.measured_tokens_per_s} tokens/s measured (estimated {result.est_tokens_per_s}); "
                  f"the stage re-estimated at {_money(result.projected_usd)}, {_hours(result.projected_hours)}")
    # the launch's own rule (planning/budget.py): the re-estimate within what the budget buys on this machine
    rate = result.projected_usd / result.projected_hours if result.projected_usd and result.projected_hours else None
    over = result.budget_usd is not None and result.projected_usd is not None and not limits(
        result.budget_usd, None, rate, cloud=not target.is_local).allows(result.projected_hours)
    if over and not _confirm(console, f"over the ${result.budget_usd:g} budget: launch anyway?"):
        _down(keep)
        raise UserError(f"stage {opts.stage} re-estimated at {_money(result.projected_usd)} after the probe, over the "
                        f"${result.budget_usd:g} budget: not launched (raise --max-usd, or answer yes at a terminal)")
    run_opts = LaunchOptions(**{**opts.__dict__, "cloud": target.name, "gpu": opts.gpu or result.launch_gpu,
                                "cluster": keep, "force": opts.force or over})
    return launch(cfg, run_opts, console)


def _confirm(console, question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return console.input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _down(cluster: str | None) -> None:
    if cluster:
        from amigo_burst.runners import sky as skyr

        skyr.down(cluster)


def _money(x) -> str:
    from amigo_burst.planning.units import usd_text

    return usd_text(x)


def _hours(x) -> str:
    from amigo_burst.planning.units import hours_text

    return hours_text(x)
