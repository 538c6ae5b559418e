//! The shard's commit lock: a caller thread does its own write's CPU work.
//!
//! A put, a delete or a one-shard batch never travels to the shard thread. The calling thread
//! takes the shard's commit lock, assigns the record's LSN and timestamp, and encodes the
//! record into the caller's half of the WAL ([`LogHalf`]):
//!
//! - `Normal`/`Async`: into the mapped segment (from there it survives a process crash: the
//!   mode's promise); it inserts into the memtable, raises the visible watermark, lets go, and
//!   returns;
//! - `Sync`: into the open group's buffer; it inserts into the memtable (invisible), leaves its
//!   responder ([`Waiter`]) for the shard, lets go, nudges the shard and waits: the shard
//!   writes the group durably and answers.
//!
//! The shard thread keeps the I/O: durable group writes, fdatasync on its timer, segment
//! rollover, garbage collection (ADR 0003, `docs/ARCHITECTURE.md` "The data path").
//!
//! Waiting for the lock: a caller tries it `COMMIT_SPIN_TRIES` times, spinning. Then it queues
//! its request for whoever holds the lock (combining: the holder applies up to
//! `COMBINE_MAX` queued requests before it lets go, so a crowd of callers on few CPUs does not
//! line up for the lock one context switch at a time) and waits for the answer, still trying
//! the lock itself: spinning, then yielding `COMMIT_YIELDS` times, then parking in slices of
//! `COMMIT_PARK`. The shard thread also applies queued requests on every turn.
//!
//! When the active segment (or the open group) has no room for a record, nothing is copied:
//! the request goes to the shard thread as a message ([`Written::Full`]), which makes room and
//! places it, so a segment is created through the shard's storage, never on a caller's thread.
//!
//! Shared: one per shard, used by every caller thread and by the shard thread. Invariants:
//! LSNs and timestamps are assigned, records copied and the watermark raised in one order,
//! under the lock, so the watermark never covers a write that is not in the memtable and the
//! log; no thread sends a message or waits for another while it holds the lock (the shard
//! thread takes it, so that would deadlock).

mod txn;

pub use txn::{commit_prepared, Applying, KeyLocks, KeyRange, TxPart, TxStep, HELD};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::ingress::{Completion, Request, Responder};
use crate::memtable::MemtableWriter;
use crate::memtable::{self, EntryRef};
use crate::stats::{OpKind, ShardStats};
use crate::version::Lsn;
use crate::version::Ts;
use crate::view::ShardView;
use crate::wal::record::{AsOp, Body, OpRef, Ops, WriteOp};
use crate::wal::{DirectLog, MappedLog};

/// Times a caller tries the commit lock, spinning, before it queues its request.
pub const COMMIT_SPIN_TRIES: u32 = 64;
/// Times a queued caller yields its CPU (trying the lock in between) before it parks.
pub const COMMIT_YIELDS: u32 = 16;
/// How long a queued caller parks at a time before it looks again (it is woken as soon as its
/// request is applied; the slice only bounds a missed chance to take the lock itself).
pub const COMMIT_PARK: Duration = Duration::from_micros(200);
/// Requests that may wait for a lock holder; past it, callers wait for the lock itself.
pub const COMBINE_QUEUE_DEPTH: usize = 256;
/// Queued requests a holder applies before it lets go, beyond its own.
pub const COMBINE_MAX: usize = 64;
/// Times a holder looks at the queue again after letting go (each time it finds the lock
/// free and requests waiting), so one caller does not combine for everyone forever.
const HOLD_ROUNDS: usize = 4;
/// One write in this many has its latency measured on the caller path (two clock reads and a
/// histogram update); counts and errors are recorded for every write.
pub const LATENCY_SAMPLE_EVERY: u32 = 8;
/// Keys whose old versions await collection, at most (past it, old versions wait for the
/// key's next overwrite).
pub const GC_QUEUE_MAX: usize = 1 << 20;

