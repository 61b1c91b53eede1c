"""`amigo-burst pipeline`: the stages in order, each on the target its plan gives it.

    hybrid: stage 1 on the laptop, 2-5 on [targets].cloud (the original analysis' plan)
    local:  everything on the laptop       cloud: everything on [targets].cloud
    auto:   per stage, the cheapest target that fits the budget and deadline

A stage is done when a successful run of it continues the done run of the stage before it (its
lineage, `done_runs`): a stage 4 built on stage 1 -> 3, or a stage 5 built on an older stage 4, is
not done, and is run again from the right adapter. A stage already running (a pipeline interrupted
with Ctrl-C) is reattached to, not refused. Stops at the first stage that does not succeed.

With `[project] max_usd`, before each stage the stages left are re-planned on the money left
(`money_plan`): the plan's machines when they fit, else the cheapest that do; refused when even those
do not. Each stage may then spend what is left less what the stages after it need.
"""

from __future__ import annotations

from dataclasses import dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.follow import follow
from amigo_burst.lifecycle.launch import LaunchOptions, launch, resolve_target
from amigo_burst.lifecycle.preflight import preflight
from amigo_burst.lifecycle.reconcile import reconcile_run
from amigo_burst.lifecycle.rehearsal_record import warn_unrehearsed
from amigo_burst.numbers import check_positive
from amigo_burst.planning.ledger import money_line
from amigo_burst.planning.matrix import best_cell
from amigo_burst.planning.replan import Replan, need, replan
from amigo_burst.state.records import ACTIVE, Run, RunStore, open_records

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
        check_positive(self.max_usd, "--max-usd")


def done_runs(runs: list[Run]) -> dict[int, Run]:
    """stage -> the run that makes it done (pure: a table a test reads).

    Stage 1: its newest successful run. Stage N > 1: the newest successful run whose adapter came from
    the done stage N-1 run (artifacts["from_run"]). A stage whose lineage is broken has no entry, and
    neither has any stage after it."""
    done: dict[int, Run] = {}
    ok = [r for r in runs if r.status == "SUCCEEDED"]  # oldest first, as RunStore.list gives them
    for stage in range(1, 6):
        parent = done.get(stage - 1)
        if stage > 1 and parent is None:
            break
        fitting = [r for r in ok if r.stage == stage
                   and (r.artifacts.get("from_run") == parent.id if parent else not r.artifacts.get("from_run"))]
        if not fitting:
            break
        done[stage] = fitting[-1]
    return done


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


def _not_done_why(stage: int, runs: list[Run], done: dict[int, Run]) -> str:
    """Why a stage with successful runs is not done: the lineage its newest one has."""
    newest = [r for r in runs if r.stage == stage and r.status == "SUCCEEDED"]
    if not newest:
        return ""
    got = newest[-1].artifacts.get("from_run") or "the base model"
    want = done[stage - 1].id if stage > 1 and stage - 1 in done else "the base model"
    return f" ({newest[-1].id} continues {got}, not {want}: run again)"


def _running(cfg: AmigoConfig, store: RunStore, stage: int) -> Run | None:
    """A live run of this stage (reconciled first: a dead worker's record is not live)."""
    for r in store.active(stage):
        r = reconcile_run(cfg, store, r)
        if r.status in ACTIVE:
            return r
    return None


