"""The one budget rule: money (or hours) -> the hard cap on the machine, the trainer's share, the
worst-case bill. `plan` (matrix.within), launch's preflight and the cap the job carries all use it.

A rented machine bills from provisioning to teardown whether or not the laptop watches, so a budget
is kept on the machine: one wall-clock cap around the whole job (setup, inputs, prepare, model
download, training, benchmark), a KILL_GRACE_S for the step in flight to save, then SkyPilot's
autodown after AUTODOWN_IDLE_MIN idle minutes. All three are billed:

    cap    = budget / ($/h) - (grace + autodown idle)      $10 at $0.40/h: 25 h - 12 min = 24.8 h
    worst  = (cap + grace + autodown idle) x $/h  = the budget, when nobody ever comes back
    an estimate (setup + training, estimate.py) is within the budget when it fits ESTIMATE_SHARE of
    the cap: the other 10% is the margin for an estimate that was short, the last save and the
    benchmark; the trainer itself stops at a step boundary after that share (exit 3, checkpoint kept)

A stage with no dollar budget on a priced cloud is capped from its estimate: NO_BUDGET_FACTOR x
its hours + NO_BUDGET_EXTRA_H (a slow machine or a long download must not be cut off; a hang must
not bill for days). An hours budget (max_hours) is a deadline: the cap is at most that long.
On the laptop nothing is rented: no grace, no autodown, no cap on the machine (the laptop watches).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTODOWN_IDLE_MIN = 10  # SkyPilot tears an idle cluster down after this long: the job ended, nobody came back
KILL_GRACE_S = 120  # after the cap's SIGTERM: the step in flight finishes and saves, then SIGKILL
ESTIMATE_SHARE = 0.9
MIN_RUNTIME_S = 60  # a forced launch on a budget that buys less still trains this long
NO_BUDGET_FACTOR = 2.0
NO_BUDGET_EXTRA_H = 0.5
MAX_RESERVE_S = 1800  # before the cap, training stops this long at most to save and run the benchmark


@dataclass(frozen=True)
class Limits:
    """What one attempt of a stage may spend, as time on the machine."""

    cap_s: int  # the job's wall clock on the machine, setup to benchmark (0: none)
    train_s: int  # the trainer's own stop, from its start (0: none)
    allow_s: int  # the most an estimate (setup + training) may take to be within the budget (0: any)
    usd_per_hour: float | None  # the dearest machine SkyPilot may rent for it
    overhead_s: int  # billed after the cap: kill grace + autodown idle (0 on the laptop)
    source: str  # "budget" | "hours" | "estimate" | "none": where the cap comes from

    @property
    def worst_usd(self) -> float | None:
        """The bill if this laptop never comes back: the cap, the grace and the autodown wait."""
        if not self.cap_s or self.usd_per_hour is None:
            return None
        return (self.cap_s + self.overhead_s) / 3600 * self.usd_per_hour

    @property
    def reserve_s(self) -> int:
        """How long before the cap training stops (saving, the benchmark): the cap's last 10%, <= 30 min."""
        return min(MAX_RESERVE_S, self.cap_s - int(self.cap_s * ESTIMATE_SHARE)) if self.cap_s else 0

    def allows(self, est_hours: float | None) -> bool:
        """The estimate (setup + training hours) is within the budget (module docstring)."""
        return not self.allow_s or est_hours is None or est_hours * 3600 <= self.allow_s + 1e-6


def overhead_s(cloud: bool) -> int:
    return KILL_GRACE_S + AUTODOWN_IDLE_MIN * 60 if cloud else 0


def limits(usd: float | None, hours: float | None, usd_per_hour: float | None, *, cloud: bool,
           est_hours: float | None = None) -> Limits:
    """The cap and the trainer's limit for an attempt with USD dollars and/or HOURS left at USD_PER_HOUR.

    The trainer's share: ESTIMATE_SHARE of what the dollars buy (at least MIN_RUNTIME_S), or the
    hours budget itself (a deadline; the machine's cap still stops the job at it)."""
    over = overhead_s(cloud)
    cap = train = allow = 0
    source = "none"
    if usd and usd_per_hour:
        machine_s = usd / usd_per_hour * 3600
        train = max(MIN_RUNTIME_S, int(machine_s * ESTIMATE_SHARE))
        cap, source = max(MIN_RUNTIME_S, int(machine_s - over)), "budget"
        allow = max(1, int((machine_s - over) * ESTIMATE_SHARE))
    elif cloud and usd_per_hour and est_hours:
        cap = int((est_hours * NO_BUDGET_FACTOR + NO_BUDGET_EXTRA_H) * 3600)
        train, source = int(cap * ESTIMATE_SHARE), "estimate"
    if hours:  # a deadline: the estimate within it, the trainer stopped by it, the job capped at it
        h = int(hours * 3600)
        if not cap or h < cap:
            cap, source = h, "hours"
        train, allow = min(train or h, h), min(allow or h, h)
    if not cloud:  # the laptop: nothing rented, nothing to cap on a machine
        cap, source = 0, "none"
    return Limits(cap, train, allow, usd_per_hour, over, source)


def affordable_usd(budget_usd: float, usd_per_hour: float | None, cloud: bool) -> float:
    """The most a plan cell's estimate may cost within BUDGET_USD (the dollar form of Limits.allows)."""
    over_usd = overhead_s(cloud) / 3600 * (usd_per_hour or 0)
    return max(0.0, (budget_usd - over_usd) * ESTIMATE_SHARE)


def needed_usd(est_usd: float, usd_per_hour: float | None, cloud: bool) -> float:
    """The budget an estimate needs to be within it: affordable_usd turned around."""
    return est_usd / ESTIMATE_SHARE + overhead_s(cloud) / 3600 * (usd_per_hour or 0)
