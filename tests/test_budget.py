"""Budgets: a launch whose estimate is over `--max-usd` (or the stage's `max_usd`) is refused before
anything is launched; `--force` goes ahead; a dollar budget becomes a hard time limit that reaches
the entrypoint as `--max-runtime-s`.

The launches run in this process (typer's CliRunner) on the local target, with the real dataset
preparation, estimate (the laptop's electricity: 65 W x $0.30/kWh = $0.0195/h in presets/demo.toml,
so budgets below a cent are "over"), state DB and file:// store. The one stand-in is where the worker
process would start (`lifecycle.launch.spawn_worker`): a recorder notes that a worker was asked
for, and no training runs. (A cloud target would do the same arithmetic at its $/h, but a launch
there first asks SkyPilot for the cloud's credentials, which tests do not have.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config
from amigo_burst.planning import budget as budget_rule
from amigo_burst.state import paths
from amigo_burst.state.records import open_records
from tests.helpers import make_project

REPO = Path(__file__).resolve().parents[1]


# --- dollars -> seconds -----------------------------------------------------------------------------
@pytest.mark.parametrize("usd, hours, usd_per_hour, seconds", [
    (10.0, None, 0.40, 81_000),  # $10 at $0.40/h = 25 h = 90,000 s; x 0.9 for training = 81,000 s
    (1.0, None, 2.00, 1_620),  # 0.5 h = 1,800 s x 0.9
    (0.10, None, 1.64, 197),  # 0.061 h = 219.5 s x 0.9 = 197.6 -> 197 (whole seconds, rounded down)
    (0.01, None, 3.60, 60),  # 9 s of training is no run: at least MIN_RUNTIME_S
    (10.0, 1.0, 0.40, 3_600),  # the hours budget (a deadline) caps the dollars one
    (None, 0.5, None, 1_800),  # hours alone, no price needed
    (10.0, None, None, 0),  # dollars with no price (a Slurm cluster): no limit from them
    (None, None, 0.40, 0),  # no budget: no limit
])
def test_runtime_limit_at_known_prices(usd, hours, usd_per_hour, seconds):
    assert budget_rule.ESTIMATE_SHARE == 0.9 and budget_rule.MIN_RUNTIME_S == 60  # the figures above
    assert planner.runtime_limit_s(planner.Budget(usd, hours), usd_per_hour) == seconds


def test_command_line_budget_wins_over_the_stages(tmp_path):
    cfg = load_config(project(tmp_path, stage_max_usd=0.10))
    assert planner.budget_for(cfg, 1) == planner.Budget(0.10, None, "amigo.toml")
    assert planner.budget_for(cfg, 1, max_usd=5.0) == planner.Budget(5.0, None, "command line")
    assert planner.budget_for(cfg, 2) == planner.Budget(None, None, "none")


# --- launch refuses, or goes ahead with --force -----------------------------------------------------
def project(tmp_path: Path, tiny_model: Path | None = None, stage_max_usd: float | None = None) -> Path:
    root = make_project(tmp_path / "p", tiny_model or Path("/nonexistent-model"))
    if stage_max_usd is not None:
        toml = root / "amigo.toml"
        text = toml.read_text()
        assert "[stages.1]\n" in text
        toml.write_text(text.replace("[stages.1]\n", f"[stages.1]\nmax_usd = {stage_max_usd}\n", 1))
    return root / "amigo.toml"


def launch(config: Path, *args: str):
    from typer.testing import CliRunner

    from amigo_burst.cli.app import app

    return CliRunner().invoke(
        app, ["--config", str(config), "launch", "--stage", "1", "--cloud", "local", "--detach", *args],
        env={"COLUMNS": "200", "NO_COLOR": "1"})


def nothing_launched(config: Path, workers: list[str]) -> None:
    root = config.parent
    assert workers == [], "no worker started"
    assert open_records(root).list() == [], "no run record"
    assert not paths.runs_dir(root).exists() or not any(paths.runs_dir(root).iterdir()), "no run folder"
    store = root / ".amigo" / "store"
    assert not (store / "manifests").exists() and not (store / "objects").exists(), "nothing uploaded"


TINY_USD = 1e-9  # below the local estimate of the demo's stage 1 (a fraction of a cent)


def refused(r) -> str:
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.stdout[-2000:], err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: estimated $") and " budget" in err and "--force" in err, err
    return err


def test_over_max_usd_is_refused_before_anything_is_launched(tmp_path, tiny_model, workers):
    config = project(tmp_path, tiny_model)
    refused(launch(config, "--max-usd", str(TINY_USD)))
    nothing_launched(config, workers)


def test_over_the_stages_max_usd_is_refused_before_anything_is_launched(tmp_path, tiny_model, workers):
    config = project(tmp_path, tiny_model, stage_max_usd=TINY_USD)
    refused(launch(config))
    nothing_launched(config, workers)


def launched_run(config: Path, workers: list[str]):
    (run_id,) = workers
    run = open_records(config.parent).get(run_id)
    plan = json.loads((paths.run_dir(config.parent, run_id) / "launch.json").read_text())
    return run, plan


@pytest.mark.parametrize("stage_max_usd, args, usd", [
    (None, ("--max-usd", str(TINY_USD), "--force"), TINY_USD),  # over --max-usd, forced
    (TINY_USD, ("--force",), TINY_USD),  # over the stage's max_usd, forced
    (TINY_USD, ("--max-usd", "5"), 5.0),  # the command line's budget wins over the stage's: not over
])
def test_force_or_a_larger_command_line_budget_goes_ahead_with_the_time_limit(tmp_path, tiny_model, workers,
                                                                             stage_max_usd, args, usd):
    config = project(tmp_path, tiny_model, stage_max_usd)
    r = launch(config, *args)
    assert r.exit_code == 0, (r.stdout[-3000:], r.stderr[-2000:])
    run, plan = launched_run(config, workers)
    assert run.status == "PENDING" and run.target.startswith("local") and run.pid == 4242
    assert run.estimate["usd"] is not None  # (recorded rounded: $0.0000; over TINY_USD, as refused above)
    assert run.usd_per_hour == pytest.approx(65 / 1000 * 0.30)  # the demo laptop's electricity
    # the budget becomes the entrypoint's time limit: dollars / ($/h) x 3600 x 0.9 training share
    # ($5 at $0.0195/h: 830,769 s; a nano-dollar: the 60 s floor)
    limit = max(60, int(usd / run.usd_per_hour * 3600 * 0.9))
    assert plan["envs"]["AMIGO_MAX_RUNTIME_S"] == str(limit) and f"budget {limit}s" in r.stdout
    store = config.parent / ".amigo" / "store" / "manifests"
    assert (store / "inputs" / f"{run.id}.json").is_file() and (store / "code" / f"{run.id}.json").is_file()


# --- the limit reaches the entrypoint ---------------------------------------------------------------
def run_sh_args(tmp_path: Path, max_runtime_s: str = "0", **extra: str) -> list[str]:
    """The argv train/run.sh hands `python -m train` (AMIGO_PYTHON: a script that prints its argv); EXTRA:
    more of the job's envs (the cap's AMIGO_DEADLINE, AMIGO_RESERVE_S: tests/test_lid_closed.py)."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "AMIGO_PYTHON": str(fake), "AMIGO_STAGE": "1",
           "AMIGO_TRAIN_CONFIG": "train/configs/stage1.yaml", "AMIGO_BASE_MODEL": "org/base",
           "AMIGO_METHOD": "qlora", "AMIGO_DATA": "train/samples/stage1.jsonl", "AMIGO_OUTPUT": str(tmp_path / "o"),
           "AMIGO_MAX_RUNTIME_S": max_runtime_s, "AMIGO_SET": "max_steps=4", **extra}
    p = subprocess.run(["bash", str(REPO / "train" / "run.sh")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    argv = p.stdout.splitlines()
    # the first call is training; run.sh then runs the benchmark (`-m train.humaneval ...`): not ours here
    nxt = [i for i, a in enumerate(argv) if a == "-m"][1:]
    return argv[:nxt[0]] if nxt else argv


def test_the_time_limit_reaches_the_entrypoint_as_max_runtime_s(tmp_path):
    from train.config import parse

    argv = run_sh_args(tmp_path, "197")
    assert argv[:2] == ["-m", "train"]
    assert argv[argv.index("--max-runtime-s") + 1] == "197"
    assert parse(argv[2:]).max_runtime_s == 197
    assert "--max-runtime-s" not in run_sh_args(tmp_path, "0")  # 0: no budget, no flag
