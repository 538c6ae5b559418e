//! The shard's state machine: applies requests to the WAL and the memtable, acknowledges them
//! when their durability promise holds, syncs on a timer, collects old versions, and stops
//! for good (poisoned) when a durable write fails.
//!
//! Shard-local: owned by the shard thread; callers reach it only through its `Inbox` and read
//! its published `ShardView`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ShardConfig, WalSyncMode};
use crate::error::Error;
use crate::ingress::{Inbox, Request, Responder, WriteOp};
use crate::memtable::Memtable;
use crate::runtime::event_loop::{Reactor, Turn};
use crate::runtime::ring::Ring;
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
    staged_acks: Vec<Responder>,
    /// Completions recorded while reaping, handled in the next turn.
    completions: Vec<(u64, i32)>,
    gc_queue: VecDeque<(Vec<u8>, u64)>,
    shutdown: Option<Responder>,
    poisoned: Option<Error>,
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

    fn handle(&mut self, req: Request) {
        match req {
            Request::Write { op, done } => {
                let placed = self.place(std::slice::from_ref(&op));
                self.finish_write(placed, std::iter::once(op), done);
            }
            Request::Batch { ops, done } => {
                let placed = self.place(&ops);
                self.finish_write(placed, ops, done);
            }
            Request::Sync { done } => self.sync(done),
            Request::Shutdown { done } => self.shutdown = Some(done),
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
        done: Responder,
    ) {
        let lsn = match placed {
            Ok(lsn) => lsn,
            Err(WalError::Rejected(e)) => return done.complete(Err(e)),
            Err(WalError::Poisoned(e)) => {
                done.complete(Err(e.duplicate()));
                return self.poison(e);
            }
        };
        self.apply(lsn, ops);
        match (&mut self.wal, self.config.wal_sync_mode) {
            (Wal::Direct(w), _) => w.attach(done), // acknowledged when its group is durable
            (Wal::Mapped(_), WalSyncMode::Async) => {
                self.view.publish(lsn);
                done.complete(Ok(()));
            }
            (Wal::Mapped(_), _) => self.staged_acks.push(done),
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

    fn sync(&mut self, done: Responder) {
        if self.poisoned.is_some() {
            return done.complete(Err(Error::Poisoned { shard: self.config.shard_id }));
        }
        self.publish_normal();
        match &mut self.wal {
            Wal::Mapped(w) => w.request_sync(done),
            Wal::Direct(w) => w.request_sync(done),
        }
    }

    /// `Normal`/`Async`: copies staged records into the segment, raises the visible sequence
    /// and acknowledges the `Normal` requests whose records are now out of the process.
    fn publish_normal(&mut self) {
        let Wal::Mapped(w) = &mut self.wal else { return };
        let written = w.publish_staged();
        if self.config.wal_sync_mode == WalSyncMode::Normal && !self.staged_acks.is_empty() {
            self.view.publish(written);
            for done in self.staged_acks.drain(..) {
                done.complete(Ok(()));
            }
        }
    }

    fn poison(&mut self, err: Error) {
        log::error!(
            "shard {} poisoned, rejecting writes until reopened: {err}",
            self.config.shard_id
        );
        self.view.poison();
        for done in self.staged_acks.drain(..) {
            done.complete(Err(err.duplicate()));
        }
        match &mut self.wal {
            Wal::Mapped(w) => w.fail_waiters(&err),
            Wal::Direct(w) => w.fail_waiters(&err),
        }
        self.poisoned = Some(err);
    }

    fn handle_completions(&mut self) -> bool {
        if self.completions.is_empty() {
            return false;
        }
        let completions = std::mem::take(&mut self.completions);
        for (token, result) in completions {
            let outcome = match (token & TOKEN_KIND_MASK, &mut self.wal) {
                (TOKEN_WAL_SYNC, Wal::Mapped(w)) => w.on_sync_complete(token, result),
                (TOKEN_WAL_WRITE, Wal::Direct(w)) => {
                    w.on_write_complete(token, result).map(|done| {
                        self.view.publish(done.last_lsn);
                        for waiter in done.waiters {
                            waiter.complete(Ok(()));
                        }
                    })
                }
                _ => Ok(()),
            };
            if let Err(e) = outcome {
                self.poison(e.into_error());
            }
        }
        true
    }

    fn submit_io(&mut self, ring: &mut Ring) {
        if self.poisoned.is_some() {
            return;
        }
        let outcome = match &mut self.wal {
            Wal::Mapped(w) => {
                let force = w.has_sync_waiters() || self.shutdown.is_some();
                w.maybe_start_sync(ring, Instant::now(), force)
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
}

impl Reactor for Shard {
    fn turn(&mut self, ring: &mut Ring, inbox: &Inbox) -> Turn {
        let mut worked = self.handle_completions();
        if self.shutdown.is_none() {
            for _ in 0..self.config.ingress_batch_max {
                match inbox.try_pop() {
                    Ok(Some(req)) => {
                        worked = true;
                        self.handle(req);
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
        }
        self.publish_normal();
        self.submit_io(ring);
        worked |= self.collect_garbage();
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
