#!/usr/bin/env bash
# Larger than memory, fairly: lightning_db and LMDB (and fjall with ENGINES=...) each run in
# the same cgroup v1 memory limit (the page cache counts), on data about 10x that limit,
# reading uniformly random keys with THREADS=1 caller thread: readrandom, multiget of 32 keys,
# scans of 100 from a random key. fio's 4 KiB O_DIRECT random reads at queue depths 1 and 32
# run first, in the same hour, for the ceiling.
#
#   CACHE_MB=64 LMDB_NORDAHEAD=1 scripts/larger_than_memory.sh
#   (LIMIT_MB=256 KEYS=6000000 VALUE=400 MEMTABLE_MB=8 CACHE_MB=16 by default)
#
# Needs root (cgroup and drop_caches), fio, and a quiet machine. Each case is its own process,
# started with the page cache dropped; it preloads (untimed) and then reads, so the reads
# start with whatever of the data the limit let stay cached.
# LMDB_NORDAHEAD=1 opens LMDB with MDB_NORDAHEAD, which LMDB suggests for data larger than
# memory (with read-ahead on it took ~11 ms a read here).
# lightning_db: 8 MiB memtables per shard (MEMTABLE_MB) and a cache of CACHE_MB. With 16 MiB
# memtables and a 32 MiB cache its heap (about 240 MiB, ~52 MiB of it the harness's key
# permutation and value pool) did not fit 256 MiB. 32 preload threads do not fit either
# (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mb="${LIMIT_MB:-256}"
keys="${KEYS:-6000000}"
value="${VALUE:-400}"
engines="${ENGINES:-lightning,lmdb}"
out="${OUT:-target/ltm-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out" target/fio
command -v fio >/dev/null || { echo "fio not installed (apt-get install fio)" >&2; exit 1; }
cargo build --release -p lightning-bench --features lmdb,fjall
echo "date: $(date -u +%FT%TZ), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/env.txt"
f=target/fio/randread
fio --name=layout --filename="$f" --size=2G --rw=write --bs=1M --direct=1 --output-format=terse >/dev/null
for qd in 1 32; do
  fio --name="qd$qd" --filename="$f" --size=2G --rw=randread --bs=4k --direct=1 --ioengine=io_uring \
      --iodepth="$qd" --runtime=10 --time_based --output-format=json |
    python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]['read']; c=j['clat_ns']['percentile']
print(f'fio 4k randread O_DIRECT QD$qd: {j[\"iops\"]:.0f} IOPS, p50 {c[\"50.000000\"]/1000:.0f} us')" | tee -a "$out/env.txt"
done
rm -f "$f"
cg=/sys/fs/cgroup/memory/ldb-ltm
mkdir -p "$cg"
echo $((limit_mb << 20)) > "$cg/memory.limit_in_bytes"
echo "cgroup memory limit: $limit_mb MiB (page cache included); $keys keys x $value B values" | tee -a "$out/env.txt"
IFS=, read -ra list <<< "$engines"
for e in "${list[@]}"; do
  echo 0 > "$cg/memory.max_usage_in_bytes" 2>/dev/null || true
  # One process per workload: each case starts with a fresh heap and a dropped page cache.
  for w in ${WORKLOADS:-readrandom multiget scan}; do
    sync; echo 3 > /proc/sys/vm/drop_caches
    # shellcheck disable=SC2016
    LIGHTNING_MEMTABLE_MB="${MEMTABLE_MB:-8}" sh -c 'echo $$ > '"$cg"'/cgroup.procs; exec "$@"' sh \
      target/release/lightning-bench --engines "$e" --workloads "$w" \
        --keys "$keys" --value-bytes "$value" --threads "${THREADS:-1}" --ops 20000 --max-secs 60 \
        --cache-mb "${CACHE_MB:-16}" --data-dir target/ltm-data --quiet --out-dir "$out/$e-$w" |
      grep -E "^$e" | tee -a "$out/results.txt" || echo "$e $w: failed (killed by the cgroup?)" | tee -a "$out/results.txt"
    rm -rf target/ltm-data
  done
  echo "$e: peak cgroup memory $(( $(cat "$cg/memory.max_usage_in_bytes") >> 20 )) MiB" | tee -a "$out/results.txt"
done
