"""Run records: one SQLite file, `.amigo/state.db`, read by report, calibration and the CLI.

WAL journal (readers never wait for a writer), a 30 s busy_timeout (a writer waits for
another instead of failing), one short-lived connection per call: two controller processes
can launch, update and list at once. `claim_stage` takes the write lock first
(BEGIN IMMEDIATE) so two launches of one stage cannot both see "nothing running".

    runs = open_records(project_root)               # .amigo/state.db, made by the first write
    run = runs.claim_stage(2, Run(id=new_run_id(2, "vast"), stage=2, target="vast"))
    runs.update(run.id, status="RUNNING", cluster="amigo-s2")
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from amigo_burst.errors import UserError
from amigo_burst.state import paths
from amigo_burst.state.ledger import Attempt
from amigo_burst.state.ledger import insert as insert_attempt
from amigo_burst.state.migrations import MIGRATIONS, SCHEMA_VERSION

STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")
ACTIVE = ("PENDING", "RUNNING")
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")  # written by the worker (or reconcile), never changed after
JSON_FIELDS = ("estimate", "artifacts", "metrics")
BUSY_TIMEOUT_MS = 30_000
LOW_SPACE_BYTES = 16 * 2**20  # below this, a write error on .amigo/ is a full disk


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pid_alive(pid: int | None) -> bool:
    """True if process `pid` exists and is not a zombie (a dead child not yet reaped)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


@dataclass
class Run:
    id: str
    stage: int
    target: str
    status: str = "PENDING"
    cluster: str | None = None
    reason: str | None = None
    started: str = field(default_factory=utc_now)
    ended: str | None = None
    usd_per_hour: float | None = None
    tokens_per_s: float | None = None
    peak_vram_gib: float | None = None
    estimate: dict | None = None
    artifacts: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    pid: int | None = None
    downloaded: bool = False
    child_pid: int | None = None
    job_id: int | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def never_started(self) -> bool:
        """A launch that failed before anything trained: no training process, no cloud job, no metrics
        (`status` hides these unless --all; a report has no actual time or cost to compare for them)."""
        return self.status == "FAILED" and self.child_pid is None and self.job_id is None and not self.metrics

    @property
    def is_probe(self) -> bool:
        """`amigo-burst probe` / `launch --probe`: a few steps that measured speed and memory. Never the
        stage's finished run (lineage, `pipeline`, `report`'s per-stage rows), whatever its status."""
        return bool((self.artifacts or {}).get("probe"))


COLUMNS = tuple(f.name for f in fields(Run))


def _to_db(name: str, value: object) -> object:
    if name in JSON_FIELDS:
        if value is None:
            return None if name == "estimate" else "{}"
        return json.dumps(value, sort_keys=True)
    if name == "downloaded":
        return int(bool(value))
    if name == "status" and value not in STATUSES:
        raise UserError(f"bad run status {value!r}: one of {', '.join(STATUSES)}")
    return value


def _from_row(row: sqlite3.Row) -> Run:
    d = {k: row[k] for k in row.keys()}
    for k in JSON_FIELDS:
        d[k] = json.loads(d[k]) if d[k] is not None else (None if k == "estimate" else {})
    d["downloaded"] = bool(d["downloaded"])
    return Run(**d)


