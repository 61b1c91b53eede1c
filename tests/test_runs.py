"""Run records (amigo_burst/runs.py): a real SQLite file, and real processes racing on it."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sqlite3
import time

import pytest

from amigo_burst.errors import UserError
from amigo_burst.state.ids import new_run_id
from amigo_burst.state.records import SCHEMA_VERSION, Run, RunStore, pid_alive

ID_RE = re.compile(r"^s(\d)-([a-z0-9-]+)-(\d{8}-\d{6})-([0-9a-f]{4})$")


@pytest.fixture
def runs(tmp_path) -> RunStore:
    return RunStore(tmp_path / ".amigo" / "state.db")


def dead_pid() -> int:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=lambda: None)
    p.start()
    p.join()
    return p.pid


def test_run_id_format():
    rid = new_run_id(3, "Lambda A100")
    m = ID_RE.match(rid)
    assert m and m.group(1) == "3" and m.group(2) == "lambda-a100"
    assert new_run_id(1, "local") != new_run_id(1, "local")  # 4 random hex digits


def test_create_get_update_round_trip(runs):
    run = Run(id=new_run_id(2, "vast"), stage=2, target="vast", estimate={"hours": 1.5, "usd": 0.6})
    runs.create(run)
    assert runs.get(run.id) == run

    done = runs.update(run.id, status="SUCCEEDED", ended="2026-11-26T11:00:00Z", tokens_per_s=812.5,
                       peak_vram_gib=5.4, usd_per_hour=0.4, cluster="amigo-s2",
                       artifacts={"adapter": "s3://b/p/manifests/runs/x/outputs.json"},
                       metrics={"train_loss": 1.23}, downloaded=True)

    assert done == runs.get(run.id)
    assert (done.status, done.tokens_per_s, done.downloaded, done.metrics) == ("SUCCEEDED", 812.5, True,
                                                                             {"train_loss": 1.23})
    assert done.estimate == {"hours": 1.5, "usd": 0.6} and done.started == run.started


def test_list_latest_active(runs):
    a = runs.create(Run(id="s1-local-a", stage=1, target="local", status="SUCCEEDED", started="2026-11-26T10:00:00Z"))
    b = runs.create(Run(id="s1-local-b", stage=1, target="local", status="SUCCEEDED", started="2026-11-26T12:00:00Z"))
    c = runs.create(Run(id="s1-vast-c", stage=1, target="vast", status="FAILED", started="2026-11-26T13:00:00Z"))
    d = runs.create(Run(id="s2-vast-d", stage=2, target="vast", status="RUNNING", started="2026-11-26T14:00:00Z"))

    assert [r.id for r in runs.list()] == [a.id, b.id, c.id, d.id]  # oldest first
    assert [r.id for r in runs.list(stage=1)] == [a.id, b.id, c.id]
    assert [r.id for r in runs.list(status="FAILED")] == [c.id]
    assert [r.id for r in runs.list(status=("FAILED", "RUNNING"))] == [c.id, d.id]
    assert runs.latest(1).id == b.id and runs.latest(1, status="FAILED").id == c.id
    assert runs.latest(1, status=None).id == c.id and runs.latest(3) is None
    assert [r.id for r in runs.active(2)] == [d.id] and runs.active(1) == []


@pytest.mark.badinput
def test_bad_ids_fields_statuses(runs):
    with pytest.raises(UserError, match="^unknown run id 'nope'$"):
        runs.get("nope")
    with pytest.raises(UserError, match="^unknown run id 'nope'$"):
        runs.update("nope", status="FAILED")
    runs.create(Run(id="r1", stage=1, target="local"))
    with pytest.raises(UserError, match="already exists"):
        runs.create(Run(id="r1", stage=1, target="local"))
    with pytest.raises(UserError, match="bad run status 'DONE'"):
        runs.update("r1", status="DONE")
    with pytest.raises(UserError, match="cannot update run field"):
        runs.update("r1", colour="red")
    assert runs.get("r1").status == "PENDING"  # nothing half-written


def test_wal_mode_and_schema_version(runs):
    db = sqlite3.connect(runs.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        cols = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    finally:
        db.close()
    assert set(cols) == {"id", "stage", "target", "cluster", "status", "reason", "started", "ended", "usd_per_hour",
                         "tokens_per_s", "peak_vram_gib", "estimate", "artifacts", "metrics", "pid", "downloaded",
                         "child_pid", "job_id"}

    # reopening an up-to-date file migrates nothing and keeps rows
    runs.claim_stage(1, Run(id="s1-local-20260101-000000-abcd", stage=1, target="local", status="SUCCEEDED"))
    before = runs.list()
    again = RunStore(runs.path)
    assert again.list() == before and [r.id for r in before] == ["s1-local-20260101-000000-abcd"]
    db = sqlite3.connect(runs.path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()


@pytest.mark.badinput
def test_newer_schema_is_refused(runs):
    db = sqlite3.connect(runs.path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="newer than this amigo-burst"):
        RunStore(runs.path)


def test_pid_alive_sees_through_zombies():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(None) and not pid_alive(0)
    ctx = mp.get_context("fork")
    p = ctx.Process(target=os._exit, args=(0,))
    p.start()
    deadline = time.monotonic() + 10
    while pid_alive(p.pid) and time.monotonic() < deadline:  # exited but not yet reaped: a zombie
        time.sleep(0.01)
    assert not pid_alive(p.pid)
    p.join()


def test_claim_stage_refuses_live_and_ignores_dead(runs):
    first = runs.claim_stage(2, Run(id="s2-a", stage=2, target="vast"))
    assert first.pid == os.getpid() and runs.get("s2-a").status == "PENDING"

    with pytest.raises(UserError, match="stage 2 is already pending as run s2-a"):
        runs.claim_stage(2, Run(id="s2-b", stage=2, target="vast"))
    runs.claim_stage(3, Run(id="s3-a", stage=3, target="vast"))  # other stages are independent

    runs.update("s2-a", pid=dead_pid())  # its controller crashed
    runs.claim_stage(2, Run(id="s2-c", stage=2, target="vast"))
    runs.update("s2-c", status="SUCCEEDED")
    runs.claim_stage(2, Run(id="s2-d", stage=2, target="vast"))  # finished runs never block
    assert {r.id for r in runs.active(2)} == {"s2-a", "s2-d"}


def _claimer(db_path, run_id, start, release, results):
    from amigo_burst.state.records import Run, RunStore

    store = RunStore(db_path)
    start.wait()
    try:
        store.claim_stage(4, Run(id=run_id, stage=4, target="vast"))
        results.put((run_id, "claimed"))
    except UserError as e:
        results.put((run_id, str(e)))
    release.wait(30)  # stay alive: the winner's pid must look alive to the loser


def test_two_processes_claiming_one_stage_only_one_wins(tmp_path):
    ctx = mp.get_context("fork")
    for round_ in range(5):
        db_path = tmp_path / f"state-{round_}.db"
        RunStore(db_path)
        start, release, results = ctx.Event(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_claimer, args=(db_path, f"s4-p{i}", start, release, results)) for i in range(2)]
        for p in procs:
            p.start()
        start.set()
        outcome = dict(results.get(timeout=30) for _ in procs)
        release.set()
        for p in procs:
            p.join(30)

        winners = [rid for rid, r in outcome.items() if r == "claimed"]
        assert len(winners) == 1, outcome
        loser = next(rid for rid in outcome if rid not in winners)
        assert outcome[loser].startswith(f"stage 4 is already pending as run {winners[0]}")
        assert [r.id for r in RunStore(db_path).list(stage=4)] == winners


def _writer(db_path, run_id, seconds, ready):
    from amigo_burst.state.records import Run, RunStore

    store = RunStore(db_path)
    store.create(Run(id=run_id, stage=1, target="local", status="RUNNING"))
    ready.set()
    step, t_end = 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        step += 1
        store.update(run_id, metrics={"step": step}, tokens_per_s=float(step))
    store.update(run_id, status="SUCCEEDED", metrics={"step": step, "final": True})


def test_status_reads_and_writes_while_another_process_writes(tmp_path):
    db_path = tmp_path / "state.db"
    runs = RunStore(db_path)
    runs.create(Run(id="mine", stage=2, target="local"))
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    writer = ctx.Process(target=_writer, args=(db_path, "theirs", 1.5, ready))
    writer.start()
    assert ready.wait(30)

    steps, reads, my_writes = [], 0, 0
    deadline = time.monotonic() + 60
    while (writer.is_alive() or not runs.get("theirs").metrics.get("final")) and time.monotonic() < deadline:
        steps.append(runs.get("theirs").metrics.get("step", 0))
        assert {r.id for r in runs.list()} == {"mine", "theirs"}
        runs.update("mine", tokens_per_s=float(my_writes))  # a second writer at the same time
        reads, my_writes = reads + 2, my_writes + 1
    writer.join(30)

    assert writer.exitcode == 0
    assert steps == sorted(steps) and steps[-1] > steps[0]  # saw progress, never went back
    final = runs.get("theirs")
    assert final.status == "SUCCEEDED" and final.metrics["step"] >= steps[-1]
    assert runs.get("mine").tokens_per_s == float(my_writes - 1)
    print(f"{reads} reads and {my_writes} writes alongside {final.metrics['step']} writes from another process")
