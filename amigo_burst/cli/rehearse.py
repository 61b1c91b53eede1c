"""`amigo-burst rehearse`: the whole plan on a tiny stand-in, here, and its table (or --json)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from amigo_burst.cli.context import config, console


def rehearse(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option("--rows", help="rows per stage, drawn by each dataset's seeded shuffle")] = 64,
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps per stage")] = 2,
    model: Annotated[str | None, typer.Option("--model", help="a model folder to rehearse with instead of "
                                              "the tiny stand-in of the base")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (keys: see README)")] = False,
    full: Annotated[bool, typer.Option("--full", help="also run the targets' setup in a fresh virtual environment "
                                       "(the install a rented machine does; minutes) and train in it")] = False,
) -> None:
    """Every stage as configured (data, filters, hyperparameters, adapter chain, target YAML) on a tiny
    stand-in model, here, in minutes; exit 0 only when every stage passed.  Example: amigo-burst rehearse --rows 64 --steps 2"""
    from rich.console import Console

    from amigo_burst.lifecycle.rehearse import RehearseOptions, rehearsal_dir
    from amigo_burst.lifecycle.rehearse import rehearse as do_rehearse
    from amigo_burst.lifecycle.rehearse_guard import rehearsal_lock

    cfg = config(ctx)
    opts = RehearseOptions(rows=rows, steps=steps, model=model, full=full)
    out = Console(stderr=True, highlight=False, emoji=False) if as_json else console()
    log_path = rehearsal_dir(cfg.root) / "rehearse.log"
    with rehearsal_lock(log_path.parent), log_path.open("w", encoding="utf-8") as log:  # one at a time
        log_console = Console(file=log, width=160, highlight=False, no_color=True)
        try:
            passed, results, facts = do_rehearse(cfg, opts, out, log_console)
        except KeyboardInterrupt:
            out.print("\n[yellow]rehearsal interrupted[/yellow]: its stage was stopped, nothing is left running "
                      "(`amigo-burst rehearse` starts over)")
            raise typer.Exit(130) from None
    if as_json:
        from dataclasses import asdict

        print(json.dumps({"passed": passed, **facts, "log": str(log_path),
                          "stages": [asdict(r) for r in results]}, indent=2))
    else:
        render(out, passed, results, facts, log_path)
    if not passed:
        raise typer.Exit(1)


def _loss(r) -> str:
    if not r.loss:
        return "-"
    return f"{r.loss['before']:.3f}→{r.loss['after']:.3f}"


def _adapter(r, results) -> str:
    """written, and what it continued: "fresh" or the stage whose adapter it started from."""
    if not r.adapter:
        return "-"
    prev = next((p for p in results if p.run_id and p.run_id == r.continues_from), None)
    return f"← stage {prev.stage}" if prev else (f"← {r.continues_from}" if r.continues_from else "fresh")


def render(con, passed: bool, results, facts: dict, log_path) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    m = facts["model"]
    con.print(f"stand-in: {m.get('family')} ({m.get('params', '?'):,} params), tokenizer {m.get('tokenizer')}"
              if isinstance(m.get("params"), int) else f"model: {m.get('path')}")
    t = Table(title=f"rehearsal: {facts['rows']} rows, {facts['steps']} steps a stage (config {facts['config_hash']})",
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    # rows: read/used/dropped; data: prepared here or by the target; adapter: fresh or <- the stage it continued
    for col in ("stage", "target", "data", "rows", "tokens", "longest/max", "loss", "adapter", "result"):
        t.add_column(col, justify="right" if col in ("rows", "tokens", "longest/max") else "left")
    for r in results:
        rows = f"{r.rows.get('read', 0)}/{r.rows.get('used', 0)}/{r.rows.get('dropped', 0)}" if r.rows else "-"
        longest = f"{r.longest:,}/{r.max_seq_len:,}" if r.max_seq_len else "-"
        colour = {"passed": "green", "failed": "red"}.get(r.status, "yellow")
        t.add_row(f"{r.stage} {r.name}", r.target, r.prepared or "-", rows, f"{r.tokens:,}" if r.rows else "-", longest, _loss(r),
                  _adapter(r, results), f"[{colour}]{r.status}[/{colour}]")
    con.print(t)
    con.print("  rows: read/used/dropped · tokens: as trained, chat template included · loss: first → last step")
    con.print("  data: here = prepared on this machine, target = by the target's own run (as on the cloud)")
    for r in results:
        if r.plan:
            p = r.plan
            ran = (" — rehearsed with the same" if r.ran == {k: p[k] for k in ("method", "micro_batch", "grad_accum")}
                   else "")
            con.print(f"  stage {r.stage} plan: {r.target} {p['machine']}, {p['method']}, micro-batch "
                      f"{p['micro_batch']} x grad-accum {p['grad_accum']}" + (f" x {p['gpu_count']} GPUs" if
                                                                               p["gpu_count"] > 1 else "") + ran)
    for name, why in (facts.get("sky") or {}).items():
        con.print(f"  SkyPilot {'accepts' if not why else 'refuses'} {name}'s task (its own validation, offline)"
                  + (f": {escape(why)}" if why else ""))
    if facts.get("setup"):
        st = facts["setup"]
        con.print(f"  setup in a fresh environment: {st['setup_s']:.0f} s ({st['torch_spec']} + train/requirements.txt)")
    for r in results:
        for d in r.dropped:
            con.print(f"  stage {r.stage} dropped {d['count']}: {escape(d['reason'])} (first: {escape(d['first'])})")
        if r.trimmed:
            con.print(f"  stage {r.stage} trimmed the context of {r.trimmed['count']} "
                      f"(first: {escape(r.trimmed['first'])})")
        if r.reason:
            con.print(f"  stage {r.stage} {r.status}: {escape(r.reason)}")
    if passed:
        con.print(f"[green]rehearsal passed[/green]: recorded for config {facts['config_hash']}; log {log_path}")
    else:
        con.print(f"[red]rehearsal failed[/red]; log {log_path}")
