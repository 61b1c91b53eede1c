#!/usr/bin/env bash
# The hard cap on the rented machine. Every sky/*.yaml runs its setup and its run through it:
#   bash train/capped.sh setup bash train/setup.sh        bash train/capped.sh run bash train/run.sh
#
# AMIGO_DEADLINE (epoch seconds, from the controller: the launch + the cap the stage's budget buys at
# the machine's $/h, amigo_burst/planning/budget.py) bounds each phase of the job: setup, the inputs
# fetch, prepare, the model download, training, the benchmark, whatever hangs. At the deadline the
# phase gets SIGTERM (the trainer finishes its step and saves a checkpoint), AMIGO_CAP_GRACE_S later
# SIGKILL, and it exits 124. The cluster is then idle and SkyPilot's autodown removes it: nobody
# needs to be watching. AMIGO_DEADLINE 0 / unset: no cap (the laptop, `sky launch` by hand).
#
# On a rented machine (AMIGO_ON_MACHINE=1, set by every cloud launch) or under a cap, the phase runs in
# a process group of its own (timeout's), and its pid is kept in ~/.amigo/jobs/<run>.pid: `amigo-burst
# down RUN` sends SIGTERM there to stop with a checkpoint, and timeout passes it on to all of the job.
# On this laptop without a cap (the local runner) the phase simply runs, in the runner's own process
# group, which `down` and the tests signal as a whole.
set -uo pipefail
phase=$1
shift
deadline=${AMIGO_DEADLINE:-0}
if [ "$deadline" = "0" ] && [ "${AMIGO_ON_MACHINE:-0}" != "1" ]; then
  exec "$@"
fi
left=0
if [ "$deadline" != "0" ]; then
  left=$((deadline - $(date +%s)))
  if [ "$left" -le 0 ]; then
    echo "error: hard cap: the job's time on this machine ran out before its $phase (cap ended $(date -u -d "@$deadline" +%FT%TZ)); stopped here, the cluster autodowns"
    exit 124
  fi
  echo "amigo cap: $phase ends by $(date -u -d "@$deadline" +%FT%TZ) at the latest (${left}s left of the job's cap)"
fi
mkdir -p "$HOME/.amigo/jobs"
pidfile="$HOME/.amigo/jobs/${AMIGO_RUN_ID:-manual}.pid"
timeout --kill-after="${AMIGO_CAP_GRACE_S:-120}" "$left" "$@" &
child=$!
echo "$child" >"$pidfile"
# a stop for this job (amigo-burst down, scancel, SkyPilot's cancel) reaches all of it, through timeout
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do # a trapped signal ended the wait, not the job: it is still saving
  rc=0
  wait "$child" || rc=$?
done
rm -f "$pidfile"
if [ "$deadline" != "0" ] && { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && [ "$(date +%s)" -ge "$deadline" ]; then
  echo "error: hard cap: the job ran to its time cap on this machine during its $phase and was stopped there (SIGTERM, the step's checkpoint saved when training); the cluster autodowns"
  exit 124
fi
exit "$rc"
