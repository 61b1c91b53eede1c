"""`amigo-burst launch | logs | status | download | down | pipeline | clean`: start, watch and collect runs.

Wherever a command takes a RUN, a unique prefix of its id is enough (`logs s2-vast`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from amigo_burst.cli.context import config, console
from amigo_burst.errors import UserError

Stage = Annotated[str, typer.Option("--stage", "-s", help="1-5 or a stage name (see `amigo-burst stages`).")]
Cloud = Annotated[
    str | None,
    typer.Option("--cloud", help="target: local, runpod, vast, lambda, slurm, auto (default: the stage's target)."),
]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="run id, or a unique prefix of it (see `amigo-burst status`)")]
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it


def launch(
    ctx: typer.Context,
    stage: Stage,
    cloud: Cloud = None,
    from_run: Annotated[str | None, typer.Option("--from", help="continue from this stage N-1 run's adapter")] = None,
    from_base: Annotated[bool, typer.Option("--from-base", help="start from the base model, no adapter")] = False,
    max_usd: Annotated[float | None, typer.Option(help="budget: refuse if the estimate is above, stop when spent "
                                                  "(wins over the stage's max_usd)")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="return at once; follow with `logs RUN -f`")] = False,
    gpu: Annotated[str | None, typer.Option(help="override a cloud target's accelerator (SkyPilot name, e.g. H100)")] = None,
    spot: Annotated[bool, typer.Option(help="managed spot job with recovery (needs an s3:// store)")] = False,
    keep: Annotated[bool, typer.Option(help="keep the cluster up after the run (it still autostops when idle)")] = False,
    force: Annotated[bool, typer.Option(help="launch even if the estimate says it won't fit or is over budget")] = False,
    resume: Annotated[bool, typer.Option(help="continue the newest failed/stopped run of this stage from its checkpoint")] = False,
    probe: Annotated[bool, typer.Option(help="first run 20 steps on the same machine, re-estimate, and go on only "
                                        "within the budget (asks at a terminal)")] = False,
) -> None:
    """Run one stage on a target.  Example: amigo-burst launch --stage 2 --cloud vast --max-usd 20

    Ctrl-C stops following, not training: the run goes on (`logs RUN -f` reattaches, `down RUN` stops it)."""
    from amigo_burst.lifecycle.launch import LaunchOptions
    from amigo_burst.lifecycle.launch import launch as do_launch
    from amigo_burst.lifecycle.pipeline import auto_choice
    from amigo_burst.stages import get_stage

    cfg = config(ctx)
    n = get_stage(stage).number
    opts = LaunchOptions(stage=n, cloud=cloud, from_run=from_run, from_base=from_base, max_usd=max_usd,
                         detach=detach, gpu=gpu, spot=spot, keep=keep, force=force, resume=resume)
    if cloud == "auto":
        opts.cloud = auto_choice(cfg, n, max_usd, console())
    with _interrupts("launch"):
        if probe:
            from amigo_burst.lifecycle.probe import launch_after_probe

            run = launch_after_probe(cfg, opts, console())
        else:
            run = do_launch(cfg, opts, console())
    _summary(run)
    if run.status == "FAILED":
        raise typer.Exit(1)


def logs(
    ctx: typer.Context,
    run_id: RunArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following until the run ends")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="the log file as it is (library warnings and bars too)")] = False,
) -> None:
    """A run's log: its lines, step/loss, and its status; -f follows it live (reattaches to a running job).

    Example: amigo-burst logs s2-vast -f"""
    from amigo_burst.lifecycle.follow import follow as do_follow
    from amigo_burst.lifecycle.follow import print_log
    from amigo_burst.state.records import open_records

    cfg = config(ctx)
    run = open_records(cfg.root).get(run_id)  # unknown id -> one line, exit 2; a prefix -> the full id
    if follow:
        with _interrupts("logs"):
            run = do_follow(cfg, run.id, console())
    else:
        run = print_log(cfg, run.id, console(), raw=raw)
    _summary(run)


def status(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="one run in detail (id or unique prefix)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON: a list of runs, newest first (keys in README)")] = False,
    all_: Annotated[bool, typer.Option("--all", help="also launches that failed before anything started")] = False,
) -> None:
    """Runs and their state, newest first; warns about clusters this tool started that are still up.  Example: amigo-burst status"""
    from amigo_burst.cli.render import render_json, render_run, render_runs, run_json
    from amigo_burst.lifecycle.reconcile import reconcile_all
    from amigo_burst.state.records import open_records

    cfg = config(ctx)
    runs = open_records(cfg.root)
    con = console()
    if run_id:
        run = runs.get(run_id)
        if json_out:
            print(_dumps(run_json(run)))
        else:
            render_run(con, run)
        return
    if runs.read_only:  # nothing can be recorded here: show the records as they are
        rows, orphans = runs.list(), []
        if not json_out:
            con.print("[dim].amigo/ is read-only: records shown as they are, not reconciled[/dim]")
    else:
        rows, orphans = reconcile_all(cfg, runs)
    rows = sorted(rows, key=lambda r: (r.started or "", r.id), reverse=True)  # newest first
    shown = [r for r in rows if all_ or not r.never_started or r.cluster in orphans]
    if json_out:
        print(render_json(shown))
        return
    render_runs(con, shown, hidden=len(rows) - len(shown), money=_money(cfg, runs))
    for c in orphans:
        con.print(f"[yellow]warning:[/yellow] cluster {c} was started by amigo-burst and is still up "
                  f"(billing): `amigo-burst down --cluster {c}`")


def _money(cfg, runs) -> str:
    """`status`'s money line: spent / committed / left of [project] max_usd ("" before anything cost)."""
    from amigo_burst import planner
    from amigo_burst.planning.ledger import money_line

    m = planner.project_money(cfg, runs)
    return money_line(m) if (m.spent or m.committed or m.max_usd is not None) else ""


