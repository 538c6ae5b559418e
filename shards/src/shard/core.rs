//! The shard's state machine: places requests in the WAL and the memtable, acknowledges them
//! when their durability promise holds, syncs on a timer, collects old versions, keeps its
//! statistics, and stops for good (poisoned) when a durable write fails.
//!
//! Shard-local: owned by the shard thread. Callers write under the shard's commit lock
//! themselves (`commit.rs`: applied in `Normal`/`Async`, staged in the open group in `Sync`)
//! and the shard takes the same lock for what it does to the log (group writes, syncs, claims,
//! rollover, the `Sync` acknowledgements callers left, the writes sent to it when there is no
//! room). Callers read the published `ShardView`. Generic over the storage, so the same code runs on the real disk
//! and in the simulation. Invariants, asserted in release builds: the WAL's progress is in
//! order (`WalProgress::check`), acknowledgements leave in LSN order (`acks.rs`), and the
//! visible timestamp never passes what the mode's promise covers: the shard publishes a
//! write's timestamp only when the WAL has reached the write's LSN in the mode's sense
//! (`Sync`: durable, `Normal`: written out of the process, `Async`: placed).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acks::{Ack, PendingAcks, Released};
use crate::commit::{kind_of, Commit, CommitState, LogHalf, OwnedOps, Written};
use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{Inbox, Request, Responder};
use crate::io::{IoDone, Storage};
use crate::memtable::{Direction, EntryRef, GarbageCollector, Memtable};
use crate::runtime::event_loop::{Reactor, Turn};
use crate::stats::{OpKind, ShardStats, Stall};
use crate::tree::TreeWriter;
use crate::version::{Lsn, Ts};
use crate::view::Layers;
use crate::view::ShardView;
use crate::wal::reader;
use crate::wal::reader::RecoveryReport;
use crate::wal::{DirectWal, MappedWal, Urgency, WalError, WalProgress};
use std::ops::Bound;

/// Keys collected per turn, at most.
const GC_PER_TURN: usize = 256;

/// The log of either mode.
pub enum ShardLog<S: Storage> {
    /// `Normal` and `Async`: callers copy records under the commit lock; the shard keeps the
    /// files, the syncs and the rollover.
    Mapped {
        /// The shard thread's half.
        wal: MappedWal<S>,
        /// The commit lock, over the other half.
        commit: Arc<Commit>,
    },
    /// `Sync`: callers stage records in the open group under the commit lock; the shard
    /// writes the groups durably, keeps the files and acknowledges.
    Direct {
        /// The shard thread's half.
        wal: DirectWal<S>,
        /// The commit lock, over the other half.
        commit: Arc<Commit>,
    },
}

impl<S: Storage> ShardLog<S> {
    fn commit(&self) -> &Arc<Commit> {
        match self {
            ShardLog::Mapped { commit, .. } | ShardLog::Direct { commit, .. } => commit,
        }
    }
}

/// One shard.
pub struct Shard<S: Storage> {
    config: ShardConfig,
    view: Arc<ShardView>,
    memtable: Arc<Memtable>,
    collector: GarbageCollector,
    log: ShardLog<S>,
    acks: PendingAcks,
    /// Reused by `settle`.
    released: Released,
    /// Completions recorded while reaping, handled in the next turn.
    completions: Vec<IoDone>,
    gc_queue: VecDeque<(EntryRef, Ts)>,
    shutdown: Option<Responder>,
    /// A clean close could not write its durable claim (no room for a segment): stop anyway.
    claim_failed: bool,
    poisoned: Option<Error>,
    stats: ShardStats,
    stall_threshold: Duration,
    /// `Normal`/`Async`: when the log next needs the shard (a sync, a claim, a look), as of
    /// the last time the shard held the commit lock; `None` until then.
    due: Option<Instant>,
    /// The on-disk tree below the memtables.
    tree: TreeWriter<S>,
    /// The memtable frozen for the next flush, if any.
    frozen: Option<Frozen>,
    /// The checkpoint of the generation before the tree's newest: WAL segments are removed
    /// only below it, so falling back to that superblock (the newest found damaged) loses
    /// nothing.
    older_checkpoint: Lsn,
    /// A compaction asked for, and whether its freeze happened.
    compacting: Option<(crossbeam_channel::Sender<Result<u64>>, bool)>,
    /// The log's records at the last freeze, and when to look at them next.
    wal_at_freeze: u64,
    next_wal_check: Option<Instant>,
}

