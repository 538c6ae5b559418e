//! The simulation runner over a fixed set of seeds (`lightning_shards::simulation`): random
//! puts, deletes, batches and syncs from several callers in a random `WalSyncMode`, crashes,
//! power losses and faults on the simulated disk, reopen, and a check against a model after
//! each. A failing seed prints the one command that replays it.
//!
//! `scripts/simulate.sh --seeds N` runs any number in release; `--seed S --verbose` one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lightning_shards::sim::{run_seed, SimOptions};

/// Seeds `cargo test` runs.
const SEEDS: u64 = 200;

#[test]
fn every_promise_holds_on_the_simulated_disk() {
    let mut failures = Vec::new();
    let mut total = lightning_shards::sim::SeedSummary::default();
    for seed in 0..SEEDS {
        match run_seed(seed, SimOptions::default()) {
            Ok(s) => {
                total.acked += s.acked;
                total.crashes += s.crashes;
                total.power_losses += s.power_losses;
                total.closes += s.closes;
                total.faults += s.faults;
                total.cuts += s.cuts;
            }
            Err(f) => failures.push(f.to_string()),
        }
    }
    println!("{SEEDS} seeds: {total:?}");
    assert!(
        failures.is_empty(),
        "{} of {SEEDS} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total.crashes > 0 && total.power_losses > 0 && total.faults > 0 && total.cuts > 0);
}

#[test]
fn one_seed_gives_one_run() {
    for seed in [7, 1234, 99_999] {
        let a = run_seed(seed, SimOptions::default()).unwrap();
        let b = run_seed(seed, SimOptions::default()).unwrap();
        assert_eq!(a, b, "seed {seed}");
        assert!(a.acked > 0);
    }
}
