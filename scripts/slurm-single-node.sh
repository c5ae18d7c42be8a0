#!/usr/bin/env bash
# Single-node Slurm for trying `mmbench run --executor slurm` (and the `slurm`-marked test) on one
# Debian/Ubuntu machine or CI container. Idempotent: re-running it only starts what is not running.
#
#   sudo scripts/slurm-single-node.sh          # install, configure and start munge + slurmctld + slurmd
#   sudo scripts/slurm-single-node.sh --status # show what runs
#   sudo scripts/slurm-single-node.sh --stop   # stop the daemons this script started (by pid file)
#
# cgroup-free on purpose (works in containers): ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
# no accounting (sacct is unavailable; mmbench falls back to squeue to notice jobs that died).
# Environment: SLURM_CPUS (default: nproc), SLURM_MEM_MB (default: 90% of MemTotal),
# SLURM_PARTITION (default: debug), SLURM_CONF_DIR (default: /etc/slurm), SLURM_USER (default: root).
set -euo pipefail

CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
CONF="$CONF_DIR/slurm.conf"
NODE=$(hostname -s)
CPUS=${SLURM_CPUS:-$(nproc)}
MEM_MB=${SLURM_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
PARTITION=${SLURM_PARTITION:-debug}
SLURM_USER=${SLURM_USER:-root}
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
export SLURM_CONF="$CONF"

log() { printf '[slurm-single-node] %s\n' "$*"; }
die() { printf '[slurm-single-node] error: %s\n' "$*" >&2; exit 1; }
alive() { local pid; pid=$(cat "$1" 2>/dev/null) && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0): it installs packages and starts system daemons"

stop_one() {  # stop one daemon by its pid file (never by name)
    if alive "$1"; then
        log "stopping $2 (pid $(cat "$1"))"
        kill "$(cat "$1")"
        for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
    fi
}

case "${1:-}" in
    --stop)
        stop_one "$SLURMD_PID" slurmd
        stop_one "$CTLD_PID" slurmctld
        stop_one "$MUNGE_PID" munged
        exit 0 ;;
    --status)
        for p in "$MUNGE_PID:munged" "$CTLD_PID:slurmctld" "$SLURMD_PID:slurmd"; do
            if alive "${p%%:*}"; then log "${p##*:} running (pid $(cat "${p%%:*}"))"; else log "${p##*:} not running"; fi
        done
        sinfo 2>&1 || true
        exit 0 ;;
    "") ;;
    *) die "unknown option $1 (expected --stop, --status or nothing)" ;;
esac

# 1. packages ------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# 2. munge -----------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer"
fi

# 3. slurm.conf (rewritten only when it changes) -----------------------------------------------------
install -d -m 0755 "$CONF_DIR" /var/log/slurm
install -d -o "$SLURM_USER" -m 0755 /var/spool/slurmctld /var/spool/slurmd
new=$(mktemp)
cat >"$new" <<EOF
# Written by mmbench scripts/slurm-single-node.sh: one node, no cgroups, no accounting.
ClusterName=mmbench
SlurmctldHost=$NODE
SlurmUser=$SLURM_USER
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=300
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$new" "$CONF"; then
    log "writing $CONF ($NODE: $CPUS CPUs, $MEM_MB MB, partition $PARTITION)"
    install -m 0644 "$new" "$CONF"
    changed=1
fi
rm -f "$new"

# 4. daemons ----------------------------------------------------------------------------------------
if ! alive "$CTLD_PID"; then
    log "starting slurmctld"
    slurmctld
elif [[ $changed -eq 1 ]]; then
    log "reconfiguring the running slurmctld"
    scontrol reconfigure
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"

if ! alive "$SLURMD_PID"; then
    log "starting slurmd"
    slurmd
fi

# 5. wait for the node ------------------------------------------------------------------------------
state=""
for _ in $(seq 100); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
    case "$state" in
        idle*|mixed*|allocated*|completing*) break ;;
        down*|drain*|drained*|fail*)
            scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case "$state" in
    idle*|mixed*|allocated*|completing*) ;;
    *) die "node $NODE is '${state:-unknown}' (see /var/log/slurm/slurmd.log)" ;;
esac
log "ready: node $NODE is $state"
sinfo
