"""`amigo-burst estimate | plan | report`: parse, load data at the edge (planner), call the pure
modules (planning/), render.

estimate_cmd, plan_cmd and report_cmd take the parsed options plus `cfg` (AmigoConfig or None)
and `runs` (run dicts), so tests call them without a database; estimate, plan and report are
the typer commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from amigo_burst.cli.context import config, config_or_none
from amigo_burst.errors import UserError


def _console(width: int | None = None):
    from rich.console import Console

    return Console(highlight=False, width=width, emoji=False)


def estimate_cmd(*, model: str, gpu: str, method: str = "qlora", seq_len: int = 2048, micro_batch: int = 1,
                 tokens: int | None = None, epochs: float = 1.0, rank: int | None = None, trainer: str = "sft",
                 grad_ckpt: bool = True, packing: bool = False, download_gbit_s: float = 1.0, json_out: bool = False,
                 gpus: int = 1, grad_accum: int | None = None, stage: int | None = None,
                 cfg=None, runs=None, console=None) -> dict:
    """One estimate. With --stage (and an amigo.toml) the stage's sequence length, trainer, tokens, epochs
    and everything it does besides training (planner.stage_extras) come from the config, so the numbers
    are the plan's for that machine; a flag given explicitly wins."""
    from dataclasses import replace

    from amigo_burst import planner
    from amigo_burst.numbers import check_positive
    from amigo_burst.planning.calibration import calibrate
    from amigo_burst.planning.estimate import SetupCost, Workload, estimate
    from amigo_burst.planning.hardware import ALL_LINEAR, load_arch, load_gpu
    from amigo_burst.planning.matrix import GLOBAL_BATCH

    check_positive(epochs, "--epochs")  # before any arithmetic: nan epochs printed "$nan"
    check_positive(download_gbit_s, "--download-gbps")  # 0 divided; -1 made setup shorter
    arch = load_arch(cfg.resolve(model) if cfg is not None and Path(model).suffix == ".json" else model)
    name, colon, count = gpu.partition(":")  # NAME:COUNT as plan and launch take it (--gpu H100:2)
    if colon and not (count.strip().isdigit() and int(count) >= 1):
        raise UserError(f"--gpu {gpu}: the count after ':' must be a whole number >= 1 (e.g. H100:2)")
    if colon:
        if gpus != 1 and gpus != int(count):
            raise UserError(f"--gpu {gpu} and --gpus {gpus} disagree: give the count once")
        gpus = int(count)
    g = load_gpu(name)
    local = planner.local_gpu(cfg)
    if g.name == local.name:  # the configured laptop: its real VRAM
        g = replace(g, memory_gib=local.vram_gib)
    is_local = g.kind in ("laptop", "cpu")
    extras = planner.benchmark_extras(cfg)  # every launch benchmarks its stage (train/run.sh)
    if stage is not None:
        if cfg is None:
            raise UserError("--stage needs an amigo.toml")
        st = planner.stage_inputs(cfg, [stage], arch=arch)[0]
        seq_len, trainer = st.seq_len, st.trainer
        tokens, epochs = (tokens if tokens is not None else st.tokens), st.epochs
        extras = st.extras_local if is_local else st.extras_cloud
    if micro_batch < 1 or gpus < 1:  # the Workload says so too, but the batch arithmetic below comes first
        raise UserError("micro-batch must be >= 1" if micro_batch < 1 else "--gpus must be >= 1")
    accum = grad_accum or max(1, -(-GLOBAL_BATCH // (micro_batch * gpus)))
    extras = replace(extras, grad_accum=accum)
    targets = tuple(cfg.lora.target_modules) if cfg is not None else ALL_LINEAR
    w = Workload(method, seq_len, micro_batch, grad_ckpt, packing, tokens, epochs,
                 rank if rank is not None else (cfg.lora.r if cfg is not None else 16), targets, trainer,
                 lora_dropout=cfg.lora.dropout > 0 if cfg is not None else True, gpus=gpus)
    rate, rate_src = planner.usd_per_hour_for(g, cfg, planner.price_table(cfg), count=gpus)
    setup = SetupCost.local() if is_local else SetupCost.cloud(download_gbit_s)
    e = estimate(arch, g, w, calibrate(planner.runs_as_dicts(runs)), usd_per_hour=rate, setup=setup, extras=extras)
    d = e.to_dict() | {"usd_per_hour_source": rate_src, "grad_accum": accum}
    con = console or _console()
    if json_out:
        con.print_json(json.dumps(d)) if console is None else con.print(json.dumps(d), soft_wrap=True)
        return d
    _render_estimate(con, e, arch, g, w, accum, rate, rate_src)
    return d


def _render_estimate(con, e, arch, g, w, accum: int, rate, rate_src: str) -> None:
    from amigo_burst.cli.plan_view import PART_NAMES
    from amigo_burst.planning.units import hours_text, usd_text

    mark = "[green]fits[/green]" if e.fits else f"[red]does not fit[/red]: {e.reason}"
    count = f" x{w.gpus}" if w.gpus > 1 else ""
    con.print(f"{arch.name} {w.method} on {g.name}{count} ({g.memory_gib:g} GiB{' each' if w.gpus > 1 else ''}), "
              f"seq {w.seq_len} x micro-batch {w.micro_batch} x grad-accum {accum}, "
              f"{'packed' if w.packing else 'padded'}: {mark}")
    bd = e.breakdown_gib
    act = bd.get("checkpoints", bd.get("activations", 0))
    con.print(f"  peak VRAM {e.peak_vram_gib:.1f} GiB = weights {bd['weights']:.2f} + LoRA states "
              f"{bd['lora_states']:.2f} + saved activations {act:.2f} + peak transient {bd['transient']:.2f} "
              f"(logits {bd['logits']:.2f}) x allocator margin + CUDA context; the plan keeps {e.headroom:.0%} over it "
              f"\\[{e.calibration}]")
    con.print(f"  {e.tokens_per_s:,.0f} tokens/s ({e.flops_per_token / 1e9:.2f} GFLOP/token, {e.bound}-bound) "
              f"\\[{e.calibration}]")
    if e.hours is not None:
        usd = usd_text(e.usd) if e.usd is not None else "$?"
        parts = " + ".join(f"{PART_NAMES.get(k, k)} {hours_text(h)}" for k, h in e.parts.items() if h > 0)
        con.print(f"  {e.tokens:,} tokens x {w.epochs:g} epochs: {parts} = {hours_text(e.hours)}, {usd} at "
                  f"${rate or 0:.3f}/h ({rate_src})")
    else:
        con.print(f"  ${rate or 0:.3f}/h ({rate_src}); pass --tokens for hours and $")


def check_limit(name: str, value: float | None) -> None:
    """A budget or deadline must be a positive finite number (one line, exit 2 otherwise)."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{name} must be a positive number of {'dollars' if 'usd' in name else 'hours'}, got {value:g}")


def plan_cmd(*, stages: str | None = None, budget_usd: float | None = None, deadline_hours: float | None = None,
             json_out: bool = False, compare: bool = False, cfg=None, runs=None, console=None,
             tokens: dict | None = None, packing: bool = False, explain: str | None = None) -> dict:
    from rich.markup import escape

    from amigo_burst import planner
    from amigo_burst.cli import plan_view
    from amigo_burst.stages import get_stage, parse_stage_range

    check_limit("--budget-usd", budget_usd)
    check_limit("--deadline-hours", deadline_hours)
    numbers = parse_stage_range(stages) if stages else None
    base_warning = check_plan_base(cfg) if cfg is not None else ""
    if explain is not None:
        numbers = [get_stage(explain).number]
    plan, prices, arch = planner.make_plan(cfg, runs, numbers, max_usd=budget_usd, max_hours=deadline_hours,
                                           tokens=tokens, packing=packing)
    inputs = planner.stage_inputs(cfg, sorted(plan.recommended), tokens, max_usd=budget_usd, max_hours=deadline_hours,
                                  arch=arch)
    d = plan_view.plan_to_dict(plan, prices, inputs)
    if base_warning:
        d["warnings"] = [*d["warnings"], base_warning]
    d["packing"] = packing
    rows = planner.compare_rows(cfg, plan, prices, arch) if compare else None
    if rows is not None:
        d["compare"] = rows
    con = console or _console()
    if explain is not None:
        (st,) = inputs
        cell, why = plan.recommended[st.number]
        if cell is None or cell.estimate is None:
            raise UserError(f"stage {st.number}: {why}")
        if json_out:
            con.print(json.dumps({"stage": st.number, "cell": plan_view.cell_dict(cell), "hours": cell.hours,
                                  "usd": cell.usd, "parts": cell.estimate.parts}, default=str), soft_wrap=True)
        else:
            plan_view.render_explain(con, cell, st)
        return d
    if json_out:
        con.print(json.dumps(d, default=str), soft_wrap=True)
        return d
    if base_warning:
        con.print(f"[yellow]warning:[/yellow] {escape(base_warning)}")
    if compare:
        plan_view.render_compare(con, rows)
        plan_view.render_strategies(con, plan)
        return d
    plan_view.render_plan(con, plan, prices, arch, inputs)
    if cfg is not None and cfg.chain_note():  # a stage left out of amigo.toml: what the next one continues
        con.print(f"chain: {escape(cfg.chain_note())}", highlight=False)
    if any(c.hours is None and c.fits for c in plan.cells):
        con.print("some stages have no token count (hub dataset without max_rows): hours and $ need `prepare`")
    return d


def _money(cfg) -> dict | None:
    """The ledger's totals for the report (None without a project or anything recorded)."""
    if cfg is None:
        return None
    from amigo_burst import planner
    from amigo_burst.state.records import open_records

    m = planner.project_money(cfg, open_records(cfg.root))
    if not (m.spent or m.committed or m.max_usd is not None):
        return None
    return {"spent": round(m.spent, 4), "committed": round(m.committed, 4),
            "left": None if m.left is None else round(m.left, 4), "max_usd": m.max_usd}


def report_cmd(*, fmt: str = "table", out: Path | None = None, cfg=None, runs=None, console=None,
               width: int | None = None, generated: str | None = None) -> str:
    from amigo_burst import planner
    from amigo_burst.planning import report as rp

    if fmt not in ("table", "md", "html", "json"):
        raise UserError(f"unknown --format {fmt!r}: choose table, md, html or json")
    run_dicts = planner.runs_as_dicts(runs)
    strategies, local, compare = [], set(), []
    if cfg is not None:
        try:
            plan, prices, arch = planner.make_plan(cfg, run_dicts)
            strategies = [{"name": s.name, "hours": s.hours, "usd": s.usd, "feasible": s.feasible, "note": s.note,
                           "where": s.where()} for s in plan.strategies]
            local = {c.target for c in plan.cells if c.local}
            compare = planner.compare_rows(cfg, plan, prices, arch)
        except UserError:
            pass
    from datetime import datetime, timezone

    from amigo_burst.planning import report_html
    from amigo_burst.planning.calibration import as_rows, calibrate

    bases = []
    if cfg is not None:  # `eval --stage 0`'s base scores (those recorded with runs come with the runs)
        from amigo_burst.lifecycle.baseline import eval_baselines

        bases = eval_baselines(cfg)
    rep = rp.build_report(run_dicts, strategies, local, project=cfg.project.name if cfg is not None else "",
                          generated=generated or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                          calibration=as_rows(calibrate(run_dicts), run_dicts), compare=compare, baselines=bases,
                          money=_money(cfg))
    if fmt == "table":
        con = console or _console(width)
        if out is not None:
            from rich.console import Console

            with open(out, "w", encoding="utf-8") as f:
                fc = Console(file=f, width=width or 100, highlight=False, color_system=None)
                for t in rp.rich_tables(rep):
                    fc.print(t)
            return ""
        for t in rp.rich_tables(rep):
            con.print(t)
        if not rep["runs"]:
            con.print("No runs yet.")
        return ""
    text = {"md": rp.to_markdown, "json": rp.to_json, "html": report_html.to_html}[fmt](rep)
    if out is not None:
        out = Path(out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)  # never a half-written report
        (console or _console()).print(f"report written to {out}")
    else:
        import sys

        sys.stdout.write(text)
    return text


def estimate(
    ctx: typer.Context,
    *,
    model: Annotated[str, typer.Option("--model", "-m", help="preset name, hub id, or path to a config.json "
                                       "(or its folder); default: \\[model].arch")] = "",
    gpu: Annotated[str, typer.Option("--gpu", "-g", help="A100, A100-80GB, H100, H200, L40S, RTX4090, RTX3090, "
                                     "RTX4050-Laptop, cpu")] = "RTX4050-Laptop",
    method: Annotated[str, typer.Option(help="lora (bf16 base) or qlora (NF4 base)")] = "qlora",
    seq_len: Annotated[int, typer.Option("--seq-len", help="tokens per sequence")] = 2048,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="sequences per forward pass")] = 1,
    tokens: Annotated[str | None, typer.Option(help="training tokens per epoch: gives hours and $ "
                                               "(50000000, 50_000_000, 50e6 or 50M)")] = None,
    epochs: Annotated[float, typer.Option(help="passes over the tokens")] = 1.0,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: \\[lora].r or 16)")] = None,
    trainer: Annotated[str, typer.Option(help="sft, or dpo (chosen + rejected + reference passes)")] = "sft",
    grad_ckpt: Annotated[bool, typer.Option("--grad-ckpt/--no-grad-ckpt", help="gradient checkpointing")] = True,
    packing: Annotated[bool, typer.Option("--packing/--padding", help="packed rows (flash-attn) or padded "
                                          "(what the targets run: the default, as in `plan`)")] = False,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="data-parallel GPUs of that kind")] = 1,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", min=1, help="default: a global batch of "
                                                   "16 sequences, as the plan sizes it")] = None,
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="take seq, trainer, tokens and the stage's "
                                              "other parts from amigo.toml: the plan's numbers")] = None,
    download_gbps: Annotated[float, typer.Option("--download-gbps", help="model download Gbit/s (cloud)")] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object (keys documented in README)")] = False,
) -> None:
    """Fits? peak VRAM, tokens/s, hours and $ for one model x GPU x method.  Example: amigo-burst estimate --model llama-3.1-8b --gpu RTX4090 --method qlora --seq-len 2048 --tokens 20000000"""
    from amigo_burst import planner

    cfg = config_or_none(ctx)
    if not model:
        if cfg is None:
            raise UserError("--model is required without an amigo.toml")
        model = cfg.model.arch
    from amigo_burst.numbers import parse_count

    tokens = parse_count(tokens, "--tokens") if tokens is not None else None
    from amigo_burst.stages import get_stage

    estimate_cmd(model=model, gpu=gpu, method=method, seq_len=seq_len, micro_batch=micro_batch, tokens=tokens,
                 epochs=epochs, rank=rank, trainer=trainer, grad_ckpt=grad_ckpt, download_gbit_s=download_gbps,
                 json_out=json_out, packing=packing, gpus=gpus, grad_accum=grad_accum,
                 stage=get_stage(stage).number if stage else None, cfg=cfg, runs=planner.past_runs(cfg))


