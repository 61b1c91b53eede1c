"""`plan --cloud X`: SkyPilot's own optimizer on the task a launch of the stage would hand it
(a dry run: nothing is rented, no credentials or network needed)."""

from __future__ import annotations

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import stage_envs
from amigo_burst.runners.sky import build_task
from amigo_burst.runners.sky_optimizer import optimize_offline
from amigo_burst.targets import get_target


def optimizer_choice(cfg: AmigoConfig, cloud: str, stage: int) -> dict:
    """cloud, instance_type, region, accelerator, usd_per_hour, use_spot of SkyPilot's pick."""
    target = get_target(cloud, cfg.root)
    if target.is_local:
        raise UserError("plan --cloud: the local target is not rented; see `amigo-burst plan`")
    envs = stage_envs(cfg, stage, "plan", cfg.model.method if cfg.model.method != "auto" else "qlora", 0)
    return optimize_offline(build_task(target.path, envs, {}, cfg.root)) | {"target": target.name}
