//! What a shard publishes for caller threads to read directly: its memtable, the visible
//! watermark (`visible_ts`: the highest timestamp below which every write's durability promise
//! is met), its poisoned flag, and the database's [`Oracle`], whose registry of live snapshots
//! bounds garbage collection.
//!
//! Shared: written by the shard thread, read by any caller thread. Callers never see a write
//! before its promise is met, because they read at `visible_ts`, which the shard raises only
//! after the WAL reached the write in its mode's sense (`shard::core`). Snapshots and the GC
//! watermark are timestamps, never log positions.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::error::Result;
use crate::memtable::{Direction, KeyBytes, Lookup, Memtable};
use crate::oracle::Oracle;
use crate::tree::{Root, ScanValue, TreeCursor};
use crate::version::Ts;

/// Where a shard's data is, newest first: the memtable writes go to, frozen memtables waiting
/// for (or in) a flush, and the on-disk tree's published root. Replaced whole (an `ArcSwap`),
/// so a reader that loaded one sees a consistent set, and holding it keeps every part alive
/// (a snapshot pins the layers it was taken on).
pub struct Layers {
    /// The memtable writes go to.
    pub active: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub frozen: Vec<Arc<Memtable>>,
    /// The tree's published root (`None`: no tree, or an empty one).
    pub tree: Option<Arc<Root>>,
}

/// A key's version at a snapshot, across the layers.
#[derive(Debug, PartialEq, Eq)]
pub enum Layered {
    /// The newest version at or below the snapshot is this value.
    Value(Vec<u8>),
    /// None, or a tombstone.
    Absent,
    /// Like `Absent`, but some memtable had only versions above the snapshot (a caller at a
    /// watermark that moved may need to look again: `ShardView::get`).
    AbsentBelowNewer,
}

impl Layers {
    /// Only `active`.
    #[cfg(test)]
    pub fn of(active: Arc<Memtable>) -> Layers {
        Layers { active, frozen: Vec::new(), tree: None }
    }

    fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.active).chain(self.frozen.iter())
    }

    /// The newest version of `key` at or below `ts`: the memtables newest first, then the tree
    /// (everything in it is older than anything in a memtable).
    pub fn get(&self, key: &[u8], ts: Ts) -> Result<Layered> {
        let below = match self.in_memtables(key, ts) {
            Ok(answer) => return Ok(answer),
            Err(below) => below,
        };
        if let Some(tree) = &self.tree {
            if let Some(v) = tree.get(key)? {
                return Ok(Layered::Value(v));
            }
        }
        Ok(below)
    }

    /// What the memtables answer for `key` at `ts`: `Ok` when one holds a version (a value or
    /// a tombstone); `Err` with what to answer if the tree does not hold it either (`Absent`,
    /// or `AbsentBelowNewer` when a memtable had only versions above `ts`).
    fn in_memtables(&self, key: &[u8], ts: Ts) -> std::result::Result<Layered, Layered> {
        let mut newer = false;
        for m in self.memtables() {
            match m.get(key, ts) {
                Lookup::Found(v) => return Ok(Layered::Value(v)),
                Lookup::Deleted => return Ok(Layered::Absent),
                Lookup::Missing { newest_invisible } => newer |= newest_invisible.is_some(),
            }
        }
        Err(if newer { Layered::AbsentBelowNewer } else { Layered::Absent })
    }

    /// What the memtables say of each key, and the positions of the keys they do not
    /// answer (the tree's to answer).
    fn memtables_many(&self, keys: &[&[u8]], ts: Ts) -> (Vec<Layered>, Vec<usize>) {
        let mut below = Vec::new();
        let out = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                self.in_memtables(key, ts).unwrap_or_else(|absent| {
                    below.push(i);
                    absent
                })
            })
            .collect();
        (out, below)
    }

    /// The timestamp of `key`'s newest version, visible or not, for a transaction's conflict
    /// check. A key not in a memtable may have been written up to the tree's checkpoint (the
    /// tree keeps no per-key timestamp), so that is what it answers: a conservative conflict.
    pub fn newest_ts(&self, key: &[u8]) -> Option<Ts> {
        self.memtables().find_map(|m| m.newest_ts(key)).or_else(|| self.tree_ts())
    }

    /// True when some key within the bounds may have a version newer than `ts` (see
    /// `newest_ts`: the tree counts as written at its checkpoint).
    pub fn written_after(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>, ts: Ts) -> bool {
        self.memtables().any(|m| m.written_after(lower, upper, ts))
            || self.tree_ts().is_some_and(|t| t > ts)
    }

    fn tree_ts(&self) -> Option<Ts> {
        self.tree.as_ref().map(|t| Ts::new(t.superblock().checkpoint_ts)).filter(|t| *t > Ts::ZERO)
    }

    /// Up to `limit` visible entries within the bounds at `ts`, in `direction` order, merged
    /// across the layers (a newer layer's version, or tombstone, hides an older one's).
    /// `cursor` is where the scan's previous chunk left the tree (see [`TreeCursor`]).
    pub fn chunk(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        ts: Ts,
        direction: Direction,
        limit: usize,
        cursor: &mut TreeCursor,
    ) -> Result<ScanChunk> {
        let limit = limit.max(1);
        if self.frozen.is_empty() && self.tree.is_none() {
            let c = self.active.chunk(lower, upper, ts, direction, limit);
            let entries = c.entries.into_iter().map(|(k, v)| (k, ScanValue::owned(v))).collect();
            return Ok(ScanChunk { entries, resume_after: c.resume_after });
        }
        // The tree first: where its chunk stops bounds how far the memtables need walking
        // (the merged chunk ends there), so a memtable holding a few of the range's keys is
        // not walked, and its values copied, far past it.
        let tree = match &self.tree {
            Some(tree) => Some(tree.chunk(lower, upper, direction, limit, cursor)?),
            None => None,
        };
        let (m_lower, m_upper) =
            match (tree.as_ref().and_then(|c| c.resume_after.as_deref()), direction) {
                (Some(r), Direction::Forward) => (lower, Bound::Included(r)),
                (Some(r), Direction::Reverse) => (Bound::Included(r), upper),
                (None, _) => (lower, upper),
            };
        // Each layer's chunk, as (key, value or tombstone), and where it stopped.
        let mut parts: Vec<(Vec<LayerEntry>, Option<Vec<u8>>)> = self
            .memtables()
            .map(|m| {
                let c = m.chunk_versions(m_lower, m_upper, ts, direction, limit);
                let entries =
                    c.entries.into_iter().map(|(k, v)| (k, v.map(ScanValue::owned))).collect();
                (entries, c.resume_after)
            })
            .collect();
        if let Some(c) = tree {
            let entries = c.entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
            parts.push((entries, c.resume_after));
        }
        // Keys past the nearest point where a layer stopped may be missing that layer's
        // entries: the merged chunk ends there.
        let ahead = |a: &[u8], b: &[u8]| match direction {
            Direction::Forward => a > b,
            Direction::Reverse => a < b,
        };
        let mut cut: Option<Vec<u8>> = None;
        for (_, resume_after) in &parts {
            if let Some(r) = resume_after {
                if cut.as_ref().is_none_or(|c| ahead(c, r)) {
                    cut = Some(r.clone());
                }
            }
        }
        // A k-way merge of the layers' chunks, each already in `direction` order: the
        // first key in that order is taken from the newest layer holding it, and the same key
        // in older layers is dropped (a newer version or tombstone hides it).
        let mut queues: Vec<VecDeque<LayerEntry>> =
            parts.into_iter().map(|(entries, _)| entries.into()).collect();
        let mut out = ScanChunk {
            entries: Vec::with_capacity(queues.iter().map(VecDeque::len).max().unwrap_or(0)),
            resume_after: None,
        };
        loop {
            let mut best: Option<usize> = None;
            for i in 0..queues.len() {
                let Some((key, _)) = queues[i].front() else { continue };
                if cut.as_ref().is_some_and(|c| ahead(key.as_slice(), c)) {
                    queues[i].clear();
                    continue;
                }
                let first = best
                    .and_then(|b| queues[b].front())
                    .is_none_or(|(bk, _)| ahead(bk.as_slice(), key.as_slice()));
                if first {
                    best = Some(i);
                }
            }
            let Some(b) = best else { break };
            let Some((key, value)) = queues[b].pop_front() else { break };
            for q in queues.iter_mut().skip(b + 1) {
                if q.front().is_some_and(|(k, _)| k.as_slice() == key.as_slice()) {
                    q.pop_front();
                }
            }
            if let Some(v) = value {
                if out.entries.len() == limit {
                    // Full: the next chunk starts after the last key returned.
                    out.resume_after = out.entries.last().map(|(k, _)| k.as_slice().to_vec());
                    return Ok(out);
                }
                out.entries.push((key, v));
            }
        }
        out.resume_after = cut;
        Ok(out)
    }
}

/// A key in one layer's chunk, with its value or tombstone (`None`).
type LayerEntry = (KeyBytes, Option<ScanValue>);

