//! The storage seam: every file operation, the clock and the randomness a shard uses go through
//! one [`Storage`], so the same shard code runs on the real disk and on a simulated one.
//!
//! Two implementations:
//! - [`uring::UringStorage`]: the shard's io_uring ring for group writes and fdatasyncs, a
//!   `MAP_SHARED` mapping for the `Normal`/`Async` copy, plain system calls for the rest, the
//!   real clock. It owns every buffer and file an operation in flight points to, until the
//!   operation's completion is reaped (`docs/SAFETY.md`).
//! - `sim::SimStorage` (feature `simulation`): an in-memory disk that keeps, for each file, the
//!   bytes written and the bytes durable, and can crash, lose power, tear writes and fail
//!   operations by seed, with a clock the simulation moves.
//!
//! Shard-local: a storage is created on its shard's thread and never leaves it. This is the only
//! module of the shard crate that contains `unsafe` code (in `aligned`, `sys` and `uring`); each
//! site carries a `// Safety:` comment and is listed in `docs/SAFETY.md`.

pub mod aligned;
pub mod sys;
pub mod uring;

#[cfg(any(test, feature = "simulation"))]
pub mod sim;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::ingress::Inbox;
use aligned::AlignedBuf;

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenHow {
    /// Create a new file for reading and writing; fails if it exists.
    CreateNew,
    /// An existing file, for reading and buffered (page cache) writing.
    Buffered,
    /// An existing file written around the page cache (`O_DIRECT`; durable after an fdatasync)
    /// where the file system allows it, through the page cache where it does not (tmpfs).
    /// Writes must be 4096-aligned in offset, length and memory.
    Direct,
    /// An existing file whose writes are durable when they complete (`O_DSYNC`), and bypass
    /// the page cache when `direct` (`O_DIRECT`).
    Durable {
        /// Open with `O_DIRECT` as well.
        direct: bool,
    },
}

/// A file a storage has open. Cheap to clone: an operation in flight keeps a clone, so the
/// descriptor outlives it.
pub trait FileHandle: Clone {
    /// The path it was opened at (for error messages; renames do not change it).
    fn path(&self) -> &Path;
}

/// A writable shared mapping of a whole, preallocated segment: the `Normal`/`Async` write path.
pub trait MapSegment {
    /// Length of the mapping in bytes.
    fn len(&self) -> usize;

    /// True for an empty mapping (never: segments have a header sector).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies one WAL record into the mapping at `offset` so that a process killed at any
    /// instant leaves either the whole record or a zero header: the bytes after the first
    /// `header_bytes` first, then the header. Returns false (and writes nothing) when the
    /// record does not fit.
    fn write_record_at(&mut self, offset: usize, record: &[u8], header_bytes: usize) -> bool;

    /// Prefaults `[offset, offset + len)` writable, so the appends that follow take no page
    /// faults. A hint: doing nothing is correct.
    fn populate(&mut self, offset: usize, len: usize);

