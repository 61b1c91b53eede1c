"""Run records as the commands show them (issue 15, items 3, 6, 12 and 1's "never started" runs).

Real SQLite files with records written through RunStore; the CLI in-process (CliRunner) at a pinned
width. The read-only case mounts the state folder read-only (we run as root in CI) or, as a normal
user, takes its write permission away.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.state.records import Run, RunStore
from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "presets" / "demo.toml").read_text()
IDS = {
    "a": "s1-local-20261126-100000-aa01",
    "b": "s2-lambda-a100-20261126-110000-bb02",
    "c": "s2-lambda-a100-20261126-120000-cc03",
    "d": "s3-vast-20261126-130000-dd04",
}
LONG_REASON = "sky.exceptions.ResourcesUnavailableError: Failed to provision all possible launchable resources " * 3


@pytest.fixture
def proj(tmp_path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "amigo.toml").write_text(DEMO.replace('"../train/samples/', f'"{REPO}/train/samples/'))
    runs = RunStore(p / ".amigo" / "state.db")
    runs.create(Run(id=IDS["a"], stage=1, target="local-rtx4050", status="SUCCEEDED", started="2026-11-26T10:00:00Z",
                    child_pid=1, metrics={"steps": 8}, tokens_per_s=4198.0, usd_per_hour=0.0195))
    runs.create(Run(id=IDS["b"], stage=2, target="lambda-a100", status="FAILED", started="2026-11-26T11:00:00Z",
                    reason="launch: no machine available"))  # never started: no job, no process, no metrics
    runs.create(Run(id=IDS["c"], stage=2, target="lambda-a100", status="SUCCEEDED", started="2026-11-26T12:00:00Z",
                    job_id=3, artifacts={"from_run": IDS["a"]}, metrics={"steps": 8}))
    runs.create(Run(id=IDS["d"], stage=3, target="vast", status="FAILED", started="2026-11-26T13:00:00Z",
                    job_id=4, reason=LONG_REASON))
    return p


def cli(proj: Path, *args: str, width: int = 80):
    return invoke("--config", str(proj / "amigo.toml"), *args, env={"COLUMNS": str(width)})


# --- run ids by unique prefix (item 6) --------------------------------------------------------------
def test_a_unique_prefix_names_a_run_everywhere(proj):
    runs = RunStore(proj / ".amigo" / "state.db")
    assert runs.get("s3").id == IDS["d"] and runs.get(IDS["a"]).id == IDS["a"]
    with pytest.raises(UserError, match=r"run id 's2-lambda' is ambiguous: 2 runs start with it"):
        runs.get("s2-lambda")
    with pytest.raises(UserError, match="unknown run id 's9'"):
        runs.get("s9")
    r = cli(proj, "status", "s3")
    assert r.exit_code == 0 and IDS["d"] in r.output
    r = cli(proj, "logs", "s1-local")
    assert r.exit_code == 0 and f"{IDS['a']}: SUCCEEDED" in r.output, r.output
    r = cli(proj, "download", "s2-lambda")
    assert r.exit_code == 2 and "ambiguous" in r.output and len(r.output.strip().splitlines()) == 1


# --- status: newest first, readable at 80 columns, --json (items 6 and 1) ------------------------------
def test_status_at_80_columns_shows_ids_targets_and_states_whole_newest_first(proj):
    r = cli(proj, "status", width=80)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
    rows = [ln for ln in lines if ln.startswith("s")]
    assert [ln.split()[0] for ln in rows] == [IDS["d"], IDS["c"], IDS["a"]], "newest first"
    for run_id, target, status in ((IDS["d"], "vast", "FAILED"), (IDS["c"], "lambda-a100", "SUCCEEDED"),
                                   (IDS["a"], "local-rtx4050", "SUCCEEDED")):
        row = next(ln for ln in rows if ln.startswith(run_id))
        assert f" {target} " in row and f" {status} " in row + " ", row
    reason = lines[lines.index(next(ln for ln in rows if ln.startswith(IDS["d"]))) + 1]
    assert "↳ sky.exceptions.ResourcesUnavailableError" in reason and reason.endswith("…")
    assert "…" not in "".join(rows), "no column cut"


def test_launches_that_never_started_are_hidden_unless_all(proj):
    r = cli(proj, "status", width=120)
    assert IDS["b"] not in r.output and "1 failed launch(es) that never started are not shown" in r.output
    r = cli(proj, "status", "--all", width=120)
    assert IDS["b"] in r.output and "not shown" not in r.output


def test_status_json(proj):
    r = cli(proj, "status", "--json", "--all")
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output)
    assert [x["id"] for x in runs] == [IDS["d"], IDS["c"], IDS["b"], IDS["a"]]
    assert set(runs[0]) == {"id", "stage", "target", "status", "reason", "started", "ended", "cluster", "from_run",
                            "usd_per_hour", "tokens_per_s", "peak_vram_gib", "downloaded", "never_started", "probe"}
    c = next(x for x in runs if x["id"] == IDS["c"])
    assert c["from_run"] == IDS["a"] and c["status"] == "SUCCEEDED" and c["never_started"] is False
    assert next(x for x in runs if x["id"] == IDS["b"])["never_started"] is True
    one = json.loads(cli(proj, "status", "s1", "--json").output)
    assert one["id"] == IDS["a"] and one["tokens_per_s"] == 4198.0


# --- lineage (item 3) ----------------------------------------------------------------------------------
def _run(rid: str, stage: int, parent: str | None = None, status: str = "SUCCEEDED") -> Run:
    return Run(id=rid, stage=stage, target="local", status=status,
               artifacts={"from_run": parent} if parent else {})


@pytest.mark.parametrize("records, expect", [
    ([_run("1a", 1), _run("2a", 2, "1a"), _run("3a", 3, "2a")], {1: "1a", 2: "2a", 3: "3a"}),
    # stage 4 built on stage 1 -> 3 (it skipped 2): not done
    ([_run("1a", 1), _run("2a", 2, "1a"), _run("3a", 3, "2a"), _run("4x", 4, "3b")], {1: "1a", 2: "2a", 3: "3a"}),
    # stage 5 built on an older stage 4: not done
    ([_run("1a", 1), _run("2a", 2, "1a"), _run("3a", 3, "2a"), _run("4a", 4, "3a"), _run("5a", 5, "4a"),
      _run("4b", 4, "3a")], {1: "1a", 2: "2a", 3: "3a", 4: "4b"}),
    # a newer stage 1 makes everything after it stale
    ([_run("1a", 1), _run("2a", 2, "1a"), _run("1b", 1)], {1: "1b"}),
    # failed runs never count; a --from-base stage 2 is not built on stage 1
    ([_run("1a", 1), _run("2a", 2, "1a", "FAILED"), _run("2b", 2)], {1: "1a"}),
    ([_run("2a", 2, "1z")], {}),
])
def test_a_stage_is_done_only_when_it_continues_the_done_stage_before_it(records, expect):
    from amigo_burst.lifecycle.pipeline import done_runs

    assert {s: r.id for s, r in done_runs(records).items()} == expect


@pytest.mark.badinput
def test_from_must_name_a_run_of_the_stage_before(proj):
    r = cli(proj, "launch", "--stage", "3", "--from", "s1")
    assert r.exit_code == 2, r.output
    assert f"--from {IDS['a']}: that is a stage 1 run; stage 3 continues from a stage 2 run" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (proj / ".amigo" / "work").exists() and not (proj / ".amigo" / "prepared").exists()


# --- a read-only .amigo/ (item 12) ---------------------------------------------------------------------
@pytest.fixture
def read_only(proj):
    """proj/.amigo read-only: a read-only bind mount as root, else no write permission."""
    state = proj / ".amigo"
    for ext in ("-wal", "-shm"):  # as after a clean shutdown: only state.db
        assert not (state / f"state.db{ext}").exists()
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        yield proj
        subprocess.run(["umount", str(state)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in (state, state / "state.db")}
        for p, m in modes.items():
            p.chmod(m & ~0o222)
        yield proj
        for p, m in modes.items():
            p.chmod(m)


def test_read_only_state_still_answers_status_report_and_logs(read_only):
    assert not os.access(read_only / ".amigo", os.W_OK)
    r = cli(read_only, "status", width=120)
    assert r.exit_code == 0 and IDS["d"] in r.output and "read-only" in r.output, r.output
    r = cli(read_only, "status", "--json")
    assert r.exit_code == 0 and len(json.loads(r.output)) == 3
    r = cli(read_only, "report", "--format", "json")
    assert r.exit_code == 0 and IDS["a"] in r.output, r.output
    r = cli(read_only, "logs", "s1")
    assert r.exit_code == 0 and "SUCCEEDED" in r.output, r.output
    r = cli(read_only, "launch", "--stage", "1")  # a command that writes: refused in one line, saying why
    assert r.exit_code == 2 and "read-only" in r.output and len(r.output.strip().splitlines()) == 1, r.output


# --- a worker that died: the cause it left is kept (item 4) --------------------------------------------
def test_a_dead_workers_record_keeps_the_cause_it_left(proj):
    """A RUNNING record whose worker is gone: `status` records FAILED "worker process died" with the last
    error line of that worker's own log (its stderr), not without a cause."""
    import multiprocessing as mp

    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.reconcile import reconcile_run

    p = mp.get_context("fork").Process(target=lambda: None)
    p.start()
    p.join()  # a pid that is no longer alive
    runs = RunStore(proj / ".amigo" / "state.db")
    rid = "s4-local-20261126-140000-ee05"
    runs.create(Run(id=rid, stage=4, target="local-rtx4050", status="RUNNING", pid=p.pid, child_pid=p.pid))
    d = proj / ".amigo" / "runs" / rid
    d.mkdir(parents=True)
    (d / "worker.log").write_text("Traceback (most recent call last):\n  File \"worker.py\", line 1\n"
                                  "sqlite3.OperationalError: database or disk is full\n")
    end = reconcile_run(load_config(proj / "amigo.toml"), runs, runs.get(rid))
    assert end.status == "FAILED", end
    assert end.reason.startswith("worker process died (sqlite3.OperationalError: database or disk is full);"), end.reason
    assert "launch --resume" in end.reason
