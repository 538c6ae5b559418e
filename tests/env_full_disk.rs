//! Hostile environment: a full disk, injected and real. Injected (on the simulated disk): the
//! first WAL segment does not fit at open, which refuses to open with an error that says so;
//! later a segment allocation fails with ENOSPC, in Normal and Sync mode: the put is refused
//! with a disk-full `Error::Io`, nothing half-made is left, reads and other shards keep working,
//! the shard is not poisoned, and writes resume once the fault is spent. Real (root only): a
//! 16 MiB ext4 image on a loop device filled until ENOSPC, then freed; acknowledged writes
//! survive a reopen and refused ones never come back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::hostile::{
    assert_all_present, available_bytes, is_root, keys_on, run_cmd, sized_value, MountGuard,
};
use common::small_config;
use lightning_db::router::Router;
use lightning_db::sim::{Fault, FaultOp, SimDisk};
use lightning_db::{Database, Error, LightningDbConfig, WalSyncMode};

// ---------------------------------------------------------------------------------------------
// Injected: WAL segment allocation fails with ENOSPC.

const BIG: usize = 100 * 1024;

/// Segment files of `shard` on the simulated disk (temporary ones included).
fn sim_segments(disk: &SimDisk, dir: &Path, shard: usize) -> usize {
    let names = disk.list(&dir.join(format!("shard-{shard:03}")));
    names.iter().filter(|n| n.starts_with("wal-")).count()
}

fn injected_full_disk(mode: WalSyncMode) {
    const SHARD: usize = 0;
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(10 + mode as u64);
    let config = LightningDbConfig { shards: 2, ..small_config(mode) };

    // Open creates each shard's first segment: on a disk without room, open says so.
    disk.inject(Fault::next(FaultOp::Allocate, libc::ENOSPC).on_path("shard-000"));
    match Database::open_simulated(&disk, dir.path(), config.clone()) {
        Err(e @ Error::EnvUnsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("no room for a WAL segment") && text.contains("shard-000"),
                "{text}"
            );
            assert!(text.contains("wal_segment_bytes"), "{text}");
        }
        other => panic!("{mode:?}: expected EnvUnsupported at open, got {other:?}"),
    }
    assert_eq!(sim_segments(&disk, dir.path(), SHARD), 0, "a failed allocation leaves no file");
    let db = Database::open_simulated(&disk, dir.path(), config.clone()).unwrap();
    let router = Router::new(db.shard_count() as u32);
    let keys = keys_on(&router, SHARD, "full", 60);
    let other = keys_on(&router, 1, "other", 5);
    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let mut next = 0usize;
    db.put(&other[0], b"elsewhere").unwrap();
    acked.push((other[0].clone(), b"elsewhere".to_vec()));

    // Fill the first segment until the shard rolls over once.
    while sim_segments(&disk, dir.path(), SHARD) < 2 {
        assert!(next < 30, "{mode:?}: no rollover after {next} puts of {BIG} bytes");
        let v = sized_value(next, BIG);
        db.put(&keys[next], &v).unwrap();
        acked.push((keys[next].clone(), v));
        next += 1;
    }

    // Now the next rollover hits a "full disk", twice.
    disk.inject(Fault::next(FaultOp::Allocate, libc::ENOSPC).on_path("shard-000").times(2));
    let segments_before = sim_segments(&disk, dir.path(), SHARD);
    let mut errors = 0;
    while errors < 2 {
        assert!(next < keys.len(), "{mode:?}: no rollover needed a new segment");
        let v = sized_value(next, BIG);
        match db.put(&keys[next], &v) {
            Ok(()) => acked.push((keys[next].clone(), v)),
            Err(e) => {
                assert!(e.is_disk_full(), "{mode:?}: {e:?}");
                assert!(matches!(e, Error::Io { .. }), "{mode:?}: {e:?}");
                let text = e.to_string();
                assert!(text.contains("WAL segment") && text.contains("shard-000"), "{text}");
                failed.push(keys[next].clone());
                errors += 1;
                // Reads keep working while writes are refused.
                assert_all_present(&db, &acked, "during the full disk");
                assert_eq!(db.get(&keys[next]).unwrap(), None, "a refused put must not be visible");
            }
        }
        next += 1;
    }
    assert_eq!(sim_segments(&disk, dir.path(), SHARD), segments_before, "no half-made segment");
    // The shard is not poisoned: a full disk at allocation puts nothing durable in doubt.
    db.sync().unwrap();
    db.put(&other[1], b"still fine").unwrap();
    acked.push((other[1].clone(), b"still fine".to_vec()));

    // The fault is spent: writes go through again and roll onto a new segment.
    for _ in 0..3 {
        let v = sized_value(next, BIG);
        db.put(&keys[next], &v).unwrap();
        acked.push((keys[next].clone(), v));
        next += 1;
    }
    assert_eq!(sim_segments(&disk, dir.path(), SHARD), segments_before + 1);
    assert_all_present(&db, &acked, "after the full disk");
    db.close().unwrap();

    let db = Database::open_simulated(&disk, dir.path(), config).unwrap();
    assert_all_present(&db, &acked, &format!("{mode:?} after reopen"));
    for k in &failed {
        assert_eq!(db.get(k).unwrap(), None, "{mode:?}: a refused put came back after reopen");
    }
    db.put(b"after reopen", b"works").unwrap();
}

#[test]
fn injected_full_disk_normal_mode_refuses_writes_then_recovers() {
    injected_full_disk(WalSyncMode::Normal);
}

