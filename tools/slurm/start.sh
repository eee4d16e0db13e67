#!/usr/bin/env bash
# A real single-node SLURM cluster on this (Debian, root) machine, for testing the slurm profile:
#
#   eval "$(tools/slurm/start.sh /tmp/kdflow-slurm)"   # prints `export SLURM_CONF=...`
#   export MLFLOW_TRACKING_URI=sqlite:///$PWD/results/mlflow.db
#   snakemake --profile profiles/slurm --slurm-init-seconds-before-status-checks 2
#   tools/slurm/stop.sh /tmp/kdflow-slurm
#
# Installs (apt) slurm-wlm's daemons, munge, slurmdbd and MariaDB if missing, then starts munged,
# MariaDB on 127.0.0.1, slurmdbd, slurmctld and slurmd with $KDFLOW_SLURM_GPUS (default 1) fake
# GPUs (gres/gpu backed by char devices, no CUDA behind them). The database, logs and spool live in
# the state directory; the daemons listen on free loopback ports. The configuration goes to
# /etc/slurm (stop.sh removes it again): the executor plugin's in-job `srun` drops SLURM_CONF, so
# only the default path works. One such cluster per machine, then. Every PID it starts goes to
# <state>/pids; stop.sh kills exactly those. Accounting (slurmdbd) is needed: the executor plugin
# polls job states with sacct.
#
# Exit status 3: the packages are missing and apt could not install them.
set -euo pipefail

STATE=${1:-${KDFLOW_SLURM_DIR:-/tmp/kdflow-slurm}}
CLUSTER=kdflow
PARTITION=main  # the default partition of profiles/slurm
ACCOUNT=kdflow
GPUS=${KDFLOW_SLURM_GPUS:-1}
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || { echo "KDFLOW_SLURM_GPUS must be a positive count" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
CONF_DIR=/etc/slurm
MARK="# written by kdflow tools/slurm/start.sh"

log() { echo "slurm-local: $*" >&2; }

install_packages() {
    local missing=0 cmd
    for cmd in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    log "installing slurm, munge, slurmdbd, mariadb (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurmctld slurmd slurm-client munge slurmdbd mariadb-server; } >&2; then
        log "apt could not install the packages"
        exit 3
    fi
}

free_port() {  # a loopback port nobody listens on (picked at random, probed with bash's /dev/tcp)
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    log "no free port found"
    exit 1
}

wait_for() {  # wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "timed out waiting for $what; logs in $STATE/log"
    exit 1
}

record() { echo "$1 $2" >>"$STATE/pids"; }  # record <name> <pid>

running() {  # running <state dir>: a daemon recorded there still runs (same PID, same program)
    local name pid
    [[ -f $1/pids ]] || return 1
    while read -r name pid; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] && return 0
    done <"$1/pids"
    return 1
}

install_packages
if [[ -e $CONF_DIR/slurm.conf ]]; then
    if ! head -n 1 "$CONF_DIR/slurm.conf" | grep -qF "$MARK"; then
        log "$CONF_DIR/slurm.conf is not ours: this machine has its own SLURM; not touching it"
        exit 1
    fi
    other=$(head -n 1 "$CONF_DIR/slurm.conf" | sed -n 's/.*(state: \(.*\))$/\1/p')
    if running "$other"; then
        log "a test cluster from $other still runs; stop it first: tools/slurm/stop.sh $other"
        exit 1
    fi
fi
if running "$STATE"; then
    log "a cluster still runs from $STATE; stop it first: tools/slurm/stop.sh $STATE"
    exit 1
fi
if [[ -f $STATE/pids ]]; then  # an earlier cluster's leftovers: start afresh
    rm -rf "${STATE:?}"/{log,run,ctld,slurmd,mysql}
elif [[ -d $STATE && -n $(ls -A "$STATE") ]]; then
    log "$STATE is not empty and no state directory of ours: give a new directory"
    exit 1
