"""`amigo-burst stages | targets | config check | doctor`: what the tool knows and what this machine has."""

from __future__ import annotations

import typer

from amigo_burst.cli.context import config, config_or_none, console


def stages() -> None:
    """The five stages: number, name, trainer, input fields."""
    from rich.table import Table

    from amigo_burst.stages import STAGES

    t = Table(title="stages (each starts from the previous stage's adapter)")
    for col in ("stage", "name", "what it teaches", "trainer", "input fields (\\[optional])"):
        t.add_column(col)
    for s in STAGES.values():
        fields = ", ".join(s.required) + "".join(f", \\[{f}]" for f in s.optional)
        t.add_row(str(s.number), s.name, s.title, s.trainer.upper(), fields)
    console().print(t)


def targets(ctx: typer.Context) -> None:
    """The targets in sky/*.yaml: infra, accelerator, GPU memory, where the price comes from."""
    from rich.table import Table

    from amigo_burst.targets import all_targets

    cfg = config_or_none(ctx)
    t = Table(title="targets (sky/*.yaml)")
    for col in ("target", "--cloud", "infra", "accelerator", "GPU memory", "price from"):
        t.add_column(col)
    for tg in all_targets(cfg.root if cfg is not None else None):
        accel = f"{tg.accelerator} x{tg.gpu_count}" if tg.accelerator else "-"
        t.add_row(tg.name, tg.alias, tg.infra, accel, _gpu_memory(tg, cfg), tg.price_source)
    console().print(t)


def _gpu_memory(tg, cfg) -> str:
    if tg.is_local:
        if cfg is None:
            return "see \\[local_gpu]"
        return f"{cfg.local_gpu.vram_gib:g} GiB ({cfg.local_gpu.name})"
    if not tg.accelerator:
        return "-"
    from amigo_burst.planning.hardware import gpu_for_accelerator

    gpu = gpu_for_accelerator(tg.infra, tg.accelerator)
    return f"{gpu.memory_gib:g} GiB" if gpu else "?"


def config_check(ctx: typer.Context) -> None:
    """Validate amigo.toml, find the base model (folder, cache or hub: its architecture and size), check
    .env, and print the resolved config (secrets masked)."""
    import json

    from rich.markup import escape

    from amigo_burst.lifecycle.basemodel import check_base
    from amigo_burst.secrets import SECRET_NAMES, load_secrets, mask

    cfg = config(ctx)
    found = load_secrets(cfg.root)  # a malformed .env and a missing base model refuse before "is valid"
    base = check_base(cfg)
    con = console()
    con.print(f"[green]✓[/green] {escape(str(cfg.path))} is valid", soft_wrap=True)
    con.print(f"[green]✓[/green] {escape(base.line())}", soft_wrap=True)
    con.print_json(json.dumps(cfg.model_dump(mode="json")))
    con.print("secrets (.env): " + ", ".join(f"{n}={mask(found.get(n))}" for n in SECRET_NAMES))


def doctor(ctx: typer.Context) -> None:
    """Check this machine: python, torch/CUDA, SkyPilot and its clouds, the store, the local GPU.

    Exit code 0: everything this project uses is there (✓, or notes for what it does not use).
    1: something it needs is missing (✗ lines, each with its fix). 2: bad input (e.g. a broken --config)."""
    from amigo_burst.lifecycle.doctor import FAIL, run_checks

    con = console()
    failed = 0
    for level, what, fix in run_checks(lambda: config(ctx)):
        print_check(con, level, what, fix)
        failed += level == FAIL
    if failed:
        con.print(f"[red]{failed} check(s) this project needs failed[/red] (exit 1)")
        raise typer.Exit(1)
    con.print("[green]everything this project uses is here[/green]")


def print_check(con, level: str, what: str, fix: str) -> None:
    """One doctor check. At a terminal: wrapped at words under its text, the fix on its own line below;
    piped: one line per check, however long (`doctor | grep vast` finds it whole)."""
    from rich.markup import escape
    from rich.table import Table

    from amigo_burst.lifecycle.doctor import FAIL, OK

    mark = {OK: "[green]✓[/green]", FAIL: "[red]✗[/red]"}.get(level, "[yellow]-[/yellow]")
    note = " (not used by this project)" if level not in (OK, FAIL) else ""
    fix = fix if fix and level != OK else ""
    if not con.is_terminal:
        con.print(f"{mark} {escape(what)}{note}" + (f"  [dim]→ {escape(fix)}[/dim]" if fix else ""), soft_wrap=True)
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")  # a long path or command breaks, never runs off the screen
    grid.add_row(mark, f"{escape(what)}{note}")
    if fix:
        grid.add_row("", f"[dim]→ {escape(fix)}[/dim]")
    con.print(grid)