/// How often the shard compares the log's growth with its budget.
const WAL_CHECK_EVERY: Duration = Duration::from_millis(50);

/// A memtable frozen for a flush.
struct Frozen {
    table: Arc<Memtable>,
    /// The first LSN whose record may not be in it (`CommitState::freeze`).
    checkpoint: Lsn,
    /// The newest timestamp in it.
    max_ts: Ts,
    /// Where the next flush step starts (after this key); `None`: at the start.
    resume: Option<Vec<u8>>,
}

/// Keys one flush step merges into the tree (then the loop runs again).
const FLUSH_STEP_KEYS: usize = 16 * 1024;

impl<S: Storage> Shard<S> {
    /// A shard over replayed state: `next_ts` follows the highest replayed timestamp.
    pub fn new(
        config: ShardConfig,
        view: Arc<ShardView>,
        (memtable, collector, tree): (Arc<Memtable>, GarbageCollector, TreeWriter<S>),
        log: ShardLog<S>,
        recovery: &RecoveryReport,
    ) -> Self {
        let mut stats = ShardStats::new(config.shard_id);
        stats.set_recovery(recovery);
        let older_checkpoint = Lsn::new(tree.root().superblock().checkpoint_lsn);
        Shard {
            tree,
            frozen: None,
            older_checkpoint,
            compacting: None,
            wal_at_freeze: 0,
            next_wal_check: None,
            stats,
            stall_threshold: Duration::from_millis(config.stall_threshold_ms),
            config,
            view,
            memtable,
            collector,
            log,
            acks: PendingAcks::default(),
            released: Released::default(),
            completions: Vec::new(),
            gc_queue: VecDeque::new(),
            shutdown: None,
            claim_failed: false,
            poisoned: None,
            due: None,
        }
    }

    fn handle(&mut self, io: &mut S, req: Request, now: Instant) {
        match req {
            Request::Write { op, done } => {
                let kind = if op.value().is_some() { OpKind::Put } else { OpKind::Delete };
                self.write(io, OwnedOps::One(op), Ack { done, kind, started: now });
            }
            Request::Batch { ops, done } => {
                let ack = Ack { done, kind: OpKind::Batch, started: now };
                self.write(io, OwnedOps::Many(ops), ack);
            }
            Request::Sync { done } => self.sync(Ack { done, kind: OpKind::Sync, started: now }),
            Request::MakeRoom { bytes, done } => self.make_room(io, bytes, done, now),
            Request::Compact { reply } => self.compacting = Some((reply, false)),
            Request::Stats { reply } => {
                let _ = reply.try_send(self.snapshot_stats());
            }
            Request::Shutdown { done } => {
                self.log.commit().close(); // callers' writes answer `Closed` from here
                self.shutdown = Some(done);
            }
        }
    }

    /// Answers `ack` with `result` and records it.
    fn ack(&mut self, ack: Ack, result: Result<()>, now: Instant) {
        self.stats.record_op(ack.kind, now.saturating_duration_since(ack.started), result.is_ok());
        ack.done.complete(result);
    }

    fn ack_all(&mut self, acks: Vec<Ack>, result: &Result<()>, now: Instant) {
        for ack in acks {
            let r = match result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            self.ack(ack, r, now);
        }
    }

