//! Hostile environment: io_uring blocked by a seccomp filter (as Docker's default profile does).
//! Opening in Normal and Sync mode must give `EnvUnsupported` naming io_uring, EPERM and
//! seccomp, never a panic, and a refused open must release the directory lock so the next
//! attempt gets the same error.
//!
//! The filter is process-wide, so it is installed only in a re-executed child (role
//! `io_uring_denied`); see `common::hostile`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hostile::{child_role, env_unsupported_text, marker, run_child};
use common::small_config;
use lightning_db::{Database, WalSyncMode};

/// The `AUDIT_ARCH_*` value seccomp reports for this build's system call ABI.
fn audit_arch_native() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(0xC000_003E) // AUDIT_ARCH_X86_64
    } else if cfg!(target_arch = "aarch64") {
        Some(0xC000_00B7) // AUDIT_ARCH_AARCH64
    } else {
        None
    }
}

/// Installs, on the calling thread (inherited by threads it spawns later), a seccomp filter
/// that makes `io_uring_setup` fail with EPERM, as Docker's default profile does.
fn deny_io_uring_setup(arch: u32) {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load_word = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load_word, 4), // seccomp_data.arch
        jump(arch, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW), // another ABI: not ours to judge
        stmt(load_word, 0),                 // seccomp_data.nr
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // Safety: plain prctl calls; `prog` and `filter` outlive the call (the kernel copies them).
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0),
            0,
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            ),
            0,
            "PR_SET_SECCOMP: {}",
            std::io::Error::last_os_error()
        );
    }
    // The filter is in force: without it this call would fail with EFAULT (null params).
    // Safety: io_uring_setup with a null params pointer touches no memory of ours.
    let r = unsafe {
        libc::syscall(libc::SYS_io_uring_setup, 1 as libc::c_uint, std::ptr::null_mut::<u8>())
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert!(r == -1 && errno == Some(libc::EPERM), "filter not active: r={r} errno={errno:?}");
}

fn child_io_uring_denied() {
    let Some(arch) = audit_arch_native() else {
        println!("NOTE: no seccomp arch value known for this target; skipped");
        return println!("{}", marker("io_uring_denied"));
    };
    deny_io_uring_setup(arch);
    let dir = tempfile::tempdir().unwrap();
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        // Twice: a failed open must release the directory lock and leave nothing running.
        for attempt in 0..2 {
            let text = env_unsupported_text(
                Database::open(dir.path(), small_config(mode)),
                &format!("{mode:?} attempt {attempt}"),
            );
            assert!(text.contains("io_uring"), "{text}");
            assert!(text.contains("EPERM") && text.contains("seccomp"), "{text}");
            if attempt == 0 && mode == WalSyncMode::Normal {
                println!("NOTE: error was: {text}");
            }
        }
    }
    println!("{}", marker("io_uring_denied"));
}

#[test]
fn io_uring_denied_by_seccomp_is_env_unsupported() {
    if child_role().as_deref() == Some("io_uring_denied") {
        return child_io_uring_denied();
    }
    run_child("io_uring_denied_by_seccomp_is_env_unsupported", "io_uring_denied")
        .assert_ok("io_uring_denied");
}
