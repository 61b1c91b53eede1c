"""`plan --cloud X`: SkyPilot's own optimizer on the task a launch of the stage would hand it, on the
machine the plan chose for that target (a dry run: nothing is rented, no credentials or network needed
once SkyPilot has its catalogs)."""

from __future__ import annotations

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import choose_method, planned_gpu, stage_envs
from amigo_burst.runners.sky import build_task
from amigo_burst.runners.sky_optimizer import optimize_offline
from amigo_burst.targets import get_target


def planned_task(cfg: AmigoConfig, stage: int, target_name: str):
    """(the sky.Task a launch of STAGE on TARGET builds, its plan cell): the same envs and machine."""
    target = get_target(target_name, cfg.root)
    if target.is_local:
        raise UserError("plan --cloud: the local target is not rented; see `amigo-burst plan`")
    cell = planner.estimate_for_target(cfg, stage, target.name)
    envs = stage_envs(cfg, stage, "plan", choose_method(cfg, cell), 0, cell)
    return build_task(target.path, envs, {}, cfg.root, gpu=planned_gpu(target, cell, None)), cell


def optimizer_choice(cfg: AmigoConfig, cloud: str, stage: int) -> dict:
    """cloud, instance_type, region, accelerator, usd_per_hour, use_spot of SkyPilot's pick, and the plan's."""
    task, cell = planned_task(cfg, stage, cloud)
    return optimize_offline(task) | {"target": cell.target, "planned": cell.launch_gpu}
