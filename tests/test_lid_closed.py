"""What keeps a run's promises with the laptop gone, at unit scale: the hard cap on the machine
(train/capped.sh, run for real in bash), the trainer's limit from the cap's deadline (train/run.sh),
the verified take-in of a machine's checkpoints (FileStore.adopt), and which run `--resume` continues.

The same pieces run end to end on the loopback Slurm cluster in tests/test_faults_cloud*.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.lifecycle import resume
from amigo_burst.state.records import Run
from tests.test_budget import run_sh_args
from train.storage import open_store

REPO = Path(__file__).resolve().parents[1]
CAPPED = REPO / "train" / "capped.sh"


# --- the hard cap -----------------------------------------------------------------------------------
def capped(tmp_path: Path, *cmd: str, deadline: float | int = 0, grace: int = 5, wait: bool = True):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AMIGO_RUN_ID": "r1",
           "AMIGO_DEADLINE": str(int(deadline)), "AMIGO_CAP_GRACE_S": str(grace)}
    p = subprocess.Popen(["bash", str(CAPPED), "run", *cmd], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if not wait:
        return p
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # the cap did not fire: nothing of it may outlive the test
        os.killpg(p.pid, signal.SIGKILL)
        raise
    return p.returncode, out


def test_a_job_that_hangs_is_ended_at_the_cap(tmp_path):
    """A stalled phase (here: a fetch that never returns) gets SIGTERM at the deadline and exits 124 with
    the line the run's reason shows; nothing waits for a laptop."""
    t0 = time.monotonic()
    rc, out = capped(tmp_path, "sleep", "600", deadline=time.time() + 3)
    took = time.monotonic() - t0
    assert rc == 124 and "error: hard cap:" in out and 2 <= took < 20, (rc, took, out)
    assert not (tmp_path / ".amigo" / "jobs" / "r1.pid").exists()


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    t0 = time.monotonic()
    rc, out = capped(tmp_path, "bash", "-c", "trap '' TERM; sleep 600", deadline=time.time() + 2, grace=3)
    assert rc == 124 and "hard cap" in out and time.monotonic() - t0 < 30, out


def test_past_the_deadline_a_phase_does_not_start(tmp_path):
    rc, out = capped(tmp_path, "bash", "-c", "echo STARTED", deadline=time.time() - 1)
    assert rc == 124 and "STARTED" not in out and "ran out before its run" in out, out


def test_without_a_cap_the_command_runs_as_it_is(tmp_path):
    rc, out = capped(tmp_path, "bash", "-c", "echo hi; exit 3")
    assert rc == 3 and "hi" in out and "hard cap" not in out


