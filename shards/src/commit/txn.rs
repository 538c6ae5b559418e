//! The shard's side of transactions and cross-shard commits, under its commit lock.
//!
//! A transaction's part on one shard ([`TxPart`]) is validated against the memtable and the
//! key locks, and then either placed in one step (a transaction or batch that writes one
//! shard: one WRITE record, like any write) or *prepared* (a cross-shard commit: its keys are
//! locked against other writers, a PREPARE record is placed, and its operations wait). The
//! caller then has the coordinator place the DECISION and, holding every participant's commit
//! lock at once, applies the prepared parts at one commit timestamp ([`commit_prepared`]).
//! `docs/ARCHITECTURE.md`, "Cross-shard commits", has the protocol and its recovery rules.
//!
//! Locks never block readers (they read versions by timestamp); they make other writers of a
//! locked key fail fast with `Error::Conflict` (plain writes retry it themselves), so no thread
//! ever waits for a key while it holds a commit lock.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::Instant;

use super::{Commit, CommitState, LogHalf, Placed, Waiter, GC_QUEUE_MAX};
use crate::error::{Error, Result};
use crate::ingress::Responder;
use crate::oracle::InFlightCommit;
use crate::stats::OpKind;
use crate::version::{Lsn, Ts};
use crate::view::ShardView;
use crate::wal::record::{Body, OpRef, Ops};

/// A key range, owned.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// One transaction's part on one shard.
#[derive(Clone, Copy, Debug)]
pub struct TxPart<'a> {
    /// The transaction.
    pub txid: u64,
    /// The snapshot it read at; `None` for a batch (blind writes: only locks can conflict).
    pub snapshot: Option<Ts>,
    /// Its writes on this shard, in order (empty for a participant it only read from).
    pub writes: &'a [OpRef<'a>],
    /// Serializable: the keys it read on this shard.
    pub reads: &'a [Vec<u8>],
    /// Serializable: the ranges it scanned (every shard checks every range).
    pub ranges: &'a [KeyRange],
}

/// What became of a step that places a record.
#[derive(Debug)]
#[must_use]
pub enum TxStep {
    /// Placed. `Normal`/`Async`: the responder was answered; `Sync`: the shard answers it once
    /// the record is durable (the caller nudges the shard).
    Placed,
    /// No room in the log for the record's `bytes`: nothing was placed or locked; the shard
    /// must make room first. The responder comes back.
    NoRoom(usize, Responder),
}

/// One lock on a key.
#[derive(Debug, Default)]
struct KeyLock {
    /// The transaction that prepared a write of it.
    writer: Option<u64>,
    /// Serializable transactions that read it and have not finished committing.
    readers: Vec<u64>,
}

/// The keys and ranges that prepared (not yet finished) commits hold on this shard.
#[derive(Debug, Default)]
pub struct KeyLocks {
    keys: HashMap<Vec<u8>, KeyLock>,
    ranges: Vec<(u64, KeyRange)>,
    /// The keys each transaction holds, to let go of them.
    held: HashMap<u64, Vec<Vec<u8>>>,
}

fn in_range(key: &[u8], (lower, upper): &KeyRange) -> bool {
    let above = match lower {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    };
    let below = match upper {
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
        Bound::Unbounded => true,
    };
    above && below
}

fn as_bounds((lower, upper): &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (lower.as_ref().map(Vec::as_slice), upper.as_ref().map(Vec::as_slice))
}