def download(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="run id or unique prefix")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="latest successful run of this stage")] = None,
    to: Annotated[Path | None, typer.Option(help="copy the adapter and metrics.json into this (new, empty or "
                                                  "earlier download's) folder")] = None,
) -> None:
    """Fetch a run's adapter + metrics (sha256-verified).  Example: amigo-burst download --stage 5 --to amigo-1.0-adapter"""
    from rich.markup import escape

    from amigo_burst.lifecycle.download import download as do_download

    run, dest = do_download(config(ctx), run_id, stage, to)
    metrics = (dest / "metrics.json") if to is not None else dest.parent / "metrics.json"
    con = console()
    con.print(f"adapter: {escape(str(dest))} (run {run.id}, sha256-verified)", soft_wrap=True)
    if metrics.is_file():
        con.print(f"metrics: {escape(str(metrics))}", soft_wrap=True)


def down(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="stop this run and tear its cluster down")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every cluster amigo-burst started (name prefix amigo-)")] = False,
    cluster: Annotated[str | None, typer.Option(help="one cluster by name (must start with amigo-)")] = None,
) -> None:
    """Stop runs and tear down clusters this tool created.  Example: amigo-burst down --all"""
    from amigo_burst.lifecycle.teardown import down as do_down

    if sum(bool(x) for x in (run_id, all_, cluster)) != 1:
        raise UserError("give exactly one of RUN, --all or --cluster")
    from rich.markup import escape

    for line in do_down(config(ctx), run_id, all_, cluster):
        console().print(escape(line), soft_wrap=True)


def pipeline(
    ctx: typer.Context,
    plan: Annotated[str, typer.Option(help="hybrid (stage 1 local, 2-5 cloud), local, cloud or auto")] = "hybrid",
    stages: Annotated[str | None, typer.Option(help="which stages, e.g. 1-5 or 2,4 (default: every stage "
                                               "amigo.toml configures)")] = None,
    max_usd: Annotated[float | None, typer.Option(help="budget per stage (wins over each stage's max_usd)")] = None,
    force: Annotated[bool, typer.Option(help="run stages the estimate says won't fit or exceed budget, and past a "
                                       "HumanEval regression (\\[eval] stop_on_regression)")] = False,
) -> None:
    """The stages in order; stops at the first failure, skips stages already done, reattaches to a running one.

    Example: amigo-burst pipeline --plan hybrid"""
    from amigo_burst.lifecycle.pipeline import PipelineOptions, run_pipeline
    from amigo_burst.stages import parse_stage_range

    opts = PipelineOptions(plan=plan, stages=tuple(parse_stage_range(stages)) if stages else None, max_usd=max_usd,
                           force=force)
    cfg = config(ctx)
    with _interrupts("pipeline"):
        results = run_pipeline(cfg, opts, console())
    if any(status not in ("SUCCEEDED", "SKIPPED") for _, _, status in results):
        raise typer.Exit(1)


def clean(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="say what would be removed, remove nothing")] = False,
    resumable: Annotated[bool, typer.Option("--resumable", help="also the checkpoints `launch --resume` "
                                            "would continue from")] = False,
) -> None:
    """Free disk: work copies and checkpoints of finished runs (adapters, metrics and records stay).

    Example: amigo-burst clean --dry-run"""
    from rich.markup import escape

    from amigo_burst.lifecycle.clean import clean as do_clean

    con = console()
    result = do_clean(config(ctx), dry_run=dry_run, include_resumable=resumable)
    verb = "would free" if dry_run else "freed"
    for item in result.removed:
        con.print(f"{'would remove' if dry_run else 'removed'} {escape(str(item.path))} ({_size(item.bytes)})",
                  soft_wrap=True)
    for run_id, why in result.kept:
        con.print(f"[dim]kept {escape(run_id)}: {escape(why)}[/dim]", soft_wrap=True)
    con.print(f"{verb} {_size(result.bytes)} ({len(result.removed)} folder(s))")


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def _dumps(obj) -> str:
    import json

    return json.dumps(obj, indent=2)


class _interrupts:
    """Ctrl-C while a command follows a run: the run goes on (its worker has its own session); say so,
    and how to reattach or stop it. Exit code 130, as for any interrupted command."""

    def __init__(self, command: str):
        self.command = command

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        from amigo_burst.lifecycle.follow import Detached

        if kind is None:
            return False
        con = console()
        if isinstance(exc, Detached):
            again = ("`amigo-burst pipeline` again reattaches to it and goes on; "
                     if self.command == "pipeline" else "")
            con.print(f"\n[yellow]stopped following {exc.run_id}: training goes on.[/yellow] {again}"
                      f"`amigo-burst logs {exc.run_id} -f` reattaches, `amigo-burst down {exc.run_id}` stops it.",
                      soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED)
        if isinstance(exc, KeyboardInterrupt):
            print("\ninterrupted before a run started: nothing is running", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED)
        return False


def _summary(run) -> None:
    from rich.markup import escape

    color = {"SUCCEEDED": "green", "STOPPED": "yellow"}.get(run.status, "red" if run.status == "FAILED" else "cyan")
    console().print(f"[{color}]{run.id}: {run.status}[/{color}]" + (f" ({escape(run.reason)})" if run.reason else ""),
                    soft_wrap=True)
