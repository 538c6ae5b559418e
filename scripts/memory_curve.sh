#!/usr/bin/env bash
# Bounded memory (docs/BENCHMARKS.md, "Memory"): fill KEYS random keys with 100-byte values
# from RESTART_THREADS writers (default 4) in `Normal` mode, with a cache of CACHE_MB and
# memtables of MEMTABLE_MB per shard, and print the resident memory every SECS seconds, then
# the peak. Usage:
#   scripts/memory_curve.sh KEYS CACHE_MB MEMTABLE_MB [SECS] > curve.txt
# Needs `cargo build --release --example restart` first (the script never builds, so it never
# runs beside a build).
set -euo pipefail
keys=${1:?KEYS}; cache=${2:?CACHE_MB}; memtable=${3:?MEMTABLE_MB}; secs=${4:-5}
dir=$(mktemp -d /tmp/memory-curve.XXXXXX)
bin="$(dirname "$0")/../target/release/examples/restart"
echo "# $(date -u +%FT%TZ) keys=$keys cache_mb=$cache memtable_mb=$memtable threads=${RESTART_THREADS:-4} commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD)"
RESTART_CACHE_MB=$cache RESTART_MEMTABLE_MB=$memtable RESTART_CURVE_SECS=$secs \
    "$bin" fill "$dir/db" "$keys" normal close
du -sh "$dir/db" | sed 's/^/# directory: /'
rm -rf "$dir"
