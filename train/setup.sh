#!/usr/bin/env bash
# The one `setup` command of every sky/*.yaml. Idempotent: when the training stack already imports
# (the laptop's venv, a re-used cluster) it installs nothing, and names any version that differs from
# the tested pins in train/requirements.txt. A fresh machine gets torch ($AMIGO_TORCH_SPEC, a CUDA
# build by default), then exactly the pinned versions.
set -euo pipefail
PY=${AMIGO_PYTHON:-python3}
if "$PY" -c 'import torch, transformers, peft, trl, datasets' 2>/dev/null; then
  echo "setup: training stack present ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
  "$PY" - <<'PYEOF' || true
import importlib.metadata as md
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
  exit 0
fi
"$PY" -m pip install -q ${AMIGO_TORCH_SPEC:-torch}
"$PY" -m pip install -q -r train/requirements.txt
