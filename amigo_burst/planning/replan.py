"""The remaining stages on the remaining money (pure): `pipeline` with `[project] max_usd`.

    replan(candidates, chosen, left_usd)

CANDIDATES: per stage still to run, the plan cells it may run on (its target's machines; every
target's with `--plan auto`); CHOSEN: the plan's own pick per stage. What each stage needs is the
budget its estimate is within (budget.needed_usd: the estimate / 90% + the grace and autodown at its
$/h), so a re-planned stage is also one its launch accepts. The rule:

    the plan's picks when they add up within LEFT_USD;
    else each stage on its cheapest cell that fits (cost, then $/h, then hours): the cheapest that fits
    the money, not the fastest;
    else nothing fits: the least the stages need, for the refusal.
A stage no machine of its target fits is left out: its launch refuses it, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from amigo_burst.planning.budget import needed_usd
from amigo_burst.planning.matrix import Cell, cost_key


@dataclass(frozen=True)
class Replan:
    cells: dict[int, Cell]  # the stage -> the cell it runs on (empty when nothing fits)
    need_usd: float  # what they need together
    changed: tuple[int, ...] = ()  # stages moved off the plan's pick to fit the money
    fits: bool = True


def need(cell: Cell) -> float:
    return needed_usd(cell.usd or 0.0, cell.usd_per_hour, not cell.local)


def replan(candidates: dict[int, list[Cell]], chosen: dict[int, Cell | None], left_usd: float) -> Replan:
    """A stage with no cell that fits at all is left out (its launch refuses it with the reason)."""
    candidates = {s: cells for s, cells in candidates.items() if any(c.fits and c.usd is not None for c in cells)}
    planned = {s: c for s, c in chosen.items() if s in candidates and c is not None and c.fits}
    if len(planned) == len(candidates):
        total = sum(need(c) for c in planned.values())
        if total <= left_usd:
            return Replan(planned, total)
    cheapest = {s: min([c for c in cells if c.fits and c.usd is not None], key=lambda c: (need(c), *cost_key(c)))
                for s, cells in candidates.items()}
    total = sum(need(c) for c in cheapest.values())
    changed = tuple(s for s, c in sorted(cheapest.items()) if planned.get(s) is not c)
    return Replan(cheapest if total <= left_usd else {}, total, changed, total <= left_usd)
