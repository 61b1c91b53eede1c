"""`amigo-burst probe` and `launch --probe`: a few real steps on a target, measured, then the whole stage re-estimated.

    probe(cfg, ProbeOptions(stage=2, cloud="vast", steps=20), console) -> ProbeResult

The probe is an ordinary launch (same machine, micro-batch, accumulation, method) bounded by K steps:
it prepares only the rows those steps train on (here, or on the target for a hub dataset), holds no
rows out, runs no benchmark, and is capped in time by its own estimate (2x the estimated download and
steps, lifecycle/probe_limits.py), not by a constant. Before it starts, its own time and cost are
printed. It is recorded as a probe: `runs.latest` never takes it for the stage's run.

The measured speed is the steady one, tokens per optimizer step / the median step time (the first steps
pay warm-up and compilation, which the estimate carries as setup). A probe its cap stopped after some
timed steps still measured them: the measurement is kept and calibrates like a finished one. Then the
stage is estimated again, calibrated, for its full token count. A cloud probe tears its cluster down,
unless `launch --probe` keeps it for the run.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import LaunchOptions, launch, resolve_target
from amigo_burst.lifecycle.probe_limits import probe_cap_s
from amigo_burst.planning.budget import limits
from amigo_burst.planning.calibration import steady_tokens_per_s
from amigo_burst.state import ids
from amigo_burst.state.records import open_records

DEFAULT_STEPS = 20  # enough steps for a median past the warm-up
JSON_KEYS = ("target", "gpu", "gpu_count", "method", "measured_tokens_per_s", "measured_peak_vram_gib",
             "est_tokens_per_s", "est_peak_vram_gib", "projected_hours", "projected_usd", "status", "steps",
             "steps_run", "probe_hours", "probe_usd", "cap_s")


@dataclass(kw_only=True, frozen=True)
class ProbeOptions:
    stage: int
    cloud: str | None = None
    steps: int = DEFAULT_STEPS
    gpu: str | None = None
    max_usd: float | None = None
    keep_cluster: str | None = None  # launch --probe: run on this cluster name and leave it up
    force: bool = False
    max_seconds: int | None = None  # the cap; None: from the estimated step time

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 10_000:
            raise UserError(f"--steps must be 1-10000, got {self.steps}")
        if self.max_seconds is not None and self.max_seconds < 1:
            raise UserError(f"--max-seconds must be >= 1, got {self.max_seconds}")


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
    status: str = "SUCCEEDED"  # STOPPED: its cap stopped it after steps_run steps (still measured)
    steps: int = 0
    steps_run: int = 0
    probe_hours: float | None = None  # what the probe itself was estimated to take and cost, before it ran
    probe_usd: float | None = None
    cap_s: int | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in JSON_KEYS}


def probe_estimate(cfg: AmigoConfig, opts: ProbeOptions, target) -> dict | None:
    """The probe's own time and cost before it starts (parts.probe_plan over the stage's estimate), or None
    where there is nothing to estimate against."""
    from amigo_burst.planning.parts import probe_plan, probe_rows

    tokens = planner.stage_tokens(cfg, opts.stage)
    cell = planner.estimate_for_launch(cfg, opts.stage, target, tokens, gpu=opts.gpu, cpu_fallback=True)
    if cell is None or cell.estimate is None:
        return None
    rows = planner.stage_rows(cfg, opts.stage)
    need = probe_rows(cell.micro_batch, cell.grad_accum, cell.gpu_count, opts.steps)
    plan = probe_plan(cell.estimate, cell.grad_accum, opts.steps, need / rows if rows else 1.0)
    lo = LaunchOptions(stage=opts.stage, probe_steps=opts.steps, probe_max_s=opts.max_seconds)
    return plan | {"cell": cell, "rows": need, "cap_s": probe_cap_s(cell, lo)}


def describe_plan(p: dict, steps: int) -> str:
    from amigo_burst.planning.units import hours_text, usd_text

    c, s = p["cell"], p["seconds"]
    parts = ", ".join(f"{k} {hours_text(v / 3600)}" for k, v in s.items() if k != "steps" and v > 0)
    return (f"probe: {steps} steps of {c.gpu_label} ({c.method}, {c.micro_batch}x{c.grad_accum}, {p['rows']:,} rows): "
            f"~{hours_text(p['total_s'] / 3600)}" + (f" ({parts}, " if parts else " (")
            + f"{steps} x {p['step_s']:,.1f} s a step), ~{usd_text(p['usd'])}; stopped after {p['cap_s']:,} s "
            "of training at most")


def probe(cfg: AmigoConfig, opts: ProbeOptions, console) -> ProbeResult:
    """Run the probe, keep what it measured (also when its cap stopped it), re-estimate the stage;
    UserError when it measured nothing."""
    target = resolve_target(cfg, opts.stage, opts.cloud)
    records = open_records(cfg.root)
    parent = cfg.previous_stage(opts.stage)
    from_base = parent is not None and records.latest(parent) is None  # the adapter does not change speed
    before = probe_estimate(cfg, opts, target)
    if before is not None:
        console.print(describe_plan(before, opts.steps))
    lo = LaunchOptions(stage=opts.stage, cloud=target.name, from_base=from_base, gpu=opts.gpu, force=opts.force,
                       probe_steps=opts.steps, probe_max_s=opts.max_seconds, keep=opts.keep_cluster is not None,
                       cluster=opts.keep_cluster)
    run = launch(cfg, lo, console)
    metrics = run.metrics or {}
    measured = steady_tokens_per_s(metrics) if run.status in ("SUCCEEDED", "STOPPED") else None
    if measured is None:
        raise UserError(f"probe {run.id} {run.status}: {run.reason or 'see amigo-burst logs ' + run.id}")
    if run.status != "SUCCEEDED":  # the cap stopped it: its timed steps stand
        console.print(f"probe {run.id} stopped by its cap after {metrics.get('steps_this_run')} of {opts.steps} "
                      f"steps ({run.reason}): measured from those steps")
    est = run.estimate or {}
    records.update(run.id, tokens_per_s=measured)  # calibration reads the record: the steady figure
    full = est.get("tokens") or planner.stage_tokens(cfg, opts.stage)  # launch's count of the stage
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
        _r(measured), _r(metrics.get("peak_mem_allocated_gib")), _r(est.get("tokens_per_s")),
        _r(est.get("peak_alloc_gib")), _r(cell.hours), _r(cell.usd), cell.launch_gpu, budget.usd,
        status=run.status, steps=opts.steps, steps_run=int(metrics.get("steps_this_run") or 0),
        probe_hours=_r(before["total_s"] / 3600) if before else None,
        probe_usd=_r(before["usd"]) if before else None, cap_s=before["cap_s"] if before else None)


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
