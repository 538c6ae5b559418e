//! Starting, reaching and stopping one shard.
//!
//! [`ShardHandle`] is the caller-side handle (shared by every caller thread): the ingress
//! sender, the published view, the CPU the shard is pinned to. [`ShardHandle::spawn`] starts
//! the shard thread, which pins itself, creates its storage (the ring), replays its WAL and
//! reports back before it enters its loop, so every start-up failure reaches `Database::open`
//! as an error. On the thread, the storage is created first and dropped last: after the shard
//! (whose acknowledgements then answer `Closed`), and after a panic too, and its drop waits for
//! every operation in flight (`docs/SAFETY.md`).

mod acks;
mod core;
mod txn;

pub use txn::{commit_prepared, InDoubt};

pub(crate) use self::core::{Shard, ShardLog};

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::commit::{Commit, LogHalf, OwnedOps, Written};
use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{ingress, Completion, Inbox, IngressSender, Request, Responder, WaitPolicy};
use crate::io::sys;
use crate::io::uring::{Registration, RingSetup, UringStorage};
use crate::io::Storage;
use crate::memtable::{Direction, Memtable};
use crate::runtime::event_loop::{self, LoopConfig};
use crate::stats::ShardStats;
use crate::tree::{TreeCursor, TreeOptions, TreeWriter};
use crate::version::{Lsn, Ts};
use crate::view::ShardView;
use crate::view::{Layered, Layers, ScanChunk};
use crate::wal::direct::{GROUP_BUFFER_BYTES, REGISTERED_BUFFERS};
use crate::wal::reader::{self, RecoveryReport};
use crate::wal::record::{OpRef, Ops};
use crate::wal::{DirectWal, MappedWal, WalError, WalOptions};
use std::ops::Bound;

/// What a shard found while starting, for the environment report.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StartReport {
    /// The CPU the shard thread is pinned to, if pinning succeeded.
    pub pinned_cpu: Option<usize>,
    /// Ring setup flags the kernel accepted (`None` on a simulated disk).
    pub ring: Option<RingSetup>,
    /// WAL records replayed.
    pub replayed_records: u64,
    /// Whether the WAL buffers are registered with the ring.
    pub registered_buffers: bool,
    /// What recovery cut, set aside or removed.
    pub recovery: RecoveryReport,
}

/// Batch parts at least this long may go to their shard thread (`ShardHandle::offloads`):
/// below it, waking the shard costs more than the caller saves.
pub const OFFLOAD_BATCH_OPS: usize = 64;

/// How long a `Sync`-mode writer polls for its acknowledgement before parking: the durable
/// write takes ~100 µs, and a parked caller costs a futex wake-up and misses the next group
/// commit (ADR 0002).
const SYNC_WRITE_SPIN: Duration = Duration::from_millis(1);

