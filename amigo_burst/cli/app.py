"""The amigo-burst command line: the typer app and its commands (the logic lives in modules a test can call).

Command functions live in cli/info.py, cli/plan.py and cli/runs.py at module level and are
registered here. They import lifecycle/planner modules inside their bodies so that
`amigo-burst --help` stays instant (bench/cli_startup.py); torch, transformers, sky and boto3
are imported only by the code that runs them.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from amigo_burst.cli import info, models, plan, probe, rehearse, runs
from amigo_burst.cli.context import State
from amigo_burst.errors import UserError

CONFIG_FLAGS = ("--config", "-c")
ENV_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _one_red_line(text: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    from amigo_burst.errors import one_line

    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(f"[red]error:[/red] {escape(one_line(text, 1000))}")


def hoist_config(args: list[str]) -> list[str]:
    """`amigo-burst plan --config X` -> `amigo-burst --config X plan`: --config belongs to the app, and
    the README promises every command takes it, before or after the command's name."""
    front, rest, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if a in CONFIG_FLAGS and i + 1 < len(args):
            front += args[i:i + 2]
            i += 2
            continue
        if a.startswith("--config="):
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


def check_utf8(args: list[str]) -> None:
    """Arguments are text: bytes that are not UTF-8 (Python hands them over as lone surrogates) would
    fail later as a traceback in a tokenizer, a path or the terminal. Refused here, in one line."""
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(a.encode("utf-8", "surrogateescape"))[2:-1]
            raise UserError(f"argument '{shown}' is not UTF-8 text: amigo-burst reads its arguments, "
                            "prompts and paths as UTF-8") from None


class _Group(TyperGroup):
    """Turns a UserError from any command into one red line on stderr and exit code 2."""

    def parse_args(self, ctx, args):  # noqa: ANN001 - click's signature
        if ctx.parent is None:  # the root group sees the whole command line
            args = hoist_config(list(args))
            ctx.meta["amigo.args"] = list(args)  # checked in invoke(), where a UserError is one line
        return super().parse_args(ctx, args)

    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            if ctx.parent is None:
                check_utf8(ctx.meta.get("amigo.args", []))
            return super().invoke(ctx)
        except UserError as e:
            _one_red_line(str(e))
            ctx.exit(e.exit_code)
        except OSError as e:  # the machine, not the code: a full disk, a read-only or forbidden folder
            if e.errno not in ENV_ERRNOS:
                raise
            what = f"{e.filename}: " if e.filename else ""
            hint = " (free some space: `amigo-burst clean` removes finished runs' work copies)" \
                if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            _one_red_line(f"{what}{e.strerror}{hint}")
            ctx.exit(UserError.exit_code)


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


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="AMIGO_CONFIG",
                     help="amigo.toml to use (default: found by walking up from the current folder)."),
    ] = None,
) -> None:
    ctx.obj = State(config)


for fn in (info.stages, info.targets, info.doctor, plan.estimate, plan.plan, plan.prices, plan.report, probe.probe,
           runs.launch, runs.logs, runs.status, runs.download, runs.down, runs.pipeline, runs.clean,
           rehearse.rehearse):
    app.command()(fn)
app.command("eval")(models.eval_)
app.command("try")(models.try_)
app.command("export")(models.export)
config_app.command("check")(info.config_check)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
