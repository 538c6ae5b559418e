//! The database's one timestamp order: the registry of live snapshots and the transaction ids.
//!
//! Every shard stamps its commits from its own clock under its commit lock (no shared counter
//! on the write path). The clocks form one order because whatever reads or commits across
//! shards first *fences* them: a database snapshot at `S` raises every shard's clock above `S`
//! (so no later commit lands at or below it) and waits until every commit a shard stamped at or
//! below `S` is visible; a cross-shard commit takes one timestamp above every participant's
//! clock while it holds all their commit locks. So a snapshot sees a commit on every shard it
//! touched or on none, and a thread's acknowledged writes are always below its next snapshot
//! (`docs/ARCHITECTURE.md`, "One timestamp order").
//!
//! Shared by every shard of a database and by its caller threads. Invariant: garbage collection
//! never passes the oldest registered snapshot, and a snapshot is registered (under the same
//! lock) before it can be missed: `gc_watermark` and `register` both run under `snapshots`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::version::Ts;

/// One database's timestamp order (see the module documentation).
#[derive(Debug, Default)]
pub struct Oracle {
    /// Live snapshots: timestamp → how many.
    snapshots: Mutex<BTreeMap<Ts, usize>>,
    /// The id the next transaction gets.
    next_txid: AtomicU64,
    /// Cross-shard commits being applied (commit timestamp → how many): placed on every
    /// participant, but not yet known durable on all of them. A shard does not flush what such a
    /// commit wrote until it is (`docs/ARCHITECTURE.md`, "Flush and checkpoints").
    applying: Mutex<BTreeMap<Ts, usize>>,
}

impl Oracle {
    /// An oracle with no snapshots, handing out transaction ids from 1.
    pub fn new() -> Arc<Oracle> {
        Arc::new(Oracle {
            snapshots: Mutex::new(BTreeMap::new()),
            next_txid: AtomicU64::new(1),
            applying: Mutex::new(BTreeMap::new()),
        })
    }

    fn registry(&self) -> MutexGuard<'_, BTreeMap<Ts, usize>> {
        self.snapshots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a snapshot at the timestamp `pick` chooses, under the registry lock (so no
    /// garbage collection in between can pass it). `pick` must return at least every shard's
    /// visible watermark as read inside it.
    pub fn register(self: &Arc<Self>, pick: impl FnOnce() -> Ts) -> SnapshotGuard {
        let mut registry = self.registry();
        let ts = pick();
        *registry.entry(ts).or_insert(0) += 1;
        SnapshotGuard { oracle: self.clone(), ts }
    }

    /// The highest timestamp every live and future snapshot can see, for a shard whose visible
    /// watermark is `visible`: versions older than the newest one at or below it are garbage.
    pub fn gc_watermark(&self, visible: Ts) -> Ts {
        let registry = self.registry();
        registry.keys().next().map_or(visible, |&oldest| oldest.min(visible))
    }

    /// Live snapshots (transactions included).
    pub fn live_snapshots(&self) -> usize {
        self.registry().values().sum()
    }

    fn release(&self, ts: Ts) {
        let mut registry = self.registry();
        if let Some(count) = registry.get_mut(&ts) {
            *count -= 1;
            if *count == 0 {
                registry.remove(&ts);
            }
        }
    }

    /// A new transaction id: unique in this database's life, across restarts once
    /// [`Oracle::raise_txid`] has seen every id in the logs.
    pub fn next_txid(&self) -> u64 {
        self.next_txid.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a cross-shard commit at `ts` as being applied until the guard drops (once the
    /// caller saw every participant's COMMIT marker as durable as the mode promises).
    pub fn begin_applying(self: &Arc<Self>, ts: Ts) -> InFlightCommit {
        let mut applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        *applying.entry(ts).or_insert(0) += 1;
        InFlightCommit { oracle: self.clone(), ts }
    }

    /// True while a cross-shard commit at or below `ts` is still being applied.
    pub fn applying_at_or_below(&self, ts: Ts) -> bool {
        let applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        applying.keys().next().is_some_and(|&oldest| oldest <= ts)
    }

    /// Makes every id handed out from now on greater than `seen`.
    pub fn raise_txid(&self, seen: u64) {
        self.next_txid.fetch_max(seen.saturating_add(1), Ordering::Relaxed);
    }
}

/// A cross-shard commit being applied ([`Oracle::begin_applying`]); dropping it ends that.
#[derive(Debug)]
pub struct InFlightCommit {
    oracle: Arc<Oracle>,
    ts: Ts,
}

impl Drop for InFlightCommit {
    fn drop(&mut self) {
        let mut applying = self.oracle.applying.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = applying.get_mut(&self.ts) {
            *count -= 1;
            if *count == 0 {
                applying.remove(&self.ts);
            }
        }
    }
}

/// A registered snapshot; garbage collection keeps what it sees until it is dropped.
#[derive(Debug)]
pub struct SnapshotGuard {
    oracle: Arc<Oracle>,
    ts: Ts,
}

impl SnapshotGuard {
    /// The snapshot's timestamp.
    pub fn ts(&self) -> Ts {
        self.ts
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        self.oracle.release(self.ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_hold_the_watermark() {
        let oracle = Oracle::new();
        let s = oracle.register(|| Ts::new(5));
        assert_eq!(oracle.gc_watermark(Ts::new(9)), Ts::new(5));
        let t = oracle.register(|| Ts::new(5));
        drop(s);
        assert_eq!(oracle.gc_watermark(Ts::new(9)), Ts::new(5), "one left at 5");
        drop(t);
        assert_eq!(oracle.gc_watermark(Ts::new(9)), Ts::new(9));
        assert_eq!(oracle.live_snapshots(), 0);
    }

    #[test]
    fn transaction_ids_rise_above_what_was_seen() {
        let oracle = Oracle::new();
        assert_eq!(oracle.next_txid(), 1);
        oracle.raise_txid(41);
        assert_eq!(oracle.next_txid(), 42);
        oracle.raise_txid(3);
        assert_eq!(oracle.next_txid(), 43);
    }
}
