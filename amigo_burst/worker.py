"""The run worker: `python -m amigo_burst.worker CONFIG RUN_ID` (started detached by `launch`).

Runs the target, streams its log into .amigo/runs/<id>/train.log (secrets
redacted), brings the outputs back, and records how the run ended. It is the
only writer of a run's final status, so the controller can die at any time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

from amigo_burst.config import load_config
from amigo_burst.launch import BUDGET_EXIT, LaunchPlan, read_plan, run_dir, run_store
from amigo_burst.secrets import load_secrets, redact
from amigo_burst.targets import get_target


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LogSink:
    """Appends redacted lines to train.log, flushed per line so `logs -f` sees them at once."""

    def __init__(self, path: Path, secrets: dict[str, str]):
        self.f = path.open("a", encoding="utf-8")
        self.secrets = secrets
        self.last_error = ""

    def __call__(self, line: str) -> None:
        line = redact(line, self.secrets)
        if line.strip() and not line.startswith("AMIGO_"):
            low = line.lower()
            if "error" in low or "exception" in low or "failed" in low:
                self.last_error = line.strip()[-300:]
        self.f.write(line + "\n")
        self.f.flush()


def run_local(cfg, plan: LaunchPlan, secrets, sink, runs) -> int:
    from amigo_burst.runners.local import run_task

    target = get_target(plan.target, cfg.root)
    return run_task(target.config, plan.envs, secrets, Path(plan.workdir), sink,
                    on_start=lambda pid: runs.update(plan.run_id, child_pid=pid))


def run_sky(cfg, plan: LaunchPlan, secrets, sink, runs) -> int:
    from amigo_burst.runners import sky as skyr

    target = get_target(plan.target, cfg.root)
    task = skyr.build_task(target.path, plan.envs, secrets, Path(plan.workdir), gpu=plan.gpu)
    if plan.spot:
        job = skyr.spot_launch(task, plan.cluster)
        runs.update(plan.run_id, cluster=plan.cluster, job_id=job)
        return skyr.spot_tail(job, sink)
    try:
        job = skyr.launch(task, plan.cluster, idle_minutes=10, keep=plan.keep, on_line=sink)
        runs.update(plan.run_id, job_id=job)
        skyr.tail(plan.cluster, job, follow=True, on_line=sink)
        status = skyr.job_status(plan.cluster, job)
        if plan.transport == "rsync":
            skyr.rsync_down(plan.cluster, "~/sky_workdir/outputs/", run_dir(cfg, plan.run_id))
        return _sky_rc(status, run_dir(cfg, plan.run_id))
    finally:
        if not plan.keep:
            skyr.down(plan.cluster)


def _sky_rc(status: str, outputs: Path) -> int:
    """SkyPilot only says SUCCEEDED/FAILED/CANCELLED; metrics.json tells a budget stop apart."""
    if status == "SUCCEEDED":
        return 0
    m = outputs / "metrics.json"
    if m.is_file() and json.loads(m.read_text()).get("exit_reason") == "budget":
        return BUDGET_EXIT
    return 1 if status == "FAILED" else 130


def collect_outputs(cfg, plan: LaunchPlan, sink) -> None:
    if plan.transport != "store":
        return
    from amigo_burst.store import open_from_config

    try:
        open_from_config(cfg, bars=False).get_dir(f"runs/{plan.run_id}/outputs", run_dir(cfg, plan.run_id))
    except Exception as e:  # noqa: BLE001 - recorded as the run's failure reason
        sink(f"error: outputs not brought back: {e}")
        raise


def finish(cfg, plan: LaunchPlan, rc: int, sink, runs) -> None:
    d = run_dir(cfg, plan.run_id)
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    if rc == 0 and (d / "adapter" / "adapter_config.json").is_file():
        status, reason = "SUCCEEDED", ""
    elif rc == BUDGET_EXIT:
        status, reason = "STOPPED", "budget"
    elif rc in (-signal.SIGTERM, 128 + signal.SIGTERM, 130):
        status, reason = "STOPPED", "stopped by user"
    else:
        status, reason = "FAILED", sink.last_error or f"exit code {rc}"
    runs.update(
        plan.run_id, status=status, reason=reason, ended=now(), metrics=metrics,
        tokens_per_s=metrics.get("tokens_per_s"), peak_vram_gib=metrics.get("peak_mem_allocated_gib"),
        downloaded=1 if (d / "adapter").is_dir() else 0,
        artifacts={**runs.get(plan.run_id).artifacts, "outputs": f"runs/{plan.run_id}/outputs"},
    )


def main(config_path: str, run_id: str) -> int:
    cfg = load_config(config_path)
    plan = read_plan(cfg, run_id)
    runs = run_store(cfg)
    secrets = load_secrets(cfg.root)
    sink = LogSink(run_dir(cfg, run_id) / "train.log", secrets)
    runs.update(run_id, status="RUNNING", started=now(), pid=os.getpid())
    rc = 1
    try:
        target = get_target(plan.target, cfg.root)
        rc = (run_local if target.is_local else run_sky)(cfg, plan, secrets, sink, runs)
        if rc in (0, BUDGET_EXIT):
            collect_outputs(cfg, plan, sink)
    except Exception as e:  # noqa: BLE001 - whatever happened, the record must say so
        sink(f"error: {e.__class__.__name__}: {e}")
        rc = rc if rc not in (0, BUDGET_EXIT) else 1
    finally:
        finish(cfg, plan, rc, sink, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
