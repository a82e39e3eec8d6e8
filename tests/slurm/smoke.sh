#!/usr/bin/env bash
# Checks the one-node cluster of cluster.sh end to end: a job array, a job depending on it
# (afterok), a failing job, two dependants of the failing job (with and without
# --kill-on-invalid-dep), a job killed by a signal and a cancelled one; shows how squeue, scontrol,
# sacct -c and the job-completion log report them, checks every state and output, and stops the
# daemons whatever happens. Exits 1 on the first mismatch. Needs root; see tests/slurm/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
start=$(date +%s)

state=$(mktemp -d /tmp/slurm-smoke.XXXXXX)
finish() {
    local rc=$?
    "$here/cluster.sh" down "$state" || rc=1
    # Nothing of the cluster may survive down: no daemon (their command lines name $state), no
    # job step (its environment names $state/slurm.conf).
    local p left=""
    for p in /proc/[0-9]*; do
        if grep -qsF "$state" "$p/cmdline" "$p/environ"; then left+=" ${p#/proc/}($(cat "$p/comm" 2>/dev/null))"; fi
    done
    if [ -n "$left" ]; then
        echo "smoke: FAIL: processes left after down:$left" >&2
        rc=1
    fi
    if [ "$rc" != 0 ]; then
        for f in "$state"/slurmctld.log "$state"/slurmd.log; do
            [ -s "$f" ] && { echo "----- tail $f" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$state"
    echo "smoke: $([ "$rc" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - start))s"
    exit "$rc"
}
trap finish EXIT

fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
}

"$here/cluster.sh" up "$state"
eval "$("$here/cluster.sh" env "$state")"
up_s=$(($(date +%s) - start))
mkdir "$state/jobs"
cd "$state/jobs"

submit() { sbatch --parsable "$@"; }

# shellcheck disable=SC2016 # the job's shell expands $SLURM_ARRAY_TASK_ID
array=$(submit --array=1-3 --output=task_%a.out --wrap 'echo "task $SLURM_ARRAY_TASK_ID"; sleep 1')
merge=$(submit --dependency=afterok:"$array" --output=merge.out --wrap 'cat task_1.out task_2.out task_3.out')
failing=$(submit --output=failing.out --wrap 'echo failing; exit 3')
stuck=$(submit --dependency=afterok:"$failing" --output=stuck.out --wrap 'echo must not run')
killed_dep=$(submit --dependency=afterok:"$failing" --kill-on-invalid-dep=yes --output=killed_dep.out \
    --wrap 'echo must not run')
signalled=$(submit --output=signalled.out --wrap 'kill -KILL $$')
cancelled=$(submit --output=cancelled.out --wrap 'echo started; sleep 300')
echo "smoke: submitted array=$array merge=$merge failing=$failing stuck=$stuck killed_dep=$killed_dep" \
    "signalled=$signalled cancelled=$cancelled"
ids="$array,$merge,$failing,$stuck,$killed_dep,$signalled,$cancelled"

# squeue --states=all lists pending, running and (for MinJobAge seconds) finished jobs; array
# tasks show as ARRAYID_TASK. Print the table whenever it changes, so the log shows the states
# as they pass.
table() { squeue --states=all --noheader --jobs="$ids" --format='%i %T %r' | sort; }
state_of() { squeue --states=all --noheader --jobs="$1" --format='%T %r'; }
settled() {
    local t
    for t in "${array}_1" "${array}_2" "${array}_3" "$merge" "$failing" "$killed_dep" "$signalled"; do
        case $(state_of "$t") in COMPLETED* | FAILED* | CANCELLED*) ;; *) return 1 ;; esac
    done
    [[ $(state_of "$stuck") == "PENDING DependencyNeverSatisfied" ]]
}
last=""
for ((i = 0; i < 240; i++)); do
    now=$(table)
    if [ "$now" != "$last" ]; then
        echo "smoke: squeue at $(($(date +%s) - start))s:"
        echo "    ${now//$'\n'/$'\n'    }"
        last=$now
    fi
    if [[ $(state_of "$cancelled") == RUNNING* ]] && grep -qs started cancelled.out; then scancel "$cancelled"; fi
    settled && [[ $(state_of "$cancelled") == CANCELLED* ]] && break
    sleep 0.5
done
settled || fail "jobs not settled after 120s"
echo "smoke: $(table | tr '\n' ';')"

expect() {
    local what=$1 got=$2 want=$3
    [ "$got" = "$want" ] || fail "$what: got '$got', want '$want'"
    echo "smoke: ok $what = $want"
}

