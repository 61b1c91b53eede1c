"""SkyPilot managed jobs (`--spot`): SkyPilot's jobs controller runs the task on spot machines and
relaunches it elsewhere after a preemption. It names the cluster itself, so a managed job is watched
and stopped through the managed-jobs API, never by a cluster name:

    spot_launch(task, name)     sky.jobs.launch, restarts on preemption only (job_recovery below)
    spot_job(job_id)            sky.jobs.queue_v2 for that job: status, recovery_count, failure_reason
    spot_cancel(job_id)         sky.jobs.cancel

What restarts a managed job (SkyPilot 0.14, jobs/recovery_strategy.py): a preemption always (the
strategy); a non-zero exit only when `max_restarts_on_errors` allows (we set 0) or the exit code is
in `recover_on_exit_codes`. The one code that means "preempted, recover me" is the entrypoint's
EXIT_STOPPED: a SIGTERM caught and the step saved. On a spot job nobody else sends that SIGTERM
(`down` cancels through the API; the cap's exit is 124). A budget stop (3), a refused input (2), the
cap (124) and a crash are final: each restart would otherwise bill again.
"""

from __future__ import annotations

import io
from typing import Any

from amigo_burst import clouds
from amigo_burst.errors import UserError
from amigo_burst.runners.sky import task_cloud
from amigo_burst.runners.sky_api import api_errors, sdk
from train.schema import EXIT_STOPPED

JOB_RECOVERY = {"max_restarts_on_errors": 0, "recover_on_exit_codes": [EXIT_STOPPED]}
FIELDS = ["job_id", "job_name", "status", "recovery_count", "failure_reason"]
TERMINAL = ("SUCCEEDED", "CANCELLED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE",
            "FAILED_CONTROLLER")


def spot_launch(task, name: str) -> int:
    """A SkyPilot managed job on spot machines, restarted after preemption only.

    A preempted machine takes its disk with it: the job must mirror checkpoints to an
    S3 store (AMIGO_STORE_URI) and resume from there, so the rsync transport is refused.
    """
    sky = sdk()
    cloud = task_cloud(task)
    if cloud is not None and not getattr(clouds.cloud(cloud), "spot", True):
        spot_ones = " or ".join(n for n, c in clouds.CLOUDS.items() if c.spot)
        raise UserError(f"--spot: {cloud} has no spot machines (use {spot_ones})")
    if not task.envs.get("AMIGO_STORE_URI", "").startswith("s3://"):
        raise UserError("--spot needs an s3:// store (amigo.toml [store] url): a preempted disk is lost")
    task.set_resources_override({"use_spot": True, "job_recovery": dict(JOB_RECOVERY)})
    job_ids, _handle = sky.stream_and_get(sky.jobs.launch(task, name=name), output_stream=io.StringIO())
    return job_ids[0]


def _record(r: dict) -> dict[str, Any]:
    status = r["status"]
    return {"job_id": r["job_id"], "name": r.get("job_name"),
            "status": status.value if hasattr(status, "value") else str(status or "UNKNOWN"),
            "recovery_count": r.get("recovery_count") or 0, "failure_reason": r.get("failure_reason")}


def spot_job(job_id: int) -> dict[str, Any] | None:
    """The managed job's status, recovery_count and failure_reason; None when the queue does not know it.
    Raises when the jobs controller cannot be asked (the caller retries: that is not an ending)."""
    sky = sdk()
    got = sky.get(sky.jobs.queue_v2(refresh=False, job_ids=[job_id], fields=FIELDS))
    records = got[0] if isinstance(got, tuple) else got
    return next((_record(r) for r in records if r["job_id"] == job_id), None)


@api_errors
def spot_cancel(job_id: int) -> None:
    """Cancel the managed job: SkyPilot stops its task and tears its cluster down (no restart)."""
    sky = sdk()
    sky.get(sky.jobs.cancel(job_ids=[job_id]))