def plan(
    ctx: typer.Context,
    *,
    stages: Annotated[str | None, typer.Option(help="e.g. 1-5 or 2,4 (default: all configured)")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="per-stage $ limit (> 0)")] = None,
    deadline_hours: Annotated[float | None, typer.Option("--deadline-hours", help="per-stage hours (> 0)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON (keys documented in README)")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="the original analysis' figures beside the computed ones")] = False,
    cloud: Annotated[str | None, typer.Option(help="also ask SkyPilot's optimizer (dry run) what it would rent on this target")] = None,
    explain: Annotated[str | None, typer.Option("--explain", help="STAGE: the recommended machine's hours and $ as "
                                                "the sum of their parts (setup, download, inputs, training, ...)")] = None,
    packing: Annotated[bool, typer.Option("--packing/--padding", help="estimate packed rows (a flash-attn target) "
                                          "or padded ones (what the targets run: the default)")] = False,
) -> None:
    """Per stage, every target's best machine (GPU x count): fits, method, micro-batch x accum, hours, $; the strategies.  Example: amigo-burst plan --compare"""
    from amigo_burst import planner

    cfg = config(ctx)
    if cloud:
        check_plan_base(cfg)
        optimizer_cmd(cfg, cloud, stages)
        return
    plan_cmd(stages=stages, budget_usd=budget_usd, deadline_hours=deadline_hours, json_out=json_out, compare=compare,
             cfg=cfg, runs=planner.past_runs(cfg), packing=packing, explain=explain)