thread_local! {
    /// Writes this thread made through a commit lock, for latency sampling.
    static WRITES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The start of a write whose latency is sampled (every `LATENCY_SAMPLE_EVERY`-th write of a
/// thread), or `None`.
fn sample_latency() -> Option<Instant> {
    WRITES.with(|w| {
        let n = w.get().wrapping_add(1);
        w.set(n);
        n.is_multiple_of(LATENCY_SAMPLE_EVERY).then(Instant::now)
    })
}

/// The operations of one WAL record, owned: what waits in the combining queue or travels to
/// the shard thread.
#[derive(Debug)]
pub enum OwnedOps {
    /// One put or delete (no allocation for the list).
    One(WriteOp),
    /// A one-shard batch, applied atomically.
    Many(Vec<WriteOp>),
}

impl OwnedOps {
    /// The operations, borrowed.
    pub fn as_ops(&self) -> Ops<'_> {
        match self {
            OwnedOps::One(op) => Ops::One(op.op()),
            OwnedOps::Many(ops) => Ops::Many(ops),
        }
    }

    /// Owned copies of `ops`.
    pub fn copy(ops: Ops<'_>) -> OwnedOps {
        match ops {
            Ops::One(op) => OwnedOps::One(op.to_write_op()),
            ops => OwnedOps::Many(ops.to_vec()),
        }
    }

    /// The message that asks the shard thread to apply these operations.
    pub fn into_request(self, done: Responder) -> Request {
        match self {
            OwnedOps::One(op) => Request::Write { op, done },
            OwnedOps::Many(ops) => Request::Batch { ops, done },
        }
    }
}

/// The kind of request `ops` make, for the statistics.
pub fn kind_of(ops: Ops<'_>) -> OpKind {
    match ops {
        Ops::One(OpRef::Put { .. }) => OpKind::Put,
        Ops::One(OpRef::Delete { .. }) => OpKind::Delete,
        Ops::Many(_) | Ops::Refs(_) => OpKind::Batch,
    }
}

/// What became of a write.
#[derive(Debug)]
#[must_use]
pub enum Written {
    /// Applied (acknowledged under the mode's promise), or refused.
    Done(Result<()>),
    /// `Sync`: placed in the open group at `lsn` with timestamp `ts`, invisible until the
    /// group is durable; the shard acknowledges it then.
    Staged {
        /// Its place in the log.
        lsn: Lsn,
        /// Its version.
        ts: Ts,
    },
    /// The active segment (or `Sync`: the open group) has no room: nothing was placed; send
    /// the write to the shard thread, which makes room.
    Full,
}

/// The half of the WAL a write needs, per mode.
pub enum LogHalf {
    /// `Normal`/`Async`: the mapped segment; the copy is the promise.
    Mapped(MappedLog),
    /// `Sync`: the open group, which the shard writes durably.
    Direct(DirectLog),
}

impl LogHalf {
    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> Lsn {
        match self {
            LogHalf::Mapped(log) => log.next_lsn(),
            LogHalf::Direct(log) => log.next_lsn(),
        }
    }

    fn append(&mut self, ts: Ts, ops: Body<'_>) -> Option<Lsn> {
        match self {
            LogHalf::Mapped(log) => log.append(ts, ops),
            LogHalf::Direct(log) => log.append(ts, ops),
        }
    }
}

/// A `Sync` write staged by a caller (or a lock holder for it), waiting for its group to be
/// durable: the shard takes it over.
pub struct Waiter {
    /// Its place in the log.
    pub lsn: Lsn,
    /// Its version.
    pub ts: Ts,
    /// Whom to answer.
    pub done: Responder,
    /// What kind of request it is.
    pub kind: OpKind,
    /// When the caller asked.
    pub started: Instant,
}

/// What the commit lock protects.
pub struct CommitState {
    /// The caller's half of the WAL.
    pub log: LogHalf,
    /// `Sync`: staged writes waiting for the shard to take them over, in LSN order.
    waiting: Vec<Waiter>,
    /// Reused by `place`: a batch's keys, prepared.
    prepared: Vec<memtable::Prepared>,
    /// The timestamp the next write gets (at least: a snapshot's fence may raise it).
    next_ts: Ts,
    /// The timestamp of the newest commit placed on this shard.
    last_placed: Ts,
    memtable: MemtableWriter,
    /// Keys given a newer version, for the shard's garbage collection.
    gc: Vec<(EntryRef, Ts)>,
    /// The shard is closing or has stopped: writes answer `Closed`.
    closed: bool,
    /// Keys and ranges held by cross-shard commits in progress.
    locks: KeyLocks,
    /// The memtable's budget (`ShardConfig::memtable_bytes`; 0: none).
    budget: usize,
    /// A frozen memtable is waiting for (or in) its flush.
    pub flushing: bool,
    /// The PREPAREs placed here whose outcome is not placed yet: transaction id → LSN. A
    /// checkpoint never passes the oldest (`freeze`).
    open_prepares: BTreeMap<u64, Lsn>,
    /// The writes applied under the lock: counts, errors and latencies (from the call to the
    /// acknowledgement, the wait for the lock included).
    pub stats: ShardStats,
    /// The simulation's view of the placement order: the address of each placed record's
    /// first key (unique among requests in flight). Kept only once the simulation asked
    /// ([`Commit::record_placements`]): a build with the feature on (every example and test
    /// build) would otherwise hold 8 bytes per write forever.
    #[cfg(any(test, feature = "simulation"))]
    placed: Option<Vec<usize>>,
}

/// What `place` prepared in the memtable for a write's keys.
enum Prepared {
    /// One write.
    One(memtable::Prepared),
    /// A batch: one per operation, in `CommitState::prepared`.
    Many,
}

/// Where `place` put a write.
enum Placed {
    /// Not placed: the shard is closed or poisoned.
    Refused(Error),
    /// Not placed: no room (see [`Written::Full`]).
    Full,
    /// In the log and the memtable, at `lsn` with version `ts` (not yet visible).
    At { lsn: Lsn, ts: Ts },
}

impl CommitState {
    /// `Normal`/`Async`: places `ops` and makes them visible (the copy is the promise),
    /// recorded in the statistics as a request that started at `started` (its latency, when
    /// it was sampled).
    fn apply(&mut self, view: &ShardView, ops: Ops<'_>, started: Option<Instant>) -> Written {
        if matches!(self.log, LogHalf::Direct(_)) {
            return Written::Full; // `Sync` writes are staged, never applied here
        }
        let written = match self.place(view, ops) {
            Placed::Refused(e) => Written::Done(Err(e)),
            Placed::Full => return Written::Full,
            Placed::At { ts, .. } => {
                // Before the acknowledgement: a caller reads its own write once told it is
                // done.
                view.publish(ts);
                Written::Done(Ok(()))
            }
        };
        let took = started.map(|s| Instant::now().saturating_duration_since(s));
        let ok = matches!(written, Written::Done(Ok(())));
        self.stats.record_op_sampled(kind_of(ops), took, ok);
        written
    }

    /// `Sync`: places `ops` for a caller who waits on `done`: staged (the shard answers once
    /// the group is durable), refused (answered now), or `Err(done)` when it did not fit (the
    /// caller sends it to the shard).
    fn stage(
        &mut self,
        view: &ShardView,
        ops: Ops<'_>,
        done: Responder,
        started: Instant,
    ) -> std::result::Result<(), Responder> {
        let kind = kind_of(ops);
        match self.place(view, ops) {
            Placed::At { lsn, ts } => {
                self.waiting.push(Waiter { lsn, ts, done, kind, started });
                Ok(())
            }
            Placed::Refused(e) => {
                let took = Instant::now().saturating_duration_since(started);
                self.stats.record_op(kind, took, false);
                done.complete(Err(e));
                Ok(())
            }
            Placed::Full => Err(done),
        }
    }

    /// A queued request, applied or staged as the mode wants; `Err` gives it back when it did
    /// not fit.
    fn apply_queued(
        &mut self,
        view: &ShardView,
        queued: Queued,
    ) -> std::result::Result<(), (OwnedOps, Responder)> {
        let Queued { ops, done, started } = queued;
        if matches!(self.log, LogHalf::Direct(_)) {
            let started = started.unwrap_or_else(Instant::now);
            return self.stage(view, ops.as_ops(), done, started).map_err(|done| (ops, done));
        }
        match self.apply(view, ops.as_ops(), started) {
            Written::Done(result) => {
                done.complete(result);
                Ok(())
            }
            Written::Staged { .. } | Written::Full => Err((ops, done)),
        }
    }

    /// Shard-side (`Sync`): the staged writes, in LSN order, for the shard to acknowledge.
    pub fn take_waiting(&mut self) -> std::vec::Drain<'_, Waiter> {
        self.waiting.drain(..)
    }

    /// No staged write waits for the shard to take it over.
    pub fn waiting_is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Places one record for `ops` in the log and applies it to the memtable, not yet
    /// visible.
    fn place(&mut self, view: &ShardView, ops: Ops<'_>) -> Placed {
        if self.closed {
            return Placed::Refused(Error::Closed);
        }
        if view.is_poisoned() {
            return Placed::Refused(Error::Poisoned { shard: view.shard_id() });
        }
        if !self.locks.is_empty() {
            let mut blocked = false;
            ops.each(|op| blocked |= self.locks.blocks_write(op.key(), None));
            if blocked {
                // The writer retries (a plain write) or reports the conflict (a transaction).
                return Placed::Refused(txn::locked());
            }
        }
        let ts = self.next_ts;
        // The memtable slots the writes go to are fetched while the record is encoded (a
        // batch's all at once: the misses overlap).
        let memtable = &mut self.memtable;
        let prepared = match ops {
            Ops::One(op) => Prepared::One(memtable.prepare(op.key())),
            ops => {
                let hints = &mut self.prepared;
                hints.clear();
                ops.each(|op| hints.push(memtable.prepare(op.key())));
                Prepared::Many
            }
        };
        let Some(lsn) = self.log.append(ts, Body::Write(ops)) else {
            return Placed::Full;
        };
        self.next_ts = ts.next();
        self.last_placed = ts;
        #[cfg(any(test, feature = "simulation"))]
        if let Some(placed) = &mut self.placed {
            placed.push(ops.first_key().map_or(0, |k| k.as_ptr() as usize));
        }
        let (memtable, gc) = (&mut self.memtable, &mut self.gc);
        let mut hints = self.prepared.iter();
        ops.each(|op| {
            let hint = match prepared {
                Prepared::One(p) => Some(p),
                Prepared::Many => hints.next().copied(),
            };
            let older = match hint {
                Some(p) => memtable.insert_prepared(p, op.key(), ts, op.value()),
                None => memtable.insert(op.key(), ts, op.value()),
            };
            if let Some(older) = older {
                if gc.len() < GC_QUEUE_MAX {
                    gc.push((older, ts));
                }
            }
        });
        Placed::At { lsn, ts }
    }

    /// The timestamp of the newest commit placed on this shard (once it is visible, every
    /// commit of this shard is).
    pub fn last_ts(&self) -> Ts {
        self.last_placed
    }

    /// Makes every commit placed from now on get a timestamp of at least `ts`.
    pub fn raise_clock(&mut self, ts: Ts) {
        self.next_ts = self.next_ts.max(ts);
    }

    /// Shard-side: refuses every write from now on (a close, or a stopped shard thread).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Shard-side: moves the keys queued for garbage collection into `into`, keeping it
    /// under `GC_QUEUE_MAX`.
    /// Freezes the memtable writes went to: `writer` (a new memtable's) takes the writes from
    /// now on. Returns the frozen writer, the checkpoint (the first LSN whose record may not
    /// be in the frozen memtable: the next LSN, or an open PREPARE's, whose writes are applied
    /// only at its outcome) and the newest timestamp placed. Queued collections of the frozen
    /// memtable are dropped: it is never written again.
    pub fn freeze(&mut self, writer: MemtableWriter) -> (MemtableWriter, Lsn, Ts) {
        let frozen = std::mem::replace(&mut self.memtable, writer);
        self.flushing = true;
        self.gc.clear();
        let next = self.log.next_lsn();
        let checkpoint = self.open_prepares.values().min().map_or(next, |&p| p.min(next));
        (frozen, checkpoint, self.last_placed)
    }

    pub fn take_gc(&mut self, into: &mut VecDeque<(EntryRef, Ts)>) {
        let room = GC_QUEUE_MAX.saturating_sub(into.len());
        into.extend(self.gc.drain(..).take(room));
        self.gc.clear();
    }
}

