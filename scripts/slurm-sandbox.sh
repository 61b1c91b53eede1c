#!/usr/bin/env bash
# A one-node Slurm "cloud" on loopback that SkyPilot can launch real tasks on
# (the e2e tests' cluster: tests/sky_fixtures.py `slurm_sky_home`).
#
#   as root on Debian 12; needs only the Debian archive and PyPI (no internet beyond).
#   usage:  scripts/slurm-sandbox.sh up  [SKY_HOME]   # idempotent; prints the infra name
#           scripts/slurm-sandbox.sh down              # stops what `up` started
#           scripts/slurm-sandbox.sh status            # exit 0 when its daemons are up (tests use it
#                                                      # to leave the machine as they found it)
#           scripts/slurm-sandbox.sh sessions          # pids of ssh sessions still open on its port
#
# After `up`, with HOME=SKY_HOME (default: $HOME):
#   sky check slurm                  -> "Slurm: enabled", cluster "amigo"
#   sky launch -y -c t1 sky/slurm.yaml
# runs setup/run for real, syncs workdir and file_mounts, streams logs, and
# `sky down t1` cleans up. A first launch takes about a minute: SkyPilot
# installs its runtime (skypilot + deps from PyPI) into a per-cluster venv.
# The "cluster" is this machine reached over ssh as root: jobs run in /root/sky_workdir.
#
# What the sandbox has to stand in for, because this machine has no internet:
#  * SkyPilot's runtime bootstrap fetches uv's installer from its website
#    when the cluster's $HOME/.local/bin/uv is missing: a curl wrapper in
#    /usr/local/bin answers that one URL by copying the uv from PyPI.
#  * SkyPilot asks uv for Python 3.10 (`uv venv --python 3.10`); Debian 12 has
#    none and uv would download one from GitHub, so a python3.10 already on the
#    machine (pyenv, /usr/bin) is linked onto PATH. No python3.10: `up` fails
#    and says so.
#  * uv must trust the system CA bundle (SSL_CERT_FILE, in /etc/environment
#    and profile.d).
#  * Debian's python3 refuses `pip install` outside a venv (PEP 668): uv comes
#    from PyPI into a venv of our own under $STATE.
set -euo pipefail

STATE=/var/tmp/amigo-slurm-sandbox
SSH_PORT=${SANDBOX_SSH_PORT:-2222}
CLUSTER=${SANDBOX_CLUSTER:-amigo}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

packages() {
  # only what is missing: a second `up` touches no package manager
  local need=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null || need+=(slurm-wlm)
  command -v munged >/dev/null || need+=(munge)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v rsync >/dev/null || need+=(rsync)            # SkyPilot syncs with rsync, even for dry runs
  [ -x /usr/bin/curl ] || need+=(curl ca-certificates)     # the curl wrapper passes other URLs on
  python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

python_tools() {
  # a real uv binary (not a pyenv shim) on the default PATH
  if ! [ -x /usr/local/bin/uv ]; then
    [ -x "$STATE/venv/bin/python" ] || python3 -m venv "$STATE/venv"
    "$STATE/venv/bin/python" -c 'import uv' 2>/dev/null || "$STATE/venv/bin/python" -m pip install -q uv
    install -m 0755 "$("$STATE/venv/bin/python" -c 'import uv; print(uv.find_uv_bin())')" /usr/local/bin/uv
  fi
  # a real python3.10 in /usr/local/bin (a pyenv shim elsewhere on PATH does
  # not count: it fails unless pyenv has 3.10 selected)
  if ! /usr/local/bin/python3.10 -c '' 2>/dev/null; then
    local py310
    py310=$(ls -d /usr/bin/python3.10 /root/.pyenv/versions/3.10*/bin/python3.10 \
            "$HOME"/.pyenv/versions/3.10*/bin/python3.10 2>/dev/null | head -1 || true)
    [ -n "$py310" ] || { echo "need a python3.10 (SkyPilot's runtime asks uv for 3.10; uv would download it from GitHub)" >&2; exit 1; }
    ln -sf "$py310" /usr/local/bin/python3.10
  fi
  # SkyPilot's bootstrap runs `curl -LsSf https://astral.sh/uv/install.sh | sh`
  # when the cluster's $HOME/.local/bin/uv is missing: answer that one URL
  # with a one-line installer that copies the local uv; pass all else through.
  cat > /usr/local/bin/curl <<'EOF'
#!/bin/sh
case "$*" in
  *astral.sh/uv/install.sh*)
    echo 'mkdir -p "$UV_INSTALL_DIR" && cp /usr/local/bin/uv "$UV_INSTALL_DIR/uv"'; exit 0;;
esac
exec /usr/bin/curl "$@"
EOF
  chmod 0755 /usr/local/bin/curl
  cat > /etc/profile.d/zz-amigo-sandbox.sh <<'EOF'
export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt SSL_CERT_DIR=/etc/ssl/certs
EOF
  grep -q '^SSL_CERT_FILE=' /etc/environment 2>/dev/null \
    || echo 'SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' >> /etc/environment
}

