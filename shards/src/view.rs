//! What a shard publishes for caller threads to read directly: its memtable, the highest
//! sequence whose durability promise is met (`visible_seq`), its poisoned flag, and the
//! registry of live scan snapshots that bounds garbage collection.
//!
//! Shared: written by the shard thread, read by any caller thread. Callers never see a write
//! before its promise is met, because they read at `visible_seq`, which the shard raises only
//! after the WAL write (and, in `Sync`, the durable write) for that sequence completed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::memtable::{Lookup, Memtable};

/// The shard's published state.
pub struct ShardView {
    shard_id: usize,
    memtable: ArcSwap<Memtable>,
    visible_seq: AtomicU64,
    poisoned: AtomicBool,
    snapshots: Mutex<BTreeMap<u64, usize>>,
}

impl ShardView {
    /// A view over `memtable` with everything up to `visible_seq` visible.
    pub fn new(shard_id: usize, memtable: Arc<Memtable>, visible_seq: u64) -> Self {
        ShardView {
            shard_id,
            memtable: ArcSwap::new(memtable),
            visible_seq: AtomicU64::new(visible_seq),
            poisoned: AtomicBool::new(false),
            snapshots: Mutex::new(BTreeMap::new()),
        }
    }

    /// This shard's index.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// The current memtable.
    pub fn memtable(&self) -> Arc<Memtable> {
        self.memtable.load_full()
    }

    /// Highest sequence whose promise is met.
    pub fn visible_seq(&self) -> u64 {
        self.visible_seq.load(Ordering::Acquire)
    }

    /// Shard-side: raises the visible sequence (never lowers it).
    pub fn publish(&self, seq: u64) {
        debug_assert!(seq >= self.visible_seq.load(Ordering::Relaxed));
        self.visible_seq.store(seq, Ordering::Release);
    }

    /// True once an fdatasync of this shard failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Shard-side: marks the shard poisoned (never undone until reopen).
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// The latest visible value of `key`: reads at `visible_seq`, and if the only versions
    /// found were newer (still in flight), re-reads `visible_seq` once they may have become
    /// visible, so a concurrent garbage collection of older versions cannot hide the key.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let memtable = self.memtable.load();
        let mut snapshot = self.visible_seq();
        loop {
            match memtable.get(key, snapshot) {
                Lookup::Found(v) => return Some(v),
                Lookup::Deleted => return None,
                Lookup::Missing { newest_invisible: None } => return None,
                Lookup::Missing { newest_invisible: Some(_) } => {
                    // Versions newer than the snapshot exist. If the visible sequence moved, an
                    // older version may have been collected below a now-visible newer one:
                    // look again at the new sequence. Each retry needs visible_seq to advance.
                    let now = self.visible_seq();
                    if now == snapshot {
                        return None;
                    }
                    snapshot = now;
                }
            }
        }
    }

    /// Registers a scan snapshot at the current visible sequence. Garbage collection keeps
    /// every version this snapshot can see until the returned guard is dropped.
    pub fn snapshot(self: &Arc<Self>) -> Snapshot {
        let mut registry = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.visible_seq();
        *registry.entry(seq).or_insert(0) += 1;
        Snapshot { view: self.clone(), seq }
    }

    /// Shard-side: the highest sequence every live and future reader can see.
    pub fn gc_watermark(&self) -> u64 {
        let registry = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let visible = self.visible_seq();
        registry.keys().next().map_or(visible, |&oldest| oldest.min(visible))
    }

    fn release(&self, seq: u64) {
        let mut registry = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = registry.get_mut(&seq) {
            *count -= 1;
            if *count == 0 {
                registry.remove(&seq);
            }
        }
    }
}

/// A registered read snapshot of one shard; releases itself on drop.
pub struct Snapshot {
    view: Arc<ShardView>,
    seq: u64,
}

impl Snapshot {
    /// The snapshot's sequence.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The shard view it belongs to.
    pub fn view(&self) -> &Arc<ShardView> {
        &self.view
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.view.release(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_writes_stay_hidden() {
        let m = Arc::new(Memtable::new());
        let v = ShardView::new(0, m.clone(), 1);
        m.insert(b"k", 1, Some(b"old"[..].into()));
        m.insert(b"k", 2, Some(b"new"[..].into()));
        assert_eq!(v.get(b"k"), Some(b"old".to_vec()));
        v.publish(2);
        assert_eq!(v.get(b"k"), Some(b"new".to_vec()));
    }

    #[test]
    fn snapshots_hold_the_watermark() {
        let v = Arc::new(ShardView::new(0, Arc::new(Memtable::new()), 5));
        let s = v.snapshot();
        v.publish(9);
        assert_eq!(v.gc_watermark(), 5);
        drop(s);
        assert_eq!(v.gc_watermark(), 9);
    }
}
