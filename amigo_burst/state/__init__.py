"""What the controller keeps on disk: paths, ids, run records and the artifact store.

Owns the project's `.amigo/` folder layout, the run-id and cluster-name formats, the SQLite run
records (`state.db`, WAL) and the controller's side of the content-addressed store (progress bars,
UserError) over train/storage/. Imports only the shared vocabulary and train/storage; never
planning, runners, lifecycle or cli.

    paths.py    .amigo/ layout: state dir, run dirs, work dirs, prepared datasets, the DB file
    ids.py      run ids (s<stage>-<target>-<utc>-<hex>) and SkyPilot cluster names (amigo-<run>)
    records.py  Run and RunStore: SQLite records, the BEGIN IMMEDIATE stage claim, migrations
    store.py    the project's artifact store (file:// or s3://) with bars and one-line errors
"""