def money_plan(cfg: AmigoConfig, opts: PipelineOptions, store: RunStore, stages: list[int], console,
               said: set) -> tuple[Replan, float] | None:
    """`[project] max_usd`: STAGES (still to run) re-planned on what is left (planning/replan.py): the
    plan's picks when they fit, else the cheapest machines that do; (the re-plan, what is left).
    UserError when even those need more than is left: nothing is launched past the project's money."""
    if cfg.project.max_usd is None or not stages:
        return None
    money = planner.project_money(cfg, store)
    plan, _, _ = planner.make_plan(cfg, planner.past_runs(cfg), stages, max_usd=opts.max_usd)
    candidates, chosen = {}, {}
    for s in stages:
        cells = [c for c in plan.cells if c.stage == s]
        if opts.plan != "auto":
            name = resolve_target(cfg, s, target_for(cfg, opts, s, console)).name
            cells = [c for c in cells if c.target == name]
        b = planner.budget_for(cfg, s, max_usd=opts.max_usd)
        candidates[s], chosen[s] = cells, best_cell(cells, b.usd, b.hours)[0]
    r = replan(candidates, chosen, money.left)
    listed = ", ".join(map(str, stages))
    if not r.fits:
        why = (f"stages {listed} need at least ${r.need_usd:,.2f} on the cheapest machines that fit, and "
               f"{money_line(money)}")
        if not opts.force:
            raise UserError(f"{why}: raise [project] max_usd, or pass --force")
        console.print(f"[yellow]warning:[/yellow] {why}: going on (--force)")
        return None
    for s in r.changed:
        if (s, r.cells[s].target, r.cells[s].launch_gpu) not in said:
            said.add((s, r.cells[s].target, r.cells[s].launch_gpu))
            c = r.cells[s]
            console.print(f"stage {s}: re-planned on the money left (${money.left:,.2f}): {c.target} {c.gpu_label}, "
                          f"estimated ${c.usd:,.2f}")
    return r, money.left


def _share(r: Replan, stage: int, left: float) -> float:
    """What STAGE may spend so that the stages after it still get what they need."""
    return left - sum(need(c) for s, c in r.cells.items() if s != stage)


def run_pipeline(cfg: AmigoConfig, opts: PipelineOptions, console) -> list[tuple[int, str | None, str]]:
    """Launch each stage in turn; returns [(stage, run_id or None, status)]."""
    store = open_records(cfg.root)
    if opts.plan != "auto":  # every cloud's credentials before stage 1 trains for an hour
        done = done_runs(store.list())
        ahead = [resolve_target(cfg, s, target_for(cfg, opts, s, console)) for s in opts.stages if s not in done]
        for target in ahead:
            preflight(target)
        warn_unrehearsed(cfg, [t.name for t in ahead], console)  # once, for all of them
    results, said = [], set()
    for stage in opts.stages:
        runs = store.list()
        done = done_runs(runs)
        if stage in done:
            console.print(f"stage {stage}: already done by {done[stage].id}, skipped")
            results.append((stage, done[stage].id, "SKIPPED"))
            continue
        running = _running(cfg, store, stage)
        if running is not None:
            console.rule(f"stage {stage}: reattaching to {running.id} (already running)")
            run = follow(cfg, running.id, console)
            if run.status == "SUCCEEDED" and stage in done_runs(store.list()):
                results.append((stage, run.id, run.status))
                continue
            if run.status != "SUCCEEDED":
                results.append((stage, run.id, run.status))
                console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
                break
        money = money_plan(cfg, opts, store, [s for s in opts.stages if s >= stage and s not in done], console,
                           said)
        gpu = share = None
        if money is None or stage not in money[0].cells:  # (a stage nothing fits: its launch says why)
            target = target_for(cfg, opts, stage, console)
        else:  # the re-plan's machine for this stage, and its share of what is left
            r, left = money
            cell = r.cells[stage]
            target, share = cell.target, _share(r, stage, left)
            gpu = cell.launch_gpu if stage in r.changed else None
        console.rule(f"stage {stage} on {target}" + _not_done_why(stage, runs, done))
        parent = done.get(stage - 1)
        run = launch(cfg, LaunchOptions(stage=stage, cloud=target, max_usd=opts.max_usd, force=opts.force,
                                        from_run=parent.id if parent else None, gpu=gpu, share_usd=share,
                                        warn_unrehearsed=opts.plan == "auto"), console)
        results.append((stage, run.id, run.status))
        if run.status != "SUCCEEDED":
            console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
            break
    return results
