"""Money as a ledger (pure): what each attempt of a stage cost, what running ones may still cost, what
is left of the project's budget.

An attempt is one launch of a run (a `--resume` is the next attempt of the same run). It bills
hours x the rented machine's $/h from its launch to its end; a machine nobody came back to ends
itself at its deadline (the cap) plus the kill grace and the autodown wait, so an attempt never
costs more than that, whatever the laptop saw:

    spent      ended attempts: (min(ended, deadline + overhead) - started) x $/h; running ones so far
    committed  running attempts: their worst case (budget.Limits.worst_usd) minus what they spent so far
    left       the project's max_usd - spent - committed

Attempts are read as any object with the fields of state.ledger.Attempt (this layer imports no state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class AttemptLike(Protocol):
    run_id: str
    stage: int
    started: float  # epoch seconds
    ended: float | None
    usd_per_hour: float | None
    deadline: float | None  # epoch seconds: the cap on the machine; None: no cap
    overhead_s: int
    worst_usd: float | None


@dataclass(frozen=True)
class Money:
    spent: float
    committed: float
    max_usd: float | None

    @property
    def left(self) -> float | None:
        return None if self.max_usd is None else self.max_usd - self.spent - self.committed


def billed_s(a: AttemptLike, now: float) -> float:
    """Seconds the machine billed (or has billed so far): never past its deadline + overhead."""
    end = a.ended if a.ended is not None else now
    if a.deadline is not None:
        end = min(end, a.deadline + a.overhead_s)
    return max(0.0, end - a.started)


def spent_usd(a: AttemptLike, now: float) -> float:
    return billed_s(a, now) / 3600 * (a.usd_per_hour or 0.0)


def committed_usd(a: AttemptLike, now: float) -> float:
    """What a running attempt may still cost: its worst case less what it spent so far (0 once ended)."""
    if a.ended is not None or a.worst_usd is None:
        return 0.0
    return max(0.0, a.worst_usd - spent_usd(a, now))


def totals(attempts: list[AttemptLike], now: float, max_usd: float | None = None) -> Money:
    return Money(sum(spent_usd(a, now) for a in attempts), sum(committed_usd(a, now) for a in attempts), max_usd)


def run_spent(attempts: list[AttemptLike], run_id: str, now: float) -> float:
    """What a run's attempts (the first launch and every --resume of it) have cost: a resume gets the
    stage's budget less this."""
    return sum(spent_usd(a, now) for a in attempts if a.run_id == run_id)


def money_line(m: Money) -> str:
    """`status` and `report`: '$12.40 spent, $8.00 committed (running, worst case), $229.60 left of $250'."""
    text = f"${m.spent:,.2f} spent, ${m.committed:,.2f} committed (running, worst case)"
    if m.max_usd is not None:
        text += f", ${m.left:,.2f} left of the project's ${m.max_usd:,.2f}"
    return text
