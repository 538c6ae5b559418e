//! The shard's one io_uring ring, and the owner of everything its operations point to.
//!
//! Shard-local: created on the shard thread (required by `SINGLE_ISSUER`) and never shared.
//! With `DEFER_TASKRUN` the kernel posts completions only when this thread enters the ring with
//! `GETEVENTS`, so `reap` enters only while operations are in flight.
//!
//! Invariant (the reason this type exists): every buffer, file descriptor and word an entry in
//! the ring points to is owned by the ring's slot for that entry from the moment it is pushed
//! until its completion is reaped. Nobody else can free them, and dropping the ring first waits
//! for every operation to complete (at most [`RING_DRAIN_TIMEOUT`]); whatever is still in flight
//! after that is leaked, never freed.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::RealFile;
use crate::error::{Error, Result};
use crate::io::aligned::AlignedBuf;
use crate::io::sys::EventFd;
use crate::io::{count_leaked_at_drop, IoBuf, IoDone};

/// Submission queue entries per ring. In flight at once: a few WAL writes, a few syncs, the
/// doorbell read; 256 leaves room for bursts.
pub const RING_ENTRIES: u32 = 256;

/// How long dropping a ring waits for operations still in flight before it leaks their buffers
/// and files: a write or fdatasync that has not completed in this long is on a hung device.
pub const RING_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one wait of the drain loop blocks.
const DRAIN_STEP: Duration = Duration::from_millis(100);

/// `IORING_ENTER_GETEVENTS` from the kernel's io_uring ABI.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// `user_data` of an `ASYNC_CANCEL` entry: owns nothing, has no slot.
const CANCEL_USER_DATA: u64 = u64::MAX;

/// What the kernel may touch while an operation is in flight.
enum Holds {
    /// A write: its buffer, and its file (kept open: its descriptor number is in the entry).
    Write { buf: IoBuf, _file: Rc<RealFile> },
    /// An fdatasync: its file (kept open likewise).
    Sync { _file: Rc<RealFile> },
    /// The doorbell read: the word it reads into and the eventfd.
    Doorbell {
        /// Written by the kernel through a raw pointer, never read by Rust code.
        _word: Box<UnsafeCell<u64>>,
        _fd: Arc<EventFd>,
    },
}

struct Slot {
    token: u64,
    holds: Holds,
}

