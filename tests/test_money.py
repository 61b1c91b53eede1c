"""Money: the one budget rule (the cap on the machine, the trainer's share, the worst case, what an
estimate may cost), the ledger of every attempt, a resume's and a project's budget, the pipeline's
re-plan on the money left.

Pure functions are tested as tables at known prices. The launches run in this process (typer's
CliRunner) on the local target with the real dataset preparation, estimate, state DB and store; the
one stand-in is where the worker process would start (`lifecycle.launch.spawn_worker`, as in
tests/test_budget.py): no training runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from amigo_burst import planner
from amigo_burst.config import load_config
from amigo_burst.errors import UserError
from amigo_burst.planning import budget as rule
from amigo_burst.planning.ledger import (
    Money,
    billed_s,
    committed_usd,
    money_line,
    run_spent,
    spent_usd,
    totals,
)
from amigo_burst.planning.matrix import Cell, within
from amigo_burst.planning.replan import need, replan
from amigo_burst.state.ledger import Attempt, Ledger
from amigo_burst.state.records import Run, RunStore, open_records
from tests.helpers import make_project
from tests.test_budget import launch

OVER = rule.KILL_GRACE_S + rule.AUTODOWN_IDLE_MIN * 60  # 720 s billed after the cap


# --- the rule ---------------------------------------------------------------------------------------
def test_the_cap_and_the_worst_case_at_known_prices():
    """$10 at $0.40/h buys 25 h = 90,000 s; the cap leaves the 2 min grace and 10 min autodown: 89,280 s;
    the worst case (nobody ever comes back) is the budget itself; an estimate may take 90% of the cap."""
    lim = rule.limits(10.0, None, 0.40, cloud=True)
    assert (rule.KILL_GRACE_S, rule.AUTODOWN_IDLE_MIN, rule.ESTIMATE_SHARE) == (120, 10, 0.9)
    assert lim.cap_s == 90_000 - OVER == 89_280 and lim.source == "budget"
    assert lim.worst_usd == pytest.approx(10.0)
    assert lim.allow_s == int(89_280 * 0.9) == 80_352 and lim.train_s == 81_000
    assert lim.reserve_s == rule.MAX_RESERVE_S  # 10% of 24.8 h is more than the 30 min kept for the end
    assert lim.allows(80_352 / 3600) and not lim.allows(80_353 / 3600)


def test_no_dollar_budget_on_a_priced_cloud_caps_from_the_estimate():
    """Stage 1 of the shipped plan has no max_usd: 2 x its 10 h estimate + 0.5 h, never uncapped."""
    lim = rule.limits(None, None, 0.50, cloud=True, est_hours=10.0)
    assert lim.source == "estimate" and lim.cap_s == int(20.5 * 3600) and lim.allow_s == 0
    assert lim.worst_usd == pytest.approx((20.5 * 3600 + OVER) / 3600 * 0.50)


@pytest.mark.parametrize("usd, hours, rate, cloud, cap, train", [
    (None, 0.025, None, True, 90, 90),  # a deadline alone (own cluster, no price): capped at it
    (10.0, 1.0, 0.40, True, 3600, 3600),  # the deadline is the tighter limit
    (None, None, None, True, 0, 0),  # no price, no budget, no estimate: nothing to cap
    (10.0, None, 0.40, False, 0, 81_000),  # the laptop: nothing rented, no cap on a machine; the trainer stops
])
def test_hours_and_the_laptop(usd, hours, rate, cloud, cap, train):
    lim = rule.limits(usd, hours, rate, cloud=cloud)
    assert (lim.cap_s, lim.train_s) == (cap, train)


def test_launch_says_the_worst_case_and_what_a_run_without_a_bucket_risks():
    from amigo_burst.lifecycle import money
    from amigo_burst.targets import Target

    line = money.worst_case_line(rule.limits(10.0, None, 0.40, cloud=True), planner.Budget(10.0))
    assert line.startswith("at most $10.00 if this laptop disappears: the job is capped on the machine at 24.8 h "
                           "(the $10.00 budget), then 2 min to save and 10 min idle before autodown, at $0.40/h"), line
    assert money.worst_case_line(rule.limits(10.0, None, 0.40, cloud=False), planner.Budget(10.0)) is None
    vast = Target(name="vast", path=Path("sky/vast.yaml"), infra="vast", accelerator="RTX4090", gpu_count=1, config={})
    risk = money.no_bucket_line("file://.amigo/store", vast)
    assert "checkpoints come back to this laptop while it follows the run" in risk and 's3://' in risk
    assert money.no_bucket_line("s3://b/p", vast) is None


def cell(usd: float, rate: float, local: bool = False, target: str = "vast", fits: bool = True) -> Cell:
    """A plan cell at RATE $/h (its estimate reduced to what the budget rule reads: the $/h)."""
    return Cell(2, target, local, fits, "qlora", 4, 4, usd / rate, usd, 10.0, 24.0, SimpleNamespace(usd_per_hour=rate))


def test_one_rule_for_the_plan_and_the_launch():
    """An estimate at 95% of the budget: within the budget's nominal dollars, but the job could not finish
    inside the cap the launch would give it. The plan (matrix.within) and the launch (preflight's
    check_estimate) refuse it alike; at the rule's own boundary both accept."""
    from amigo_burst.lifecycle.preflight import check_estimate
    from amigo_burst.targets import Target

    budget, rate = 10.0, 0.40
    afford = rule.affordable_usd(budget, rate, True)
    assert afford == pytest.approx((10.0 - OVER / 3600 * 0.40) * 0.9)
    target = Target(name="vast", path=Path("sky/vast.yaml"), infra="vast", accelerator="RTX4090", gpu_count=1,
                    config={})
    for usd, ok in ((9.5, False), (afford - 0.01, True)):
        c = cell(usd, rate)
        assert (within(c, budget, None) == "") is ok
        assert rule.limits(budget, None, rate, cloud=True).allows(c.hours) is ok
        if ok:
            check_estimate(2, target, c, planner.Budget(budget), force=False)
        else:
            with pytest.raises(UserError, match=r"^estimated \$9\.50 .* exceeds the \$10\.00 budget"):
                check_estimate(2, target, c, planner.Budget(budget), force=False)


