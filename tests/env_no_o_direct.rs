//! Hostile environment: a filesystem without `O_DIRECT` (a ramfs, mounted when root). Sync mode
//! there must give `EnvUnsupported` naming `O_DIRECT` and the fix (`direct_io: false`); the
//! refused open leaves the directory usable, and `direct_io: false` works in Sync and Normal
//! mode. On an ordinary directory `direct_io: false` always works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::hostile::{env_unsupported_text, is_root, statfs_type, MountGuard};
use common::small_config;
use lightning_db::{Database, LightningDbConfig, WalSyncMode};

const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// True if `dir` accepts an `O_DIRECT` open (the probe the engine runs is stricter: it writes).
fn accepts_o_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("o-direct-check");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

fn check_no_o_direct(db_dir: &Path) {
    let text = env_unsupported_text(
        Database::open(db_dir, small_config(WalSyncMode::Sync)),
        "Sync mode on a filesystem without O_DIRECT",
    );
    assert!(text.contains("O_DIRECT") && text.contains("direct_io: false"), "{text}");
    println!("NOTE: error was: {text}");
    // The refused open left the directory usable: the same modes work without O_DIRECT.
    let no_direct = LightningDbConfig { direct_io: false, ..small_config(WalSyncMode::Sync) };
    {
        let db = Database::open(db_dir, no_direct.clone()).unwrap();
        db.put(b"sync", b"without O_DIRECT").unwrap();
        db.close().unwrap();
    }
    {
        let db = Database::open(db_dir, small_config(WalSyncMode::Normal)).unwrap();
        assert_eq!(db.get(b"sync").unwrap(), Some(b"without O_DIRECT".to_vec()));
        db.put(b"normal", b"mode").unwrap();
        db.close().unwrap();
    }
    let db = Database::open(db_dir, no_direct).unwrap();
    assert_eq!(db.get(b"normal").unwrap(), Some(b"mode".to_vec()));
    assert_eq!(db.get(b"sync").unwrap(), Some(b"without O_DIRECT".to_vec()));
}

#[test]
fn filesystem_without_o_direct_is_env_unsupported() {
    let tmp = tempfile::tempdir().unwrap();

    // Always: `direct_io: false` works on an ordinary directory, and Sync mode with O_DIRECT
    // either works or fails with the same typed error, as the filesystem decides.
    let plain = tmp.path().join("plain");
    {
        let config = LightningDbConfig { direct_io: false, ..small_config(WalSyncMode::Sync) };
        let db = Database::open(&plain, config).unwrap();
        db.put(b"k", b"v").unwrap();
        assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
        db.close().unwrap();
        if accepts_o_direct(tmp.path()) {
            let db = Database::open(&plain, small_config(WalSyncMode::Sync)).unwrap();
            assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
        } else {
            check_no_o_direct(&plain);
        }
    }

    if !is_root() {
        println!("NOTE: not root: cannot mount a ramfs, skipping the no-O_DIRECT filesystem");
        return;
    }
    let point = tmp.path().join("ramfs");
    std::fs::create_dir(&point).unwrap();
    let Some(_mount) = MountGuard::mount("ramfs", Path::new("ramfs"), &point, None) else {
        return;
    };
    assert_eq!(statfs_type(&point), Some(RAMFS_MAGIC), "{} is not a ramfs", point.display());
    assert!(!accepts_o_direct(&point), "this kernel's ramfs accepts O_DIRECT");
    check_no_o_direct(&point.join("db"));
    // `_mount` unmounts here, after every database above was closed.
}
