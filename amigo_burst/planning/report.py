"""Estimated vs actual, per run and stage: rows, totals, and their renderings (table, md, json, html).

Pure builders over run dicts (runs.Run as a dict: id, stage, target, status, started,
ended, usd_per_hour, tokens_per_s, peak_vram_gib, estimate, metrics). The HTML is one
self-contained file with inline SVG charts drawn here (no plotting library).

error % = (estimate - actual) / actual x 100: positive = we over-estimated.
Stable JSON keys (README): {"runs": [ROW_KEYS...], "totals": [TOTAL_KEYS...], "strategies": [...]}, plus
"benchmarks": [BENCH_KEYS...] when a run recorded a HumanEval score (metrics["humaneval"]).
"""

from __future__ import annotations

import html
import json
from datetime import datetime

ROW_KEYS = ("id", "stage", "target", "status", "started", "est_hours", "actual_hours", "hours_error_pct", "est_usd",
            "actual_usd", "usd_error_pct", "est_tokens_per_s", "actual_tokens_per_s", "tokens_per_s_error_pct",
            "est_peak_vram_gib", "actual_peak_vram_gib", "peak_vram_error_pct")
TOTAL_KEYS = ("group", "runs", "est_hours", "actual_hours", "est_usd", "actual_usd")
BENCH_KEYS = ("stage", "id", "problems", "pass_at_1", "pass_at_1_change", "usd", "pass_at_1_per_usd")


def _hours(started: object, ended: object) -> float | None:
    def t(x: object) -> float | None:
        if isinstance(x, (int, float)):
            return float(x)
        if isinstance(x, str) and x:
            try:
                return datetime.fromisoformat(x.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return None
        return None

    a, b = t(started), t(ended)
    return (b - a) / 3600 if a is not None and b is not None and b >= a else None


def _err(est: float | None, actual: float | None) -> float | None:
    return round((est - actual) / actual * 100, 1) if est is not None and actual else None


def _r(x: float | None, n: int = 4) -> float | None:
    return round(x, n) if isinstance(x, (int, float)) else None


def run_row(run: dict) -> dict:
    """One run -> a dict with ROW_KEYS in that order."""
    est, met = run.get("estimate") or {}, run.get("metrics") or {}
    hours = _hours(run.get("started"), run.get("ended"))
    rate = run.get("usd_per_hour")
    usd = hours * rate if hours is not None and rate is not None else None
    tps = run.get("tokens_per_s") or met.get("tokens_per_s")
    peak = run.get("peak_vram_gib") or met.get("peak_vram_gib")
    e_peak = est.get("peak_alloc_gib", est.get("peak_vram_gib"))  # measured peak = torch's allocated peak
    row = {
        "id": run.get("id"), "stage": run.get("stage"), "target": run.get("target"), "status": run.get("status"),
        "started": run.get("started"), "est_hours": _r(est.get("hours")), "actual_hours": _r(hours), "hours_error_pct": _err(est.get("hours"), hours),
        "est_usd": _r(est.get("usd")), "actual_usd": _r(usd), "usd_error_pct": _err(est.get("usd"), usd),
        "est_tokens_per_s": _r(est.get("tokens_per_s"), 1), "actual_tokens_per_s": _r(tps, 1),
        "tokens_per_s_error_pct": _err(est.get("tokens_per_s"), tps),
        "est_peak_vram_gib": _r(e_peak, 3), "actual_peak_vram_gib": _r(peak, 3),
        "peak_vram_error_pct": _err(e_peak, peak),
    }
    return row


def build_rows(runs: list[dict]) -> list[dict]:
    return [run_row(r) for r in sorted(runs, key=lambda r: (r.get("stage") or 0, str(r.get("started") or "")))]


def _sum(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs), 4) if xs else None


