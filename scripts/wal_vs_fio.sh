#!/usr/bin/env bash
# One window, two measurements: fio's O_DIRECT|O_DSYNC 4 KiB overwrite at queue depth 1 (the
# disk's cost of one durable group) and benches/micro_wal (our WAL mechanisms and the engine's
# Sync put). The ratio of the engine's Sync put p50 to fio's p50 is the per-group overhead.
#   scripts/wal_vs_fio.sh [dir]      (default target/wal-vs-fio; must not be tmpfs)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/wal-vs-fio}"
mkdir -p "$dir"
command -v fio >/dev/null || { echo "fio not installed (apt-get install fio)" >&2; exit 1; }
cargo bench --bench micro_wal --no-run >/dev/null 2>&1
echo "date: $(date -u +%FT%TZ), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
f="$dir/fio-wal"
fio --name=layout --filename="$f" --size=64M --rw=write --bs=1M --direct=1 --output-format=terse >/dev/null
for job in "dsync --sync=dsync" "fdatasync --fdatasync=1"; do
  set -- $job
  fio --name="$1" --filename="$f" --size=64M --rw=write --bs=4k --direct=1 --ioengine=sync \
      --iodepth=1 --runtime=10 --time_based "${@:2}" --output-format=json |
    python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]['write']; c=j.get('clat_ns') or j['lat_ns']; s=j.get('sync',{}).get('lat_ns',{}); p=lambda d,q: d.get('percentile',{}).get(q,0)/1000
print(f'fio O_DIRECT 4k $1: {j[\"iops\"]:.0f} IOPS, write p50 {p(c,\"50.000000\"):.1f} us' + (f', fdatasync p50 {p(s,\"50.000000\"):.1f} us' if s else ''))"
done
rm -f "$f"
LDB_BENCH_DIR="$dir" cargo bench --bench micro_wal 2>/dev/null | grep -v '^$'
