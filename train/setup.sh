#!/usr/bin/env bash
# The one `setup` command of every sky/*.yaml. Idempotent: when the training stack is already installed
# (the laptop's venv, a re-used cluster) it installs nothing, and names any version that differs from
# the tested pins in train/requirements.txt. A fresh machine gets torch ($AMIGO_TORCH_SPEC, a CUDA
# build by default), then exactly the pinned versions.
#
# "Installed" is asked of the import system (find_spec + package metadata), not by importing: importing
# torch, transformers, peft, trl and datasets costs ~9 CPU-seconds on every run for nothing (`python -m
# train` imports them moments later and fails with the import error itself if one is broken).
set -euo pipefail
PY=${AMIGO_PYTHON:-python3}
if "$PY" - <<'PYEOF'
import importlib.metadata as md
import importlib.util
import sys

if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft", "trl", "datasets")):
    sys.exit(1)  # not installed: install below
print(f"setup: training stack present (torch {md.version('torch')})")
for line in open("train/requirements.txt"):
    spec = line.split("#")[0].strip()
    if "==" in spec:
        name, want = spec.split("==")
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = "missing"
        if have != want:
            print(f"setup: warning: {name} {have} here, {want} tested (train/requirements.txt)")
PYEOF
then
  exit 0
fi
"$PY" -m pip install -q ${AMIGO_TORCH_SPEC:-torch}
"$PY" -m pip install -q -r train/requirements.txt