@pytest.mark.parametrize("to", ["pid file", "the wrapper"])
def test_a_stop_signal_reaches_the_job_and_the_trainer_saves(tmp_path, to):
    """SIGTERM to the pid capped.sh keeps (`down` on a cloud run, over ssh), or to capped.sh itself
    (SkyPilot's cancel and Slurm's scancel signal the job's own processes): the job below gets it,
    finishes what it does (a stand-in trainer writes its stop checkpoint) and its exit code is the job's."""
    trainer = tmp_path / "trainer.py"
    trainer.write_text("import signal, sys, time, pathlib\n"
                       "def stop(*a):\n"
                       "    time.sleep(1); pathlib.Path(sys.argv[1]).write_text('checkpoint-7'); sys.exit(4)\n"
                       "signal.signal(signal.SIGTERM, stop)\n"
                       "print('training', flush=True)\n"
                       "time.sleep(600)\n")
    p = capped(tmp_path, sys.executable, str(trainer), str(tmp_path / "saved"), deadline=time.time() + 600, wait=False)
    pidfile = tmp_path / ".amigo" / "jobs" / "r1.pid"
    for _ in range(200):
        if pidfile.is_file() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    time.sleep(1.0)  # the stand-in's handler is installed
    job = int(pidfile.read_text())  # its process group: capped.sh removes the file when it ends
    # pid file: what runners/sky_ssh.signal_job runs over ssh
    os.kill(job if to == "pid file" else p.pid, signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        # whatever the signal did (capped.sh may have ended and left the job running): nothing of it
        # may outlive the test
        for group in (p.pid, job):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        p.wait(timeout=10)
    assert p.returncode == 4 and (tmp_path / "saved").read_text() == "checkpoint-7", out
    assert "hard cap" not in out and not pidfile.exists()


def test_the_trainer_stops_before_the_caps_deadline_whatever_came_before(tmp_path):
    """Setup, a download or a spot restart took part of the cap: the trainer gets what is left before the
    deadline less the reserve (the last save, the benchmark), not its full share again."""
    now = int(time.time())
    argv = run_sh_args(tmp_path, "81000", AMIGO_DEADLINE=str(now + 1000), AMIGO_RESERVE_S="100")
    limit = int(argv[argv.index("--max-runtime-s") + 1])
    assert 880 <= limit <= 900, limit
    argv = run_sh_args(tmp_path, "300", AMIGO_DEADLINE=str(now + 1000), AMIGO_RESERVE_S="100")
    assert argv[argv.index("--max-runtime-s") + 1] == "300"  # its own share is the smaller one
    argv = run_sh_args(tmp_path, "0", AMIGO_DEADLINE=str(now + 1000), AMIGO_RESERVE_S="100")
    assert 880 <= int(argv[argv.index("--max-runtime-s") + 1]) <= 900  # an estimate-derived cap alone


# --- a machine's checkpoints taken in, verified --------------------------------------------------------
def test_adopt_takes_a_manifest_only_with_every_object_matching_its_sha(tmp_path):
    machine = open_store(f"file://{tmp_path}/machine")
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "adapter_model.safetensors").write_bytes(b"w" * 5000)
    (ckpt / "trainer_state.json").write_text('{"global_step": 4}')
    machine.put_dir(ckpt, "runs/r1/checkpoints/checkpoint-4")
    manifest = machine.read_manifest("runs/r1/checkpoints/checkpoint-4")
    pulled = tmp_path / "pulled"  # what rsync brought: the machine's objects/, one of them damaged
    import shutil

    shutil.copytree(tmp_path / "machine" / "objects", pulled)
    bad = manifest["files"]["adapter_model.safetensors"]["sha256"]
    (pulled / bad[:2] / bad).write_bytes(b"x" * 5000)
    laptop = open_store(f"file://{tmp_path}/laptop")
    assert laptop.adopt(manifest, pulled) == [bad]
    assert laptop.read_manifest("runs/r1/checkpoints/checkpoint-4") is None and not laptop.has_object(bad)
    shutil.copy2(tmp_path / "machine" / "objects" / bad[:2] / bad, pulled / bad[:2] / bad)  # the next pull
    assert laptop.adopt(manifest, pulled) == []
    laptop.get_dir("runs/r1/checkpoints/checkpoint-4", tmp_path / "back")
    assert (tmp_path / "back" / "adapter_model.safetensors").read_bytes() == b"w" * 5000


# --- which run --resume continues ---------------------------------------------------------------------
def rr(rid: str, status: str, started: str, probe: bool = False) -> Run:
    return Run(id=rid, stage=2, target="vast", status=status, started=started,
               artifacts={"probe": True} if probe else {})


@pytest.mark.parametrize("runs, steps, expect", [
    # a newer run that died before training (no checkpoint) never wins over one stopped at step 900
    ([rr("stopped", "STOPPED", "1"), rr("died", "FAILED", "2")], {"stopped": 900}, ("stopped", 900)),
    # preempted / cancelled mid-training (FAILED, with a checkpoint) and the newest of those
    ([rr("a", "STOPPED", "1"), rr("b", "FAILED", "2")], {"a": 10, "b": 20}, ("b", 20)),
    ([rr("a", "STOPPED", "1"), rr("b", "STOPPED", "2")], {"a": 30, "b": 20}, ("b", 20)),
    # a probe or a succeeded run is never resumed; nothing with a checkpoint: None
    ([rr("a", "STOPPED", "1"), rr("p", "STOPPED", "2", probe=True)], {"a": 5, "p": 9}, ("a", 5)),
    ([rr("s", "SUCCEEDED", "1"), rr("f", "FAILED", "2")], {"s": 9}, None),
])
def test_resume_picks_the_newest_stopped_or_failed_run_that_left_a_checkpoint(runs, steps, expect):
    got = resume.pick(runs, steps)
    assert (None if got is None else (got[0].id, got[1])) == expect


