"""Estimated vs actual, per run and per stage: rows, totals, and their renderings (table, md, json).

Pure builders over run dicts (runs.Run as a dict: id, stage, target, status, started, ended,
usd_per_hour, tokens_per_s, peak_vram_gib, estimate, metrics, artifacts). The HTML page with its
SVG charts is report_html.py.

error % = (estimate - actual) / actual x 100: positive = we over-estimated.
Stable JSON keys (README): {"project", "generated", "runs": [ROW_KEYS...], "stages": [STAGE_KEYS...],
"totals": [TOTAL_KEYS...], "strategies": [...], "calibration": [...], "compare": [...]}, plus
"benchmarks": [BENCH_KEYS...] when a run recorded a HumanEval score (metrics["humaneval"]).
A run "trained" when it took at least one step; runs that never did (failed before training)
and probes stay in the run table but out of the per-stage rows and the charts.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from amigo_burst.planning import benchmark as bench
from amigo_burst.planning.units import hours_text, sig, usd_text

ROW_KEYS = ("id", "stage", "target", "status", "kind", "trained", "started", "est_hours", "actual_hours",
            "hours_error_pct", "est_usd", "actual_usd", "usd_error_pct", "est_tokens_per_s", "actual_tokens_per_s",
            "tokens_per_s_error_pct", "est_peak_vram_gib", "actual_peak_vram_gib", "peak_vram_error_pct")
STAGE_KEYS = ("stage", "target", "run", "gpu", "est_hours", "actual_hours", "hours_error_pct", "est_usd",
              "actual_usd", "usd_error_pct")
TOTAL_KEYS = ("group", "runs", "est_hours", "actual_hours", "est_usd", "actual_usd")
BENCH_KEYS = ("stage", "id", "problems", "partial", "pass_at_1", "pass_at_1_low", "pass_at_1_high", "parent",
              "pass_at_1_change", "change_low", "change_high", "change_noise", "vs_base", "vs_base_low",
              "vs_base_high", "vs_base_noise", "usd", "pass_at_1_per_usd")


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
    """N significant figures (a 30 s run is 0.008333 h, not 0.0083 or 0.0)."""
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(x, max(0, n - 1 - math.floor(math.log10(abs(x)))))


def trained(run: dict) -> bool:
    met = run.get("metrics") or {}
    return bool(met.get("steps") or met.get("steps_this_run") or met.get("tokens_per_s") or run.get("tokens_per_s"))


def run_row(run: dict) -> dict:
    """One run -> a dict with ROW_KEYS in that order."""
    est, met = run.get("estimate") or {}, run.get("metrics") or {}
    hours = _hours(run.get("started"), run.get("ended"))
    rate = run.get("usd_per_hour")
    usd = hours * rate if hours is not None and rate is not None else None
    tps = run.get("tokens_per_s") or met.get("tokens_per_s")
    peak = run.get("peak_vram_gib") or met.get("peak_vram_gib")
    e_peak = est.get("peak_alloc_gib", est.get("peak_vram_gib"))  # measured peak = torch's allocated peak
    probe = bool((run.get("artifacts") or {}).get("probe"))
    if probe:  # a probe's estimate is for the whole stage, its run a few steps: only speed and memory compare
        hours_err = usd_err = None
    else:
        hours_err, usd_err = _err(est.get("hours"), hours), _err(est.get("usd"), usd)
    return {
        "id": run.get("id"), "stage": run.get("stage"), "target": run.get("target"), "status": run.get("status"),
        "kind": "probe" if probe else "run", "trained": trained(run),
        "started": run.get("started"), "est_hours": _r(est.get("hours")), "actual_hours": _r(hours),
        "hours_error_pct": hours_err,
        "est_usd": _r(est.get("usd")), "actual_usd": _r(usd), "usd_error_pct": usd_err,
        "est_tokens_per_s": _r(est.get("tokens_per_s")), "actual_tokens_per_s": _r(tps),
        "tokens_per_s_error_pct": _err(est.get("tokens_per_s"), tps),
        "est_peak_vram_gib": _r(e_peak, 3), "actual_peak_vram_gib": _r(peak, 3),
        "peak_vram_error_pct": _err(e_peak, peak),
        "_gpu": f"{est.get('gpu') or '?'}" + (f" x{est['gpu_count']}" if (est.get("gpu_count") or 1) > 1 else ""),
    }


def build_rows(runs: list[dict]) -> list[dict]:
    return [run_row(r) for r in sorted(runs, key=lambda r: (r.get("stage") or 0, str(r.get("started") or "")))]


def stage_rows(rows: list[dict]) -> list[dict]:
    """Per (stage, target): its newest run that trained and is not a probe (STAGE_KEYS)."""
    newest: dict[tuple, dict] = {}
    for r in rows:
        if r["trained"] and r["kind"] == "run":
            newest[(r["stage"], r["target"])] = r  # rows are oldest first
    return [{"stage": r["stage"], "target": r["target"], "run": r["id"], "gpu": r["_gpu"],
             **{k: r[k] for k in STAGE_KEYS[4:]}} for _, r in sorted(newest.items())]


def _sum(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return _r(sum(xs)) if xs else None


def build_totals(rows: list[dict], local_targets: set[str] | frozenset = frozenset()) -> list[dict]:
    """Per target, then local vs cloud, then everything (probes and failures included: they were paid for)."""
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


def _scored(run: dict) -> dict:
    return (run.get("metrics") or {}).get("humaneval") or {}


def baselines_of(runs: list[dict]) -> list[dict]:
    """The base's scores recorded beside a stage's (train/humaneval.py --baseline: metrics["humaneval_base"])."""
    return [b for r in sorted(runs, key=lambda r: str(r.get("started") or ""))
            if (b := (r.get("metrics") or {}).get("humaneval_base")) and b.get("problems")]


def matching_base(he: dict, baselines: list[dict]) -> dict | None:
    """The newest complete baseline that answered the same problems the same way as `he`."""
    fits = [b for b in baselines if not bench.comparable(he, b)]
    return fits[-1] if fits else None


def _change_cells(ch, names: tuple[str, str, str, str]) -> dict:
    """A Change (or None: not comparable) as the row's four cells: change, low, high, noise."""
    return dict(zip(names, (round(ch.delta, 4), round(ch.low, 4), round(ch.high, 4), ch.noise) if ch
                    else (None,) * 4, strict=True))


