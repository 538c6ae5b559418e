//! The few system calls std does not offer, through `rustix` (no `unsafe` here): CPU affinity,
//! the current CPU, the eventfd doorbell, fallocate, fdatasync, free space, polling.
//!
//! Shared: stateless functions, callable from any thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::FallocateFlags;
use rustix::thread::CpuSet;

/// The CPUs this process may run on, in ascending order (its affinity mask).
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= CpuSet::MAX_CPU {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// The CPU the calling thread runs on right now (a vDSO call, ~20 ns).
pub fn current_cpu() -> Option<usize> {
    Some(rustix::thread::sched_getcpu())
}

/// A non-blocking eventfd: the doorbell a caller rings to wake a parked shard.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

/// The bytes one `write(2)` to an eventfd adds to its counter: the value 1 in the host's byte
/// order, which is what the kernel reads (not an on-disk format).
const EVENTFD_ONE: [u8; 8] = if cfg!(target_endian = "little") {
    [1, 0, 0, 0, 0, 0, 0, 0]
} else {
    [0, 0, 0, 0, 0, 0, 0, 1]
};

impl EventFd {
    /// Creates an eventfd with counter 0.
    pub fn new() -> io::Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(EventFd(fd))
    }

    /// Adds 1 to the counter, waking a reader. EAGAIN (counter saturated) is fine: the reader
    /// is being woken anyway.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.0, &EVENTFD_ONE);
    }

    /// Resets the counter to 0 (a non-blocking read; nothing to read is fine).
    pub fn clear(&self) {
        let mut word = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut word);
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Blocks until the counter is non-zero or `timeout` passes (`None`: forever).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let ts = timeout.map(|t| rustix::event::Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) => Ok(()),
            Err(e) if e == rustix::io::Errno::INTR => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// fdatasync(2), blocking (start-up and segment creation, never on the hot path).
pub fn fdatasync(file: &File) -> io::Result<()> {
    rustix::fs::fdatasync(file).map_err(io::Error::from)
}

/// Reserves `len` bytes of disk for `file` (fallocate mode 0: allocates and extends).
pub fn fallocate(file: &File, len: u64) -> io::Result<()> {
    rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Makes a directory's entries durable (after creating or renaming a file in it).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_and_cpu() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(current_cpu().is_some());
        assert!(pin_current_thread(usize::MAX).is_err());
    }

    #[test]
    fn eventfd_rings_and_clears() {
        let e = EventFd::new().unwrap();
        e.ring();
        e.wait(Some(Duration::from_secs(5))).unwrap();
        e.clear();
        e.wait(Some(Duration::from_millis(1))).unwrap(); // times out quietly
    }

    #[test]
    fn free_space_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