    /// Places one WAL record for a write sent to the shard (in `Normal`/`Async` because it did
    /// not fit the active segment; in `Sync` because it did not fit the open group, or a
    /// caller sent it), making room first when needed.
    fn write(&mut self, io: &mut S, ops: OwnedOps, ack: Ack) {
        let now = ack.started;
        if self.poisoned.is_some() {
            return self.ack(ack, Err(Error::Poisoned { shard: self.config.shard_id }), now);
        }
        let commit = self.log.commit().clone();
        let mut state = commit.lock();
        // Staged writes have lower LSNs than this one: theirs are held first.
        self.take_waiting(&mut state);
        let mut written = commit.apply(&mut state, ops.as_ops());
        let mut failed = None;
        if let Written::Full = written {
            // The shard's part of a caller's write: make room, then place it.
            let room = match (&mut self.log, &mut state.log) {
                (ShardLog::Mapped { wal, .. }, LogHalf::Mapped(log)) => wal.roll_over(io, log),
                (ShardLog::Direct { wal, .. }, LogHalf::Direct(log)) => {
                    wal.make_room(io, log, ops.as_ops().record_bytes())
                }
                _ => Err(WalError::Rejected(Error::Closed)),
            };
            written = match room {
                Ok(()) => match commit.apply(&mut state, ops.as_ops()) {
                    Written::Full => Written::Done(Err(Error::LimitExceeded {
                        what: "WAL record bytes",
                        actual: ops.as_ops().record_bytes() as u64,
                        max: self.config.wal_segment_bytes,
                    })),
                    placed => placed,
                },
                Err(WalError::Rejected(e)) => Written::Done(Err(e)),
                Err(WalError::Poisoned(e)) => {
                    let r = Err(e.duplicate());
                    failed = Some(e);
                    Written::Done(r)
                }
            };
        }
        commit.note_gc(&state);
        drop(state);
        match written {
            Written::Staged { lsn, ts } => self.acks.push_write(lsn, ts, ack),
            Written::Done(result) => self.ack(ack, result, now),
            Written::Full => {} // not after making room
        }
        if let Some(e) = failed {
            self.poison(e, now);
        }
    }

    /// Makes room in the log for a record of `bytes` that a commit step could not place.
    fn make_room(&mut self, io: &mut S, bytes: usize, done: Responder, now: Instant) {
        if let Some(e) = &self.poisoned {
            return done.complete(Err(e.duplicate()));
        }
        let commit = self.log.commit().clone();
        let mut state = commit.lock();
        self.take_waiting(&mut state);
        if state.fits(bytes) {
            return done.complete(Ok(()));
        }
        let room = match (&mut self.log, &mut state.log) {
            (ShardLog::Mapped { wal, .. }, LogHalf::Mapped(log)) => wal.roll_over(io, log),
            (ShardLog::Direct { wal, .. }, LogHalf::Direct(log)) => wal.make_room(io, log, bytes),
            _ => Err(WalError::Rejected(Error::Closed)),
        };
        let fits = state.fits(bytes);
        drop(state);
        match room {
            Ok(()) if fits => done.complete(Ok(())),
            Ok(()) => done.complete(Err(Error::LimitExceeded {
                what: "WAL record bytes",
                actual: bytes as u64,
                max: self.config.wal_segment_bytes,
            })),
            Err(WalError::Rejected(e)) => done.complete(Err(e)),
            Err(WalError::Poisoned(e)) => {
                done.complete(Err(e.duplicate()));
                self.poison(e, now);
            }
        }
    }

    /// `Sync`: holds the acknowledgements of the writes callers staged, in LSN order.
    fn take_waiting(&mut self, state: &mut CommitState) {
        for w in state.take_waiting() {
            let ack = Ack { done: w.done, kind: w.kind, started: w.started };
            self.acks.push_write(w.lsn, w.ts, ack);
        }
    }

    fn sync(&mut self, ack: Ack) {
        let now = ack.started;
        if self.poisoned.is_some() {
            return self.ack(ack, Err(Error::Poisoned { shard: self.config.shard_id }), now);
        }
        let target = self.progress().staged;
        self.acks.push_sync(target, ack);
        self.settle(now);
    }

