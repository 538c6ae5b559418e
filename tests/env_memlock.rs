//! Hostile environment: `RLIMIT_MEMLOCK` too low for the registered Sync-mode WAL buffers.
//! Without `CAP_IPC_LOCK` the open must give `EnvUnsupported` naming the limit and the fix
//! (`register_buffers: false`); with that fix the same environment works in Sync and Normal
//! mode, and a limit of 0 that refuses the ring itself must name the limit too.
//!
//! The rlimit and capability changes are process-wide, so they happen only in a re-executed
//! child (role `memlock`); see `common::hostile`. The kernel charges locked memory to the user
//! across processes, so this scenario keeps a test binary to itself and its parent test holds
//! `exclusive_gate` while the child runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::hostile::{child_role, env_unsupported_text, exclusive_gate, marker, run_child};
use common::small_config;
use lightning_db::{Database, Error, LightningDbConfig, WalSyncMode};

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget() -> std::io::Result<[CapData; 2]> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // Safety: header and two data structs, as capget(2) wants for version 3; pid 0 = this thread.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r == 0 {
        Ok(data)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn has_cap_ipc_lock() -> bool {
    capget().is_ok_and(|d| d[0].effective & (1 << CAP_IPC_LOCK) != 0)
}

/// Drops CAP_IPC_LOCK from this thread's effective and permitted sets (threads spawned later
/// inherit that). Dropping needs no privilege; it fails only where capset is blocked.
fn drop_cap_ipc_lock() -> std::io::Result<()> {
    let mut data = capget()?;
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // Safety: as in `capget`; the data is read, not written.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_memlock_limit(bytes: u64) {
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // Safety: a valid rlimit struct; lowering both limits needs no privilege.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    assert_eq!(r, 0, "setrlimit(RLIMIT_MEMLOCK): {}", std::io::Error::last_os_error());
}

/// Opens, retrying while io_uring_setup itself fails with ENOMEM: without CAP_IPC_LOCK the
/// kernel charges rings to the user, and frees the rings of databases closed a moment ago (by
/// this child or by other tests of the same user) asynchronously.
fn open_once_rings_fit(dir: &Path, config: &LightningDbConfig) -> lightning_db::Result<Database> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut waited = false;
    loop {
        match Database::open(dir, config.clone()) {
            Err(Error::EnvUnsupported { what })
                if what.contains("io_uring_setup failed with ENOMEM")
                    && Instant::now() < deadline =>
            {
                waited = true;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => {
                if waited {
                    println!("NOTE: waited for the user's locked memory to drain before opening");
                }
                return other;
            }
        }
    }
}

fn child_memlock() {
    if let Err(e) = drop_cap_ipc_lock() {
        println!("NOTE: could not drop CAP_IPC_LOCK ({e}); checking what the limit still allows");
    }
    let limited = !has_cap_ipc_lock();
    // 384 KiB: room for a dozen rings (recent kernels count each ring's ~32 KiB against the
    // limit, and free a closed ring's asynchronously), but less than the 2 x 256 KiB of
    // buffers that even one shard registers.
    set_memlock_limit(384 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let sync = LightningDbConfig { shards: 2, ..small_config(WalSyncMode::Sync) };

    if limited {
        // Twice: the refused open must release the lock and leave nothing behind.
        for attempt in 0..2 {
            let text = env_unsupported_text(
                open_once_rings_fit(dir.path(), &sync),
                &format!("registered buffers, attempt {attempt}"),
            );
            assert!(text.contains("RLIMIT_MEMLOCK"), "{text}");
            assert!(text.contains("registering") && text.contains("WAL buffers"), "{text}");
            assert!(text.contains("register_buffers: false"), "the fix is named: {text}");
            if attempt == 0 {
                println!("NOTE: error was: {text}");
            }
        }
    } else {
        println!("NOTE: CAP_IPC_LOCK is still held, so registration ignores RLIMIT_MEMLOCK");
        open_once_rings_fit(dir.path(), &sync).unwrap().close().unwrap();
    }

    // Without registration the same environment works, in Sync and in Normal mode.
    let unregistered = LightningDbConfig { register_buffers: false, ..sync };
    {
        let db = open_once_rings_fit(dir.path(), &unregistered).unwrap();
        assert!(db.start_reports().iter().all(|r| !r.registered_buffers));
        for i in 0..50u64 {
            db.put(common::key(i), common::value(i, 0)).unwrap();
        }
        assert_eq!(db.get(common::key(7)).unwrap(), Some(common::value(7, 0)));
        db.close().unwrap();
    }
    let normal = LightningDbConfig { shards: 2, ..small_config(WalSyncMode::Normal) };
    {
        let db = open_once_rings_fit(dir.path(), &normal).unwrap();
        for i in 0..50u64 {
            assert_eq!(db.get(common::key(i)).unwrap(), Some(common::value(i, 0)));
        }
        db.put(b"normal", b"mode").unwrap();
        db.close().unwrap();
    }
    {
        let db = open_once_rings_fit(dir.path(), &unregistered).unwrap();
        assert_eq!(db.get(b"normal").unwrap(), Some(b"mode".to_vec()));
        db.close().unwrap();
    }

    // A limit of 0 (it cannot be raised again): kernels that count ring memory refuse the
    // ring itself, and that error must name the limit too.
    if limited {
        set_memlock_limit(0);
        match Database::open(dir.path(), normal) {
            Err(e @ Error::EnvUnsupported { .. }) => {
                let text = e.to_string();
                assert!(text.contains("io_uring") && text.contains("RLIMIT_MEMLOCK"), "{text}");
                println!("NOTE: with RLIMIT_MEMLOCK = 0: {text}");
            }
            Err(other) => panic!("RLIMIT_MEMLOCK = 0: expected EnvUnsupported, got {other:?}"),
            Ok(db) => {
                println!("NOTE: this kernel does not count ring memory against RLIMIT_MEMLOCK");
                assert_eq!(db.get(b"normal").unwrap(), Some(b"mode".to_vec()));
            }
        }
    }
    println!("{}", marker("memlock"));
}

#[test]
fn memlock_too_low_for_registered_buffers_is_env_unsupported() {
    if child_role().as_deref() == Some("memlock") {
        return child_memlock();
    }
    let _gate = exclusive_gate();
    run_child("memlock_too_low_for_registered_buffers_is_env_unsupported", "memlock")
        .assert_ok("memlock");
}