#[test]
fn injected_full_disk_sync_mode_refuses_writes_then_recovers() {
    injected_full_disk(WalSyncMode::Sync);
}

// ---------------------------------------------------------------------------------------------
// For real: a 16 MiB ext4 image on a loop device.

fn fill_real_disk(mount: &Path, mode: WalSyncMode) {
    let filler = mount.join(format!("filler-{mode:?}"));
    // Leave room for about five 1 MiB segments after the database's own small files.
    let fill = available_bytes(mount).saturating_sub(5 << 20);
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        f.write_all(&vec![0xA5; fill as usize]).unwrap();
        f.sync_all().unwrap();
    }
    let db_dir = mount.join(format!("db-{mode:?}"));
    let config = LightningDbConfig { shards: 2, ..small_config(mode) };
    let db = Database::open(&db_dir, config.clone()).unwrap();
    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let value_bytes = 64 * 1024;
    let mut i = 0usize;
    let first = loop {
        assert!(i < 400, "{mode:?}: {i} puts of {value_bytes} bytes never filled the disk");
        let (k, v) = (common::key(i as u64), sized_value(i, value_bytes));
        i += 1;
        match db.put(&k, &v) {
            Ok(()) => acked.push((k, v)),
            Err(e) => {
                failed.push(k);
                break e;
            }
        }
    };
    assert!(first.is_disk_full(), "{mode:?}: expected ENOSPC, got {first:?} ({first})");
    match &first {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("{mode:?}: expected Error::Io, got {other:?}"),
    }
    let text = first.to_string();
    assert!(text.contains(&db_dir.display().to_string()), "the message names the file: {text}");
    println!("NOTE: {mode:?}: disk full after {} puts: {text}", acked.len());
    // Reads work; further writes either succeed (a shard with room left) or are disk-full.
    assert_all_present(&db, &acked, "on a full disk");
    for _ in 0..20 {
        let (k, v) = (common::key(i as u64), sized_value(i, value_bytes));
        i += 1;
        match db.put(&k, &v) {
            Ok(()) => acked.push((k, v)),
            Err(e) => {
                assert!(e.is_disk_full(), "{mode:?}: {e:?}");
                failed.push(k);
            }
        }
    }
    db.sync().unwrap();

    // Free space: writes succeed again (ext4 may need a journal commit to reuse the blocks).
    std::fs::remove_file(&filler).unwrap();
    let dir_file = std::fs::File::open(mount).unwrap();
    // Safety: syncfs on a descriptor we own.
    unsafe { libc::syncfs(std::os::unix::io::AsRawFd::as_raw_fd(&dir_file)) };
    let deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..20 {
        let (k, v) = (common::key(i as u64), sized_value(i, value_bytes));
        i += 1;
        loop {
            match db.put(&k, &v) {
                Ok(()) => break,
                Err(e) if e.is_disk_full() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{mode:?}: write after freeing space: {e:?} ({e})"),
            }
        }
        acked.push((k, v));
    }
    assert_all_present(&db, &acked, "after freeing space");
    db.close().unwrap();

    let db = Database::open(&db_dir, config).unwrap();
    assert_all_present(&db, &acked, &format!("{mode:?} after reopen"));
    for k in &failed {
        assert_eq!(db.get(k).unwrap(), None, "{mode:?}: a refused put came back after reopen");
    }
    db.close().unwrap();
    std::fs::remove_dir_all(&db_dir).unwrap();
}

#[test]
fn real_full_disk_gives_enospc_and_recovers_when_space_is_freed() {
    if !is_root() {
        println!("NOTE: not root: cannot mount a loop device, skipping the real full disk");
        return;
    }
    if run_cmd("mkfs.ext4", &[OsStr::new("-V")]).is_err()
        || !Path::new("/dev/loop-control").exists()
    {
        println!("NOTE: mkfs.ext4 or loop devices missing, skipping the real full disk");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fs.img");
    std::fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    // -m 0: no blocks reserved for root, so "full" means full for this process too.
    let mkfs = ["-q", "-F", "-m", "0"].map(OsStr::new);
    run_cmd("mkfs.ext4", &[&mkfs[..], &[image.as_os_str()]].concat()).unwrap();
    let point = tmp.path().join("mnt");
    std::fs::create_dir(&point).unwrap();
    let Some(_mount) = MountGuard::mount("ext4", &image, &point, Some("loop")) else {
        return;
    };
    too_small_for_a_segment(&point);
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        fill_real_disk(&point, mode);
    }
}

/// A filesystem with less free space than one WAL segment: open refuses, saying so, and
/// leaves no segment behind (before, it opened and then failed every put while space was free).
fn too_small_for_a_segment(mount: &Path) {
    let db_dir = mount.join("db-too-small");
    let config = LightningDbConfig {
        shards: 1,
        wal_segment_bytes: 64 << 20, // four times the whole filesystem
        ..small_config(WalSyncMode::Normal)
    };
    match Database::open(&db_dir, config) {
        Err(e @ Error::EnvUnsupported { .. }) => {
            let text = e.to_string();
            assert!(text.contains("no room for a WAL segment"), "{text}");
            assert!(text.contains("wal_segment_bytes = 67108864"), "{text}");
            println!("NOTE: {text}");
        }
        other => panic!("expected EnvUnsupported at open, got {other:?}"),
    }
    let shard = db_dir.join("shard-000");
    let left: Vec<_> = std::fs::read_dir(&shard).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "nothing left in {}: {left:?}", shard.display());
    std::fs::remove_dir_all(&db_dir).unwrap();
}
