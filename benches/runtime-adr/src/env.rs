//! The environment of a run: the machine description printed with every result, the scratch
//! directory (refused on tmpfs/ramfs), the WAL file preparation, and the early membarrier
//! registration glommio needs.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Res;

/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` from `<linux/membarrier.h>`.
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
/// `statfs.f_type` of tmpfs and ramfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const EXT4_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;
const BTRFS_MAGIC: i64 = 0x9123_683E;

/// What the early membarrier registration did.
#[derive(Clone, Copy, Debug)]
pub struct EarlyInit {
    /// The registration succeeded.
    pub ok: bool,
    /// How long it took.
    pub took: Duration,
}

/// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED` while it has one thread.
pub fn register_membarrier_early() -> EarlyInit {
    let t0 = Instant::now();
    // Safety: the membarrier syscall takes two plain integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0)
    };
    EarlyInit { ok: r == 0, took: t0.elapsed() }
}

/// A scratch directory removed when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// Creates `runtime-adr-<pid>` under `parent`, refusing tmpfs and ramfs.
    pub fn create(parent: &Path) -> Res<WorkDir> {
        let (magic, name) = fs_type(parent)?;
        if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
            return Err(format!(
                "{} is on {name}: glommio silently disables O_DIRECT there and our Sync WAL \
                 refuses it; pass --dir on a real disk (ext4, xfs)",
                parent.display()
            )
            .into());
        }
        let dir = parent.join(format!("runtime-adr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(WorkDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fs_type(path: &Path) -> Res<(i64, &'static str)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // Safety: statfs is plain data; zeroed is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // Safety: c is a NUL-terminated path; st is a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(
            format!("statfs {}: {}", path.display(), std::io::Error::last_os_error()).into()
        );
    }
    let magic = st.f_type as i64;
    let name = match magic {
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        EXT4_MAGIC => "ext4",
        XFS_MAGIC => "xfs",
        BTRFS_MAGIC => "btrfs",
        _ => "other",
    };
    Ok((magic, name))
}

/// Creates (or rewrites) `path` as `bytes` of written zeros, durable, with its pages dropped
/// from the page cache, so every variant overwrites allocated, written blocks with direct I/O.
pub fn prepare_wal_file(path: &Path, bytes: u64) -> Res<()> {
    let mut f: File =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    f.set_len(bytes)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    // Safety: a valid descriptor owned by f; plain values.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(
            format!("posix_fadvise DONTNEED: {}", std::io::Error::from_raw_os_error(r)).into()
        );
    }
    Ok(())
}

/// Opens the WAL file with `flags` added (e.g. `O_DIRECT | O_DSYNC`).
pub fn open_wal_file(path: &Path, flags: i32) -> Res<File> {
    Ok(OpenOptions::new().read(true).write(true).custom_flags(flags).open(path)?)
}

/// What the run was measured on.
pub struct Machine {
    date: String,
    kernel: String,
    cpus: String,
    memlock: String,
    fs: String,
    load: String,
    busy: String,
    early: EarlyInit,
}

impl Machine {
    /// Probes the machine and the scratch directory's filesystem.
    pub fn probe(dir: &Path, early: EarlyInit) -> Res<Machine> {
        let (_, fs) = fs_type(dir)?;
        let allowed = lightning_shards::internals::allowed_cpus();
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "?".into());
        let busy = busy_builds();
        Ok(Machine {
            date: utc_now(),
            kernel: kernel_release(),
            cpus: format!("{} allowed {:?} ({model})", allowed.len(), allowed),
            memlock: memlock(),
            fs: format!("{} ({fs})", dir.display()),
            load: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            busy: if busy.is_empty() { "none".into() } else { busy.join(", ") },
            early,
        })
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "date        {}", self.date)?;
        writeln!(f, "kernel      {}", self.kernel)?;
        writeln!(f, "cpus        {}", self.cpus)?;
        writeln!(f, "memlock     {}", self.memlock)?;
        writeln!(f, "scratch     {}", self.fs)?;
        writeln!(f, "loadavg     {}", self.load)?;
        writeln!(f, "builds      {}", self.busy)?;
        writeln!(f, "glommio     0.9.0, io_memory 1 MiB, Latency::Matters ingress queue")?;
        write!(
            f,
            "membarrier  early registration {} in {:.1} µs (stand-in for glommio::early_init)",
            if self.early.ok { "ok" } else { "FAILED" },
            self.early.took.as_secs_f64() * 1e6
        )
    }
}

fn kernel_release() -> String {
    // Safety: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // Safety: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "?".into();
    }
    // Safety: uname NUL-terminates release within the array.
    let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    rel.to_string_lossy().into_owned()
}

fn memlock() -> String {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Safety: r is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "?".into();
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    // Safety: geteuid has no arguments.
    let uid = unsafe { libc::geteuid() };
    format!("RLIMIT_MEMLOCK {} (hard {}), euid {uid}", show(r.rlim_cur), show(r.rlim_max))
}

/// `cargo`/`rustc` processes running now (the measurement discipline: none while measuring).
pub fn busy_builds() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(p.path().join("comm")) {
            let comm = comm.trim();
            if comm == "cargo" || comm == "rustc" {
                found.push(format!("{comm}[{pid}]"));
            }
        }
    }
    found
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}