/// One round of a caller's wait for another thread's progress (a commit to become visible, a
/// held key to be let go): spin briefly, then yield, then sleep in 20 µs slices.
pub(crate) fn pause(rounds: &mut u32) {
    *rounds = rounds.saturating_add(1);
    if *rounds < 64 {
        std::hint::spin_loop();
    } else if *rounds < 96 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// How long a plain write retries a key that a cross-shard commit in progress holds.
pub const BLOCKED_WRITE_PATIENCE: Duration = Duration::from_secs(10);

/// Caller-side handle to a running shard. `Send + Sync`: every caller thread uses it.
pub struct ShardHandle {
    view: Arc<ShardView>,
    /// The commit lock callers write under (`Normal`/`Async`: they apply; `Sync`: they stage).
    commit: Arc<Commit>,
    sender: IngressSender,
    report: StartReport,
    mode: WalSyncMode,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// What replay left of cross-shard commits, until the database takes it.
    in_doubt: Mutex<InDoubt>,
}

/// One wait for replies from one or more shards (a batch or a sync that touches several):
/// each shard answers its part, the caller waits once.
pub struct Ticket {
    completion: Arc<Completion>,
    policy: WaitPolicy,
}

impl Ticket {
    /// A ticket for `parts` replies.
    pub fn new(parts: u32) -> Ticket {
        Ticket { completion: Arc::new(Completion::new(parts)), policy: WaitPolicy::DEFAULT }
    }

    fn responder(&mut self, shard: &ShardHandle, writes: bool) -> Responder {
        self.policy = if writes { shard.write_policy() } else { shard.wait_policy() };
        Responder::new(self.completion.clone())
    }

    /// Waits until every part replied; the first error, if any.
    pub fn wait(self) -> Result<()> {
        self.completion.wait(&self.policy)
    }
}

/// One shard read at a database snapshot's timestamp: the layers it was taken on (pinned, so a
/// flush afterwards changes nothing it reads) at that timestamp (the database's snapshot guard
/// keeps what it sees from garbage collection).
#[derive(Clone)]
pub struct ShardSnapshot {
    layers: Arc<Layers>,
    ts: Ts,
}

impl ShardSnapshot {
    /// Up to `limit` visible entries within the bounds, in `direction` order
    /// (`ScanChunk::resume_after` says where the next chunk starts).
    /// `cursor` is where the scan's previous chunk left the tree ([`TreeCursor`]).
    pub fn chunk(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
        cursor: &mut TreeCursor,
    ) -> Result<ScanChunk> {
        self.layers.chunk(lower, upper, self.ts, direction, limit, cursor)
    }

    /// The value of `key` at this snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.layers.get(key, self.ts)? {
            Layered::Value(v) => Ok(Some(v)),
            Layered::Absent | Layered::AbsentBelowNewer => Ok(None),
        }
    }

    /// The values of several keys at this snapshot, in the order given; the tree's cache
    /// misses among them are read in flight together.
    pub fn multi_get(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(Self::multi_get_across(&[(self, keys)])?.pop().unwrap_or_default())
    }

    /// [`multi_get`](Self::multi_get) in several shards at once, each part `(shard, keys)`:
    /// the cache misses of every shard's tree are read in flight together. Answers per part.
    pub fn multi_get_across(
        parts: &[(&ShardSnapshot, &[&[u8]])],
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
        let asked: Vec<(&Layers, Ts, &[&[u8]])> =
            parts.iter().map(|(s, keys)| (&*s.layers, s.ts, *keys)).collect();
        let answers = crate::view::get_many_across(&asked)?;
        Ok(answers
            .into_iter()
            .map(|part| {
                part.into_iter()
                    .map(|l| match l {
                        Layered::Value(v) => Some(v),
                        Layered::Absent | Layered::AbsentBelowNewer => None,
                    })
                    .collect()
            })
            .collect())
    }

    /// Reads into the shards' caches, in flight together, the leaf each part's scan will
    /// start from (`(shard, the scan's bound on the side it starts from)`) and the one after
    /// it in `direction`: a scan of many shards waits for one batch of reads instead of one
    /// read per shard in turn. Returns each part's [`TreeCursor`] at that leaf, for its first
    /// [`chunk`](Self::chunk).
    pub fn prefetch_across(
        parts: &[(&ShardSnapshot, Bound<&[u8]>)],
        direction: Direction,
    ) -> Result<Vec<TreeCursor>> {
        let asked: Vec<(&Layers, Bound<&[u8]>)> =
            parts.iter().map(|(s, b)| (&*s.layers, *b)).collect();
        crate::view::prefetch_across(&asked, direction)
    }

    /// The snapshot's timestamp.
    pub fn ts(&self) -> Ts {
        self.ts
    }
}

impl ShardHandle {
    /// Spawns the shard thread on the real disk and waits until it is ready.
    pub fn start(config: ShardConfig) -> Result<ShardHandle> {
        Self::spawn(config)?.ready()
    }

    /// Spawns the shard thread on the real disk; [`StartingShard::ready`] waits for its
    /// start-up to finish. Spawning every shard before waiting lets them replay in parallel.
    pub fn spawn(config: ShardConfig) -> Result<StartingShard> {
        let registration = registration(&config);
        Self::spawn_with(config, move || UringStorage::new(registration))
    }

