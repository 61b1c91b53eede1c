"""The run worker: `python -m amigo_burst.lifecycle.worker CONFIG RUN_ID [DEAD_PID]` (handoff.spawn_worker).

Runs the target (local subprocesses here; a cloud job: cloud_job.py), streams its log into
.amigo/runs/<id>/train.log (secrets redacted), brings the outputs back, and records how the run
ended and what its attempt cost (the ledger). It is the only writer of a run's final status, so the
controller can die at any time; it may die too: a cloud job goes on, and the next `status` or
`logs -f` starts another worker that takes over (reconcile.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

from amigo_burst.config import load_config
from amigo_burst.errors import UserError, one_line
from amigo_burst.lifecycle.cloud_job import run_sky
from amigo_burst.lifecycle.download import worker_log_aside
from amigo_burst.lifecycle.follow import NOISE
from amigo_burst.lifecycle.handoff import STOP_REASON, LaunchPlan, read_plan
from amigo_burst.runners.local import run_task
from amigo_burst.secrets import load_secrets, redact
from amigo_burst.state import paths
from amigo_burst.state.ledger import Ledger
from amigo_burst.state.records import open_records, utc_now
from amigo_burst.state.store import open_from_config
from amigo_burst.targets import get_target
from train.schema import EXIT_BUDGET, EXIT_STOPPED
from train.storage import names as manifest_names

SKY_PREFIX = re.compile(r"^\(\S+, pid=\d+\) ")  # SkyPilot prefixes each job line with "(task, pid=N) "
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # SkyPilot's exception messages come coloured
RESERVE_BYTES = 2**20  # set aside at start, freed at the end: room to record a run that filled the disk


PY_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:")


def reason_score(line: str) -> int:
    """How well a log line explains a failure: our own `error:` lines (the entrypoint's bad input,
    the worker's) beat a Python exception's last line, which beats any line saying error/failed
    (srun's "task 0: Exited with exit code 2" must not hide the line that says why)."""
    text = line.strip()
    if not text or text.startswith("AMIGO_"):
        return 0
    if any(p.search(text) for p in NOISE):  # a library's warning ("Failed to load CPU gemm_4bit...") explains nothing
        return 0
    if text.startswith("error:"):
        return 3
    if PY_EXCEPTION.match(text):
        return 2
    low = text.lower()
    return 1 if ("error" in low or "exception" in low or "failed" in low) else 0


class LogSink:
    """Appends redacted lines to train.log, flushed per line so `logs -f` sees them at once.

    A line that cannot be written (the disk is full) does not stop the run's bookkeeping: the
    first such error is kept (`write_error`) and becomes the run's reason, the lines still feed
    `last_error`, and the training process's output keeps being drained."""

    def __init__(self, path: Path, secrets: dict[str, str]):
        self.path = path
        self.f = path.open("a", encoding="utf-8")
        self.secrets = secrets
        self.last_error = ""
        self.write_error: OSError | None = None
        self._score = 0
        self._lock = threading.Lock()  # the job's log and the checkpoint pulls write from two threads

    def __call__(self, text: str) -> None:
        with self._lock:
            for line in str(text).splitlines() or [""]:  # a multi-line message is several log lines
                self._line(line)

    def _line(self, line: str) -> None:
        line = redact(ANSI.sub("", SKY_PREFIX.sub("", line, count=1)), self.secrets)
        score = reason_score(line)
        if score and score >= self._score:  # the latest of the most telling lines
            self.last_error, self._score = one_line(line), score
        try:
            self.f.write(line + "\n")
            self.f.flush()
        except OSError as e:
            self.write_error = self.write_error or e

    @property
    def disk_full(self) -> str:
        """The reason to record when the log could not be written for lack of space ("" otherwise)."""
        e = self.write_error
        if e is None or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return ""
        return one_line(f"disk full: cannot write {self.path}: {e.strerror}; free space, then "
                        "`launch --resume` continues from the last checkpoint")


def run_local(cfg, plan: LaunchPlan, secrets, sink, runs) -> int:
    target = get_target(plan.target, cfg.root)
    return run_task(target.config, plan.envs, secrets, Path(plan.workdir), sink,
                    on_start=lambda pid: runs.update(plan.run_id, child_pid=pid))


def collect_outputs(cfg, plan: LaunchPlan, sink) -> None:
    """The run's outputs manifest from the project's store into .amigo/runs/<id>/, sha256-verified: put
    there by the trainer's mirror (a bucket, the laptop's own store) or pulled from the machine's (pull.py)."""
    d = paths.run_dir(cfg.root, plan.run_id)
    try:
        with worker_log_aside(d):  # the fetch must not replace our own train.log
            open_from_config(cfg, bars=False).get_dir(manifest_names.outputs(plan.run_id), d)
    except Exception as e:  # noqa: BLE001 - recorded as the run's failure reason
        sink(f"error: outputs not brought back: {one_line(e)}")
        raise


STOP_CODES = (-signal.SIGTERM, 128 + signal.SIGTERM, 130)  # SIGTERM (as a signal or via bash), Ctrl-C


def killed_by(rc: int) -> int | None:
    """The signal that ended the target: -N (Popen's word for it) or 128+N (a shell's, run.sh's)."""
    n = -rc if rc < 0 else rc - 128 if 128 < rc < 128 + 65 else 0
    return n if n in {s.value for s in signal.Signals} else None


def killed_text(n: int) -> str:
    hint = "; SIGKILL: `kill -9`, or the system's out-of-memory killer" if n == signal.SIGKILL else \
        f"; {signal.Signals(n).name}"
    return f"training process killed (signal {n}){hint}"


def final_status(rc: int, *, has_adapter: bool, last_error: str, recorded: str,
                 recorded_reason: str | None, stage: int | None = None,
                 metrics: dict | None = None) -> tuple[str, str]:
    """(status, reason) of a run from how its target ended (pure: tests read it as a table).

    rc 0 with an adapter -> SUCCEEDED; EXIT_BUDGET -> STOPPED "budget"; EXIT_STOPPED (the entrypoint
    caught SIGTERM, saved the step's checkpoint) -> STOPPED, saying stopped or preempted, the step, and
    the command that continues it; SIGTERM/Ctrl-C that killed it outright -> STOPPED; anything else ->
    FAILED with the most telling log line. A run `down` already marked STOPPED stays STOPPED: its word
    stands over the failure the stop itself caused.
    """
    m = metrics or {}
    marked = recorded == "STOPPED" or recorded_reason == STOP_REASON  # `down` said so (teardown.py)
    if rc in STOP_CODES and m.get("exit_reason") in ("stopped", "preempted"):
        rc = EXIT_STOPPED  # the shell around it died of the same signal; the entrypoint saved first
    resume = f"`amigo-burst launch --stage {stage} --resume` continues it" if stage else "--resume continues it"
    if rc == 0 and has_adapter:
        status, reason = "SUCCEEDED", ""
    elif rc == EXIT_BUDGET:
        status, reason = "STOPPED", "budget"
    elif rc == EXIT_STOPPED:
        who = "preempted" if m.get("exit_reason") == "preempted" else (
            recorded_reason if marked and recorded_reason else "stopped")
        step = f" at step {m['steps']} of {m['total_steps']}" if m.get("steps") is not None else ""
        status, reason = "STOPPED", f"{who}{step}, checkpoint saved: {resume}"
    elif rc in STOP_CODES:
        status, reason = "STOPPED", f"stopped by user: {resume} from its last checkpoint"
    elif killed_by(rc):  # the signal is the story, not a library's warning line before it
        status, reason = "FAILED", killed_text(killed_by(rc))
    else:
        status, reason = "FAILED", last_error or f"exit code {rc}"
    if marked and status == "FAILED":
        status, reason = "STOPPED", recorded_reason or ""
    return status, reason


def finish(cfg, plan: LaunchPlan, rc: int, sink, runs) -> None:
    d = paths.run_dir(cfg.root, plan.run_id)
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    current = runs.get(plan.run_id)
    # an eval run (lifecycle/evaluate.py: artifacts["eval"]) succeeds with a score, not an adapter
    scored = bool((current.artifacts or {}).get("eval")) and bool(metrics.get("humaneval"))
    status, reason = final_status(rc, has_adapter=scored or (d / "adapter" / "adapter_config.json").is_file(),
                                  last_error=sink.disk_full or sink.last_error, recorded=current.status,
                                  recorded_reason=current.reason, stage=current.stage, metrics=metrics)
    complete = all((d / "adapter" / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))
    runs.update(
        plan.run_id, status=status, reason=reason, ended=utc_now(), metrics=metrics,
        tokens_per_s=metrics.get("tokens_per_s"), peak_vram_gib=metrics.get("peak_mem_allocated_gib"),
        downloaded=1 if complete and not (d / ".partial").exists() else 0,
        artifacts={**current.artifacts, "outputs": manifest_names.outputs(plan.run_id)},
    )
    Ledger(runs).close(plan.run_id)  # after teardown: the machine's time is what it billed


def _collect(cfg, plan: LaunchPlan, sink, rc: int) -> None:
    """Outputs back. A run killed by a signal may have saved its outputs first (the entrypoint's
    SIGTERM path) or not (killed before training began): then there is nothing to bring back."""
    if rc not in STOP_CODES:
        collect_outputs(cfg, plan, sink)
        return
    try:
        collect_outputs(cfg, plan, sink)
    except Exception:  # noqa: BLE001 - stopped before any output: the stop stays the reason
        pass


def _reserve(path: Path) -> None:
    """RESERVE_BYTES of real blocks (not a sparse file), freed before the end is recorded."""
    try:
        with path.open("wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
    except OSError:
        path.unlink(missing_ok=True)  # already short of space: nothing to set aside


def main(config_path: str, run_id: str, reattach_from_pid: int | None = None) -> int:
    """Run the launch plan; with reattach_from_pid, take over a cloud run whose worker died."""
    cfg = load_config(config_path)
    plan = read_plan(cfg.root, run_id)
    runs = open_records(cfg.root)
    secrets = load_secrets(cfg.root)
    if reattach_from_pid is not None:
        # only one taker: the record's pid must still be the dead worker's
        if not runs.take_over(run_id, reattach_from_pid, os.getpid()):
            return 0
    else:
        runs.update(run_id, status="RUNNING", started=utc_now(), pid=os.getpid())
    reserve = paths.run_dir(cfg.root, run_id) / ".reserve"
    _reserve(reserve)
    sink = LogSink(paths.run_dir(cfg.root, run_id) / "train.log", secrets)
    if reattach_from_pid is not None:
        sink(f"--- reattached to job {runs.get(run_id).job_id} on {plan.cluster} (the earlier worker stopped) ---")
    rc = 1
    try:
        target = get_target(plan.target, cfg.root)
        if target.is_local:
            rc = run_local(cfg, plan, secrets, sink, runs)
            if rc in (0, EXIT_BUDGET, EXIT_STOPPED) or rc in STOP_CODES:
                _collect(cfg, plan, sink, rc)
        else:  # followed to its end, whatever the stream does; outputs collected before teardown
            rc = run_sky(cfg, plan, secrets, sink, runs, job=runs.get(run_id).job_id if reattach_from_pid else None,
                         collect=collect_outputs)
    except Exception as e:  # noqa: BLE001 - whatever happened, the record must say so
        sink(f"error: {e.__class__.__name__}: {one_line(e)}")
        rc = rc if rc not in (0, EXIT_BUDGET, EXIT_STOPPED) else 1
    finally:
        reserve.unlink(missing_ok=True)  # the room to write the end, even on a full disk
        try:
            finish(cfg, plan, rc, sink, runs)
        except (UserError, OSError) as e:  # the record could not be written: say why where we can
            print(f"error: could not record how run {run_id} ended: {one_line(e)}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
