#!/usr/bin/env bash
# fillrandom write amplification: for each engine, KEYS random keys (16-byte keys, 100-byte
# values, `Normal`-like mode: no fsync per write) written by the harness, and the bytes the
# block device took meanwhile (/sys/block/DEV/stat, sectors written) over the bytes the user
# wrote (KEYS × 116). Machine-wide counters: run it on a quiet machine.
#
#   scripts/write_amp.sh                 # KEYS=10000000 ENGINES=lightning,fjall DEV=vda
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${KEYS:-10000000}"
engines="${ENGINES:-lightning,fjall}"
dev="${DEV:-vda}"
out="${OUT:-target/write-amp-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
cargo build --release -p lightning-bench --features lmdb,fjall
echo "date: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), $keys keys" | tee "$out/results.txt"
IFS=, read -ra list <<< "$engines"
for e in "${list[@]}"; do
  sync
  before=$(awk '{print $7}' "/sys/block/$dev/stat")
  target/release/lightning-bench --engines "$e" --workloads fillrandom --keys "$keys" \
    --max-secs 1200 --data-dir target/wa-data --quiet --out-dir "$out/$e" | grep -E "^$e" | tee -a "$out/results.txt"
  sync
  after=$(awk '{print $7}' "/sys/block/$dev/stat")
  python3 -c "d=($after-$before)*512; u=$keys*116; print(f'$e: device wrote {d/2**20:.0f} MiB for {u/2**20:.0f} MiB of user data: write amplification {d/u:.1f}')" | tee -a "$out/results.txt"
done
