"""The lifecycle's decisions as tables, without processes: how a target's exit becomes a run status,
what reconcile does with a record whose worker is gone, and which budget applies to a stage."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config
from amigo_burst.lifecycle.reconcile import Decision, decide
from amigo_burst.lifecycle.worker import final_status
from amigo_burst.state.records import Run
from train.schema import EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_STOPPED

REPO = Path(__file__).resolve().parents[1]
RESUME = "`amigo-burst launch --stage 2 --resume` continues it"


@pytest.mark.parametrize("rc, has_adapter, recorded, expect", [
    (0, True, "RUNNING", ("SUCCEEDED", "")),
    (0, False, "RUNNING", ("FAILED", "the last error")),  # exit 0 but no adapter: not a success
    (EXIT_BUDGET, True, "RUNNING", ("STOPPED", "budget")),
    (-signal.SIGTERM, False, "RUNNING", ("STOPPED", f"stopped by user: {RESUME} from its last checkpoint")),
    (128 + signal.SIGTERM, False, "RUNNING", ("STOPPED", f"stopped by user: {RESUME} from its last checkpoint")),
    (130, False, "RUNNING", ("STOPPED", f"stopped by user: {RESUME} from its last checkpoint")),
    # the entrypoint caught SIGTERM and saved the step: it says so, and how to continue
    (EXIT_STOPPED, True, "RUNNING", ("STOPPED", f"stopped at step 7 of 20, checkpoint saved: {RESUME}")),
    (EXIT_STOPPED, True, "STOPPED", ("STOPPED", "stopped by user (amigo-burst down) at step 7 of 20, "
                                                f"checkpoint saved: {RESUME}")),
    (EXIT_BAD_INPUT, False, "RUNNING", ("FAILED", "the last error")),
    (1, False, "STOPPED", ("STOPPED", "stopped by user (amigo-burst down)")),  # down's word stands
    (0, True, "STOPPED", ("SUCCEEDED", "")),  # finished before the stop landed: it succeeded
])
def test_exit_code_to_run_status(rc, has_adapter, recorded, expect):
    # metrics.json exists only where the entrypoint got to write it (a signal that killed it outright: none)
    m = {"steps": 7, "total_steps": 20, "exit_reason": "stopped"} if rc == EXIT_STOPPED else {}
    down = "stopped by user (amigo-burst down)" if recorded == "STOPPED" else None
    assert final_status(rc, has_adapter=has_adapter, last_error="the last error", recorded=recorded,
                        recorded_reason=down, stage=2, metrics=m) == expect


@pytest.mark.parametrize("rc, metrics, expect", [
    (EXIT_STOPPED, {"steps": 7, "total_steps": 20, "exit_reason": "stopped"},
     ("STOPPED", f"stopped by user (amigo-burst down) at step 7 of 20, checkpoint saved: {RESUME}")),
    (1, {}, ("STOPPED", "stopped by user (amigo-burst down)")),  # a spot job cancelled: CANCELLED, no metrics
    (0, {}, ("SUCCEEDED", "")),
])
def test_a_cloud_run_down_marked_while_it_ran_ends_stopped(rc, metrics, expect):
    """`down RUN` of a cloud run leaves the record RUNNING (its worker brings the stop checkpoint back and
    tears down) with down's reason: the worker's ending keeps that word, as for a run marked STOPPED."""
    assert final_status(rc, has_adapter=rc == 0, last_error="the last error", recorded="RUNNING",
                        recorded_reason="stopped by user (amigo-burst down)", stage=2, metrics=metrics) == expect


@pytest.mark.parametrize("rc", [EXIT_STOPPED, -signal.SIGTERM, 128 + signal.SIGTERM])
def test_a_preempted_run_says_preempted_and_how_to_continue(rc):
    """A spot machine's SIGTERM: the entrypoint saved and wrote exit_reason "preempted" (also when the
    shell around it died of the same signal, so the exit code is the signal's)."""
    m = {"steps": 3, "total_steps": 9, "exit_reason": "preempted"}
    assert final_status(rc, has_adapter=True, last_error="", recorded="RUNNING", recorded_reason=None,
                        stage=4, metrics=m) == \
        ("STOPPED", "preempted at step 3 of 9, checkpoint saved: `amigo-burst launch --stage 4 --resume` continues it")