# --- the ledger -------------------------------------------------------------------------------------
T0 = 1_000_000.0


def att(run="r1", started=T0, ended=None, rate=2.0, deadline=None, worst=None, stage=2):
    return Attempt(run_id=run, stage=stage, started=started, ended=ended, usd_per_hour=rate, deadline=deadline,
                   overhead_s=OVER if deadline else 0, worst_usd=worst)


def test_ledger_sums():
    done = att(ended=T0 + 1800)  # half an hour at $2/h
    resumed = att(started=T0 + 7200, ended=T0 + 9000)  # the same run's second attempt
    # nobody came back: it billed to its deadline + grace + autodown, not to when the laptop noticed
    lost = att(run="r2", ended=T0 + 100_000, deadline=T0 + 3600)
    running = att(run="r3", started=T0, deadline=T0 + 3600, worst=(3600 + OVER) / 3600 * 2.0)
    now = T0 + 1800
    assert spent_usd(done, now) == pytest.approx(1.0) and spent_usd(resumed, now) == pytest.approx(1.0)
    assert billed_s(lost, now) == 3600 + OVER and spent_usd(lost, now) == pytest.approx(2.4)
    assert spent_usd(running, now) == pytest.approx(1.0)
    assert committed_usd(running, now) == pytest.approx(2.4 - 1.0) and committed_usd(done, now) == 0
    m = totals([done, resumed, lost, running], now, max_usd=10.0)
    assert (m.spent, m.committed, m.left) == pytest.approx((5.4, 1.4, 10.0 - 6.8))
    assert run_spent([done, resumed, lost, running], "r1", now) == pytest.approx(2.0)
    assert money_line(m) == "$5.40 spent, $1.40 committed (running, worst case), $3.20 left of the project's $10.00"
    assert Money(1.0, 0.0, None).left is None


def test_a_resume_keeps_the_earlier_attempts_in_the_ledger(tmp_path):
    """--resume replaces the run's row (claim_stage replace=True); its first attempt stays counted."""
    runs = RunStore(tmp_path / "state.db")
    runs.claim_stage(2, Run(id="r1", stage=2, target="vast", status="PENDING", pid=1),
                     attempt=att(started=T0, deadline=T0 + 3600, worst=2.4))
    assert Ledger(runs).attempts()[0].ended is None and totals(Ledger(runs).attempts(), T0 + 60).committed > 0
    Ledger(runs).close("r1", ended=T0 + 1800)
    runs.update("r1", status="STOPPED")
    runs.claim_stage(2, Run(id="r1", stage=2, target="vast", status="PENDING", pid=1), replace=True,
                     attempt=att(started=T0 + 7200))
    rows = Ledger(runs).attempts("r1")
    assert [(a.attempt, a.ended) for a in rows] == [(1, T0 + 1800), (2, None)]
    assert len(runs.list()) == 1


