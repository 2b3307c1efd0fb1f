#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests/test_slurm.py: Debian's
# slurm-wlm and munge, a controller and a compute node both on localhost, no accounting
# database (job states come from squeue). Safe to run again: it installs the packages only
# when missing, writes /etc/slurm/slurm.conf only when missing (or when it is this script's
# own older version), and starts only the daemons that are not running. Needs root (or sudo).
#
#   bash tests/slurm_cluster.sh          # set up and start; prints sinfo
#   bash tests/slurm_cluster.sh stop     # stop the three daemons
set -euo pipefail

sudo=$([ "$(id -u)" = 0 ] || echo sudo)
conf=/etc/slurm/slurm.conf
marker="# written by swebench-runner tests/slurm_cluster.sh"
log_dir=/var/log/slurm

running() { pgrep -x "$1" >/dev/null; }

if [ "${1:-}" = stop ]; then
    for daemon in slurmd slurmctld munged; do
        pid=$(pgrep -x $daemon || true)
        [ -z "$pid" ] || $sudo kill $pid
    done
    exit 0
fi

# 1. Packages: the controller, the node daemon, the client commands, and munge (authentication).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

# 2. Configuration. The node's size comes from what slurmd sees, a little memory held back
# for the system, so the node is never drained for promising more than it has.
cpus=$(nproc)
mem_mb=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mem_mb=$(( mem_mb > 2048 ? mem_mb - 1024 : mem_mb ))
wanted=$(cat <<EOF
$marker
# A one-node cluster: controller and compute node on this machine.
ClusterName=swebench
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed (works in containers too).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
# Cores and memory are what jobs ask for and are given.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database: sacct has nothing to say, and job states come from squeue, which
# shows a finished job for MinJobAge seconds (kept long, so the workflow sees every end).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
# A node that restarts comes back by itself.
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
reconfigured=false
if [ ! -e $conf ] || { head -1 $conf | grep -qxF "$marker" && [ "$(cat $conf)" != "$wanted" ]; }; then
    $sudo mkdir -p /etc/slurm
    printf '%s\n' "$wanted" | $sudo tee $conf >/dev/null
    reconfigured=true
fi

# 3. Daemons: munged (as its own user), slurmctld (drops to SlurmUser), slurmd (root).
$sudo mkdir -p /run/munge $log_dir /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
$sudo chown munge:munge /run/munge
$sudo chown slurm:slurm $log_dir /var/lib/slurm/slurmctld
if [ ! -s /etc/munge/munge.key ]; then
    $sudo mungekey --create --keyfile /etc/munge/munge.key
    $sudo chown munge:munge /etc/munge/munge.key
    $sudo chmod 600 /etc/munge/munge.key
fi
if $reconfigured; then  # daemons started with another configuration
    for daemon in slurmd slurmctld; do
        pid=$(pgrep -x $daemon || true)
        [ -z "$pid" ] || { $sudo kill $pid; while running $daemon; do sleep 0.2; done; }
    done
fi
running munged || $sudo runuser -u munge -- /usr/sbin/munged
running slurmctld || $sudo slurmctld
running slurmd || $sudo slurmd -N localhost

# 4. Wait until the node takes jobs (a node left down by an earlier stop is resumed).
for _ in $(seq 60); do
    state=$(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null || true)
    case "$state" in
        idle*|mixed*|allocated*|completing*) break ;;
        down*|drain*) $sudo scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle*|mixed*|allocated*|completing*) sinfo ;;
    *)
        echo "SLURM did not come up (node state: '${state:-no answer}')." >&2
        tail -n 20 $log_dir/slurmctld.log $log_dir/slurmd.log >&2 || true
        exit 1 ;;
esac