def test_a_failure_without_a_log_line_names_the_exit_code():
    assert final_status(7, has_adapter=False, last_error="", recorded="RUNNING", recorded_reason=None) == \
        ("FAILED", "exit code 7")


def run(status: str, cluster: str | None = None, job_id: int | None = None) -> Run:
    return Run(id="s1-local-20261202-000000-abcd", stage=1, target="local", status=status, cluster=cluster,
               job_id=job_id)


@pytest.mark.parametrize("record, worker, child, job, expect", [
    (run("SUCCEEDED"), False, False, False, Decision.KEEP),
    (run("FAILED"), False, False, True, Decision.KEEP),
    (run("RUNNING"), True, False, False, Decision.KEEP),
    (run("PENDING"), True, False, False, Decision.KEEP),
    (run("PENDING"), False, False, False, Decision.FAIL_NOT_STARTED),
    (run("RUNNING"), False, True, False, Decision.KEEP),  # local training outlived its worker
    (run("RUNNING", "amigo-x", 3), False, False, True, Decision.REATTACH),
    (run("RUNNING", "amigo-x", 3), False, False, False, Decision.FAIL_WORKER_DIED),
    (run("RUNNING", "amigo-x", None), False, False, True, Decision.FAIL_WORKER_DIED),  # no job to follow
    (run("RUNNING"), False, False, False, Decision.FAIL_WORKER_DIED),
])
def test_reconcile_decisions(record, worker, child, job, expect):
    assert decide(record, worker_alive=worker, child_alive=child, job_alive=job) is expect


@pytest.fixture
def cfg(tmp_path):
    text = (REPO / "amigo.toml").read_text()
    (tmp_path / "amigo.toml").write_text(text)
    return load_config(tmp_path / "amigo.toml")


def test_budget_command_line_wins_over_the_stage(cfg):
    assert cfg.stage(2).max_usd == 25
    assert planner.budget_for(cfg, 2) == planner.Budget(25, None, "amigo.toml")
    assert planner.budget_for(cfg, 2, max_usd=7.5) == planner.Budget(7.5, None, "command line")
    assert planner.budget_for(cfg, 1) == planner.Budget(None, None, "none")  # stage 1 has no max_usd


def test_budget_rule_reaches_the_plan(cfg):
    """plan --budget-usd 1: every stage is judged against $1, not its own max_usd."""
    own = {s.number: s.max_usd for s in planner.stage_inputs(cfg, [2, 3])}
    cli = {s.number: s.max_usd for s in planner.stage_inputs(cfg, [2, 3], max_usd=1.0)}
    assert own == {2: 25, 3: 15} and cli == {2: 1.0, 3: 1.0}


@pytest.mark.parametrize("usd, hours, rate, expect_s", [
    (10.0, None, 0.40, int(10 / 0.40 * 3600 * 0.9)),  # $10 at $0.40/h: 25 h of machine time, 90% trains
    (1.39, None, 1.39, int(3600 * 0.9)),  # one hour of an A100-80GB
    (0.001, None, 1.0, 60),  # never below a minute: the stop itself needs a step and a save
    (None, 2.0, 1.0, 7200),
    (10.0, 1.0, 0.40, 3600),  # the hours budget caps the dollars one
    (None, None, 1.0, 0),  # no budget: no limit
    (10.0, None, None, 0),  # no price (own cluster): dollars cannot become seconds
])
def test_dollars_to_runtime_seconds(usd, hours, rate, expect_s):
    assert planner.runtime_limit_s(planner.Budget(usd, hours), rate) == expect_s