def test_resume_finds_the_checkpoint_in_the_store_and_says_why_when_there_is_none(tmp_path):
    from amigo_burst.config import load_config
    from amigo_burst.state.records import open_records
    from tests.helpers import make_project

    cfg = load_config(make_project(tmp_path / "p", Path("/nonexistent-model")) / "amigo.toml")
    runs = open_records(cfg.root)
    runs.create(Run(id="s2-vast-20261101-100000-aaaa", stage=2, target="vast", status="STOPPED",
                    started="2026-11-01T10:00:00Z", reason="stopped at step 6 of 20", metrics={"total_steps": 20}))
    runs.create(Run(id="s2-vast-20261101-110000-bbbb", stage=2, target="vast", status="FAILED",
                    started="2026-11-01T11:00:00Z", reason="launch: no machine available"))
    with pytest.raises(UserError, match=r"no stage 2 run left a checkpoint .*bbbb, FAILED: launch: no machine"):
        resume.find(cfg, runs, 2)
    store = open_store(f"file://{cfg.root}/.amigo/store")
    for step in (3, 6):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        store.put_dir(d, f"runs/s2-vast-20261101-100000-aaaa/checkpoints/checkpoint-{step}")
    point = resume.find(cfg, runs, 2)
    assert (point.run.id, point.step) == ("s2-vast-20261101-100000-aaaa", 6)
    assert point.manifest.endswith("checkpoint-6") and "from checkpoint-6 (step 6 of 20)" in point.line()
    work = tmp_path / "work"
    resume.place(cfg, point, work)  # no bucket: into the workdir SkyPilot syncs to the fresh machine
    assert [p.name for p in (work / "outputs" / "checkpoints").iterdir()] == ["checkpoint-6"]


def test_a_relaunch_into_the_same_workdir_links_the_base_model_again(tmp_path):
    """`launch --resume` without a bucket reuses the run's workdir, where the base model's hard links from
    the first attempt are: they are kept when still the same file, replaced when the model changed."""
    from amigo_burst.lifecycle.inputs import link_tree

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_bytes(b"a" * 64)
    link_tree(tmp_path / "model", tmp_path / "work")
    link_tree(tmp_path / "model", tmp_path / "work")  # the resume: no error, still the same file
    assert os.path.samefile(tmp_path / "model" / "w.safetensors", tmp_path / "work" / "w.safetensors")
    (tmp_path / "model" / "w.safetensors").unlink()
    (tmp_path / "model" / "w.safetensors").write_bytes(b"b" * 64)
    link_tree(tmp_path / "model", tmp_path / "work")
    assert (tmp_path / "work" / "w.safetensors").read_bytes() == b"b" * 64


def test_a_log_set_aside_while_it_is_read_is_no_crash(tmp_path, monkeypatch):
    """The worker moves its train.log aside while it fetches a run's outputs (download.worker_log_aside):
    `follow` (launch, `logs -f`, eval --cloud) polling at that moment reads nothing this time, and the
    lines after it come once it is back. Seen in a clean-clone CI run as a FileNotFoundError traceback
    at the end of `eval --cloud slurm`; here the file vanishes between a check and the open."""
    from pathlib import Path

    from amigo_burst.lifecycle import follow
    from amigo_burst.lifecycle.download import worker_log_aside

    log = tmp_path / "train.log"
    log.write_text("one\ntwo\n")
    lines, pos = follow._lines(log, 0)
    assert lines == ["one", "two"]
    with worker_log_aside(tmp_path):
        monkeypatch.setattr(Path, "is_file", lambda self: True)  # it was there a moment ago
        assert follow._lines(log, pos) == ([], pos)
        monkeypatch.undo()
    with log.open("a") as f:
        f.write("three\n")
    assert follow._lines(log, pos)[0] == ["three"]
