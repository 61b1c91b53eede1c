"""A launch's money, controller side: what this attempt may spend, the cap it carries to the machine, the
ledger row that counts it, and what the launch says about the worst case.

    limits_for(budget, est, target)   planning/budget.py's rule at the dearest machine SkyPilot may rent
    cap_envs(lim, now)                the job's envs: AMIGO_DEADLINE (epoch s), AMIGO_RESERVE_S, grace
    attempt_row(...)                  the ledger row (state/ledger.py) opened with the run's claim
    worst_case_line(lim, budget)      "at most $X if this laptop disappears: ..."
    no_bucket_line(cfg, target)       what a cloud run without a bucket risks, and what s3:// buys

The deadline is absolute (the laptop's clock at launch + the cap): provisioning is billed too, and a
spot job restarted on another machine keeps the same deadline, so the budget spans restarts.
"""

from __future__ import annotations

from amigo_burst.planner import Budget
from amigo_burst.planning import budget as rule
from amigo_burst.planning.matrix import Cell
from amigo_burst.planning.units import hours_text
from amigo_burst.state.ledger import Attempt
from amigo_burst.targets import Target

PROBE_CAP_EXTRA_S = 1800  # a probe's job: its 20 minutes of steps plus setup and the model download


def limits_for(budget: Budget, est: Cell | None, target: Target, probe_s: int | None = None) -> rule.Limits:
    """The attempt's limits; the rate is the dearest machine the launch lets SkyPilot rent (the plan's
    and its fallbacks), so the cap holds whichever one it gets. A probe: its own short cap."""
    rate = (est.max_usd_per_hour or est.usd_per_hour) if est is not None else None
    cloud = not target.is_local
    if probe_s is not None:
        cap = probe_s + PROBE_CAP_EXTRA_S if cloud else 0
        return rule.Limits(cap, probe_s, 0, rate, rule.overhead_s(cloud), "probe" if cloud else "none")
    return rule.limits(budget.usd, budget.hours, rate, cloud=cloud, est_hours=est.hours if est is not None else None)


def cap_envs(lim: rule.Limits, now: float, cloud: bool) -> dict[str, str]:
    """What the machine enforces (train/capped.sh, train/run.sh); no cap: AMIGO_DEADLINE 0. A cloud job
    runs in a process group of its own there, so `down` can signal all of it (AMIGO_ON_MACHINE)."""
    envs = {"AMIGO_ON_MACHINE": "1" if cloud else "0", "AMIGO_CAP_GRACE_S": str(rule.KILL_GRACE_S)}
    if not lim.cap_s:
        return {**envs, "AMIGO_DEADLINE": "0", "AMIGO_RESERVE_S": "0"}
    return {**envs, "AMIGO_DEADLINE": str(int(now + lim.cap_s)), "AMIGO_RESERVE_S": str(lim.reserve_s)}


def attempt_row(run_id: str, stage: int, lim: rule.Limits, rate: float | None, now: float) -> Attempt:
    return Attempt(run_id=run_id, stage=stage, started=now, usd_per_hour=rate,
                   deadline=now + lim.cap_s if lim.cap_s else None, overhead_s=lim.overhead_s if lim.cap_s else 0,
                   worst_usd=lim.worst_usd)


def cap_source(lim: rule.Limits, budget: Budget) -> str:
    if lim.source == "budget":
        return f"the ${budget.usd:,.2f} budget" + (f": {budget.note}" if budget.note else "")
    if lim.source == "hours":
        return f"the {budget.hours:g} h deadline"
    if lim.source == "estimate":
        return f"no max_usd: {rule.NO_BUDGET_FACTOR:g}x the estimate + {rule.NO_BUDGET_EXTRA_H:g} h"
    return lim.source


def worst_case_line(lim: rule.Limits, budget: Budget) -> str | None:
    """The launch's promise, in money. None on the laptop (nothing rented)."""
    if not lim.cap_s:
        return None
    cap = f"the job is capped on the machine at {hours_text(lim.cap_s / 3600)} ({cap_source(lim, budget)})"
    if lim.worst_usd is None:
        return cap + ", then autodown"
    return (f"at most ${lim.worst_usd:,.2f} if this laptop disappears: {cap}, then {rule.KILL_GRACE_S // 60} min "
            f"to save and {rule.AUTODOWN_IDLE_MIN} min idle before autodown, at ${lim.usd_per_hour:.2f}/h")


def no_bucket_line(store_url: str, target: Target) -> str | None:
    """A cloud run with a file:// store: what it risks when the laptop goes away, and the fix."""
    if target.is_local or store_url.startswith("s3://"):
        return None
    return ("no bucket ([store] url is file://): checkpoints come back to this laptop while it follows the run; "
            "with the laptop away when the machine ends, the steps since the last one brought back are lost "
            "with it. [store] url = \"s3://bucket/prefix\" (S3, R2, B2, MinIO via endpoint_url) keeps every "
            "checkpoint as it is written, and allows --spot")
