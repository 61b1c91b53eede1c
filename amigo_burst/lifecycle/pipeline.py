"""`amigo-burst pipeline`: the stages in order, each on the target its plan gives it.

    hybrid: stage 1 on the laptop, 2-5 on [targets].cloud (the original analysis' plan)
    local:  everything on the laptop       cloud: everything on [targets].cloud
    auto:   per stage, the cheapest target that fits the budget and deadline
Stops at the first stage that does not succeed; a re-run skips stages that
already have a successful run.
"""

from __future__ import annotations

from dataclasses import dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.launch import LaunchOptions, launch
from amigo_burst.state.records import open_records

PLANS = ("hybrid", "local", "cloud", "auto")


@dataclass(kw_only=True, frozen=True)
class PipelineOptions:
    plan: str = "hybrid"
    stages: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_usd: float | None = None  # per stage; wins over each stage's max_usd (planner.budget_for)
    force: bool = False

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise UserError(f"unknown plan '{self.plan}': choose one of {', '.join(PLANS)}")


def auto_choice(cfg: AmigoConfig, stage: int, max_usd: float | None, console) -> str:
    """--cloud auto / --plan auto: the cheapest target that fits, printed with its reason."""
    name, reason = planner.auto_target(cfg, stage, max_usd=max_usd)
    console.print(f"stage {stage}: --cloud auto chose {name}: {reason}")
    return name


def target_for(cfg: AmigoConfig, opts: PipelineOptions, stage: int, console) -> str:
    if opts.plan == "local":
        return cfg.targets.local
    if opts.plan == "cloud":
        return cfg.targets.cloud
    if opts.plan == "hybrid":
        return cfg.targets.local if stage == 1 else cfg.targets.cloud
    return auto_choice(cfg, stage, opts.max_usd, console)


def run_pipeline(cfg: AmigoConfig, opts: PipelineOptions, console) -> list[tuple[int, str | None, str]]:
    """Launch each stage in turn; returns [(stage, run_id or None, status)]."""
    runs = open_records(cfg.root)
    results = []
    for stage in opts.stages:
        done = runs.latest(stage)
        if done is not None:
            console.print(f"stage {stage}: already done by {done.id}, skipped")
            results.append((stage, done.id, "SKIPPED"))
            continue
        target = target_for(cfg, opts, stage, console)
        console.rule(f"stage {stage} on {target}")
        run = launch(cfg, LaunchOptions(stage=stage, cloud=target, max_usd=opts.max_usd, force=opts.force), console)
        results.append((stage, run.id, run.status))
        if run.status != "SUCCEEDED":
            console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
            break
    return results
