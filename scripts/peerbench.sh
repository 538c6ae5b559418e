#!/usr/bin/env bash
# Runs peerbench, an independent comparison harness kept outside this repository, against
# lightning_db and the peers in one run, and copies the result files into docs/benchmarks/.
# PEERBENCH_DIR names a checkout of it (it is copied, never modified). Builds without RocksDB
# unless PEERBENCH_WITH_ROCKSDB=1 (its C++ build takes ~15 minutes here).
#   PEERBENCH_DIR=/path/to/peerbench scripts/peerbench.sh [peerbench args...]
#   default args: --engines lmdb,fjall,redb,sled,lightning --n 300000
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${PEERBENCH_DIR:?set PEERBENCH_DIR to a checkout of the peerbench harness}"
[ -d "$src" ] || { echo "no peerbench at $src" >&2; exit 1; }
pb=$(mktemp -d)
cp -r "$src/." "$pb"
rm -rf "$pb/results" # copy back only what this run writes
flags="--no-default-features --features fjall,redb,sled,heed"
[ "${PEERBENCH_WITH_ROCKSDB:-0}" = 1 ] && flags=""
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--engines lmdb,fjall,redb,sled,lightning --n 300000)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
( cd "$pb" && LIGHTNING_DB_PATH="$root" PEERBENCH_CARGO_FLAGS="$flags" ./run.sh "${args[@]}" )
mkdir -p "$root/docs/benchmarks"
cp "$pb"/results/peerbench-*.md "$pb"/results/peerbench-*.json "$root/docs/benchmarks/"
echo "copied results to docs/benchmarks/"
