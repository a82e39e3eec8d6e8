#!/usr/bin/env bash
# A throwaway one-node Slurm cluster whose config, keys, spool, state, logs and pids all live in one
# folder: `up` installs Slurm and munge from the distribution when missing and starts munged,
# slurmctld and slurmd; `down` stops exactly what `up` started; `env` prints what a caller exports.
# Needs root (the daemons run as root). See tests/slurm/README.md.
set -euo pipefail

lock=/tmp/lantern-slurm-cluster.lock

usage() {
    echo "usage: $0 up|down|env STATE_DIR" >&2
    exit 2
}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

log() { echo "cluster.sh: $*" >&2; }

# Slurm and munge from the distribution's packages, installed only when a daemon or client is missing.
# --no-install-recommends keeps it to 8 packages (slurm-wlm would pull ~40, plugins for GPUs,
# IPMI, HDF5...). A policy-rc.d that forbids starting services is put in place for the install
# when none exists, so the packages' own init scripts start no daemon behind our back.
install_packages() {
    local missing=0 tool
    for tool in munged mungekey slurmctld slurmd sbatch sinfo; do
        command -v "$tool" >/dev/null || missing=1
    done
    [ "$missing" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "Slurm or munge is missing and installing them needs root"
    command -v apt-get >/dev/null || die "Slurm or munge is missing and there is no apt-get to install them"
    local start policy=/usr/sbin/policy-rc.d added_policy=0
    start=$(date +%s)
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    local rc=0 out
    out=$(mktemp)
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                slurmctld slurmd slurm-client munge
    } >"$out" 2>&1 || rc=$?
    [ "$added_policy" = 1 ] && rm -f "$policy"
    if [ "$rc" != 0 ]; then
        tail -n 30 "$out" >&2
        rm -f "$out"
        die "apt-get could not install slurmctld slurmd slurm-client munge (exit $rc)"
    fi
    rm -f "$out"
    log "installed $(dpkg-query -W -f='${Package} ${Version} ' slurmctld slurmd slurm-client munge)in $(($(date +%s) - start))s"
}

# Two consecutive TCP ports on which nothing listens, for slurmctld and slurmd, so that several
# clusters (or a system Slurm on the default 6817/6818) can share the machine.
free_ports() {
    local p
    for ((p = 16817; p < 17817; p += 2)); do
        if ! port_listens "$p" && ! port_listens $((p + 1)); then
            echo "$p $((p + 1))"
            return 0
        fi
    done
    die "no two free ports between 16817 and 17817"
}