    /// Spawns the shard thread on the storage `make` creates (on the shard thread).
    pub fn spawn_with<S, F>(config: ShardConfig, make: F) -> Result<StartingShard>
    where
        S: Storage + 'static,
        F: FnOnce() -> Result<S> + Send + 'static,
    {
        let mode = config.wal_sync_mode;
        let (sender, inbox) = ingress(config.ingress_queue_depth)
            .map_err(|e| Error::io("create shard doorbell (eventfd)", &config.dir, e))?;
        let (ready_tx, ready) = bounded::<Result<Opened>>(1);
        let name = format!("ldb-shard-{}", config.shard_id);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || shard_thread(config, inbox, make, ready_tx))
            .map_err(|e| Error::io("spawn shard thread", "", e))?;
        Ok(StartingShard { sender, ready, thread, mode })
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.view.shard_id()
    }

    /// True once a failed fdatasync or durable write (or a panic) stopped this shard's writes.
    pub fn is_poisoned(&self) -> bool {
        self.view.is_poisoned()
    }

    /// The latest visible value of `key`, read on the caller's thread (no message).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.view.get(key)
    }

    /// Flushes the memtable, rewrites the shard's tree low in its file and gives the free tail
    /// back to the file system. Returns the bytes given back.
    pub fn compact(&self) -> Result<u64> {
        let (reply, answer) = bounded(1);
        self.send(Request::Compact { reply })?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    /// Walks every page the shard's tree reaches and checks it (`db.verify()`): the pages
    /// reached, or the first `Error::Corruption`.
    pub fn verify(&self) -> Result<u64> {
        match &self.view.layers().tree {
            Some(tree) => {
                tree.verify().map(|reached| reached.iter().map(|e| u64::from(e.pages)).sum())
            }
            None => Ok(0),
        }
    }

    /// This shard read at `ts` from now on (the caller holds a registered snapshot at `ts`,
    /// and has fenced this shard at it): its current layers, pinned.
    pub fn snapshot_at(&self, ts: Ts) -> ShardSnapshot {
        ShardSnapshot { layers: self.view.layers(), ts }
    }

    /// The visible watermark: every write acknowledged on this shard is at or below it.
    pub fn visible_ts(&self) -> Ts {
        self.view.visible_ts()
    }

    /// Fences this shard for a database snapshot at `ts`: no commit placed from now on gets a
    /// timestamp at or below `ts`, and every commit already stamped at or below it is visible
    /// when this returns (`Sync`: once its group is durable). `docs/ARCHITECTURE.md`, "One
    /// timestamp order".
    pub fn fence(&self, ts: Ts) -> Result<()> {
        self.wait_visible(self.commit.fence(ts))
    }

    /// Waits until every commit placed on this shard so far is visible (`Sync`: its group
    /// durable), so a snapshot taken afterwards includes them.
    pub fn wait_placed_visible(&self) -> Result<()> {
        // Bound first: the lock must be let go before waiting (the shard takes it to publish).
        let target = self.commit.lock().last_ts();
        self.wait_visible(target)
    }

    fn wait_visible(&self, target: Ts) -> Result<()> {
        let mut rounds = 0u32;
        while self.view.visible_ts() < target {
            self.refuse_if_poisoned()?;
            if self.commit.is_closed() {
                return Err(Error::Closed);
            }
            pause(&mut rounds);
        }
        Ok(())
    }

    /// Approximate bytes and number of versions the memtable holds right now.
    pub fn memtable_usage(&self) -> (u64, u64) {
        let m = self.view.memtable();
        (m.approx_bytes() as u64, m.version_count() as u64)
    }

    /// Applies one write; returns once it is acknowledged under the shard's mode. In
    /// `Normal`/`Async` the calling thread does the work under the commit lock, copying the key
    /// and value straight from `op` into the log and the memtable.
    ///
    /// A key held by a cross-shard commit in progress (it finishes within one round of
    /// durable writes) is retried for up to `BLOCKED_WRITE_PATIENCE`, then reported as
    /// `Error::Conflict`.
    pub fn write(&self, op: OpRef<'_>) -> Result<()> {
        let mut started = None;
        let mut attempt = 0u32;
        loop {
            match self.write_once(op) {
                Err(Error::Conflict { reason }) => {
                    let since = *started.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > BLOCKED_WRITE_PATIENCE {
                        return Err(Error::Conflict { reason });
                    }
                    pause(&mut attempt);
                }
                other => return other,
            }
        }
    }

    fn write_once(&self, op: OpRef<'_>) -> Result<()> {
        self.refuse_if_poisoned()?;
        self.wait_for_room()?;
        if self.mode == WalSyncMode::Sync {
            let mut ticket = Ticket::new(1);
            self.stage(Ops::One(op), ticket.responder(self, true));
            return ticket.wait();
        }
        if let Written::Done(result) = self.commit.write(Ops::One(op), &|req| self.forward(req)) {
            self.nudge_if_full();
            return result;
        }
        let mut ticket = Ticket::new(1);
        self.send(OwnedOps::copy(Ops::One(op)).into_request(ticket.responder(self, true)))?;
        ticket.wait()
    }

    /// Applies one shard's part of a batch (atomic on this shard); `ticket` collects the reply.
    /// In `Normal`/`Async` the calling thread applies it before this returns (unless the
    /// segment is full); in `Sync` it stages it in the open group. A refused send answers its
    /// part `Closed`.
    pub fn submit_batch(&self, ops: &[OpRef<'_>], ticket: &mut Ticket) {
        let done = ticket.responder(self, true);
        if self.view.is_poisoned() {
            return done.complete(Err(Error::Poisoned { shard: self.id() }));
        }
        if let Err(e) = self.wait_for_room() {
            return done.complete(Err(e));
        }
        if self.mode == WalSyncMode::Sync {
            return self.stage(Ops::Refs(ops), done);
        }
        if let Written::Done(result) = self.commit.write(Ops::Refs(ops), &|req| self.forward(req)) {
            self.nudge_if_full();
            return done.complete(result);
        }
        let _ = self.send(OwnedOps::copy(Ops::Refs(ops)).into_request(done));
    }

    /// The memtable reached its budget: the shard freezes it at its next turn, which callers
    /// writing without it (`Normal`/`Async`) must not wait for until its timer.
    #[inline]
    fn nudge_if_full(&self) {
        if self.commit.memtable_full() {
            self.sender.nudge();
        }
    }

    /// Waits while the memtable is at twice its budget (a flush is behind): memory stays
    /// bounded, and each wait is counted (`FlushStats::write_stalls`).
    #[inline]
    fn wait_for_room(&self) -> Result<()> {
        if !self.commit.memtable_overfull() {
            return Ok(());
        }
        self.commit.count_write_stall();
        let mut rounds = 0u32;
        while self.commit.memtable_overfull() {
            self.refuse_if_poisoned()?;
            if self.commit.is_closed() {
                return Err(Error::Closed);
            }
            self.sender.nudge();
            pause(&mut rounds);
        }
        Ok(())
    }

    /// `Sync`: stages `ops` in the open group under the commit lock (or sends them when they
    /// do not fit) and wakes the shard, which answers `done` once the group is durable.
    fn stage(&self, ops: Ops<'_>, done: Responder) {
        match self.commit.stage(ops, done, &|req| self.forward(req)) {
            Ok(()) => self.sender.nudge(),
            Err(done) => {
                let _ = self.send(OwnedOps::copy(ops).into_request(done));
            }
        }
    }

    /// True when a batch part of `ops` operations is better placed by the shard thread than
    /// by the caller: it is at least `OFFLOAD_BATCH_OPS` long and the shard is pinned to a CPU
    /// other than the one the caller runs on, so the two place parts at the same time. ADR 0003.
    pub fn offloads(&self, ops: usize) -> bool {
        ops >= OFFLOAD_BATCH_OPS
            && matches!((self.report.pinned_cpu, sys::current_cpu()), (Some(s), Some(c)) if s != c)
    }

    /// Sends one shard's part of a batch to the shard thread (a copy), which applies it as
    /// [`ShardHandle::submit_batch`] would; `ticket` collects the reply.
    pub fn send_batch(&self, ops: &[OpRef<'_>], ticket: &mut Ticket) {
        let done = ticket.responder(self, true);
        if self.view.is_poisoned() {
            return done.complete(Err(Error::Poisoned { shard: self.id() }));
        }
        let _ = self.send(OwnedOps::copy(Ops::Refs(ops)).into_request(done));
    }

    /// Sends a request a commit-lock holder could not apply (a refused send answers it
    /// `Closed` when the request is dropped).
    fn forward(&self, req: Request) {
        let _ = self.send(req);
    }

    /// Asks the shard to make every acknowledged write durable; `ticket` collects the reply.
    pub fn submit_sync(&self, ticket: &mut Ticket) {
        let _ = self.send(Request::Sync { done: ticket.responder(self, false) });
    }

    /// A copy of the shard's statistics (one message).
    pub fn stats(&self) -> Result<ShardStats> {
        let (reply, rx) = bounded(1);
        self.send(Request::Stats { reply })?;
        rx.recv().map_err(|_| Error::Closed)
    }

    /// Queues a raw request (feature `internals`: for the runtime comparison benchmark, which
    /// drives the same requests through another runtime).
    #[cfg(feature = "internals")]
    pub fn send_request(&self, req: Request) -> Result<()> {
        self.send(req)
    }

    /// How a caller waits for this shard's replies (feature `internals`, as above).
    #[cfg(feature = "internals")]
    pub fn reply_wait_policy(&self) -> WaitPolicy {
        self.wait_policy()
    }

    fn refuse_if_poisoned(&self) -> Result<()> {
        if self.view.is_poisoned() {
            return Err(Error::Poisoned { shard: self.id() });
        }
        Ok(())
    }

    /// How a writer waits: in `Sync` mode it keeps polling longer before it parks.
    fn write_policy(&self) -> WaitPolicy {
        match self.mode {
            WalSyncMode::Sync => WaitPolicy { spin: SYNC_WRITE_SPIN, ..self.wait_policy() },
            WalSyncMode::Normal | WalSyncMode::Async => self.wait_policy(),
        }
    }

    /// What the shard found while starting.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// Queues a request (ringing the doorbell if the shard is parked).
    pub(crate) fn send(&self, req: Request) -> Result<()> {
        self.sender.send(req)
    }

    /// How many times callers woke this shard with its eventfd doorbell.
    pub fn doorbell_rings(&self) -> u64 {
        self.sender.doorbell_rings()
    }

    /// Requests queued right now.
    pub fn queued(&self) -> usize {
        self.sender.queued()
    }

    /// How a caller should wait for this shard's replies.
    pub(crate) fn wait_policy(&self) -> WaitPolicy {
        WaitPolicy { shard_cpu: self.report.pinned_cpu, ..WaitPolicy::DEFAULT }
    }

    /// Asks the shard to make everything durable and stop, and joins its thread. Idempotent;
    /// a second caller waits until the first one's shutdown finished.
    pub fn shutdown(&self) -> Result<()> {
        let mut guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        let Some(thread) = guard.take() else { return Ok(()) };
        // Waited for with the lock held, so a concurrent `shutdown` returns only after it.
        self.stopping(thread).wait()
    }

    /// Asks the shard to make everything durable and stop, without waiting: the database asks
    /// every shard first, then waits for each ([`Stopping::wait`]), so they stop in parallel.
    /// `None` when it was already asked. Unlike [`shutdown`](Self::shutdown), a later
    /// `shutdown` returns at once, before the shard stopped: whoever holds the [`Stopping`]
    /// waits.
    pub fn begin_shutdown(&self) -> Option<Stopping> {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(self.stopping(thread))
    }

    fn stopping(&self, thread: JoinHandle<()>) -> Stopping {
        let done = Arc::new(Completion::new(1));
        let sent = self.send(Request::Shutdown { done: Responder::new(done.clone()) });
        Stopping { thread, done, sent }
    }
}

/// A shard asked to stop ([`ShardHandle::begin_shutdown`]).
#[must_use = "dropping it leaves the shard thread running detached: wait() for it"]
pub struct Stopping {
    thread: JoinHandle<()>,
    done: Arc<Completion>,
    sent: Result<()>,
}

impl Stopping {
    /// Waits until the shard made everything durable and stopped, and joins its thread.
    pub fn wait(self) -> Result<()> {
        let result = match self.sent {
            Ok(()) => self.done.wait(&WaitPolicy { spin: Duration::ZERO, ..WaitPolicy::DEFAULT }),
            Err(e) => Err(e),
        };
        let _ = self.thread.join();
        result
    }
}

/// A shard thread that is still starting (pinning, creating its ring, replaying its WAL).
pub struct StartingShard {
    sender: IngressSender,
    ready: crossbeam_channel::Receiver<Result<Opened>>,
    thread: JoinHandle<()>,
    mode: WalSyncMode,
}

impl StartingShard {
    /// Waits until the shard is running, or returns why it could not start.
    pub fn ready(self) -> Result<ShardHandle> {
        let started = self.ready.recv().map_err(|_| Error::Closed).and_then(|r| r);
        match started {
            Ok(Opened { view, commit, report, in_doubt }) => Ok(ShardHandle {
                view,
                commit,
                sender: self.sender,
                report,
                in_doubt: Mutex::new(in_doubt),
                mode: self.mode,
                thread: Mutex::new(Some(self.thread)),
            }),
            Err(e) => {
                let _ = self.thread.join();
                Err(e)
            }
        }
    }
}

/// The buffers a shard's ring registers: the `Sync` writer's group buffers, if asked for.
fn registration(config: &ShardConfig) -> Registration {
    if config.wal_sync_mode == WalSyncMode::Sync && config.register_buffers {
        Registration { buffers: REGISTERED_BUFFERS, buffer_bytes: GROUP_BUFFER_BYTES }
    } else {
        Registration::default()
    }
}

type Ready = crossbeam_channel::Sender<Result<Opened>>;

/// What a shard's start-up hands to its callers.
pub(crate) struct Opened {
    /// The published read view.
    pub view: Arc<ShardView>,
    /// The commit lock.
    pub commit: Arc<Commit>,
    /// What the start-up found.
    pub report: StartReport,
    /// What replay left of cross-shard commits.
    pub in_doubt: InDoubt,
}

/// The shard thread: storage, start-up, loop; then the shard is dropped before the storage.
fn shard_thread<S, F>(config: ShardConfig, inbox: Inbox, make: F, ready: Ready)
where
    S: Storage + 'static,
    F: FnOnce() -> Result<S>,
{
    let pinned_cpu = pin(&config);
    let mut io = match make() {
        Ok(io) => io,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (mut shard, opened) = match open(&mut io, &config, pinned_cpu) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let view = opened.view.clone();
    let _ = ready.send(Ok(opened));
    let cfg = LoopConfig { spin_before_park: Duration::from_micros(config.spin_before_park_us) };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        event_loop::run(&mut io, &inbox, &mut shard, cfg);
    }));
    if ran.is_err() {
        // A bug, never an expected path. Refuse writes from now on.
        view.poison();
        log::error!("shard {} stopped after a panic; writes are refused", config.shard_id);
    }
    // Requests still queued, or pushed from now on, answer `Closed`.
    inbox.close();
    // Its waiting acknowledgements answer `Closed`, callers' writes are refused from here;
    // nothing it owns is in flight.
    drop(shard);
    // Waits for every operation in flight before anything they point to is freed.
    drop(io);
}

