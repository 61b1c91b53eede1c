"""`amigo-burst pipeline`: the stages in order, each on the target its plan gives it.

    hybrid: stage 1 on the laptop, 2-5 on [targets].cloud (the original analysis' plan)
    local:  everything on the laptop       cloud: everything on [targets].cloud
    auto:   per stage, the cheapest target that fits the budget and deadline

A stage is done when a successful run of it continues the done run of the stage before it (its
lineage, `done_runs`): a stage 4 built on stage 1 -> 3, or a stage 5 built on an older stage 4, is
not done, and is run again from the right adapter. A stage already running (a pipeline interrupted
with Ctrl-C) is reattached to, not refused. Stops at the first stage that does not succeed, and before
a stage whose parent's HumanEval pass@1 fell below its own parent's beyond the noise ([eval]
stop_on_regression, on by default; `--force` launches anyway).

With `[project] max_usd`, before each stage the stages left are re-planned on the money left
(`money_plan`): the plan's machines when they fit, else the cheapest that do; refused when even those
do not. Each stage may then spend what is left less what the stages after it need.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.basemodel import check_base
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
    stages: tuple[int, ...] | None = None  # None: every stage amigo.toml configures
    max_usd: float | None = None  # per stage; wins over each stage's max_usd (planner.budget_for)
    force: bool = False  # also: launch past a regression ([eval] stop_on_regression)

    def __post_init__(self) -> None:
        if self.plan not in PLANS:
            raise UserError(f"unknown plan '{self.plan}': choose one of {', '.join(PLANS)}")
        check_positive(self.max_usd, "--max-usd")


def done_runs(runs: list[Run], stages: Iterable[int] = (1, 2, 3, 4, 5)) -> dict[int, Run]:
    """stage -> the run that makes it done (pure: a table a test reads).

    STAGES: the configured ones (`cfg.stages`); a stage left out of amigo.toml is no link of the chain
    (without stage 3, stage 4 continues stage 2). The first: its newest successful run from the base
    model. Each next: the newest successful run whose adapter came from the done run of the stage
    before it (artifacts["from_run"]). Probes (a few measuring steps) are never done runs. A stage
    whose lineage is broken has no entry, and neither has any stage after it."""
    done: dict[int, Run] = {}
    ok = [r for r in runs if r.status == "SUCCEEDED" and not r.is_probe  # oldest first, as RunStore.list gives
          and not (r.artifacts or {}).get("eval")]  # an on-target evaluation is no stage run either
    parent = None
    for stage in sorted(stages):
        fitting = [r for r in ok if r.stage == stage
                   and (r.artifacts.get("from_run") == parent.id if parent else not r.artifacts.get("from_run"))]
        if not fitting:
            break
        done[stage] = parent = fitting[-1]
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


def _not_done_why(cfg: AmigoConfig, stage: int, runs: list[Run], done: dict[int, Run]) -> str:
    """Why a stage with successful runs is not done: the lineage its newest one has."""
    newest = [r for r in runs if r.stage == stage and r.status == "SUCCEEDED" and not r.is_probe]
    if not newest:
        return ""
    got = newest[-1].artifacts.get("from_run") or "the base model"
    prev = cfg.previous_stage(stage)
    want = done[prev].id if prev in done else "the base model"
    return f" ({newest[-1].id} continues {got}, not {want}: run again)"


def _running(cfg: AmigoConfig, store: RunStore, stage: int) -> Run | None:
    """A live run of this stage (reconciled first: a dead worker's record is not live)."""
    for r in store.active(stage):
        r = reconcile_run(cfg, store, r)
        if r.status in ACTIVE:
            return r
    return None


def pipeline_stages(cfg: AmigoConfig, wanted: tuple[int, ...] | None, console) -> list[int]:
    """The stages a pipeline runs: WANTED (None: all) that amigo.toml configures. Left-out stages in a
    range are said and skipped; a range with none configured is refused."""
    asked = sorted(wanted) if wanted else sorted(cfg.stages)
    missing = [s for s in asked if s not in cfg.stages]
    stages = [s for s in asked if s in cfg.stages]
    if not stages:
        raise UserError(f"--stages: {', '.join(f'[stages.{s}]' for s in missing)} not in {cfg.path}: nothing "
                        f"to run (configured: {', '.join(map(str, sorted(cfg.stages)))})")
    if missing and wanted:
        console.print(f"stage{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}: not in amigo.toml, "
                      "skipped")
    note = cfg.chain_note()
    if note:
        from rich.markup import escape

        console.print(escape(note))
    return stages


def regression_line(rows: list[dict], stage: int, margin: float = 0.0, prev: int | None = None) -> str | None:
    """Pure: why stage `stage` must not be launched - the stage before it fell below its own parent by
    more than the noise (report.build_benchmarks rows: the change's whole 95% interval under -margin) -
    or None. One line with both scores."""
    from amigo_burst.planning.benchmark import Change, regressed

    prev = stage - 1 if prev is None else prev  # the stage it continues (a stage left out of amigo.toml: skipped)
    row = next((r for r in rows if r["stage"] == prev), None)
    if row is None or row["pass_at_1_change"] is None or not regressed(
            Change(row["pass_at_1_change"], row["change_low"], row["change_high"], row["problems"], True), margin):
        return None
    parent = next((r for r in rows if r["id"] == row["parent"]), None)
    who = "the base" if row["parent"] == "base" else f"stage {parent['stage']}" if parent else "its parent"
    was = f" {parent['pass_at_1']:.3f}" if parent else ""
    return (f"stage {stage} not launched: stage {prev}'s HumanEval pass@1 {row['pass_at_1']:.3f} fell below "
            f"{who}'s{was} by {-row['pass_at_1_change']:.3f} (95% CI of the change {row['change_low']:+.3f}.."
            f"{row['change_high']:+.3f}: beyond the noise); `pipeline --force` launches it anyway")


def score_line(rows: list[dict], stage: int) -> str | None:
    """Pure: the stage's score as the pipeline says it after the stage: pass@1 with its 95% interval, and
    its change from its parent and from the base, each with its interval and whether it is noise."""
    row = next((r for r in rows if r["stage"] == stage), None)
    if row is None:
        return None

    def change(d, lo, hi, noise) -> str:
        return "n/a" + (" (partial)" if row["partial"] else "") if d is None else \
            f"{d:+.3f} (95% CI {lo:+.3f}..{hi:+.3f}{': noise' if noise else ''})"

    from amigo_burst.planning.report import VS_BASE, VS_PARENT

    head = (f"stage {stage} HumanEval pass@1 {row['pass_at_1']:.3f} (95% CI {row['pass_at_1_low']:.3f}-"
            f"{row['pass_at_1_high']:.3f}, {row['problems']} problems{', partial' if row['partial'] else ''})")
    parent = "" if row["parent"] == "base" else f"; vs its parent {change(*(row[k] for k in VS_PARENT))}"
    return f"{head}{parent}; vs the base {change(*(row[k] for k in VS_BASE))}"


def _rows(cfg: AmigoConfig, done: dict[int, Run], upto: int) -> list[dict]:
    from amigo_burst.lifecycle.baseline import baselines
    from amigo_burst.planner import runs_as_dicts
    from amigo_burst.planning.report import build_benchmarks

    return build_benchmarks(runs_as_dicts([done[s] for s in sorted(done) if s <= upto]), baselines(cfg))


def _held(cfg: AmigoConfig, done: dict[int, Run], stage: int) -> str | None:
    prev = cfg.previous_stage(stage)
    if prev is None:
        return None
    return regression_line(_rows(cfg, done, prev), stage, cfg.eval.regression_margin, prev)


def _say_score(cfg: AmigoConfig, store: RunStore, stage: int, console) -> None:
    line = score_line(_rows(cfg, done_runs(store.list(), cfg.stages), stage), stage)
    if line:
        console.print(line, highlight=False, soft_wrap=True)  # one line, whatever the width


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
    stages = pipeline_stages(cfg, opts.stages, console)
    if opts.plan != "auto":  # every cloud's credentials before stage 1 trains for an hour
        done = done_runs(store.list(), cfg.stages)
        ahead = [resolve_target(cfg, s, target_for(cfg, opts, s, console)) for s in stages if s not in done]
        for target in ahead:
            preflight(target)
    check_base(cfg)  # the base model every stage loads: found and readable before stage 1 trains
    if opts.plan != "auto":
        warn_unrehearsed(cfg, [t.name for t in ahead], console)  # once, for all of them
    results, said = [], set()
    for stage in stages:
        runs = store.list()
        done = done_runs(runs, cfg.stages)
        if stage in done:
            console.print(f"stage {stage}: already done by {done[stage].id}, skipped")
            results.append((stage, done[stage].id, "SKIPPED"))
            continue
        running = _running(cfg, store, stage)
        if running is not None:
            console.rule(f"stage {stage}: reattaching to {running.id} (already running)")
            run = follow(cfg, running.id, console)
            if run.status == "SUCCEEDED" and stage in done_runs(store.list(), cfg.stages):
                results.append((stage, run.id, run.status))
                _say_score(cfg, store, stage, console)
                continue
            if run.status != "SUCCEEDED":
                results.append((stage, run.id, run.status))
                console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
                break
        held = _held(cfg, done, stage) if cfg.eval.stop_on_regression and not opts.force else None
        if held:  # the money of stage N+1 is not spent on a chain that got worse
            console.print(f"[red]{held}[/red]", soft_wrap=True)
            results.append((stage, None, "HELD"))
            break
        money = money_plan(cfg, opts, store, [s for s in stages if s >= stage and s not in done], console, said)
        gpu = share = None
        if money is None or stage not in money[0].cells:  # (a stage nothing fits: its launch says why)
            target = target_for(cfg, opts, stage, console)
        else:  # the re-plan's machine for this stage, and its share of what is left
            r, left = money
            cell = r.cells[stage]
            target, share = cell.target, _share(r, stage, left)
            gpu = cell.launch_gpu if stage in r.changed else None
        console.rule(f"stage {stage} on {target}" + _not_done_why(cfg, stage, runs, done))
        parent = done.get(cfg.previous_stage(stage))
        run = launch(cfg, LaunchOptions(stage=stage, cloud=target, max_usd=opts.max_usd, force=opts.force,
                                        from_run=parent.id if parent else None, gpu=gpu, share_usd=share,
                                        warn_unrehearsed=opts.plan == "auto"), console)
        results.append((stage, run.id, run.status))
        if run.status != "SUCCEEDED":
            console.print(f"[red]stage {stage} {run.status}[/red]: {run.reason or ''} — pipeline stopped")
            break
        _say_score(cfg, store, stage, console)
    return results
