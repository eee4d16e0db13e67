#!/usr/bin/env bash
# Stops what tools/slurm/start.sh started, by the PIDs it recorded in <state>/pids (never by name):
#
#   tools/slurm/stop.sh /tmp/kdflow-slurm
#
# Jobs still queued or running on that cluster are cancelled first; the configuration start.sh wrote to
# /etc/slurm is removed at the end. Leaves the state directory (database, logs) in place.
set -uo pipefail

STATE=${1:-${KDFLOW_SLURM_DIR:-/tmp/kdflow-slurm}}
PIDS=$STATE/pids
CONF_DIR=/etc/slurm
MARK="# written by kdflow tools/slurm/start.sh"
[[ -f $PIDS ]] || exit 0

if grep -q '^slurmctld ' "$PIDS"; then
    SLURM_CONF=$CONF_DIR/slurm.conf timeout 10 scancel --user "$(id -un)" 2>/dev/null
fi

alive() {  # alive <name> <pid>: that PID still runs that program (not a reused PID)
    [[ $(cat "/proc/$2/comm" 2>/dev/null) == "$1"* ]]
}

# Reverse start order: slurmd, slurmctld, slurmdbd, mariadbd, munged.
tac "$PIDS" | while read -r name pid; do
    alive "$name" "$pid" || continue
    kill -TERM "$pid"
    for _ in $(seq 50); do
        alive "$name" "$pid" || break
        sleep 0.2
    done
    if alive "$name" "$pid"; then
        echo "slurm-local: $name ($pid) ignored SIGTERM for 10 s; SIGKILL" >&2
        kill -KILL "$pid"
    fi
done
for f in slurm.conf gres.conf slurmdbd.conf; do
    grep -qF "$MARK" "$CONF_DIR/$f" 2>/dev/null && rm -f "$CONF_DIR/$f"
done
: >"$PIDS"  # emptied, not removed: it marks the directory as a state directory for start.sh