VS_PARENT = ("pass_at_1_change", "change_low", "change_high", "change_noise")
VS_BASE = ("vs_base", "vs_base_low", "vs_base_high", "vs_base_noise")


def build_benchmarks(runs: list[dict], baselines: list[dict] | None = None) -> list[dict]:
    """HumanEval pass@1 per stage (its newest successful run with a score, probes and re-scores aside) with
    its 95% interval (Wilson); its change from its parent (the run its adapter continued, else the stage
    before; stage 1's is the base) and from the base (stage 0: the base scored with the same settings),
    each with a 95% interval (planning/benchmark.py) - None where the runs do not compare (a partial run,
    other settings); and pass@1 per dollar spent on stages 1..N (the model stage N made cost all of them)."""
    best: dict[int, dict] = {}
    for run in sorted(runs, key=lambda r: str(r.get("started") or "")):
        arts = run.get("artifacts") or {}
        if run.get("status") == "SUCCEEDED" and _scored(run).get("problems") and not arts.get("probe") \
                and not arts.get("eval"):
            best[run["stage"]] = run
    bases = [*(baselines or []), *baselines_of(runs)]
    first = _scored(best[min(best)]) if best else None
    stage0 = matching_base(first, bases) if first else (bases[-1] if bases else None)
    out = []
    if stage0:
        lo, hi = bench.wilson(bench.passed(stage0), stage0["problems"])
        out.append({"stage": 0, "id": "base", "problems": stage0["problems"], "partial": bool(stage0.get("partial")),
                    "pass_at_1": stage0["pass_at_1"], "pass_at_1_low": round(lo, 4), "pass_at_1_high": round(hi, 4),
                    "parent": None, **_change_cells(None, VS_PARENT), **_change_cells(None, VS_BASE),
                    "usd": None, "pass_at_1_per_usd": None})
    spent, by_id, prev = 0.0, {r["id"]: r for r in best.values()}, stage0
    for stage in sorted(best):
        run, he = best[stage], _scored(best[stage])
        usd = run_row(run)["actual_usd"]
        spent += usd or 0.0
        parent_run = by_id.get((run.get("artifacts") or {}).get("from_run") or "")
        parent = _scored(parent_run) if parent_run else prev if stage > 1 or prev is stage0 else None
        base = matching_base(he, bases)
        lo, hi = bench.wilson(bench.passed(he), he["problems"])
        score = he.get("pass_at_1")
        out.append({"stage": stage, "id": run["id"], "problems": he["problems"], "partial": bool(he.get("partial")),
                    "pass_at_1": score, "pass_at_1_low": round(lo, 4), "pass_at_1_high": round(hi, 4),
                    "parent": parent_run["id"] if parent_run else ("base" if parent is stage0 and stage0 else None),
                    **_change_cells(bench.change(he, parent) if parent else None, VS_PARENT),
                    **_change_cells(bench.change(he, base) if base else None, VS_BASE),
                    "usd": usd, "pass_at_1_per_usd": round(score / spent, 4) if score is not None and spent else None})
        prev = he
    return out


