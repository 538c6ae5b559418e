//! Candidate "ours": a real `lightning_shards` shard for the ingress measurements, and a ring
//! set up like the shard's (`SINGLE_ISSUER | DEFER_TASKRUN`, a registered buffer) for the WAL
//! append. The shard crate no longer lends out its raw ring (pushing entries is `unsafe`
//! there), so this file keeps a small one of its own, `BenchRing`, with the same SQEs.
//!
//! `Request::Sync` on a `WalSyncMode::Normal` shard that has written nothing completes in the
//! loop turn that drains it: the shard acknowledges a `sync()` at once when the WAL's durable
//! LSN already covers what was placed, and issues no fdatasync. The round trip is therefore
//! ingress → loop turn → reply, nothing else.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};
use lightning_shards::internals::{Request, Responder, WaitPolicy};
use lightning_shards::{Limits, ShardConfig, ShardHandle, WalSyncMode};

use crate::caller::Target;
use crate::env::open_wal_file;
use crate::report::{Figure, Sample};
use crate::Res;

/// Size of the preallocated WAL file; appends wrap around inside it.
pub const WAL_FILE_BYTES: u64 = 16 << 20;
/// One append.
pub const APPEND_BYTES: usize = 4096;
/// Appends before recording.
pub const WAL_WARMUP: u64 = 20;

const TOKEN_WRITE: u64 = 1;
const TOKEN_SYNC: u64 = 2;

/// A running shard.
pub struct OurShard {
    handle: ShardHandle,
    startup: Duration,
}

impl OurShard {
    /// Starts shard 0 in `dir`, pinned to `cpu`, `WalSyncMode::Normal`, spinning `spin_us`
    /// before parking.
    pub fn start(dir: &Path, cpu: usize, spin_us: u64) -> Res<OurShard> {
        let config = ShardConfig {
            shard_id: 0,
            dir: dir.to_path_buf(),
            cpu: Some(cpu),
            wal_sync_mode: WalSyncMode::Normal,
            sync_interval_ms: 1000,
            flush_interval_ms: 1000,
            wal_segment_bytes: 16 << 20,
            direct_io: true,
            register_buffers: false,
            ingress_queue_depth: 1024,
            ingress_batch_max: 256,
            spin_before_park_us: spin_us,
            stall_threshold_ms: 10,
            limits: Limits {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                max_batch_bytes: 4 << 20,
            },
        };
        let t0 = Instant::now();
        let handle = ShardHandle::start(config)?;
        let shard = OurShard { handle, startup: Duration::ZERO };
        // Start-up ends with the first reply.
        let done = std::sync::Arc::new(lightning_shards::internals::Completion::new(1));
        shard.send(Request::Sync { done: Responder::new(done.clone()) })?;
        done.wait(&shard.policy())?;
        let startup = t0.elapsed();
        if shard.handle.report().pinned_cpu != Some(cpu) {
            return Err(format!("our shard could not pin itself to CPU {cpu}").into());
        }
        Ok(OurShard { startup, ..shard })
    }

    /// Spawn to first reply.
    pub fn startup_figure(&self) -> Figure {
        let r = self.handle.report().ring.unwrap_or_default();
        let name = format!(
            "ours(single_issuer={},defer_taskrun={})",
            u8::from(r.single_issuer),
            u8::from(r.defer_taskrun)
        );
        Figure::single("startup", &name, self.startup)
    }

    /// Stops the shard and joins its thread.
    pub fn shutdown(&self) -> Res<()> {
        Ok(self.handle.shutdown()?)
    }
}

impl Target for OurShard {
    fn candidate(&self) -> &str {
        "ours"
    }
    fn send(&self, req: Request) -> Res<()> {
        Ok(self.handle.send_request(req)?)
    }
    fn policy(&self) -> WaitPolicy {
        self.handle.reply_wait_policy()
    }
}

/// How our ring makes a 4 KiB append durable.
#[derive(Clone, Copy, Debug)]
pub enum WalVariant {
    /// `O_DIRECT | O_DSYNC` file, one `WriteFixed` (what our `Sync` WAL does).
    Dsync,
    /// `O_DIRECT` file, `WriteFixed` linked (`IO_LINK`) to `Fsync(DATASYNC)`: one submit, one
    /// wait for both.
    Linked,
    /// `O_DIRECT` file, `WriteFixed`, wait, then `Fsync(DATASYNC)`, wait: the same two steps as
    /// glommio's `write_at` + `fdatasync`.
    WriteThenSync,
}

impl WalVariant {
    /// Every variant, in report order.
    pub const ALL: [WalVariant; 3] =
        [WalVariant::Dsync, WalVariant::Linked, WalVariant::WriteThenSync];

    /// (measurement, candidate) in the report.
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            WalVariant::Dsync => ("wal_4k_dsync", "ours:O_DIRECT|O_DSYNC"),
            WalVariant::Linked => ("wal_4k_write+fdatasync", "ours:write-IO_LINK-fsync"),
            WalVariant::WriteThenSync => ("wal_4k_write+fdatasync", "ours:write,wait,fsync,wait"),
        }
    }

    fn flags(self) -> i32 {
        match self {
            WalVariant::Dsync => libc::O_DIRECT | libc::O_DSYNC,
            WalVariant::Linked | WalVariant::WriteThenSync => libc::O_DIRECT,
        }
    }
}

