//! Hostile environment: a database path that cannot be written (a `chattr +i` directory when
//! root, a `chmod 0o555` one otherwise) or whose parent is a plain file. The open must give a
//! typed `Error::Io` (or `InvalidPath`) naming the path, create nothing, and the same path
//! must work once the directory is writable again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;

use common::hostile::{is_root, run_cmd, ImmutableGuard, ReadOnlyModeGuard};
use common::small_config;
use lightning_db::{Database, Error, WalSyncMode};

#[test]
fn unwritable_path_is_a_typed_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let locked_dir = tmp.path().join("no-write");
    std::fs::create_dir(&locked_dir).unwrap();
    let db_path = locked_dir.join("db");
    {
        let _immutable;
        let _read_only;
        let protected = if is_root() {
            match run_cmd("chattr", &[OsStr::new("+i"), locked_dir.as_os_str()]) {
                Ok(()) => {
                    _immutable = ImmutableGuard(locked_dir.clone());
                    true
                }
                Err(e) => {
                    println!("NOTE: chattr +i failed ({e}); skipping the unwritable directory");
                    false
                }
            }
        } else {
            std::fs::set_permissions(&locked_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            _read_only = ReadOnlyModeGuard(locked_dir.clone());
            true
        };
        if protected {
            let err = Database::open(&db_path, small_config(WalSyncMode::Normal)).unwrap_err();
            match &err {
                Error::Io { path, source, .. } => {
                    assert_eq!(path, &db_path);
                    assert!(
                        matches!(source.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)),
                        "{source:?}"
                    );
                }
                other => panic!("expected Error::Io, got {other:?}"),
            }
            let text = err.to_string();
            assert!(text.contains(&db_path.display().to_string()), "names the path: {text}");
            println!("NOTE: error was: {text}");
            assert_eq!(std::fs::read_dir(&locked_dir).unwrap().count(), 0, "nothing created");
        }
        // The guards restore write access here.
    }
    // Once the directory is writable again, the same path works.
    {
        let db = Database::open(&db_path, small_config(WalSyncMode::Normal)).unwrap();
        db.put(b"k", b"v").unwrap();
        db.close().unwrap();
        let db = Database::open(&db_path, small_config(WalSyncMode::Normal)).unwrap();
        assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    // A path whose parent is a plain file.
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let under_file = file.join("db");
    let err = Database::open(&under_file, small_config(WalSyncMode::Normal)).unwrap_err();
    match &err {
        Error::Io { path, source, .. } => {
            assert_eq!(path, &under_file);
            assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR), "{source:?}");
        }
        Error::InvalidPath { path, .. } => assert_eq!(path, &under_file),
        other => panic!("expected Error::Io or Error::InvalidPath, got {other:?}"),
    }
    assert!(err.to_string().contains(&under_file.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory", "the file is untouched");
}
