"""`plan --cloud X`: SkyPilot's own optimizer on the target's task (a dry run: nothing is rented)."""

from __future__ import annotations

from amigo_burst.errors import UserError


def sky_choice(cfg, cloud: str, stages: str | None) -> dict:
    from rich.console import Console

    from amigo_burst.launch import stage_envs
    from amigo_burst.runners.sky import build_task, optimize_offline
    from amigo_burst.stages import parse_stage_range
    from amigo_burst.targets import get_target

    target = get_target(cloud, cfg.root)
    if target.is_local:
        raise UserError("plan --cloud: the local target is not rented; see `amigo-burst plan`")
    stage = parse_stage_range(stages or "1")[0]
    envs = stage_envs(cfg, stage, "plan", cfg.model.method if cfg.model.method != "auto" else "qlora", 0)
    task = build_task(target.path, envs, {}, cfg.root)
    choice = optimize_offline(task)
    Console(highlight=False).print(
        f"stage {stage} on {target.name}: SkyPilot would rent {choice['instance_type']} "
        f"({choice['accelerator']}) in {choice['region']} on {choice['cloud']} at ${choice['usd_per_hour']:.3f}/h"
        + (" (spot)" if choice.get("use_spot") else ""))
    return choice
