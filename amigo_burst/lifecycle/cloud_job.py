"""The worker's cloud side: a SkyPilot job followed to its end, whatever happens to this laptop.

The job keeps its own promises on the machine (DESIGN.md, "the laptop only watches"): its cap
(train/capped.sh) and SkyPilot's autodown. This module only watches, and tears down once it knows:

    launch the job (or, reattaching, take its id from the record)
    follow its log; a stream that breaks (Wi-Fi, sleep, the API server restarting) is reattached
        with backoff (5 s doubling to 5 min) and is never taken for the job's end
    no bucket: pull the machine's checkpoints every PULL_EVERY_S while following (pull.py)
    a terminal status asked of SkyPilot, or a cluster SkyPilot says is gone, ends the following;
        a machine that cannot be asked past its cap + grace + autodown has ended itself
    then: the machine's store pulled once more (the stop checkpoint), outputs collected (verified),
        the cluster torn down (unless --keep); outputs that could not be brought back keep it up
A managed (spot) job: followed through the managed-jobs API (sky_jobs.py): status, recovery count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from amigo_burst.errors import one_line
from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN, LaunchPlan
from amigo_burst.lifecycle.pull import Puller, PullLoop
from amigo_burst.planning.budget import overhead_s
from amigo_burst.runners import sky as skyr
from amigo_burst.runners import sky_jobs
from amigo_burst.state import paths
from amigo_burst.state.ledger import Ledger
from amigo_burst.targets import get_target
from train.schema import EXIT_BUDGET, EXIT_STOPPED

TERMINAL = ("SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED", "UNKNOWN")
GONE = "GONE"  # the cluster itself is gone (scancel, preemption, autodown, torn down elsewhere)
BACKOFF_S = (5, 10, 20, 40, 80, 160, 300)
STEADY_S = 60.0  # a stream that lasted this long was healthy: the next loss starts the backoff over
SEEN_FILE = "job-lines"  # in the run's folder: how many lines of the job's log train.log already has


def run_sky(cfg, plan: LaunchPlan, secrets, sink, runs, job: int | None = None, collect=None) -> int:
    """Launch (or, with `job`, reattach to) the cloud job; follow it to its end; outputs back (COLLECT);
    tear down. Returns the job's exit code in the entrypoint's terms (0, EXIT_BUDGET, EXIT_STOPPED, 1)."""
    if plan.spot:
        if job is None:
            target = get_target(plan.target, cfg.root)
            task = skyr.build_task(target.path, plan.envs, secrets, Path(plan.workdir), gpu=plan.gpu)
            job = sky_jobs.spot_launch(task, plan.cluster)
            runs.update(plan.run_id, job_id=job)
        status = wait_spot(job, sink, runs, plan.run_id)
        return _collected_rc(status, cfg, plan, sink, collect)
    if job is None:
        target = get_target(plan.target, cfg.root)
        task = skyr.build_task(target.path, plan.envs, secrets, Path(plan.workdir), gpu=plan.gpu)
        try:
            job = skyr.launch(task, plan.cluster, idle_minutes=AUTOSTOP_IDLE_MIN, keep=plan.keep, on_line=sink,
                              follow=False, on_rented=_rented_hook(runs, plan, sink))
        except BaseException:  # nothing runs there yet: a half-provisioned cluster protects nothing
            if not plan.keep:
                skyr.down(plan.cluster)
                sink(f"cluster {plan.cluster} torn down")
            raise
        runs.update(plan.run_id, job_id=job)
        (paths.run_dir(cfg.root, plan.run_id) / SEEN_FILE).unlink(missing_ok=True)  # a new job: none seen
    run_dir = paths.run_dir(cfg.root, plan.run_id)
    puller = Puller(cfg, plan.run_id, plan.cluster, sink) if plan.transport == "rsync" else None
    with PullLoop(puller, sink):
        status = follow_to_end(plan.cluster, job, sink, machine_end(plan), run_dir / SEEN_FILE)
    if puller is not None:
        puller.last_pull(gone=status == GONE)
    try:
        rc = _collected_rc(status, cfg, plan, sink, collect)
    except Exception:
        if status == "SUCCEEDED" and not plan.keep:  # its outputs are still there: autodown, not us, ends it
            sink(f"cluster {plan.cluster} left up until its autodown ({AUTOSTOP_IDLE_MIN} min idle): the "
                 "outputs are still on it")
        raise
    if not plan.keep:
        skyr.down(plan.cluster)
        sink(f"cluster {plan.cluster} torn down")
    return rc


def machine_end(plan: LaunchPlan) -> float | None:
    """Epoch seconds by which the machine has ended itself (cap + grace + autodown); None: no cap."""
    deadline = int(plan.envs.get("AMIGO_DEADLINE") or 0)
    return deadline + overhead_s(True) if deadline else None


def follow_to_end(cluster: str, job: int, sink, ends_by: float | None, seen_file: Path | None = None,
                  sleep=time.sleep, clock=time.time) -> str:
    """Stream the job's log until SkyPilot says it ended; returns that status (or GONE)."""
    skip = _Skip(sink, seen_file)
    tries = 0
    while True:
        t0 = time.monotonic()
        try:
            skyr.tail(cluster, job, follow=True, on_line=skip)
            lost = None
        except Exception as e:  # noqa: BLE001 - any failure to stream is the laptop's, not the job's
            lost = one_line(e)[:160]
        skip.save()
        status = job_state(cluster, job)
        if status in TERMINAL or status == GONE:
            return status
        if status is None and ends_by is not None and clock() > ends_by:
            sink(f"error: {cluster} could not be asked past its cap, grace and autodown: it has ended itself")
            return GONE
        if time.monotonic() - t0 > STEADY_S:
            tries = 0
        wait = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
        tries += 1
        what = f"log stream lost ({lost})" if lost else f"log stream ended with the job {status or 'unreachable'}"
        sink(f"{what}: the job goes on; following it again in {wait} s")
        sleep(wait)


