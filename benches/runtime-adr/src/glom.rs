//! Candidate "glommio": one `LocalExecutor` pinned with `Placement::Fixed`, `io_memory` set to
//! 1 MiB (the executor registers it with its rings; `RLIMIT_MEMLOCK` is 8 MiB here), an
//! ingress task in a `Latency::Matters` task queue awaiting a flume channel fed by the foreign
//! caller thread, and `DmaFile` for the WAL append.
//!
//! A flume send from the caller wakes the awaiting task through glommio's foreign-waker path:
//! the waker is queued on the executor's notifier and, because the task's queue is
//! `Latency::Matters`, the executor's eventfd is written (forced) whether it sleeps or not.

use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;
use glommio::{ExecutorJoinHandle, Latency, LocalExecutorBuilder, Placement, Shares};
use lightning_shards::internals::{Completion, Request, Responder, WaitPolicy};

use crate::caller::Target;
use crate::ours::{APPEND_BYTES, WAL_FILE_BYTES, WAL_WARMUP};
use crate::report::{Figure, Sample};
use crate::Res;

/// Bytes of DMA memory per executor (glommio's default, 10 MiB, is above one executor's share
/// of an 8 MiB `RLIMIT_MEMLOCK`).
pub const IO_MEMORY: usize = 1 << 20;
/// Ingress capacity, as our shard's `ingress_queue_depth`.
const INGRESS_DEPTH: usize = 1024;
/// Default period of the rescue timer (see [`GlommioShard::start`]).
pub const RESCUE_TICK: Duration = Duration::from_millis(10);

/// glommio's error type is not `Sync`; carry its message instead.
trait GlommioResult<T> {
    fn gl(self) -> Res<T>;
}

impl<T> GlommioResult<T> for glommio::Result<T, ()> {
    fn gl(self) -> Res<T> {
        self.map_err(|e| format!("glommio: {e}").into())
    }
}

/// The channel from the caller thread to the ingress task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chan {
    /// A bounded flume channel, awaited with `recv_async` (flume registers the task's waker
    /// and wakes it from the sending thread).
    Flume,
    /// Our ingress scheme with a waker for a doorbell: a bounded crossbeam channel (the queue
    /// our shard uses), a `parked` flag and the task's `Waker`. The task stores its waker, sets
    /// `parked`, and re-checks the queue before it returns `Pending`. The sender pushes, then
    /// wakes the task only if it finds `parked` set (SeqCst on both sides, as in our ingress).
    Xbeam,
}

