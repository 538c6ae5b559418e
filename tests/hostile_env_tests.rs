//! Hostile environments: io_uring blocked by seccomp, `RLIMIT_MEMLOCK` too low for registered
//! buffers, a filesystem without `O_DIRECT`, a full disk (injected and real), an unwritable
//! path, a failed fdatasync, and the directory lock held by another process. Each must give a
//! typed error with a clear message, never a panic, and the database must stay usable once the
//! cause is gone.
//!
//! Process-wide state (seccomp filters, rlimits, capabilities) is changed only in re-executed
//! child processes: the test binary runs itself with `--exact <test>` and [`ROLE_ENV`] set, and
//! the same `#[test]` function takes the child branch. Cases that need root (mounts, `chattr`)
//! print a note and check what they can when not run as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::{CString, OsStr};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::small_config;
use lightning_db::router::Router;
use lightning_db::{Database, Error, FaultPlan, LightningDbConfig, WalSyncMode, WriteBatch};

/// Set in a re-executed child: which child branch to run.
const ROLE_ENV: &str = "LIGHTNING_DB_HOSTILE_CHILD";
/// Set in a re-executed child that needs a directory from its parent.
const DIR_ENV: &str = "LIGHTNING_DB_HOSTILE_DIR";
/// Longest a child may run before it is killed and the test fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers: child processes, root-only setup with guards, key routing.

fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Without CAP_IPC_LOCK the kernel charges io_uring rings and registered buffers to the *user*
/// (across processes) against each process's RLIMIT_MEMLOCK. The memlock child runs with a
/// tiny limit, so while it runs no other test of this binary may hold a database open: each
/// test holds this gate shared, the memlock test holds it exclusively.
static MEMLOCK_GATE: RwLock<()> = RwLock::new(());

fn shared_gate() -> RwLockReadGuard<'static, ()> {
    MEMLOCK_GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// The line a child prints when every check passed.
fn marker(role: &str) -> String {
    format!("CHILD-OK {role}")
}

fn is_root() -> bool {
    // Safety: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// This test binary, told to run only `test` with the child branch `role`.
fn child_command(test: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]).env(ROLE_ENV, role);
    cmd
}

