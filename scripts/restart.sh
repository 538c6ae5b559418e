#!/usr/bin/env bash
# Restart cost (docs/BENCHMARKS.md, "Restart"): fill a database with KEYS keys in MODE, die
# with SIGKILL (or close, with `close`), then time the reopen. Usage:
#   scripts/restart.sh KEYS MODE [kill|close] [DIR]
# Needs `cargo build --release --example restart` first (the script does not build, so it never
# runs beside a build).
set -euo pipefail
keys=${1:?KEYS}; mode=${2:?MODE}; end=${3:-kill}
dir=${4:-$(mktemp -d /tmp/restart.XXXXXX)/db}
bin="$(dirname "$0")/../target/release/examples/restart"
"$bin" fill "$dir" "$keys" "$mode" "$end" || true   # a SIGKILL ends it with status 137
du -sh "$dir" | sed 's/^/directory: /'
"$bin" reopen "$dir"
rm -rf "$(dirname "$dir")"
