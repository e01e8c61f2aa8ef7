#!/usr/bin/env bash
# A real single-node SLURM cluster on loopback, for the workflow tests.
#   tests/workflow/slurm/cluster.sh start DIR   installs slurm-wlm + munge where missing, writes
#                                      DIR/slurm.conf and starts munged, slurmctld, slurmd
#   tests/workflow/slurm/cluster.sh stop DIR    stops the daemons started from DIR
# The config is installed as /etc/slurm/slurm.conf, where job steps look for it (they do not see
# SLURM_CONF). No accounting daemon: snakemake's slurm executor needs --slurm-status-command squeue.
set -euo pipefail
action=${1:?usage: cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: cluster.sh start|stop DIR}" && cd "$2" && pwd)

stop() {
  for daemon in slurmd slurmctld; do
    [[ -f $dir/$daemon.pid ]] && kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
  done
  rm -f "$dir"/*.pid
}

if [[ $action == stop ]]; then
  stop
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-wlm and munge are missing and this user cannot apt-get install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
  chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged
  else
    munged --force
  fi
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$dir/state" "$dir/spool"
cat >"$dir/slurm.conf" <<CONF
ClusterName=saeprobe-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$((6817 + RANDOM % 1000))
SlurmdPort=$((7817 + RANDOM % 1000))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

stop
mkdir -p /etc/slurm
cp "$dir/slurm.conf" /etc/slurm/slurm.conf
slurmctld
slurmd
for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    exit 0
  fi
  sleep 1
done
echo "SLURM did not come up; logs in $dir" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
