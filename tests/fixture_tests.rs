//! A database written by this version, committed under `tests/fixtures/tree-v1`, opens and
//! reads back (WAL format 4 written in `Normal` mode, tree format 1, page format 1); the same database with its tree
//! superblocks claiming another format version is refused with `IncompatibleVersion`, never
//! read. `cargo test --test fixture_tests -- --ignored write_fixture` writes the fixture again
//! (for a new format version: commit it under a new name and keep the old test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use lightning_db::{Database, Error, LightningDbConfig, WalSyncMode};

const KEYS: u64 = 3000;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tree-v1")
}

/// Small everything, so the fixture is small, and memtables small enough to flush into trees.
fn config() -> LightningDbConfig {
    LightningDbConfig {
        shards: 2,
        wal_sync_mode: WalSyncMode::Normal,
        direct_io: false,
        register_buffers: false,
        wal_segment_bytes: 64 * 1024,
        max_value_bytes: 8 * 1024,
        max_batch_bytes: 32 * 1024,
        memtable_bytes: 96 * 1024,
        create_if_missing: false,
        ..Default::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("fixture-key-{i:05}").into_bytes()
}

fn value(i: u64) -> Option<Vec<u8>> {
    match i % 10 {
        0 => None,                              // deleted
        7 => Some(vec![(i % 251) as u8; 2000]), // overflow extents
        _ => Some(format!("value of {i}: {}", "x".repeat((i % 40) as usize)).into_bytes()),
    }
}

#[test]
#[ignore = "writes tests/fixtures/tree-v1; run by hand for a new format version"]
fn write_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let db =
        Database::open(&dir, LightningDbConfig { create_if_missing: true, ..config() }).unwrap();
    for i in 0..KEYS {
        db.put(key(i), format!("first {i}")).unwrap();
    }
    for i in 0..KEYS {
        match value(i) {
            Some(v) => db.put(key(i), v).unwrap(),
            None => db.delete(key(i)).unwrap(),
        }
    }
    let stats = db.stats().unwrap().total();
    assert!(stats.flush.flushes > 0 && stats.flush.tree_keys > 0, "{:?}", stats.flush);
    db.close().unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

/// A copy of the fixture in a temporary directory (opening writes to it).
fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_committed_fixture_opens_and_reads_back() {
    let tmp = copy_fixture();
    assert!(tmp.path().join("shard-000/tree.ldb").exists(), "the fixture has a tree");
    let db = Database::open(tmp.path(), config()).unwrap();
    for i in 0..KEYS {
        assert_eq!(db.get(key(i)).unwrap(), value(i), "key {i}");
    }
    let scanned = db.scan(None, None).unwrap().count();
    assert_eq!(scanned as u64, (0..KEYS).filter(|&i| value(i).is_some()).count() as u64);
    assert!(db.verify().unwrap() > 0);
    assert!(db.stats().unwrap().total().flush.tree_keys > 0);
}

#[test]
fn a_tree_of_another_format_version_is_refused() {
    let tmp = copy_fixture();
    let tree = tmp.path().join("shard-000/tree.ldb");
    let mut bytes = std::fs::read(&tree).unwrap();
    // Both superblock slots claim version 2, checksums fixed: whole, but not this format.
    for slot in 0..2 {
        let sb = &mut bytes[slot * 4096..slot * 4096 + 4096];
        if sb.iter().all(|&b| b == 0) {
            continue;
        }
        sb[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&sb[..4092]);
        sb[4092..].copy_from_slice(&crc.to_le_bytes());
    }
    std::fs::write(&tree, bytes).unwrap();
    match Database::open(tmp.path(), config()) {
        Err(Error::IncompatibleVersion { file, found: 2, supported: 1 }) => assert_eq!(file, tree),
        Err(other) => panic!("expected IncompatibleVersion, got {other}"),
        Ok(_) => panic!("a tree of another format version was opened"),
    }
}