    /// How far the log has come.
    fn progress(&self) -> WalProgress {
        let state = self.log.commit().lock();
        match (&self.log, &state.log) {
            (ShardLog::Mapped { .. }, LogHalf::Mapped(log)) => log.progress(),
            (ShardLog::Direct { wal, .. }, LogHalf::Direct(log)) => wal.progress(log),
            _ => WalProgress::default(),
        }
    }

    /// The LSN up to which writes are acknowledged in this shard's mode.
    fn promise_point(&self) -> (Lsn, Lsn) {
        let p = self.progress();
        p.check();
        let point = match self.config.wal_sync_mode {
            WalSyncMode::Sync => p.durable,
            WalSyncMode::Normal => p.written,
            WalSyncMode::Async => p.staged,
        };
        (point, p.durable)
    }

    /// Acknowledges everything the WAL's progress covers, after publishing its timestamps.
    fn settle(&mut self, now: Instant) {
        if self.acks.is_empty() || self.poisoned.is_some() {
            return;
        }
        let (point, durable) = self.promise_point();
        let mut released = std::mem::take(&mut self.released);
        self.acks.release(point, durable, &mut released);
        if let Some(ts) = released.visible.take() {
            // Before the acknowledgements: a caller reads its own write once told it is done.
            self.view.publish(ts);
        }
        for ack in released.acks.drain(..) {
            self.ack(ack, Ok(()), now);
        }
        self.released = released; // its buffer, for the next turn
    }

    fn poison(&mut self, err: Error, now: Instant) {
        log::error!(
            "shard {} poisoned, rejecting writes until reopened: {err}",
            self.config.shard_id
        );
        // Under the lock: no caller's write is placed after this, and what callers staged or
        // queued for a holder is answered with the error (nobody will place it now).
        let commit = self.log.commit().clone();
        let mut state = commit.lock();
        self.view.poison();
        commit.refuse_waiting(&mut state, &err);
        drop(state);
        let waiting = self.acks.take_all();
        self.ack_all(waiting, &Err(err.duplicate()), now);
        self.poisoned = Some(err);
    }

    fn handle_completions(&mut self, io: &mut S, now: Instant) -> bool {
        if self.completions.is_empty() {
            return false;
        }
        for done in std::mem::take(&mut self.completions) {
            if self.poisoned.is_some() {
                continue; // the storage took care of the memory; nothing else matters now
            }
            let result = match &mut self.log {
                ShardLog::Mapped { wal, commit } => match &mut commit.lock().log {
                    LogHalf::Mapped(log) => wal.on_completion(io, log, done),
                    LogHalf::Direct(_) => Ok(()),
                },
                ShardLog::Direct { wal, .. } => wal.on_completion(io, done),
            };
            if let Err(e) = result {
                self.poison(e.into_error(), now);
            }
        }
        true
    }

