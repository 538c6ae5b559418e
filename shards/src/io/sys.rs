//! Thin, checked wrappers over the few system calls std does not offer: CPU affinity, the
//! current CPU, eventfd, fallocate, fdatasync.
//!
//! Shared: stateless functions, callable from any thread. Every `unsafe` block here passes only
//! plain values or pointers to locals the call does not retain.

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The CPUs this process may run on, in ascending order (its affinity mask).
#[allow(unsafe_code)]
pub fn allowed_cpus() -> Vec<usize> {
    // Safety: cpu_set_t is plain data; zeroed is its empty value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Safety: set is a valid, writable cpu_set_t of the size passed.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // Safety: CPU_ISSET only reads the set.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Pins the calling thread to `cpu`.
#[allow(unsafe_code)]
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // Safety: as in allowed_cpus.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Safety: CPU_SET writes inside the set; cpu is bounds-checked by the macro's callers here.
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // Safety: set is a valid cpu_set_t.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

/// The CPU the calling thread runs on right now (a vDSO call, ~20 ns).
#[allow(unsafe_code)]
pub fn current_cpu() -> Option<usize> {
    // Safety: no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// A non-blocking eventfd: the doorbell a caller rings to wake a parked shard.
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates an eventfd with counter 0.
    #[allow(unsafe_code)]
    pub fn new() -> io::Result<Self> {
        // Safety: plain flags.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // Safety: fd was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds 1 to the counter, waking a reader. EAGAIN (counter saturated) is fine: the reader
    /// is being woken anyway.
    #[allow(unsafe_code)]
    pub fn ring(&self) {
        let one: u64 = 1;
        // Safety: writes 8 bytes from a local.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The raw descriptor, for an io_uring read SQE.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// fdatasync(2) outside the ring (used at start-up and shutdown, never on the hot path).
#[allow(unsafe_code)]
pub fn fdatasync(file: &File) -> io::Result<()> {
    // Safety: a valid descriptor owned by `file`.
    check(unsafe { libc::fdatasync(file.as_raw_fd()) }).map(|_| ())
}

/// Reserves `len` bytes of disk for `file` (fallocate mode 0: allocates and extends).
#[allow(unsafe_code)]
pub fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // Safety: a valid descriptor; plain values.
    check(unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) }).map(|_| ())
}

/// Makes a directory's entries durable (after creating or renaming a file in it).
pub fn fsync_dir(dir: &std::path::Path) -> io::Result<()> {
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
    fn eventfd_rings() {
        let e = EventFd::new().unwrap();
        e.ring();
        assert!(e.raw() >= 0);
    }
}
