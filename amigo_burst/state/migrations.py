"""The state DB's schema, as migrations: MIGRATIONS[i] takes `.amigo/state.db` from user_version i to
i + 1 (state/records.py runs them in one transaction on first open)."""

SCHEMA_VERSION = 3

MIGRATIONS = (
    """
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        stage         INTEGER NOT NULL,
        target        TEXT NOT NULL,
        cluster       TEXT,
        status        TEXT NOT NULL CHECK (status IN ('PENDING','RUNNING','SUCCEEDED','FAILED','STOPPED')),
        reason        TEXT,
        started       TEXT NOT NULL,          -- ISO 8601 UTC, 2026-11-26T10:15:00Z
        ended         TEXT,
        usd_per_hour  REAL,
        tokens_per_s  REAL,
        peak_vram_gib REAL,
        estimate      TEXT,                   -- json
        artifacts     TEXT NOT NULL DEFAULT '{}',  -- json: name -> uri
        metrics       TEXT NOT NULL DEFAULT '{}',  -- json
        pid           INTEGER,                -- the controller/runner process, for reattach
        downloaded    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_stage_status ON runs (stage, status, started);
    """,
    # v2: the training process (local: `down` stops it) and the SkyPilot job id (reattach)
    """
    ALTER TABLE runs ADD COLUMN child_pid INTEGER;
    ALTER TABLE runs ADD COLUMN job_id INTEGER;
    """,
    # v3: the money ledger, one row per attempt of a run (state/ledger.py); runs recorded before it
    # become their first attempt (a run that ended without an end time cost nothing)
    """
    CREATE TABLE ledger (
        run_id        TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        stage         INTEGER NOT NULL,
        started       REAL NOT NULL,          -- epoch seconds: the launch
        ended         REAL,                   -- NULL while it runs
        usd_per_hour  REAL,                   -- the rented machine's
        deadline      REAL,                   -- epoch seconds: the cap on the machine
        overhead_s    INTEGER NOT NULL DEFAULT 0,  -- billed after the deadline: kill grace + autodown
        worst_usd     REAL,                   -- the bill if nobody comes back
        PRIMARY KEY (run_id, attempt)
    );
    INSERT INTO ledger (run_id, attempt, stage, started, ended, usd_per_hour)
        SELECT id, 1, stage, (julianday(started) - 2440587.5) * 86400.0,
               CASE WHEN ended IS NOT NULL THEN (julianday(ended) - 2440587.5) * 86400.0
                    WHEN status IN ('PENDING', 'RUNNING') THEN NULL
                    ELSE (julianday(started) - 2440587.5) * 86400.0 END,
               usd_per_hour
        FROM runs;
    """,
)