    /// Drops `[offset, offset + len)` (whole pages within it) from the process's resident
    /// memory: the bytes stay in the file and the kernel's page cache, dirty ones are written
    /// back as before, and a later access reads them again. For the appended part of a
    /// segment, which the writer never touches again. A hint: doing nothing is correct.
    fn release(&mut self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// A buffer for a write through the ring: sector-aligned, either owned or a lease of one of the
/// buffers registered with the ring ([`RegisteredPool`]). Moved into the storage when submitted
/// and handed back in the operation's [`IoDone`], so nobody can free it while the kernel may
/// read it; if that rule were ever broken, dropping it leaks the memory instead (counted in
/// [`io_leaks`]).
pub struct IoBuf {
    mem: BufMem,
    in_kernel: bool,
}

enum BufMem {
    Owned(AlignedBuf),
    Leased { pool: Arc<RegisteredPool>, index: u16 },
}

/// The memory of the buffers registered with a ring, lent out one lease per buffer. The pool
/// outlives every lease (they hold it), and the ring that registered it drops first.
pub struct RegisteredPool {
    bufs: Vec<AlignedBuf>,
    leased: Vec<AtomicBool>,
}

impl RegisteredPool {
    /// A pool of `count` zeroed buffers of `bytes` each; `None` when the allocator refuses.
    pub fn new(count: usize, bytes: usize) -> Option<Arc<RegisteredPool>> {
        let bufs = (0..count).map(|_| AlignedBuf::zeroed(bytes)).collect::<Option<Vec<_>>>()?;
        let leased = (0..count).map(|_| AtomicBool::new(false)).collect();
        Some(Arc::new(RegisteredPool { bufs, leased }))
    }

    /// The buffers, for registration.
    pub fn buffers(&self) -> &[AlignedBuf] {
        &self.bufs
    }

    /// Bytes of each buffer (0 for an empty pool).
    pub fn buffer_bytes(&self) -> usize {
        self.bufs.first().map_or(0, AlignedBuf::len)
    }

    /// Leases out a free buffer, if one is free.
    pub fn lease(self: &Arc<Self>) -> Option<IoBuf> {
        let index = self.leased.iter().position(|l| {
            l.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        })?;
        let index = u16::try_from(index).ok()?;
        Some(IoBuf { mem: BufMem::Leased { pool: self.clone(), index }, in_kernel: false })
    }
}

/// Buffers that were about to be freed while the kernel could still be using them, and were
/// leaked instead. Always 0 unless a storage broke its own rule; tests assert it.
static FREED_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// Buffers (and the files with them) leaked because their operation did not complete within
/// `uring::RING_DRAIN_TIMEOUT` (30 s) when a ring was dropped.
static LEAKED_AT_DROP: AtomicU64 = AtomicU64::new(0);

/// Counts of buffers the I/O layer leaked instead of freeing under the kernel, process-wide.
#[cfg(any(test, feature = "simulation"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoLeaks {
    /// Buffers still owned by an operation in flight when something tried to free them: a bug
    /// in the I/O layer, caught and leaked. Always 0 unless that bug exists.
    pub freed_in_flight: u64,
    /// Buffers whose operation had not completed `uring::RING_DRAIN_TIMEOUT` (30 s) after the ring
    /// was dropped (a hung device), leaked so the kernel never writes from freed memory.
    pub leaked_at_drop: u64,
}

/// The process-wide leak counters (exported for tests, feature `simulation`).
#[cfg(any(test, feature = "simulation"))]
pub fn io_leaks() -> IoLeaks {
    IoLeaks {
        freed_in_flight: FREED_IN_FLIGHT.load(Ordering::Relaxed),
        leaked_at_drop: LEAKED_AT_DROP.load(Ordering::Relaxed),
    }
}

pub(crate) fn count_leaked_at_drop(n: u64) {
    LEAKED_AT_DROP.fetch_add(n, Ordering::Relaxed);
}

impl IoBuf {
    /// A zeroed buffer of at least `bytes` (rounded up to whole sectors), not registered.
    pub fn zeroed(bytes: usize) -> Option<IoBuf> {
        AlignedBuf::zeroed(bytes).map(|buf| IoBuf { mem: BufMem::Owned(buf), in_kernel: false })
    }

    fn aligned(&self) -> &AlignedBuf {
        match &self.mem {
            BufMem::Owned(buf) => buf,
            BufMem::Leased { pool, index } => &pool.bufs[usize::from(*index)],
        }
    }

    /// Length in bytes (a multiple of the sector size).
    pub fn len(&self) -> usize {
        self.aligned().len()
    }

    /// Always false: buffers hold at least one sector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.aligned().as_slice()
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.mem {
            BufMem::Owned(buf) => buf.as_mut_slice(),
            // The lease is exclusive: the pool hands each index to one IoBuf at a time.
            BufMem::Leased { pool, index } => pool.bufs[usize::from(*index)].leased_mut_slice(),
        }
    }

    /// The index of the registered buffer this leases, if it is one.
    pub fn fixed_index(&self) -> Option<u16> {
        match &self.mem {
            BufMem::Owned(_) => None,
            BufMem::Leased { index, .. } => Some(*index),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.aligned().as_ptr()
    }

    /// Marks the buffer as pointed to by an operation in the kernel (or back in our hands).
    pub(crate) fn set_in_kernel(&mut self, in_kernel: bool) {
        self.in_kernel = in_kernel;
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if self.in_kernel {
            // Never free memory the kernel may still read: leak it, count it, say so.
            FREED_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
            log::error!("an I/O buffer was dropped while its write was in flight; leaking it");
            let mem = std::mem::replace(&mut self.mem, BufMem::Owned(AlignedBuf::empty()));
            std::mem::forget(mem);
            return;
        }
        if let BufMem::Leased { pool, index } = &self.mem {
            pool.leased[usize::from(*index)].store(false, Ordering::Release);
        }
    }
}

/// A completed asynchronous operation.
pub struct IoDone {
    /// The token it was submitted with.
    pub token: u64,
    /// Bytes transferred, or the negated errno (as the kernel reports it).
    pub result: i32,
    /// The buffer a write was submitted with.
    pub buf: Option<IoBuf>,
}

/// Reads of one file that any thread may make (tree pages: caller threads read them while the
/// shard thread writes others). Offsets and lengths are multiples of 4096.
pub trait ReadAt: Send + Sync {
    /// Exactly `len` bytes from `offset` (an error past the end of the file).
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;

    /// Each request `(offset, len)` as [`read_at`](Self::read_at) answers it, in order. The
    /// real disk keeps them in flight together (the device queue fills); by default one at a
    /// time.
    fn read_many(&self, reqs: &[(u64, usize)]) -> Vec<io::Result<Vec<u8>>> {
        reqs.iter().map(|&(offset, len)| self.read_at(offset, len)).collect()
    }

    /// The open file and whether it is `O_DIRECT`, when reads of it may join a batch across
    /// files ([`read_across`]); `None` (the default) keeps each reader's reads to itself.
    fn file(&self) -> Option<(&std::fs::File, bool)> {
        None
    }
}

/// One reader's part of a [`read_across`] batch: the reader and its `(offset, len)` requests.
pub type ReadGroup<'a> = (&'a dyn ReadAt, Vec<(u64, usize)>);