impl KeyLocks {
    /// No commit in progress holds anything here (the write path's one check).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.ranges.is_empty()
    }

    /// True when a write of `key` by `txid` (`None`: a plain write) must wait for another
    /// commit in progress.
    pub fn blocks_write(&self, key: &[u8], txid: Option<u64>) -> bool {
        let other = |t: u64| Some(t) != txid;
        self.keys
            .get(key)
            .is_some_and(|l| l.writer.is_some_and(other) || l.readers.iter().any(|&r| other(r)))
            || self.ranges.iter().any(|(t, r)| other(*t) && in_range(key, r))
    }

    /// True when a read of `key` by `txid` could miss a write another commit prepared.
    fn blocks_read(&self, key: &[u8], txid: u64) -> bool {
        self.keys.get(key).is_some_and(|l| l.writer.is_some_and(|w| w != txid))
    }

    /// True when a scan of `range` by `txid` could miss a write another commit prepared.
    fn blocks_range(&self, range: &KeyRange, txid: u64) -> bool {
        self.keys.iter().any(|(k, l)| l.writer.is_some_and(|w| w != txid) && in_range(k, range))
    }

    fn lock(&mut self, part: &TxPart<'_>) {
        let held = self.held.entry(part.txid).or_default();
        for op in part.writes {
            let key = op.key();
            let lock = self.keys.entry(key.to_vec()).or_default();
            lock.writer = Some(part.txid);
            held.push(key.to_vec());
        }
        for key in part.reads {
            let lock = self.keys.entry(key.clone()).or_default();
            lock.readers.push(part.txid);
            held.push(key.clone());
        }
        for range in part.ranges {
            self.ranges.push((part.txid, range.clone()));
        }
    }

    /// Lets go of everything `txid` holds.
    pub fn release(&mut self, txid: u64) {
        for key in self.held.remove(&txid).unwrap_or_default() {
            if let Some(lock) = self.keys.get_mut(&key) {
                if lock.writer == Some(txid) {
                    lock.writer = None;
                }
                lock.readers.retain(|&r| r != txid);
                if lock.writer.is_none() && lock.readers.is_empty() {
                    self.keys.remove(&key);
                }
            }
        }
        self.ranges.retain(|(t, _)| *t != txid);
    }
}

/// Why a write to a key another commit in progress holds is refused.
pub const HELD: &str = "a key it writes is held by another commit in progress";

/// The conflict of a write to a key another commit in progress holds.
pub fn locked() -> Error {
    Error::Conflict { reason: HELD }
}

impl CommitState {
    /// Refuses the part if another commit holds what it touches, or (with a snapshot) if what
    /// it wrote or read changed after its snapshot: first committer wins.
    fn validate(&self, view: &ShardView, part: &TxPart<'_>) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if view.is_poisoned() {
            return Err(Error::Poisoned { shard: view.shard_id() });
        }
        // Under the commit lock: the layers cannot gain a memtable meanwhile.
        let layers = view.layers();
        let newer = |key: &[u8], snapshot: Ts| layers.newest_ts(key).is_some_and(|t| t > snapshot);
        for op in part.writes {
            if self.locks.blocks_write(op.key(), Some(part.txid)) {
                return Err(locked());
            }
            if part.snapshot.is_some_and(|s| newer(op.key(), s)) {
                return Err(Error::Conflict {
                    reason: "a key it writes was written by another commit after its snapshot",
                });
            }
        }
        let Some(snapshot) = part.snapshot else { return Ok(()) };
        for key in part.reads {
            if self.locks.blocks_read(key, part.txid) || newer(key, snapshot) {
                return Err(Error::Conflict {
                    reason: "a key it read was written by another commit after its snapshot \
                             (serializable)",
                });
            }
        }
        for range in part.ranges {
            let (lower, upper) = as_bounds(range);
            if self.locks.blocks_range(range, part.txid)
                || layers.written_after(lower, upper, snapshot)
            {
                return Err(Error::Conflict {
                    reason: "a range it scanned was written by another commit after its \
                             snapshot (serializable)",
                });
            }
        }
        Ok(())
    }

    /// True when a record of `bytes` fits the log now.
    pub fn fits(&self, bytes: usize) -> bool {
        match &self.log {
            LogHalf::Mapped(log) => log.fits(bytes),
            LogHalf::Direct(log) => log.fits(bytes),
        }
    }

    /// Places a record that carries no new version (a PREPARE, a DECISION, an ABORT marker):
    /// it takes the newest timestamp already given out, so nothing new needs publishing.
    fn place_control(&mut self, body: Body<'_>) -> Option<Lsn> {
        let ts = self.last_ts();
        self.log.append(ts, body)
    }

    /// After a record is placed at `lsn`: `Sync` leaves `done` for the shard to answer once
    /// the record is durable; the other modes answer it now (the copy is the promise).
    fn settle_step(&mut self, lsn: Lsn, ts: Ts, done: Responder) {
        match self.log {
            LogHalf::Direct(_) => {
                let started = Instant::now();
                self.waiting.push(Waiter { lsn, ts, done, kind: OpKind::Batch, started });
            }
            LogHalf::Mapped(_) => done.complete(Ok(())),
        }
    }

    /// Inserts `ops` at `ts` into the memtable, queueing replaced versions for collection.
    fn insert_at(&mut self, ops: &[OpRef<'_>], ts: Ts) {
        for op in ops {
            if let Some(older) = self.memtable.insert(op.key(), ts, op.value()) {
                if self.gc.len() < GC_QUEUE_MAX {
                    self.gc.push((older, ts));
                }
            }
        }
    }
}

