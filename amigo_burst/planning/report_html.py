"""The report as a page a user opens: one self-contained HTML file with inline SVG charts (no library).

Sections: the project and date; the strategies side by side (a table and a chart each for time and
cost); estimated vs actual per stage (the newest run of each stage and target that trained: runs
that never took a step and probes stay out of the charts); time and cost per stage and in total; the
calibration in use; the original analysis beside the plan; every run. Charts scale with the page
(viewBox, width 100%), tables scroll sideways on a phone: it reads at 1280 px and at 390 px.
"""

from __future__ import annotations

import html
import math

from amigo_burst.planning.report import (
    BENCH_COLUMNS,
    CALIBRATION_COLUMNS,
    COLUMNS,
    COMPARE_COLUMNS,
    STAGE_COLUMNS,
    STRATEGY_COLUMNS,
    TOTAL_COLUMNS,
    cells,
)

EST_COLOR, ACT_COLOR = "#1f77b4", "#ff7f0e"
e = html.escape


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * p:
            return m * p
    return 10 * p


def time_unit(values: list[float | None]) -> tuple[str, float]:
    """Hours -> the unit that reads best for the largest value: (name, factor)."""
    top = max([v for v in values if v is not None] or [0])
    if top * 3600 < 120:
        return "seconds", 3600.0
    if top < 2:
        return "minutes", 60.0
    return "hours", 1.0


def bar_chart(title: str, labels: list[str], series: list[tuple[str, str, list[float | None]]], unit: str,
              width: int = 560, height: int = 300) -> str:
    """Grouped vertical bars: one group per label, one bar per series (name, color, values)."""
    left, right, top, bottom = 60, 10, 40, 70
    pw, ph = width - left - right, height - top - bottom
    vmax = _nice_max(max([v for _, _, vs in series for v in vs if v is not None] or [0]))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
           f'style="max-width:{width}px" role="img" aria-label="{e(title)}">',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="16" font-weight="bold">{e(title)}</text>']
    for k in range(5):
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="12">{vmax * k / 4:g}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" font-size="12" transform="rotate(-90 14 {top + ph / 2})" '
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
        out.append(f'<text x="{left + i * gw + gw / 2:.1f}" y="{top + ph + 16}" text-anchor="middle" '
                   f'font-size="{12 if n <= 5 else 10}">{e(lab)}</text>')
    for j, (name, color, _) in enumerate(series):
        out.append(f'<rect x="{left + j * 120}" y="{height - 24}" width="14" height="14" fill="{color}"/>'
                   f'<text x="{left + j * 120 + 18}" y="{height - 12}" font-size="13">{e(name)}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/></svg>')
    return "".join(out)


FREE_TEXT = ("where", "note", "reason", "computed", "original", "figure")  # columns that may wrap


def _table(cols, data, caption: str) -> str:
    if not data:
        return ""
    kinds = ["t" if key in FREE_TEXT else "s" if fn is str else "n" for _, key, fn in cols]
    head = "".join(f'<th class="{k}">{e(h)}</th>' for (h, _, _), k in zip(cols, kinds, strict=True))
    body = "".join("<tr>" + "".join(f'<td class="{k}">{e(c)}</td>' for c, k in zip(cells(r, cols), kinds, strict=True))
                   + "</tr>" for r in data)
    return f'<div class="scroll"><table><caption>{e(caption)}</caption><tr>{head}</tr>{body}</table></div>'


def _stage_charts(stages: list[dict]) -> list[str]:
    labels = [f"S{r['stage']} {r['target']}" for r in stages]
    unit, k = time_unit([r["est_hours"] for r in stages] + [r["actual_hours"] for r in stages])

    def scaled(key: str) -> list[float | None]:
        return [r[key] * k if r[key] is not None else None for r in stages]

    return [bar_chart("Time per stage: estimated vs actual", labels,
                      [("estimated", EST_COLOR, scaled("est_hours")), ("actual", ACT_COLOR, scaled("actual_hours"))],
                      unit),
            bar_chart("Cost per stage: estimated vs actual", labels,
                      [("estimated", EST_COLOR, [r["est_usd"] for r in stages]),
                       ("actual", ACT_COLOR, [r["actual_usd"] for r in stages])], "USD")]


def _strategy_charts(strategies: list[dict]) -> list[str]:
    if not strategies:
        return []
    labels = [s["name"] for s in strategies]
    unit, k = time_unit([s.get("hours") for s in strategies])
    return [bar_chart("Strategies: estimated time", labels,
                      [("estimated", EST_COLOR, [s["hours"] * k if s.get("hours") is not None else None
                                                 for s in strategies])], unit),
            bar_chart("Strategies: estimated cost", labels,
                      [("estimated", EST_COLOR, [s.get("usd") for s in strategies])], "USD")]


CSS = ("body{font-family:DejaVu Sans,Arial,sans-serif;margin:16px;color:#222;max-width:1240px}"
       "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px}.meta{color:#555;margin:0 0 12px}"
       "table{border-collapse:collapse;margin:6px 0;font-size:12px}caption{font-weight:bold;text-align:left}"
       "td,th{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}th{background:#f3f3f3}"
       ".n{text-align:right}.s{text-align:left}.t{text-align:left;white-space:normal;min-width:12em}"
       ".scroll{overflow-x:auto;max-width:100%}"
       ".charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{flex:1 1 300px}")


def to_html(report: dict, title: str = "") -> str:
    project = report.get("project") or "amigo-burst"
    title = title or f"{project}: estimated vs actual"
    stages = report.get("stages") or []
    strategies = report.get("strategies") or []
    total = next((t for t in report["totals"] if t["group"] == "all runs"), None)
    sections = [
        f"<h1>{e(title)}</h1><p class=\"meta\">project <b>{e(project)}</b>"
        + (f" · generated {e(report['generated'])}" if report.get("generated") else "")
        + (f" · {total['runs']} runs" if total else "") + "</p>",
        "<p>error % = (estimate &minus; actual) / actual; positive: over-estimated. Charts show each stage's "
        "newest run that trained on each target; probes and runs that never took a step are in the run table "
        "only.</p>",
        "<h2>Strategies, side by side</h2>", f"<div class=\"charts\">{''.join(_strategy_charts(strategies))}</div>",
        _table(STRATEGY_COLUMNS, strategies, "Strategies (estimated)"),
        "<h2>Estimated vs actual, per stage</h2>",
        f"<div class=\"charts\">{''.join(_stage_charts(stages))}</div>" if stages else "<p>No stage has trained yet.</p>",
        _table(STAGE_COLUMNS, stages, "Per stage and target (newest run that trained)"),
        "<h2>Time and cost in total</h2>", _table(TOTAL_COLUMNS, report["totals"], "Totals (every run: each was paid for)"),
        "<h2>Calibration in use</h2>",
        _table(CALIBRATION_COLUMNS, report.get("calibration") or [], "Measured / estimated, per GPU class and method")
        or "<p>None yet: every estimate uses the default table (gpus.csv).</p>",
    ]
    if report.get("benchmarks"):
        sections += ["<h2>What each stage bought: HumanEval pass@1</h2>",
                     _table(BENCH_COLUMNS, report["benchmarks"], "pass@1 per stage, its change, pass@1 per dollar")]
    if report.get("compare"):
        sections += ["<h2>The original analysis beside the plan</h2>",
                     _table(COMPARE_COLUMNS, report["compare"], "Original figure, computed figure, why")]
    sections += ["<h2>Every run</h2>", _table(COLUMNS, report["runs"], "Runs: estimated vs actual")
                 or "<p>No runs yet.</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>" + "".join(sections) + "</body></html>\n")