/// Reads of several files in one batch: each group is a reader and its `(offset, len)`
/// requests. Answers per group, in order. When every reader has a real file the reads are in
/// flight together; otherwise each reader reads its own with `read_many`.
pub fn read_across(groups: &[ReadGroup<'_>]) -> Vec<Vec<io::Result<Vec<u8>>>> {
    let files: Option<Vec<(&std::fs::File, bool)>> = groups.iter().map(|(r, _)| r.file()).collect();
    let Some(files) = files else {
        return groups.iter().map(|(r, reqs)| r.read_many(reqs)).collect();
    };
    let reads: Vec<uring::batch::FileRead<'_>> = groups
        .iter()
        .zip(&files)
        .flat_map(|((_, reqs), &(file, direct))| {
            reqs.iter().map(move |&(offset, len)| uring::batch::FileRead {
                file,
                direct,
                offset,
                len,
            })
        })
        .collect();
    let mut answers = uring::batch::read_files(&reads).into_iter();
    groups.iter().map(|(_, reqs)| answers.by_ref().take(reqs.len()).collect()).collect()
}

/// The one interface between a shard and the outside world: files, the clock, randomness.
///
/// File operations return `std::io::Result`; the caller wraps errors with what it was doing
/// and the path. Asynchronous operations (group writes, fdatasyncs) complete through [`reap`]
/// and [`park`] as [`IoDone`]s tagged with the caller's token.
///
/// [`reap`]: Storage::reap
/// [`park`]: Storage::park
pub trait Storage {
    /// An open file.
    type File: FileHandle;
    /// A shared mapping of a file.
    /// `Send`: it lives under the shard's commit lock, which caller threads take.
    type Map: MapSegment + Send + 'static;

    /// The shard's clock.
    fn now(&self) -> Instant;
    /// The ring flags the kernel accepted, for a storage on a real ring.
    fn ring_setup(&self) -> Option<uring::RingSetup> {
        None
    }
    /// The shard's randomness (seeded in a simulation, so one seed gives one run).
    fn random_u64(&mut self) -> u64;

    /// Creates `dir` and its parents.
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes of a file from `offset` (fewer at its end).
    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Opens a file.
    fn open(&mut self, path: &Path, how: OpenHow) -> io::Result<Self::File>;
    /// Reserves `bytes` of disk for `file` and extends it to that length.
    fn allocate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()>;
    /// Writes `bytes` at `offset`, blocking (segment creation only, never on the hot path).
    fn write_at(&mut self, file: &Self::File, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Sets `file`'s length to `bytes` (a tree's compaction gives its free tail back).
    fn truncate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()>;
    /// fdatasync, blocking (start-up and segment creation only).
    fn sync_file(&mut self, file: &Self::File) -> io::Result<()>;
    /// Renames a file (atomically replacing nothing: `to` must not exist).
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&mut self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries durable (after creating, renaming or removing a file in it).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Bytes free for an unprivileged writer on the filesystem holding `dir`.
    fn free_bytes(&mut self, dir: &Path) -> io::Result<u64>;
    /// Checks that `dir` accepts `O_DIRECT` writes (`Sync` mode with `direct_io`).
    fn probe_direct_io(&mut self, dir: &Path) -> Result<()>;
    /// Maps the first `len` bytes of `file` shared and writable.
    fn map(&mut self, file: &Self::File, len: usize) -> io::Result<Self::Map>;
    /// A reader of `path` for any thread (`O_DIRECT` where the file system has it).
    fn shared_reader(&mut self, path: &Path) -> io::Result<Arc<dyn ReadAt>>;

    /// A buffer for a write of `bytes`: a lease of a registered one when one is free and big
    /// enough (dropping the lease returns it), an owned one otherwise.
    fn buffer(&mut self, bytes: usize) -> Option<IoBuf>;
    /// Queues a write of `buf[..len]` at `offset`. The storage owns `buf` until the
    /// operation's completion hands it back.
    fn submit_write(
        &mut self,
        file: &Self::File,
        offset: u64,
        buf: IoBuf,
        len: usize,
        token: u64,
    ) -> Result<()>;
    /// Queues an fdatasync of `file`.
    fn submit_sync(&mut self, file: &Self::File, token: u64) -> Result<()>;
    /// Asynchronous operations submitted whose completion has not been handed out.
    fn in_flight(&self) -> usize;
    /// Submits what is queued and collects finished operations into `out`, without blocking.
    fn reap(&mut self, out: &mut Vec<IoDone>) -> Result<()>;
    /// Blocks until an operation finishes, `inbox`'s doorbell rings, or `timeout` passes, and
    /// collects finished operations into `out`.
    fn park(
        &mut self,
        inbox: &Inbox,
        timeout: Option<Duration>,
        out: &mut Vec<IoDone>,
    ) -> Result<()>;
}