/// One chunk of a shard's scan, merged across its layers.
#[derive(Debug, Default)]
pub struct ScanChunk {
    /// Visible `(key, value)` pairs, in scan order.
    pub entries: Vec<(KeyBytes, ScanValue)>,
    /// The last key examined; the next chunk starts strictly after it. `None`: range exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// [`Layers::get`] of several keys in several shards' layers, each part `(layers, snapshot,
/// keys)`: the memtables answer each key they hold, and the keys left go down the trees
/// together, so the cache misses of every part are read in flight together
/// ([`tree::get_many_across`](crate::tree::get_many_across)). Answers per part, in order.
pub fn get_many_across(parts: &[(&Layers, Ts, &[&[u8]])]) -> Result<Vec<Vec<Layered>>> {
    let mut answers = Vec::with_capacity(parts.len());
    let mut below = Vec::with_capacity(parts.len());
    let mut asked: Vec<Vec<&[u8]>> = Vec::with_capacity(parts.len());
    for &(layers, ts, keys) in parts {
        let (out, left) = layers.memtables_many(keys, ts);
        asked.push(if layers.tree.is_some() {
            left.iter().map(|&i| keys[i]).collect()
        } else {
            Vec::new()
        });
        answers.push(out);
        below.push(left);
    }
    let mut descents = Vec::new();
    let mut which = Vec::new();
    for (p, &(layers, _, _)) in parts.iter().enumerate() {
        if let (Some(tree), false) = (&layers.tree, asked[p].is_empty()) {
            descents.push(crate::tree::Descent::new(tree, &asked[p]));
            which.push(p);
        }
    }
    crate::tree::get_many_across(&mut descents)?;
    for (p, descent) in which.into_iter().zip(descents) {
        for (&i, value) in below[p].iter().zip(descent.into_values()) {
            if let Some(v) = value {
                answers[p][i] = Layered::Value(v);
            }
        }
    }
    Ok(answers)
}

/// Brings into the caches, for a scan about to start in every part from its bound in
/// `direction`, the path to each tree's leaf there (with no bound: the tree's first or last
/// leaf) and the leaf after it, the misses of all trees read in flight together: the scan then
/// finds its first leaves cached instead of reading them one shard after another. Returns each
/// part's [`TreeCursor`] at that leaf, so the first chunk need not descend again.
pub fn prefetch_across(
    parts: &[(&Layers, Bound<&[u8]>)],
    direction: Direction,
) -> Result<Vec<TreeCursor>> {
    let keys: Vec<&[u8]> = parts
        .iter()
        .map(|(_, start)| match start {
            Bound::Included(k) | Bound::Excluded(k) => *k,
            Bound::Unbounded => &[],
        })
        .collect();
    let mut which = Vec::new();
    let mut descents = Vec::new();
    for (i, ((layers, start), key)) in parts.iter().zip(&keys).enumerate() {
        let Some(tree) = layers.tree.as_ref() else { continue };
        which.push(i);
        descents.push(match start {
            Bound::Unbounded => crate::tree::Descent::edge_path(tree, direction),
            _ => crate::tree::Descent::paths(tree, std::slice::from_ref(key), direction),
        });
    }
    crate::tree::get_many_across(&mut descents)?;
    let mut cursors: Vec<TreeCursor> = parts.iter().map(|_| TreeCursor::default()).collect();
    for (i, d) in which.into_iter().zip(descents) {
        cursors[i] = d.into_cursor(parts[i].1, direction);
    }
    Ok(cursors)
}

/// The shard's published state.
pub struct ShardView {
    shard_id: usize,
    layers: ArcSwap<Layers>,
    visible_ts: AtomicU64,
    poisoned: AtomicBool,
    oracle: Arc<Oracle>,
}

impl ShardView {
    /// A view over `layers` with everything up to `visible_ts` visible.
    pub fn new(shard_id: usize, layers: Layers, visible_ts: Ts, oracle: Arc<Oracle>) -> Self {
        ShardView {
            shard_id,
            layers: ArcSwap::from_pointee(layers),
            visible_ts: AtomicU64::new(visible_ts.get()),
            poisoned: AtomicBool::new(false),
            oracle,
        }
    }

    /// This shard's index.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// The memtable writes go to.
    pub fn memtable(&self) -> Arc<Memtable> {
        self.layers.load().active.clone()
    }

    /// The current layers.
    pub fn layers(&self) -> Arc<Layers> {
        self.layers.load_full()
    }

    /// Shard-side: replaces the layers (under the commit lock when the active memtable
    /// changes, so no write lands in a memtable readers cannot find).
    pub fn install(&self, layers: Layers) {
        self.layers.store(Arc::new(layers));
    }

    /// The database's timestamp order.
    pub fn oracle(&self) -> &Arc<Oracle> {
        &self.oracle
    }

    /// The visible watermark: the highest timestamp whose promise is met.
    pub fn visible_ts(&self) -> Ts {
        Ts::new(self.visible_ts.load(Ordering::Acquire))
    }

    /// Shard-side: raises the visible watermark. It never goes down (asserted: a lower value
    /// would hide acknowledged writes).
    pub fn publish(&self, ts: Ts) {
        assert!(ts.get() >= self.visible_ts.load(Ordering::Relaxed), "visible watermark fell");
        self.visible_ts.store(ts.get(), Ordering::Release);
    }