    /// Submits the log's I/O that is due. In `Normal`/`Async` it takes the commit lock only
    /// when something is due or asked for (callers need the lock more than an idle shard).
    fn submit_io(&mut self, io: &mut S, now: Instant, asked: bool) {
        if let Some(err) = &self.poisoned {
            // Requests queued for a lock holder after the poisoning: answer them.
            let commit = self.log.commit();
            if commit.has_queued() {
                commit.refuse_waiting(&mut commit.lock(), err);
            }
            return;
        }
        let closing = self.shutdown.is_some() && !self.claim_failed;
        let urgency = Urgency { sync_now: self.acks.has_syncs() || closing, claim_now: closing };
        let mut full = Vec::new();
        let due = self.due.is_none_or(|due| now >= due);
        let commit = self.log.commit().clone();
        if !(asked || due || closing || urgency.sync_now || commit.has_queued()) {
            return;
        }
        let mut state = commit.lock();
        // Requests queued for a lock holder that has gone: the shard places them.
        commit.combine(&mut state, |ops, done| full.push((ops, done)));
        self.take_waiting(&mut state);
        let submitted = match (&mut self.log, &mut state.log) {
            (ShardLog::Mapped { wal, .. }, LogHalf::Mapped(log)) => {
                let r = wal.submit(io, log, now, urgency);
                self.due = wal.next_deadline(log);
                r
            }
            (ShardLog::Direct { wal, .. }, LogHalf::Direct(log)) => {
                let r = wal.submit(io, log, now, urgency);
                self.due = wal.next_deadline(log);
                r
            }
            _ => Ok(()),
        };
        drop(state);
        for (ops, done) in full {
            let kind = kind_of(ops.as_ops());
            self.write(io, ops, Ack { done, kind, started: now });
        }
        match submitted {
            Ok(()) => {}
            Err(WalError::Poisoned(e)) => self.poison(e, now),
            Err(WalError::Rejected(e)) => {
                log::warn!("shard {}: could not write a durable claim: {e}", self.config.shard_id);
                self.claim_failed |= closing;
            }
        }
    }

    fn collect_garbage(&mut self) -> bool {
        let commit = self.log.commit();
        if commit.gc_pending() > 0 {
            let mut state = commit.lock();
            state.take_gc(&mut self.gc_queue);
            commit.note_gc(&state);
        }
        let Some(&(_, first)) = self.gc_queue.front() else { return false };
        let watermark = self.view.gc_watermark();
        if first > watermark {
            return false;
        }
        for _ in 0..GC_PER_TURN {
            match self.gc_queue.front() {
                Some((_, ts)) if *ts <= watermark => {}
                _ => break,
            }
            if let Some((key, _)) = self.gc_queue.pop_front() {
                self.collector.collect_garbage(key, watermark);
            }
        }
        true
    }

    /// Freezes the memtable once it reaches its budget, and flushes a frozen one into the tree
    /// once everything in it is visible and no cross-shard commit it holds is still being
    /// applied (`docs/ARCHITECTURE.md`, "Flush and checkpoints"). One flush at a time.
    fn maintain_storage(&mut self, io: &mut S) -> bool {
        if self.poisoned.is_some() || self.shutdown.is_some() {
            return false;
        }
        if self.frozen.is_none() {
            if let Some((_, froze)) = &mut self.compacting {
                if !*froze {
                    // Flush what the memtable holds first (deletes included), then compact.
                    *froze = true;
                    if self.memtable.version_count() > 0 {
                        self.freeze();
                        self.wal_at_freeze = self.wal_records();
                        return true;
                    }
                }
                self.compact(io);
                return true;
            }
        }
        match &self.frozen {
            None => {
                let budget = self.config.memtable_bytes;
                if budget == 0 {
                    return false;
                }
                if self.memtable.approx_bytes() < budget && !self.wal_over_budget(io.now()) {
                    return false;
                }
                self.freeze();
                self.wal_at_freeze = self.wal_records();
                true
            }
            Some(f) => {
                if self.view.visible_ts() < f.max_ts
                    || self.view.oracle().applying_at_or_below(f.max_ts)
                {
                    return false;
                }
                self.flush(io);
                true
            }
        }
    }

