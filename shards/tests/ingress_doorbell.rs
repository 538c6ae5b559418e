//! One shard alone: a busy shard is reached with no system call per request (the doorbell
//! rings only when the shard had parked), and a parked one is woken by exactly one ring. In
//! `Sync` mode, where writes travel to the shard; in `Normal` a put never wakes the shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lightning_shards::{Limits, OpRef, ShardConfig, ShardHandle, WalSyncMode};

fn shard(dir: &std::path::Path) -> ShardHandle {
    shard_in(dir, WalSyncMode::Sync)
}

fn shard_in(dir: &std::path::Path, mode: WalSyncMode) -> ShardHandle {
    ShardHandle::spawn(ShardConfig {
        shard_id: 0,
        dir: dir.join("shard-000"),
        cpu: None,
        wal_sync_mode: mode,
        sync_interval_ms: 1000,
        flush_interval_ms: 1000,
        wal_segment_bytes: 1 << 20,
        direct_io: false,
        register_buffers: false,
        ingress_queue_depth: 1024,
        ingress_batch_max: 256,
        spin_before_park_us: 20_000,
        stall_threshold_ms: 10,
        limits: Limits { max_key_bytes: 64, max_value_bytes: 1024, max_batch_bytes: 1 << 16 },
        memtable_bytes: 0,
        page_size: 4096,
        compression: false,
        cache_bytes: 0,
        oracle: lightning_shards::Oracle::new(),
    })
    .and_then(|s| s.ready())
    .unwrap()
}

fn put(s: &ShardHandle, i: u32) {
    s.write(OpRef::Put { key: &i.to_be_bytes(), value: &[1u8; 16] }).unwrap();
}

#[test]
fn a_busy_shard_costs_no_system_call_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let s = shard(dir.path());
    put(&s, 0); // may wake the shard once
    let before = s.doorbell_rings();
    for i in 1..2000 {
        put(&s, i);
    }
    // The shard polls for 20 ms after each request, so it never parks during the burst.
    let rung = s.doorbell_rings() - before;
    assert!(rung <= 2, "{rung} doorbell rings for 1999 back-to-back requests");
    assert_eq!(s.get(&1999u32.to_be_bytes()).unwrap(), Some(vec![1u8; 16]));
    s.shutdown().unwrap();
}

#[test]
fn a_parked_shard_is_woken_by_one_ring() {
    let dir = tempfile::tempdir().unwrap();
    let s = shard(dir.path());
    put(&s, 0);
    std::thread::sleep(Duration::from_millis(100)); // well past the 20 ms spin: parked
    let before = s.doorbell_rings();
    put(&s, 1);
    assert_eq!(s.doorbell_rings() - before, 1);
    s.shutdown().unwrap();
}

#[test]
fn a_put_in_normal_mode_never_wakes_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let s = shard_in(dir.path(), WalSyncMode::Normal);
    std::thread::sleep(Duration::from_millis(100)); // parked
    let before = s.doorbell_rings();
    for i in 0..1000 {
        put(&s, i);
    }
    assert_eq!(s.doorbell_rings() - before, 0, "the caller applied its own puts");
    assert_eq!(s.get(&999u32.to_be_bytes()).unwrap(), Some(vec![1u8; 16]));
    s.shutdown().unwrap();
}
