//! The shard's state machine: places requests in the WAL and the memtable, acknowledges them
//! when their durability promise holds, syncs on a timer, collects old versions, keeps its
//! statistics, and stops for good (poisoned) when a durable write fails.
//!
//! Shard-local: owned by the shard thread; callers reach it only through its `Inbox` and read
//! its published `ShardView`. Generic over the storage, so the same code runs on the real disk
//! and in the simulation. Invariants, asserted in release builds: the WAL's progress is in
//! order (`WalProgress::check`), acknowledgements leave in LSN order (`acks.rs`), and the
//! visible timestamp never passes what the mode's promise covers: the shard publishes a
//! write's timestamp only when the WAL has reached the write's LSN in the mode's sense
//! (`Sync`: durable, `Normal`: written out of the process, `Async`: placed).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acks::{Ack, PendingAcks, Released};
use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{Inbox, Request, Responder, WriteOp};
use crate::io::{IoDone, Storage};
use crate::memtable::Memtable;
use crate::runtime::event_loop::{Reactor, Turn};
use crate::stats::{OpKind, ShardStats, Stall};
use crate::version::{Lsn, Ts};
use crate::view::ShardView;
use crate::wal::reader::RecoveryReport;
use crate::wal::{AnyWal, Urgency, WalError, WalWriter};

/// Keys whose old versions await collection, at most.
const GC_QUEUE_MAX: usize = 1 << 20;
/// Keys collected per turn, at most.
const GC_PER_TURN: usize = 256;

/// One shard.
pub struct Shard<S: Storage> {
    config: ShardConfig,
    view: Arc<ShardView>,
    memtable: Arc<Memtable>,
    wal: AnyWal<S>,
    /// The timestamp the next write gets (the shard's own counter, in LSN order).
    next_ts: Ts,
    acks: PendingAcks,
    /// Reused by `settle`.
    released: Released,
    /// Completions recorded while reaping, handled in the next turn.
    completions: Vec<IoDone>,
    gc_queue: VecDeque<(Vec<u8>, Ts)>,
    shutdown: Option<Responder>,
    /// A clean close could not write its durable claim (no room for a segment): stop anyway.
    claim_failed: bool,
    poisoned: Option<Error>,
    stats: ShardStats,
    stall_threshold: Duration,
}

impl<S: Storage> Shard<S> {
    /// A shard over replayed state: `next_ts` follows the highest replayed timestamp.
    pub fn new(
        config: ShardConfig,
        view: Arc<ShardView>,
        memtable: Arc<Memtable>,
        wal: AnyWal<S>,
        last_ts: Ts,
        recovery: &RecoveryReport,
    ) -> Self {
        let mut stats = ShardStats::new(config.shard_id);
        stats.set_recovery(recovery);
        Shard {
            stats,
            stall_threshold: Duration::from_millis(config.stall_threshold_ms),
            config,
            view,
            memtable,
            wal,
            next_ts: last_ts.next(),
            acks: PendingAcks::default(),
            released: Released::default(),
            completions: Vec::new(),
            gc_queue: VecDeque::new(),
            shutdown: None,
            claim_failed: false,
            poisoned: None,
        }
    }

