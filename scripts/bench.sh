#!/usr/bin/env bash
# The full comparison: lightning_db against fjall, redb, sled and LMDB (and RocksDB with
# WITH_ROCKSDB=1: its C++ build takes ~15 minutes here and needs clang and libclang-dev) with
# lightning-bench, then regenerates the generated section of docs/BENCHMARKS.md and keeps the
# run's files in docs/benchmarks/.
#
#   scripts/bench.sh                 # KEYS=200000 by default; QUICK=1 for a 2-minute smoke run
#
# Run it on a quiet machine: it refuses to start while another cargo/rustc or benchmark runs.
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${KEYS:-200000}"
engines="lightning,fjall,redb,sled,lmdb"
features="peers"
if [ "${WITH_ROCKSDB:-0}" = 1 ]; then engines="$engines,rocksdb"; features="peers,rocksdb"; fi
if [ "${QUICK:-0}" = 1 ]; then keys=20000; fi
busy=$( (pgrep -x cargo; pgrep -x rustc; pgrep -f peerbench; pgrep -x lightning-bench) | tr '\n' ' ' || true)
if [ -n "$busy" ] && [ "${FORCE:-0}" != 1 ]; then
  echo "bench.sh: the machine is busy (pids $busy); FORCE=1 to run anyway" >&2
  exit 1
fi
cargo build --release -p lightning-bench --features "$features"
bin=target/release/lightning-bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="docs/benchmarks/harness-$stamp"
mkdir -p "$out"
common=(--engines "$engines" --keys "$keys" --data-dir target/bench-data --quiet --sync-ops "${SYNC_OPS:-10000}" --max-secs 60)
# 1. Writes, per durability mode; 1 and 4 caller threads.
"$bin" "${common[@]}" --workloads fillseq,fillrandom,fillbatch,overwrite --threads 1,4 --modes normal,sync --out-dir "$out/writes"
# 2. Reads and scans on a loaded store; 1 and 2 threads (the machine's cores).
"$bin" "${common[@]}" --workloads readrandom,readmissing,scan,ycsb_c --threads 1,2 --modes normal --out-dir "$out/reads"
# 3. YCSB mixes (zipfian; D reads the latest keys, E scans), normal mode.
"$bin" "${common[@]}" --workloads ycsb_a,ycsb_b,ycsb_d,ycsb_e,ycsb_f --threads 1,2,4 --modes normal --out-dir "$out/ycsb"
# 4. Large values (64 KiB and 1 MiB).
"$bin" "${common[@]}" --workloads large,large_1m --threads 1 --modes normal,sync --out-dir "$out/large"
# 5. Open loop: YCSB B at a fixed rate, timed from each operation's intended start.
"$bin" "${common[@]}" --workloads ycsb_b --threads 2 --modes normal --rate 200000 --duration-secs 10 --out-dir "$out/open-loop"
runs=$(ls "$out"/*/report.json | paste -sd, -)
"$bin" --compare "$runs" --out-dir "$out"
rm -f "$out/compare.json" # the same runs as the report.json files beside it
summary=$("$bin" --markdown "$runs")
python3 - "$summary" "$out" <<'PY'
import re, sys
summary, out = sys.argv[1], sys.argv[2]
path = "docs/BENCHMARKS.md"
text = open(path).read()
begin, end = "<!-- BEGIN GENERATED: scripts/bench.sh -->", "<!-- END GENERATED -->"
block = f"{begin}\n\nFiles: `{out}/` (per run: report.json, report.html, an .hgrm per case and operation, an .hlog per case; compare.html has every run on one page).\n\n{summary}\n{end}"
if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text += "\n## Full comparison (generated)\n\n" + block + "\n"
open(path, "w").write(text)
PY
echo "bench.sh: results in $out, docs/BENCHMARKS.md regenerated"
