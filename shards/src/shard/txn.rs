//! A shard's caller-side transaction steps ([`ShardHandle`]), and what its replay leaves for
//! the database to resolve ([`InDoubt`]).
//!
//! Each step runs on the caller's thread under the shard's commit lock (`commit::txn`); a
//! step that finds no room in the log asks the shard thread to make room and tries again.
//! `docs/ARCHITECTURE.md`, "Cross-shard commits".

use std::collections::{BTreeMap, BTreeSet};

use super::{ShardHandle, Ticket};
use crate::commit::{self, Applying, TxPart, TxStep};
use crate::config::WalSyncMode;
use crate::error::Result;
use crate::ingress::{Request, Responder};
use crate::memtable::MemtableWriter;
use crate::oracle::InFlightCommit;
use crate::wal::record::{Body, OpRef, PrepareRecord, Record};

/// What a shard's replay found of cross-shard commits, for the database to resolve before it
/// accepts calls.
#[derive(Debug, Default)]
pub struct InDoubt {
    /// PREPAREs with no outcome marker after them, in log order.
    pub prepared: Vec<PrepareRecord>,
    /// Transactions whose PREPARE here has a COMMIT marker.
    pub committed: BTreeSet<u64>,
    /// Transactions this shard, as coordinator, decided to commit, with their participants.
    pub decisions: BTreeMap<u64, Vec<u32>>,
    /// The highest transaction id in this shard's log.
    pub max_txid: u64,
}

impl InDoubt {
    /// Replays one record into the memtable and the two-phase commit's state.
    pub(crate) fn replay(&mut self, writer: &mut MemtableWriter, rec: Record) {
        match rec {
            Record::Write(w) => {
                for op in &w.ops {
                    writer.insert(op.key(), w.ts, op.value());
                }
            }
            Record::Prepare(p) => {
                self.max_txid = self.max_txid.max(p.txid);
                self.prepared.push(p);
            }
            Record::Commit(c) => {
                self.max_txid = self.max_txid.max(c.txid);
                match self.prepared.iter().position(|p| p.txid == c.txid) {
                    Some(i) => {
                        let p = self.prepared.remove(i);
                        for op in &p.ops {
                            writer.insert(op.key(), c.ts, op.value());
                        }
                        self.committed.insert(c.txid);
                    }
                    None => log::warn!("COMMIT marker of {} without its PREPARE: ignored", c.txid),
                }
            }
            Record::Abort(a) => {
                self.max_txid = self.max_txid.max(a.txid);
                self.prepared.retain(|p| p.txid != a.txid);
            }
            Record::Decision(d, participants) => {
                self.max_txid = self.max_txid.max(d.txid);
                self.decisions.insert(d.txid, participants);
            }
        }
    }
}

impl ShardHandle {
    /// Runs one commit step until it is placed, asking the shard thread for room when the log
    /// has none; the step's responder (from `ticket`) is answered as the step says.
    fn step(
        &self,
        ticket: &mut Ticket,
        mut f: impl FnMut(Responder) -> Result<TxStep>,
    ) -> Result<()> {
        let mut done = ticket.responder(self, true);
        loop {
            match f(done)? {
                TxStep::Placed => {
                    if self.mode == WalSyncMode::Sync {
                        self.sender.nudge();
                    }
                    return Ok(());
                }
                TxStep::NoRoom(bytes, d) => {
                    self.make_room(bytes)?;
                    done = d;
                }
            }
        }
    }

    /// Asks the shard thread to make room in its log for a record of `bytes`.
    fn make_room(&self, bytes: usize) -> Result<()> {
        let mut ticket = Ticket::new(1);
        self.send(Request::MakeRoom { bytes, done: ticket.responder(self, false) })?;
        ticket.wait()
    }

    /// One phase: validates `part` and applies its writes as one record; `ticket` gets the
    /// acknowledgement. `Err(Conflict)` when it lost to another commit (nothing applied).
    pub fn tx_commit_part(&self, part: &TxPart<'_>, ticket: &mut Ticket) -> Result<()> {
        self.step(ticket, |done| self.commit.commit_part(part, done))
    }

    /// Phase one: validates and locks `part`, and places its PREPARE when `log` names the
    /// coordinator and the participants; `ticket` gets an answer once it is durable as the
    /// mode promises.
    pub fn tx_prepare(
        &self,
        part: &TxPart<'_>,
        log: Option<(u32, &[u32])>,
        ticket: &mut Ticket,
    ) -> Result<()> {
        self.step(ticket, |done| self.commit.prepare(part, log, done))
    }

    /// The coordinator's DECISION to commit `txid`; `ticket` gets an answer once it is durable
    /// as the mode promises.
    pub fn tx_decide(&self, txid: u64, participants: &[u32], ticket: &mut Ticket) -> Result<()> {
        self.step(ticket, |done| self.commit.decide(txid, participants, done))
    }

    /// Rolls back what `txid` prepared or locked here.
    pub fn tx_abort(&self, txid: u64, logged: bool) {
        self.commit.abort_prepared(txid, logged);
    }

    /// Waits (up to `patience`) until no other commit in progress holds a key of `writes`
    /// here: a commit that lost to a held key returns only once the holder finished, so a
    /// retry reads what it wrote instead of losing again at once.
    pub fn wait_unheld(&self, writes: &[OpRef<'_>], txid: u64, patience: std::time::Duration) {
        let deadline = std::time::Instant::now() + patience;
        let mut rounds = 0u32;
        while self.commit.holds_any(writes, txid) && std::time::Instant::now() < deadline {
            super::pause(&mut rounds);
        }
    }

    /// Lets go of what `txid` locked here (a participant it only read from).
    pub fn tx_release(&self, txid: u64) {
        self.commit.release(txid);
    }

    /// What replay left for the database to resolve (once; later calls get nothing).
    pub fn take_in_doubt(&self) -> InDoubt {
        std::mem::take(&mut *self.in_doubt.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Phase two of cross-shard commit `txid`, decided: applies every participant's writes at one
/// commit timestamp while holding all their commit locks (`parts` in ascending shard order);
/// `ticket` (for `parts.len()` answers) gets each participant's answer once its COMMIT marker
/// is as durable as the mode promises.
pub fn commit_prepared(
    parts: &[(&ShardHandle, &[OpRef<'_>])],
    txid: u64,
    ticket: &mut Ticket,
) -> Result<Option<InFlightCommit>> {
    let marker = Body::Outcome { txid, commit: true }.record_bytes();
    loop {
        let applying: Vec<Applying<'_>> = parts
            .iter()
            .map(|(shard, writes)| Applying { commit: &shard.commit, writes })
            .collect();
        let placed =
            commit::commit_prepared(&applying, txid, |i| ticket.responder(parts[i].0, true))?;
        let full = match placed {
            Ok(in_flight) => {
                for (shard, _) in parts {
                    if shard.mode == WalSyncMode::Sync {
                        shard.sender.nudge();
                    }
                }
                return Ok(in_flight);
            }
            Err(full) => full,
        };
        for i in full {
            parts[i].0.make_room(marker)?;
        }
    }
}
