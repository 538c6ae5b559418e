//! The commit path every transaction and batch takes: one step on one shard, two-phase commit
//! across shards, and the resolution of what a crash left in doubt.
//!
//! Caller-side: the caller's thread drives every step; shards only validate, lock, log and
//! apply under their commit locks. `docs/ARCHITECTURE.md`, "Cross-shard commits", states the
//! protocol and the recovery rules this file implements.

use lightning_shards::{
    commit_prepared, AsOp, Error, InDoubt, KeyRange, OpRef, Result, ShardHandle, Ticket, Ts,
    TxPart, HELD,
};

use crate::db::Database;
use crate::txn::backoff;

/// How long a batch keeps retrying keys that a commit in progress holds before it reports the
/// conflict (a commit holds its keys for one round of durable writes; only a failed device
/// keeps them longer).
pub(crate) use lightning_shards::BLOCKED_WRITE_PATIENCE;

/// How long a commit refused for a held key waits for the holder before it reports the
/// conflict (a holder finishes within one round of durable writes).
const HELD_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl Database {
    /// Applies `writes` (any shards) atomically: validated against `snapshot` when given
    /// (first committer wins), with `reads` and `ranges` checked too (serializable). A refused
    /// commit returns once the commit it lost to is finished and visible, so a retry does not
    /// lose again at once to the same winner.
    pub(crate) fn commit_writes(
        &self,
        txid: u64,
        snapshot: Option<Ts>,
        writes: &[OpRef<'_>],
        reads: &[Vec<u8>],
        ranges: &[KeyRange],
    ) -> Result<()> {
        let shards = self.shard_handles();
        let mut parts: Vec<Vec<OpRef<'_>>> = vec![Vec::new(); shards.len()];
        for op in writes {
            parts[self.shard_for_key(op.key())].push(*op);
        }
        let mut part_reads: Vec<Vec<Vec<u8>>> = vec![Vec::new(); shards.len()];
        for key in reads {
            part_reads[self.shard_for_key(key)].push(key.clone());
        }
        let result = self.commit_parts(txid, snapshot, &parts, &part_reads, ranges);
        if let Err(Error::Conflict { reason }) = &result {
            for (shard, mine) in shards.iter().zip(&parts).filter(|(_, p)| !p.is_empty()) {
                if *reason == HELD {
                    shard.wait_unheld(mine, txid, HELD_WAIT);
                }
                // The winner's writes may be placed and not yet visible (`Sync`: until its
                // group is durable): a retry's snapshot must see them, or it loses again.
                let _ = shard.wait_placed_visible();
            }
        }
        result
    }

    /// [`Database::commit_writes`] once, its writes and reads split by shard.
    fn commit_parts(
        &self,
        txid: u64,
        snapshot: Option<Ts>,
        parts: &[Vec<OpRef<'_>>],
        part_reads: &[Vec<Vec<u8>>],
        ranges: &[KeyRange],
    ) -> Result<()> {
        let shards = self.shard_handles();
        let writers: Vec<usize> = (0..shards.len()).filter(|&i| !parts[i].is_empty()).collect();
        if writers.is_empty() {
            return Ok(()); // read-only: consistent at its snapshot, nothing to apply
        }
        let participants: Vec<usize> = (0..shards.len())
            .filter(|&i| !parts[i].is_empty() || !part_reads[i].is_empty() || !ranges.is_empty())
            .collect();
        let part =
            |i: usize| TxPart { txid, snapshot, writes: &parts[i], reads: &part_reads[i], ranges };
        if participants.len() == 1 {
            let mut ticket = Ticket::new(1);
            shards[writers[0]].tx_commit_part(&part(writers[0]), &mut ticket)?;
            return ticket.wait();
        }
        let logged: Vec<u32> = writers.iter().map(|&i| i as u32).collect();
        let coordinator = logged[0];
        let two_phase = writers.len() > 1;
        // Phase one: every participant validates and locks; those with writes log a PREPARE
        // (only when more than one shard writes: one writer commits in one step below, after
        // the readers are locked).
        let mut prepared: Vec<usize> = Vec::new();
        let mut ticket = Ticket::new(participants.len() as u32 - u32::from(!two_phase));
        let abort = |prepared: &[usize]| {
            for &i in prepared {
                shards[i].tx_abort(txid, two_phase && !parts[i].is_empty());
            }
        };
        for &i in &participants {
            if !two_phase && !parts[i].is_empty() {
                continue;
            }
            let log = (!parts[i].is_empty()).then_some((coordinator, logged.as_slice()));
            if let Err(e) = shards[i].tx_prepare(&part(i), log, &mut ticket) {
                abort(&prepared);
                return Err(e);
            }
            prepared.push(i);
        }
        if let Err(e) = ticket.wait() {
            abort(&prepared);
            return Err(e);
        }
        if !two_phase {
            // One shard writes: it commits in one step while the others hold their reads.
            let w = writers[0];
            let mut ticket = Ticket::new(1);
            let result =
                shards[w].tx_commit_part(&part(w), &mut ticket).and_then(|()| ticket.wait());
            for &i in &prepared {
                shards[i].tx_release(txid);
            }
            return result;
        }
        // The decision, durable as the mode promises before any participant applies.
        let mut decided = Ticket::new(1);
        if let Err(e) = shards[coordinator as usize].tx_decide(txid, &logged, &mut decided) {
            abort(&prepared); // not placed: no decision, so abort
            return Err(e);
        }
        // An error here: placed but not known durable. The shard is poisoned and the outcome
        // is settled at the next open; the locks stay, so nothing overtakes the prepared writes.
        decided.wait()?;
        let applying: Vec<(&ShardHandle, &[OpRef<'_>])> =
            writers.iter().map(|&i| (&shards[i], parts[i].as_slice())).collect();
        let mut applied = Ticket::new(applying.len() as u32);
        let result = commit_prepared(&applying, txid, &mut applied);
        for &i in &participants {
            if parts[i].is_empty() {
                shards[i].tx_release(txid);
            }
        }
        // Held until every participant answered: a shard does not flush this commit's writes
        // before its COMMIT markers are durable everywhere.
        let _in_flight = result?;
        applied.wait()
    }

    /// Applies a batch atomically across shards, retrying while keys it writes are held by
    /// commits in progress.
    pub(crate) fn commit_batch(&self, writes: &[OpRef<'_>]) -> Result<()> {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let txid = self.oracle().next_txid();
            match self.commit_writes(txid, None, writes, &[], &[]) {
                Err(e @ Error::Conflict { .. }) => {
                    if started.elapsed() > BLOCKED_WRITE_PATIENCE {
                        return Err(e);
                    }
                    backoff(attempt);
                }
                other => return other,
            }
        }
    }

    /// At open, before any call: settles every cross-shard commit a crash left in doubt, and
    /// restarts transaction ids and timestamps above everything in the logs.
    pub(crate) fn resolve_in_doubt(&self) -> Result<()> {
        let shards = self.shard_handles();
        let found: Vec<InDoubt> = shards.iter().map(ShardHandle::take_in_doubt).collect();
        let max_txid = found.iter().map(|f| f.max_txid).max().unwrap_or(0);
        self.oracle().raise_txid(max_txid);
        // Every shard's clock above every timestamp replayed anywhere.
        drop(self.take_snapshot()?);
        let mut txids: Vec<u64> =
            found.iter().flat_map(|f| f.prepared.iter().map(|p| p.txid)).collect();
        txids.sort_unstable();
        txids.dedup();
        for txid in txids {
            let holders: Vec<usize> = (0..found.len())
                .filter(|&i| found[i].prepared.iter().any(|p| p.txid == txid))
                .collect();
            let Some(first) = found[holders[0]].prepared.iter().find(|p| p.txid == txid) else {
                continue;
            };
            let decision =
                found.get(first.coordinator as usize).and_then(|c| c.decisions.get(&txid));
            // Commit only with the decision and every participant's PREPARE (applied or in
            // doubt): a power loss in a mode that does not promise to survive it may keep the
            // decision and lose a PREPARE. Otherwise abort (no decision means abort).
            let commit = decision.is_some_and(|participants| {
                participants.iter().all(|&p| {
                    found.get(p as usize).is_some_and(|f| {
                        f.committed.contains(&txid) || f.prepared.iter().any(|q| q.txid == txid)
                    })
                })
            });
            if commit {
                let ops: Vec<Vec<OpRef<'_>>> = holders
                    .iter()
                    .map(|&i| {
                        found[i]
                            .prepared
                            .iter()
                            .filter(|p| p.txid == txid)
                            .flat_map(|p| p.ops.iter().map(AsOp::op))
                            .collect()
                    })
                    .collect();
                let applying: Vec<(&ShardHandle, &[OpRef<'_>])> =
                    holders.iter().zip(&ops).map(|(&i, o)| (&shards[i], o.as_slice())).collect();
                let mut ticket = Ticket::new(applying.len() as u32);
                commit_prepared(&applying, txid, &mut ticket)?;
                ticket.wait()?;
                log::info!("recovery: committed in-doubt transaction {txid} (decision found)");
            } else {
                for &i in &holders {
                    shards[i].tx_abort(txid, true);
                }
                log::info!("recovery: aborted in-doubt transaction {txid} (no decision)");
            }
        }
        Ok(())
    }
}
