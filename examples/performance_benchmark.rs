//! A short standard benchmark of the embedded default configuration, printed as a table.
//!
//! `cargo run --release --example performance_benchmark [keys]` (default 200 000 keys of
//! 16 B with 100 B values, in `./perf_bench_db`, removed afterwards). For the full harness
//! (peers, YCSB, open loop, HTML reports) see `cargo run --release -p lightning-bench -- --help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use lightning_db::{Database, LightningDbConfig, WalSyncMode, WriteBatch};

fn key(i: u64) -> [u8; 16] {
    (u128::from(i) << 1).to_be_bytes()
}

struct Row {
    name: String,
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// Runs `op(thread, i)` for `n` operations split over `threads` threads, timing each.
fn run(name: &str, threads: u64, n: u64, op: impl Fn(u64, u64) + Send + Sync + 'static) -> Row {
    let op = Arc::new(op);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut h = hist();
                for i in (t..n).step_by(threads as usize) {
                    let s = Instant::now();
                    op(t, i);
                    h.record(s.elapsed().as_nanos() as u64).unwrap();
                }
                h
            })
        })
        .collect();
    let mut total = hist();
    for h in handles {
        total.add(h.join().unwrap()).unwrap();
    }
    Row {
        name: format!("{name}, {threads} thread(s)"),
        ops: n,
        secs: start.elapsed().as_secs_f64(),
        hist: total,
    }
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = std::path::Path::new("perf_bench_db");
    let _ = std::fs::remove_dir_all(dir);
    let value = Arc::new(vec![0x5a_u8; 100]);
    let mut rows = Vec::new();
    {
        let db = Arc::new(Database::open(dir, Default::default()).unwrap());
        let (d, v) = (db.clone(), value.clone());
        rows.push(run("fillseq", 1, n, move |_, i| d.put(key(i), &*v).unwrap()));
        let (d, v) = (db.clone(), value.clone());
        rows.push(run("overwrite (random)", 2, n, move |_, i| {
            d.put(key(i.wrapping_mul(0x9e37_79b9) % n), &*v).unwrap()
        }));
        for threads in [1, 2] {
            let d = db.clone();
            rows.push(run("readrandom", threads, n, move |_, i| {
                assert!(d.get(key(i.wrapping_mul(0x9e37_79b9) % n)).unwrap().is_some());
            }));
        }
        let d = db.clone();
        rows.push(run("readmissing", 1, n, move |_, i| {
            assert!(d.get((u128::from(i) << 1 | 1).to_be_bytes()).unwrap().is_none());
        }));
        let d = db.clone();
        rows.push(run("scan of 100", 1, n / 100, move |_, i| {
            let start = key(i.wrapping_mul(0x9e37_79b9) % n);
            assert!(d.scan(Some(&start), None).unwrap().take(100).count() > 0);
        }));
        let (d, v) = (db.clone(), value.clone());
        rows.push(run("write_batch of 100", 1, n / 100, move |_, i| {
            let mut b = WriteBatch::new();
            for j in 0..100 {
                b.put(key(n + i * 100 + j), &*v).unwrap();
            }
            d.write_batch(&b).unwrap();
        }));
        Arc::try_unwrap(db).unwrap().close().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
    {
        let sync = LightningDbConfig { wal_sync_mode: WalSyncMode::Sync, ..Default::default() };
        let db = Arc::new(Database::open(dir, sync).unwrap());
        let (d, v) = (db.clone(), value.clone());
        rows.push(run("put, WalSyncMode::Sync", 4, (n / 20).min(10_000), move |_, i| {
            d.put(key(i), &*v).unwrap()
        }));
        Arc::try_unwrap(db).unwrap().close().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
    println!(
        "{:<34} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "benchmark", "ops", "ops/s", "p50 us", "p99 us", "p99.9 us", "max us"
    );
    for r in rows {
        let us = |q: f64| r.hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<34} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
            r.name,
            r.ops,
            r.ops as f64 / r.secs,
            us(0.5),
            us(0.99),
            us(0.999),
            r.hist.max() as f64 / 1000.0
        );
    }
}
