"""Helpers the test files share (fixtures live in conftest.py): the CLI runners, the demo project,
run records, polling.

    cli(project, "launch", "--stage", "1")     the real `amigo-burst` as a subprocess
    invoke("plan", "--json")                     the typer app in-process (CliRunner)
    make_project(tmp, tiny_model)                presets/demo.toml with absolute paths
    wait_for(lambda: ..., "what")                poll until truthy, or fail naming what
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(project: Path, *args: str, config: Path | None = None, env: dict | None = None, timeout: int = 600,
        check: bool = False, drop_env: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`amigo-burst --config PROJECT/amigo.toml ARGS` in PROJECT, as a user runs it (80+ columns, no colour)."""
    full = {k: v for k, v in os.environ.items() if k not in drop_env}
    full.update({"COLUMNS": "160", "NO_COLOR": "1", **(env or {})})
    r = subprocess.run(cli_argv(project, *args, config=config), cwd=project, capture_output=True, text=True,
                       timeout=timeout, env=full)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def cli_argv(project: Path, *args: str, config: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "amigo_burst.cli", "--config", str(config or project / "amigo.toml"), *args]


def invoke(*args: str, env: dict | None = None):
    """The typer app in this process, at a pinned terminal width; returns click's Result."""
    from typer.testing import CliRunner

    from amigo_burst.cli.app import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100", **(env or {})})


def make_project(root: Path, tiny_model: Path, store_url: str | None = None, endpoint: str | None = None,
                 eval_limit: int = 0) -> Path:
    """A demo project: presets/demo.toml with absolute sample paths and the session's tiny model.
    eval_limit: HumanEval problems after each stage (0, the default here: none; tests/test_humaneval*.py
    run it, the other tests are not about it and stay as fast as before)."""
    root.mkdir(parents=True, exist_ok=True)
    text = (REPO / "presets" / "demo.toml").read_text()
    text = re.sub(r"(?m)^limit = \d+", f"limit = {eval_limit}", text)
    text = text.replace('"../train/samples/', f'"{REPO}/train/samples/')
    text = text.replace('base = "tiny-model"', f'base = "{tiny_model}"')
    if store_url:
        text = text.replace('url = "file://.amigo/store"',
                            f'url = "{store_url}"' + (f'\nendpoint_url = "{endpoint}"' if endpoint else ""))
    (root / "amigo.toml").write_text(text)
    return root


def records(project: Path):
    from amigo_burst.state.records import open_records

    return open_records(project)


def runs_of(project: Path):
    return records(project).list()


def wait_for(pred, what: str, timeout: float = 120, proc: subprocess.Popen | None = None, poll: float = 0.05):
    """pred()'s first truthy value; AssertionError naming WHAT on timeout or when PROC exits first."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None and not pred():
            raise AssertionError(f"{what}: the process exited ({proc.returncode}) first")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (another process can still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Until URL answers (any HTTP status counts as an answer)."""
    def answers() -> bool:
        try:
            urllib.request.urlopen(url, timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    wait_for(answers, url, timeout=timeout_s, proc=proc, poll=0.1)