    /// True once an fdatasync of this shard failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Shard-side: marks the shard poisoned (never undone until reopen).
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// The latest visible value of `key`: reads at `visible_ts`, and if a memtable held only
    /// versions newer (still in flight), re-reads `visible_ts` once they may have become
    /// visible, so a concurrent garbage collection of older versions cannot hide the key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // The watermark before the layers: a write published at or below it was placed after
        // any freeze before it, so the layers loaded next hold it.
        let mut snapshot = self.visible_ts();
        let mut layers = self.layers.load();
        loop {
            match layers.get(key, snapshot)? {
                Layered::Value(v) => return Ok(Some(v)),
                Layered::Absent => return Ok(None),
                Layered::AbsentBelowNewer => {
                    // Versions newer than the snapshot exist. If the watermark moved, an older
                    // version may have been collected below a now-visible newer one: look
                    // again at the new watermark. Each retry needs it to advance.
                    let now = self.visible_ts();
                    if now == snapshot {
                        return Ok(None);
                    }
                    snapshot = now;
                    layers = self.layers.load();
                }
            }
        }
    }

    /// Shard-side: the highest timestamp every live and future reader can see (the database's
    /// oldest registered snapshot bounds it).
    pub fn gc_watermark(&self) -> Ts {
        self.oracle.gc_watermark(self.visible_ts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_writes_stay_hidden() {
        let (m, mut w, _) = Memtable::create();
        let v = ShardView::new(0, Layers::of(m.clone()), Ts::new(1), Oracle::new());
        w.insert(b"k", Ts::new(1), Some(b"old"[..].into()));
        w.insert(b"k", Ts::new(2), Some(b"new"[..].into()));
        assert_eq!(v.get(b"k").unwrap(), Some(b"old".to_vec()));
        v.publish(Ts::new(2));
        assert_eq!(v.get(b"k").unwrap(), Some(b"new".to_vec()));
    }

    #[test]
    fn snapshots_hold_the_watermark() {
        let oracle = Oracle::new();
        let v = ShardView::new(0, Layers::of(Memtable::create().0), Ts::new(5), oracle.clone());
        let s = oracle.register(|| v.visible_ts());
        v.publish(Ts::new(9));
        assert_eq!(v.gc_watermark(), Ts::new(5));
        drop(s);
        assert_eq!(v.gc_watermark(), Ts::new(9));
    }

    /// Chunks of every size, both directions, over an active memtable above two frozen ones
    /// (overwrites, tombstones, keys in one layer only) against the expected merge.
    #[test]
    fn layer_chunks_merge_newest_first() {
        let (old, mut w_old, _) = Memtable::create();
        let (mid, mut w_mid, _) = Memtable::create();
        let (new, mut w_new, _) = Memtable::create();
        let v = |s: &'static str| Some(s.as_bytes());
        for k in ["a", "b", "c", "d", "f"] {
            w_old.insert(k.as_bytes(), Ts::new(1), v("old"));
        }
        w_mid.insert(b"b", Ts::new(2), None);
        w_mid.insert(b"d", Ts::new(2), v("mid"));
        w_mid.insert(b"e", Ts::new(2), v("mid"));
        w_new.insert(b"a", Ts::new(3), None);
        w_new.insert(b"b", Ts::new(3), v("new"));
        w_new.insert(b"f", Ts::new(3), None);
        w_new.insert(b"g", Ts::new(3), v("new"));
        let layers = Layers { active: new, frozen: vec![mid, old], tree: None };
        let want: Vec<(&[u8], &[u8])> =
            vec![(b"b", b"new"), (b"c", b"old"), (b"d", b"mid"), (b"e", b"mid"), (b"g", b"new")];
        for direction in [Direction::Forward, Direction::Reverse] {
            for limit in 1..=6 {
                let mut got = Vec::new();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let bound = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                    let (lo, hi) = match direction {
                        Direction::Forward => (bound, Bound::Unbounded),
                        Direction::Reverse => (Bound::Unbounded, bound),
                    };
                    let c = layers
                        .chunk(lo, hi, Ts::new(3), direction, limit, &mut TreeCursor::default())
                        .unwrap();
                    assert!(c.entries.len() <= limit);
                    got.extend(
                        c.entries.into_iter().map(|(k, v)| (k.as_slice().to_vec(), v.into_vec())),
                    );
                    match c.resume_after {
                        Some(k) => after = Some(k),
                        None => break,
                    }
                }
                let mut expect: Vec<(Vec<u8>, Vec<u8>)> =
                    want.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                if direction == Direction::Reverse {
                    expect.reverse();
                }
                assert_eq!(got, expect, "{direction:?} limit {limit}");
            }
        }
    }
}
