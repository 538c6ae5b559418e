//! Helpers shared by the hostile-environment test files (`tests/env_*.rs`): re-executing the
//! test binary as a child, root-only setup undone by guards, filesystem queries, and key
//! routing. Caller-side only: everything here runs on the test's own thread or in a child
//! process it waits for.
//!
//! Process-wide state (seccomp filters, rlimits, capabilities) is changed only in re-executed
//! child processes: the test binary runs itself with `--exact <test>` and [`ROLE_ENV`] set, and
//! the same `#[test]` function takes the child branch. A child therefore runs the binary it was
//! started from, so a scenario's child branch and its parent test must live in the same file.
//! Cases that need root (mounts, `chattr`) print a note and check what they can when not run as
//! root.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lightning_db::router::Router;
use lightning_db::{Database, Error};

/// Set in a re-executed child: which child branch to run.
pub const ROLE_ENV: &str = "LIGHTNING_DB_HOSTILE_CHILD";
/// Set in a re-executed child that needs a directory from its parent.
pub const DIR_ENV: &str = "LIGHTNING_DB_HOSTILE_DIR";
/// Longest a child may run before it is killed and the test fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Child processes.

pub fn child_role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// Without CAP_IPC_LOCK the kernel charges io_uring rings and registered buffers to the *user*
/// (across processes) against each process's RLIMIT_MEMLOCK. The memlock child runs with a
/// tiny limit, so while it runs no other test may hold a database open.
///
/// The gate is a `static`, so each test binary has its own: it orders tests *within* one
/// binary only. `tests/env_memlock.rs` holds it exclusively; any test added to that file that
/// opens a database must hold it shared. Across binaries nothing is needed: `cargo test` runs
/// test binaries one after another, which is why the memlock scenario has a binary to itself.
static MEMLOCK_GATE: RwLock<()> = RwLock::new(());

/// Held by a test that opens databases in a binary that also runs the memlock child.
pub fn shared_gate() -> RwLockReadGuard<'static, ()> {
    MEMLOCK_GATE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held by the memlock test while its child runs.
pub fn exclusive_gate() -> RwLockWriteGuard<'static, ()> {
    MEMLOCK_GATE.write().unwrap_or_else(PoisonError::into_inner)
}

/// The line a child prints when every check passed.
pub fn marker(role: &str) -> String {
    format!("CHILD-OK {role}")
}

pub fn is_root() -> bool {
    // Safety: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// This test binary, told to run only `test` with the child branch `role`.
pub fn child_command(test: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]).env(ROLE_ENV, role);
    cmd
}

pub fn read_all_in_thread(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child`, killing it (and failing the test) after `limit`.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
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

pub struct ChildOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ChildOutput {
    /// Asserts the child exited 0 and printed its success marker; echoes its notes.
    pub fn assert_ok(&self, role: &str) {
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
pub fn run_child(test: &str, role: &str) -> ChildOutput {
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

// ---------------------------------------------------------------------------------------------
// External commands and root-only setup, undone by guards.

/// Runs an external command; `Err` carries its output when it fails or cannot start.
pub fn run_cmd(program: &str, args: &[&OsStr]) -> Result<(), String> {
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
pub struct MountGuard {
    mount_point: PathBuf,
    loop_image: Option<PathBuf>,
}

impl MountGuard {
    /// `mount -t <fstype> [-o <options>] <source> <mount_point>`; `None` if it failed.
    pub fn mount(
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
pub struct ImmutableGuard(pub PathBuf);

impl Drop for ImmutableGuard {
    fn drop(&mut self) {
        let _ = run_cmd("chattr", &[OsStr::new("-i"), self.0.as_os_str()]);
    }
}

/// `chmod 0o555` on a directory, back to 0o755 when dropped.
pub struct ReadOnlyModeGuard(pub PathBuf);

impl Drop for ReadOnlyModeGuard {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

// ---------------------------------------------------------------------------------------------
// Filesystem queries.

pub fn statfs_type(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // Safety: `c` is a valid NUL-terminated path and `st` a writable statfs struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_type as u64)
}

pub fn available_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // Safety: as in `statfs_type`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", path.display());
    st.f_bavail * st.f_frsize
}

// ---------------------------------------------------------------------------------------------
// Keys, values and checks.

/// `n` keys with `prefix` that the router sends to `shard`.
pub fn keys_on(router: &Router, shard: usize, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("{prefix}-{i:06}").into_bytes())
        .filter(|k| router.shard_for(k) == shard)
        .take(n)
        .collect()
}

/// A value of `bytes` bytes that names its key index.
pub fn sized_value(i: usize, bytes: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(bytes, (i % 251) as u8);
    v
}

/// WAL segment files of shard `shard` of the database at `db`.
pub fn segment_count(db: &Path, shard: usize) -> usize {
    std::fs::read_dir(db.join(format!("shard-{shard:03}")))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
                .count()
        })
        .unwrap_or(0)
}

pub fn assert_all_present(db: &Database, acked: &[(Vec<u8>, Vec<u8>)], context: &str) {
    for (k, v) in acked {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            Some(v),
            "{context}: acknowledged key {} lost",
            String::from_utf8_lossy(k)
        );
    }
}

pub fn env_unsupported_text(result: lightning_db::Result<Database>, context: &str) -> String {
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