def test_a_v2_state_db_gets_its_runs_as_first_attempts(tmp_path):
    """The schema upgrade: runs recorded before the ledger are counted (ended ones by their hours)."""
    from amigo_burst.state.migrations import MIGRATIONS
    from amigo_burst.state.records import _statements

    db = tmp_path / "state.db"
    with sqlite3.connect(db) as c:
        for v in (0, 1):
            for stmt in _statements(MIGRATIONS[v]):
                c.execute(stmt)
        c.execute("PRAGMA user_version = 2")
        c.execute("INSERT INTO runs (id, stage, target, status, started, ended, usd_per_hour) VALUES "
                  "('old', 2, 'vast', 'SUCCEEDED', '2026-11-01T10:00:00Z', '2026-11-01T12:00:00Z', 0.5)")
    (a,) = Ledger(RunStore(db)).attempts()
    assert (a.run_id, a.attempt, a.ended - a.started, a.usd_per_hour) == ("old", 1, pytest.approx(7200), 0.5)
    assert totals([a], time.time()).spent == pytest.approx(1.0)


# --- what an attempt may spend ----------------------------------------------------------------------
def project(tmp_path: Path, tiny_model: Path | None = None, *, project_usd: float | None = None,
            stage_usd: float | None = None) -> Path:
    root = make_project(tmp_path / "p", tiny_model or Path("/nonexistent-model"))
    toml = root / "amigo.toml"
    text = toml.read_text()
    if project_usd is not None:
        text = text.replace('name = "amigo-demo"\n', f'name = "amigo-demo"\nmax_usd = {project_usd}\n', 1)
    if stage_usd is not None:
        text = text.replace("[stages.1]\n", f"[stages.1]\nmax_usd = {stage_usd}\n", 1)
    toml.write_text(text)
    return toml


def test_a_resume_gets_what_is_left_of_the_stage_and_every_attempt_at_most_the_project(tmp_path):
    cfg = load_config(project(tmp_path, project_usd=5.0, stage_usd=3.0))
    runs = open_records(cfg.root)
    now = time.time()
    runs.claim_stage(1, Run(id="r1", stage=1, target="local", status="PENDING", pid=1),
                     attempt=att(stage=1, started=now - 3600, ended=now - 1800, rate=2.0))  # $1 spent
    runs.update("r1", status="STOPPED")
    assert planner.budget_left(cfg, 1, runs, now=now).usd == pytest.approx(3.0)  # a new run: the stage's own
    resumed = planner.budget_left(cfg, 1, runs, resume_id="r1", now=now)
    assert resumed.usd == pytest.approx(2.0) and "less $1.00 spent by earlier attempts of r1" in resumed.note
    # another stage spent most of the project's money: at most what is left of $5
    runs.claim_stage(2, Run(id="r2", stage=2, target="local", status="PENDING", pid=1),
                     attempt=att(run="r2", started=now - 7200, ended=now - 7200 + 2.7 * 3600, rate=1.0))
    b = planner.budget_left(cfg, 1, runs, now=now)
    assert b.usd == pytest.approx(5.0 - 1.0 - 2.7) and b.source == "project"
    assert "what is left of the project's $5.00" in b.note
    assert planner.budget_left(cfg, 1, runs, share_usd=0.5, now=now).usd == pytest.approx(0.5)




def test_launch_refuses_a_stage_that_would_break_the_projects_money(tmp_path, tiny_model, workers):
    """The demo's stage 1 costs a fraction of a cent on the laptop; the project's $1 is all but spent by an
    earlier run: refused in one line naming the project's money, nothing launched or recorded."""
    config = project(tmp_path, tiny_model, project_usd=1.0)
    runs = open_records(config.parent)
    now = time.time()
    runs.claim_stage(2, Run(id="earlier", stage=2, target="vast", status="PENDING", pid=1),
                     attempt=att(run="earlier", started=now - 3600, ended=now - 3600 + 1800 * 1.99999999, rate=1.0))
    runs.update("earlier", status="SUCCEEDED")
    r = launch(config)
    err = r.stderr.strip()
    assert r.exit_code == 2 and len(err.splitlines()) == 1, (r.exit_code, r.stdout[-2000:], err)
    assert "project's $1.00" in err and "[project] max_usd" in err and "--force" in err, err
    assert workers == [] and [x.id for x in runs.list()] == ["earlier"]
    assert len(Ledger(runs).attempts()) == 1


