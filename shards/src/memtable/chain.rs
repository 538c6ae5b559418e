//! One key's versions: a list from newest to oldest, prepended by the memtable's writer, read
//! by any thread, and cut short by the shard's garbage collector.
//!
//! Why a list per key: an overwrite of a key already in the memtable touches only its list (one
//! allocation and one pointer store), never the ordered index; a read finds the key once and
//! walks at most the versions newer than its snapshot.
//!
//! Memory: versions are freed through `crossbeam-epoch`. Readers pin the epoch while they walk
//! a list; the collector unlinks old versions and defers their destruction until every thread
//! pinned at the time has moved on. Invariants (`docs/SAFETY.md`): the writer only ever stores
//! a new head whose `next` is the old head; the collector only ever stores null into the `next`
//! of a version it keeps, and is the only one that frees versions (one collector per memtable,
//! enforced by its unique handle); what remains when the list drops is freed with it.
//!
//! Shared: the writer, the collector and readers touch a list at once, through atomics only.

#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};

use crate::version::Ts;

/// A stored version: a value, or a tombstone (`None`).
pub type Slot = Option<Arc<[u8]>>;

/// One version of a key.
pub struct Version {
    ts: Ts,
    value: Slot,
    next: Atomic<Version>,
}

impl Version {
    /// The value, or `None` for a tombstone.
    pub fn value(&self) -> Option<&Arc<[u8]>> {
        self.value.as_ref()
    }

    /// Bytes this version holds beyond the list node.
    fn value_bytes(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }
}

/// What a reader finds at its snapshot.
pub enum Visible<'g> {
    /// The newest version at or below the snapshot.
    At(&'g Version),
    /// None at or below it; the newest version above it, if any.
    Missing(Option<Ts>),
}

/// The versions of one key, newest first.
pub struct Chain {
    head: Atomic<Version>,
}

impl Chain {
    /// A list holding one version.
    pub fn new(ts: Ts, value: Slot) -> Self {
        Chain { head: Atomic::new(Version { ts, value, next: Atomic::null() }) }
    }

    /// Writer: adds the newest version. Versions of a key arrive in timestamp order (equal
    /// timestamps when a batch writes a key twice: the later write wins). Only the memtable's
    /// one writer calls this.
    pub fn push(&self, ts: Ts, value: Slot, guard: &Guard) {
        let head = self.head.load(Ordering::Relaxed, guard);
        let version = Owned::new(Version { ts, value, next: Atomic::null() });
        version.next.store(head, Ordering::Relaxed);
        // Release: a reader that sees the new head sees the version built.
        self.head.store(version, Ordering::Release);
    }

    /// Reader: the newest version with a timestamp `<= snapshot`.
    pub fn visible<'g>(&self, snapshot: Ts, guard: &'g Guard) -> Visible<'g> {
        let mut cur = self.head.load(Ordering::Acquire, guard);
        let mut newest_invisible = None;
        // Safety: the guard is pinned, and a version is freed only after it was unlinked and
        // every thread pinned then has unpinned.
        while let Some(v) = unsafe { cur.as_ref() } {
            if v.ts <= snapshot {
                return Visible::At(v);
            }
            newest_invisible.get_or_insert(v.ts);
            cur = v.next.load(Ordering::Acquire, guard);
        }
        Visible::Missing(newest_invisible)
    }

    /// Collector: unlinks every version older than the newest one `<= watermark` (no snapshot
    /// at or above the watermark can see them) and frees them once no reader can hold them.
    /// Returns `(versions, value bytes)` removed.
    ///
    /// # Safety
    /// No other thread collects this list at the same time (the memtable's one collector).
    pub unsafe fn collect(&self, watermark: Ts, guard: &Guard) -> (usize, usize) {
        let mut cur = self.head.load(Ordering::Acquire, guard);
        // Safety: pinned, as in `visible`; only this collector frees versions.
        let keep = loop {
            match unsafe { cur.as_ref() } {
                None => return (0, 0),
                Some(v) if v.ts <= watermark => break v,
                Some(v) => cur = v.next.load(Ordering::Acquire, guard),
            }
        };
        let mut old = keep.next.swap(Shared::null(), Ordering::AcqRel, guard);
        let (mut versions, mut bytes) = (0, 0);
        // Safety: the versions after `keep` are unreachable for readers that start now; readers
        // already on them are pinned, and `defer_destroy` waits for them. No one else frees
        // them (the caller's contract), so each is destroyed once.
        while let Some(v) = unsafe { old.as_ref() } {
            let next = v.next.load(Ordering::Acquire, guard);
            versions += 1;
            bytes += v.value_bytes();
            unsafe { guard.defer_destroy(old) };
            old = next;
        }
        (versions, bytes)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        // Safety: `&mut self`: no reader, writer or collector can reach the list; versions the
        // collector unlinked are no longer in it, so each remaining one is freed once.
        unsafe {
            let guard = epoch::unprotected();
            let mut cur = self.head.load(Ordering::Relaxed, guard);
            while !cur.is_null() {
                let owned = cur.into_owned();
                cur = owned.next.load(Ordering::Relaxed, guard);
                drop(owned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_at(c: &Chain, ts: u64) -> Option<Option<Vec<u8>>> {
        let guard = &epoch::pin();
        match c.visible(Ts::new(ts), guard) {
            Visible::At(v) => Some(v.value().map(|v| v.to_vec())),
            Visible::Missing(_) => None,
        }
    }

    #[test]
    fn readers_see_the_newest_version_at_their_snapshot() {
        let c = Chain::new(Ts::new(2), Some(b"two"[..].into()));
        let guard = &epoch::pin();
        c.push(Ts::new(4), None, guard);
        c.push(Ts::new(4), Some(b"four"[..].into()), guard);
        assert_eq!(value_at(&c, 1), None);
        assert_eq!(value_at(&c, 3), Some(Some(b"two".to_vec())));
        assert_eq!(value_at(&c, 9), Some(Some(b"four".to_vec())), "the later write of a batch");
        match c.visible(Ts::new(1), guard) {
            Visible::Missing(newest) => assert_eq!(newest, Some(Ts::new(4))),
            Visible::At(_) => panic!("nothing is visible at 1"),
        }
    }

    #[test]
    fn collection_keeps_what_the_watermark_sees() {
        let c = Chain::new(Ts::new(1), Some(b"1"[..].into()));
        let guard = &epoch::pin();
        for ts in 2..=5 {
            c.push(Ts::new(ts), Some(vec![ts as u8].into()), guard);
        }
        // Safety: one collector in this test.
        assert_eq!(unsafe { c.collect(Ts::new(3), guard) }, (2, 2));
        assert_eq!(value_at(&c, 3), Some(Some(vec![3])));
        assert_eq!(value_at(&c, 2), None, "collected");
        assert_eq!(value_at(&c, 9), Some(Some(vec![5])));
        // Safety: as above.
        assert_eq!(unsafe { c.collect(Ts::new(0), guard) }, (0, 0), "nothing below 1");
    }
}
