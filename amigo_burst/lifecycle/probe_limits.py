"""A probe's limits, from the estimate of the stage it probes (launch.py and probe.py share them).

    probe_rows_for   the rows its K steps train on: K x micro-batch x accumulation x GPUs
    probe_cap_s      its --max-runtime-s: --max-seconds, else parts.probe_plan's cap (2x the estimated
                     download and steps, at least 5 min), not a constant: a stage-4 step on an RTX 6000
                     Ada is ~2 min by the plan's own numbers, a tiny model's a few milliseconds
"""

from __future__ import annotations

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.planning.matrix import Cell
from amigo_burst.targets import Target

PROBE_MAX_RUNTIME_S = 1200  # a probe without an estimate (no GPU row to estimate against) stops after 20 min


def probe_rows_for(cfg: AmigoConfig, stage: int, target: Target, opts) -> int:
    """The rows a probe's steps train on, at the micro-batch x accumulation x GPUs its estimate plans."""
    from amigo_burst.planning.parts import probe_rows

    cell = planner.estimate_for_launch(cfg, stage, target, None, gpu=opts.gpu, cpu_fallback=True)
    if cell is None or not cell.micro_batch:
        return probe_rows(1, 16, 1, opts.probe_steps)
    return probe_rows(cell.micro_batch, cell.grad_accum, cell.gpu_count, opts.probe_steps)


def probe_cap_s(est: Cell | None, opts) -> int:
    """--max-seconds, else the cap from the estimated download and step time (parts.probe_plan)."""
    from amigo_burst.planning.parts import probe_plan

    if opts.probe_max_s:
        return opts.probe_max_s
    if est is None or est.estimate is None:
        return PROBE_MAX_RUNTIME_S
    return probe_plan(est.estimate, est.grad_accum, opts.probe_steps, 0.0)["cap_s"]