def job_state(cluster: str, job: int) -> str | None:
    """The job's status; GONE when its cluster is gone; None when nothing can be told (offline)."""
    try:
        return skyr.job_status(cluster, job)
    except Exception:  # noqa: BLE001 - the cluster did not answer: gone, or just out of reach?
        pass
    try:
        return GONE if skyr.cluster_gone(cluster) else None
    except Exception:  # noqa: BLE001 - SkyPilot could not ask the provider either: unknown, not gone
        return None


class _Skip:
    """on_line for a job log that is replayed from its start on every reattach: the lines this run's
    log already has (counted, and kept in SEEN_FILE for a worker that takes over) are not written again."""

    def __init__(self, sink, seen_file: Path | None):
        self.sink, self.seen_file = sink, seen_file
        self.have = _read_int(seen_file)
        self.n = 0

    def __call__(self, line: str) -> None:
        self.n += 1
        if self.n > self.have:
            self.have = self.n
            self.sink(line)
            if self.have % 20 == 0:  # a worker killed mid-stream leaves the count for the next one
                self._write()

    def save(self) -> None:
        self.n = 0  # the next stream starts from the job's first line again
        self._write()

    def _write(self) -> None:
        if self.seen_file is not None:
            try:
                self.seen_file.write_text(str(self.have))
            except OSError:
                pass


def _read_int(path: Path | None) -> int:
    try:
        return int(path.read_text()) if path is not None and path.is_file() else 0
    except (OSError, ValueError):
        return 0


