"""Following a run's log: a live progress bar from AMIGO_PROGRESS lines, the lines that matter as they come.

Used by `launch` (unless --detach), `pipeline` and `logs`. Reads only the log file and the run
record, so any number of terminals can follow one run, and a killed follower loses nothing.

The terminal shows what a person reads: our own lines, errors, the bar. Library noise (progress bars
of tokenizer passes and weight loading, Python warnings with their source lines, tracebacks' frames)
stays in the run's log file only — `logs RUN --raw` prints the file as it is. Long lines are cut at
the terminal's width instead of wrapping over several lines.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from amigo_burst.lifecycle.reconcile import reconcile_run
from amigo_burst.state import paths
from amigo_burst.state.records import FINAL, open_records

PROGRESS = "AMIGO_PROGRESS "

# Lines a person following a stage does not need (they stay in train.log):
NOISE = tuple(re.compile(p) for p in (
    r"\d+%\|",  # tqdm bars: "Loading weights: 100%|████| 21/21 [...]", tokenizer passes, map()s
    r"(it|examples|B|ba)/s\]\s*$",  # tqdm bars cut before their percentage
    r"^\S+\.py:\d+: \w*Warning: ",  # warnings.warn's first line (its source line follows, indented)
    r"^Failed to load CPU gemm_4bit_forward",  # bitsandbytes on a CPU without the `kernels` package
    r"^\[transformers\] ",  # transformers' advisory notes (mtime not reliable...)
    r"^got \S+ -> \S+: \d+ files",  # the store CLI's fetch summary (the controller printed the upload)
    r"^(Traceback \(most recent call last\)|During handling of the above exception|The above exception)",
))


class Display:
    """Which log lines reach the terminal. Stateful: the indented lines after a warning or a traceback
    header (source lines, frames) are hidden with it; the exception's own last line is shown."""

    def __init__(self):
        self._hiding_block = False

    def wanted(self, line: str) -> bool:
        if self._hiding_block and line[:1].isspace():
            return False
        self._hiding_block = False
        if not line.strip() or line.startswith("AMIGO_"):
            return False
        if any(p.search(line) for p in NOISE):
            self._hiding_block = True
            return False
        return True


class Detached(Exception):
    """Ctrl-C while following: the run goes on in its worker; the CLI says how to reattach or stop it."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


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


def progress_text(p: dict) -> str:
    """One AMIGO_PROGRESS line as words, for `logs` without -f. An evaluation is its own event (after the
    step's training log): its line says so, so a step is listed once."""
    if isinstance(p.get("eval_loss"), (int, float)):
        return f"stage {p.get('stage', '?')}  eval at step {p.get('step', '?')}/{p.get('total') or '?'}  " \
               f"eval loss {p['eval_loss']:.4f}"
    loss = p.get("loss")
    return (f"stage {p.get('stage', '?')}  step {p.get('step', '?')}/{p.get('total') or '?'}"
            + (f"  loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            + (f"  {p['tokens_per_s']:,.0f} tok/s" if isinstance(p.get("tokens_per_s"), (int, float)) else ""))


def _lines(path: Path, pos: int) -> tuple[list[str], int]:
    # Opened, not asked first: the worker sets its log aside for a moment while it fetches the outputs
    # (download.worker_log_aside), so a file that existed a moment ago may be gone when it is opened.
    try:
        with path.open("r", encoding="utf-8", errors="replace") as f:
            f.seek(pos)
            chunk = f.read()
    except FileNotFoundError:  # not written yet, or set aside: the next poll reads it
        return [], pos
    end = chunk.rfind("\n") + 1  # only whole lines; the rest next time
    return chunk[:end].splitlines(), pos + len(chunk[:end].encode())


def print_log(cfg, run_id: str, console, raw: bool = False):
    """`logs RUN`: the log as it is now, then the run's status. Progress lines as words
    (step, loss, tok/s); library noise hidden unless RAW. Returns the Run."""
    from rich.markup import escape

    run = open_records(cfg.root).get(run_id)
    lines, _ = _lines(paths.run_dir(cfg.root, run.id) / "train.log", 0)
    if raw:
        for line in lines:
            console.print(escape(line), highlight=False, soft_wrap=True)
        return run
    show = Display()
    for line in lines:
        p = parse_progress(line)
        if p is not None:
            console.print(progress_text(p), highlight=False, overflow="ellipsis", no_wrap=True, crop=True)
        elif show.wanted(line):
            console.print(escape(line), highlight=False, overflow="ellipsis", no_wrap=True, crop=True)
    return run


def follow(cfg, run_id: str, console, follow_live: bool = True, poll_s: float = 0.3):
    """Print the run's log until the run ends (or, without follow_live, as it is now). Returns the final
    Run record. Ctrl-C raises Detached: the worker, in its own session, goes on."""
    if not follow_live:
        return print_log(cfg, run_id, console)
    try:
        return _follow(cfg, run_id, console, poll_s)
    except KeyboardInterrupt:
        raise Detached(run_id) from None


def _follow(cfg, run_id: str, console, poll_s: float):
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    runs = open_records(cfg.root)
    log = paths.run_dir(cfg.root, run_id) / "train.log"
    pos = 0
    show = Display()
    bar = Progress(TextColumn("stage {task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}{task.fields[eval]}  {task.fields[tps]} tok/s"),
                   TimeRemainingColumn(), console=console, transient=False)
    task, last_eval = None, ""

    def show_lines(lines: list[str]) -> None:
        nonlocal task, last_eval
        for line in lines:
            p = parse_progress(line)
            if p is None:
                if show.wanted(line):
                    bar.console.print(escape(line), highlight=False, overflow="ellipsis", no_wrap=True, crop=True)
                continue
            fields = progress_fields(p)
            last_eval = fields["eval"] = fields["eval"] or last_eval  # eval lines come every eval_steps
            if task is None:
                task = bar.add_task("train", total=p.get("total") or None, **fields)
            bar.update(task, completed=p.get("step", 0), total=p.get("total") or None, **fields)

    with bar:
        while True:
            lines, pos = _lines(log, pos)
            show_lines(lines)
            run = reconcile_run(cfg, runs, runs.get(run_id))
            if run.status in FINAL:
                show_lines(_lines(log, pos)[0])
                return run
            time.sleep(poll_s)
