#!/usr/bin/env bash
# System packages the full test run needs on a fresh Debian CI machine (root):
#   chromium  - the HTML report's screenshot test renders the charts in headless Chromium
#   rsync     - SkyPilot needs it even for dry runs
#   cmake g++ - `make test` builds llama.cpp (llama-cpp-python, the export extra) from source
# (The Slurm sandbox for `make test-e2e` installs its own: scripts/slurm-sandbox.sh.)
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v rsync >/dev/null || need+=(rsync)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
