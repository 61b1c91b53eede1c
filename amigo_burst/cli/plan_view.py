"""How `plan`, `plan --compare` and `prices` look: tables that stay whole at 80 columns, and plan --json.

Nothing is cut: names (targets, GPUs) never wrap or shorten; free text (reasons, notes) wraps.
"""

from __future__ import annotations

from amigo_burst.planning.units import hours_text, usd_text


def tokens_text(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _table(title: str | None = None):
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))


def cell_dict(c) -> dict:
    """One plan cell as plan --json shows it (README documents the keys)."""
    o = c.option
    return {"stage": c.stage, "target": c.target, "cloud": o.cloud if o else None, "local": c.local,
            "accelerator": c.accelerator, "gpu": c.estimate.gpu if c.estimate else None, "gpu_count": c.gpu_count,
            "instance_type": o.instance_type if o else "", "fits": c.fits, "method": c.method,
            "micro_batch": c.micro_batch, "grad_accum": c.grad_accum, "hours": c.hours, "usd": c.usd,
            "usd_per_hour": c.usd_per_hour, "peak_vram_gib": round(c.peak_vram_gib, 2), "memory_gib": c.memory_gib,
            "calibration": c.estimate.calibration if c.estimate else None, "reason": c.reason,
            "headroom": c.estimate.headroom if c.estimate else None,
            "parts": dict(c.estimate.parts) if c.estimate else {}}


def plan_to_dict(plan, prices, stage_inputs) -> dict:
    from amigo_burst.planning.matrix import best_per_target

    stages = {}
    per_target = []
    for st in stage_inputs:
        cells = [c for c in plan.cells if c.stage == st.number]
        best = best_per_target(cells, st.max_usd, st.max_hours)
        per_target += best
        chosen, why = plan.recommended[st.number]
        stages[str(st.number)] = {"name": st.name, "tokens": st.tokens, "seq_len": st.seq_len, "max_usd": st.max_usd,
                                  "max_hours": st.max_hours, "chosen": cell_dict(chosen) if chosen else None,
                                  "reason": why, "targets": [cell_dict(c) for c in best]}
    return {
        "prices": {c: {"source": s.kind, "path": s.path, "as_of": s.as_of.isoformat(), "detail": s.detail,
                       "note": s.note}
                   for c, s in prices.sources.items()},
        "stages": stages,
        "cells": [cell_dict(c) for c in per_target],
        "recommended": {str(s): {"target": c.target if c else None, "accelerator": c.accelerator if c else None,
                                 "gpu_count": c.gpu_count if c else 0, "reason": r}
                        for s, (c, r) in plan.recommended.items()},
        "strategies": [strategy_dict(s) for s in plan.strategies],
        "local_options": plan.local_options, "local_note": plan.local_note, "warnings": plan.warnings,
    }


def strategy_dict(s) -> dict:
    return {"name": s.name, "hours": s.hours, "usd": s.usd, "feasible": s.feasible, "stages_placed": s.placed,
            "note": s.note, "where": s.where(), "targets": {str(k): v for k, v in s.targets.items()},
            "stages": {str(n): {"target": p.cell.target if p.cell else None,
                                "accelerator": p.cell.accelerator if p.cell else None,
                                "gpu_count": p.cell.gpu_count if p.cell else 0, "how": p.how,
                                "in_limits": p.in_limits, "hours": p.hours, "usd": p.usd}
                       for n, p in s.picks.items()}}


def _fits(heads, rows, width: int) -> bool:
    """Does a _table of these cells fit WIDTH whole (one space of padding each side, no edge)?"""
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows, strict=True)]
    return sum(widths) + 2 * (len(widths) - 1) <= width


def render_plan(con, plan, prices, arch, stage_inputs) -> None:
    from rich.markup import escape

    from amigo_burst.planning.matrix import best_per_target

    con.print(f"[bold]plan: {arch.name}[/bold], each stage on each target's best machine "
              f"(* recommended: the cheapest that fits its budget and deadline)")
    for st in stage_inputs:
        cells = [c for c in plan.cells if c.stage == st.number]
        chosen, why = plan.recommended[st.number]
        limits = ", ".join(x for x in (f"max ${st.max_usd:g}" if st.max_usd else "",
                                       f"max {st.max_hours:g} h" if st.max_hours else "") if x)
        tokens = f"{tokens_text(st.tokens)} tokens" if st.tokens else "tokens unknown"
        title = f"stage {st.number} {st.name} · {tokens} · seq {st.seq_len}" + (f" · {limits}" if limits else "")
        heads = ("target", "GPU", "method", "batch", "peak GiB", "time", "cost")
        rows = []
        for c in best_per_target(cells, st.max_usd, st.max_hours):
            mark = " *" if chosen is not None and c is chosen else ""
            fit = c.fits
            rows.append((c.target + mark, c.gpu_label, c.method if c.estimate else "-",
                         f"{c.micro_batch}x{c.grad_accum}" if fit else "-",
                         f"{c.peak_vram_gib:.1f}/{c.memory_gib:g}" if c.estimate else "-",
                         hours_text(c.hours) if fit else "no fit", usd_text(c.usd) if fit else "-"))
        if not _fits(heads, rows, con.width):  # a narrow terminal: one wrapped line per target, nothing cut
            con.print(f"[bold]{escape(title)}[/bold]")
            for r in rows:
                con.print(escape(f"  {r[0]}: {r[1]} {r[2]} {r[3]}, peak {r[4]} GiB, {r[5]}, {r[6]}"))
        else:
            t = _table(title)
            for col in heads:
                t.add_column(col, justify="right" if col in ("batch", "peak GiB", "time", "cost") else "left",
                             no_wrap=True)
            for r in rows:
                t.add_row(*r)
            con.print(t)
        con.print(f"  → {escape(why)}", soft_wrap=False)
    render_strategies(con, plan)
    con.print(f"prices: {escape(prices.summary())} (amigo-burst prices: sources and every machine)")


