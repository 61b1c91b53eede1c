"""bench/train_bench.py on CPU (tiny shape): the project path and the --baseline loop each print one
JSON line with the documented fields and append it to --out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from train_helpers import REPO


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--baseline"]], ids=["project", "baseline"])
def test_bench_tiny(tmp_path, extra):
    out = tmp_path / "bench.jsonl"
    cmd = [sys.executable, "bench/train_bench.py", "--shape", "tiny", "--seq", "64", "--batch", "2", "--steps", "3",
           "--cache", str(tmp_path / "models"), "--out", str(out), *extra]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # stdout is the JSON line only
    result = json.loads(lines[0])
    assert json.loads(out.read_text().splitlines()[-1]) == result
    assert result["shape"] == "tiny" and result["seq"] == 64 and result["batch"] == 2 and result["device"] == "cpu"
    assert result["mode"] == ("baseline" if extra else "project")
    assert result["tokens_per_s"] > 0 and result["median_step_s"] > 0 and result["peak_mem_gib"] > 0
    assert result["tokens_per_s"] == pytest.approx(64 * 2 / result["median_step_s"], rel=0.01)
    assert result["mfu"] is None  # no peak FLOPs figure for a CPU
    assert result["accelerants"]
