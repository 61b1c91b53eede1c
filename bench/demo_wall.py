"""Wall time of the demo: the five-stage pipeline on the tiny model, local target, CPU (goal < 300 s).

    .venv/bin/python bench/demo_wall.py
Runs `python -m amigo_burst.demo` (fresh .amigo/, tiny model built if missing) and prints one JSON
object with the wall seconds and the per-stage run durations from the state DB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "amigo_burst.demo"], cwd=ROOT, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    from amigo_burst.state.records import RunStore

    stages = [{"stage": r.stage, "status": r.status, "tokens_per_s": r.tokens_per_s,
               "wall_s": (r.metrics or {}).get("wall_s")}
              for r in RunStore(ROOT / "demo-project" / ".amigo" / "state.db").list()]
    print(json.dumps({"bench": "demo_wall", "command": "python -m amigo_burst.demo", "exit": rc,
                      "wall_s": round(wall, 1), "goal_s": 300, "ok": rc == 0 and wall < 300,
                      "cpus": os.cpu_count(), "stages": stages}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