fn read_all_in_thread(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child`, killing it (and failing the test) after `limit`.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct ChildOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl ChildOutput {
    /// Asserts the child exited 0 and printed its success marker; echoes its notes.
    fn assert_ok(&self, role: &str) {
        assert!(
            self.status.success() && self.stdout.lines().any(|l| l.contains(&marker(role))),
            "child `{role}` failed ({})\n--- child stdout\n{}\n--- child stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        // A child's first line may follow libtest's "test … ... " on the same line.
        for line in self.stdout.lines() {
            if let Some(at) = line.find("NOTE:") {
                println!("{role}: {}", &line[at..]);
            }
        }
    }
}

/// Runs this binary's `test` as child `role` to completion and collects its output.
fn run_child(test: &str, role: &str) -> ChildOutput {
    let mut child = child_command(test, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = read_all_in_thread(child.stdout.take().unwrap());
    let stderr = read_all_in_thread(child.stderr.take().unwrap());
    let status = wait_with_timeout(&mut child, CHILD_TIMEOUT);
    ChildOutput { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Runs an external command; `Err` carries its output when it fails or cannot start.
fn run_cmd(program: &str, args: &[&OsStr]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {args:?}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

/// Unmounts a filesystem this test mounted (and detaches its loop device) when dropped.
struct MountGuard {
    mount_point: PathBuf,
    loop_image: Option<PathBuf>,
}

impl MountGuard {
    /// `mount -t <fstype> [-o <options>] <source> <mount_point>`; `None` if it failed.
    fn mount(
        fstype: &str,
        source: &Path,
        mount_point: &Path,
        options: Option<&str>,
    ) -> Option<Self> {
        let mut args: Vec<&OsStr> = vec![OsStr::new("-t"), OsStr::new(fstype)];
        if let Some(o) = options {
            args.extend([OsStr::new("-o"), OsStr::new(o)]);
        }
        args.extend([source.as_os_str(), mount_point.as_os_str()]);
        match run_cmd("mount", &args) {
            Ok(()) => Some(MountGuard {
                mount_point: mount_point.to_path_buf(),
                loop_image: options.is_some_and(|o| o.contains("loop")).then(|| source.into()),
            }),
            Err(e) => {
                println!("NOTE: mount failed, skipping the part that needs it: {e}");
                None
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let point = self.mount_point.as_os_str();
        if let Err(e) = run_cmd("umount", &[point]) {
            eprintln!("umount failed ({e}); trying a lazy unmount");
            let _ = run_cmd("umount", &[OsStr::new("-l"), point]);
        }
        // `mount -o loop` sets autoclear, so the device is normally gone already.
        if let Some(image) = &self.loop_image {
            if let Ok(out) = Command::new("losetup").arg("-j").arg(image).output() {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some((device, _)) = line.split_once(':') {
                        let _ = run_cmd("losetup", &[OsStr::new("-d"), OsStr::new(device)]);
                    }
                }
            }
        }
    }
}

/// `chattr +i` on a directory, undone when dropped.
struct ImmutableGuard(PathBuf);

impl Drop for ImmutableGuard {
    fn drop(&mut self) {
        let _ = run_cmd("chattr", &[OsStr::new("-i"), self.0.as_os_str()]);
    }
}

/// `chmod 0o555` on a directory, back to 0o755 when dropped.
struct ReadOnlyModeGuard(PathBuf);

impl Drop for ReadOnlyModeGuard {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

fn statfs_type(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // Safety: `c` is a valid NUL-terminated path and `st` a writable statfs struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_type as u64)
}

fn available_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // Safety: as in `statfs_type`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", path.display());
    st.f_bavail * st.f_frsize
}

/// `n` keys with `prefix` that the router sends to `shard`.
fn keys_on(router: &Router, shard: usize, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("{prefix}-{i:06}").into_bytes())
        .filter(|k| router.shard_for(k) == shard)
        .take(n)
        .collect()
}

/// A value of `bytes` bytes that names its key index.
fn sized_value(i: usize, bytes: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(bytes, (i % 251) as u8);
    v
}

/// WAL segment files of shard `shard` of the database at `db`.
fn segment_count(db: &Path, shard: usize) -> usize {
    std::fs::read_dir(db.join(format!("shard-{shard:03}")))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
                .count()
        })
        .unwrap_or(0)
}

fn assert_all_present(db: &Database, acked: &[(Vec<u8>, Vec<u8>)], context: &str) {
    for (k, v) in acked {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            Some(v),
            "{context}: acknowledged key {} lost",
            String::from_utf8_lossy(k)
        );
    }
}

fn env_unsupported_text(result: lightning_db::Result<Database>, context: &str) -> String {
    match result {
        Err(e @ Error::EnvUnsupported { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("environment not supported: "), "{context}: {text}");
            text
        }
        Err(other) => panic!("{context}: expected EnvUnsupported, got {other:?} ({other})"),
        Ok(db) => panic!("{context}: expected EnvUnsupported, but the open succeeded: {db:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. io_uring denied by a seccomp filter.

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
    let _gate = shared_gate();
    run_child("io_uring_denied_by_seccomp_is_env_unsupported", "io_uring_denied")
        .assert_ok("io_uring_denied");
}

// ---------------------------------------------------------------------------------------------
// 2. RLIMIT_MEMLOCK too low for the registered Sync-mode buffers.

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
    let _gate = MEMLOCK_GATE.write().unwrap_or_else(PoisonError::into_inner);
    run_child("memlock_too_low_for_registered_buffers_is_env_unsupported", "memlock")
        .assert_ok("memlock");
}

// ---------------------------------------------------------------------------------------------
// 3. A filesystem without O_DIRECT.

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
    let _gate = shared_gate();
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

// ---------------------------------------------------------------------------------------------
// 4a. Full disk, injected: WAL segment allocation fails with ENOSPC.

const BIG: usize = 100 * 1024;

fn injected_full_disk(mode: WalSyncMode) {
    const SHARD: usize = 0;
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::new());
    plan.only_shard(SHARD);
    let config =
        LightningDbConfig { shards: 2, fault_plan: Some(plan.clone()), ..small_config(mode) };
    let db = Database::open(dir.path(), config).unwrap();
    let router = Router::new(db.shard_count() as u32);
    let keys = keys_on(&router, SHARD, "full", 60);
    let other = keys_on(&router, 1, "other", 5);
    let mut acked: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let mut next = 0usize;

    // The shard's first write creates its first segment: that allocation fails.
    plan.fail_next_segment_allocs(1);
    let v = sized_value(next, 100);
    let err = db.put(&keys[next], &v).unwrap_err();
    assert!(err.is_disk_full(), "{mode:?}: {err:?}");
    assert!(matches!(err, Error::Io { .. }), "{mode:?}: {err:?}");
    let text = err.to_string();
    assert!(text.contains("WAL segment") && text.contains("shard-000"), "{text}");
    assert_eq!(db.get(&keys[next]).unwrap(), None, "a refused put must not be visible");
    assert_eq!(segment_count(dir.path(), SHARD), 0, "a failed allocation leaves no file");
    // Another shard is unaffected; the fault is spent, so the same put now succeeds.
    db.put(&other[0], b"elsewhere").unwrap();
    acked.push((other[0].clone(), b"elsewhere".to_vec()));
    db.put(&keys[next], &v).unwrap();
    acked.push((keys[next].clone(), v));
    next += 1;

    // Fill the first segment until the shard rolls over once.
    while segment_count(dir.path(), SHARD) < 2 {
        assert!(next < 30, "{mode:?}: no rollover after {next} puts of {BIG} bytes");
        let v = sized_value(next, BIG);
        db.put(&keys[next], &v).unwrap();
        acked.push((keys[next].clone(), v));
        next += 1;
    }

    // Now the next rollover hits a "full disk", twice.
    plan.fail_next_segment_allocs(2);
    let segments_before = segment_count(dir.path(), SHARD);
    let mut errors = 0;
    while errors < 2 {
        assert!(next < keys.len(), "{mode:?}: no rollover needed a new segment");
        let v = sized_value(next, BIG);
        match db.put(&keys[next], &v) {
            Ok(()) => acked.push((keys[next].clone(), v)),
            Err(e) => {
                assert!(e.is_disk_full(), "{mode:?}: {e:?}");
                failed.push(keys[next].clone());
                errors += 1;
                // Reads keep working while writes are refused.
                assert_all_present(&db, &acked, "during the full disk");
                assert_eq!(db.get(&keys[next]).unwrap(), None);
            }
        }
        next += 1;
    }
    assert_eq!(segment_count(dir.path(), SHARD), segments_before, "no half-made segment");
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
    assert_eq!(segment_count(dir.path(), SHARD), segments_before + 1);
    assert_all_present(&db, &acked, "after the full disk");
    db.close().unwrap();

    let db =
        Database::open(dir.path(), LightningDbConfig { shards: 2, ..small_config(mode) }).unwrap();
    assert_all_present(&db, &acked, &format!("{mode:?} after reopen"));
    for k in &failed {
        assert_eq!(db.get(k).unwrap(), None, "{mode:?}: a refused put came back after reopen");
    }
    db.put(b"after reopen", b"works").unwrap();
}

#[test]
fn injected_full_disk_normal_mode_refuses_writes_then_recovers() {
    let _gate = shared_gate();
    injected_full_disk(WalSyncMode::Normal);
}

#[test]
fn injected_full_disk_sync_mode_refuses_writes_then_recovers() {
    let _gate = shared_gate();
    injected_full_disk(WalSyncMode::Sync);
}

// ---------------------------------------------------------------------------------------------
// 4b. Full disk, for real: a 16 MiB ext4 image on a loop device.

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
    let _gate = shared_gate();
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
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        fill_real_disk(&point, mode);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A path that cannot be written.

#[test]
fn unwritable_path_is_a_typed_io_error() {
    let _gate = shared_gate();
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

// ---------------------------------------------------------------------------------------------
// 6. A failed fdatasync (or durable write) poisons its shard, and only its shard.

const POISONED_SHARD: usize = 1;

fn poisoned_config(plan: &Arc<FaultPlan>, mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig { shards: 3, fault_plan: Some(plan.clone()), ..small_config(mode) }
}

fn assert_poisoned(result: lightning_db::Result<()>, what: &str) {
    match result {
        Err(e @ Error::Poisoned { shard: POISONED_SHARD }) => {
            assert!(e.to_string().contains("poisoned"), "{e}");
        }
        other => panic!("{what}: expected Poisoned {{ shard: {POISONED_SHARD} }}, got {other:?}"),
    }
}

/// Checks after the failure, common to both modes: the shard refuses every write, the others
/// accept them, reads keep working, and nothing reports success for the poisoned shard.
fn check_poisoned(
    db: &Database,
    acked: &mut Vec<(Vec<u8>, Vec<u8>)>,
    earlier_on_s: &[u8],
    on_s: &[Vec<u8>],
    off_s: &[Vec<u8>],
) {
    assert_poisoned(db.put(&on_s[0], b"after the failure"), "put");
    assert_poisoned(db.delete(earlier_on_s), "delete");
    let mut batch = WriteBatch::new();
    batch.put(&on_s[1], b"batched").unwrap();
    assert_poisoned(db.write_batch(&batch), "write_batch");
    db.put(&off_s[0], b"other shard").unwrap();
    acked.push((off_s[0].clone(), b"other shard".to_vec()));
    let mut batch = WriteBatch::new();
    batch.put(&off_s[1], b"other shard, batched").unwrap();
    db.write_batch(&batch).unwrap();
    acked.push((off_s[1].clone(), b"other shard, batched".to_vec()));
    assert_all_present(db, acked, "after poisoning");
    assert_eq!(db.get(&on_s[0]).unwrap(), None);
    assert!(db.sync().is_err(), "sync reported success with a poisoned shard");
    assert!(db.flush().is_err(), "flush reported success with a poisoned shard");
}

fn reopen_after_poison(
    dir: &Path,
    mode: WalSyncMode,
    acked: &[(Vec<u8>, Vec<u8>)],
    refused: &[Vec<u8>],
) {
    let db = Database::open(dir, LightningDbConfig { shards: 3, ..small_config(mode) }).unwrap();
    assert_all_present(&db, acked, &format!("{mode:?} after reopen"));
    for k in refused {
        assert_eq!(db.get(k).unwrap(), None, "{mode:?}: a refused write came back");
    }
    let router = Router::new(db.shard_count() as u32);
    let fresh = keys_on(&router, POISONED_SHARD, "fresh", 1);
    db.put(&fresh[0], b"works again").unwrap();
    db.sync().unwrap();
    db.close().unwrap();
}

#[test]
fn failed_fdatasync_poisons_its_shard_normal_mode() {
    let _gate = shared_gate();
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::new());
    plan.only_shard(POISONED_SHARD);
    let db = Database::open(dir.path(), poisoned_config(&plan, WalSyncMode::Normal)).unwrap();
    let router = Router::new(db.shard_count() as u32);
    let on_s = keys_on(&router, POISONED_SHARD, "s", 10);
    let off_s = keys_on(&router, 0, "o", 10);
    let mut acked = Vec::new();
    for (i, k) in on_s[..5].iter().chain(&off_s[..5]).enumerate() {
        let v = sized_value(i, 32);
        db.put(k, &v).unwrap();
        acked.push((k.clone(), v));
    }
    // Everything so far is durable, and no sync is in flight when the fault is armed.
    db.sync().unwrap();
    plan.fail_next_fdatasyncs(1);
    // Normal mode acknowledges before the sync: this put succeeds, its sync will fail.
    db.put(&on_s[5], b"acked, sync fails").unwrap();
    acked.push((on_s[5].clone(), b"acked, sync fails".to_vec()));
    let err = db.sync().unwrap_err();
    match &err {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EIO), "{err}"),
        Error::Poisoned { shard } => assert_eq!(*shard, POISONED_SHARD),
        other => panic!("expected the fdatasync error or Poisoned, got {other:?}"),
    }
    println!("NOTE: sync error was: {err}");
    check_poisoned(&db, &mut acked, &on_s[0], &on_s[6..], &off_s[5..]);
    assert_poisoned(db.close(), "close");
    reopen_after_poison(dir.path(), WalSyncMode::Normal, &acked, &on_s[6..8]);
}

#[test]
fn failed_durable_write_poisons_its_shard_sync_mode() {
    let _gate = shared_gate();
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(FaultPlan::new());
    plan.only_shard(POISONED_SHARD);
    let db = Database::open(dir.path(), poisoned_config(&plan, WalSyncMode::Sync)).unwrap();
    let router = Router::new(db.shard_count() as u32);
    let on_s = keys_on(&router, POISONED_SHARD, "s", 10);
    let off_s = keys_on(&router, 0, "o", 10);
    let mut acked = Vec::new();
    for (i, k) in on_s[..5].iter().chain(&off_s[..5]).enumerate() {
        let v = sized_value(i, 32);
        db.put(k, &v).unwrap();
        acked.push((k.clone(), v));
    }
    plan.fail_next_fdatasyncs(1);
    // Sync mode acknowledges at the durable write: that write fails, so the put does.
    let err = db.put(&on_s[5], b"never acknowledged").unwrap_err();
    match &err {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EIO), "{err}"),
        other => panic!("expected the durable write's EIO, got {other:?}"),
    }
    assert!(err.to_string().contains("shard-001"), "names the segment: {err}");
    println!("NOTE: put error was: {err}");
    // Not acknowledged, so not visible (after a reopen it may or may not be there).
    assert_eq!(db.get(&on_s[5]).unwrap(), None);
    check_poisoned(&db, &mut acked, &on_s[0], &on_s[6..], &off_s[5..]);
    assert_poisoned(db.close(), "close");
    reopen_after_poison(dir.path(), WalSyncMode::Sync, &acked, &on_s[6..8]);
}

// ---------------------------------------------------------------------------------------------
// 7. The directory lock held by another process.

fn child_lock_holder() {
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).unwrap());
    let db = Database::open(&dir, small_config(WalSyncMode::Normal)).unwrap();
    db.put(b"written-by-child", b"yes").unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    // Hold the lock until the parent closes our stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    db.close().unwrap();
    println!("{}", marker("lock_holder"));
}

#[test]
fn lock_held_by_another_process_is_locked_error() {
    if child_role().as_deref() == Some("lock_holder") {
        return child_lock_holder();
    }
    let _gate = shared_gate();
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command("lock_held_by_another_process_is_locked_error", "lock_holder")
        .env(DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = read_all_in_thread(child.stderr.take().unwrap());
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // libtest may have started the line ("test … ... ").
            Ok(line) if line.ends_with("LOCKED") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child never printed LOCKED\n--- stdout\n{}\n--- stderr\n{}",
                    seen.join("\n"),
                    stderr.join().unwrap()
                );
            }
        }
    }

    let err = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap_err();
    match &err {
        Error::Locked { path } => assert_eq!(path, &dir.path().join("LOCK")),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("already open"), "{err}");

    drop(child.stdin.take());
    let status = wait_with_timeout(&mut child, CHILD_TIMEOUT);
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        status.success() && rest.iter().any(|l| l.contains(&marker("lock_holder"))),
        "child failed ({status})\n--- stdout\n{}\n--- stderr\n{}",
        seen.iter().chain(&rest).cloned().collect::<Vec<_>>().join("\n"),
        stderr.join().unwrap()
    );

    let db = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap();
    assert_eq!(db.get(b"written-by-child").unwrap(), Some(b"yes".to_vec()));
    db.put(b"parent", b"now owns it").unwrap();
}
