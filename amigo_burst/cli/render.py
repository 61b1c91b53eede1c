"""How runs look in the terminal: the `status` list, one run's details, and `status --json`.

The list never cuts a run id, a target or a status (they are what you type next): those columns
always get their full width; started, tok/s, peak GiB and $/h are shown when the terminal has room,
and a run's reason goes on its own indented line below it, cut at the terminal's width.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from amigo_burst.errors import UserError

COLORS = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan"}
JSON_KEYS = ("id", "stage", "target", "status", "reason", "started", "ended", "cluster", "from_run",
             "usd_per_hour", "tokens_per_s", "peak_vram_gib", "downloaded", "never_started")


def _money(v) -> str:
    return f"${v:.2f}/h" if v else "-"


def _cells(r) -> dict[str, str]:
    started = (r.started or "-")
    return {
        "run": r.id, "stage": str(r.stage), "target": r.target, "status": r.status,
        "started": f"{started[5:10]} {started[11:16]}" if len(started) >= 16 else started,
        "tok/s": f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-",
        "peak GiB": f"{r.peak_vram_gib:.2f}" if r.peak_vram_gib else "-",
        "$/h": _money(r.usd_per_hour),
    }


REQUIRED = ("run", "stage", "target", "status")
OPTIONAL = ("started", "tok/s", "peak GiB", "$/h")  # (a run id carries its start time too)
GAP = 2


def runs_table(runs, width: int) -> list[str]:
    """Lines (rich markup) of the run list at WIDTH columns; runs in the order given."""
    from rich.markup import escape

    rows = [_cells(r) for r in runs]
    widths = {c: max([len(c)] + [len(row[c]) for row in rows]) for c in (*REQUIRED, *OPTIONAL)}
    cols = list(REQUIRED)
    for c in OPTIONAL:  # the optional columns while they fit
        if sum(widths[x] for x in cols) + GAP * len(cols) + widths[c] <= width:
            cols.append(c)
    right = {"stage", "tok/s", "peak GiB", "$/h"}

    def line(cells: dict[str, str], color: str | None = None) -> str:
        out = []
        for c in cols:
            text = cells[c].rjust(widths[c]) if c in right else cells[c].ljust(widths[c])
            text = escape(text)
            if c == "status" and color:
                text = f"[{color}]{text}[/{color}]"
            out.append(text)
        return (" " * GAP).join(out).rstrip()

    lines = [f"[bold]{line({c: c for c in cols})}[/bold]"]
    for r, cells in zip(runs, rows, strict=True):
        lines.append(line(cells, COLORS.get(r.status)))
        text = "; ".join(x for x in (_spot_note(r), r.reason) if x)
        if text:
            room = max(width - 6, 20)
            text = text if len(text) <= room else text[: room - 1] + "…"
            lines.append(f"    [dim]↳ {escape(text)}[/dim]")
    return lines


def _spot_note(r) -> str:
    """A managed (spot) run: how often SkyPilot recovered it after a preemption."""
    art = r.artifacts or {}
    if not art.get("spot"):
        return ""
    n = art.get("recoveries") or 0
    return f"spot, recovered {n}x" if n else "spot"


def render_runs(con, runs, hidden: int = 0, money: str = "") -> None:
    """The `status` list: newest first (runs as given), with how many never-started runs are hidden, and
    the project's money (planning/ledger.money_line) when anything was spent or committed."""
    if money:
        con.print(f"money: {money}", highlight=False, soft_wrap=True)
    if not runs:
        con.print("no runs yet: `amigo-burst launch --stage 1` or `amigo-burst pipeline`")
        return
    con.print("runs (newest first)")
    for text in runs_table(runs, con.width):
        con.print(text, highlight=False, overflow="ellipsis", no_wrap=True, crop=True)
    if hidden:
        con.print(f"[dim]{hidden} failed launch(es) that never started are not shown: `amigo-burst status --all`[/dim]")


def run_json(r) -> dict:
    """One run as `status --json` prints it (keys: JSON_KEYS, documented in README)."""
    d = asdict(r)
    d["from_run"] = (r.artifacts or {}).get("from_run")
    d["never_started"] = r.never_started
    return {k: d.get(k) for k in JSON_KEYS}


def render_json(runs) -> str:
    return json.dumps([run_json(r) for r in runs], indent=2)


def render_run(con, r) -> None:
    from rich.markup import escape

    for k in ("id", "stage", "target", "cluster", "status", "reason", "started", "ended", "usd_per_hour",
              "tokens_per_s", "peak_vram_gib", "downloaded"):
        con.print(f"{k:>14}: {escape(str(getattr(r, k, None)))}", soft_wrap=True)
    for k in ("artifacts", "estimate", "metrics"):
        v = getattr(r, k, None)
        if v:
            con.print(f"{k:>14}: {escape(json.dumps(v, sort_keys=True))}", soft_wrap=True)


def check_out_file(out: Path | None, flag: str) -> None:
    """An output file a command may write: its folder exists and is writable, and it is not a folder."""
    if out is None:
        return
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{flag} {out}: is a folder; give a file name (e.g. {out / 'report.html'})")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{flag} {out}: folder {parent} is not writable")