PART_NAMES = {"setup": "provisioning + setup", "download": "model download", "inputs": "inputs / prepare",
              "training": "training", "validation": "validation", "checkpoints": "checkpoint saves",
              "benchmark": "benchmark (HumanEval)"}


def render_explain(con, cell, stage_input) -> None:
    """`plan --explain N`: the chosen cell's hours as the sum of its named parts, and its memory."""
    from rich.markup import escape

    e = cell.estimate
    con.print(f"[bold]stage {cell.stage} {stage_input.name}[/bold] on {cell.target} {cell.gpu_label} "
              f"({e.gpu}, {cell.method}, micro-batch {cell.micro_batch} x grad-accum {cell.grad_accum}, "
              f"{'packed' if e.packing else 'padded'} rows, {escape(e.calibration)})")
    t = _table()
    for col, right in (("part", False), ("time", True), ("cost", True)):
        t.add_column(col, justify="right" if right else "left", no_wrap=True)
    rate = e.usd_per_hour
    for key, h in e.parts.items():
        t.add_row(PART_NAMES.get(key, key), hours_text(h), usd_text(h * rate) if rate is not None else "-")
    t.add_row("[bold]total[/bold]", f"[bold]{hours_text(e.hours)}[/bold]",
              f"[bold]{usd_text(e.usd)}[/bold]" if e.usd is not None else "-")
    con.print(t)
    tps = f"{e.tokens_per_s:,.0f} tokens/s ({e.bound}-bound)"
    con.print(f"  training: {tokens_text(e.tokens or 0)} tokens x {stage_input.epochs:g} epochs at {tps}")
    con.print(f"  peak {e.peak_vram_gib:.1f} GiB + {e.headroom:.0%} headroom = {e.peak_vram_gib * (1 + e.headroom):.1f} "
              f"of {e.memory_gib:g} GiB")
    if rate is not None:
        con.print(f"  at {usd_text(rate)}/h ({escape(cell.option.price_note if cell.option else '')})")


def render_strategies(con, plan) -> None:
    from rich.markup import escape

    heads = ("strategy", "stages", "time", "cost", "where")
    rows = [(s.name, f"{s.placed}/{len(s.picks)}", hours_text(s.hours), usd_text(s.usd), s.where())
            for s in plan.strategies]
    if not _fits(heads[:4] + ("where: 20 columns",), [r[:4] + ("",) for r in rows], con.width):
        con.print("[bold]strategies (hours and dollars of the stages each one places)[/bold]")
        for r in rows:  # a narrow terminal: one wrapped line each, nothing cut
            con.print(escape(f"  {r[0]}: {r[1]} stages, {r[2]}, {r[3]}: {r[4]}"))
    else:
        t = _table("strategies (hours and dollars of the stages each one places)")
        for col in heads:
            t.add_column(col, justify="right" if col in ("stages", "time", "cost") else "left",
                         no_wrap=col != "where")
        for r in rows:
            t.add_row(*r[:4], escape(r[4]))
        con.print(t)
    for s in plan.strategies:
        if s.note:
            con.print(f"[yellow]{s.name}:[/yellow] {escape(s.note)}")
    if plan.local_options:
        con.print("[bold]what would let the laptop take stage 1:[/bold]")
        for line in plan.local_options:
            con.print(f"  - {escape(line)}")
    for w in plan.warnings:
        con.print(f"[yellow]warning:[/yellow] {escape(w)}")


def render_compare(con, rows: list[dict]) -> None:
    from rich.markup import escape

    t = _table("the original analysis beside the computed plan")
    t.add_column("figure", no_wrap=False)
    t.add_column("original")
    t.add_column("computed")
    for r in rows:
        t.add_row(escape(r["figure"]), escape(r["original"]), escape(r["computed"]))
    con.print(t)
    for r in rows:
        con.print(f"  {escape(r['figure'])}: {escape(r['reason'])}")


def render_prices(con, table, gpu_of) -> None:
    """Per cloud: where its prices come from, how old, then every machine with on-demand and spot $/h."""
    from rich.markup import escape

    from amigo_burst.planning.pricing import source_text

    for cloud, src in sorted(table.sources.items()):
        con.print(f"[bold]{escape(source_text(src))}[/bold]")
        con.print(f"  {src.path}")
        t = _table()
        wide = con.width >= 110  # the instance type only where it fits whole
        for col in ("accelerator", "GPUs", "GiB", "estimates as", "on demand", "spot") + (("instance",) if wide else ()):
            t.add_column(col, justify="right" if col in ("GPUs", "GiB", "on demand", "spot") else "left",
                         no_wrap=True)
        for o in table.of(cloud):
            g = gpu_of(o)
            spot = (usd_text(o.spot_usd_per_hour) + "/h" if o.spot_usd_per_hour is not None
                    else ("no spot" if not src.has_spot else "no spot data"))
            t.add_row(o.accelerator, str(o.count), f"{o.gpu_memory_gib:.0f}" if o.gpu_memory_gib else "?",
                      g.name if g else "(not estimated)", usd_text(o.usd_per_hour) + "/h" if o.usd_per_hour else "-",
                      spot, *((escape(o.instance_type),) if wide else ()))
        con.print(t)