def build_report(runs: list[dict], strategies: list[dict] | None = None,
                 local_targets: set[str] | frozenset = frozenset(), *, project: str = "", generated: str = "",
                 calibration: list[dict] | None = None, compare: list[dict] | None = None,
                 baselines: list[dict] | None = None, money: dict | None = None) -> dict:
    """MONEY: the ledger's spent / committed / left (planning/ledger.py), when the project has one."""
    rows = build_rows(runs)
    rep = {"project": project, "generated": generated, "runs": rows, "stages": stage_rows(rows),
           "totals": build_totals(rows, local_targets), "strategies": strategies or [],
           "calibration": calibration or [], "compare": compare or []}
    scores = build_benchmarks(runs, baselines)
    rep = {**rep, "benchmarks": scores} if scores else rep
    return {**rep, "money": [money]} if money else rep


# --------------------------------------------------------------------------- text renderings


def f_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0f}%"


def f_tps(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 10 else f"{x:.3g}")


def f_gib(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}" if x >= 0.01 else f"{x:.2g}")


COLUMNS = (("run", "id", str), ("stage", "stage", str), ("target", "target", str), ("status", "status", str),
           ("kind", "kind", str),
           ("est time", "est_hours", hours_text), ("time", "actual_hours", hours_text),
           ("err", "hours_error_pct", f_pct), ("est $", "est_usd", usd_text), ("$", "actual_usd", usd_text),
           ("est tok/s", "est_tokens_per_s", f_tps), ("tok/s", "actual_tokens_per_s", f_tps),
           ("err", "tokens_per_s_error_pct", f_pct), ("est GiB", "est_peak_vram_gib", f_gib),
           ("GiB", "actual_peak_vram_gib", f_gib), ("err", "peak_vram_error_pct", f_pct))
STAGE_COLUMNS = (("stage", "stage", str), ("target", "target", str), ("GPU", "gpu", str),
                 ("est time", "est_hours", hours_text), ("time", "actual_hours", hours_text),
                 ("err", "hours_error_pct", f_pct), ("est $", "est_usd", usd_text), ("$", "actual_usd", usd_text),
                 ("err", "usd_error_pct", f_pct))
TOTAL_COLUMNS = (("group", "group", str), ("runs", "runs", str), ("est time", "est_hours", hours_text),
                 ("time", "actual_hours", hours_text), ("est $", "est_usd", usd_text), ("$", "actual_usd", usd_text))
STRATEGY_COLUMNS = (("strategy", "name", str), ("time", "hours", hours_text), ("cost", "usd", usd_text),
                    ("where", "where", str), ("note", "note", str))
CALIBRATION_COLUMNS = (("GPU", "gpu", str), ("method", "method", str), ("trainer", "trainer", str), ("seq", "seq", str),
                       ("tokens/s x", "tokens_per_s_factor", str), ("peak x", "peak_factor", str),
                       ("wall x", "wall_factor", str), ("runs", "runs", str))