    /// Compacts the tree (its flush is done), installing each root it publishes, and answers.
    fn compact(&mut self, io: &mut S) {
        let Some((reply, _)) = self.compacting.take() else { return };
        let view = self.view.clone();
        let result = self.tree.compact(io, |root| {
            let layers = view.layers();
            view.install(Layers {
                active: layers.active.clone(),
                frozen: layers.frozen.clone(),
                tree: Some(root),
            });
        });
        let result = match result {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                let now = io.now();
                let reply_err = e.duplicate();
                self.poison(e, now);
                Err(reply_err)
            }
        };
        let _ = reply.try_send(result);
    }

    /// True when the log took more than its budget of records since the last freeze (checked every
    /// `WAL_CHECK_EVERY`): overwrites of few keys keep the memtable small while the log grows,
    /// and only a checkpoint lets its segments go.
    fn wal_over_budget(&mut self, now: Instant) -> bool {
        if self.next_wal_check.is_some_and(|at| now < at) {
            return false;
        }
        self.next_wal_check = Some(now + WAL_CHECK_EVERY);
        self.wal_records().saturating_sub(self.wal_at_freeze) >= self.wal_budget_records()
    }

    /// Records the log may take between freezes: about what a memtable of the budget holds
    /// in records of ~256 bytes (a version with its index share). Records, not bytes: a `Sync` log spends a 4 KiB unit per
    /// group, and counting its bytes froze tiny memtables over and over (97 flushes instead
    /// of 4 for 2 M keys).
    fn wal_budget_records(&self) -> u64 {
        (self.config.memtable_bytes as u64 / 256).max(1024)
    }

    /// Records the log has written since the shard opened.
    fn wal_records(&self) -> u64 {
        match &self.log {
            ShardLog::Direct { wal, .. } => wal.counters().records,
            ShardLog::Mapped { commit, .. } => match &commit.lock().log {
                LogHalf::Mapped(log) => log.counters().records,
                LogHalf::Direct(_) => 0,
            },
        }
    }

    /// Swaps in a new memtable under the commit lock (readers find both from the same
    /// install) and keeps the old one for the flush.
    fn freeze(&mut self) {
        let (table, writer, collector) = Memtable::create();
        let commit = self.log.commit().clone();
        let mut state = commit.lock();
        let layers = self.view.layers();
        let mut frozen = vec![self.memtable.clone()];
        frozen.extend(layers.frozen.iter().cloned());
        self.view.install(Layers { active: table.clone(), frozen, tree: layers.tree.clone() });
        let (_frozen_writer, checkpoint, max_ts) = state.freeze(writer);
        commit.note_gc(&state);
        commit.note_fullness(&state);
        drop(state);
        self.gc_queue.clear();
        let old = std::mem::replace(&mut self.memtable, table);
        self.collector = collector;
        self.stats.flush.freezes += 1;
        self.frozen = Some(Frozen { table: old, checkpoint, max_ts, resume: None });
    }

    /// One step of a flush: merges the next `FLUSH_STEP_KEYS` of the frozen memtable's newest
    /// versions into the tree and publishes the result. Steps before the last keep the tree's
    /// checkpoint (the tree then holds more than its checkpoint says, which replay tolerates:
    /// a record replayed again only adds a version at least as new as the tree's) and are not
    /// shown to readers, who keep reading the frozen memtable. The last step publishes the
    /// flush's checkpoint, installs the new root in place of the frozen memtable and removes
    /// the WAL segments both superblocks have passed. Between steps the loop runs.
    fn flush(&mut self, io: &mut S) {
        let Some(mut f) = self.frozen.take() else { return };
        let started = io.now();
        let lower = f.resume.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let c = f.table.chunk_versions(
            lower,
            Bound::Unbounded,
            f.max_ts,
            Direction::Forward,
            FLUSH_STEP_KEYS,
        );
        let updates: Vec<_> =
            c.entries.into_iter().map(|(k, v)| (k.as_slice().to_vec(), v)).collect();
        let last = c.resume_after.is_none();
        let (lsn, ts) = if last {
            (f.checkpoint.get(), f.max_ts.get())
        } else {
            let sb = *self.tree.root().superblock();
            (sb.checkpoint_lsn, sb.checkpoint_ts)
        };
        let merged = self.tree.merge(io, &updates, lsn, ts);
        self.stats.flush.keys_flushed += updates.len() as u64;
        self.stats.flush.flush_time += io.now().saturating_duration_since(started);
        let root = match merged {
            Ok(root) => root,
            Err(e) => {
                // The frozen memtable stays readable; the shard stops taking writes.
                let now = io.now();
                self.frozen = Some(f);
                return self.poison(e, now);
            }
        };
        if !last {
            f.resume = c.resume_after;
            self.frozen = Some(f);
            return;
        }
        let layers = self.view.layers();
        let frozen = layers.frozen.iter().filter(|m| !Arc::ptr_eq(m, &f.table)).cloned().collect();
        self.view.install(Layers { active: layers.active.clone(), frozen, tree: Some(root) });
        drop(layers);
        // Writers waiting for room may go on.
        let commit = self.log.commit().clone();
        let mut state = commit.lock();
        state.flushing = false;
        commit.note_fullness(&state);
        drop(state);
        let keep_from = self.older_checkpoint.min(f.checkpoint);
        self.older_checkpoint = f.checkpoint;
        match reader::remove_below(io, &self.config.dir, self.config.shard_id as u32, keep_from) {
            Ok(n) => self.stats.flush.segments_removed += n as u64,
            Err(e) => {
                log::warn!("shard {}: could not remove old WAL segments: {e}", self.config.shard_id)
            }
        }
        self.stats.flush.flushes += 1;
        // The frozen memtable is freed here unless a reader still holds it (then the next
        // flush's trim finds its memory); its memory goes back to the system in the background.
        drop(f);
        crate::heap::give_back_free_memory();
    }

    fn snapshot_stats(&self) -> ShardStats {
        let mut s = self.stats.clone();
        let state = self.log.commit().lock();
        match (&self.log, &state.log) {
            (ShardLog::Direct { wal, .. }, _) => s.set_wal(wal.counters()),
            (_, LogHalf::Mapped(log)) => s.set_wal(log.counters()),
            _ => {}
        }
        s.add_ops(&state.stats);
        drop(state);
        s.flush.write_stalls = self.log.commit().write_stalls();
        let tree = self.tree.root();
        s.flush.tree_keys = tree.superblock().entries;
        s.flush.tree_pages = self.tree.end_page();
        s.flush.tree_free_pages = self.tree.free_pages() as u64;
        (s.cache_hits, s.cache_misses) = self.tree.cache_counts();
        s.cache_bytes = self.tree.cache_bytes() as u64;
        // The frozen memtable too: it holds memory until its flush is published.
        let frozen = self.frozen.as_ref().map(|f| &f.table);
        s.memtable_bytes =
            (self.memtable.approx_bytes() + frozen.map_or(0, |t| t.approx_bytes())) as u64;
        s.memtable_versions =
            (self.memtable.version_count() + frozen.map_or(0, |t| t.version_count())) as u64;
        s
    }

    /// True once a shutdown was requested and the log is closed: everything placed is durable
    /// and covered by a durable claim (or the shard is poisoned, or the claim cannot be written).
    fn ready_to_stop(&self) -> bool {
        if self.shutdown.is_none() {
            return false;
        }
        let p = self.progress();
        let idle = self.wal_idle();
        let closed = idle && p.claimed >= p.staged && self.acks.is_empty();
        self.poisoned.is_some() || closed || (self.claim_failed && idle)
    }

    /// Nothing queued or in flight in the log.
    fn wal_idle(&self) -> bool {
        match &self.log {
            ShardLog::Mapped { wal, .. } => wal.is_idle(),
            ShardLog::Direct { wal, commit } => {
                let state = commit.lock();
                let staged = match &state.log {
                    LogHalf::Direct(log) => !wal.is_idle(log),
                    LogHalf::Mapped(_) => false,
                };
                !staged && state.waiting_is_empty()
            }
        }
    }

    fn stop(&mut self, inbox: &Inbox) {
        self.close_commit();
        // Requests still queued are dropped: their responders signal `Error::Closed`.
        while let Ok(Some(req)) = inbox.try_pop() {
            drop(req);
        }
        let result = match &self.poisoned {
            Some(_) => Err(Error::Poisoned { shard: self.config.shard_id }),
            None => Ok(()),
        };
        if let Some(done) = self.shutdown.take() {
            done.complete(result);
        }
    }

    /// Drains up to `ingress_batch_max` requests. Returns how many were handled.
    fn drain(&mut self, io: &mut S, inbox: &Inbox, now: Instant) -> usize {
        let mut handled = 0;
        if self.shutdown.is_some() {
            return 0;
        }
        while handled < self.config.ingress_batch_max {
            match inbox.try_pop() {
                Ok(Some(req)) => {
                    handled += 1;
                    self.handle(io, req, now);
                    if self.shutdown.is_some() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Every sender is gone: the database handle was dropped without close.
                    self.shutdown.get_or_insert_with(Responder::detached);
                    break;
                }
            }
        }
        handled
    }

    /// Counts and logs a turn that took longer than the stall threshold, naming its slowest
    /// phase (`phases` are the phase names and the instants each one ended).
    fn check_stall(&mut self, start: Instant, phases: &[(&'static str, Instant)]) {
        let Some(&(_, end)) = phases.last() else { return };
        let duration = end.saturating_duration_since(start);
        if duration < self.stall_threshold {
            return;
        }
        let mut previous = start;
        let mut slowest = ("", Duration::ZERO);
        for &(name, at) in phases {
            let took = at.saturating_duration_since(previous);
            if took >= slowest.1 {
                slowest = (name, took);
            }
            previous = at;
        }
        log::warn!(
            "shard {}: loop turn took {:.1} ms (threshold {} ms), most of it in {} ({:.1} ms)",
            self.config.shard_id,
            duration.as_secs_f64() * 1e3,
            self.config.stall_threshold_ms,
            slowest.0,
            slowest.1.as_secs_f64() * 1e3
        );
        self.stats.record_stall(Stall { duration, phase: slowest.0, phase_duration: slowest.1 });
    }
}

impl<S: Storage> Shard<S> {
    /// The shard thread is done (a stop, or a shard dropped after a panic): refuses callers'
    /// writes from now on and answers whatever still waits for it.
    fn close_commit(&self) {
        let err = match &self.poisoned {
            Some(_) => Error::Poisoned { shard: self.config.shard_id },
            None => Error::Closed,
        };
        self.log.commit().abandon(&err);
    }
}

impl<S: Storage> Drop for Shard<S> {
    fn drop(&mut self) {
        self.close_commit();
    }
}

impl<S: Storage> Reactor<S> for Shard<S> {
    fn turn(&mut self, io: &mut S, inbox: &Inbox) -> Turn {
        let start = io.now();
        self.stats.turns += 1;
        // Callers that staged records (`Sync`) nudged us: they wait for our next submission.
        let nudged = inbox.take_work();
        let mut worked = self.handle_completions(io, start) || nudged;
        let after_completions = io.now();
        let drained = self.drain(io, inbox, after_completions);
        self.stats.record_drain(drained);
        worked |= drained > 0;
        let after_ingress = if drained > 0 { io.now() } else { after_completions };
        self.settle(after_ingress);
        self.submit_io(io, after_ingress, worked);
        worked |= self.collect_garbage();
        worked |= self.maintain_storage(io);
        if worked {
            let end = io.now();
            let phases = [
                ("completions", after_completions),
                ("ingress", after_ingress),
                ("publish, submit, gc", end),
            ];
            self.check_stall(start, &phases);
        }
        if self.ready_to_stop() {
            self.stop(inbox);
            return Turn::Stop;
        }
        if worked {
            Turn::Worked
        } else {
            Turn::Idle
        }
    }

    fn on_completion(&mut self, done: IoDone) {
        self.completions.push(done);
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.poisoned.is_some() {
            return None;
        }
        self.due
    }

    fn on_loop_error(&mut self, err: Error) {
        if self.poisoned.is_none() {
            self.poison(err, Instant::now());
        }
    }
}
