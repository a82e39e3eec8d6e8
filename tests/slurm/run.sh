#!/usr/bin/env bash
# lantern on a live one-node Slurm (tests/slurm/cluster.sh): tests/slurm/sharded.toml submitted with
# `lantern run --executor slurm` while its jobs are held; one shard cancelled, the rest released;
# `lantern status` must show the cancelled shard and its dependants failed and everything else
# computed; a second submission must send only what is missing; then every artifact must equal a
# local run's, byte for byte. Stops the daemons whatever happened, and fails (exit 1) when Slurm
# cannot start. LANTERN_SKIP_SLURM=1 skips it (for machines without Slurm packages; CI does not
# set it). Needs root; LANTERN_BIN names the binary (default: the release build, built if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
start=$(date +%s)

if [ "${LANTERN_SKIP_SLURM:-}" = 1 ]; then
    echo "slurm run: SKIPPED (LANTERN_SKIP_SLURM=1)"
    exit 0
fi

bin=${LANTERN_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/lantern}
if [ ! -x "$bin" ]; then
    (cd "$repo" && cargo build --release --bin lantern)
fi

state=$(mktemp -d /tmp/slurm-run.XXXXXX)
chmod 755 "$state"
finish() {
    local rc=$?
    "$here/cluster.sh" down "$state" || rc=1
    if [ "$rc" != 0 ]; then
        for f in "$state"/slurmctld.log "$state"/slurmd.log "$state"/slurm/.lantern/slurm/slurm-sharded/*.out; do
            [ -s "$f" ] && { echo "----- tail $f" >&2; tail -n 15 "$f" >&2; }
        done
    fi
    rm -rf "$state"
    echo "slurm run: $([ "$rc" = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - start))s"
    exit "$rc"
}
trap finish EXIT

fail() {
    echo "slurm run: FAIL: $*" >&2
    exit 1
}

exp=$here/sharded.toml
slurm_out=$state/slurm
local_out=$state/local
lantern() { "$bin" "$@"; }

"$here/cluster.sh" up "$state"
eval "$("$here/cluster.sh" env "$state")"
up_s=$(($(date +%s) - start))

# Status lines of the nodes whose state starts with $1.
status_of() { lantern status "$exp" --out "$slurm_out" | awk -v s="$1" 'NR > 1 && index($0, s) { print $2 }'; }
# Wait (at most $1 s) until no node is queued or running.
settle() {
    local until=$(($(date +%s) + $1)) table last=""
    while :; do
        table=$(lantern status "$exp" --out "$slurm_out")
        [ "$table" != "$last" ] && { echo "slurm run: status at $(($(date +%s) - start))s:"; echo "$table" | sed 's/^/    /'; }
        last=$table
        grep -qE ' (queued|running) ' <<<"$table" || return 0
        [ "$(date +%s)" -lt "$until" ] || fail "jobs still queued or running after $1 s"
        sleep 1
    done
}

# 1. Submit with every job held.
first=$(lantern run "$exp" --out "$slurm_out" --executor slurm --sbatch-arg=--hold)
echo "$first"
jobs1=$(grep -cE '^job ' <<<"$first") || true
[ "$jobs1" -ge 5 ] || fail "first submission: $jobs1 jobs, want at least 5"
held=$(status_of queued | wc -l)
[ "$held" -ge 10 ] || fail "$held nodes queued after the first submission, want every node"
# A second submission while they are queued sends nothing.
again=$(lantern run "$exp" --out "$slurm_out" --executor slurm)
grep -qE '^job ' <<<"$again" && fail "a submission while every job is queued submitted: $again"

# 2. Cancel shard 2 of ablate, release the rest: its merge (and the report) must be cancelled,
# everything else computed.
cancel=$(awk '$1 == "job" && $3 == "ablate" && $4 == "shards" { print $2 }' <<<"$first")
[ -n "$cancel" ] || fail "no array job for ablate in: $first"
scancel "${cancel}_2"
for id in $(awk '$1 == "job" { print $2 }' <<<"$first"); do
    scontrol release "$id" 2>/dev/null || true # a cancelled job cannot be released
done
settle 300
failed=$(status_of failed | sort | tr '\n' ' ')
[[ $failed == *"ablate@shard-2-of-3"* && $failed == *"ablate "* ]] ||
    fail "after the cancel, failed nodes are '$failed', want ablate@shard-2-of-3, ablate and what reads it"
[[ $failed != *"acts"* && $failed != *"corr"* ]] || fail "the cancel failed other nodes: $failed"

# 3. Submit again: only the cancelled shard, the merge and the last job.
second=$(lantern run "$exp" --out "$slurm_out" --executor slurm)
echo "$second"
grep -E '^job ' <<<"$second" | grep -qE 'acts|corr|lm@' && fail "the second submission resubmitted computed nodes"
grep -qE '^job [0-9]+ ablate shards 2 of 3' <<<"$second" || fail "the second submission did not resubmit ablate shard 2"
settle 300
not_done=$(lantern status "$exp" --out "$slurm_out" | awk 'NR > 1 && !/ cached/ { print $2 }')
[ -z "$not_done" ] || fail "not computed after the second submission: $not_done"
slurm_s=$(($(date +%s) - start))

# 4. The same file run locally; every artifact equal (left out: manifests and train's `metrics`,
# which hold wall times).
lantern run "$exp" --out "$local_out" >/dev/null 2>&1 || fail "the local run failed"
n=0
for link in "$local_out"/slurm-sharded/*/; do
    node=$(basename "$link")
    [ -d "$slurm_out/slurm-sharded/$node" ] || fail "$node: missing from the Slurm run"
    a=$(readlink -f "$link")
    b=$(readlink -f "$slurm_out/slurm-sharded/$node")
    [ "$(basename "$a")" = "$(basename "$b")" ] || fail "$node: fingerprints differ"
    x=(-x manifest.json -x 'metrics.*')
    diff -r "${x[@]}" "$a" "$b" >/dev/null || fail "$node: artifacts differ ($(diff -rq "${x[@]}" "$a" "$b" | head -n 3))"
    n=$((n + 1))
done
[ "$n" -ge 10 ] || fail "only $n nodes compared"
[ -s "$slurm_out/slurm-sharded/report.html" ] || fail "no report from the Slurm run"
echo "slurm run: $n nodes equal to a local run's; $jobs1 jobs, then $(grep -cE '^job ' <<<"$second") resubmitted"
echo "slurm run: cluster up in ${up_s}s, Slurm part done at ${slurm_s}s"
