"""What every command shares: the invocation's config (loaded on first use) and a console."""

from __future__ import annotations

from pathlib import Path

import typer

from amigo_burst.errors import UserError


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


def config(ctx: typer.Context):
    """The project's AmigoConfig (UserError when there is none)."""
    return state(ctx).cfg


def config_or_none(ctx: typer.Context):
    """The config when there is one: commands that do not need a project still work without. A config
    that exists but is wrong (bad TOML, an unknown target, a broken sky/*.yaml) is still an error."""
    st = state(ctx)
    if st.config_path is None:
        from amigo_burst.config import find_config

        try:
            find_config()
        except UserError:
            return None
    return st.cfg


def console(width: int | None = None):
    from rich.console import Console

    return Console(highlight=False, width=width, emoji=False)  # "H100:x:" or a path is no emoji code