impl Commit {
    /// One phase: validates `part` and places its writes as one WRITE record, as any write
    /// (`done` is answered as a write's acknowledgement).
    pub fn commit_part(&self, part: &TxPart<'_>, done: Responder) -> Result<TxStep> {
        let mut state = self.lock();
        state.validate(&self.view, part)?;
        let ops = Ops::Refs(part.writes);
        let placed = state.place(&self.view, ops);
        let result = match placed {
            Placed::Refused(e) => Err(e),
            Placed::Full => Ok(TxStep::NoRoom(ops.record_bytes(), done)),
            Placed::At { lsn, ts } => {
                if let LogHalf::Mapped(_) = state.log {
                    self.view.publish(ts);
                }
                state.settle_step(lsn, ts, done);
                Ok(TxStep::Placed)
            }
        };
        self.note_gc(&state);
        result
    }

    /// Phase one of a cross-shard commit: validates `part`, locks what it touches, and (when
    /// `log` names the coordinator and participants: this shard has writes) places its
    /// PREPARE record. `done` is answered once the PREPARE is as durable as the mode promises
    /// (at once for a part with nothing to log).
    pub fn prepare(
        &self,
        part: &TxPart<'_>,
        log: Option<(u32, &[u32])>,
        done: Responder,
    ) -> Result<TxStep> {
        let mut state = self.lock();
        state.validate(&self.view, part)?;
        let body = log.map(|(coordinator, participants)| Body::Prepare {
            txid: part.txid,
            coordinator,
            participants,
            ops: Ops::Refs(part.writes),
        });
        if let Some(body) = body {
            if !state.fits(body.record_bytes()) {
                return Ok(TxStep::NoRoom(body.record_bytes(), done));
            }
        }
        state.locks.lock(part);
        match body.and_then(|body| state.place_control(body).map(|lsn| (lsn, state.last_ts()))) {
            Some((lsn, ts)) => {
                state.open_prepares.insert(part.txid, lsn);
                state.settle_step(lsn, ts, done)
            }
            None => done.complete(Ok(())),
        }
        Ok(TxStep::Placed)
    }

