#!/usr/bin/env bash
# Runs the simulation runner (lightning_shards::simulation) in release: shards on a simulated
# disk with crashes, power losses, torn and failed writes, checked against a model after every
# reopen.
#
#   scripts/simulate.sh --seeds N [--start S] [--steps K]   seeds S..S+N (default 1000 from 0)
#   scripts/simulate.sh --seed S [--verbose]                one seed, exactly as it ran before
#
# Prints failing seeds with the command that replays them, then seeds per minute; exits 1 when
# any seed fails. `cargo test` runs a fixed set of 200 seeds (shards/tests/simulation.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p lightning_shards --features simulation --example simulate
exec target/release/examples/simulate "$@"
