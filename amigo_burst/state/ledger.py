"""The money ledger in `.amigo/state.db`: one row per attempt of a run (planning/ledger.py adds it up).

    launch      claim_stage(..., attempt=Attempt(...))   opened with the run's claim, in one transaction
    worker      Ledger(runs).set_rate(run, $/h)           the machine SkyPilot rented
                Ledger(runs).close(run)                   the run ended (after teardown)
    reconcile   Ledger(runs).close(run)                   a run recorded as ended without its worker

A `--resume` deletes and re-inserts the run's row (records.claim_stage) but never its ledger rows:
what earlier attempts cost stays counted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields


@dataclass
class Attempt:
    run_id: str
    stage: int
    started: float  # epoch seconds
    ended: float | None = None
    usd_per_hour: float | None = None
    deadline: float | None = None  # epoch seconds: the cap on the machine
    overhead_s: int = 0
    worst_usd: float | None = None
    attempt: int = 0  # numbered on insert: 1, 2, ... per run


COLUMNS = tuple(f.name for f in fields(Attempt))


def insert(db, a: Attempt) -> int:
    """Inside the caller's transaction: the run's next attempt number, and the row."""
    n = db.execute("SELECT COALESCE(MAX(attempt), 0) + 1 FROM ledger WHERE run_id = ?", (a.run_id,)).fetchone()[0]
    a.attempt = n
    values = asdict(a)
    db.execute(f"INSERT INTO ledger ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
               [values[k] for k in COLUMNS])
    return n


class Ledger:
    """The ledger rows of a records.RunStore's database (not imported: records imports this module)."""

    def __init__(self, runs):
        self.runs = runs

    def attempts(self, run_id: str | None = None) -> list[Attempt]:
        """Oldest first."""
        if self.runs._missing():
            return []
        sql = "SELECT * FROM ledger" + (" WHERE run_id = ?" if run_id else "") + " ORDER BY started, attempt"
        with self.runs._connect() as db:
            return [Attempt(**{k: row[k] for k in COLUMNS}) for row in db.execute(sql, (run_id,) if run_id else ())]

    def close(self, run_id: str, ended: float | None = None) -> None:
        """The run's open attempt ended (now, unless said); an attempt already closed stays as it is."""
        if self.runs._missing():
            return
        with self.runs._tx() as db:
            db.execute("UPDATE ledger SET ended = ? WHERE run_id = ? AND ended IS NULL",
                       (ended if ended is not None else time.time(), run_id))

    def set_rate(self, run_id: str, usd_per_hour: float) -> None:
        """The rented machine's $/h for the open attempt (a fallback may differ from the plan's)."""
        with self.runs._tx() as db:
            db.execute("UPDATE ledger SET usd_per_hour = ? WHERE run_id = ? AND ended IS NULL",
                       (usd_per_hour, run_id))
