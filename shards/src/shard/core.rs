//! The shard's state machine: applies requests to the WAL and the memtable, acknowledges them
//! when their durability promise holds, syncs on a timer, collects old versions, keeps its
//! statistics, and stops for good (poisoned) when a durable write fails.
//!
//! Shard-local: owned by the shard thread; callers reach it only through its `Inbox` and read
//! its published `ShardView`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{Ack, Inbox, Request, Responder, WriteOp};
use crate::memtable::Memtable;
use crate::runtime::event_loop::{Reactor, Turn};
use crate::runtime::ring::Ring;
use crate::stats::{OpKind, ShardStats, Stall};
use crate::view::ShardView;
use crate::wal::{
    DirectWal, MappedWal, WalError, TOKEN_KIND_MASK, TOKEN_WAL_SYNC, TOKEN_WAL_WRITE,
};

/// Keys whose old versions await collection, at most.
const GC_QUEUE_MAX: usize = 1 << 20;
/// Keys collected per turn, at most.
const GC_PER_TURN: usize = 256;

/// The WAL writer of the shard's mode.
pub enum Wal {
    /// `Normal` and `Async`.
    Mapped(MappedWal),
    /// `Sync`.
    Direct(DirectWal),
}

/// One shard.
pub struct Shard {
    config: ShardConfig,
    view: Arc<ShardView>,
    memtable: Arc<Memtable>,
    wal: Wal,
    /// `Normal`: requests whose records are staged, acknowledged once published.
    staged_acks: Vec<Ack>,
    /// Completions recorded while reaping, handled in the next turn.
    completions: Vec<(u64, i32)>,
    gc_queue: VecDeque<(Vec<u8>, u64)>,
    shutdown: Option<Responder>,
    poisoned: Option<Error>,
    stats: ShardStats,
    stall_threshold: Duration,
}

impl Shard {
    /// A shard over replayed state.
    pub fn new(
        config: ShardConfig,
        view: Arc<ShardView>,
        memtable: Arc<Memtable>,
        wal: Wal,
    ) -> Self {
        Shard {
            stats: ShardStats::new(config.shard_id),
            stall_threshold: Duration::from_millis(config.stall_threshold_ms),
            config,
            view,
            memtable,
            wal,
            staged_acks: Vec::new(),
            completions: Vec::new(),
            gc_queue: VecDeque::new(),
            shutdown: None,
            poisoned: None,
        }
    }

