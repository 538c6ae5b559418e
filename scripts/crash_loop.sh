#!/usr/bin/env bash
# Runs the kill -9 crash test in a loop (release build) until it fails or N rounds pass.
#   scripts/crash_loop.sh [rounds]     (default 50; each round is 9 kills across the 3 modes)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
cargo test --release --test error_recovery_tests --no-run
for i in $(seq 1 "$rounds"); do
  echo "== round $i/$rounds"
  cargo test --release --test error_recovery_tests kill_9 -- --nocapture 2>&1 | grep -E "round|test result|panicked"
done
