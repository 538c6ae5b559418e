//! Runs the simulation over any number of seeds (`scripts/simulate.sh` calls this in release).
//!
//! `simulate --seeds N [--start S] [--steps K]` runs seeds S..S+N; `simulate --seed S
//! [--verbose]` runs one and prints every event. Exits 1 when a seed fails, printing the
//! command that replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use lightning_shards::sim::{run_seed, SimOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).and_then(|v| v.parse().ok())
    };
    let mut options =
        SimOptions { verbose: args.iter().any(|a| a == "--verbose"), ..SimOptions::default() };
    if let Some(steps) = value("--steps") {
        options.steps = steps as usize;
    }
    let (start, count) = match value("--seed") {
        Some(seed) => (seed, 1),
        None => (value("--start").unwrap_or(0), value("--seeds").unwrap_or(1000)),
    };
    let began = Instant::now();
    let mut failed = 0;
    for seed in start..start + count {
        if let Err(f) = run_seed(seed, options) {
            eprintln!("{f}");
            failed += 1;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{count} seeds ({start}..{}), {} steps each: {failed} failed, {secs:.1} s, {:.0} seeds/minute",
        start + count,
        options.steps,
        count as f64 / secs * 60.0
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
