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

GOLDEN = Path(__file__).parent / "golden"
RUNS = json.loads((GOLDEN / "report_runs.json").read_text())
CHROMIUM = "/usr/bin/chromium"


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
    report_cmd(fmt="table", runs=RUNS, console=con)
    check_golden("report_table.txt", buf.getvalue())
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 100


@pytest.mark.parametrize("fmt,name", [("md", "report.md"), ("json", "report.json"), ("html", "report.html")])
def test_text_formats_golden(fmt, name, tmp_path):
    out = tmp_path / name
    report_cmd(fmt=fmt, out=out, runs=RUNS, console=Console(file=io.StringIO()))
    check_golden(name, out.read_text(encoding="utf-8"))
    assert not list(tmp_path.glob("*.tmp"))


def test_json_keys_are_stable_and_errors_computed():
    rep = json.loads(rp.to_json(rp.build_report(RUNS)))
    assert set(rep) == {"runs", "totals", "strategies"}
    for row in rep["runs"]:
        assert tuple(row) == rp.ROW_KEYS
    for row in rep["totals"]:
        assert tuple(row) == rp.TOTAL_KEYS
    s1 = next(r for r in rep["runs"] if r["stage"] == 1)
    run = next(r for r in RUNS if r["stage"] == 1)
    actual_h = s1["actual_hours"]
    assert s1["est_hours"] == pytest.approx(run["estimate"]["hours"], abs=1e-4)
    assert s1["hours_error_pct"] == pytest.approx((s1["est_hours"] - actual_h) / actual_h * 100, abs=0.1)
    assert s1["actual_usd"] == pytest.approx(actual_h * run["usd_per_hour"], abs=1e-4)
    failed = next(r for r in rep["runs"] if r["status"] == "FAILED")
    assert failed["est_hours"] is None and failed["actual_hours"] == pytest.approx(20 / 60, abs=1e-4)
    everything = next(t for t in rep["totals"] if t["group"] == "all runs")
    assert everything["runs"] == len(RUNS)
    assert everything["actual_usd"] == pytest.approx(sum(r["actual_usd"] for r in rep["runs"]), abs=1e-3)


def test_empty_report_says_so():
    assert "No runs yet." in rp.to_markdown(rp.build_report([]))
    assert "No runs yet." in rp.to_html(rp.build_report([]))


@pytest.mark.badinput
def test_unknown_format_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--format"):
        report_cmd(fmt="pdf", out=tmp_path / "x", runs=RUNS)
    assert not list(tmp_path.iterdir())


def test_html_is_self_contained():
    html = rp.to_html(rp.build_report(RUNS))
    assert html.count("<svg") == 3
    for ref in ("src=\"http", "href=\"http", "<script", "<link", "url("):
        assert ref not in html


@pytest.mark.slow
def test_html_charts_render_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(rp.to_html(rp.build_report(RUNS)), encoding="utf-8")
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()]
    try:
        subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists(), "chromium wrote no screenshot"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)

    def count(rgb, tol=12):
        return sum(1 for p in img.getdata() if all(abs(a - b) <= tol for a, b in zip(p, rgb, strict=False)))

    est = count(tuple(int(rp.EST_COLOR[i:i + 2], 16) for i in (1, 3, 5)))
    act = count(tuple(int(rp.ACT_COLOR[i:i + 2], 16) for i in (1, 3, 5)))
    # bars: five stages x two charts, each bar tens of pixels wide and up to ~190 tall
    assert est > 2000, f"estimated bars not drawn ({est} px)"
    assert act > 2000, f"actual bars / points not drawn ({act} px)"
    # the charts sit above the tables: their colors appear in the top part of the page
    top = img.crop((0, 0, 1200, 800))
    assert any(abs(p[0] - 0x1F) < 12 and abs(p[2] - 0xB4) < 12 for p in top.getdata())
