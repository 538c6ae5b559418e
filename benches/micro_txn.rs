//! Commit-path micro-benchmark (transactions issue): what a single put, a one-shard batch, a
//! cross-shard batch and a cross-shard transaction cost, one caller at a time, in one run.
//!
//! `cargo bench --bench micro_txn` (or `-- --quick`). Files go under `$LDB_BENCH_DIR` (default
//! `target/bench-txn`, which must not be tmpfs). Cases, in `Normal` and `Sync`:
//! - a single-key put (random keys);
//! - a 1 000-key batch whose keys all live on one shard (one WAL record);
//! - a 1 000-key batch spread over every shard (a two-phase commit);
//! - a 2-key transfer transaction over two shards (read both, write both: a two-phase commit),
//!   and the same over two keys of one shard (one step).
//!
//! Figures are hdrhistogram percentiles of whole calls; compare them only within one run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use common::{header, hist, report};
use std::path::PathBuf;
use std::time::Instant;

use lightning_db::{Database, LightningDbConfig, WalSyncMode, WriteBatch};

fn bench_dir() -> PathBuf {
    std::env::var_os("LDB_BENCH_DIR")
        .map_or_else(|| PathBuf::from("target/bench-txn"), PathBuf::from)
}

fn key(i: u64) -> [u8; 16] {
    (u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 1).to_be_bytes()
}

fn run(mode: WalSyncMode, quick: bool) {
    let dir = bench_dir().join(format!("{mode:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    let config = LightningDbConfig { wal_sync_mode: mode, ..Default::default() };
    let db = Database::open(&dir, config).unwrap();
    let scale = match (mode, quick) {
        (WalSyncMode::Sync, _) | (_, true) => 1,
        _ => 10,
    };
    header(&format!("{mode:?}, {} shards, one caller", db.shard_count()));
    let value = [7u8; 100];

    let mut h = hist();
    for i in 0..20_000 * scale as u64 {
        let t = Instant::now();
        db.put(key(i), value).unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("put, 16 B key, 100 B value", &h);

    // Keys for batches: all on shard 0, or spread over every shard.
    let one_shard: Vec<[u8; 16]> =
        (1_000_000u64..).map(key).filter(|k| db.shard_for_key(k) == 0).take(1000).collect();
    let spread: Vec<[u8; 16]> = (2_000_000u64..2_001_000).map(key).collect();
    for (name, keys) in
        [("batch of 1 000, one shard", &one_shard), ("batch of 1 000, every shard", &spread)]
    {
        let mut h = hist();
        for round in 0..50 * scale {
            let mut batch = WriteBatch::new();
            for k in keys {
                batch.put(k, (round as u64).to_le_bytes()).unwrap();
            }
            let t = Instant::now();
            db.write_batch(&batch).unwrap();
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        report(name, &h);
    }

    // Two accounts on different shards, and two on the same shard.
    let a = key(3_000_000);
    let other =
        (3_000_001u64..).map(key).find(|k| db.shard_for_key(k) != db.shard_for_key(a)).unwrap();
    let same =
        (3_000_001u64..).map(key).find(|k| db.shard_for_key(k) == db.shard_for_key(a)).unwrap();
    for (name, b) in
        [("transfer transaction, two shards", other), ("transfer transaction, one shard", same)]
    {
        if name.contains("two") && db.shard_count() == 1 {
            continue;
        }
        db.put(a, 1_000_000u64.to_le_bytes()).unwrap();
        db.put(b, 1_000_000u64.to_le_bytes()).unwrap();
        let mut h = hist();
        for _ in 0..5_000 * scale {
            let t = Instant::now();
            db.transaction(|tx| {
                let x = u64::from_le_bytes(tx.get(a)?.unwrap().try_into().unwrap());
                let y = u64::from_le_bytes(tx.get(b)?.unwrap().try_into().unwrap());
                tx.put(a, (x - 1).to_le_bytes())?;
                tx.put(b, (y + 1).to_le_bytes())
            })
            .unwrap();
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        report(name, &h);
    }
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        run(mode, quick);
    }
}
