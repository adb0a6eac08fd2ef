#!/usr/bin/env bash
# Install and start a one-node SLURM cluster on 127.0.0.1 for tests/test_slurm.py (CI, as root).
# Recipe: ../shared/docs/slurm-local.md. Idempotent: installs only what is missing and starts only
# daemons that are not running. Without root or apt-get it says so and leaves the SLURM test to
# skip (it skips only when sbatch is absent).
set -uo pipefail

if ! command -v sbatch >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_slurm: sbatch absent and cannot install (needs root and apt-get); SLURM test skips" >&2
    exit 0
  fi
  { [ -n "${LNPATH_APT_UPDATED:-}" ] || apt-get update -qq; } \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge \
    || { echo "ci_slurm: installing slurm-wlm/munge failed" >&2; exit 1; }
fi
[ "$(id -u)" -eq 0 ] || { echo "ci_slurm: not root; using the running SLURM as is" >&2; exit 0; }

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge
if [ ! -f /etc/slurm/slurm.conf ]; then
  H=$(hostname); CPUS=$(nproc); MEM=$(( $(free -m | awk '/Mem:/{print $2}') - 2000 ))
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$H(127.0.0.1)
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
fi
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    sinfo
    exit 0
  fi
  sleep 1
done
echo "ci_slurm: SLURM did not come up; see /var/log/slurm/" >&2
exit 1
