"""`amigo-burst --help` start-up time (lazy imports keep it instant).

    .venv/bin/python bench/cli_startup.py [--runs 15]
Prints one JSON object: median/min/max seconds over the runs, goal 0.3 s median.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    exe = shutil.which("amigo-burst", path=str(Path(sys.executable).parent)) or "amigo-burst"
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "bench": "cli_startup", "command": "amigo-burst --help", "runs": args.runs,
        "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
        "max_s": round(max(times), 4), "goal_median_s": 0.3, "ok": statistics.median(times) < 0.3,
    }))


if __name__ == "__main__":
    main()
