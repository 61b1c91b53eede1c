"""Time the whole CI (`.ci/run`) on a clean clone, as CI runs it, and print the seconds as JSON.

    python3 scripts/ci_time.py                 # clone HEAD of this checkout into a temp dir, run .ci/run
    python3 scripts/ci_time.py --ref wt-22     # another commit or branch of this repository
    python3 scripts/ci_time.py --keep          # keep the clone (and its .venv) afterwards

The clone is a fresh `git clone` (no .venv, no .amigo, nothing ignored), run with CI=true and no stdin,
like the CI machine. What it cannot make fresh is the machine: pip's wheel cache (a machine that already
built llama.cpp installs it in seconds; a fresh one builds it) and Debian packages stay as they are. The
JSON says which it was (`llama_wheel_cached`), so a number is never quoted without it.

Prints one JSON object: total seconds, rc, the phases `.ci/run` timed (its `ci-phase:` lines), each
pytest summary line with its seconds, and where the full log is. Exit code: .ci/run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASE = re.compile(r"^ci-phase: (\S+) (\d+)s$")
SUMMARY = re.compile(r"^=+ (.*\b(?:passed|failed|error|no tests ran)\b.*) in ([\d.]+)s(?: \(.*\))? =+$")


def llama_wheel_cached() -> bool:
    r = subprocess.run([sys.executable, "-m", "pip", "cache", "list", "llama_cpp_python*"],
                       capture_output=True, text=True)
    return r.returncode == 0 and ".whl" in r.stdout


def parse(log: str) -> dict:
    phases, summaries = {}, []
    for line in log.splitlines():
        if m := PHASE.match(line.strip()):
            phases[m.group(1)] = int(m.group(2))
        elif m := SUMMARY.match(line.strip()):
            summaries.append({"summary": m.group(1), "seconds": float(m.group(2))})
    return {"phases_s": phases, "pytest": summaries}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="HEAD", help="commit or branch of this repository to time (default HEAD)")
    ap.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    ap.add_argument("--log", type=Path, help="where to write .ci/run's output (default: beside the clone)")
    args = ap.parse_args()

    commit = subprocess.run(["git", "rev-parse", args.ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    cached = llama_wheel_cached()
    work = Path(tempfile.mkdtemp(prefix="amigo-ci-time-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
    log_path = args.log or work / "ci.log"
    env = {**os.environ, "CI": "true"}
    env.pop("VIRTUAL_ENV", None)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(["bash", ".ci/run"], cwd=clone, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, env=env).returncode
    total = time.monotonic() - t0
    out = {"bench": "ci_time", "command": "CI=true bash .ci/run (clean clone)", "commit": commit[:12],
           "rc": rc, "total_s": round(total, 1), "total_min": round(total / 60, 1), "goal_s": 35 * 60,
           "ok": rc == 0 and total <= 35 * 60, "llama_wheel_cached": cached, "cpus": os.cpu_count(),
           **parse(log_path.read_text(errors="replace")), "log": str(log_path)}
    if not args.keep:
        subprocess.run(["rm", "-rf", str(clone)])
    print(json.dumps(out))
    return rc


if __name__ == "__main__":
    sys.exit(main())
