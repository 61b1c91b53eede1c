"""Following a run's log: a live progress bar from AMIGO_PROGRESS lines, other lines as they come.

Used by `launch` (unless --detach) and `logs -f`. Reads only the log file and
the run record, so any number of terminals can follow one run, and a killed
follower loses nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from amigo_burst.lifecycle.reconcile import reconcile_run
from amigo_burst.state import paths
from amigo_burst.state.records import FINAL, open_records

PROGRESS = "AMIGO_PROGRESS "


def parse_progress(line: str) -> dict | None:
    if not line.startswith(PROGRESS):
        return None
    try:
        return json.loads(line[len(PROGRESS):])
    except json.JSONDecodeError:
        return None


def progress_fields(p: dict) -> dict:
    """The bar's fields from one AMIGO_PROGRESS line; `eval` shows the latest held-out loss, if any."""
    loss, tps, ev = p.get("loss"), p.get("tokens_per_s"), p.get("eval_loss")
    return {"stage": p.get("stage", "?"), "loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
            "tps": f"{tps:,.0f}" if isinstance(tps, (int, float)) else "-",
            "eval": f" (eval {ev:.4f})" if isinstance(ev, (int, float)) else ""}


def _lines(path: Path, pos: int) -> tuple[list[str], int]:
    if not path.is_file():
        return [], pos
    with path.open("r", encoding="utf-8", errors="replace") as f:
        f.seek(pos)
        chunk = f.read()
        end = chunk.rfind("\n") + 1  # only whole lines; the rest next time
        return chunk[:end].splitlines(), pos + len(chunk[:end].encode())


def follow(cfg, run_id: str, console, follow_live: bool = True, poll_s: float = 0.3):
    """Print the run's log; with follow_live, until the run ends. Returns the final Run record."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    runs = open_records(cfg.root)
    log = paths.run_dir(cfg.root, run_id) / "train.log"
    run = runs.get(run_id)
    pos = 0
    bar = Progress(TextColumn("stage {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}{task.fields[eval]}  {task.fields[tps]} tok/s"),
                   TimeRemainingColumn(),
                   console=console, transient=False, disable=not follow_live)
    task, last_eval = None, ""
    with bar:
        while True:
            lines, pos = _lines(log, pos)
            for line in lines:
                p = parse_progress(line)
                if p is None:
                    if not line.startswith("AMIGO_DONE"):
                        bar.console.print(escape(line), highlight=False)
                    continue
                fields = progress_fields(p)
                last_eval = fields["eval"] = fields["eval"] or last_eval  # eval lines come every eval_steps
                if task is None:
                    task = bar.add_task("train", total=p.get("total") or None, **fields)
                bar.update(task, completed=p.get("step", 0), total=p.get("total") or None, **fields)
            if not follow_live:
                return run
            run = reconcile_run(cfg, runs, runs.get(run_id))
            if run.status in FINAL:
                lines, pos = _lines(log, pos)
                for line in lines:
                    if parse_progress(line) is None and not line.startswith("AMIGO_DONE"):
                        bar.console.print(escape(line), highlight=False)
                return run
            time.sleep(poll_s)