fn pin(config: &ShardConfig) -> Option<usize> {
    config.cpu.and_then(|cpu| match sys::pin_current_thread(cpu) {
        Ok(()) => Some(cpu),
        Err(e) => {
            log::warn!(
                "shard {}: could not pin to CPU {cpu}: {e}; running unpinned",
                config.shard_id
            );
            None
        }
    })
}

/// Shard start-up on its storage: replay, the WAL writer and its first segment.
pub(crate) fn open<S: Storage + 'static>(
    io: &mut S,
    config: &ShardConfig,
    pinned_cpu: Option<usize>,
) -> Result<(Shard<S>, Opened)> {
    io.create_dir_all(&config.dir)
        .map_err(|e| Error::io("create shard directory", &config.dir, e))?;
    if config.wal_sync_mode == WalSyncMode::Sync && config.direct_io {
        io.probe_direct_io(&config.dir)?;
    }
    // The tree first: its newest valid superblock says where replay starts.
    let tree_options = TreeOptions {
        page_size: config.page_size,
        compress: config.compression,
        cache_bytes: config.cache_bytes,
    };
    let (tree, opened) = TreeWriter::open(io, &config.dir, config.shard_id as u32, tree_options)?;
    let checkpoint = Lsn::new(opened.superblock.checkpoint_lsn).max(Lsn::FIRST);
    let (memtable, mut writer, collector) = Memtable::create();
    let mut in_doubt = InDoubt::default();
    let mut replayed =
        reader::replay(io, &config.dir, config.shard_id as u32, checkpoint, |rec| {
            in_doubt.replay(&mut writer, rec)
        })?;
    replayed.last_ts = replayed.last_ts.max(Ts::new(opened.superblock.checkpoint_ts));
    let layers = Layers { active: memtable.clone(), frozen: Vec::new(), tree: Some(tree.root()) };
    let view =
        Arc::new(ShardView::new(config.shard_id, layers, replayed.last_ts, config.oracle.clone()));
    let next_ts = replayed.last_ts.next();
    let (log, commit) = match config.wal_sync_mode {
        WalSyncMode::Sync => {
            let (mut wal, mut direct) = DirectWal::new(wal_options(config), &replayed, io.now());
            if let Err(e) = wal.prepare(io, &mut direct) {
                return Err(first_segment_error(io, config, e));
            }
            let half = LogHalf::Direct(direct);
            let commit = Arc::new(Commit::new(half, next_ts, writer, view.clone()));
            (ShardLog::Direct { wal, commit: commit.clone() }, commit)
        }
        WalSyncMode::Normal | WalSyncMode::Async => {
            let (mut wal, mut mapped) = MappedWal::new(wal_options(config), &replayed, io.now());
            if let Err(e) = wal.prepare(io, &mut mapped) {
                return Err(first_segment_error(io, config, e));
            }
            let half = LogHalf::Mapped(mapped);
            let commit = Arc::new(Commit::new(half, next_ts, writer, view.clone()));
            (ShardLog::Mapped { wal, commit: commit.clone() }, commit)
        }
    };
    commit.set_memtable_budget(config.memtable_bytes);
    commit.open_prepares_from_replay(in_doubt.prepared.iter().map(|p| (p.txid, p.lsn)));
    let report = StartReport {
        pinned_cpu,
        ring: io.ring_setup(),
        replayed_records: replayed.report.records_applied,
        registered_buffers: registration(config).buffers > 0 && io.ring_setup().is_some(),
        recovery: replayed.report.clone(),
    };
    let shard = Shard::new(
        config.clone(),
        view.clone(),
        (memtable, collector, tree),
        log,
        &replayed.report,
    );
    Ok((shard, Opened { view, commit, report, in_doubt }))
}

