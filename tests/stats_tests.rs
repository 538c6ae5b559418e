//! `Database::stats()`: every acknowledged request is counted per kind with an engine-side
//! latency, WAL traffic and group writes add up, and the stall detector counts slow turns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{small_config, MODES};
use lightning_db::{
    Database, LightningDbConfig, OpKind, WalSyncMode, WriteBatch, LATENCY_SAMPLE_EVERY,
};

/// Latencies recorded for `n` writes of one thread: all of them in `Sync` (the shard measures
/// each), one in `LATENCY_SAMPLE_EVERY` where callers apply their own writes.
fn assert_sampled(recorded: u64, n: u64, mode: WalSyncMode) {
    if mode == WalSyncMode::Sync {
        assert_eq!(recorded, n, "{mode:?}");
    } else {
        let every = u64::from(LATENCY_SAMPLE_EVERY);
        assert!((n / every..=n / every + 1).contains(&recorded), "{mode:?}: {recorded} of {n}");
    }
}

#[test]
fn every_request_is_counted_with_a_latency() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        // An idle `Sync` shard writes a group holding only a claim `sync_interval_ms` after its
        // last durable write; on a loaded machine the gaps between these puts can pass a short
        // interval, and those groups would break the bound on group writes below.
        let config = LightningDbConfig {
            stall_threshold_ms: 10_000,
            sync_interval_ms: 60_000,
            ..small_config(mode)
        };
        let db = Database::open(dir.path(), config).unwrap();
        for i in 0..200u32 {
            db.put(i.to_be_bytes(), b"value").unwrap();
        }
        for i in 0..50u32 {
            db.delete(i.to_be_bytes()).unwrap();
        }
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").unwrap();
        db.write_batch(&b).unwrap();
        db.sync().unwrap();
        let stats = db.stats().unwrap();
        assert_eq!(stats.shards.len(), db.shard_count());
        let total = stats.total();
        assert_eq!(total.ops(OpKind::Put), 200, "{mode:?}");
        assert_eq!(total.ops(OpKind::Delete), 50, "{mode:?}");
        assert_eq!(total.ops(OpKind::Batch), 1, "{mode:?}");
        assert_eq!(total.ops(OpKind::Sync), db.shard_count() as u64, "{mode:?}");
        assert_sampled(total.latency(OpKind::Put).len(), 200, mode);
        assert!(total.latency(OpKind::Put).max() > 0);
        assert_eq!(total.errors, 0);
        assert_eq!(total.wal_records, 251, "{mode:?}: one record per put, delete and batch part");
        assert!(total.wal_group_writes >= 1 && total.wal_group_writes <= 251, "{mode:?}");
        assert!(total.wal_bytes >= 251 * 24, "{mode:?}");
        assert!(total.turns > 0 && !total.drain_depth.is_empty());
        assert!(total.memtable_versions >= 201);
        if mode != WalSyncMode::Sync {
            assert!(total.fdatasyncs >= 1, "{mode:?}: sync() must have fdatasynced");
        }
        assert_eq!(
            total.stall_count, 0,
            "{mode:?}: no turn should take 10 s with the threshold at 10 s"
        );
    }
}

#[test]
fn errors_are_counted() {
    use lightning_db::sim::{Fault, FaultOp, SimDisk};
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(4);
    let config = LightningDbConfig { shards: 1, ..small_config(WalSyncMode::Sync) };
    let db = Database::open_simulated(&disk, dir.path(), config).unwrap();
    db.put(b"ok", b"v").unwrap();
    disk.inject(Fault::next(FaultOp::Write, libc::EIO));
    assert!(db.put(b"k", b"v").is_err());
    // Refused on the caller's side: a poisoned shard is not even asked.
    assert!(matches!(db.put(b"k2", b"v"), Err(lightning_db::Error::Poisoned { shard: 0 })));
    let total = db.stats().unwrap().total();
    assert_eq!(total.ops(OpKind::Put), 2);
    assert_eq!(total.errors, 1);
}

#[test]
fn slow_turns_are_counted_as_stalls() {
    let dir = tempfile::tempdir().unwrap();
    // A zero threshold makes every busy turn a stall: the detector's bookkeeping is exercised
    // without depending on the machine being slow. In `Sync` every put is a turn's work (in
    // `Normal` callers apply their own puts and the shard's turns are mostly idle).
    let config =
        LightningDbConfig { stall_threshold_ms: 0, shards: 1, ..small_config(WalSyncMode::Sync) };
    let db = Database::open(dir.path(), config).unwrap();
    for i in 0..20u32 {
        db.put(i.to_be_bytes(), b"v").unwrap();
    }
    let s = db.stats().unwrap().total();
    assert!(s.stall_count >= 20, "{} stalls", s.stall_count);
    assert!(!s.recent_stalls.is_empty() && s.recent_stalls.len() <= lightning_db::STALLS_KEPT);
    assert!(s.recent_stalls.iter().all(|st| !st.phase.is_empty()));
}

#[test]
fn since_shows_only_the_work_between_two_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap();
    for i in 0..100u32 {
        db.put(i.to_be_bytes(), b"preload").unwrap();
    }
    let before = db.stats().unwrap();
    for i in 0..30u32 {
        db.delete(i.to_be_bytes()).unwrap();
    }
    let delta = db.stats().unwrap().since(&before);
    assert_eq!(delta.shards.len(), db.shard_count());
    let total = delta.total();
    assert_eq!(total.ops(OpKind::Put), 0, "the preload is before the first snapshot");
    assert_eq!(total.ops(OpKind::Delete), 30);
    assert_sampled(total.latency(OpKind::Delete).len(), 30, WalSyncMode::Normal);
    assert_eq!(total.latency(OpKind::Put).len(), 0);
    assert_eq!(total.wal_records, 30);
}
