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
             "usd_per_hour", "tokens_per_s", "peak_vram_gib", "downloaded", "never_started", "probe")


def _money(v) -> str:
    from amigo_burst.planning.units import usd_text

    return f"{usd_text(v)}/h" if v else "-"  # $0.0195/h on a laptop, not $0.02/h


def _cells(r) -> dict[str, str]:
    started = (r.started or "-")
    return {
        "run": r.id, "stage": str(r.stage), "target": r.target,
        "status": f"{r.status} (probe)" if r.is_probe else r.status,  # a probe is never the stage's run
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
    if sum(widths[c] for c in REQUIRED) + GAP * (len(REQUIRED) - 1) > width:
        return _stacked(runs, rows, width)
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
        lines += _note_line(r, width, "    ")
    return lines


def _stacked(runs, rows, width: int) -> list[str]:
    """A terminal too narrow for the table: each run as its id, then stage, target and status below it
    (nothing cut: they are what you type next)."""
    from rich.markup import escape

    lines = []
    for r, cells in zip(runs, rows, strict=True):
        color = COLORS.get(r.status, "default")
        lines.append(f"[bold]{escape(cells['run'])}[/bold]")
        where = f"  stage {cells['stage']}  {cells['target']}"
        status = f"[{color}]{escape(cells['status'])}[/{color}]"
        if len(where) + 2 + len(cells["status"]) <= width:
            lines.append(f"{escape(where)}  {status}")
        else:
            lines += [escape(where), f"  {status}"]
        lines += _note_line(r, width, "  ")
    return lines


def _note_line(r, width: int, indent: str) -> list[str]:
    """The run's spot note and reason under its row, dim, cut to the terminal (or nothing)."""
    from rich.markup import escape

    text = "; ".join(x for x in (_spot_note(r), r.reason) if x)
    if not text:
        return []
    room = max(width - len(indent) - 2, 20)
    text = text if len(text) <= room else text[: room - 1] + "…"
    return [f"{indent}[dim]↳ {escape(text)}[/dim]"]


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
    d["probe"] = r.is_probe
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
        if v:  # one key a line (nested keys dotted), not one JSON line hundreds of characters wide
            from rich.padding import Padding
            from rich.table import Table

            con.print(f"{k:>14}:")
            grid = Table.grid(padding=(0, 1))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")  # a hash or a path breaks under its own column
            for key, value in flat(v):
                grid.add_row(escape(key) + ":", escape(value))
            con.print(Padding(grid, (0, 0, 0, 16), expand=False))


def flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value as short text) for every leaf of D, keys sorted; lists and scalars as JSON."""
    out = []
    for k in sorted(d, key=str):
        v, key = d[k], f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += flat(v, key + ".")
        else:
            out.append((key, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
    return out


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
    try:  # what the file system says, not the permission bits alone (/proc/x: root "may" write there)
        import tempfile

        fd, probe = tempfile.mkstemp(dir=parent, prefix=".amigo-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{flag} {out}: cannot write in {parent} ({e.strerror or e})") from None
