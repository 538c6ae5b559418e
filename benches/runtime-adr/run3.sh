#!/usr/bin/env bash
# Runs the ADR 0001 runtime benchmark three times, each only once the machine is idle (no
# cargo/rustc process, 1-minute load average below 1.0), and prints the median of the three
# with the spread. Extra arguments go to every run (e.g. --iters 50000).
#
#   bash benches/runtime-adr/run3.sh [--iters N] ...
#
# Results: benches/runtime-adr/results/<UTC date>/run-{1,2,3}.{tsv,txt} and summary.md
# (override the folder with OUT=...). The binary runs directly, not through `cargo run`, so
# that the idle check does not see our own cargo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo build --release --quiet
bin=$here/target/release/runtime-adr
out=${OUT:-$here/results/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
wait_max_min=${WAIT_MAX_MIN:-120}

wait_idle() {
    local waited=0
    while :; do
        local builds load
        builds=$( (pgrep -x cargo; pgrep -x rustc) | tr '\n' ' ' || true)
        load=$(cut -d' ' -f1 /proc/loadavg)
        if [ -z "$builds" ] && awk -v l="$load" 'BEGIN { exit !(l < 1.0) }'; then
            return 0
        fi
        if [ "$waited" -ge "$wait_max_min" ]; then
            echo "machine still busy after $waited min (builds: ${builds:-none}, load $load)" >&2
            return 1
        fi
        echo "busy (builds: ${builds:-none}, load $load): waiting 60 s" >&2
        sleep 60
        waited=$((waited + 1))
    done
}

{
    echo "commit      $(git -C "$here" log -1 --format='%h %s' 2>/dev/null || echo unknown)"
    echo "worktree    $(git -C "$here/../.." status --short -- shards 2>/dev/null | wc -l) modified files under shards/"
} > "$out/commit.txt"

for i in 1 2 3; do
    wait_idle
    "$bin" "$@" --out "$out/run-$i.tsv" | tee "$out/run-$i.txt"
done
{
    cat "$out/commit.txt"
    "$bin" --aggregate "$out/run-1.tsv" "$out/run-2.tsv" "$out/run-3.tsv"
} | tee "$out/summary.md"