def check_plan_base(cfg) -> str:
    """A missing or broken base folder is refused; a hub id that cannot be checked now (offline, not
    cached) is a warning the plan shows (text and --json "warnings"): its numbers come from [model].arch,
    and a launch refuses until the model can be found."""
    from amigo_burst.lifecycle.basemodel import HubUnreachable, check_base

    try:
        check_base(cfg)
    except HubUnreachable as e:
        return f"{e}; `launch` refuses until it can be found"
    return ""


def optimizer_cmd(cfg, cloud: str, stages: str | None) -> dict:
    """plan --cloud X: what SkyPilot's optimizer would rent for the (first) stage on the plan's machine."""
    from amigo_burst.lifecycle.dryrun import optimizer_choice
    from amigo_burst.stages import parse_stage_range

    stage = parse_stage_range(stages or "1")[0]
    choice = optimizer_choice(cfg, cloud, stage)
    _console().print(
        f"stage {stage} on {choice['target']}: SkyPilot would rent {choice['instance_type']} "
        f"({choice['accelerator']}) in {choice['region']} on {choice['cloud']} at ${choice['usd_per_hour']:.3f}/h"
        + (" (spot)" if choice.get("use_spot") else "") + (f"; the plan chose {choice['planned']}"
                                                            if choice.get("planned") else ""))
    return choice