class RunStore:
    def __init__(self, db_path: str | os.PathLike, create: bool = True):
        """create=False: the file is made by the first write only; until then reads see no runs
        (a command that fails on bad input, or only reads, leaves no .amigo/ behind)."""
        self.path = Path(db_path)
        self._ready = False
        if create or self.path.exists():
            self._ensure()

    def _ensure(self) -> None:
        """The file, with our schema (created or migrated). A file already at our schema version is
        only read here: a read-only .amigo/ (a backup, a read-only mount) still answers reads."""
        if self._ready:
            return
        if self.path.exists() and self._version() == SCHEMA_VERSION:
            self._ready = True
            return
        if self.read_only:
            raise UserError(f"{self.path} is read-only and needs a schema upgrade: open it once where it is writable")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.path.parent}: {e.strerror or e}") from None
        self._ready = True  # _tx below calls _ensure again
        try:
            self._migrate()
        except BaseException:
            self._ready = False
            raise

    def _version(self) -> int:
        with self._connect() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    @property
    def read_only(self) -> bool:
        """The state cannot be written here (read-only mount or permissions): reads open it immutable."""
        d = self.path.parent
        if not d.exists():
            return False  # made by the first write
        return not os.access(d, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK))

    def _missing(self) -> bool:
        """No state DB yet (create=False and nothing written): reads answer 'no runs'."""
        if not self._ready and self.path.exists():
            self._ensure()
        return not self._ready

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path} has schema version {version}, newer than this amigo-burst "
                                f"({SCHEMA_VERSION}): upgrade amigo-burst")
            for v in range(version, SCHEMA_VERSION):
                db.executescript_in_tx(MIGRATIONS[v])
                db.execute(f"PRAGMA user_version = {v + 1}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        read_only = self.read_only
        try:
            if read_only:  # no -wal/-shm can be made beside it: read the file as it is, without locks
                uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?immutable=1"
                db = sqlite3.connect(uri, uri=True, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"cannot open {self.path}: {e}") from None
        try:
            db.row_factory = sqlite3.Row
            if not read_only:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")  # persistent: set once per file
                db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across app crashes
            yield db
        except sqlite3.DatabaseError as e:
            raise db_error(self.path, e) from None
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        """One write transaction, the write lock taken up front (BEGIN IMMEDIATE)."""
        self._ensure()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- writes -------------------------------------------------------------------------------------
    def create(self, run: Run) -> Run:
        with self._tx() as db:
            self._insert(db, run)
        return run

    def _insert(self, db: _Tx, run: Run) -> None:
        values = asdict(run)
        try:
            db.execute(f"INSERT INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       [_to_db(k, values[k]) for k in COLUMNS])
        except sqlite3.IntegrityError:
            raise UserError(f"run id {run.id!r} already exists") from None

    def update(self, run_id: str, **changes: object) -> Run:
        bad = [k for k in changes if k not in COLUMNS or k == "id"]
        if bad:
            raise UserError(f"cannot update run field(s) {', '.join(bad)}")
        with self._tx() as db:
            if changes:
                sets = ", ".join(f"{k} = ?" for k in changes)
                cur = db.execute(f"UPDATE runs SET {sets} WHERE id = ?",
                                 [_to_db(k, v) for k, v in changes.items()] + [run_id])
                if cur.rowcount == 0:
                    raise UserError(f"unknown run id {run_id!r}")
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise UserError(f"unknown run id {run_id!r}")
            return _from_row(row)

    def claim_stage(self, stage: int, run: Run, replace: bool = False, attempt: Attempt | None = None) -> Run:
        """Insert `run` unless a PENDING/RUNNING run of `stage` has a live pid (then UserError).

        The check and the insert share one BEGIN IMMEDIATE transaction: of two launches racing,
        the second waits for the first's commit and then sees its row. run.pid defaults to ours.
        Rows whose pid is dead (a controller that crashed) do not block; they stay as they are
        for reattach/cleanup to decide. `attempt`: its ledger row (state/ledger.py), in the same
        transaction: a run is never claimed without its money counted.
        """
        if run.pid is None:
            run.pid = os.getpid()
        with self._tx() as db:
            for row in db.execute("SELECT id, status, pid FROM runs WHERE stage = ? AND status IN (?, ?)",
                                  (stage, *ACTIVE)).fetchall():
                if pid_alive(row["pid"]):
                    raise UserError(f"stage {stage} is already {row['status'].lower()} as run {row['id']} "
                                    f"(pid {row['pid']}): wait for it or stop it first")
            if replace:  # --resume: the same run id starts again (its earlier attempts stay in the ledger)
                db.execute("DELETE FROM runs WHERE id = ?", (run.id,))
            self._insert(db, run)
            if attempt is not None:
                insert_attempt(db, attempt)
        return run

    def take_over(self, run_id: str, dead_pid: int | None, new_pid: int) -> bool:
        """Compare-and-set of the worker pid: of two processes reattaching, one wins."""
        with self._tx() as db:
            cur = db.execute("UPDATE runs SET pid = ? WHERE id = ? AND pid IS ? AND status IN (?, ?)",
                             (new_pid, run_id, dead_pid, *ACTIVE))
            return cur.rowcount == 1

    # --- reads --------------------------------------------------------------------------------------
    def get(self, run_id: str) -> Run:
        """The run with this id, or the one run whose id starts with it (`status s2-vast` is enough
        while it is unique). Callers use the returned run's .id from then on."""
        if self._missing():
            raise UserError(f"unknown run id {run_id!r}")
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None and run_id:
                rows = db.execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started DESC, id DESC",
                                  (len(run_id), run_id)).fetchall()
                if len(rows) > 1:
                    some = ", ".join(r["id"] for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
                    raise UserError(f"run id {run_id!r} is ambiguous: {len(rows)} runs start with it ({some})")
                row = rows[0] if rows else None
        if row is None:
            raise UserError(f"unknown run id {run_id!r}")
        return _from_row(row)

    def list(self, stage: int | None = None, status: str | Iterable[str] | None = None) -> list[Run]:
        """Oldest first."""
        where, args = [], []
        if stage is not None:
            where.append("stage = ?")
            args.append(stage)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args.extend(wanted)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY started, id"
        if self._missing():
            return []
        with self._connect() as db:
            return [_from_row(r) for r in db.execute(sql, args).fetchall()]

    def latest(self, stage: int, status: str | None = "SUCCEEDED") -> Run | None:
        """The newest run of a stage with that status; probes (`amigo-burst probe`: a few steps to
        measure speed and memory) and on-target evaluations (`eval --cloud`) never count as the stage's run."""
        runs = [r for r in self.list(stage=stage, status=status) if not r.is_probe and not (r.artifacts or {}).get("eval")]
        return runs[-1] if runs else None

    def active(self, stage: int | None = None) -> list[Run]:
        return self.list(stage=stage, status=ACTIVE)


class _Tx:
    """The connection inside a transaction (executescript would COMMIT it: run statements one by one)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def execute(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, tuple(args))

    def executescript_in_tx(self, script: str) -> None:
        for stmt in _statements(script):
            self.db.execute(stmt)


def db_error(path: Path, e: sqlite3.DatabaseError) -> UserError:
    """SQLite's words -> what happened and what to do, one line. A full disk says "disk I/O error" as
    often as "database or disk is full": the free space decides."""
    msg = str(e)
    low = msg.lower()
    if "readonly" in low or "read-only" in low:
        return UserError(f"{path} is read-only here: this command records runs; it needs a writable .amigo/")
    if "disk" in low or "full" in low:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < LOW_SPACE_BYTES:
            return UserError(f"{path}: the disk is full ({free / 2**20:.1f} MiB free): free some space "
                             "(`amigo-burst clean` removes finished runs' work copies) and run the command again")
    return UserError(f"{path}: {msg}")


def _statements(script: str) -> list[str]:
    """Split a migration (no semicolons inside strings/triggers in ours) into statements."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def open_records(root: Path) -> RunStore:
    """The project's run records. The file is made by the first write: a command that only reads,
    or fails on bad input, leaves no .amigo/ behind."""
    return RunStore(paths.db_path(root), create=False)
