//! The shard's one io_uring ring: setup with the best flags the kernel has, submission,
//! reaping, and the parked wait (with a timeout for the loop's timers).
//!
//! Shard-local: created on the shard thread (required by `SINGLE_ISSUER`) and never shared.
//! With `DEFER_TASKRUN` the kernel posts completions only when this thread enters the ring
//! with `GETEVENTS`, so `reap` enters only while operations are in flight.

use std::io;
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring};

use crate::error::{Error, Result};

/// Submission queue entries per ring. In flight at once: one WAL write or a few, a sync, the
/// doorbell read; 256 leaves room for bursts.
pub const RING_ENTRIES: u32 = 256;

/// `IORING_ENTER_GETEVENTS` from the kernel's io_uring ABI.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// `user_data` of the doorbell read. It stays armed while the shard runs and is not counted
/// as in flight, so an idle, awake shard never enters the kernel just to reap.
pub const DOORBELL_TOKEN: u64 = u64::MAX;

/// The ring plus a count of operations it has in flight.
pub struct Ring {
    // Declared first so it is dropped first: the kernel is done with every buffer below
    // (and the WAL's registered buffers) before they are freed.
    ring: IoUring,
    in_flight: usize,
    doorbell_word: Box<u64>,
    /// Flags the ring was set up with, for the environment report.
    pub setup: RingSetup,
}

/// Which optional setup flags the kernel accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingSetup {
    /// `IORING_SETUP_SINGLE_ISSUER` (Linux 6.0).
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (Linux 6.1).
    pub defer_taskrun: bool,
}

impl Ring {
    /// Creates the ring on the calling thread. Tries `SINGLE_ISSUER | DEFER_TASKRUN`, then
    /// plain. io_uring refused outright (seccomp, `kernel.io_uring_disabled`) is an
    /// `Error::EnvUnsupported` that says so.
    pub fn new() -> Result<Self> {
        let tuned =
            IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(RING_ENTRIES);
        let (ring, setup) = match tuned {
            Ok(r) => (r, RingSetup { single_issuer: true, defer_taskrun: true }),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let r = IoUring::new(RING_ENTRIES).map_err(setup_error)?;
                (r, RingSetup::default())
            }
            Err(e) => return Err(setup_error(e)),
        };
        Ok(Ring { ring, in_flight: 0, doorbell_word: Box::new(0), setup })
    }

    /// Queues an SQE. When the submission queue is full, submits first.
    pub fn push(&mut self, sqe: &squeue::Entry) -> Result<()> {
        // Safety: every SQE built by this crate points at buffers owned by the shard that stay
        // alive and unmoved until its completion is reaped (see io/aligned.rs, wal/direct.rs).
        #[allow(unsafe_code)]
        let pushed = unsafe { self.ring.submission().push(sqe).is_ok() };
        if !pushed {
            self.submit()?;
            // Safety: as above.
            #[allow(unsafe_code)]
            let retry = unsafe { self.ring.submission().push(sqe) };
            retry
                .map_err(|_| Error::io("queue an io_uring SQE", "", io::Error::other("SQ full")))?;
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Queues a read of the doorbell eventfd `fd` into a word the ring owns, tagged
    /// [`DOORBELL_TOKEN`]; not counted in flight.
    pub fn arm_doorbell(&mut self, fd: std::os::unix::io::RawFd) -> Result<()> {
        let ptr: *mut u8 = (&mut *self.doorbell_word as *mut u64).cast();
        let sqe =
            io_uring::opcode::Read::new(types::Fd(fd), ptr, 8).build().user_data(DOORBELL_TOKEN);
        self.push(&sqe)?;
        self.in_flight -= 1;
        Ok(())
    }

    /// Operations submitted or queued whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Submits queued SQEs without waiting.
    pub fn submit(&mut self) -> Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(Error::io("submit to io_uring", "", e)),
            }
        }
    }

    /// Submits, and collects every completion the kernel has, without blocking. Enters the
    /// kernel only when something is in flight.
    pub fn reap(&mut self, mut on_completion: impl FnMut(u64, i32)) -> Result<()> {
        if self.in_flight > 0 || !self.ring.submission().is_empty() {
            self.enter_getevents(0)?;
        }
        self.drain(&mut on_completion);
        Ok(())
    }

    /// Blocks until at least one completion arrives or `timeout` passes, then collects.
    pub fn wait(
        &mut self,
        timeout: Option<Duration>,
        mut on_completion: impl FnMut(u64, i32),
    ) -> Result<()> {
        let result = match timeout {
            Some(t) => {
                let ts = types::Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(Error::io("wait on io_uring", "", e)),
        }
        self.drain(&mut on_completion);
        Ok(())
    }

    fn enter_getevents(&mut self, want: u32) -> Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        // Safety: no argument pointer is passed; the ring fd is owned by self.
        #[allow(unsafe_code)]
        let r = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                want,
                IORING_ENTER_GETEVENTS,
                None,
            )
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::io("reap io_uring completions", "", e)),
        }
    }

    fn drain(&mut self, on_completion: &mut impl FnMut(u64, i32)) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            if cqe.user_data() != DOORBELL_TOKEN {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            handle(&cqe, on_completion);
        }
    }

    /// Registers `bufs` as fixed buffers (index = position). Needs `RLIMIT_MEMLOCK` room unless
    /// the process has `CAP_IPC_LOCK`.
    pub fn register_buffers(&mut self, bufs: &[&crate::io::aligned::AlignedBuf]) -> Result<()> {
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
            .collect();
        // Safety: the buffers are owned by the WAL writer, which outlives the ring registration
        // (the ring is dropped first; see Shard field order) and never moves or frees them.
        #[allow(unsafe_code)]
        let r = unsafe { self.ring.submitter().register_buffers(&iovecs) };
        r.map_err(|e| memlock_error(e, bufs.iter().map(|b| b.len()).sum()))
    }
}

fn handle(cqe: &cqueue::Entry, on_completion: &mut impl FnMut(u64, i32)) {
    on_completion(cqe.user_data(), cqe.result());
}

fn setup_error(e: io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) => {
            "io_uring_setup was refused (EPERM): io_uring is disabled by the sysctl \
             kernel.io_uring_disabled, or blocked by a seccomp profile (Docker's default \
             profile blocks it; run with --security-opt seccomp=unconfined or a profile that \
             allows io_uring_setup/io_uring_enter/io_uring_register)"
        }
        Some(libc::ENOSYS) => "io_uring_setup is not available (ENOSYS): the kernel lacks io_uring or a seccomp filter hides it",
        Some(libc::ENOMEM) => {
            "io_uring_setup failed with ENOMEM: not enough locked memory for the ring; the \
             kernel counts ring memory against RLIMIT_MEMLOCK unless the process has \
             CAP_IPC_LOCK, so raise it (`ulimit -l`, or LimitMEMLOCK= in systemd)"
        }
        _ => "io_uring_setup failed",
    };
    Error::EnvUnsupported { what: format!("{why} ({e})") }
}

fn memlock_error(e: io::Error, bytes: usize) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOMEM) | Some(libc::EPERM) => Error::EnvUnsupported {
            what: format!(
                "registering {} KiB of WAL buffers with io_uring failed ({e}): RLIMIT_MEMLOCK is \
                 too low; raise it (`ulimit -l`, or LimitMEMLOCK= in systemd) or set \
                 `register_buffers: false` in the config",
                bytes / 1024
            ),
        },
        _ => Error::io("register io_uring buffers", "", e),
    }
}
