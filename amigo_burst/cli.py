"""The amigo-burst command line: parses and renders; the logic lives in modules a test can call.

Heavy imports (torch, transformers, sky, boto3) happen inside the commands that
need them, so `amigo-burst --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from amigo_burst.errors import UserError


class _Group(TyperGroup):
    """Turns a UserError from any command into one red line on stderr and exit code 2."""

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except UserError as e:
            from rich.console import Console
            from rich.markup import escape

            Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {escape(str(e))}")
            ctx.exit(e.exit_code)


app = typer.Typer(
    cls=_Group,
    name="amigo-burst",
    help="Fine-tune a code LLM in five stages: on the laptop where it fits, on rented GPUs where it doesn't.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(cls=_Group, help="Check the amigo.toml config.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class State:
    """Per-invocation state: the --config path, the config loaded on first use."""

    def __init__(self, config_path: Path | None):
        self.config_path = config_path
        self._cfg = None

    @property
    def cfg(self):
        if self._cfg is None:
            from amigo_burst.config import load_config

            self._cfg = load_config(self.config_path)
        return self._cfg


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="AMIGO_CONFIG", help="amigo.toml to use (default: found by walking up from the current folder)."),
    ] = None,
) -> None:
    ctx.obj = State(config)


@app.command()
def stages() -> None:
    """The five stages: number, name, trainer, input fields."""
    from rich.console import Console
    from rich.table import Table

    from amigo_burst.stages import STAGES

    t = Table(title="stages (each starts from the previous stage's adapter)")
    for col in ("stage", "name", "what it teaches", "trainer", "input fields (\\[optional])"):
        t.add_column(col)
    for s in STAGES.values():
        fields = ", ".join(s.required) + "".join(f", \\[{f}]" for f in s.optional)
        t.add_row(str(s.number), s.name, s.title, s.trainer.upper(), fields)
    Console().print(t)


@app.command()
def targets(ctx: typer.Context) -> None:
    """The targets in sky/*.yaml: infra, accelerator, GPU memory, where the price comes from."""
    from rich.console import Console
    from rich.table import Table

    from amigo_burst.targets import all_targets

    root = _project_root(ctx)
    t = Table(title="targets (sky/*.yaml)")
    for col in ("target", "--cloud", "infra", "accelerator", "GPU memory", "price from"):
        t.add_column(col)
    for tg in all_targets(root):
        accel = f"{tg.accelerator} x{tg.gpu_count}" if tg.accelerator else "-"
        t.add_row(tg.name, tg.alias, tg.infra, accel, _gpu_memory(tg, ctx), tg.price_source)
    Console().print(t)


def _project_root(ctx: typer.Context) -> Path | None:
    """The folder of amigo.toml when there is one; commands that don't need a config still work without."""
    try:
        return state(ctx).cfg.root
    except UserError:
        return None


def _gpu_memory(tg, ctx: typer.Context) -> str:
    if tg.is_local:
        try:
            g = state(ctx).cfg.local_gpu
            return f"{g.vram_gib:g} GiB ({g.name})"
        except UserError:
            return "see \\[local_gpu]"
    if not tg.accelerator:
        return "-"
    try:
        from amigo_burst.estimate import gpu_for_accelerator

        gpu = gpu_for_accelerator(tg.infra, tg.accelerator)
        return f"{gpu.memory_gib:g} GiB" if gpu else "?"
    except (ImportError, UserError):
        return "?"


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate amigo.toml and print the resolved config (secrets masked)."""
    import json

    from rich.console import Console

    from amigo_burst.secrets import SECRET_NAMES, load_secrets, mask

    cfg = state(ctx).cfg
    con = Console()
    con.print(f"[green]✓[/green] {cfg.path} is valid")
    con.print_json(json.dumps(cfg.model_dump(mode="json")))
    found = load_secrets(cfg.root)
    con.print("secrets (.env): " + ", ".join(f"{n}={mask(found.get(n))}" for n in SECRET_NAMES))


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check this machine: python, torch/CUDA, SkyPilot and its clouds, the store, the local GPU."""
    from rich.console import Console

    from amigo_burst.doctor import run_checks

    con = Console(highlight=False)
    for ok, what, fix in run_checks(state(ctx)):
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        con.print(f"{mark} {what}" + (f"  [dim]→ {fix}[/dim]" if fix and not ok else ""))


def _register_commands() -> None:
    """Commands that live in their own modules (each registers itself; heavy imports stay inside)."""
    from amigo_burst import cli_estimate, cli_runs

    for module in (cli_runs, cli_estimate):
        module.register(app, state)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