# squeue: state and reason.
for t in 1 2 3; do expect "squeue ${array}_$t" "$(state_of "${array}_$t")" "COMPLETED None"; done
expect "squeue merge" "$(state_of "$merge")" "COMPLETED None"
expect "squeue failing" "$(state_of "$failing")" "FAILED NonZeroExitCode"
expect "squeue stuck (afterok on a failed job)" "$(state_of "$stuck")" "PENDING DependencyNeverSatisfied"
expect "squeue killed_dep (--kill-on-invalid-dep=yes)" "$(state_of "$killed_dep")" \
    "CANCELLED DependencyNeverSatisfied"
expect "squeue signalled" "$(state_of "$signalled")" "FAILED JobLaunchFailure"
expect "squeue cancelled" "$(state_of "$cancelled")" "CANCELLED None"

# squeue -O exit_code: the raw wait status (exit status * 256 + signal).
sx() { squeue --states=all --noheader --jobs="$1" -O exit_code | tr -d ' '; }
expect "squeue exit_code failing" "$(sx "$failing")" 768
expect "squeue exit_code signalled" "$(sx "$signalled")" 9
expect "squeue exit_code ${array}_3" "$(sx "${array}_3")" 0

# scontrol: JobState and ExitCode (status:signal) of one job, also after it ended (MinJobAge).
sc() { scontrol --oneliner show job "$1" | tr ' ' '\n' | grep -E '^(JobState|ExitCode)=' | tr '\n' ' '; }
expect "scontrol failing" "$(sc "$failing")" "JobState=FAILED ExitCode=3:0 "
expect "scontrol signalled" "$(sc "$signalled")" "JobState=FAILED ExitCode=0:9 "
expect "scontrol ${array}_2" "$(sc "${array}_2")" "JobState=COMPLETED ExitCode=0:0 "
# A cancelled job's script dies of SIGTERM (0:15) or exits 143 after its child did (143:0).
cancelled_sc=$(sc "$cancelled")
case $cancelled_sc in
    "JobState=CANCELLED ExitCode=0:15 " | "JobState=CANCELLED ExitCode=143:0 ") echo "smoke: ok scontrol cancelled = $cancelled_sc" ;;
    *) fail "scontrol cancelled: got '$cancelled_sc', want JobState=CANCELLED ExitCode=0:15 or 143:0" ;;
esac
expect "scontrol stuck" "$(sc "$stuck")" "JobState=PENDING ExitCode=0:0 "

# Without slurmdbd sacct has no accounting, but sacct -c reads the job-completion log
# (jobcomp/filetxt). It knows array tasks only by their own job ids (%A), not as ARRAYID_TASK.
if sacct --jobs="$failing" >/dev/null 2>&1; then fail "sacct without -c answered, want 'accounting disabled'"; fi
echo "smoke: ok sacct without slurmdbd: $(sacct --jobs="$failing" 2>&1 | head -n 1)"
task2=$(squeue --states=all --noheader --jobs="${array}_2" --format=%A)
sa() { sacct -c --noheader --parsable2 --jobs="$1" --format=State,ExitCode 2>/dev/null; }
expect "sacct -c failing" "$(sa "$failing")" "FAILED|3:0"
expect "sacct -c signalled" "$(sa "$signalled")" "FAILED|0:9"
expect "sacct -c merge" "$(sa "$merge")" "COMPLETED|0:0"
expect "sacct -c ${array}_2 (job $task2)" "$(sa "$task2")" "COMPLETED|0:0"
expect "sacct -c killed_dep" "$(sa "$killed_dep")" "CANCELLED|0:0"
# The completion record of a cancelled job is written at the cancel, before the job's signal.
expect "sacct -c cancelled" "$(sa "$cancelled")" "CANCELLED|0:0"
expect "sacct -c stuck (never ended)" "$(sa "$stuck")" ""

# The job-completion log itself: one line of Key=Value per finished job, array tasks with their
# ArrayJobId and ArrayTaskId.
jc() { grep -E "^JobId=$1 " "$state/jobcomp.log" | tr ' ' '\n' | grep -E '^(JobState|ExitCode|ArrayJobId|ArrayTaskId)=' | tr '\n' ' '; }
expect "jobcomp.log failing" "$(jc "$failing")" "JobState=FAILED ExitCode=3:0 "
expect "jobcomp.log ${array}_2" "$(jc "$task2")" "JobState=COMPLETED ArrayJobId=$array ArrayTaskId=2 ExitCode=0:0 "
expect "jobcomp.log lines (every job but stuck)" "$(wc -l <"$state/jobcomp.log")" 8

# Outputs.
for t in 1 2 3; do expect "task_$t.out" "$(cat task_$t.out)" "task $t"; done
expect merge.out "$(cat merge.out)" "$(printf 'task 1\ntask 2\ntask 3')"
expect failing.out "$(cat failing.out)" failing
if [ -e stuck.out ] || [ -e killed_dep.out ]; then fail "a dependant of the failing job ran"; fi
echo "smoke: ok the failing job's dependants never ran"
echo "smoke: cluster up in ${up_s}s, jobs settled $(($(date +%s) - start - up_s))s later"