def build_totals(rows: list[dict], local_targets: set[str] | frozenset = frozenset()) -> list[dict]:
    """Per target, then local vs cloud, then everything."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"target {r['target']}", []).append(r)
    if local_targets:
        for r in rows:
            groups.setdefault("local" if r["target"] in local_targets else "cloud", []).append(r)
    groups["all runs"] = rows
    return [{"group": g, "runs": len(rs), "est_hours": _sum([r["est_hours"] for r in rs]),
             "actual_hours": _sum([r["actual_hours"] for r in rs]), "est_usd": _sum([r["est_usd"] for r in rs]),
             "actual_usd": _sum([r["actual_usd"] for r in rs])} for g, rs in groups.items()]


def build_benchmarks(runs: list[dict]) -> list[dict]:
    """HumanEval pass@1 per stage (its newest successful run with a score), the change from the stage
    before, and pass@1 per dollar spent on stages 1..N (the model stage N made cost all of them)."""
    best: dict[int, dict] = {}
    for run in sorted(runs, key=lambda r: str(r.get("started") or "")):
        he = (run.get("metrics") or {}).get("humaneval") or {}
        if run.get("status") == "SUCCEEDED" and he.get("problems"):
            best[run["stage"]] = run
    out, spent, prev = [], 0.0, None
    for stage in sorted(best):
        run, he = best[stage], best[stage]["metrics"]["humaneval"]
        usd = run_row(run)["actual_usd"]
        spent += usd or 0.0
        score = he.get("pass_at_1")
        out.append({"stage": stage, "id": run["id"], "problems": he["problems"], "pass_at_1": score,
                    "pass_at_1_change": round(score - prev, 4) if score is not None and prev is not None else None,
                    "usd": usd, "pass_at_1_per_usd": round(score / spent, 4) if score is not None and spent else None})
        prev = score
    return out


def build_report(runs: list[dict], strategies: list[dict] | None = None,
                 local_targets: set[str] | frozenset = frozenset()) -> dict:
    rows = build_rows(runs)
    rep = {"runs": rows, "totals": build_totals(rows, local_targets), "strategies": strategies or []}
    bench = build_benchmarks(runs)
    return {**rep, "benchmarks": bench} if bench else rep


# --------------------------------------------------------------------------- text renderings


def f_num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def f_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


COLUMNS = (("run", "id", str), ("stage", "stage", str), ("target", "target", str), ("status", "status", str),
           ("est h", "est_hours", f_num), ("h", "actual_hours", f_num), ("err", "hours_error_pct", f_pct),
           ("est $", "est_usd", f_num), ("$", "actual_usd", f_num),
           ("est tok/s", "est_tokens_per_s", lambda x: f_num(x, "{:,.0f}")),
           ("tok/s", "actual_tokens_per_s", lambda x: f_num(x, "{:,.0f}")),
           ("err", "tokens_per_s_error_pct", f_pct), ("est GiB", "est_peak_vram_gib", f_num),
           ("GiB", "actual_peak_vram_gib", f_num), ("err", "peak_vram_error_pct", f_pct))
TOTAL_COLUMNS = (("group", "group", str), ("runs", "runs", str), ("est h", "est_hours", f_num),
                 ("h", "actual_hours", f_num), ("est $", "est_usd", f_num), ("$", "actual_usd", f_num))
STRATEGY_COLUMNS = (("strategy", "name", str), ("est h", "hours", f_num), ("est $", "usd", f_num),
                    ("note", "note", str))
BENCH_COLUMNS = (("stage", "stage", str), ("run", "id", str), ("problems", "problems", str),
                 ("pass@1", "pass_at_1", lambda x: f_num(x, "{:.3f}")),
                 ("change", "pass_at_1_change", lambda x: f_num(x, "{:+.3f}")), ("$", "usd", f_num),
                 ("pass@1 per $", "pass_at_1_per_usd", lambda x: f_num(x, "{:.3g}")))


def _cells(row: dict, cols) -> list[str]:
    return [fn(row.get(key)) if row.get(key) is not None or fn is not str else "-" for _, key, fn in cols]


def _started(run_id: str | None, started: str | None) -> str:
    if isinstance(started, str) and len(started) >= 16:
        return f"{started[5:10]} {started[11:16]}"  # MM-DD HH:MM (UTC, as recorded)
    return run_id or "-"


def rich_tables(report: dict) -> list:
    """Terminal tables (fit 100 columns): each measure is one cell, estimate above actual (error %)."""
    from rich import box
    from rich.table import Table

    out = []
    if report["runs"]:
        t = Table(title="runs: estimated (top) vs actual (bottom, error %)", box=box.SIMPLE_HEAD)
        for head in ("started", "stage", "target", "status"):
            t.add_column(head, justify="right" if head == "stage" else "left")
        for head in ("hours", "$", "tokens/s", "peak GiB"):
            t.add_column(head, justify="right")
        for r in report["runs"]:
            def cell(est, act, err, fmt):
                return f"{f_num(est, fmt)}\n{f_num(act, fmt)} {f_pct(err) if err is not None else ''}".rstrip()

            t.add_row(_started(r["id"], r.get("started")), str(r["stage"]), str(r["target"]),
                      "ok" if r["status"] == "SUCCEEDED" else str(r["status"]),
                      cell(r["est_hours"], r["actual_hours"], r["hours_error_pct"], "{:.2f}"),
                      cell(r["est_usd"], r["actual_usd"], r["usd_error_pct"], "{:.2f}"),
                      cell(r["est_tokens_per_s"], r["actual_tokens_per_s"], r["tokens_per_s_error_pct"], "{:,.0f}"),
                      cell(r["est_peak_vram_gib"], r["actual_peak_vram_gib"], r["peak_vram_error_pct"], "{:.2f}"))
        out.append(t)
    for title, cols, rows in (("totals", TOTAL_COLUMNS, report["totals"]),
                              ("strategies (estimated)", STRATEGY_COLUMNS, report["strategies"]),
                              ("HumanEval pass@1 per stage", BENCH_COLUMNS, report.get("benchmarks"))):
        if not rows:
            continue
        t = Table(title=title, box=box.SIMPLE_HEAD)
        for head, key, fn in cols:
            t.add_column(head, justify="left" if fn is str and key != "runs" else "right")
        for r in rows:
            t.add_row(*_cells(r, cols))
        out.append(t)
    return out


def to_markdown(report: dict) -> str:
    parts = ["# amigo-burst report", "", "error % = (estimate - actual) / actual; positive: over-estimated.", ""]
    for title, cols, rows in (("Runs: estimated vs actual", COLUMNS, report["runs"]),
                              ("Totals", TOTAL_COLUMNS, report["totals"]),
                              ("Strategies (estimated)", STRATEGY_COLUMNS, report["strategies"]),
                              ("HumanEval pass@1 per stage", BENCH_COLUMNS, report.get("benchmarks"))):
        if not rows:
            continue
        parts += [f"## {title}", "", "| " + " | ".join(h for h, _, _ in cols) + " |",
                  "|" + "|".join("---" if fn is str else "---:" for _, _, fn in cols) + "|"]
        parts += ["| " + " | ".join(_cells(r, cols)) + " |" for r in rows]
        parts.append("")
    if not report["runs"]:
        parts.append("No runs yet.")
    return "\n".join(parts).rstrip() + "\n"


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


# --------------------------------------------------------------------------- SVG charts

EST_COLOR, ACT_COLOR = "#1f77b4", "#ff7f0e"


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math

    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * p:
            return m * p
    return 10 * p


def bar_chart(title: str, labels: list[str], series: list[tuple[str, str, list[float | None]]], unit: str,
              width: int = 560, height: int = 300) -> str:
    """Grouped vertical bars: one group per label, one bar per series (name, color, values)."""
    left, right, top, bottom = 60, 10, 40, 70
    pw, ph = width - left - right, height - top - bottom
    vmax = _nice_max(max([v for _, _, vs in series for v in vs if v is not None] or [0]))
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="{e(title)}">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{e(title)}</text>']
    for k in range(5):
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{vmax * k / 4:g}</text>')
    out.append(f'<text x="12" y="{top + ph / 2}" font-size="10" transform="rotate(-90 12 {top + ph / 2})" '
               f'text-anchor="middle">{e(unit)}</text>')
    n = max(len(labels), 1)
    gw = pw / n
    bw = gw * 0.8 / max(len(series), 1)
    for i, lab in enumerate(labels):
        x0 = left + i * gw + gw * 0.1
        for j, (name, color, vals) in enumerate(series):
            v = vals[i]
            if v is None:
                continue
            h = ph * v / vmax
            out.append(f'<rect x="{x0 + j * bw:.1f}" y="{top + ph - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{e(lab)} {e(name)}: {v:.3g} {e(unit)}</title></rect>')
        out.append(f'<text x="{left + i * gw + gw / 2:.1f}" y="{top + ph + 14}" text-anchor="middle" '
                   f'font-size="10">{e(lab)}</text>')
    for j, (name, color, _) in enumerate(series):
        out.append(f'<rect x="{left + j * 110}" y="{height - 22}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{left + j * 110 + 16}" y="{height - 12}" font-size="11">{e(name)}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/></svg>')
    return "".join(out)


def scatter_chart(title: str, points: list[tuple[str, float, float]], unit: str, width: int = 420,
                  height: int = 340) -> str:
    """Estimate (x) vs actual (y) with the y = x line: points above it ran longer than estimated."""
    left, right, top, bottom = 60, 20, 40, 50
    pw, ph = width - left - right, height - top - bottom
    vmax = _nice_max(max([max(x, y) for _, x, y in points] or [0]))
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="{e(title)}">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{e(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top}" stroke="#999" stroke-dasharray="4 3"/>',
           f'<text x="{left + pw / 2}" y="{height - 10}" text-anchor="middle" font-size="11">estimated {e(unit)}</text>',
           f'<text x="14" y="{top + ph / 2}" font-size="11" transform="rotate(-90 14 {top + ph / 2})" '
           f'text-anchor="middle">actual {e(unit)}</text>']
    for k in range(5):
        v = vmax * k / 4
        out.append(f'<text x="{left - 4}" y="{top + ph - ph * k / 4 + 4:.1f}" text-anchor="end" font-size="10">{v:g}'
                   f'</text><text x="{left + pw * k / 4:.1f}" y="{top + ph + 14}" text-anchor="middle" '
                   f'font-size="10">{v:g}</text>')
    for lab, x, y in points:
        cx, cy = left + pw * x / vmax, top + ph - ph * y / vmax
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{ACT_COLOR}" stroke="#333">'
                   f'<title>{e(lab)}: estimated {x:.3g}, actual {y:.3g}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def to_html(report: dict, title: str = "amigo-burst report") -> str:
    rows = report["runs"]
    labels = [f"S{r['stage']} {r['target']}" for r in rows]
    charts = [
        bar_chart("Time by stage and target", labels,
                  [("estimated", EST_COLOR, [r["est_hours"] for r in rows]),
                   ("actual", ACT_COLOR, [r["actual_hours"] for r in rows])], "hours"),
        bar_chart("Cost by stage and target", labels,
                  [("estimated", EST_COLOR, [r["est_usd"] for r in rows]),
                   ("actual", ACT_COLOR, [r["actual_usd"] for r in rows])], "USD"),
        scatter_chart("Estimate vs actual (hours)",
                      [(lab, r["est_hours"], r["actual_hours"]) for lab, r in zip(labels, rows, strict=False)
                       if r["est_hours"] is not None and r["actual_hours"] is not None], "hours"),
    ]
    e = html.escape

    def table(cols, data, caption):
        if not data:
            return ""
        head = "".join(f"<th>{e(h)}</th>" for h, _, _ in cols)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _cells(r, cols)) + "</tr>" for r in data)
        return f"<table><caption>{e(caption)}</caption><tr>{head}</tr>{body}</table>"

    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>"
        "body{font-family:DejaVu Sans,Arial,sans-serif;margin:20px;color:#222}"
        "table{border-collapse:collapse;margin:12px 0;font-size:12px}caption{font-weight:bold;text-align:left}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        ".charts{display:flex;flex-wrap:wrap;gap:16px}"
        "</style></head><body>"
        f"<h1>{e(title)}</h1><p>error % = (estimate &minus; actual) / actual; positive: over-estimated.</p>"
        f"<div class=\"charts\">{''.join(charts)}</div>"
        + table(COLUMNS, rows, "Runs: estimated vs actual")
        + table(TOTAL_COLUMNS, report["totals"], "Totals")
        + table(STRATEGY_COLUMNS, report["strategies"], "Strategies (estimated)")
        + table(BENCH_COLUMNS, report.get("benchmarks"), "HumanEval pass@1 per stage")
        + ("<p>No runs yet.</p>" if not rows else "")
        + "</body></html>\n"
    )
