#!/usr/bin/env bash
# make test-e2e: the SkyPilot-on-loopback-Slurm tests, several clusters at once.
#
#   E2E_WORKERS=4 scripts/test-e2e.sh [pytest args]     (E2E_WORKERS=0: one process)
#
# The sandbox (scripts/slurm-sandbox.sh) is brought up once here, before the pytest-xdist workers start,
# and down again at the end if it was down before; each worker's session fixture (slurm_sky_home) then
# finds it up and only points its own SkyPilot home at it. Whole test files go to one worker
# (--dist loadfile): a file's clusters are its own. The tests mostly wait on ssh, syncs and SkyPilot's
# provisioning, so more workers than cores pays off; the sandbox's Slurm node offers 8 CPUs for them.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${E2E_WORKERS:-4}
sandbox=scripts/slurm-sandbox.sh
was_up=0
bash "$sandbox" status >/dev/null 2>&1 && was_up=1
t0=$SECONDS
home=$(mktemp -d /tmp/amigo-e2e-home.XXXXXX)  # `up` writes a SkyPilot view of the cluster into a home: not root's
bash "$sandbox" up "$home" >/dev/null
echo "e2e: Slurm sandbox up in $((SECONDS - t0)) s$([ $was_up = 1 ] && echo ' (it was up)')"
rc=0
xdist=(); [ "$workers" = 0 ] || xdist=(-n "$workers" --dist loadfile)
.venv/bin/python -m pytest -m e2e "${xdist[@]}" --durations=25 "$@" tests || rc=$?
if [ $was_up = 0 ]; then
  bash "$sandbox" down
  # nothing left running: no ssh session on the sandbox's port (SkyPilot's master connections outlive sshd)
  left=$(bash "$sandbox" sessions | wc -l)
  [ "$left" = 0 ] || { echo "e2e: $left ssh session(s) still open on the sandbox's port after down" >&2; rc=1; }
fi
rm -rf "$home"
exit $rc
