//! Callers racing for a shard's commit lock on real threads, in every mode (`Normal`/`Async`:
//! they apply their writes; `Sync`: they stage them in the open group and wait for its durable
//! write): more callers than CPUs, segments small enough that many writes find no room (and go
//! to the shard thread, which rolls over or opens a group that fits), batches among single
//! puts. Every acknowledged write is readable at once by its writer, and all of them are there
//! after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use lightning_shards::{Limits, OpRef, ShardConfig, ShardHandle, Ticket, WalSyncMode};

fn config(dir: &std::path::Path, mode: WalSyncMode) -> ShardConfig {
    ShardConfig {
        cpu: None,
        wal_sync_mode: mode,
        sync_interval_ms: 5,
        flush_interval_ms: 5,
        wal_segment_bytes: 64 << 10,
        direct_io: false,
        register_buffers: false,
        spin_before_park_us: 0,
        limits: Limits { max_key_bytes: 64, max_value_bytes: 4096, max_batch_bytes: 1 << 16 },
        ..ShardConfig::new(0, dir.join("shard-000"))
    }
}

const CALLERS: u32 = 6;
const WRITES: u32 = 3000;

fn key(t: u32, i: u32) -> Vec<u8> {
    format!("t{t}-{i:06}").into_bytes()
}

fn value(t: u32, i: u32) -> Vec<u8> {
    // Sizes vary, so a smaller record may fit where a larger one was sent to the shard.
    vec![(t * 31 + i) as u8; 20 + (i as usize * 7) % 400]
}

#[test]
fn racing_callers_lose_nothing_across_rollovers() {
    // `Sync` pays a durable write per group: fewer writes keep the test short.
    for (mode, writes) in
        [(WalSyncMode::Normal, WRITES), (WalSyncMode::Async, WRITES), (WalSyncMode::Sync, 600)]
    {
        let dir = tempfile::tempdir().unwrap();
        let shard = Arc::new(ShardHandle::start(config(dir.path(), mode)).unwrap());
        let threads: Vec<_> = (0..CALLERS)
            .map(|t| {
                let shard = shard.clone();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while i < writes {
                        if i % 10 == 9 {
                            let kv: Vec<_> = (i..i + 3).map(|j| (key(t, j), value(t, j))).collect();
                            let ops: Vec<OpRef<'_>> =
                                kv.iter().map(|(k, v)| OpRef::Put { key: k, value: v }).collect();
                            let mut ticket = Ticket::new(1);
                            // Both ways a batch part travels: applied by this caller, or by
                            // the shard thread (a large part for a shard on another CPU).
                            if i % 20 == 9 {
                                shard.send_batch(&ops, &mut ticket);
                            } else {
                                shard.submit_batch(&ops, &mut ticket);
                            }
                            ticket.wait().unwrap();
                            i += 3;
                        } else {
                            let (k, v) = (key(t, i), value(t, i));
                            shard.write(OpRef::Put { key: &k, value: &v }).unwrap();
                            i += 1;
                        }
                        // Read your own write, on the caller's thread.
                        assert_eq!(shard.get(&key(t, i - 1)).unwrap(), Some(value(t, i - 1)));
                    }
                    i
                })
            })
            .collect();
        let written: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let stats = shard.stats().unwrap();
        assert!(stats.wal_records >= u64::from(CALLERS * writes) / 3, "{mode:?}");
        shard.shutdown().unwrap();

        let reopened = ShardHandle::start(config(dir.path(), mode)).unwrap();
        for (t, &n) in written.iter().enumerate() {
            for i in 0..n {
                let t = t as u32;
                assert_eq!(
                    reopened.get(&key(t, i)).unwrap(),
                    Some(value(t, i)),
                    "{mode:?} t{t} {i}"
                );
            }
        }
        let segments = std::fs::read_dir(dir.path().join("shard-000")).unwrap().count();
        assert!(segments > 10, "{mode:?}: {segments} files: the test must roll over often");
        reopened.shutdown().unwrap();
    }
}

#[test]
fn only_large_parts_go_to_the_shard_thread() {
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardHandle::start(config(dir.path(), WalSyncMode::Normal)).unwrap();
    // Small parts are always applied by the caller.
    assert!(!shard.offloads(lightning_shards::OFFLOAD_BATCH_OPS - 1));
    shard.shutdown().unwrap();
    // An unpinned shard has no CPU of its own to apply a part on.
    let dir = tempfile::tempdir().unwrap();
    let shard = ShardHandle::start(config(dir.path(), WalSyncMode::Sync)).unwrap();
    assert!(!shard.offloads(1 << 20), "config() leaves the shard unpinned");
    shard.shutdown().unwrap();
}