munge_up() {
  mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 400 /etc/munge/munge.key
  if ! alive /run/munge/munged.pid; then
    su -s /bin/sh munge -c /usr/sbin/munged
    touch "$STATE/munge.started-by-up"  # `down` stops munged only when `up` started it
  fi
}

slurm_up() {
  # one node, this machine; RealMemory leaves 2 GiB to the OS (MemTotal is in kB).
  # CPUs: at least SANDBOX_CPUS (default 8), more than a 2-core machine has: the e2e tests run several
  # clusters at once (pytest-xdist) and their jobs mostly wait (ssh, syncs, a few training steps), so
  # Slurm may hand out more CPUs than there are (config_overrides: slurmd takes the file's count).
  local hn cpus mem
  hn=$(hostname); cpus=$(nproc)
  [ "$cpus" -ge "${SANDBOX_CPUS:-8}" ] || cpus=${SANDBOX_CPUS:-8}
  mem=$(( $(awk '/^MemTotal:/{print $2}' /proc/meminfo) / 1024 - 2048 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$hn
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SwitchType=switch/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
NodeName=$hn NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$hn Default=YES MaxTime=INFINITE DefaultTime=04:00:00 State=UP
EOF
  if ! cmp -s /etc/slurm/slurm.conf "$STATE/slurm.conf.applied" 2>/dev/null; then
    # a changed node definition (an older sandbox's CPU count): restart the daemons on the new file
    for f in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do alive "$f" && kill "$(cat "$f")"; done
    for _ in $(seq 20); do alive "$STATE/slurmd.pid" || alive "$STATE/slurmctld.pid" || break; sleep 0.5; done
    cp /etc/slurm/slurm.conf "$STATE/slurm.conf.applied"
  fi
  alive "$STATE/slurmctld.pid" || slurmctld
  alive "$STATE/slurmd.pid" || slurmd
  for _ in $(seq 30); do
    timeout 3 sinfo -h 2>/dev/null | grep -qE 'idle|mix|alloc' && return 0
    sleep 1
  done
  echo "slurm did not come up: see /var/log/slurm/" >&2; exit 1
}

sshd_up() {
  # sshd on loopback, key only: SkyPilot reaches the "login node" over ssh
  mkdir -p /run/sshd /root/.ssh
  [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A
  [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -f "$STATE/id_ed25519"
  touch /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys
  grep -qF "$(cat "$STATE/id_ed25519.pub")" /root/.ssh/authorized_keys \
    || cat "$STATE/id_ed25519.pub" >> /root/.ssh/authorized_keys
  # AcceptEnv SKY_CLUSTER_NAME: SkyPilot's ssh alias for a Slurm cluster sends it (SetEnv),
  # and the ~/.sky_ssh_rc it installs then puts the session in the cluster's home
  # (~/.sky_clusters/<name>, where sky_workdir lives), as SkyPilot's own per-job sshd
  # allows. Without it `ssh <cluster>` and rsync land in /root and miss the job's outputs.
  # SetEnv BASH_FUNC_pyenv%%: the node is this machine, whose root ~/.bashrc may run `pyenv init`
  # (~0.1 CPU-s and ~100 processes per shell). SkyPilot runs every remote command in an interactive
  # login shell, about a thousand per `make test-e2e`: on 2 cores that was ~8% of the e2e phase, for a
  # laptop's shell set-up no cloud node has. The sessions get a no-op `pyenv` function (bash imports
  # functions from the environment), so `eval "$(pyenv init -)"` does nothing there; PATH, the shims and
  # the rest of ~/.bashrc stay as they are, and shells outside the sandbox are untouched.
  cat > "$STATE/sshd_config.new" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PasswordAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AcceptEnv SKY_CLUSTER_NAME
SetEnv "BASH_FUNC_pyenv%%=() {  :; }"
PidFile $STATE/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  if cmp -s "$STATE/sshd_config.new" "$STATE/sshd_config"; then
    rm -f "$STATE/sshd_config.new"
  else
    mv "$STATE/sshd_config.new" "$STATE/sshd_config"
    # a changed config: SIGHUP makes sshd re-read it; open sessions stay
    if alive "$STATE/sshd.pid"; then kill -HUP "$(cat "$STATE/sshd.pid")"; sleep 1; fi
  fi
  alive "$STATE/sshd.pid" || /usr/sbin/sshd -f "$STATE/sshd_config"
}

up() {
  local sky_home=${1:-$HOME}
  [ "$(id -u)" = 0 ] || { echo "run as root: it installs and starts slurm, munge and sshd" >&2; exit 1; }
  mkdir -p "$STATE"
  packages
  python_tools
  munge_up
  slurm_up
  sshd_up
  # SkyPilot's view of the cluster: an ssh-config-style file
  mkdir -p "$sky_home/.slurm"
  cat > "$sky_home/.slurm/config" <<EOF
Host $CLUSTER
    HostName 127.0.0.1
    Port $SSH_PORT
    User root
    IdentityFile $STATE/id_ed25519
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
EOF
  timeout 20 ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -i "$STATE/id_ed25519" -p "$SSH_PORT" root@127.0.0.1 'sinfo -h' >/dev/null
  echo "slurm/$CLUSTER"
}

sessions() {
  # pids of the sshd sessions open on the sandbox's port, one a line (none: nothing)
  command -v ss >/dev/null || return 0
  ss -tnpH state established "( sport = :$SSH_PORT )" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u \
    || true  # grep finds none: no session (and no pipefail exit)
}

down() {
  # stops only what `up` started, by the pid files it keeps
  rm -f /usr/local/bin/curl
  for f in "$STATE/sshd.pid" "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
    alive "$f" && kill "$(cat "$f")"
  done
  # the sessions sshd forked outlive it (SkyPilot's ssh keeps a master connection open for minutes):
  # end those on the sandbox's port, and the client's ssh mux exits with them
  local open; open=$(sessions)
  [ -z "$open" ] || kill $open 2>/dev/null || true
  if [ -f "$STATE/munge.started-by-up" ]; then
    alive /run/munge/munged.pid && kill "$(cat /run/munge/munged.pid)"
    rm -f "$STATE/munge.started-by-up"
  fi
  return 0
}

status() {
  local f
  for f in "$STATE/slurmctld.pid" "$STATE/slurmd.pid" "$STATE/sshd.pid"; do
    alive "$f" || { echo "down"; return 1; }
  done
  echo "up"
}

case "${1:-}" in
  # one `up` at a time: parallel test workers each call it (for their own SKY_HOME). flock(1) holds the
  # lock itself and -o keeps it out of the script, so the daemons `up` starts never inherit it.
  up) shift
      if [ -z "${SANDBOX_UP_LOCKED:-}" ]; then
        mkdir -p "$STATE"
        SANDBOX_UP_LOCKED=1 exec flock -o "$STATE/up.lock" bash "$0" up "$@"
      fi
      up "$@" ;;
  down) down ;;
  status) status ;;
  sessions) sessions ;;
  *) echo "usage: $0 up [SKY_HOME] | down | status | sessions" >&2; exit 2 ;;
esac
