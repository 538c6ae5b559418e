//! Helpers shared by the micro-benchmarks: one histogram shape and one report line format.
#![allow(dead_code)]

use hdrhistogram::Histogram;

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// The header of the table `report` prints rows of.
pub fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "case", "mean us", "p50 us", "p99 us", "p99.9 us", "ops/s"
    );
}

/// One row: mean, p50, p99, p99.9 in µs, and the rate the mean implies.
pub fn report(name: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<48} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.0}",
        h.mean() / 1000.0,
        us(0.5),
        us(0.99),
        us(0.999),
        1e9 / h.mean().max(1.0)
    );
}
