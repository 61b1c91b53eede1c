"""A run's lifecycle as a user lives it (issue 15, items 3, 9 and 13), on the local target.

Real parts only: the `amigo-burst` CLI as subprocesses, the detached worker, real TRL training of
the tiny offline model, the file:// store, the SQLite state DB. AMIGO_FAULT_STEP_DELAY_S slows each
step so the test can act while a stage trains.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from amigo_burst.state.records import Run, pid_alive
from tests.helpers import cli, cli_argv, make_project, records, runs_of, wait_for

REPO = Path(__file__).resolve().parents[1]


def _sigint_as_a_shell_leaves_it() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
def test_ctrl_c_during_launch_then_pipeline_reattaches_and_goes_on(tmp_path, tiny_model):
    """Ctrl-C while `launch` follows: it says training goes on and how to reattach or stop, exit 130, the
    worker keeps training. `pipeline` then reattaches to the running stage 1 (no "already running"),
    and re-runs stage 2, whose only success continues another stage 1 run (lineage), from stage 1."""
    project = make_project(tmp_path / "p", tiny_model)
    out = tmp_path / "launch.out"
    with open(out, "wb") as f:
        ctl = subprocess.Popen(cli_argv(project, "launch", "--stage", "1"), cwd=project, stdout=f,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               # Ctrl-C as a shell delivers it: SIGINT at its default and unblocked in the
                               # child, even if this test process (or a library in it) ignores or blocks it
                               preexec_fn=_sigint_as_a_shell_leaves_it,
                               env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1",
                                    # 8 steps x 3 s: still training when checked, even on a loaded machine
                                    "AMIGO_FAULT_STEP_DELAY_S": "3"})
    run = wait_for(lambda: runs_of(project)[0] if (project / ".amigo" / "state.db").is_file() and runs_of(project)
                   else None, "the run record", timeout=120, proc=ctl)
    log = project / ".amigo" / "runs" / run.id / "train.log"
    wait_for(lambda: log.is_file() and "AMIGO_PROGRESS" in log.read_text(), "the first step", timeout=240, proc=ctl)
    ctl.send_signal(signal.SIGINT)
    assert ctl.wait(30) == 130
    text = out.read_text()
    assert "training goes on" in text and f"amigo-burst logs {run.id} -f" in text, text[-2000:]
    assert f"amigo-burst down {run.id}" in text and "Traceback" not in text
    mid = records(project).get(run.id)
    assert mid.status == "RUNNING" and pid_alive(mid.pid), "training goes on in its worker"

    # a successful stage 2 that continues some other stage 1 run: not done for this pipeline
    stale = Run(id="s2-local-20200101-000000-0bad", stage=2, target="local-rtx4050", status="SUCCEEDED",
                started="2020-01-01T00:00:00Z", artifacts={"from_run": "s1-local-20200101-000000-0old"})
    records(project).create(stale)
    # and a probe of stage 2 on this very stage 1 (`probe --stage 2`): a few steps, never the stage's run
    probe = Run(id="s2-local-20200101-000001-prob", stage=2, target="local-rtx4050", status="SUCCEEDED",
                started="2020-01-01T00:00:01Z", artifacts={"from_run": run.id, "probe": True})
    records(project).create(probe)

    r = cli(project, "pipeline", "--plan", "local", "--stages", "1-2", env={"AMIGO_FAULT_STEP_DELAY_S": "0"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"stage 1: reattaching to {run.id} (already running)" in r.stdout, r.stdout
    assert "already running as run" not in r.stdout + r.stderr
    assert "stage 2: already done" not in r.stdout
    assert f"{stale.id} continues s1-local-20200101-000000-0old, not {run.id}" in r.stdout, r.stdout
    rows = runs_of(project)
    assert [x.id for x in rows if x.stage == 1] == [run.id], "stage 1 ran once"
    s2 = [x for x in rows if x.stage == 2 and x.id not in (stale.id, probe.id)]
    assert len(s2) == 1 and s2[0].status == "SUCCEEDED" and s2[0].artifacts["from_run"] == run.id

    again = cli(project, "pipeline", "--plan", "local", "--stages", "1-2", check=True)
    assert f"stage 1: already done by {run.id}" in again.stdout and f"stage 2: already done by {s2[0].id}" in again.stdout


@pytest.mark.slow
def test_a_local_base_model_folder_reaches_the_target_through_the_store(tmp_path, tiny_model):
    """A base model given as a laptop folder is sent with the inputs (content-addressed, through the
    store) and AMIGO_BASE_MODEL points at the copy the target fetched: the laptop's folder is deleted
    as soon as `launch --detach` returns, and the stage still trains. AMIGO_SYNC_BASE_MODEL=1 makes the
    local runner take the path a cloud target takes."""
    from train.storage import open_store, sha256_file

    model = tmp_path / "my model"
    shutil.copytree(tiny_model, model)
    want = {f"base-model/{p.name}": sha256_file(p) for p in model.iterdir() if p.is_file()}
    project = make_project(tmp_path / "p", model)
    r = cli(project, "launch", "--stage", "1", "--detach", check=True,
            env={"AMIGO_SYNC_BASE_MODEL": "1", "AMIGO_FAULT_STEP_DELAY_S": "0.2"})
    shutil.rmtree(model)  # only the synced copy is left
    run_id = re.search(r"run (s1-local-\S+) started", r.stdout).group(1)
    f = cli(project, "logs", run_id, "-f")
    assert f.returncode == 0 and f"{run_id}: SUCCEEDED" in f.stdout, f.stdout[-3000:]
    plan = json.loads((project / ".amigo" / "runs" / run_id / "launch.json").read_text())
    assert plan["envs"]["AMIGO_BASE_MODEL"] == "inputs/base-model"
    m = open_store(f"file://{project}/.amigo/store").read_manifest(f"inputs/{run_id}")
    got = {rel: e["sha256"] for rel, e in m["files"].items() if rel.startswith("base-model/")}
    assert got == want


def test_hub_ids_pass_through_and_local_targets_read_the_folder_in_place(tmp_path, monkeypatch):
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.launch import model_to_send
    from amigo_burst.targets import get_target

    monkeypatch.delenv("AMIGO_SYNC_BASE_MODEL", raising=False)
    (tmp_path / "m").mkdir()
    demo = (REPO / "presets" / "demo.toml").read_text()
    (tmp_path / "amigo.toml").write_text(demo.replace('base = "tiny-model"', f'base = "{tmp_path / "m"}"'))
    cfg = load_config(tmp_path / "amigo.toml")
    assert model_to_send(cfg, get_target("vast")) == tmp_path / "m"
    assert model_to_send(cfg, get_target("local")) is None
    (tmp_path / "amigo.toml").write_text(demo.replace('base = "tiny-model"', 'base = "mistralai/Mistral-Nemo-Base-2407"'))
    assert model_to_send(load_config(tmp_path / "amigo.toml"), get_target("vast")) is None


def test_rsync_transport_carries_the_model_in_the_workdir_as_hard_links(tmp_path):
    """No s3 store: the inputs (and the model folder) travel in the workdir SkyPilot syncs; the model's
    files are hard links, not a second copy on the laptop's disk."""
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.inputs import transport_envs

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"w" * 4096)
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    (tmp_path / "amigo.toml").write_text((REPO / "presets" / "demo.toml").read_text())
    work = tmp_path / "work"
    work.mkdir()
    envs = transport_envs(load_config(tmp_path / "amigo.toml"), "rsync", "inputs/x", work, data, None, model)
    assert envs["AMIGO_INPUTS"] == "" and envs["AMIGO_ADAPTER_FROM"] == ""
    copy = work / "inputs" / "base-model" / "model.safetensors"
    assert copy.read_bytes() == b"w" * 4096 and copy.stat().st_ino == (model / "model.safetensors").stat().st_ino