def wait_spot(job: int, sink, runs, run_id: str, poll_s: float = 30.0, sleep=time.sleep) -> str:
    """A managed job followed through the managed-jobs API to its terminal status: recoveries are
    recorded (`status` shows them); a controller that cannot be asked is asked again later."""
    last, tries, unknown = None, 0, 0
    while True:
        try:
            rec = sky_jobs.spot_job(job)
            tries = 0
        except Exception as e:  # noqa: BLE001 - offline or the controller busy: not an ending
            wait = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
            tries += 1
            sink(f"managed job {job}: cannot ask its controller ({one_line(e)[:120]}): again in {wait} s")
            sleep(wait)
            continue
        if rec is None:
            unknown += 1
            if unknown >= 3:
                sink(f"error: managed job {job} is no longer in SkyPilot's managed-jobs queue")
                return "UNKNOWN"
            sleep(poll_s)
            continue
        status, n = rec["status"], rec["recovery_count"]
        if (status, n) != last:
            sink(f"managed job {job}: {status} (recoveries: {n})")
            run = runs.get(run_id)
            if run.artifacts.get("recoveries") != n:
                runs.update(run_id, artifacts={**run.artifacts, "recoveries": n})
            last = (status, n)
        if status in sky_jobs.TERMINAL:
            if status != "SUCCEEDED" and rec.get("failure_reason"):
                sink(f"managed job {job} {status}: {one_line(rec['failure_reason'])}")
            return status
        sleep(poll_s)


def _collected_rc(status: str, cfg, plan: LaunchPlan, sink, collect) -> int:
    """Outputs back (verified), then the job's end in the entrypoint's terms. A job that ended before
    writing any outputs keeps its own error line as the reason."""
    d = paths.run_dir(cfg.root, plan.run_id)
    if collect is not None and status == "SUCCEEDED":
        collect(cfg, plan, sink)
    elif collect is not None:  # whatever it left (metrics.json says a budget stop or a SIGTERM's step)
        try:
            collect(cfg, plan, lambda _line: None)  # its "not brought back" must not become the reason
        except Exception:  # noqa: BLE001 - ended before writing any: its own error line stays the reason
            sink("no outputs of this run to bring back")
    return sky_rc(status, d, sink, plan.cluster)


def sky_rc(status: str, outputs: Path, sink=None, cluster: str = "") -> int:
    """SkyPilot only says SUCCEEDED/FAILED/CANCELLED; metrics.json tells a budget stop apart.

    CANCELLED, FAILED_SETUP, GONE...: a failure with that status as the reason, not "stopped by user"
    (scancel, preemption, an admin; `amigo-burst down` records its own STOPPED, kept by finish())."""
    if status == "SUCCEEDED":
        return 0
    m = outputs / "metrics.json"
    reason = json.loads(m.read_text()).get("exit_reason") if m.is_file() else None
    if reason == "budget":
        return EXIT_BUDGET
    if reason in ("stopped", "preempted"):  # SIGTERM: saved at a step boundary, resumable
        return EXIT_STOPPED
    if sink is not None and status == GONE:
        sink(f"error: the job on {cluster} ended with its machine: the allocation is gone (cancelled, "
             "preempted, expired or autodowned)")
    elif sink is not None and status != "FAILED" and "hard cap" not in sink.last_error:
        sink(f"error: the cluster's job ended {status} (cancelled there: scancel, preemption or an admin)")
    return 1


def _rented_hook(runs, plan: LaunchPlan, sink):
    """_record_rented when SkyPilot had a choice (the plan's machine and fallbacks), else nothing."""
    if isinstance(plan.gpu, list) and len(plan.gpu) > 1:
        return lambda machine: _record_rented(runs, plan, machine, sink)
    return None


def _record_rented(runs, plan: LaunchPlan, machine: dict, sink) -> None:
    """The machine SkyPilot rented, said and recorded: with fallbacks it may not be the plan's first
    choice, and the run's cost (status, report, the ledger) must be that machine's $/h."""
    rate = machine.get("usd_per_hour")
    sink(f"rented {machine['accelerator']} ({machine.get('instance_type') or '?'}"
         + (f", ${rate:.2f}/h)" if rate else ")"))
    run = runs.get(plan.run_id)
    if rate and run.usd_per_hour is not None and abs(rate - run.usd_per_hour) > 1e-9:
        runs.update(plan.run_id, usd_per_hour=rate)
        Ledger(runs).set_rate(plan.run_id, rate)
