"""`amigo-burst pipeline`: the stages in order, each on the target its plan gives it.

    hybrid: stage 1 on the laptop, 2-5 on [targets].cloud (the original analysis' plan)
    local:  everything on the laptop       cloud: everything on [targets].cloud
    auto:   per stage, the cheapest target that fits the budget and deadline
Stops at the first stage that does not succeed; a re-run skips stages that
already have a successful run.
"""

from __future__ import annotations

from amigo_burst.errors import UserError

PLANS = ("hybrid", "local", "cloud", "auto")


def target_for(cfg, plan: str, stage: int, chooser=None) -> str:
    if plan == "local":
        return cfg.targets.local
    if plan == "cloud":
        return cfg.targets.cloud
    if plan == "hybrid":
        return cfg.targets.local if stage == 1 else cfg.targets.cloud
    if plan == "auto":
        if chooser is None:
            raise UserError("--plan auto needs the estimator")
        return chooser(cfg, stage)
    raise UserError(f"unknown plan '{plan}': choose one of {', '.join(PLANS)}")


def run_pipeline(cfg, plan: str, stages: list[int], console, launch_opts: dict, chooser=None, estimator=None):
    """Launch each stage in turn; returns [(stage, run_id or None, status)]."""
    from amigo_burst.launch import LaunchOptions, launch, run_store

    if plan not in PLANS:
        raise UserError(f"unknown plan '{plan}': choose one of {', '.join(PLANS)}")
    runs = run_store(cfg)
    results = []
    for stage in stages:
        done = runs.latest(stage)
        if done is not None:
            console.print(f"stage {stage}: already done by {done.id}, skipped")
            results.append((stage, done.id, "SKIPPED"))
            continue
        target = target_for(cfg, plan, stage, chooser)
        console.rule(f"stage {stage} on {target}")
        run = launch(cfg, LaunchOptions(stage=stage, cloud=target, **launch_opts), console, estimator=estimator)
        results.append((stage, run.id, run.status))
        if run.status != "SUCCEEDED":
            console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
            break
    return results
