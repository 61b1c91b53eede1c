"""The report: golden files (terminal width pinned to 100), stable JSON keys, and the HTML charts
rendered by headless Chromium.

Regenerate the goldens after an intended change: AMIGO_UPDATE_GOLDEN=1 pytest tests/test_report.py
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from amigo_burst.cli.plan import report_cmd
from amigo_burst.errors import UserError
from amigo_burst.planning import report as rp
from amigo_burst.planning import report_html

GOLDEN = Path(__file__).parent / "golden"
RUNS = json.loads((GOLDEN / "report_runs.json").read_text())
CHROMIUM = "/usr/bin/chromium"
GENERATED = "2026-11-03 09:00 UTC"  # pinned: the goldens do not change with the clock
STRATEGIES = [{"name": "all local", "hours": 461.4, "usd": 15.92, "feasible": False, "where": "1-5 local-rtx4050",
               "note": "totals with llama-3.2-3b"},
              {"name": "all cloud", "hours": 140.6, "usd": 52.04, "feasible": True, "where": "1-5 vast RTX6000-Ada:1",
               "note": ""},
              {"name": "fastest", "hours": 42.5, "usd": 115.74, "feasible": True, "where": "1 runpod B200:8 · 2-5 vast "
               "H100:1", "note": ""}]
# What a busy project's records hold besides RUNS: a probe, a run that failed before its first step
# (5 hours of a preflight that never trained), and an older run of stage 2 on vast.
EXTRA = [
    {"id": "s3-vast-20261101-100000-pr01", "stage": 3, "target": "vast", "status": "SUCCEEDED",
     "started": "2026-11-01T10:00:00+00:00", "ended": "2026-11-01T10:03:00+00:00", "usd_per_hour": 0.4,
     "tokens_per_s": 7000.0, "estimate": {"hours": 0.5652, "usd": 0.226, "tokens_per_s": 8136.0},
     "metrics": {"steps_this_run": 20}, "artifacts": {"probe": True}},
    {"id": "s4-vast-20261101-110000-nope", "stage": 4, "target": "vast", "status": "FAILED",
     "started": "2026-11-01T11:00:00+00:00", "ended": "2026-11-01T16:00:00+00:00", "usd_per_hour": 0.4,
     "estimate": {"hours": 0.5, "usd": 0.2}, "metrics": {}, "artifacts": {}},
    {"id": "s2-vast-20261101-070000-old1", "stage": 2, "target": "vast", "status": "SUCCEEDED",
     "started": "2026-11-01T07:00:00+00:00", "ended": "2026-11-01T09:00:00+00:00", "usd_per_hour": 0.4,
     "tokens_per_s": 5000.0, "estimate": {"hours": 1.0, "usd": 0.4, "tokens_per_s": 7000.0}, "metrics": {},
     "artifacts": {}},
]


def report_of(runs=RUNS, compare=None) -> dict:
    from amigo_burst.planning.calibration import as_rows, calibrate

    return rp.build_report(runs, STRATEGIES, {"local-rtx4050"}, project="amigo-1.0", generated=GENERATED,
                           calibration=as_rows(calibrate(runs)), compare=compare)


def shipped_compare() -> list[dict]:
    """The original analysis beside the shipped plan (prices: the snapshot)."""
    from amigo_burst import planner
    from amigo_burst.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "amigo.toml")
    plan, prices, arch = planner.make_plan(cfg, [], prices=planner.price_table(home=Path("/nonexistent-home")))
    return planner.compare_rows(cfg, plan, prices, arch)


@pytest.fixture(autouse=True)
def _pinned_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("TERM", "dumb")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("AMIGO_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}: run with AMIGO_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def test_table_golden():
    buf = io.StringIO()
    con = Console(file=buf, width=100, color_system=None, highlight=False, legacy_windows=False)
    report_cmd(fmt="table", runs=RUNS, console=con, generated=GENERATED)
    check_golden("report_table.txt", buf.getvalue())
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 100


@pytest.mark.parametrize("fmt,name", [("md", "report.md"), ("json", "report.json"), ("html", "report.html")])
def test_text_formats_golden(fmt, name, tmp_path):
    out = tmp_path / name
    report_cmd(fmt=fmt, out=out, runs=RUNS, console=Console(file=io.StringIO()), generated=GENERATED)
    check_golden(name, out.read_text(encoding="utf-8"))
    assert not list(tmp_path.glob("*.tmp"))


def test_json_keys_are_stable_and_errors_computed():
    rep = json.loads(rp.to_json(report_of()))
    assert set(rep) == {"project", "generated", "runs", "stages", "totals", "strategies", "calibration", "compare"}
    assert (rep["project"], rep["generated"]) == ("amigo-1.0", GENERATED)
    for row in rep["runs"]:
        assert tuple(row) == rp.ROW_KEYS
    for row in rep["stages"]:
        assert tuple(row) == rp.STAGE_KEYS
    for row in rep["totals"]:
        assert tuple(row) == rp.TOTAL_KEYS
    s1 = next(r for r in rep["runs"] if r["stage"] == 1)
    run = next(r for r in RUNS if r["stage"] == 1)
    actual_h = s1["actual_hours"]
    assert s1["est_hours"] == pytest.approx(run["estimate"]["hours"], rel=1e-3)
    assert s1["hours_error_pct"] == pytest.approx((s1["est_hours"] - actual_h) / actual_h * 100, abs=0.1)
    assert s1["actual_usd"] == pytest.approx(actual_h * run["usd_per_hour"], rel=1e-3)
    failed = next(r for r in rep["runs"] if r["status"] == "FAILED")
    assert failed["est_hours"] is None and failed["actual_hours"] == pytest.approx(20 / 60, rel=1e-3)
    everything = next(t for t in rep["totals"] if t["group"] == "all runs")
    assert everything["runs"] == len(RUNS)
    assert everything["actual_usd"] == pytest.approx(sum(r["actual_usd"] for r in rep["runs"]), rel=1e-3)


def test_short_runs_keep_their_figures():
    """Issue 15: a 30-second run is not "0.00 -> 0.00, -100%": seconds and significant figures."""
    run = {"id": "s1-local-x", "stage": 1, "target": "local", "status": "SUCCEEDED",
           "started": "2026-11-01T08:00:00+00:00", "ended": "2026-11-01T08:00:36+00:00", "usd_per_hour": 0.0195,
           "tokens_per_s": 300.0, "estimate": {"hours": 30 / 3600, "usd": 30 / 3600 * 0.0195, "tokens_per_s": 350.0},
           "metrics": {"steps_this_run": 8}}
    rep = rp.build_report([run])
    row = rep["runs"][0]
    assert row["actual_hours"] == pytest.approx(0.01, rel=1e-3) and row["est_hours"] == pytest.approx(0.008333, rel=1e-3)
    assert row["hours_error_pct"] == pytest.approx(-16.7, abs=0.1)
    md = rp.to_markdown(rep)
    assert "| 30 s | 36 s | -17% | $0.00016 | $0.00019 | -17% |" in md
    assert "| 0.00 |" not in md and "-100%" not in md


def test_per_stage_rows_take_the_newest_run_that_trained():
    rep = report_of(RUNS + EXTRA)
    stages = {(r["stage"], r["target"]): r for r in rep["stages"]}
    assert stages[(2, "vast")]["run"] == "s2-vast-20261101-091825-ab02"  # newest of the two stage-2 runs
    assert (3, "vast") in stages and stages[(3, "vast")]["run"] != "s3-vast-20261101-100000-pr01"  # not the probe
    assert (4, "vast") not in stages and (2, "lambda-a100") not in stages  # never took a step
    assert len(rep["stages"]) == 5
    kinds = {r["id"]: (r["kind"], r["trained"]) for r in rep["runs"]}
    assert kinds["s3-vast-20261101-100000-pr01"] == ("probe", True)
    assert kinds["s4-vast-20261101-110000-nope"] == ("run", False)
    probe = next(r for r in rep["runs"] if r["kind"] == "probe")
    assert probe["hours_error_pct"] is None and probe["tokens_per_s_error_pct"] == pytest.approx(16.2, abs=0.1)
    # the charts draw the stage rows: one bar pair per stage and target, whatever the number of runs
    page = report_html.to_html(rep)
    assert page.count('fill="#ff7f0e"><title>') == 2 * 5  # actual bars: time and cost, five stage rows
    assert "amigo-1.0" in page and GENERATED in page
def test_empty_report_says_so():
    assert "No runs yet." in rp.to_markdown(rp.build_report([]))
    assert "No runs yet." in report_html.to_html(rp.build_report([]))


@pytest.mark.badinput
def test_unknown_format_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--format"):
        report_cmd(fmt="pdf", out=tmp_path / "x", runs=RUNS)
    assert not list(tmp_path.iterdir())


def test_html_is_self_contained():
    html = report_html.to_html(report_of())
    assert html.count("<svg") == 4  # strategies: time, cost; per stage: time, cost
    for ref in ("src=\"http", "href=\"http", "<script", "<link", "url("):
        assert ref not in html


def _shot(page: Path, width: int, height: int, tmp_path: Path):
    from PIL import Image

    shot = tmp_path / f"shot-{width}.png"
    profile = tmp_path / f"profile-{width}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists(), "chromium wrote no screenshot"
    keep = os.environ.get("AMIGO_KEEP_SHOTS")
    if keep:  # to look at them: AMIGO_KEEP_SHOTS=/some/dir
        shutil.copy(shot, Path(keep) / shot.name)
    return Image.open(shot).convert("RGB")


def _count(img, hex_color: str, tol: int = 12) -> int:
    rgb = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return sum(1 for p in img.getdata() if all(abs(a - b) <= tol for a, b in zip(p, rgb, strict=False)))


@pytest.mark.slow
@pytest.mark.parametrize("width,height", [(1280, 2600), (390, 4200)])
def test_html_page_renders_in_headless_chromium(width, height, tmp_path):
    """The page as a user opens it, on a laptop and on a phone: the charts are drawn (estimated and
    actual bars), nothing is wider than the screen, the project and date are on it."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(report_html.to_html(report_of(RUNS + EXTRA, shipped_compare())), encoding="utf-8")
    img = _shot(page, width, height, tmp_path)
    assert img.size == (width, height)
    est, act = _count(img, report_html.EST_COLOR), _count(img, report_html.ACT_COLOR)
    # strategies (3 bars x 2 charts) + per stage (5 groups x 2 series x 2 charts); the phone draws them smaller
    floor = 4000 if width > 1000 else 1500
    assert est > floor, f"estimated bars not drawn ({est} px at {width} px)"
    assert act > floor / 2, f"actual bars not drawn ({act} px at {width} px)"
    # nothing spills past the right edge: the last column of pixels is page background
    right = [img.getpixel((width - 1, y)) for y in range(0, height, 7)]
    assert all(p == (255, 255, 255) for p in right), f"something is wider than {width} px"
