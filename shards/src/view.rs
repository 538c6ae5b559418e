//! What a shard publishes for caller threads to read directly: its memtable, the visible
//! watermark (`visible_ts`: the highest timestamp below which every write's durability promise
//! is met), its poisoned flag, and the database's [`Oracle`], whose registry of live snapshots
//! bounds garbage collection.
//!
//! Shared: written by the shard thread, read by any caller thread. Callers never see a write
//! before its promise is met, because they read at `visible_ts`, which the shard raises only
//! after the WAL reached the write in its mode's sense (`shard::core`). Snapshots and the GC
//! watermark are timestamps, never log positions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::memtable::{Lookup, Memtable};
use crate::oracle::Oracle;
use crate::version::Ts;

/// The shard's published state.
pub struct ShardView {
    shard_id: usize,
    memtable: ArcSwap<Memtable>,
    visible_ts: AtomicU64,
    poisoned: AtomicBool,
    oracle: Arc<Oracle>,
}

impl ShardView {
    /// A view over `memtable` with everything up to `visible_ts` visible.
    pub fn new(
        shard_id: usize,
        memtable: Arc<Memtable>,
        visible_ts: Ts,
        oracle: Arc<Oracle>,
    ) -> Self {
        ShardView {
            shard_id,
            memtable: ArcSwap::new(memtable),
            visible_ts: AtomicU64::new(visible_ts.get()),
            poisoned: AtomicBool::new(false),
            oracle,
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

    /// The latest visible value of `key`: reads at `visible_ts`, and if the only versions
    /// found were newer (still in flight), re-reads `visible_ts` once they may have become
    /// visible, so a concurrent garbage collection of older versions cannot hide the key.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let memtable = self.memtable.load();
        let mut snapshot = self.visible_ts();
        loop {
            match memtable.get(key, snapshot) {
                Lookup::Found(v) => return Some(v),
                Lookup::Deleted => return None,
                Lookup::Missing { newest_invisible: None } => return None,
                Lookup::Missing { newest_invisible: Some(_) } => {
                    // Versions newer than the snapshot exist. If the watermark moved, an older
                    // version may have been collected below a now-visible newer one: look
                    // again at the new watermark. Each retry needs it to advance.
                    let now = self.visible_ts();
                    if now == snapshot {
                        return None;
                    }
                    snapshot = now;
                }
            }
        }
    }

    /// Shard-side: the highest timestamp every live and future reader can see (the database's
    /// oldest registered snapshot bounds it).
    pub fn gc_watermark(&self) -> Ts {
        self.oracle.gc_watermark(self.visible_ts())
    }

    /// The version of `key` a snapshot at `ts` sees: `Some(None)` for a tombstone, `None` when
    /// the key has no version at or below `ts`.
    pub fn get_at(&self, key: &[u8], ts: Ts) -> Option<Vec<u8>> {
        match self.memtable.load().get(key, ts) {
            Lookup::Found(v) => Some(v),
            Lookup::Deleted | Lookup::Missing { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_writes_stay_hidden() {
        let (m, mut w, _) = Memtable::create();
        let v = ShardView::new(0, m.clone(), Ts::new(1), Oracle::new());
        w.insert(b"k", Ts::new(1), Some(b"old"[..].into()));
        w.insert(b"k", Ts::new(2), Some(b"new"[..].into()));
        assert_eq!(v.get(b"k"), Some(b"old".to_vec()));
        v.publish(Ts::new(2));
        assert_eq!(v.get(b"k"), Some(b"new".to_vec()));
    }

    #[test]
    fn snapshots_hold_the_watermark() {
        let oracle = Oracle::new();
        let v = ShardView::new(0, Memtable::create().0, Ts::new(5), oracle.clone());
        let s = oracle.register(|| v.visible_ts());
        v.publish(Ts::new(9));
        assert_eq!(v.gc_watermark(), Ts::new(5));
        drop(s);
        assert_eq!(v.gc_watermark(), Ts::new(9));
    }
}