port_listens() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The node line as the hardware has it: slurmd -C prints "NodeName=... CPUs=2 Boards=1
# SocketsPerBoard=... CoresPerSocket=... ThreadsPerCore=... RealMemory=..." then "UpTime=...".
node_hardware() {
    local line
    line=$(slurmd -C | head -n 1) || die "slurmd -C failed"
    line=${line#NodeName=* }
    [[ "$line" == CPUs=* ]] || die "unexpected 'slurmd -C' output: $line"
    echo "$line"
}

write_config() {
    local dir=$1 ctld_port=$2 slurmd_port=$3 hardware
    hardware=$(node_hardware)
    cat >"$dir/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh: a one-node cluster living in $dir.
ClusterName=lantern
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none

# No cgroups: processes are tracked through their parent pids, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU

# Finished jobs stay in slurmctld (squeue, scontrol show job) for MinJobAge seconds; the
# job-completion log keeps every finished job's state and exit code for good (sacct -c reads it).
MinJobAge=600
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
AccountingStorageType=accounting_storage/none

# A node that went down (daemon restart) comes back by itself; a cancelled job dies quickly.
ReturnToService=2
KillWait=5
SchedulerParameters=batch_sched_delay=0
InactiveLimit=0
SlurmdTimeout=60

StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pidfile
SlurmdPidFile=$dir/slurmd.pidfile
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

NodeName=localhost NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

# Starts "$@" in the background with its own session (a signal to the caller's process group does
# not reach it), output to $dir/NAME.out, and records its pid in $dir/NAME.pid.
start_daemon() {
    local dir=$1 name=$2
    shift 2
    setsid "$@" </dev/null >"$dir/$name.out" 2>&1 9>&- &
    local pid=$! i
    echo "$pid" >"$dir/$name.pid"
    # Until setsid has exec'd the daemon, /proc/PID/comm names the shell or setsid.
    for ((i = 0; i < 50; i++)); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# Whether the pid recorded for daemon NAME is alive (not a zombie) and still that program (pids
# get reused).
daemon_alive() {
    local dir=$1 name=$2 pid stat
    pid=$(cat "$dir/$name.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# The daemons' logs, and their own output (errors from before a log file opens; slurmctld copies
# its log there too).
tail_logs() {
    local dir=$1 f
    for f in munged.out slurmctld.log slurmctld.out slurmd.log slurmd.out; do
        [ -s "$dir/$f" ] || continue
        echo "----- last lines of $dir/$f" >&2
        tail -n 12 "$dir/$f" >&2
    done
}

fail_up() {
    local dir=$1
    shift
    echo "cluster.sh: $*" >&2
    tail_logs "$dir"
    cmd_down "$dir" || true
    exit 1
}

cmd_up() {
    local dir=$1
    # Concurrent 'up's take turns, from the install (apt-get has its own lock and fails on it) to
    # an idle node (ports are free only until a daemon binds them). The daemons do not inherit
    # fd 9, so the lock goes with this script.
    [ "$(id -u)" = 0 ] || die "the daemons run as root (SlurmUser=root); run as root"
    exec 9>"$lock"
    flock --wait 180 9 || die "another '$0 up' held $lock for 180s"
    install_packages
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    # slurmd's and munged's unix sockets live under the folder; a sun_path holds 107 bytes.
    [ "${#dir}" -le 60 ] || die "STATE_DIR $dir is too long for Slurm's unix sockets (at most 60 bytes)"
    local name
    for name in munged slurmctld slurmd; do
        daemon_alive "$dir" "$name" && die "$name from an earlier 'up' still runs in $dir; run 'down' first"
    done
    # What an earlier cluster left (its job ids restart at 1); nothing else in the folder.
    rm -rf "$dir/state" "$dir/spool" "$dir/jobcomp.log"
    for name in munged slurmctld slurmd; do rm -f "$dir/$name".{out,log,pid,pidfile}; done
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    # munged wants every folder above its socket searchable by all (mktemp -d makes 0700 ones)
    # and its key readable by itself alone.
    chmod 755 "$dir" "$dir/munge"

    # munge: a key of our own (never /etc/munge's), socket, pid and seed under $dir/munge; in the
    # foreground munged logs to its output, munged.out.
    if [ ! -s "$dir/munge/munge.key" ]; then
        mungekey --create --keyfile="$dir/munge/munge.key" || die "mungekey could not create a key"
    fi
    chmod 600 "$dir/munge/munge.key"
    start_daemon "$dir" munged munged --foreground --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --seed-file="$dir/munge/munged.seed"
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        [ -S "$dir/munge/munge.socket" ] && break
        daemon_alive "$dir" munged || fail_up "$dir" "munged exited at start"
        sleep 0.1
    done
    [ -S "$dir/munge/munge.socket" ] || fail_up "$dir" "munged did not open its socket within 10s"
    munge --socket="$dir/munge/munge.socket" -n | unmunge --socket="$dir/munge/munge.socket" >/dev/null ||
        fail_up "$dir" "munge cannot encode and decode a credential"

    local ctld_port slurmd_port
    read -r ctld_port slurmd_port <<<"$(free_ports)"
    write_config "$dir" "$ctld_port" "$slurmd_port"
    export SLURM_CONF=$dir/slurm.conf
    # -D: stay in the foreground (we hold the pid); -i: ignore saved state (a fresh cluster).
    start_daemon "$dir" slurmctld slurmctld -D -i -f "$SLURM_CONF"
    start_daemon "$dir" slurmd slurmd -D -N localhost -f "$SLURM_CONF"

    # Bounded wait until the node is idle.
    local state=""
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        daemon_alive "$dir" slurmctld || fail_up "$dir" "slurmctld exited at start"
        daemon_alive "$dir" slurmd || fail_up "$dir" "slurmd exited at start"
        state=$(timeout 10 sinfo --noheader --nodes=localhost --format=%T 2>/dev/null || true)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    [ "$state" = idle ] || fail_up "$dir" "the node is not idle 60s after start (sinfo: '${state:-no answer}')"
    exec 9>&-
    log "up: slurmctld on port $ctld_port, node localhost idle ($(sinfo --noheader --format='%c CPUs, %m MB')); $(cmd_env "$dir")"
}

# Pids of the slurmstepd processes of this cluster: slurmd forks them with its own environment, so
# theirs names our SLURM_CONF. slurmd leaves them running when it stops.
cluster_stepds() {
    local conf=$1 p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
        { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf" && echo "${p#/proc/}"
    done
    return 0
}

# A process and all its descendants (from the parent pids in /proc/*/stat: this kernel has no
# /proc/PID/task/TID/children).
descendants() {
    local -A children=()
    local p stat ppid
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        ppid=$(cut -d ' ' -f 2 <<<"$stat")
        children[$ppid]+=" ${p#/proc/}"
    done
    local todo=("$1") pid
    while [ ${#todo[@]} -gt 0 ]; do
        pid=${todo[0]}
        todo=("${todo[@]:1}")
        echo "$pid"
        # shellcheck disable=SC2206 # pids separated by spaces
        todo+=(${children[$pid]:-})
    done
}

# Stops the daemons named (SIGTERM together, SIGKILL to any still there after 10s).
stop_daemons() {
    local dir=$1 name i alive
    shift
    for name in "$@"; do
        if daemon_alive "$dir" "$name"; then
            kill -TERM "$(cat "$dir/$name.pid")" 2>/dev/null || true
            kill -CONT "$(cat "$dir/$name.pid")" 2>/dev/null || true # a stopped daemon gets the TERM
        fi
    done
    for ((i = 0; i < 100; i++)); do
        alive=0
        for name in "$@"; do daemon_alive "$dir" "$name" && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.1
    done
    for name in "$@"; do
        if daemon_alive "$dir" "$name"; then
            log "$name ($(cat "$dir/$name.pid")) ignored SIGTERM for 10s; SIGKILL"
            kill -KILL "$(cat "$dir/$name.pid")" 2>/dev/null || true
        fi
    done
}

cmd_down() {
    local dir=$1
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd -P)
    local conf=$dir/slurm.conf
    # Jobs first: slurmd leaves its job steps running when it stops, so cancel them while
    # slurmctld still answers, then kill whatever step survives.
    if daemon_alive "$dir" slurmctld && [ -f "$conf" ]; then
        local jobs
        jobs=$(SLURM_CONF=$conf timeout 15 squeue --noheader --format=%A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086 # one job id a word
            SLURM_CONF=$conf timeout 15 scancel --quiet $jobs 2>/dev/null || true
        fi
        local i
        for ((i = 0; i < 50; i++)); do
            [ -z "$(cluster_stepds "$conf")" ] && break
            sleep 0.2
        done
    fi
    stop_daemons "$dir" slurmd slurmctld
    local stepd pid
    for stepd in $(cluster_stepds "$conf"); do
        log "killing leftover slurmstepd $stepd and its processes"
        for pid in $(descendants "$stepd"); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    stop_daemons "$dir" munged
    rm -f "$dir"/munged.pid "$dir"/slurmctld.pid "$dir"/slurmd.pid
}

cmd_env() {
    local dir=$1
    [ -f "$dir/slurm.conf" ] || die "no slurm.conf in $dir; run '$0 up $dir' first"
    dir=$(cd "$dir" && pwd -P)
    echo "export SLURM_CONF=$dir/slurm.conf"
}

[ $# = 2 ] || usage
case $1 in
    up) cmd_up "$2" ;;
    down) cmd_down "$2" ;;
    env) cmd_env "$2" ;;
    *) usage ;;
esac
