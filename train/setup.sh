#!/usr/bin/env bash
# The one `setup` command of every sky/*.yaml. Idempotent: when the training
# stack already imports (the laptop's venv, a re-used cluster) it installs nothing.
set -euo pipefail
PY=${AMIGO_PYTHON:-python3}
if "$PY" -c 'import torch, transformers, peft, trl, datasets' 2>/dev/null; then
  echo "setup: training stack present ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
  exit 0
fi
"$PY" -m pip install -q ${AMIGO_TORCH_SPEC:-torch}
"$PY" -m pip install -q -r train/requirements.txt