/// A full disk at open gets a clear error: less room than one segment.
fn first_segment_error<S: Storage>(io: &mut S, config: &ShardConfig, e: WalError) -> Error {
    let e = e.into_error();
    if !e.is_disk_full() {
        return e;
    }
    let free = io.free_bytes(&config.dir).map_or("unknown".to_string(), |b| b.to_string());
    Error::EnvUnsupported {
        what: format!(
            "{}: no room for a WAL segment: the filesystem has {free} bytes free and a segment \
             takes wal_segment_bytes = {}; free space or lower wal_segment_bytes ({e})",
            config.dir.display(),
            config.wal_segment_bytes
        ),
    }
}

fn wal_options(config: &ShardConfig) -> WalOptions {
    let interval_ms = match config.wal_sync_mode {
        WalSyncMode::Async => config.flush_interval_ms,
        _ => config.sync_interval_ms,
    };
    WalOptions {
        shard_id: config.shard_id as u32,
        dir: config.dir.clone(),
        mode: config.wal_sync_mode,
        segment_bytes: config.wal_segment_bytes,
        direct_io: config.direct_io,
        sync_interval: Duration::from_millis(interval_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::ingress::WriteOp;
    use crate::io::{io_leaks, IoBuf, IoDone, OpenHow};
    use std::path::Path;

    /// The real storage, except that the shard thread panics right after it submits its
    /// `panic_after`-th group write: a bug in the middle of a turn, with a write in flight.
    struct PanicsMidTurn {
        io: UringStorage,
        writes: usize,
        panic_after: usize,
    }

    impl Storage for PanicsMidTurn {
        type File = <UringStorage as Storage>::File;
        type Map = <UringStorage as Storage>::Map;
        fn now(&self) -> std::time::Instant {
            self.io.now()
        }
        fn random_u64(&mut self) -> u64 {
            self.io.random_u64()
        }
        fn create_dir_all(&mut self, dir: &Path) -> std::io::Result<()> {
            self.io.create_dir_all(dir)
        }
        fn list_dir(&mut self, dir: &Path) -> std::io::Result<Vec<String>> {
            self.io.list_dir(dir)
        }
        fn read_file(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.io.read_file(path)
        }
        fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.io.read_at(path, offset, len)
        }
        fn open(&mut self, path: &Path, how: OpenHow) -> std::io::Result<Self::File> {
            self.io.open(path, how)
        }
        fn allocate(&mut self, file: &Self::File, bytes: u64) -> std::io::Result<()> {
            self.io.allocate(file, bytes)
        }
        fn write_at(&mut self, file: &Self::File, offset: u64, b: &[u8]) -> std::io::Result<()> {
            self.io.write_at(file, offset, b)
        }
        fn truncate(&mut self, file: &Self::File, bytes: u64) -> std::io::Result<()> {
            self.io.truncate(file, bytes)
        }
        fn sync_file(&mut self, file: &Self::File) -> std::io::Result<()> {
            self.io.sync_file(file)
        }
        fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.io.rename(from, to)
        }
        fn remove_file(&mut self, path: &Path) -> std::io::Result<()> {
            self.io.remove_file(path)
        }
        fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
            self.io.sync_dir(dir)
        }
        fn free_bytes(&mut self, dir: &Path) -> std::io::Result<u64> {
            self.io.free_bytes(dir)
        }
        fn probe_direct_io(&mut self, dir: &Path) -> Result<()> {
            self.io.probe_direct_io(dir)
        }
        fn map(&mut self, file: &Self::File, len: usize) -> std::io::Result<Self::Map> {
            self.io.map(file, len)
        }
        fn shared_reader(
            &mut self,
            path: &std::path::Path,
        ) -> std::io::Result<Arc<dyn crate::io::ReadAt>> {
            self.io.shared_reader(path)
        }
        fn buffer(&mut self, bytes: usize) -> Option<IoBuf> {
            self.io.buffer(bytes)
        }
        fn submit_write(
            &mut self,
            file: &Self::File,
            offset: u64,
            buf: IoBuf,
            len: usize,
            token: u64,
        ) -> Result<()> {
            self.io.submit_write(file, offset, buf, len, token)?;
            self.writes += 1;
            if self.writes == self.panic_after {
                panic!("a bug in the middle of a turn, with a group write in flight");
            }
            Ok(())
        }
        fn submit_sync(&mut self, file: &Self::File, token: u64) -> Result<()> {
            self.io.submit_sync(file, token)
        }
        fn in_flight(&self) -> usize {
            self.io.in_flight()
        }
        fn reap(&mut self, out: &mut Vec<IoDone>) -> Result<()> {
            self.io.reap(out)
        }
        fn park(
            &mut self,
            inbox: &Inbox,
            timeout: Option<Duration>,
            out: &mut Vec<IoDone>,
        ) -> Result<()> {
            self.io.park(inbox, timeout, out)
        }
    }

    fn config(dir: &Path) -> ShardConfig {
        ShardConfig {
            wal_sync_mode: WalSyncMode::Sync,
            wal_segment_bytes: 1 << 20,
            register_buffers: false,
            limits: Limits {
                max_key_bytes: 64,
                max_value_bytes: 1 << 16,
                max_batch_bytes: 1 << 18,
            },
            ..ShardConfig::new(0, dir.join("shard-000"))
        }
    }

    #[test]
    fn a_shard_thread_that_panics_mid_turn_frees_nothing_under_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let before = io_leaks();
        let make = || {
            let io = UringStorage::new(Registration::default())?;
            Ok(PanicsMidTurn { io, writes: 0, panic_after: 3 })
        };
        let shard = ShardHandle::spawn_with(config(dir.path()), make).unwrap().ready().unwrap();
        let mut results = Vec::new();
        for i in 0..8u32 {
            let done = Arc::new(Completion::new(1));
            let op = WriteOp::Put { key: i.to_be_bytes().to_vec(), value: vec![7u8; 100].into() };
            if shard.send(Request::Write { op, done: Responder::new(done.clone()) }).is_err() {
                break;
            }
            results.push(done.wait(&WaitPolicy::DEFAULT));
        }
        // The writes before the panic were acknowledged; the one in flight and later ones were
        // answered `Closed` (or refused), never left waiting.
        assert!(results.iter().take(2).all(|r| r.is_ok()), "{results:?}");
        assert!(results.iter().skip(2).all(|r| r.is_err()), "{results:?}");
        assert!(shard.is_poisoned(), "a panicked shard refuses writes");
        let _ = shard.shutdown();
        assert_eq!(io_leaks(), before, "no buffer was freed while the kernel could use it");
        // The write in flight at the panic completed before its buffer was let go: all three
        // records are in the log, and a reopen replays them.
        let reopened = ShardHandle::start(config(dir.path())).unwrap();
        assert_eq!(reopened.report().replayed_records, 3);
        reopened.shutdown().unwrap();
    }

    #[test]
    fn callers_who_staged_writes_are_answered_when_the_shard_thread_panics() {
        let dir = tempfile::tempdir().unwrap();
        let make = || {
            let io = UringStorage::new(Registration::default())?;
            Ok(PanicsMidTurn { io, writes: 0, panic_after: 3 })
        };
        let shard =
            Arc::new(ShardHandle::spawn_with(config(dir.path()), make).unwrap().ready().unwrap());
        let (finished, results) = crossbeam_channel::unbounded();
        for t in 0..4u32 {
            let (shard, finished) = (shard.clone(), finished.clone());
            std::thread::spawn(move || {
                // `Sync`: each write is staged in the open group under the commit lock, then
                // waits for the shard thread, which panics at its third group write.
                for i in 0..10_000u32 {
                    let key = (t << 16 | i).to_be_bytes();
                    if shard.write(OpRef::Put { key: &key, value: &[5u8; 64] }).is_err() {
                        break;
                    }
                }
                let _ = finished.send(t);
            });
        }
        for _ in 0..4 {
            let t = results.recv_timeout(Duration::from_secs(20));
            assert!(t.is_ok(), "a caller still waits on a shard thread that is gone");
        }
        assert!(shard.is_poisoned());
        let _ = shard.shutdown();
    }

    #[test]
    fn a_write_staged_but_never_taken_over_is_answered_when_the_shard_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mut io = UringStorage::new(Registration::default()).unwrap();
        let (shard, opened) = open(&mut io, &config(dir.path()), None).unwrap();
        let done = Arc::new(Completion::new(1));
        let staged = opened.commit.stage(
            Ops::One(OpRef::Put { key: b"k", value: b"v" }),
            Responder::new(done.clone()),
            &|_| {},
        );
        assert!(staged.is_ok(), "the open group has room");
        assert!(done.try_result().is_none(), "waits for the shard");
        // The shard thread ends (a panic or a stop) before any turn took the write over.
        drop(shard);
        assert!(matches!(done.try_result(), Some(Err(Error::Closed))));
        drop(io);
    }

    #[test]
    fn a_write_queued_for_a_holder_after_the_shard_went_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut io = UringStorage::new(Registration::default()).unwrap();
        let (shard, opened) = open(&mut io, &config(dir.path()), None).unwrap();
        drop(shard); // the shard thread is gone: nobody takes the queue over any more
        let commit = opened.commit.clone();
        let held = commit.lock(); // a holder: the caller below queues its write
        let done = Arc::new(Completion::new(1));
        let caller = {
            let (commit, done) = (commit.clone(), done.clone());
            std::thread::spawn(move || {
                let op = OpRef::Put { key: b"k", value: b"v" };
                commit.stage(Ops::One(op), Responder::new(done), &|_| {}).is_ok()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(caller.join().unwrap());
        assert!(matches!(done.try_result(), Some(Err(Error::Closed))), "answered, not stranded");
        drop(io);
    }

    #[test]
    fn closing_with_durable_writes_in_flight_frees_nothing_early() {
        let dir = tempfile::tempdir().unwrap();
        let before = io_leaks();
        let shard = Arc::new(ShardHandle::start(config(dir.path())).unwrap());
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let shard = shard.clone();
                std::thread::spawn(move || {
                    let mut acked = 0;
                    for i in 0..500u32 {
                        let done = Arc::new(Completion::new(1));
                        let key = (t << 16 | i).to_be_bytes().to_vec();
                        let op = WriteOp::Put { key, value: vec![1u8; 200].into() };
                        let req = Request::Write { op, done: Responder::new(done.clone()) };
                        if shard.send(req).is_err() || done.wait(&WaitPolicy::DEFAULT).is_err() {
                            break;
                        }
                        acked += 1;
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        shard.shutdown().unwrap(); // with group writes in flight from four callers
        let acked: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(io_leaks(), before);
        let reopened = ShardHandle::start(config(dir.path())).unwrap();
        assert!(reopened.report().replayed_records >= acked, "every acknowledged write is there");
        reopened.shutdown().unwrap();
    }
}
