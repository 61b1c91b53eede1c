#!/usr/bin/env bash
# Issue 8's GPU figures in one run: every case, plus the plain transformers+PEFT baseline rerun on
# the same machine for a same-machine ratio. Random weights: nothing is downloaded.
#
#   bash bench/gpu_suite.sh [OUT]     # on an H100/H200 with the train extra (+ liger-kernel, flash-attn if wanted)
#
# Writes JSON lines to OUT (default bench/results/<gpu>-<date>.jsonl): one header line (device,
# library versions) and one line per case. ~10 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
gpu=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0).replace(" ", "-"))')
OUT=${1:-bench/results/${gpu}-$(date -u +%Y%m%d).jsonl}
CACHE=${CACHE:-/tmp/amigo-bench-models}
mkdir -p "$(dirname "$OUT")"
"$PY" - "$OUT" <<'PY'
import importlib.metadata as md, json, sys, torch
v = {p: (md.version(p) if p != "torch" else torch.__version__) for p in
     ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate")}
for opt in ("liger-kernel", "flash-attn"):
    try: v[opt] = md.version(opt)
    except md.PackageNotFoundError: v[opt] = None
print(json.dumps({"header": True, "device": torch.cuda.get_device_name(0), "versions": v}), file=open(sys.argv[1], "a"))
PY
run() { "$PY" bench/train_bench.py --cache "$CACHE" --out "$OUT" "$@" || echo "{\"failed\": \"$*\"}" >> "$OUT"; }
run --shape 8b  --method lora  --seq 2048 --batch 4 --steps 20 --baseline   # the 6,003 tok/s / 31.3 GiB reference
run --shape 8b  --method lora  --seq 2048 --batch 4 --steps 20              # goal >= 9,600 tok/s, <= 19 GiB
run --shape 8b  --method qlora --seq 2048 --batch 4 --steps 20              # goal >= 6,000 tok/s, <= 12 GiB
run --shape 3b  --method qlora --seq 1024 --batch 1 --steps 20              # goal <= 5.5 GiB (the 6 GB laptop)
run --shape 12b --method qlora --seq 1024 --batch 1 --steps 20              # goal <= 11 GiB
echo "results: $OUT"
