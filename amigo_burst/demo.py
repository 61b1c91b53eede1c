"""`make demo`: the five-stage pipeline on a tiny offline model, local target, CPU; then the report.

    .venv/bin/python -m amigo_burst.demo [--dir demo-project] [--keep]
Builds demo-project/ (amigo.toml from presets/demo.toml, a random-weight tiny
Llama + tokenizer built offline), runs `amigo-burst pipeline --plan local` and
`amigo-burst report` in it. A fresh .amigo/ each time unless --keep, so the
whole pipeline runs; with --keep, stages already done are skipped.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_project(d: Path, keep: bool) -> Path:
    d.mkdir(exist_ok=True)
    shutil.copy2(ROOT / "presets" / "demo.toml", d / "amigo.toml")
    if not keep and (d / ".amigo").exists():
        shutil.rmtree(d / ".amigo")
    if not (d / "tiny-model" / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "train.tiny", "--out", str(d / "tiny-model")], check=True, cwd=ROOT)
    return d / "amigo.toml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=ROOT / "demo-project")
    ap.add_argument("--keep", action="store_true", help="keep earlier demo runs (skips stages already done)")
    args = ap.parse_args(argv)
    if args.dir.parent.resolve() != ROOT:
        ap.error("--dir must be directly inside the repository (the preset's sample paths are ../train/samples)")
    t0 = time.perf_counter()
    cfg = setup_project(args.dir, args.keep)
    cli = [sys.executable, "-m", "amigo_burst.cli.app", "--config", str(cfg)]
    rc = subprocess.run([*cli, "pipeline", "--plan", "local"], cwd=args.dir).returncode
    if rc == 0:
        rc = subprocess.run([*cli, "report"], cwd=args.dir).returncode
    print(f"demo finished in {time.perf_counter() - t0:.0f} s (exit {rc}); project: {args.dir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
