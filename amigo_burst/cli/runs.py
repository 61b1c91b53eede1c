"""`amigo-burst launch | logs | status | download | down | pipeline`: start, watch and collect runs."""

from __future__ import annotations

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


def launch(
    ctx: typer.Context,
    stage: Stage,
    cloud: Cloud = None,
    from_run: Annotated[str | None, typer.Option("--from", help="continue from this run's adapter")] = None,
    from_base: Annotated[bool, typer.Option("--from-base", help="start from the base model, no adapter")] = False,
    max_usd: Annotated[float | None, typer.Option(help="budget: refuse if the estimate is above, stop when spent "
                                                  "(wins over the stage's max_usd)")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="return at once; follow with `logs RUN -f`")] = False,
    gpu: Annotated[str | None, typer.Option(help="override the target's accelerator (SkyPilot name, e.g. H100)")] = None,
    spot: Annotated[bool, typer.Option(help="managed spot job with recovery (needs an s3:// store)")] = False,
    keep: Annotated[bool, typer.Option(help="keep the cluster up after the run (it still autostops when idle)")] = False,
    force: Annotated[bool, typer.Option(help="launch even if the estimate says it won't fit or is over budget")] = False,
    resume: Annotated[bool, typer.Option(help="continue the newest failed/stopped run of this stage from its checkpoint")] = False,
    probe: Annotated[bool, typer.Option(help="first run 20 steps on the same machine, re-estimate, and go on only "
                                        "within the budget (asks at a terminal)")] = False,
) -> None:
    """Run one stage on a target.  Example: amigo-burst launch --stage 2 --cloud vast --max-usd 20"""
    from amigo_burst.lifecycle.launch import LaunchOptions, resolve_target
    from amigo_burst.lifecycle.launch import launch as do_launch
    from amigo_burst.lifecycle.pipeline import auto_choice
    from amigo_burst.stages import get_stage

    cfg = config(ctx)
    n = get_stage(stage).number
    opts = LaunchOptions(stage=n, cloud=cloud, from_run=from_run, from_base=from_base, max_usd=max_usd,
                         detach=detach, gpu=gpu, spot=spot, keep=keep, force=force, resume=resume)
    if cloud == "auto":
        opts.cloud = auto_choice(cfg, n, max_usd, console())
    _warn_unrehearsed(cfg, lambda: [resolve_target(cfg, n, opts.cloud).name])
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
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="run id (see `amigo-burst status`)")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following until the run ends")] = False,
) -> None:
    """Print a run's log; -f follows it live (reattaches to a running job).  Example: amigo-burst logs s2-vast-... -f"""
    from amigo_burst.lifecycle.follow import follow as do_follow
    from amigo_burst.state.records import open_records

    cfg = config(ctx)
    open_records(cfg.root).get(run_id)  # unknown id -> one line, exit 2
    run = do_follow(cfg, run_id, console(), follow_live=follow)
    if follow:
        _summary(run)


def status(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="one run in detail")] = None,
) -> None:
    """Runs and their state; warns about clusters this tool started that are still up.  Example: amigo-burst status"""
    from amigo_burst.cli.render import render_run, render_runs
    from amigo_burst.lifecycle.reconcile import reconcile_all
    from amigo_burst.state.records import open_records

    cfg = config(ctx)
    runs = open_records(cfg.root)
    con = console()
    if run_id:
        render_run(con, runs.get(run_id))
        return
    rows, orphans = reconcile_all(cfg, runs)
    render_runs(con, rows)
    for c in orphans:
        con.print(f"[yellow]warning:[/yellow] cluster {c} was started by amigo-burst and is still up "
                  f"(billing): `amigo-burst down --cluster {c}`")


def download(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="run id")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="latest successful run of this stage")] = None,
    to: Annotated[Path | None, typer.Option(help="copy the adapter folder here too")] = None,
) -> None:
    """Fetch a run's adapter + metrics (sha256-verified).  Example: amigo-burst download --stage 5 --to amigo-1.0-adapter"""
    from amigo_burst.lifecycle.download import download as do_download

    dest = do_download(config(ctx), run_id, stage, to)
    console().print(f"adapter: {dest}")


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
    for line in do_down(config(ctx), run_id, all_, cluster):
        console().print(line)


def pipeline(
    ctx: typer.Context,
    plan: Annotated[str, typer.Option(help="hybrid (stage 1 local, 2-5 cloud), local, cloud or auto")] = "hybrid",
    stages: Annotated[str, typer.Option(help="which stages, e.g. 1-5 or 2,4")] = "1-5",
    max_usd: Annotated[float | None, typer.Option(help="budget per stage (wins over each stage's max_usd)")] = None,
    force: Annotated[bool, typer.Option(help="run stages the estimate says won't fit or exceed budget")] = False,
) -> None:
    """The stages in order; stops at the first failure, skips stages already done.  Example: amigo-burst pipeline --plan hybrid"""
    from amigo_burst.lifecycle.pipeline import PipelineOptions, run_pipeline
    from amigo_burst.stages import parse_stage_range

    opts = PipelineOptions(plan=plan, stages=tuple(parse_stage_range(stages)), max_usd=max_usd, force=force)
    cfg = config(ctx)
    _warn_unrehearsed(cfg, lambda: _pipeline_targets(cfg, opts))
    results = run_pipeline(cfg, opts, console())
    if any(status not in ("SUCCEEDED", "SKIPPED") for _, _, status in results):
        raise typer.Exit(1)


def _warn_unrehearsed(cfg, target_names) -> None:
    """Paid cloud ahead and no rehearsal passed for this config: say so (a warning, not a refusal)."""
    from rich.markup import escape

    from amigo_burst.lifecycle.rehearse import unrehearsed_warning

    try:
        warning = unrehearsed_warning(cfg, target_names())
    except UserError:  # an unknown target: the command itself says so in its own words
        return
    if warning:
        console().print(f"[yellow]warning:[/yellow] {escape(warning)}")


def _pipeline_targets(cfg, opts) -> list[str]:
    """The targets a pipeline may use: its plan's (auto: any stage's own target or [targets].cloud)."""
    if opts.plan == "local":
        return [cfg.targets.local]
    if opts.plan == "cloud":
        return [cfg.targets.cloud]
    if opts.plan == "hybrid":
        return [cfg.targets.local if s == 1 else cfg.targets.cloud for s in opts.stages]
    return [cfg.targets.cloud, *(st.target for st in cfg.stages.values() if st.target)]


def _summary(run) -> None:
    color = {"SUCCEEDED": "green", "STOPPED": "yellow"}.get(run.status, "red")
    console().print(f"[{color}]{run.id}: {run.status}[/{color}]" + (f" ({run.reason})" if run.reason else ""))
