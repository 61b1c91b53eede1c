#!/usr/bin/env bash
# The one `run` command of every sky/*.yaml: env (AMIGO_*, SKYPILOT_*) -> `python -m train` args,
# then the HumanEval benchmark of the stage's adapter on this same machine (train/humaneval.py).
# torchrun when SkyPilot hands us more than one GPU or node, plain python otherwise.
# AMIGO_TASK=eval runs the benchmark alone, on the adapter in AMIGO_ADAPTER_FROM (`amigo-burst eval --cloud`).
set -euo pipefail
# A SIGTERM for the job (amigo-burst down, the cap, a preemption) reaches the trainer too, which finishes
# its step and saves: this script waits for that instead of dying first, and skips the benchmark after.
stopping=""
trap 'stopping=1' TERM
PY=${AMIGO_PYTHON:-python3}
NNODES=${SKYPILOT_NUM_NODES:-1}
NGPUS=${SKYPILOT_NUM_GPUS_PER_NODE:-1}

# S3 transport: the inputs (prepared dataset, previous adapter) come from the store.
if [ -n "${AMIGO_INPUTS:-}" ]; then
  "$PY" -m train.storage get "$AMIGO_INPUTS" inputs
fi

# AMIGO_EVAL_LIMIT: the first N problems of the seeded order ("": all 164, "0": no benchmark).
# AMIGO_EVAL_MAX_NEW_TOKENS: per answer. Within what is left of the time budget, if there is one.
humaneval() {
  local adapter=$1 left=0
  if [ "${AMIGO_DEADLINE:-0}" != "0" ]; then  # the cap's deadline, less a minute to publish the score
    left=$((AMIGO_DEADLINE - $(date +%s) - 60))
  elif [ "${AMIGO_MAX_RUNTIME_S:-0}" != "0" ]; then
    left=$((AMIGO_MAX_RUNTIME_S - SECONDS))
  fi
  if [ "${AMIGO_DEADLINE:-0}" != "0" ] || [ "${AMIGO_MAX_RUNTIME_S:-0}" != "0" ]; then
    if [ "$left" -le 0 ]; then echo "humaneval: skipped: the time budget is spent"; return 0; fi
  fi
  local ev=(--model "$AMIGO_BASE_MODEL" --method "$AMIGO_METHOD" --output-dir "$AMIGO_OUTPUT" --max-runtime-s "$left")
  [ -n "$adapter" ] && ev+=(--adapter "$adapter")
  [ -n "${AMIGO_EVAL_LIMIT:-}" ] && ev+=(--limit "$AMIGO_EVAL_LIMIT")
  [ -n "${AMIGO_EVAL_MAX_NEW_TOKENS:-}" ] && ev+=(--max-new-tokens "$AMIGO_EVAL_MAX_NEW_TOKENS")
  # the settings key runs are matched by; AMIGO_EVAL_BASELINE: the base (stage 0) is not scored yet with
  # these settings: score it too, the adapter disabled (train/humaneval.py --baseline)
  [ -n "${AMIGO_EVAL_KEY:-}" ] && ev+=(--key "$AMIGO_EVAL_KEY")
  [ -n "${AMIGO_EVAL_BASELINE:-}" ] && ev+=(--baseline "$AMIGO_EVAL_BASELINE")
  "$PY" -m train.humaneval "${ev[@]}"
}

if [ "${AMIGO_TASK:-train}" = "eval" ]; then
  humaneval "$AMIGO_ADAPTER_FROM"
  exit 0
fi

# A hub dataset the controller left to this machine (amigo.toml dataset.prepare): fetched and prepared
# here, with the controller's code and settings (train/prepare.py), not through the laptop's uplink.
if [ -n "${AMIGO_PREPARE:-}" ]; then
  "$PY" -m train.prepare --stage "$AMIGO_STAGE" --job "$AMIGO_PREPARE" --model "$AMIGO_BASE_MODEL" --out "$AMIGO_DATA"
fi

args=(--stage "$AMIGO_STAGE" --config "$AMIGO_TRAIN_CONFIG" --model "$AMIGO_BASE_MODEL"
      --method "$AMIGO_METHOD" --data "$AMIGO_DATA" --output-dir "$AMIGO_OUTPUT" --resume auto)
[ -n "${AMIGO_ADAPTER_FROM:-}" ] && args+=(--adapter-from "$AMIGO_ADAPTER_FROM")
# The trainer's own stop (a step boundary, a checkpoint, exit 3): AMIGO_MAX_RUNTIME_S, and never past the
# cap's deadline less AMIGO_RESERVE_S (the last save, the benchmark). From the deadline, not from now:
# a spot job restarted on another machine trains for what is left of the budget, not for a fresh one.
train_s=${AMIGO_MAX_RUNTIME_S:-0}
if [ "${AMIGO_DEADLINE:-0}" != "0" ]; then
  until_s=$((AMIGO_DEADLINE - ${AMIGO_RESERVE_S:-0} - $(date +%s)))
  [ "$until_s" -ge 1 ] || until_s=1
  if [ "$train_s" = "0" ] || [ "$until_s" -lt "$train_s" ]; then train_s=$until_s; fi
fi
[ "$train_s" != "0" ] && args+=(--max-runtime-s "$train_s")
for kv in ${AMIGO_SET:-}; do args+=(--set "$kv"); done

# set -e: a stage that failed or stopped on its budget (exit 3) ends the script with that code, unscored.
if [ $((NNODES * NGPUS)) -gt 1 ]; then
  MASTER=$(echo "${SKYPILOT_NODE_IPS:-127.0.0.1}" | head -n1)
  "$PY" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$NGPUS" \
    --node_rank "${SKYPILOT_NODE_RANK:-0}" --master_addr "$MASTER" --master_port 29500 \
    -m train "${args[@]}"
  [ "${SKYPILOT_NODE_RANK:-0}" = "0" ] || exit 0  # the adapter is on node 0: it alone runs the benchmark
else
  "$PY" -m train "${args[@]}"
fi
if [ -n "$stopping" ]; then
  echo "run.sh: stopped (SIGTERM) after training: no benchmark"
elif [ "${AMIGO_EVAL_LIMIT:-}" != "0" ]; then
  # A benchmark that breaks does not undo the stage: the adapter stands, without a score.
  humaneval "$AMIGO_OUTPUT/adapter" || echo "warning: humaneval failed (exit $?): the stage's adapter stands without a score"
fi