/// The lock holder's own write.
enum Own<'a> {
    /// `Normal`/`Async`: apply it (its latency sampled from `started`, if set).
    Apply(Ops<'a>, Option<Instant>),
    /// `Sync`: stage it for the caller waiting on the responder.
    Stage(Ops<'a>, Instant, Responder),
}

/// What became of the holder's own write.
enum Held {
    /// `Normal`/`Async`: applied or refused.
    Applied(Written),
    /// `Sync`: staged, or refused and answered.
    Staged,
    /// `Sync`: no room; the responder comes back to the caller.
    Full(Responder),
}

/// A request queued for the lock holder.
struct Queued {
    ops: OwnedOps,
    done: Responder,
    started: Option<Instant>,
}

/// One shard's commit lock and the requests waiting for its holder.
pub struct Commit {
    state: Mutex<CommitState>,
    queue_tx: Sender<Queued>,
    queue_rx: Receiver<Queued>,
    view: Arc<ShardView>,
    /// Requests in the combining queue, as far as the holder needs to know: raised after a
    /// send (before the sender's SeqCst fence), lowered after a receive. A holder that reads 0
    /// skips the queue; a sender whose request it skipped finds the lock free after its fence.
    queued: AtomicUsize,
    /// Set by `close` (then under the lock too): writes are refused from now on.
    closed: AtomicBool,
    /// Keys queued for garbage collection (so the shard looks without taking the lock).
    gc_pending: AtomicUsize,
    /// How full the memtable is against its budget, as of the last holder: 0 below, 1 at or
    /// over it (the shard should freeze it), 2 at twice it (writers wait for the flush).
    fullness: AtomicUsize,
    /// Writes that waited for a flush (memtables at twice their budget).
    write_stalls: AtomicU64,
}

/// `Commit::fullness`: at or over the budget.
const FULL: usize = 1;
/// `Commit::fullness`: at twice the budget: writers wait.
const OVERFULL: usize = 2;

impl Commit {
    /// The commit lock over `log`, continuing at timestamp `next_ts`.
    pub fn new(log: LogHalf, next_ts: Ts, memtable: MemtableWriter, view: Arc<ShardView>) -> Self {
        let (queue_tx, queue_rx) = crossbeam_channel::bounded(COMBINE_QUEUE_DEPTH);
        let state = CommitState {
            log,
            waiting: Vec::new(),
            prepared: Vec::new(),
            next_ts,
            last_placed: Ts::new(next_ts.get().saturating_sub(1)),
            memtable,
            gc: Vec::new(),
            closed: false,
            locks: KeyLocks::default(),
            open_prepares: BTreeMap::new(),
            budget: 0,
            flushing: false,
            stats: ShardStats::new(view.shard_id()),
            #[cfg(any(test, feature = "simulation"))]
            placed: None,
        };
        Commit {
            state: Mutex::new(state),
            queue_tx,
            queue_rx,
            view,
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            gc_pending: AtomicUsize::new(0),
            fullness: AtomicUsize::new(0),
            write_stalls: AtomicU64::new(0),
        }
    }

    /// Shard-side: takes the lock, blocking. A panic that poisoned the mutex poisons the shard
    /// (writes are refused from then on), so the state is still safe to look at.
    pub fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|p| self.poisoned(p.into_inner()))
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, CommitState>> {
        match self.state.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(self.poisoned(p.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// A thread panicked holding the lock (a bug): what it was placing may be half in the
    /// memtable, so the shard refuses writes from now on (its view is poisoned: `place`
    /// refuses, and nothing more is published).
    fn poisoned<'a>(&self, guard: MutexGuard<'a, CommitState>) -> MutexGuard<'a, CommitState> {
        self.view.poison();
        guard
    }

    /// Caller-side: applies one record's operations on the calling thread (or has the lock
    /// holder apply them). `Full`: nothing was placed; the caller sends them to the shard
    /// thread.
    pub fn write(&self, ops: Ops<'_>, forward: &dyn Fn(Request)) -> Written {
        let started = sample_latency();
        for _ in 0..COMMIT_SPIN_TRIES {
            if let Some(guard) = self.try_lock() {
                return self.hold_own(guard, ops, started, forward);
            }
            std::hint::spin_loop();
        }
        if self.queue_tx.is_full() {
            return self.hold_own(self.lock(), ops, started, forward);
        }
        // Contended: queue a copy for whoever holds the lock.
        let completion = Arc::new(Completion::new(1));
        let queued =
            Queued { ops: OwnedOps::copy(ops), done: Responder::new(completion.clone()), started };
        if self.send_queued(queued).is_err() {
            // Filled meanwhile: the copy is dropped unapplied (no one waits on its answer).
            return self.hold_own(self.lock(), ops, started, forward);
        }
        // Either a holder sees the request after it lets go, or we see the lock free.
        fence(Ordering::SeqCst);
        let mut rounds: u32 = 0;
        loop {
            if let Some(result) = completion.try_result() {
                return Written::Done(result);
            }
            if let Some(guard) = self.try_lock() {
                drop(self.hold(guard, None, forward));
                continue;
            }
            rounds = rounds.saturating_add(1);
            if rounds < COMMIT_SPIN_TRIES {
                std::hint::spin_loop();
            } else if rounds < COMMIT_SPIN_TRIES + COMMIT_YIELDS {
                std::thread::yield_now();
            } else {
                completion.park_timeout(COMMIT_PARK);
            }
        }
    }

    /// Queues a request for the next lock holder, as a caller that found the lock taken does
    /// (the simulation uses it to stage that race). `Err` gives it back when the queue is full.
    #[cfg(any(test, feature = "simulation"))]
    pub fn enqueue(&self, ops: OwnedOps, done: Responder) -> std::result::Result<(), OwnedOps> {
        let queued = Queued { ops, done, started: Some(Instant::now()) };
        self.send_queued(queued).map_err(|q| q.ops)
    }

    /// Queues a request for the lock holder. The count is raised first, so it never falls
    /// below what the channel holds (a holder that reads 0 has nothing to miss).
    fn send_queued(&self, queued: Queued) -> std::result::Result<(), Queued> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.queue_tx.try_send(queued).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            e.into_inner()
        })
    }

    fn hold_own<'a>(
        &'a self,
        guard: MutexGuard<'a, CommitState>,
        ops: Ops<'_>,
        started: Option<Instant>,
        forward: &dyn Fn(Request),
    ) -> Written {
        match self.hold(guard, Some(Own::Apply(ops, started)), forward) {
            Some(Held::Applied(written)) => written,
            _ => Written::Done(Ok(())),
        }
    }

    /// `Sync`, caller-side: stages one record's operations in the open group under the lock
    /// (or queues them for the lock holder, or the shard, to stage); `done` is answered once the
    /// group is durable. `Err(done)`: nothing was placed (no room in the open group); the
    /// caller sends the write to the shard thread. Either way the caller then wakes the shard.
    pub fn stage(
        &self,
        ops: Ops<'_>,
        done: Responder,
        forward: &dyn Fn(Request),
    ) -> std::result::Result<(), Responder> {
        let started = Instant::now();
        for _ in 0..COMMIT_SPIN_TRIES {
            if let Some(guard) = self.try_lock() {
                return match self.hold(guard, Some(Own::Stage(ops, started, done)), forward) {
                    Some(Held::Full(done)) => Err(done),
                    _ => Ok(()),
                };
            }
            std::hint::spin_loop();
        }
        // Contended: whoever holds the lock, or the shard's next turn, stages a copy.
        let queued = Queued { ops: OwnedOps::copy(ops), done, started: Some(started) };
        match self.send_queued(queued) {
            Ok(()) => {
                // A shard that closed meanwhile will take nothing more from the queue: answer
                // what is left ourselves (`close` sets the flag before it drains).
                fence(Ordering::SeqCst);
                if self.closed.load(Ordering::SeqCst) {
                    drop(self.hold(self.lock(), None, forward));
                }
                Ok(())
            }
            Err(Queued { done, .. }) => {
                match self.hold(self.lock(), Some(Own::Stage(ops, started, done)), forward) {
                    Some(Held::Full(done)) => Err(done),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The records placed since the last call, in order, by the address of their first key
    /// (the simulation's model follows the placement order).
    #[cfg(any(test, feature = "simulation"))]
    pub fn take_placed(&self) -> Vec<usize> {
        self.lock().placed.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Keeps the placement order from now on, for [`take_placed`](Self::take_placed).
    #[cfg(any(test, feature = "simulation"))]
    pub fn record_placements(&self) {
        self.lock().placed.get_or_insert_with(Vec::new);
    }

    /// Applies (or stages) `own`, if any, and then queued requests under `guard`, lets go,
    /// and forwards what did not fit to the shard thread. Returns what became of `own`.
    fn hold<'a>(
        &'a self,
        mut guard: MutexGuard<'a, CommitState>,
        own: Option<Own<'_>>,
        forward: &dyn Fn(Request),
    ) -> Option<Held> {
        let held = own.map(|own| match own {
            Own::Apply(ops, started) => Held::Applied(guard.apply(&self.view, ops, started)),
            Own::Stage(ops, started, done) => match guard.stage(&self.view, ops, done, started) {
                Ok(()) => Held::Staged,
                Err(done) => Held::Full(done),
            },
        });
        let mut full = Vec::new();
        for _ in 0..HOLD_ROUNDS {
            self.combine(&mut guard, |ops, done| full.push((ops, done)));
            self.gc_pending.store(guard.gc.len(), Ordering::Relaxed);
            self.note_fullness(&guard);
            drop(guard);
            for (ops, done) in full.drain(..) {
                forward(ops.into_request(done)); // a refused send answers `Closed`
            }
            // A request queued while we let go: apply it, unless someone else holds the lock
            // now (that holder looks again when it lets go; waiters keep trying too).
            fence(Ordering::SeqCst);
            if self.queued.load(Ordering::SeqCst) == 0 {
                break;
            }
            match self.try_lock() {
                Some(g) => guard = g,
                None => break,
            }
        }
        held
    }

    /// Applies (or stages) up to `COMBINE_MAX` queued requests; `full` gets those that did
    /// not fit.
    pub fn combine(&self, state: &mut CommitState, mut full: impl FnMut(OwnedOps, Responder)) {
        for _ in 0..COMBINE_MAX {
            if self.queued.load(Ordering::Relaxed) == 0 {
                break;
            }
            let Ok(queued) = self.queue_rx.try_recv() else { break };
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if let Err((ops, done)) = state.apply_queued(&self.view, queued) {
                full(ops, done);
            }
        }
    }

    /// True when requests wait for a lock holder.
    pub fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0 || !self.queue_rx.is_empty()
    }

    /// Caller-side, for a database snapshot at `ts`: raises this shard's clock above `ts` and
    /// returns the timestamp the shard's visible watermark must reach before the snapshot
    /// reads (its newest commit at or below `ts`).
    pub fn fence(&self, ts: Ts) -> Ts {
        let mut state = self.lock();
        state.raise_clock(ts.next());
        state.last_ts().min(ts)
    }

    /// True once the shard closed or stopped: nothing more is placed or acknowledged.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Records PREPAREs replay left in doubt as open: no checkpoint passes them before the
    /// database settles them (their writes are applied only then, with a COMMIT marker that
    /// replay can only use while it still sees the PREPARE).
    pub fn open_prepares_from_replay(&self, prepares: impl Iterator<Item = (u64, Lsn)>) {
        self.lock().open_prepares.extend(prepares);
    }

    /// Sets the memtable's budget (0: none).
    pub fn set_memtable_budget(&self, bytes: usize) {
        let mut state = self.lock();
        state.budget = bytes;
        self.note_fullness(&state);
    }

    /// Records how full the memtable is (see `fullness`), under the lock.
    pub fn note_fullness(&self, state: &CommitState) {
        let bytes = state.memtable.approx_bytes();
        // The hard limit is on the memtables together: twice the budget, the frozen one
        // counting as one budget while its flush runs.
        let hard = if state.flushing { 1 } else { 2 };
        let fullness = match state.budget {
            0 => 0,
            b if bytes >= hard * b => OVERFULL,
            b if bytes >= b => FULL,
            _ => 0,
        };
        self.fullness.store(fullness, Ordering::Relaxed);
    }

    /// True when the memtable reached its budget as of the last holder: the shard should
    /// freeze it (callers nudge the shard).
    #[inline]
    pub fn memtable_full(&self) -> bool {
        self.fullness.load(Ordering::Relaxed) >= FULL
    }

    /// True when the memtable reached twice its budget: a flush is behind, writers wait.
    #[inline]
    pub fn memtable_overfull(&self) -> bool {
        self.fullness.load(Ordering::Relaxed) >= OVERFULL
    }

    /// Counts a write that waited for a flush.
    pub fn count_write_stall(&self) {
        self.write_stalls.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes that waited for a flush so far.
    pub fn write_stalls(&self) -> u64 {
        self.write_stalls.load(Ordering::Relaxed)
    }

    /// Keys queued for garbage collection, as of the last holder.
    pub fn gc_pending(&self) -> usize {
        self.gc_pending.load(Ordering::Relaxed)
    }

    /// Shard-side: places `ops` under `state` as a caller would (the shard records the
    /// request in its own statistics).
    pub fn apply(&self, state: &mut CommitState, ops: Ops<'_>) -> Written {
        match state.place(&self.view, ops) {
            Placed::Refused(e) => Written::Done(Err(e)),
            Placed::Full => Written::Full,
            Placed::At { lsn, ts } => match state.log {
                LogHalf::Mapped(_) => {
                    self.view.publish(ts);
                    Written::Done(Ok(()))
                }
                LogHalf::Direct(_) => Written::Staged { lsn, ts },
            },
        }
    }

    /// Shard-side: notes how many keys await collection after the shard applied writes.
    pub fn note_gc(&self, state: &CommitState) {
        self.gc_pending.store(state.gc.len(), Ordering::Relaxed);
    }

    /// Shard-side: refuses writes from now on and answers every queued request `Closed`.
    /// Writes already staged (`Sync`) are still the shard's to acknowledge once durable.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.lock().close();
        self.drain_queue(&Error::Closed);
    }

    /// Shard-side, when the shard thread ends for good (a stop, or a panic): refuses writes and
    /// answers everything still waiting for it (queued requests and staged `Sync` writes) with
    /// `err`, so no caller waits for a shard that is gone.
    pub fn abandon(&self, err: &Error) {
        self.closed.store(true, Ordering::SeqCst);
        let mut state = self.lock();
        state.close();
        self.refuse_waiting(&mut state, err);
    }

    /// Shard-side, when the shard is poisoned: answers the queued requests (the poisoned view
    /// refuses them) and the staged writes with `err`.
    pub fn refuse_waiting(&self, state: &mut CommitState, err: &Error) {
        self.drain_queue(err);
        for waiter in state.take_waiting() {
            waiter.done.complete(Err(err.duplicate()));
        }
    }

    fn drain_queue(&self, err: &Error) {
        while let Ok(queued) = self.queue_rx.try_recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            queued.done.complete(Err(err.duplicate()));
        }
    }
}
