#!/usr/bin/env bash
# Stop the cluster of start_local_cluster.sh: slurmd, slurmctld and munged (its queue is dropped).
# Leaves $SLURM_LOCAL_DIR (logs, key) in place; safe to run when nothing is running.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/atssrepro-slurm}"
[ -d "$DIR" ] && DIR="$(cd "$DIR" && pwd)"

say() { echo "stop_local_cluster: $*"; }

stop() {  # name, pid file
    local name="$1" pidfile="$2" pid
    if ! { [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && kill -0 "$pid" 2>/dev/null; }; then
        say "$name is not running"
        return
    fi
    kill "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { say "stopped $name"; return; }
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    say "killed $name (it did not stop within 10 s)"
}

stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
stop munged "$DIR/munge/munged.pid"
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$DIR/slurm.conf" ]; then
    rm /etc/slurm/slurm.conf
    say "removed the link /etc/slurm/slurm.conf"
fi
