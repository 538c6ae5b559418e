//! Ingress micro-benchmark: the caller → shard → caller path through a real shard (its ring,
//! loop, doorbell and completion), with no WAL work in the way.
//!
//! `cargo bench --bench micro_ingress` (or `-- --quick`). Each request is a `Sync` with nothing
//! written, which the shard answers at once, so the figures are the cost of the hop itself:
//!
//! - round trip with the shard awake (back to back: the shard never parks);
//! - round trip with the shard parked (the caller sleeps 2 ms first: the doorbell and the
//!   wake-up are paid);
//! - pipelined: bursts of 256 requests sent without waiting, then awaited (messages/s);
//! - the same round trip through the public API: `Database::sync` on a 1-shard database with
//!   nothing pending (adds the API layer).
//!
//! The runtime comparison with glommio on the same measurements lives in
//! `benches/runtime-adr` (ADR 0001).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use common::{header, hist, report};
use std::time::{Duration, Instant};

use lightning_db::{Database, LightningDbConfig, WalSyncMode};
use lightning_shards::{Limits, ShardConfig, ShardHandle, Ticket};

fn shard(dir: &std::path::Path, cpu: Option<usize>) -> ShardHandle {
    ShardHandle::start(ShardConfig {
        shard_id: 0,
        dir: dir.join("shard-000"),
        cpu,
        wal_sync_mode: WalSyncMode::Normal,
        sync_interval_ms: 100,
        flush_interval_ms: 100,
        wal_segment_bytes: 1 << 20,
        direct_io: true,
        register_buffers: false,
        ingress_queue_depth: 1024,
        ingress_batch_max: 256,
        spin_before_park_us: 200,
        stall_threshold_ms: 10,
        limits: Limits { max_key_bytes: 1024, max_value_bytes: 1 << 16, max_batch_bytes: 1 << 18 },
        memtable_bytes: 0,
        page_size: 4096,
        compression: false,
        cache_bytes: 0,
        oracle: lightning_shards::Oracle::new(),
    })
    .unwrap()
}

fn round_trip(s: &ShardHandle) -> u64 {
    let mut ticket = Ticket::new(1);
    let t = Instant::now();
    s.submit_sync(&mut ticket);
    ticket.wait().unwrap();
    t.elapsed().as_nanos() as u64
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 20_000 } else { 200_000 };
    let dir =
        tempfile::tempdir_in(std::env::var("LDB_BENCH_DIR").unwrap_or_else(|_| "target".into()))
            .unwrap();
    let s = shard(dir.path(), lightning_shards::cpu_for_shard(0));
    println!(
        "micro_ingress: n={n}, {} CPUs, shard pinned to {:?}",
        lightning_shards::default_shard_count(),
        s.report().pinned_cpu
    );
    header("Ingress round trips through a real shard (no WAL work)");

    let mut h = hist();
    for _ in 0..n {
        h.record(round_trip(&s)).unwrap();
    }
    report("round trip, shard awake", &h);

    let mut h = hist();
    for _ in 0..(n / 100).max(200) {
        std::thread::sleep(Duration::from_millis(2));
        h.record(round_trip(&s)).unwrap();
    }
    report("round trip, shard parked (2 ms idle)", &h);

    let burst = 256;
    let rounds = n / burst;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut ticket = Ticket::new(burst as u32);
        for _ in 0..burst {
            s.submit_sync(&mut ticket);
        }
        ticket.wait().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:<48} {:>49.0} msgs/s", "pipelined, bursts of 256", (rounds * burst) as f64 / secs);
    s.shutdown().unwrap();

    let db = Database::open(
        dir.path().join("db"),
        LightningDbConfig { shards: 1, ..Default::default() },
    )
    .unwrap();
    let mut h = hist();
    for _ in 0..n / 4 {
        let t = Instant::now();
        db.sync().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("Database::sync with nothing pending", &h);
}