fi
mkdir -p "$STATE"/{log,run,ctld,slurmd,mysql}
STATE=$(cd "$STATE" && pwd)
: >"$STATE/pids"
started=0
on_exit() {
    ((started)) && return
    log "start failed; the daemons' logs end with:"
    tail -n 5 "$STATE"/log/*.log >&2
    log "stopping what it started"
    "$HERE/stop.sh" "$STATE" >&2
}
trap on_exit EXIT

# munge: one per machine (its socket is fixed); reuse a working one, start it otherwise.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running: reusing it"
else
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    rm -f /run/munge/munged.pid  # a stale one would name someone else's PID
    runuser -u munge -- munged --force  # --force: past a dead munged's leftover socket
    wait_for 10 munged test -s /run/munge/munged.pid
    record munged "$(cat /run/munge/munged.pid)"
    wait_for 10 munge sh -c 'munge -n | unmunge'
fi

# MariaDB on loopback only, its data in the state directory.
DB_PORT=$(free_port)
mariadb-install-db --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
    --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
setsid mariadbd --user=root --datadir="$STATE/mysql" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --socket="$STATE/run/mysql.sock" --pid-file="$STATE/run/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --skip-name-resolve </dev/null >/dev/null 2>&1 &
record mariadbd $!  # setsid execs mariadbd in place: a background job is no process-group leader
wait_for 60 mariadb mariadb-admin --socket="$STATE/run/mysql.sock" ping
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mariadb --socket="$STATE/run/mysql.sock" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# Configuration: the node as slurmd sees it, RealMemory at 95 % (above the real total the node is INVAL).
NODE=$(hostname -s)
read -r -a HW <<<"$(slurmd -C | head -n 1)"
NODE_HW=()
for kv in "${HW[@]}"; do
    case $kv in
    NodeName=*) ;;
    RealMemory=*) NODE_HW+=("RealMemory=$((${kv#RealMemory=} * 95 / 100))") ;;
    *) NODE_HW+=("$kv") ;;
    esac
done
CTLD_PORT=$(free_port) SLURMD_PORT=$(free_port) DBD_PORT=$(free_port)
# Fake GPUs: char devices like /dev/null (gres needs a File=; a Count= line alone is rejected).
for ((i = 0; i < GPUS; i++)); do
    mknod "$STATE/run/fakegpu$i" c 1 3 2>/dev/null || ln -sf /dev/null "$STATE/run/fakegpu$i"
done

mkdir -p "$CONF_DIR"
cat >"$CONF_DIR/slurm.conf" <<EOF
$MARK (state: $STATE)
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No systemd, no cgroups on these machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=2
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 ${NODE_HW[*]} Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$CONF_DIR/gres.conf" <<EOF
$MARK
AutoDetect=off
Name=gpu File=$STATE/run/fakegpu[0-$((GPUS - 1))]
EOF
(
    umask 077  # slurmdbd refuses a readable slurmdbd.conf (it holds the DB password)
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)
export SLURM_CONF=$CONF_DIR/slurm.conf  # slurmdbd.conf and gres.conf are read from beside it

slurmdbd
wait_for 30 slurmdbd test -s "$STATE/run/slurmdbd.pid"
record slurmdbd "$(cat "$STATE/run/slurmdbd.pid")"
wait_for 60 "slurmdbd to answer" sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=kdflow Organization=kdflow >/dev/null
sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

slurmctld
wait_for 30 slurmctld test -s "$STATE/run/slurmctld.pid"
record slurmctld "$(cat "$STATE/run/slurmctld.pid")"
slurmd
wait_for 30 slurmd test -s "$STATE/run/slurmd.pid"
record slurmd "$(cat "$STATE/run/slurmd.pid")"
wait_for 60 "node $NODE to be idle" sh -c "sinfo -h -n $NODE -o %T | grep -qx idle"

started=1
log "cluster '$CLUSTER' up: partition $PARTITION, node $NODE (${NODE_HW[*]}, gpu:$GPUS); state in $STATE"
echo "export SLURM_CONF=$SLURM_CONF"
