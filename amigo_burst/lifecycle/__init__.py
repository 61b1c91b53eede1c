"""A run from launch to teardown: prepare, launch, worker, follow, reconcile, download, down, pipeline, rehearse.

Owns the order of things and the crash-safety rules: the dataset is validated before anything is
written, the stage is claimed in one transaction, a detached worker is the only writer of a run's
final status, a dead worker is replaced (reattach) or recorded, downloads are verified and atomic.
May import the planner, planning, state, runners and the shared vocabulary; never cli.

    prepare.py    source rows -> validated canonical JSONL, tokens counted
    launch.py     LaunchOptions -> prepared inputs in the store, claimed record, a started worker
    handoff.py    LaunchPlan (launch.json) and the one way a worker process is started
    worker.py     `python -m amigo_burst.lifecycle.worker`: runs the target, outputs back, final status
    follow.py     a run's log with a live progress bar (launch, logs -f)
    reconcile.py  records that outlived their worker: reattach, or record why it ended
    download.py   a run's outputs, verified, into .amigo/runs/<id> and optionally --to
    teardown.py   down: stop runs, tear down amigo- clusters
    pipeline.py   the stages in order on the targets of a plan
    rehearse.py   the configured plan on a tiny stand-in, here, in a project of its own
    dryrun.py     plan --cloud: SkyPilot's optimizer on the launch a stage would make
    doctor.py     checks of this machine, SkyPilot's clouds and the store, each with its fix
"""