def test_launch_opens_its_attempt_in_the_ledger_with_the_limits(tmp_path, tiny_model, workers):
    config = project(tmp_path, tiny_model, project_usd=1.0)
    r = launch(config)
    assert r.exit_code == 0, (r.stdout[-3000:], r.stderr[-2000:])
    (run_id,) = workers
    (a,) = Ledger(open_records(config.parent)).attempts(run_id)
    assert a.ended is None and a.usd_per_hour == pytest.approx(65 / 1000 * 0.30)
    assert a.deadline is None and a.worst_usd is None  # the laptop: nothing rented, nothing capped
    plan = json.loads((config.parent / ".amigo" / "runs" / run_id / "launch.json").read_text())
    assert plan["envs"]["AMIGO_DEADLINE"] == "0"


# --- the pipeline's re-plan --------------------------------------------------------------------------
def test_replan_keeps_the_plan_when_it_fits_else_the_cheapest_that_fits():
    fast2, cheap2 = cell(8.0, 2.0), cell(3.0, 0.3)
    fast3, cheap3 = cell(6.0, 2.0), cell(2.0, 0.3)
    cands = {2: [fast2, cheap2], 3: [fast3, cheap3, cell(0.5, 0.1, fits=False)]}
    chosen = {2: fast2, 3: fast3}
    roomy = replan(cands, chosen, left_usd=100.0)
    assert roomy.cells == chosen and roomy.changed == () and roomy.fits
    tight = replan(cands, chosen, left_usd=need(cheap2) + need(cheap3) + 0.01)
    assert tight.cells == {2: cheap2, 3: cheap3} and tight.changed == (2, 3) and tight.fits
    broke = replan(cands, chosen, left_usd=need(cheap2) + need(cheap3) - 0.01)
    assert not broke.fits and broke.cells == {} and broke.need_usd == pytest.approx(need(cheap2) + need(cheap3))
    assert need(cheap2) == pytest.approx(3.0 / 0.9 + OVER / 3600 * 0.3)  # what its launch would accept
    # a stage no machine fits is left to its launch (which refuses it with the reason), not priced at all
    alone = replan({**cands, 4: [cell(1.0, 0.1, fits=False)]}, {**chosen, 4: None}, left_usd=100.0)
    assert alone.fits and set(alone.cells) == {2, 3}


def test_pipeline_refuses_stages_the_projects_money_cannot_pay_for(tmp_path, tiny_model, workers):
    """Before any stage starts: the stages left need more than is left of [project] max_usd even on the
    cheapest machines that fit -> one line, exit 2, nothing launched."""
    from typer.testing import CliRunner

    from amigo_burst.cli.app import app

    config = project(tmp_path, tiny_model, project_usd=1e-7)
    r = CliRunner().invoke(app, ["--config", str(config), "pipeline", "--plan", "local", "--stages", "1-2"],
                           env={"COLUMNS": "200", "NO_COLOR": "1"})
    err = r.stderr.strip()
    assert r.exit_code == 2 and len(err.splitlines()) == 1, (r.exit_code, r.stdout[-2000:], err)
    assert err.startswith("error: stages 1, 2 need at least $") and "left of the project's" in err, err
    assert workers == [] and open_records(config.parent).list() == []


def test_status_shows_the_money_and_a_spot_runs_recoveries(tmp_path):
    """`status`: the ledger's spent / committed / left of the project's max_usd above the runs, and how
    often SkyPilot recovered a spot run (the run list's note under it)."""
    from typer.testing import CliRunner

    from amigo_burst.cli.app import app

    config = project(tmp_path, project_usd=10.0)
    runs = open_records(config.parent)
    now = time.time()
    runs.claim_stage(2, Run(id="s2-vast-20261101-100000-aaaa", stage=2, target="vast", status="PENDING", pid=1,
                            artifacts={"spot": True, "recoveries": 2}),
                     attempt=att(run="s2-vast-20261101-100000-aaaa", started=now - 3600, ended=now - 1800, rate=2.0))
    runs.update("s2-vast-20261101-100000-aaaa", status="SUCCEEDED", ended="2026-11-01T11:00:00Z")
    r = CliRunner().invoke(app, ["--config", str(config), "status"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert "money: $1.00 spent, $0.00 committed (running, worst case), $9.00 left of the project's $10.00" in r.output
    assert "↳ spot, recovered 2x" in r.output, r.output