def f_change(row: dict, names: tuple[str, str, str, str]) -> str:
    """"+0.061 (-0.020..+0.140) noise": the change, its 95% interval, and whether it is inside the noise."""
    d, lo, hi, noise = (row.get(k) for k in names)
    if d is None:
        return "-" if row.get("stage") == 0 else "n/a" + (" (partial)" if row.get("partial") else "")
    return f"{d:+.3f} ({lo:+.3f}..{hi:+.3f}){' noise' if noise else ''}"


BENCH_COLUMNS = (("stage", "stage", str), ("run", "id", str), ("problems", "problems", str),
                 ("pass@1 (95% CI)", "pass_at_1", None), ("vs parent (95% CI)", "pass_at_1_change", None),
                 ("vs base (95% CI)", "vs_base", None), ("$", "usd", usd_text),
                 ("pass@1 per $", "pass_at_1_per_usd", lambda x: f"{x:,.0f}" if x >= 100 else sig(x, 3)))
BENCH_TEXT = {"problems": lambda r: f"{r['problems']}{' partial' if r.get('partial') else ''}",
              "pass_at_1": lambda r: f"{r['pass_at_1']:.3f} ({r['pass_at_1_low']:.3f}-{r['pass_at_1_high']:.3f})",
              "pass_at_1_change": lambda r: f_change(r, VS_PARENT), "vs_base": lambda r: f_change(r, VS_BASE)}
MONEY_COLUMNS = (("spent", "spent", usd_text), ("committed (running, worst case)", "committed", usd_text),
                 ("left", "left", usd_text), ("project max_usd", "max_usd", usd_text))
COMPARE_COLUMNS = (("figure", "figure", str), ("original", "original", str), ("computed", "computed", str),
                   ("why", "reason", str))


def cells(row: dict, cols) -> list[str]:
    out = []
    for _, key, fn in cols:
        v = row.get(key)
        if cols is BENCH_COLUMNS and key in BENCH_TEXT:
            out.append(BENCH_TEXT[key](row) if row.get("pass_at_1") is not None else "-")
            continue
        out.append("-" if v is None or v == "" else fn(v) if fn is not str else str(v))
    return out


def _started(run_id: str | None, started: str | None) -> str:
    if isinstance(started, str) and len(started) >= 16:
        return f"{started[5:10]} {started[11:16]}"  # MM-DD HH:MM (UTC, as recorded)
    return run_id or "-"


def rich_tables(report: dict) -> list:
    """Terminal tables (fit 100 columns): each measure is one cell, estimate above actual (error %); the
    benchmark's is _bench_table's, whole at 80 columns. A run id or a figure is never cut."""
    from rich import box
    from rich.table import Table

    out = []
    if report["runs"]:
        t = Table(title="runs: estimated (top) vs actual (bottom, error %)", box=box.SIMPLE_HEAD)
        for head in ("started", "stage", "target", "status"):
            t.add_column(head, justify="right" if head == "stage" else "left")
        for head in ("time", "$", "tokens/s", "peak GiB"):
            t.add_column(head, justify="right")
        for r in report["runs"]:
            def cell(est, act, err, fn):
                return f"{fn(est) if est is not None else '-'}\n{fn(act) if act is not None else '-'} " \
                       f"{f_pct(err) if err is not None else ''}".rstrip()

            status = ("ok" if r["status"] == "SUCCEEDED" else str(r["status"])) + (" probe" if r["kind"] == "probe"
                                                                                     else "")
            t.add_row(_started(r["id"], r.get("started")), str(r["stage"]), str(r["target"]), status,
                      cell(r["est_hours"], r["actual_hours"], r["hours_error_pct"], hours_text),
                      cell(r["est_usd"], r["actual_usd"], r["usd_error_pct"], usd_text),
                      cell(r["est_tokens_per_s"], r["actual_tokens_per_s"], r["tokens_per_s_error_pct"], f_tps),
                      cell(r["est_peak_vram_gib"], r["actual_peak_vram_gib"], r["peak_vram_error_pct"], f_gib))
        out.append(t)
    for title, cols, rows in (("totals", TOTAL_COLUMNS, report["totals"]),
                              ("money (the ledger: every attempt, hours x $/h)", MONEY_COLUMNS, report.get("money") or []),
                              ("strategies (estimated)", STRATEGY_COLUMNS[:3], report["strategies"]),
                              ("calibration in use", CALIBRATION_COLUMNS, report.get("calibration") or [])):
        if not rows:
            continue
        t = Table(title=title, box=box.SIMPLE_HEAD)
        for i, (head, key, fn) in enumerate(cols):
            # a run id or a figure is never cut ("s2-local-202…", "$0.000…"): those columns keep their width
            whole = key in ("id", "group") or fn is not str
            least = max(len(x) for x in [head, *(cells(r, cols)[i] for r in rows)])
            t.add_column(head, justify="left" if fn is str and key not in ("runs",) else "right", no_wrap=whole,
                         min_width=least if whole else None)
        for r in rows:
            t.add_row(*cells(r, cols))
        out.append(t)
    if report.get("benchmarks"):
        out.append(_bench_table(report["benchmarks"], {r["id"]: r.get("started") for r in report["runs"]}))
    return out


