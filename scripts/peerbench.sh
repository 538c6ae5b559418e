#!/usr/bin/env bash
# Runs ../shared/peerbench (the independent harness) against lightning_db and the peers, in one
# run, and copies the result files into docs/benchmarks/. Builds without RocksDB unless
# PEERBENCH_WITH_ROCKSDB=1 (its C++ build takes ~15 minutes here).
#   scripts/peerbench.sh [peerbench args...]     default: --engines lmdb,fjall,redb,sled,lightning --n 300000
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/../shared/peerbench"
[ -d "$src" ] || { echo "no peerbench at $src" >&2; exit 1; }
pb=$(mktemp -d)
cp -r "$src/." "$pb"
flags="--no-default-features --features fjall,redb,sled,heed"
[ "${PEERBENCH_WITH_ROCKSDB:-0}" = 1 ] && flags=""
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--engines lmdb,fjall,redb,sled,lightning --n 300000)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
( cd "$pb" && LIGHTNING_DB_PATH="$root" PEERBENCH_CARGO_FLAGS="$flags" ./run.sh "${args[@]}" )
mkdir -p "$root/docs/benchmarks"
cp "$pb"/results/peerbench-*.md "$pb"/results/peerbench-*.json "$root/docs/benchmarks/"
echo "copied results to docs/benchmarks/"
