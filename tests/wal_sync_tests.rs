//! The WAL's fdatasyncs: `sync()` in every mode, and a failed sync of a segment retired by a
//! rollover (submitted through the ring, after the loop moved on) still poisons the shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{small_config, MODES};
use lightning_db::sim::{Fault, FaultOp, SimDisk};
use lightning_db::{Database, Error, LightningDbConfig, WalSyncMode};

#[test]
fn sync_succeeds_in_every_mode_with_and_without_pending_writes() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path(), small_config(mode)).unwrap();
        db.sync().unwrap();
        for i in 0..100u32 {
            db.put(i.to_be_bytes(), b"v").unwrap();
        }
        db.sync().unwrap();
        db.flush().unwrap();
    }
}

#[test]
fn a_failed_sync_of_a_retired_segment_poisons_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(3);
    let config = LightningDbConfig {
        shards: 1,
        sync_interval_ms: 60_000, // no timed sync: the rollover's sync is the first one
        ..small_config(WalSyncMode::Normal)
    };
    let db = Database::open_simulated(&disk, dir.path(), config).unwrap();
    // The first segment's first fdatasync through the ring: the one its rollover queues.
    disk.inject(Fault::next(FaultOp::Sync, libc::EIO).on_path("wal-0000000000000001.log"));
    // 1 MiB segments: ~2.5 MiB of values rolls over at least twice.
    let value = vec![7u8; 100 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = 0;
    let err = loop {
        match db.put(format!("k{acked:04}"), &value) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(Instant::now() < deadline, "no write was refused after {acked} puts");
    };
    assert!(matches!(err, Error::Poisoned { shard: 0 } | Error::Io { .. }), "{err:?}");
    assert!(acked >= 10, "the fault hit before the first rollover ({acked} puts)");
    assert!(matches!(db.put(b"after", b"x"), Err(Error::Poisoned { shard: 0 })));
    assert!(db.sync().is_err(), "sync must not report success after a failed fdatasync");
    // Reads keep working, and a reopen clears the poison.
    assert_eq!(db.get("k0000").unwrap(), Some(value.clone()));
    drop(db);
    let db =
        Database::open_simulated(&disk, dir.path(), small_config(WalSyncMode::Normal)).unwrap();
    db.put(b"after-reopen", b"ok").unwrap();
    for i in 0..acked {
        assert_eq!(db.get(format!("k{i:04}")).unwrap(), Some(value.clone()), "k{i:04}");
    }
}
