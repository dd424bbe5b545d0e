#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, for trying and testing `atssrepro` on Slurm.
#
# Installs Slurm and MUNGE with apt-get when they are missing (Debian/Ubuntu, needs root), then
# starts munged, slurmctld and slurmd with all their state, spool, logs and key under
# $SLURM_LOCAL_DIR (default /tmp/atssrepro-slurm). Two partitions share the node:
#   debug   the default; its jobs can be requeued, and are preempted by jobs of `urgent`
#   urgent  submit here to preempt a running `debug` job (how real preemption looks to a job)
# Preempted and timed-out jobs receive the signal of their `--signal` option (submitit asks
# for USR2), so that submitit can checkpoint and requeue them.
#
# Running it again while the cluster is up changes nothing. Stop it with stop_local_cluster.sh.
set -euo pipefail

NODE="$(hostname -s)"
SYSTEM_CONF=/etc/slurm/slurm.conf

say() { echo "start_local_cluster: $*"; }
fail() { echo "start_local_cluster: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (the daemons and apt-get need it)"

# --- packages ----------------------------------------------------------------------------------
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    say "Slurm and MUNGE are installed ($(slurmctld -V))"
else
    command -v apt-get >/dev/null || fail "Slurm is not installed and there is no apt-get to install it"
    say "installing slurmctld, slurmd, slurm-client and munge with apt-get"
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
        || fail "apt-get install failed"
fi

DIR="${SLURM_LOCAL_DIR:-/tmp/atssrepro-slurm}"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
if { [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; } && [ "$(readlink "$SYSTEM_CONF")" != "$CONF" ]; then
    fail "$SYSTEM_CONF exists and is not this cluster's (another SLURM_LOCAL_DIR, or a real cluster); move it away first"
fi

# --- munge -------------------------------------------------------------------------------------
# munged refuses a key or socket folder that other users can write; it runs as user munge.
chown munge:munge "$DIR/munge"
chmod 0755 "$DIR/munge"
if [ ! -f "$DIR/munge/munge.key" ]; then
    mungekey --create --keyfile="$DIR/munge/munge.key" || fail "mungekey could not create a key"
    say "created a MUNGE key in $DIR/munge"
fi
chown munge:munge "$DIR/munge/munge.key"
chmod 0400 "$DIR/munge/munge.key"

munge_works() { munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
if munge_works; then
    say "munged is running"
else
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || fail "munged did not start; see $DIR/munge/munged.log"
    munge_works || fail "munged started but 'munge -n | unmunge' fails; see $DIR/munge/munged.log"
    say "started munged (socket $MUNGE_SOCKET)"
fi

# --- slurm.conf --------------------------------------------------------------------------------
CPUS="$(nproc)"
MEMORY_MB="$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)"
cat >"$CONF.new" <<EOF
# Written by slurm/start_local_cluster.sh: a one-node cluster on $NODE.
ClusterName=atssrepro
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in containers: track processes by parent id, no task binding, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
# Preemption by partition priority requeues the preempted job; during GraceTime it receives
# its --signal (USR2 for submitit) rather than SIGTERM, so that it can checkpoint.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
CONF_CHANGED=no
if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
    rm "$CONF.new"
else
    mv "$CONF.new" "$CONF"
    CONF_CHANGED=yes
    say "wrote $CONF ($CPUS CPUs, $MEMORY_MB MB)"
fi

# The client commands (sbatch, squeue, submitit) read /etc/slurm/slurm.conf unless SLURM_CONF is set.
if [ ! -e "$SYSTEM_CONF" ] && [ ! -L "$SYSTEM_CONF" ]; then
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
    say "linked $SYSTEM_CONF -> $CONF"
fi

# --- daemons -----------------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if running "$DIR/slurmctld.pid"; then
    say "slurmctld is running"
    if [ "$CONF_CHANGED" = yes ]; then
        scontrol reconfigure || fail "scontrol reconfigure failed; run stop_local_cluster.sh, then this again"
        say "told the daemons to read the new configuration"
    fi
else
    # -c: start with an empty queue; stopping the cluster drops its jobs.
    slurmctld -c -f "$CONF" || fail "slurmctld did not start; see $DIR/log/slurmctld.log"
    say "started slurmctld"
fi
if running "$DIR/slurmd.pid"; then
    say "slurmd is running"
else
    slurmd -f "$CONF" || fail "slurmd did not start; see $DIR/log/slurmd.log"
    say "started slurmd"
fi

# --- wait for the node -------------------------------------------------------------------------
state=""
for _ in $(seq 60); do
    state="$(sinfo --noheader --nodes="$NODE" --partition=debug --format=%t 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle | mix | alloc) break ;;
        down* | drain* | drng*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
case "$state" in
    idle | mix | alloc) ;;
    *) fail "node $NODE is '${state:-not answering}' after 60 s; see $DIR/log/slurmctld.log and slurmd.log" ;;
esac
say "node $NODE is $state; partitions: $(sinfo --noheader --format=%P | paste -sd ' ')"
say "logs and state in $DIR"