/// The crossbeam variant's parked flag and the waker of the parked ingress task.
#[derive(Default)]
struct WakerBell {
    parked: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakerBell {
    fn ring(&self) {
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            let waker = self.waker.lock().ok().and_then(|mut w| w.take());
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

enum Tx {
    Flume(flume::Sender<Request>),
    Xbeam(crossbeam_channel::Sender<Request>, Arc<WakerBell>),
}

enum Rx {
    Flume(flume::Receiver<Request>),
    Xbeam(crossbeam_channel::Receiver<Request>, Arc<WakerBell>),
}

/// The channel is closed: every sender is gone.
struct Closed;

fn channel(chan: Chan) -> (Tx, Rx) {
    match chan {
        Chan::Flume => {
            let (tx, rx) = flume::bounded(INGRESS_DEPTH);
            (Tx::Flume(tx), Rx::Flume(rx))
        }
        Chan::Xbeam => {
            let (tx, rx) = crossbeam_channel::bounded(INGRESS_DEPTH);
            let bell = Arc::new(WakerBell::default());
            (Tx::Xbeam(tx, bell.clone()), Rx::Xbeam(rx, bell))
        }
    }
}

impl Tx {
    fn send(&self, req: Request) -> Res<()> {
        match self {
            Tx::Flume(tx) => tx.send(req).map_err(|_| "glommio ingress closed")?,
            Tx::Xbeam(tx, bell) => {
                tx.send(req).map_err(|_| "glommio ingress closed")?;
                fence(Ordering::SeqCst);
                bell.ring();
            }
        }
        Ok(())
    }

    /// Drops the sender and wakes the task so that it sees the channel closed.
    fn close(self) {
        if let Tx::Xbeam(tx, bell) = self {
            drop(tx);
            bell.parked.store(true, Ordering::SeqCst);
            bell.ring();
        }
    }
}

impl Rx {
    fn try_recv(&self) -> Result<Option<Request>, Closed> {
        match self {
            Rx::Flume(rx) => match rx.try_recv() {
                Ok(r) => Ok(Some(r)),
                Err(flume::TryRecvError::Empty) => Ok(None),
                Err(flume::TryRecvError::Disconnected) => Err(Closed),
            },
            Rx::Xbeam(rx, _) => match rx.try_recv() {
                Ok(r) => Ok(Some(r)),
                Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
                Err(crossbeam_channel::TryRecvError::Disconnected) => Err(Closed),
            },
        }
    }

    /// Waits for the next request.
    async fn recv(&self) -> Result<Request, Closed> {
        match self {
            Rx::Flume(rx) => rx.recv_async().await.map_err(|_| Closed),
            Rx::Xbeam(_, bell) => {
                std::future::poll_fn(|cx| {
                    if let Some(r) = self.try_recv()? {
                        return Poll::Ready(Ok(r));
                    }
                    if let Ok(mut w) = bell.waker.lock() {
                        *w = Some(cx.waker().clone());
                    }
                    bell.parked.store(true, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    match self.try_recv() {
                        Ok(None) => Poll::Pending,
                        other => {
                            bell.parked.store(false, Ordering::SeqCst);
                            Poll::Ready(other.and_then(|r| r.ok_or(Closed)))
                        }
                    }
                })
                .await
            }
        }
    }
}

/// A running glommio executor with its ingress task.
pub struct GlommioShard {
    name: String,
    tx: Tx,
    join: ExecutorJoinHandle<()>,
    cpu: usize,
    startup: Duration,
}

fn builder(cpu: usize, spin: Option<Duration>) -> LocalExecutorBuilder {
    let b =
        LocalExecutorBuilder::new(Placement::Fixed(cpu)).name("glommio-shard").io_memory(IO_MEMORY);
    match spin {
        Some(s) => b.spin_before_park(s),
        None => b,
    }
}

/// How the glommio ingress task waits for requests.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// The recommended setup: the task awaits `recv_async`, so every request that finds it
    /// waiting is a foreign wake; the executor spins `spin_before_park` first, if given.
    Wake {
        /// `LocalExecutorBuilder::spin_before_park`.
        spin: Option<Duration>,
    },
    /// Our loop's scheme inside glommio: the task polls `try_recv`, yielding its task queue
    /// between polls, for `budget` after the last request, and only then awaits
    /// `recv_async` (so the executor parks). A request that arrives while it polls needs no
    /// foreign wake.
    Poll {
        /// How long the task polls after its last request.
        budget: Duration,
    },
}

impl GlommioShard {
    /// Spawns the executor on `cpu` with its ingress task in `mode`, and waits for its first
    /// reply.
    ///
    /// With `rescue: Some(tick)`, a second task sleeps in a loop on a `tick` timer, so a parked
    /// executor wakes at least that often. Without it, glommio 0.9.0 in this setup now and then
    /// parks for good while a request waits (`--hang-probe`: within 10 s in 5 of 7 probes of
    /// the plain variant). That matches the bug fixed upstream in glommio/glommio PR #53
    /// (`run_task_queues` reports "ran nothing" when `need_preempt()` is already true, e.g.
    /// because the forced eventfd CQE of a `Latency::Matters` foreign wake is waiting in the
    /// latency ring, and the run loop parks with a runnable queue); no release has the fix.
    /// With the timer task present no hang was seen at all, even with a 1 s tick, so the
    /// measurements are not inflated by rescues; the `>1 ms` column would show them.
    pub fn start(
        cpu: usize,
        mode: Mode,
        chan: Chan,
        rescue: Option<Duration>,
    ) -> Res<GlommioShard> {
        let (mut name, spin) = match mode {
            Mode::Wake { spin: None } => ("glommio".to_string(), None),
            Mode::Wake { spin: Some(s) } => (format!("glommio+spin{}us", s.as_micros()), Some(s)),
            Mode::Poll { budget } => (format!("glommio+polltask{}us", budget.as_micros()), None),
        };
        if chan == Chan::Xbeam {
            name.push_str("+xbeam");
        }
        let (tx, rx) = channel(chan);
        let t0 = Instant::now();
        let join = builder(cpu, spin)
            .spawn(move || async move {
                let queue = glommio::executor().create_task_queue(
                    Shares::default(),
                    Latency::Matters(Duration::from_millis(1)),
                    "ingress",
                );
                if let Some(tick) = rescue {
                    glommio::spawn_local(async move {
                        loop {
                            glommio::timer::sleep(tick).await;
                        }
                    })
                    .detach();
                }
                let spawned = match mode {
                    Mode::Wake { .. } => glommio::spawn_local_into(serve(rx), queue),
                    Mode::Poll { budget } => {
                        glommio::spawn_local_into(serve_polling(rx, budget), queue)
                    }
                };
                match spawned {
                    Ok(task) => task.await,
                    Err(e) => eprintln!("glommio: cannot spawn the ingress task: {e}"),
                }
            })
            .gl()?;
        let shard = GlommioShard { name, tx, join, cpu, startup: Duration::ZERO };
        let done = std::sync::Arc::new(Completion::new(1));
        shard.send(Request::Sync { done: Responder::new(done.clone()) })?;
        done.wait(&shard.policy())?;
        Ok(GlommioShard { startup: t0.elapsed(), ..shard })
    }

    /// Spawn to first reply.
    pub fn startup_figure(&self) -> Figure {
        Figure::single("startup", &self.name, self.startup)
    }

    /// Closes the ingress (the task's `recv_async` then fails and it returns) and joins.
    pub fn shutdown(self) -> Res<()> {
        self.tx.close();
        self.join.join().gl()?;
        Ok(())
    }
}

/// Runs back-to-back round trips against a glommio executor in `mode` *without* the rescue
/// timer until it stops answering for `stall`, or `limit` passes. Returns the round trips
/// completed and whether it hung. A hung executor cannot be stopped: the caller exits the
/// process afterwards.
pub fn hang_probe(cpu: usize, mode: Mode, limit: Duration, stall: Duration) -> Res<(u64, bool)> {
    use std::sync::atomic::AtomicU64;
    let shard = GlommioShard::start(cpu, mode, Chan::Flume, None)?;
    let done_trips = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (trips, stop2) = (done_trips.clone(), stop.clone());
    // The caller runs on its own thread so that this one can watch it.
    std::thread::Builder::new().name("hang-probe-caller".into()).spawn(move || {
        let policy = shard.policy();
        while !stop2.load(Ordering::Relaxed) {
            let done = Arc::new(Completion::new(1));
            if shard.send(Request::Sync { done: Responder::new(done.clone()) }).is_err()
                || done.wait(&policy).is_err()
            {
                break;
            }
            trips.fetch_add(1, Ordering::Relaxed);
        }
        let _ = shard.shutdown();
    })?;
    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = done_trips.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() >= stall {
            return Ok((n, true));
        }
        if started.elapsed() >= limit {
            stop.store(true, Ordering::Relaxed);
            return Ok((n, false));
        }
    }
}

/// Signals the request's responder at once (as our shard answers a `Sync` with nothing to
/// sync).
fn answer(req: Request) {
    match req {
        Request::Write { done, .. }
        | Request::Batch { done, .. }
        | Request::Sync { done }
        | Request::Shutdown { done } => done.complete(Ok(())),
        // The benchmark never asks for statistics; dropping the sender answers the caller.
        Request::Stats { .. } => {}
    }
}

/// The shard side: answer every request at once (as our shard answers a `Sync` with nothing
/// to sync).
async fn serve(rx: Rx) {
    while let Ok(req) = rx.recv().await {
        answer(req);
    }
}

/// The shard side with our loop's polling: answer what is queued, poll (yielding the task
/// queue) until `budget` passes without a request, then await the channel.
async fn serve_polling(rx: Rx, budget: Duration) {
    loop {
        let mut idle_since: Option<Instant> = None;
        loop {
            match rx.try_recv() {
                Ok(Some(req)) => {
                    answer(req);
                    idle_since = None;
                }
                Err(Closed) => return,
                Ok(None) => {
                    let now = Instant::now();
                    if now.duration_since(*idle_since.get_or_insert(now)) >= budget {
                        break;
                    }
                    glommio::executor().yield_task_queue_now().await;
                }
            }
        }
        match rx.recv().await {
            Ok(req) => answer(req),
            Err(Closed) => return,
        }
    }
}

impl Target for GlommioShard {
    fn candidate(&self) -> &str {
        &self.name
    }
    fn send(&self, req: Request) -> Res<()> {
        self.tx.send(req)
    }
    fn policy(&self) -> WaitPolicy {
        WaitPolicy { shard_cpu: Some(self.cpu), ..WaitPolicy::DEFAULT }
    }
}

/// How glommio makes a 4 KiB append durable.
#[derive(Clone, Copy, Debug)]
pub enum WalVariant {
    /// `DmaFile::write_at`, then `DmaFile::fdatasync`.
    WriteThenSync,
    /// A `DmaFile` opened with `custom_flags(O_DSYNC)`, `write_at` only.
    Dsync,
}

impl WalVariant {
    /// Every variant, in report order.
    pub const ALL: [WalVariant; 2] = [WalVariant::WriteThenSync, WalVariant::Dsync];

    /// (measurement, candidate) in the report.
    pub fn name(self) -> (&'static str, &'static str) {
        match self {
            WalVariant::WriteThenSync => ("wal_4k_write+fdatasync", "glommio:write_at+fdatasync"),
            WalVariant::Dsync => ("wal_4k_dsync", "glommio:DmaFile(O_DSYNC)"),
        }
    }
}

/// `iters` 4 KiB appends at queue depth 1 through a `DmaFile` on an executor pinned to `cpu`.
pub fn wal(path: &Path, variant: WalVariant, cpu: usize, iters: u64, max: Duration) -> Res<Sample> {
    let path = path.to_path_buf();
    let join = builder(cpu, None)
        .spawn(move || async move {
            wal_on_executor(&path, variant, iters, max).await.map_err(|e| e.to_string())
        })
        .gl()?;
    Ok(join.join().gl()??)
}

async fn wal_on_executor(
    path: &Path,
    variant: WalVariant,
    iters: u64,
    max: Duration,
) -> Res<Sample> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if let WalVariant::Dsync = variant {
        opts.custom_flags(libc::O_DSYNC);
    }
    let file = opts.dma_open(path).await.gl()?;
    if file.alignment() > APPEND_BYTES as u64 {
        return Err(format!("device alignment {} above 4096", file.alignment()).into());
    }
    let slots = WAL_FILE_BYTES / APPEND_BYTES as u64;
    let mut sample = Sample::new()?;
    let mut started = Instant::now();
    for i in 0..WAL_WARMUP + iters {
        if i == WAL_WARMUP {
            started = Instant::now();
        }
        let offset = (i % slots) * APPEND_BYTES as u64;
        // The buffer comes from the executor's registered io_memory; filling it is not timed
        // (our side reuses one filled buffer).
        let mut buf = file.alloc_dma_buffer(APPEND_BYTES);
        buf.as_bytes_mut().fill(0x5a);
        let t0 = Instant::now();
        let written = file.write_at(buf, offset).await.gl()?;
        if let WalVariant::WriteThenSync = variant {
            file.fdatasync().await.gl()?;
        }
        let took = t0.elapsed();
        if written != APPEND_BYTES {
            return Err(format!("short write: {written} bytes").into());
        }
        if i >= WAL_WARMUP {
            sample.record(took, 1);
            if started.elapsed() > max {
                break;
            }
        }
    }
    file.close().await.gl()?;
    Ok(sample)
}