    fn handle(&mut self, req: Request, now: Instant) {
        match req {
            Request::Write { op, done } => {
                let kind = if op.value().is_some() { OpKind::Put } else { OpKind::Delete };
                let placed = self.place(std::slice::from_ref(&op));
                self.finish_write(placed, std::iter::once(op), Ack { done, kind, started: now });
            }
            Request::Batch { ops, done } => {
                let placed = self.place(&ops);
                self.finish_write(placed, ops, Ack { done, kind: OpKind::Batch, started: now });
            }
            Request::Sync { done } => self.sync(Ack { done, kind: OpKind::Sync, started: now }),
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

    fn ack_all(&mut self, acks: Vec<Ack>, result: &Result<()>) {
        if acks.is_empty() {
            return;
        }
        let now = Instant::now();
        for ack in acks {
            let r = match result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            self.ack(ack, r, now);
        }
    }

    /// Puts the record in the WAL and returns its LSN.
    fn place(&mut self, ops: &[WriteOp]) -> Result<u64, WalError> {
        if self.poisoned.is_some() {
            return Err(WalError::Rejected(Error::Poisoned { shard: self.config.shard_id }));
        }
        match &mut self.wal {
            Wal::Mapped(w) => w.stage(ops),
            Wal::Direct(w) => w.append(ops),
        }
    }

    fn finish_write(
        &mut self,
        placed: Result<u64, WalError>,
        ops: impl IntoIterator<Item = WriteOp>,
        ack: Ack,
    ) {
        let now = ack.started;
        let lsn = match placed {
            Ok(lsn) => lsn,
            Err(WalError::Rejected(e)) => return self.ack(ack, Err(e), now),
            Err(WalError::Poisoned(e)) => {
                self.ack(ack, Err(e.duplicate()), now);
                return self.poison(e);
            }
        };
        self.apply(lsn, ops);
        match (&mut self.wal, self.config.wal_sync_mode) {
            // Acknowledged when its group is durable.
            (Wal::Direct(w), _) => {
                if let Some(ack) = w.attach(ack) {
                    self.ack(ack, Ok(()), now);
                }
            }
            (Wal::Mapped(_), WalSyncMode::Async) => {
                self.view.publish(lsn);
                self.ack(ack, Ok(()), now);
            }
            (Wal::Mapped(_), _) => self.staged_acks.push(ack),
        }
    }

    fn apply(&mut self, lsn: u64, ops: impl IntoIterator<Item = WriteOp>) {
        for op in ops {
            let (key, value) = match op {
                WriteOp::Put { key, value } => (key, Some(value)),
                WriteOp::Delete { key } => (key, None),
            };
            // An overwritten key's older versions are collected later; the queue is bounded
            // (past it, old versions wait for the key's next overwrite).
            if self.memtable.insert(&key, lsn, value) && self.gc_queue.len() < GC_QUEUE_MAX {
                self.gc_queue.push_back((key, lsn));
            }
        }
    }

    fn sync(&mut self, ack: Ack) {
        let now = ack.started;
        if self.poisoned.is_some() {
            return self.ack(ack, Err(Error::Poisoned { shard: self.config.shard_id }), now);
        }
        self.publish_normal(now);
        let ready = match &mut self.wal {
            Wal::Mapped(w) => w.request_sync(ack),
            Wal::Direct(w) => w.request_sync(ack),
        };
        if let Some(ack) = ready {
            self.ack(ack, Ok(()), now);
        }
    }

    /// `Normal`/`Async`: copies staged records into the segment, raises the visible sequence
    /// and acknowledges the `Normal` requests whose records are now out of the process.
    fn publish_normal(&mut self, now: Instant) {
        let Wal::Mapped(w) = &mut self.wal else { return };
        let written = w.publish_staged();
        if self.config.wal_sync_mode == WalSyncMode::Normal && !self.staged_acks.is_empty() {
            self.view.publish(written);
            for ack in std::mem::take(&mut self.staged_acks) {
                self.ack(ack, Ok(()), now);
            }
        }
    }

    fn poison(&mut self, err: Error) {
        log::error!(
            "shard {} poisoned, rejecting writes until reopened: {err}",
            self.config.shard_id
        );
        self.view.poison();
        let mut waiting = std::mem::take(&mut self.staged_acks);
        waiting.extend(match &mut self.wal {
            Wal::Mapped(w) => w.take_waiters(),
            Wal::Direct(w) => w.take_waiters(),
        });
        self.ack_all(waiting, &Err(err.duplicate()));
        self.poisoned = Some(err);
    }

    fn handle_completions(&mut self) -> bool {
        if self.completions.is_empty() {
            return false;
        }
        for (token, result) in std::mem::take(&mut self.completions) {
            let outcome = match (token & TOKEN_KIND_MASK, &mut self.wal) {
                (TOKEN_WAL_SYNC, Wal::Mapped(w)) => w.on_sync_complete(token, result),
                (TOKEN_WAL_WRITE, Wal::Direct(w)) => {
                    w.on_write_complete(token, result).map(|done| {
                        self.view.publish(done.last_lsn);
                        done.waiters
                    })
                }
                _ => Ok(Vec::new()),
            };
            match outcome {
                Ok(acks) => self.ack_all(acks, &Ok(())),
                Err(e) => self.poison(e.into_error()),
            }
        }
        true
    }

    fn submit_io(&mut self, ring: &mut Ring, now: Instant) {
        if self.poisoned.is_some() {
            return;
        }
        let outcome = match &mut self.wal {
            Wal::Mapped(w) => {
                let force = w.has_sync_waiters() || self.shutdown.is_some();
                w.maybe_start_sync(ring, now, force)
            }
            Wal::Direct(w) => w.submit(ring),
        };
        if let Err(e) = outcome {
            self.poison(e.into_error());
        }
    }

    fn collect_garbage(&mut self) -> bool {
        let Some(&(_, first_seq)) = self.gc_queue.front() else { return false };
        let watermark = self.view.gc_watermark();
        if first_seq > watermark {
            return false;
        }
        for _ in 0..GC_PER_TURN {
            match self.gc_queue.front() {
                Some((_, seq)) if *seq <= watermark => {}
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
        s.set_wal(match &self.wal {
            Wal::Mapped(w) => w.counters(),
            Wal::Direct(w) => w.counters(),
        });
        s.memtable_bytes = self.memtable.approx_bytes() as u64;
        s.memtable_versions = self.memtable.version_count() as u64;
        s
    }

    /// True once a shutdown was requested and no write or sync is outstanding.
    fn ready_to_stop(&self) -> bool {
        self.shutdown.is_some()
            && match &self.wal {
                Wal::Mapped(w) => {
                    self.poisoned.is_some()
                        || (!w.sync_in_flight() && w.durable_lsn() == w.written_lsn())
                }
                Wal::Direct(w) => !w.busy(),
            }
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
    fn drain(&mut self, inbox: &Inbox, now: Instant) -> usize {
        let mut handled = 0;
        if self.shutdown.is_some() {
            return 0;
        }
        while handled < self.config.ingress_batch_max {
            match inbox.try_pop() {
                Ok(Some(req)) => {
                    handled += 1;
                    self.handle(req, now);
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

impl Reactor for Shard {
    fn turn(&mut self, ring: &mut Ring, inbox: &Inbox) -> Turn {
        let start = Instant::now();
        self.stats.turns += 1;
        let mut worked = self.handle_completions();
        let after_completions = Instant::now();
        let drained = self.drain(inbox, after_completions);
        self.stats.record_drain(drained);
        worked |= drained > 0;
        let after_ingress = if drained > 0 { Instant::now() } else { after_completions };
        self.publish_normal(after_ingress);
        self.submit_io(ring, after_ingress);
        worked |= self.collect_garbage();
        if worked {
            let end = Instant::now();
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

    fn on_completion(&mut self, token: u64, result: i32) {
        self.completions.push((token, result));
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.wal {
            Wal::Mapped(w) => w.next_sync_deadline(),
            Wal::Direct(_) => None,
        }
    }

    fn on_loop_error(&mut self, err: Error) {
        if self.poisoned.is_none() {
            self.poison(err);
        }
    }
}
