"""What `rehearse` must reproduce of the real plan, and what it checks without training.

    stage_plans(cfg)     per stage, what a real `launch --stage N` would run: its target, the plan's
                         machine, method (one per chain: stage 1's, as launch.choose_method keeps it),
                         micro-batch x grad-accum and GPU count -- or the one line it would be refused with
                         (the fit and the budget, as preflight.check_fit_first / check_estimate say)
    check_sky_tasks(cfg) each cloud target's task as a launch of the plan builds it (envs, the plan's
                         machines as `resources.ordered`), through SkyPilot's own Task/Resources validation;
                         offline, no API server, no credentials
"""

from __future__ import annotations

from dataclasses import dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError, one_line
from amigo_burst.lifecycle.launch import choose_method, planned_gpu, resolve_target, stage_envs
from amigo_burst.lifecycle.preflight import check_estimate, check_fit_first


@dataclass(frozen=True)
class StagePlan:
    stage: int
    target: str
    machine: str  # "RTX6000-Ada:1", the laptop's GPU, "CPU"
    method: str
    micro_batch: int
    grad_accum: int
    gpu_count: int
    refused: str = ""  # why a real launch would refuse the stage ("" when it would start)


def _with_method(cfg: AmigoConfig, method: str | None) -> AmigoConfig:
    if method is None:
        return cfg
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"method": method})})


def stage_plans(cfg: AmigoConfig) -> dict[int, StagePlan]:
    """{stage: StagePlan} in stage order; later stages train with the first stage's method (the chain)."""
    out, chain = {}, None
    for n in sorted(cfg.stages):
        target = resolve_target(cfg, n, None)
        ecfg = _with_method(cfg, chain)
        refused, cell = "", None
        try:
            check_fit_first(ecfg, n, target, force=False)
            cell = planner.estimate_for_launch(ecfg, n, target, planner.stage_tokens(cfg, n))
            check_estimate(n, target, cell, planner.budget_for(cfg, n), force=False)
        except UserError as e:
            refused = one_line(str(e))
        if cell is None and not refused:
            cell = planner.estimate_for_launch(ecfg, n, target, None, cpu_fallback=True)
        method = choose_method(ecfg, cell)
        chain = chain or method
        machine = (cell.gpu_label if cell is not None and cell.option is not None else "CPU") if cell else "-"
        out[n] = StagePlan(n, target.name, machine, method, cell.micro_batch if cell else 1,
                           cell.grad_accum if cell else 1, max(cell.gpu_count, 1) if cell else 1, refused)
    return out


def check_sky_tasks(cfg: AmigoConfig) -> dict[str, str]:
    """{cloud target: "" when SkyPilot accepts its task, else the one-line reason}. Each target is checked
    with the plan of the first stage it runs (the same YAML for every stage; only envs and machine differ)."""
    from amigo_burst.runners.sky import build_task

    first: dict[str, int] = {}
    for n in sorted(cfg.stages):
        t = resolve_target(cfg, n, None)
        if not t.is_local:
            first.setdefault(t.name, n)
    out = {}
    for name, n in first.items():
        target = resolve_target(cfg, n, name)
        try:
            cell = planner.estimate_for_launch(cfg, n, target, None, cpu_fallback=True)
            envs = stage_envs(cfg, n, "rehearsal", choose_method(cfg, cell), 0, cell)
            build_task(target.path, envs, {}, cfg.root, gpu=planned_gpu(target, cell, None))
            out[name] = ""
        except UserError as e:
            out[name] = one_line(str(e))
        except Exception as e:  # noqa: BLE001 - SkyPilot's own refusal, whatever its type: that is the finding
            out[name] = one_line(f"{e.__class__.__name__}: {e}")
    return out