/// The ring plus the slots of its operations in flight.
pub struct Ring {
    ring: IoUring,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Operations in flight, the doorbell read excluded.
    in_flight: usize,
    /// Slot of the armed doorbell read, if any.
    doorbell: Option<usize>,
    /// Flags the kernel accepted.
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
        Ok(Ring { ring, slots: Vec::new(), free: Vec::new(), in_flight: 0, doorbell: None, setup })
    }

    /// Queues `sqe`, submitting first when the submission queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer, descriptor and word `sqe` points to must stay valid and unmoved until its
    /// completion is reaped by this ring: the caller has stored them in the slot `sqe`'s
    /// `user_data` names (heap allocations, so moving the owner does not move them), and only
    /// [`Ring::drain_cq`] takes them out, after the kernel reported the completion.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> Result<()> {
        // Safety: the caller's contract, passed on.
        if unsafe { self.ring.submission().push(sqe) }.is_ok() {
            return Ok(());
        }
        self.submit()?;
        // Safety: as above.
        unsafe { self.ring.submission().push(sqe) }
            .map_err(|_| Error::io("queue an io_uring entry", "", io::Error::other("SQ full")))
    }

    fn take_slot(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn release_slot(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(i)?.take();
        if slot.is_some() {
            self.free.push(i);
        }
        slot
    }

    /// Pushes `sqe` for an operation whose memory `holds` owns; on failure the slot is released
    /// (the entry never reached the kernel) and a write's buffer is ours again.
    fn start(&mut self, token: u64, holds: Holds, sqe: squeue::Entry) -> Result<usize> {
        let index = self.take_slot(Slot { token, holds });
        let sqe = sqe.user_data(index as u64);
        // Safety: every pointer in `sqe` is a heap address owned by slot `index` (the buffer of
        // an IoBuf, the descriptor of a reference-counted file, a boxed word): moving `holds`
        // into the slot did not move them, and only `drain_cq` empties the slot.
        match unsafe { self.push(&sqe) } {
            Ok(()) => Ok(index),
            Err(e) => {
                if let Some(Slot { holds: Holds::Write { mut buf, .. }, .. }) =
                    self.release_slot(index)
                {
                    buf.set_in_kernel(false);
                }
                Err(e)
            }
        }
    }

    /// Queues a write of `buf[..len]` at `offset` of `file`; `buf` and `file` belong to the
    /// ring until the completion hands the buffer back.
    pub fn write(
        &mut self,
        file: Rc<RealFile>,
        offset: u64,
        mut buf: IoBuf,
        len: usize,
        token: u64,
    ) -> Result<()> {
        let len = u32::try_from(len.min(buf.len())).unwrap_or(u32::MAX);
        let fd = types::Fd(file.file.as_raw_fd());
        let sqe = match buf.fixed_index() {
            Some(index) => {
                opcode::WriteFixed::new(fd, buf.as_ptr(), len, index).offset(offset).build()
            }
            None => opcode::Write::new(fd, buf.as_ptr(), len).offset(offset).build(),
        };
        buf.set_in_kernel(true);
        self.start(token, Holds::Write { buf, _file: file }, sqe)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Queues an fdatasync of `file`.
    pub fn fdatasync(&mut self, file: Rc<RealFile>, token: u64) -> Result<()> {
        let sqe = opcode::Fsync::new(types::Fd(file.file.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        self.start(token, Holds::Sync { _file: file }, sqe)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Arms a read of the doorbell eventfd, unless one is armed already. Not counted in flight,
    /// so an idle, awake shard never enters the kernel just to reap.
    pub fn arm_doorbell(&mut self, fd: &Arc<EventFd>) -> Result<()> {
        if self.doorbell.is_some() {
            return Ok(());
        }
        let word = Box::new(UnsafeCell::new(0u64));
        let sqe = opcode::Read::new(types::Fd(fd.fd().as_raw_fd()), word.get().cast(), 8).build();
        let index = self.start(0, Holds::Doorbell { _word: word, _fd: fd.clone() }, sqe)?;
        self.doorbell = Some(index);
        Ok(())
    }

    /// Operations submitted or queued whose completion has not been reaped (doorbell excluded).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Submits queued entries without waiting.
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
    pub fn reap(&mut self, out: &mut Vec<IoDone>) -> Result<()> {
        if self.in_flight > 0 || !self.ring.submission().is_empty() {
            self.enter_getevents()?;
        }
        self.drain_cq(out);
        Ok(())
    }

    /// Blocks until at least one completion arrives or `timeout` passes, then collects.
    pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<IoDone>) -> Result<()> {
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
        self.drain_cq(out);
        Ok(())
    }

    fn enter_getevents(&mut self) -> Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        // Safety: no argument pointer is passed; the ring fd is owned by self.
        let r = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                to_submit,
                0,
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

    /// Hands every completed operation's token, result and buffer out, and frees its slot.
    fn drain_cq(&mut self, out: &mut Vec<IoDone>) {
        let mut completed = Vec::new();
        {
            let mut cq = self.ring.completion();
            cq.sync();
            for cqe in &mut cq {
                completed.push((cqe.user_data(), cqe.result()));
            }
        }
        for (user_data, result) in completed {
            if user_data == CANCEL_USER_DATA {
                continue;
            }
            let index = user_data as usize;
            let Some(slot) = self.release_slot(index) else { continue };
            match slot.holds {
                Holds::Doorbell { .. } => self.doorbell = None,
                Holds::Write { mut buf, .. } => {
                    self.in_flight -= 1;
                    buf.set_in_kernel(false);
                    out.push(IoDone { token: slot.token, result, buf: Some(buf) });
                }
                Holds::Sync { .. } => {
                    self.in_flight -= 1;
                    out.push(IoDone { token: slot.token, result, buf: None });
                }
            }
        }
    }

    /// Registers `bufs` as fixed buffers (index = position). Needs `RLIMIT_MEMLOCK` room unless
    /// the process has `CAP_IPC_LOCK`.
    pub fn register_buffers(&mut self, bufs: &[&AlignedBuf]) -> Result<()> {
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
            .collect();
        // Safety: the buffers are owned by the storage that owns this ring; it declares the
        // ring first, so the ring (and its registration) is dropped before them, and a
        // registered buffer lent out is only ever written to through an IoBuf it owns.
        let r = unsafe { self.ring.submitter().register_buffers(&iovecs) };
        r.map_err(|e| memlock_error(e, bufs.iter().map(|b| b.len()).sum()))
    }

    fn occupied(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

impl Drop for Ring {
    /// Waits for every operation in flight, so nothing the kernel may touch is freed under it;
    /// past [`RING_DRAIN_TIMEOUT`] the rest is leaked.
    fn drop(&mut self) {
        if let Some(index) = self.doorbell {
            let cancel = opcode::AsyncCancel::new(index as u64).build().user_data(CANCEL_USER_DATA);
            // Safety: a cancel entry points to no memory.
            let _ = unsafe { self.push(&cancel) };
        }
        let deadline = Instant::now() + RING_DRAIN_TIMEOUT;
        let mut done = Vec::new();
        while self.occupied() > 0 && Instant::now() < deadline {
            if self.wait(Some(DRAIN_STEP), &mut done).is_err() {
                break;
            }
            done.clear(); // buffers handed back are ours again: freeing them is fine
        }
        let left = self.occupied();
        if left > 0 {
            log::error!(
                "{left} io_uring operations still in flight {RING_DRAIN_TIMEOUT:?} after the \
                 ring was dropped; leaking their buffers and files instead of freeing them"
            );
            count_leaked_at_drop(left as u64);
            for slot in self.slots.drain(..).flatten() {
                std::mem::forget(slot);
            }
        }
    }
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