def prices(
    refresh: Annotated[bool, typer.Option("--refresh", help="ask SkyPilot to fetch its catalogs now (needs network)")]
    = False,
) -> None:
    """Where each cloud's prices come from (SkyPilot's catalog file or the shipped snapshot), how old, and every machine with on-demand and spot $/h.  Example: amigo-burst prices --refresh"""
    prices_cmd(refresh=refresh)


def prices_cmd(*, refresh: bool = False, console=None) -> None:
    from amigo_burst import planner
    from amigo_burst.cli import plan_view
    from amigo_burst.clouds import PRICED
    from amigo_burst.planning.hardware import gpu_for_accelerator

    con = console or _console()
    if refresh:
        from amigo_burst.runners.sky_catalog import refresh as do_refresh

        results = do_refresh(PRICED)
        failed = [(c, why) for c, ok, why in results if not ok]
        if len(failed) == len(results):
            raise UserError(f"could not refresh SkyPilot's catalogs of {', '.join(c for c, _ in failed)} "
                            f"({failed[0][1].rstrip('.')}): no network? prices stay as `amigo-burst prices` shows")
        for c, ok, why in results:
            con.print(f"{'[green]✓[/green]' if ok else '[yellow]warning:[/yellow]'} {c}: {why}")
    table = planner.price_table()
    plan_view.render_prices(con, table, lambda o: gpu_for_accelerator(o.cloud, o.accelerator, o.gpu_memory_gib))


def report(
    ctx: typer.Context,
    *,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, md, html (self-contained, charts) or json")]
    = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write to FILE instead of stdout")] = None,
) -> None:
    """Estimated vs actual hours, $, tokens/s, peak VRAM per run; totals; HTML with charts."""
    from amigo_burst import planner
    from amigo_burst.cli.render import check_out_file

    cfg = config(ctx)
    check_out_file(out, "--out")
    report_cmd(fmt=fmt, out=out, cfg=cfg, runs=planner.past_runs(cfg))
