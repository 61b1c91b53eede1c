"""`amigo-burst probe`: a stage's first K steps on a target, measured; the whole stage re-estimated from them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from amigo_burst.cli.context import config, console


def probe(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option("--stage", "-s", help="1-5 or a stage name")],
    cloud: Annotated[str | None, typer.Option("--cloud", help="target (default: the stage's target)")] = None,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps to run and time")] = 20,
    gpu: Annotated[str | None, typer.Option(help="probe this machine instead of the plan's (e.g. H100:2)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object (keys documented in README)")] = False,
    force: Annotated[bool, typer.Option(help="probe even where the estimate says it will not fit")] = False,
    max_seconds: Annotated[int | None, typer.Option("--max-seconds", help="stop the probe's training after this "
                                                    "long (default: 2x its estimated download and steps)")] = None,
) -> None:
    """Launch a stage for a few steps, measure tokens/s and peak VRAM, keep them as calibration, re-estimate the stage, tear down.  Example: amigo-burst probe --stage 2 --cloud vast --steps 20 --json"""
    from amigo_burst.lifecycle.probe import ProbeOptions
    from amigo_burst.lifecycle.probe import probe as do_probe
    from amigo_burst.planning.units import hours_text, usd_text
    from amigo_burst.stages import get_stage

    cfg = config(ctx)
    opts = ProbeOptions(stage=get_stage(stage).number, cloud=cloud, steps=steps, gpu=gpu, force=force,
                        max_seconds=max_seconds)
    con = console()
    if json_out:
        from rich.console import Console

        con = Console(stderr=True, highlight=False, emoji=False)  # the launch's progress to stderr: stdout is the JSON
    r = do_probe(cfg, opts, con)
    if json_out:
        typer.echo(json.dumps(r.to_json()))
        return
    peak = f"{r.measured_peak_vram_gib:.2f} GiB" if r.measured_peak_vram_gib is not None else "- (no GPU)"
    stopped = f", stopped by its cap after {r.steps_run} of {r.steps} steps" if r.status != "SUCCEEDED" else ""
    con.print(f"probe {r.run_id} on {r.target} ({r.gpu} x{r.gpu_count}, {r.method}{stopped}): "
              f"{r.measured_tokens_per_s:,.1f} tokens/s measured vs {r.est_tokens_per_s:,.1f} estimated; "
              f"peak {peak} vs {r.est_peak_vram_gib} GiB estimated")
    con.print(f"stage re-estimated with this calibration: {hours_text(r.projected_hours)}, {usd_text(r.projected_usd)}")