/// `iters` 4 KiB appends at queue depth 1 through our ring, on a thread pinned to `cpu`.
pub fn wal(path: &Path, variant: WalVariant, cpu: usize, iters: u64, max: Duration) -> Res<Sample> {
    let path = path.to_path_buf();
    let worker = std::thread::Builder::new().name("ours-wal".into()).spawn(move || {
        lightning_shards::internals::pin_current_thread(cpu)?;
        wal_on_this_thread(&path, variant, iters, max)
    })?;
    worker.join().map_err(|_| "our WAL thread panicked")?
}

fn wal_on_this_thread(path: &Path, variant: WalVariant, iters: u64, max: Duration) -> Res<Sample> {
    // Declared before the ring so that the ring (and its buffer registration) drops first.
    let mut buf = AlignedBuf::zeroed(APPEND_BYTES).ok_or("allocate the append buffer")?;
    buf.as_mut_slice().fill(0x5a);
    let file = open_wal_file(path, variant.flags())?;
    let mut ring = BenchRing::new()?;
    ring.register(&buf)?;
    let fd = types::Fd(file.as_raw_fd());
    let slots = WAL_FILE_BYTES / APPEND_BYTES as u64;
    let mut sample = Sample::new()?;
    let mut started = Instant::now();
    for i in 0..WAL_WARMUP + iters {
        if i == WAL_WARMUP {
            started = Instant::now();
        }
        let offset = (i % slots) * APPEND_BYTES as u64;
        let write = opcode::WriteFixed::new(fd, buf.as_ptr(), APPEND_BYTES as u32, 0)
            .offset(offset)
            .build()
            .user_data(TOKEN_WRITE);
        let sync =
            opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(TOKEN_SYNC);
        let t0 = Instant::now();
        match variant {
            WalVariant::Dsync => {
                // Safety (each push): the entries point to `buf` (registered, alive and unmoved
                // until after the ring is dropped) and `file` (open for the whole loop), and
                // `wait_for` reaps every completion before the next iteration.
                unsafe { ring.push(&write)? };
                wait_for(&mut ring, 1)?;
            }
            WalVariant::Linked => {
                unsafe { ring.push(&write.flags(squeue::Flags::IO_LINK))? };
                unsafe { ring.push(&sync)? };
                wait_for(&mut ring, 2)?;
            }
            WalVariant::WriteThenSync => {
                unsafe { ring.push(&write)? };
                wait_for(&mut ring, 1)?;
                unsafe { ring.push(&sync)? };
                wait_for(&mut ring, 1)?;
            }
        }
        let took = t0.elapsed();
        if i >= WAL_WARMUP {
            sample.record(took, 1);
            if started.elapsed() > max {
                break;
            }
        }
    }
    Ok(sample)
}

/// Blocks until `n` completions arrived; any failure or short write is an error.
fn wait_for(ring: &mut BenchRing, n: usize) -> Res<()> {
    let mut seen = 0;
    let mut failed: Option<String> = None;
    while seen < n {
        ring.ring.submit_and_wait(1)?;
        for cqe in ring.ring.completion() {
            seen += 1;
            let (token, res) = (cqe.user_data(), cqe.result());
            let bad = res < 0 || (token == TOKEN_WRITE && res as usize != APPEND_BYTES);
            if bad && failed.is_none() {
                let what = if token == TOKEN_WRITE { "write" } else { "fdatasync" };
                failed = Some(if res < 0 {
                    format!("{what}: {}", std::io::Error::from_raw_os_error(-res))
                } else {
                    format!("short {what}: {res} bytes")
                });
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// A ring set up like a shard's: `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them.
struct BenchRing {
    ring: IoUring,
}

impl BenchRing {
    fn new() -> Res<BenchRing> {
        let tuned = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(64);
        let ring = match tuned {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::new(64)?,
            Err(e) => return Err(e.into()),
        };
        Ok(BenchRing { ring })
    }

    /// Registers `buf` as fixed buffer 0. The caller drops the ring before the buffer.
    fn register(&mut self, buf: &AlignedBuf) -> Res<()> {
        let iov = [libc::iovec { iov_base: buf.ptr.cast(), iov_len: buf.len }];
        // Safety: `buf` outlives the ring (declared before it in the one function that uses
        // both, so dropped after it) and is never moved or freed while registered.
        unsafe { self.ring.submitter().register_buffers(&iov)? };
        Ok(())
    }

    /// Queues `sqe`, submitting first if the queue is full.
    ///
    /// # Safety
    ///
    /// Everything `sqe` points to stays valid until its completion is reaped.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> Res<()> {
        // Safety: the caller's contract, passed on.
        if unsafe { self.ring.submission().push(sqe) }.is_err() {
            self.ring.submit()?;
            // Safety: as above.
            unsafe { self.ring.submission().push(sqe) }.map_err(|_| "submission queue full")?;
        }
        Ok(())
    }
}

/// A zeroed, 4096-aligned heap buffer for `O_DIRECT` appends.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    const ALIGN: usize = 4096;

    fn zeroed(len: usize) -> Option<AlignedBuf> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), Self::ALIGN).ok()?;
        // Safety: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(AlignedBuf { ptr, len: layout.size() })
    }

    fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // Safety: `ptr` is valid for `len` initialised bytes and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(self.len, Self::ALIGN) {
            // Safety: allocated in `zeroed` with exactly this layout.
            unsafe { std::alloc::dealloc(self.ptr, layout) };
        }
    }
}