    fn handle(&mut self, io: &mut S, req: Request, now: Instant) {
        match req {
            Request::Write { op, done } => {
                let kind = if op.value().is_some() { OpKind::Put } else { OpKind::Delete };
                self.write(io, [op], Ack { done, kind, started: now });
            }
            Request::Batch { ops, done } => {
                self.write(io, ops, Ack { done, kind: OpKind::Batch, started: now });
            }
            Request::Sync { done } => self.sync(io, Ack { done, kind: OpKind::Sync, started: now }),
            Request::Stats { reply } => {
                let _ = reply.try_send(self.snapshot_stats());
            }
            Request::Shutdown { done } => self.shutdown = Some(done),
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

    /// Places one WAL record for `ops` and applies them to the memtable (invisible until the
    /// record's promise holds).
    fn write<O>(&mut self, io: &mut S, ops: O, ack: Ack)
    where
        O: AsRef<[WriteOp]> + IntoIterator<Item = WriteOp>,
    {
        let now = ack.started;
        if self.poisoned.is_some() {
            return self.ack(ack, Err(Error::Poisoned { shard: self.config.shard_id }), now);
        }
        let ts = self.next_ts;
        let lsn = match self.wal.append(io, ts, ops.as_ref()) {
            Ok(lsn) => lsn,
            Err(WalError::Rejected(e)) => return self.ack(ack, Err(e), now),
            Err(WalError::Poisoned(e)) => {
                self.ack(ack, Err(e.duplicate()), now);
                return self.poison(e, now);
            }
        };
        self.next_ts = ts.next();
        self.apply(ts, ops);
        self.acks.push_write(lsn, ts, ack);
        if self.config.wal_sync_mode == WalSyncMode::Async {
            self.settle(now); // acknowledged at placement
        }
    }

    /// Moves the values into the memtable (no copy, no reference-count traffic).
    fn apply(&mut self, ts: Ts, ops: impl IntoIterator<Item = WriteOp>) {
        for op in ops {
            let (key, value) = match op {
                WriteOp::Put { key, value } => (key, Some(value)),
                WriteOp::Delete { key } => (key, None),
            };
            // An overwritten key's older versions are collected later; the queue is bounded
            // (past it, old versions wait for the key's next overwrite).
            if self.memtable.insert(&key, ts, value) && self.gc_queue.len() < GC_QUEUE_MAX {
                self.gc_queue.push_back((key, ts));
            }
        }
    }

    fn sync(&mut self, io: &mut S, ack: Ack) {
        let now = ack.started;
        if self.poisoned.is_some() {
            return self.ack(ack, Err(Error::Poisoned { shard: self.config.shard_id }), now);
        }
        self.wal.publish(io);
        let target = self.wal.progress().staged;
        self.acks.push_sync(target, ack);
        self.settle(now);
    }

    /// The LSN up to which writes are acknowledged in this shard's mode.
    fn promise_point(&self) -> (Lsn, Lsn) {
        let p = self.wal.progress();
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
        self.view.poison();
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
            if let Err(e) = self.wal.on_completion(io, done) {
                self.poison(e.into_error(), now);
            }
        }
        true
    }

    fn submit_io(&mut self, io: &mut S, now: Instant) {
        if self.poisoned.is_some() {
            return;
        }
        let closing = self.shutdown.is_some() && !self.claim_failed;
        let urgency = Urgency { sync_now: self.acks.has_syncs() || closing, claim_now: closing };
        match self.wal.submit(io, now, urgency) {
            Ok(()) => {}
            Err(WalError::Poisoned(e)) => self.poison(e, now),
            Err(WalError::Rejected(e)) => {
                log::warn!("shard {}: could not write a durable claim: {e}", self.config.shard_id);
                self.claim_failed |= closing;
            }
        }
    }

    fn collect_garbage(&mut self) -> bool {
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
                self.memtable.collect_garbage(&key, watermark);
            }
        }
        true
    }

    fn snapshot_stats(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.set_wal(self.wal.counters());
        s.memtable_bytes = self.memtable.approx_bytes() as u64;
        s.memtable_versions = self.memtable.version_count() as u64;
        s
    }

    /// True once a shutdown was requested and the log is closed: everything placed is durable
    /// and covered by a durable claim (or the shard is poisoned, or the claim cannot be written).
    fn ready_to_stop(&self) -> bool {
        if self.shutdown.is_none() {
            return false;
        }
        let p = self.wal.progress();
        let closed = self.wal.is_idle() && p.claimed >= p.staged && self.acks.is_empty();
        self.poisoned.is_some() || closed || (self.claim_failed && self.wal.is_idle())
    }

    fn stop(&mut self, inbox: &Inbox) {
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

impl<S: Storage> Reactor<S> for Shard<S> {
    fn turn(&mut self, io: &mut S, inbox: &Inbox) -> Turn {
        let start = io.now();
        self.stats.turns += 1;
        let mut worked = self.handle_completions(io, start);
        let after_completions = io.now();
        let drained = self.drain(io, inbox, after_completions);
        self.stats.record_drain(drained);
        worked |= drained > 0;
        let after_ingress = if drained > 0 { io.now() } else { after_completions };
        self.wal.publish(io);
        self.settle(after_ingress);
        self.submit_io(io, after_ingress);
        worked |= self.collect_garbage();
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
        self.wal.next_deadline()
    }

    fn on_loop_error(&mut self, err: Error) {
        if self.poisoned.is_none() {
            self.poison(err, Instant::now());
        }
    }
}
