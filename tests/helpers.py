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


_PORT_CLAIMS: list = []  # lock files held open: a claimed port stays this process's until it exits


def reserved_port() -> int:
    """A port on 127.0.0.1 for a server that cannot bind port 0 itself and report it (SkyPilot's API
    server, a proxy that must come back on the same port), safe from the race of "free a moment ago":

    - it lies below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), so no
      other process is handed it by a bind to port 0 or an outgoing connection;
    - an flock on /tmp/amigo-test-port-<port>.lock, held until this process exits, keeps two test
      sessions on this machine (several helpers, CI jobs) from picking the same one;
    - it was free when claimed (a bind succeeds).
    """
    import fcntl
    import random

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = random.randrange(20000, min(low, 32768))
        f = open(f"/tmp/amigo-test-port-{port}.lock", "w")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            f.close()
            continue
        _PORT_CLAIMS.append(f)
        return port
    raise AssertionError("no free port below the ephemeral range")


def wait_port_in_log(log: Path, pattern: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """The port a server bound itself (port 0) and printed: the first match of PATTERN's group 1 in LOG."""
    import re

    def found():
        m = re.search(pattern, log.read_text(errors="replace")) if log.is_file() else None
        return int(m.group(1)) if m else None

    return wait_for(found, f"{pattern!r} in {log}", timeout=timeout_s, proc=proc, poll=0.05)


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


# the shape of mistralai/Mistral-Nemo-Base-2407's config.json (the shipped amigo.toml's base)
NEMO_CONFIG = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 5120,
               "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
               "intermediate_size": 14336, "vocab_size": 131072, "tie_word_embeddings": False}


def cache_hub_config(cache: Path, repo: str, config: dict | None = None) -> Path:
    """A Hugging Face cache (HF_HUB_CACHE) holding REPO's config.json, laid out as huggingface_hub
    writes it (models--org--name/refs/main -> snapshots/<commit>/config.json): "downloaded before"."""
    import json

    commit = "0" * 40
    d = cache / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / "main").write_text(commit)
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap / "config.json").write_text(json.dumps(config or NEMO_CONFIG))
    return cache

