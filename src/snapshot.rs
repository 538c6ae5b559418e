//! `Snapshot`: a point-in-time view of the whole database.
//!
//! Caller-side. Taking one registers a timestamp with the database's oracle and fences every
//! shard at it (`docs/ARCHITECTURE.md`, "One timestamp order"): from then on it sees exactly
//! the commits stamped at or below it, on every shard, so it never sees part of a cross-shard
//! commit and never changes. Garbage collection keeps the versions it can see until it (and
//! every iterator made from it) is dropped.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use lightning_shards::{Result, ShardSnapshot, SnapshotGuard, Ts};

use crate::db::Database;
use crate::scan::{owned_bounds, prefix_bounds, DbIterator};

/// A registered database snapshot, fenced on every shard, with every shard's layers pinned
/// (what `Snapshot`, scans, `multi_get` and transactions read).
pub(crate) struct DbSnapshot {
    /// Keeps what the snapshot sees from garbage collection.
    guard: SnapshotGuard,
    shards: Vec<ShardSnapshot>,
}

impl DbSnapshot {
    pub(crate) fn new(guard: SnapshotGuard, shards: Vec<ShardSnapshot>) -> Self {
        DbSnapshot { guard, shards }
    }

    /// The snapshot's timestamp.
    pub(crate) fn ts(&self) -> Ts {
        self.guard.ts()
    }

    /// Shard `i` at the snapshot.
    pub(crate) fn shard(&self, i: usize) -> &ShardSnapshot {
        &self.shards[i]
    }

    /// Every shard at the snapshot.
    pub(crate) fn shards(&self) -> &[ShardSnapshot] {
        &self.shards
    }
}

/// A consistent, unchanging view of every shard at one timestamp, from
/// [`Database::snapshot`]. Reads are served on the caller's thread.
pub struct Snapshot<'db> {
    db: &'db Database,
    guard: Arc<DbSnapshot>,
}

impl<'db> Snapshot<'db> {
    pub(crate) fn new(db: &'db Database, guard: Arc<DbSnapshot>) -> Self {
        Snapshot { db, guard }
    }

    /// The snapshot's timestamp in the database's commit order.
    pub fn ts(&self) -> u64 {
        self.guard.ts().get()
    }

    /// The value of `key` as of this snapshot.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.db.check_key(key)?;
        self.guard.shard(self.db.shard_index(key)).get(key)
    }

    /// True when `key` is present in this snapshot.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.get(key).map(|v| v.is_some())
    }

    /// The values of several keys as of this snapshot, in the order given.
    /// The shards answer their keys together, so the misses of every shard's on-disk tree are
    /// read in flight together.
    pub fn multi_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            self.db.check_key(k.as_ref())?;
        }
        // Positions of the keys, by shard.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.guard.shards().len()];
        for (i, k) in keys.iter().enumerate() {
            by_shard[self.db.shard_index(k.as_ref())].push(i);
        }
        let asked: Vec<(usize, Vec<&[u8]>)> = by_shard
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(shard, p)| (shard, p.iter().map(|&i| keys[i].as_ref()).collect()))
            .collect();
        let parts: Vec<(&ShardSnapshot, &[&[u8]])> =
            asked.iter().map(|(shard, k)| (self.guard.shard(*shard), k.as_slice())).collect();
        let answers = ShardSnapshot::multi_get_across(&parts)?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        for ((shard, _), values) in asked.iter().zip(answers) {
            for (&i, v) in by_shard[*shard].iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Entries with `start <= key < end` (`None`: unbounded) as of this snapshot, in key order;
    /// `.rev()` walks backwards.
    pub fn scan(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<DbIterator> {
        let lower = start.map_or(Bound::Unbounded, |s| Bound::Included(s.to_vec()));
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        Ok(self.iter(lower, upper))
    }

    /// Entries whose keys fall in `range` as of this snapshot, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<DbIterator> {
        let (lower, upper) = owned_bounds(&range);
        Ok(self.iter(lower, upper))
    }

    /// Entries whose keys start with `prefix` as of this snapshot, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DbIterator> {
        let (lower, upper) = prefix_bounds(prefix.as_ref());
        Ok(self.iter(lower, upper))
    }

    pub(crate) fn iter(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> DbIterator {
        DbIterator::new(self.guard.clone(), lower, upper)
    }
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("ts", &self.ts()).finish()
    }
}
