"""Rich tables for runs (the CLI renders; the data comes from runs.py)."""

from __future__ import annotations

import json


def _money(v) -> str:
    return f"${v:.2f}/h" if v else "-"


def render_runs(con, runs) -> None:
    from rich.table import Table

    t = Table(title="runs (newest first)")
    for col in ("run", "stage", "target", "status", "started", "tok/s", "peak GiB", "$/h", "reason"):
        t.add_column(col)
    colors = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan"}
    for r in runs:
        c = colors.get(r.status, "white")
        t.add_row(r.id, str(r.stage), r.target, f"[{c}]{r.status}[/{c}]", (r.started or "-")[:19],
                  f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-",
                  f"{r.peak_vram_gib:.2f}" if r.peak_vram_gib else "-", _money(r.usd_per_hour), (r.reason or "")[:60])
    if not runs:
        con.print("no runs yet: `amigo-burst launch --stage 1` or `amigo-burst pipeline`")
        return
    con.print(t)


def render_run(con, r) -> None:
    from rich.markup import escape

    for k in ("id", "stage", "target", "cluster", "status", "reason", "started", "ended", "usd_per_hour",
              "tokens_per_s", "peak_vram_gib", "downloaded"):
        con.print(f"{k:>14}: {escape(str(getattr(r, k, None)))}")
    for k in ("artifacts", "estimate", "metrics"):
        v = getattr(r, k, None)
        if v:
            con.print(f"{k:>14}: {escape(json.dumps(v, sort_keys=True))}")
