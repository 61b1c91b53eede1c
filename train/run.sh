#!/usr/bin/env bash
# The one `run` command of every sky/*.yaml: env (AMIGO_*, SKYPILOT_*) -> `python -m train` args.
# torchrun when SkyPilot hands us more than one GPU or node, plain python otherwise.
set -euo pipefail
PY=${AMIGO_PYTHON:-python3}
NNODES=${SKYPILOT_NUM_NODES:-1}
NGPUS=${SKYPILOT_NUM_GPUS_PER_NODE:-1}

# S3 transport: the inputs (prepared dataset, previous adapter) come from the store.
if [ -n "${AMIGO_INPUTS:-}" ]; then
  "$PY" -m train.storage get "$AMIGO_INPUTS" inputs
fi

# A hub dataset the controller left to this machine (amigo.toml dataset.prepare): fetched and prepared
# here, with the controller's code and settings (train/prepare.py), not through the laptop's uplink.
if [ -n "${AMIGO_PREPARE:-}" ]; then
  "$PY" -m train.prepare --stage "$AMIGO_STAGE" --job "$AMIGO_PREPARE" --model "$AMIGO_BASE_MODEL" --out "$AMIGO_DATA"
fi

args=(--stage "$AMIGO_STAGE" --config "$AMIGO_TRAIN_CONFIG" --model "$AMIGO_BASE_MODEL"
      --method "$AMIGO_METHOD" --data "$AMIGO_DATA" --output-dir "$AMIGO_OUTPUT" --resume auto)
[ -n "${AMIGO_ADAPTER_FROM:-}" ] && args+=(--adapter-from "$AMIGO_ADAPTER_FROM")
[ "${AMIGO_MAX_RUNTIME_S:-0}" != "0" ] && args+=(--max-runtime-s "$AMIGO_MAX_RUNTIME_S")
for kv in ${AMIGO_SET:-}; do args+=(--set "$kv"); done

if [ $((NNODES * NGPUS)) -gt 1 ]; then
  MASTER=$(echo "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)
  exec "$PY" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$NGPUS" \
    --node_rank "${SKYPILOT_NODE_RANK:-0}" --master_addr "$MASTER" --master_port 29500 \
    -m train "${args[@]}"
fi
exec "$PY" -m train "${args[@]}"