    /// The coordinator's decision to commit `txid`: places its DECISION record; `done` is
    /// answered once it is as durable as the mode promises.
    pub fn decide(&self, txid: u64, participants: &[u32], done: Responder) -> Result<TxStep> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::Closed);
        }
        if self.view.is_poisoned() {
            return Err(Error::Poisoned { shard: self.view.shard_id() });
        }
        let body = Body::Decision { txid, participants };
        let Some(lsn) = state.place_control(body) else {
            return Ok(TxStep::NoRoom(body.record_bytes(), done));
        };
        let ts = state.last_ts();
        state.settle_step(lsn, ts, done);
        Ok(TxStep::Placed)
    }

    /// Rolls back a prepared (or only locked) part: lets go of its locks and, when a PREPARE
    /// was placed (`logged`), places an ABORT marker if there is room (without one, recovery
    /// still aborts it: no decision means abort).
    pub fn abort_prepared(&self, txid: u64, logged: bool) {
        let mut state = self.lock();
        state.locks.release(txid);
        state.open_prepares.remove(&txid);
        if logged && !state.closed && !self.view.is_poisoned() {
            let _ = state.place_control(Body::Outcome { txid, commit: false });
        }
    }

    /// True when another commit in progress holds one of `writes`' keys.
    pub fn holds_any(&self, writes: &[OpRef<'_>], txid: u64) -> bool {
        let state = self.lock();
        !state.locks.is_empty()
            && writes.iter().any(|op| state.locks.blocks_write(op.key(), Some(txid)))
    }

    /// Lets go of the locks `txid` holds here without logging anything (a participant that
    /// only read, once the commit is decided either way).
    pub fn release(&self, txid: u64) {
        let mut state = self.lock();
        state.locks.release(txid);
        state.open_prepares.remove(&txid);
    }
}

/// One participant of [`commit_prepared`]: its commit lock, its prepared writes, and the
/// responder answered once its COMMIT marker is as durable as the mode promises.
pub struct Applying<'a> {
    /// The participant's commit lock.
    pub commit: &'a Commit,
    /// Its prepared writes.
    pub writes: &'a [OpRef<'a>],
}

/// Phase two of a cross-shard commit whose decision is made: holding every participant's
/// commit lock (taken in the order given, which must be ascending shard order), takes one
/// commit timestamp above every participant's clock, places each COMMIT marker, applies each
/// part's writes at it, lets go of the locks and publishes. A snapshot therefore sees the
/// commit on every participant or on none.
///
/// Returns the indexes of participants without room for their marker (nothing was applied
/// anywhere; make room and call again), or the commit's registration as being applied, which
/// the caller holds until every participant answered (see [`Oracle::begin_applying`]). Each
/// participant's
/// responder (from `done`) is answered: at once (`Normal`/`Async`), once its marker is durable
/// (`Sync`: the caller nudges them), or with its error when it is closed or poisoned (then it
/// is skipped: the decision is durable, so it applies its part at the next open).
pub fn commit_prepared(
    parts: &[Applying<'_>],
    txid: u64,
    mut done: impl FnMut(usize) -> Responder,
) -> Result<Result<Option<InFlightCommit>, Vec<usize>>> {
    let mut states: Vec<_> = parts.iter().map(|p| p.commit.lock()).collect();
    let marker = Body::Outcome { txid, commit: true };
    let full: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !s.closed && !parts[*i].commit.view.is_poisoned() && !s.fits(marker.record_bytes())
        })
        .map(|(i, _)| i)
        .collect();
    if !full.is_empty() {
        return Ok(Err(full));
    }
    let ts = states.iter().map(|s| s.next_ts).max().unwrap_or(Ts::FIRST);
    // Registered before any lock is let go, so a flush that looks finds it.
    let in_flight = parts.first().map(|p| p.commit.view.oracle().begin_applying(ts));
    for (i, (part, state)) in parts.iter().zip(states.iter_mut()).enumerate() {
        let view = &part.commit.view;
        let refused = if state.closed {
            Some(Error::Closed)
        } else if view.is_poisoned() {
            Some(Error::Poisoned { shard: view.shard_id() })
        } else {
            None
        };
        if let Some(e) = refused {
            done(i).complete(Err(e));
            continue;
        }
        let Some(lsn) = state.log.append(ts, marker) else {
            done(i).complete(Err(Error::Closed)); // room was checked under these locks
            continue;
        };
        state.raise_clock(ts.next());
        state.last_placed = ts;
        state.insert_at(part.writes, ts);
        state.locks.release(txid);
        state.open_prepares.remove(&txid);
        if let LogHalf::Mapped(_) = state.log {
            view.publish(ts);
        }
        state.settle_step(lsn, ts, done(i));
        part.commit.note_gc(state);
    }
    Ok(Ok(in_flight))
}