def _bench_table(rows: list[dict], started: dict):
    """Whole at 80 columns: each score above its 95% interval; each change above its interval, "noise"
    when the interval holds 0; n: problems scored (the runs are in the table above; md/json name them)."""
    from rich import box
    from rich.table import Table

    t = Table(title="HumanEval pass@1 per stage (95% intervals; noise: could be chance)", box=box.SIMPLE_HEAD,
              padding=(0, 1))
    for head, width in (("stage", 6), ("n", 3), ("pass@1", 9), ("vs parent", 12), ("vs base", 12), ("$", 7),
                        ("pass@1/$", 8)):
        t.add_column(head, justify="right", no_wrap=True, min_width=width)

    def two(d, lo, hi, noise):
        return "n/a" if d is None else f"{d:+.3f}{' noise' if noise else ''}\n{lo:+.2f}..{hi:+.2f}"

    for r in rows:
        t.add_row("0 base" if r["stage"] == 0 else str(r["stage"]),
                  f"{r['problems']}{' partial' if r['partial'] else ''}",
                  f"{r['pass_at_1']:.3f}\n{r['pass_at_1_low']:.2f}-{r['pass_at_1_high']:.2f}",
                  "-" if r["stage"] == 0 else two(*(r[k] for k in VS_PARENT)),
                  "-" if r["stage"] == 0 else two(*(r[k] for k in VS_BASE)),
                  usd_text(r["usd"]) if r["usd"] is not None else "-",
                  f"{r['pass_at_1_per_usd']:.3g}" if r["pass_at_1_per_usd"] is not None else "-")
    return t


def to_markdown(report: dict) -> str:
    head = f"# {report.get('project') or 'amigo-burst'} report" + (f" ({report['generated']})" if report.get(
        "generated") else "")
    parts = [head, "", "error % = (estimate - actual) / actual; positive: over-estimated.", ""]
    for title, cols, rows in (("Per stage: estimated vs actual (newest run that trained)", STAGE_COLUMNS,
                               report.get("stages") or []),
                              ("Runs: estimated vs actual", COLUMNS, report["runs"]),
                              ("Totals", TOTAL_COLUMNS, report["totals"]),
                              ("Money (the ledger: every attempt, hours x $/h)", MONEY_COLUMNS, report.get("money") or []),
                              ("Strategies (estimated)", STRATEGY_COLUMNS, report["strategies"]),
                              ("Calibration in use", CALIBRATION_COLUMNS, report.get("calibration") or []),
                              ("HumanEval pass@1 per stage", BENCH_COLUMNS, report.get("benchmarks") or []),
                              ("The original analysis beside the plan", COMPARE_COLUMNS, report.get("compare") or [])):
        if not rows:
            continue
        parts += [f"## {title}", "", "| " + " | ".join(h for h, _, _ in cols) + " |",
                  "|" + "|".join("---" if fn is str else "---:" for _, _, fn in cols) + "|"]
        parts += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r, cols)) + " |" for r in rows]
        parts.append("")
    if not report["runs"]:
        parts.append("No runs yet.")
    return "\n".join(parts).rstrip() + "\n"


def to_json(report: dict) -> str:
    clean = {**report, "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in report["runs"]]}
    return json.dumps(clean, indent=2, sort_keys=False) + "\n"
