"""Stopping without losing work: SIGTERM (spot preemption, `amigo-burst down`, a stopped worker) saves
the step in flight as a checkpoint, mirrors it, exits 4; a resume continues from that very step. And a
time-based checkpoint interval, so a hard kill (no SIGTERM) loses at most `save_minutes`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from train_helpers import REPO, argv, generate_with_adapter, metrics, run_inprocess

from train.mirror import complete_checkpoints, store_checkpoints
from train.schema import EXIT_STOPPED
from train.storage import open_store


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resume_continues_from_it(tiny_model, tmp_path):
    store_uri = f"file://{tmp_path / 'store'}"
    env = {**os.environ, "AMIGO_STORE_URI": store_uri, "AMIGO_RUN_ID": "s1-stop-test",
           "AMIGO_FAULT_STEP_DELAY_S": "0.3"}  # 0.3 s a step: SIGTERM lands mid-run
    out = tmp_path / "machine-a"
    # no step- or time-based checkpoint before step 12: the only checkpoint is the one the stop makes
    # eval every 2 steps: the best adapter so far (best/) must survive the move to another machine too
    args = argv(1, tiny_model, out, "--set", "max_steps=12", "--set", "save_steps=100", "--set", "save_minutes=0",
                "--set", "eval_steps=2", "--resume", "auto")
    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if line.startswith("AMIGO_PROGRESS ") and json.loads(line.split(" ", 1)[1])["step"] >= 3:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "no progress line for step 3"
    rest = proc.communicate(timeout=240)[0]
    assert proc.returncode == EXIT_STOPPED, rest[-3000:]
    assert "Traceback" not in rest and "SIGTERM: stopping at the end of this step" in rest

    m = metrics(out)
    step = m["steps"]
    assert m["exit_reason"] == "stopped" and m["stop_signal"] == "SIGTERM" and 3 <= step < 12
    assert [s for s, _ in complete_checkpoints(out / "checkpoints")] == [step]  # the step in flight, saved
    store = open_store(store_uri)
    assert [s for s, _ in store_checkpoints(store, "s1-stop-test")] == [step]  # mirrored like any checkpoint
    generate_with_adapter(tiny_model, out / "adapter")  # and an adapter of that step, usable
    best = json.loads((out / "best" / "best.json").read_text())  # kept for the resume, mirrored with the outputs
    assert best["step"] == m["eval_loss"]["best_step"] <= step
    assert "best/best.json" in store.read_manifest("runs/s1-stop-test/outputs")["files"]

    # a fresh machine (nothing local), same arguments: it continues from that step, fetched from the store
    out_b = tmp_path / "machine-b"
    args_b = argv(1, tiny_model, out_b, "--set", "max_steps=12", "--set", "save_steps=100", "--set",
                  "save_minutes=0", "--set", "eval_steps=2", "--resume", "auto")
    p = subprocess.run([sys.executable, "-m", "train", *args_b], cwd=REPO, capture_output=True, text=True,
                       env={**env, "AMIGO_FAULT_STEP_DELAY_S": "0"}, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    m2 = metrics(out_b)
    assert m2["resumed_from"] == f"store:runs/s1-stop-test/checkpoints/checkpoint-{step}"
    assert m2["steps"] == 12 and m2["steps_this_run"] == 12 - step and m2["exit_reason"] == "completed"
    log_b = (out_b / "train.log").read_text()
    assert f"best adapter so far: step {best['step']}, eval loss {best['eval_loss']:.4f}" in log_b
    assert m2["eval_loss"]["first"] == m["eval_loss"]["first"]  # machine A's evaluations count too
    assert m2["kept"]["step"] == m2["eval_loss"]["best_step"]


@pytest.mark.slow
def test_a_checkpoint_every_save_minutes(tiny_model, tmp_path, monkeypatch):
    """save_steps far away, save_minutes 0.01 (0.6 s) at 0.25 s a step: checkpoints appear on the clock."""
    monkeypatch.setenv("AMIGO_FAULT_STEP_DELAY_S", "0.25")
    out = tmp_path / "out"
    assert run_inprocess(argv(1, tiny_model, out, "--set", "max_steps=8", "--set", "save_steps=100",
                              "--set", "save_minutes=0.01", "--set", "save_total_limit=20")) == 0
    steps = [s for s, _ in complete_checkpoints(out / "checkpoints")]
    assert len(steps) >= 3 and steps[-1] == 8, steps  # the clock's, plus the last step's
    assert all(b - a <= 4 for a, b in zip([0, *steps], steps, strict=False)), steps
