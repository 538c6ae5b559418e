//! One key's versions: a list from newest to oldest, prepended by the memtable's writer, read
//! by any thread, and cut short by the shard's garbage collector.
//!
//! Why a list per key: an overwrite of a key already in the memtable touches only its list (one
//! allocation and one pointer store), never the ordered index; a read finds the key once and
//! walks at most the versions newer than its snapshot. A version carries its value's bytes in
//! the same allocation (one allocation a write, one cache line fewer a read).
//!
//! Memory: versions are freed through `crossbeam-epoch`. Readers pin the epoch while they walk
//! a list; the collector unlinks old versions and defers their destruction until every thread
//! pinned at the time has moved on. Invariants (`docs/SAFETY.md`): a version is allocated by
//! `Version::alloc` and freed by `Version::free` with the layout its stored length gives; the
//! writer only ever stores a new head whose `next` is the old head; the collector only ever
//! stores null into the `next` of a version it keeps, and is the only one that frees versions
//! (one collector per memtable, enforced by its unique handle); what remains when the list
//! drops is freed with it.
//!
//! Shared: the writer, the collector and readers touch a list at once, through atomics only.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use crossbeam_epoch::{self as epoch, Guard};

use crate::version::Ts;

/// One version of a key; its value's bytes follow it in the same allocation.
#[repr(C)]
pub struct Version {
    ts: Ts,
    next: AtomicPtr<Version>,
    /// Bytes of the value that follow this header.
    len: usize,
    /// A delete: no value.
    tombstone: bool,
}

impl Version {
    fn layout(len: usize) -> Option<Layout> {
        let bytes = std::mem::size_of::<Version>().checked_add(len)?;
        Layout::from_size_align(bytes, std::mem::align_of::<Version>()).ok()
    }

    /// A new version holding a copy of `value` (`None`: a tombstone), linked to nothing.
    fn alloc(ts: Ts, value: Option<&[u8]>) -> NonNull<Version> {
        let bytes = value.unwrap_or_default();
        let len = bytes.len();
        // A slice is at most `isize::MAX` bytes; one that left no room for the header could not
        // be allocated anyway.
        let Some(layout) = Self::layout(len) else {
            alloc::handle_alloc_error(Layout::new::<Version>())
        };
        // Safety: the layout is non-zero (it holds the header).
        let raw = unsafe { alloc::alloc(layout) }.cast::<Version>();
        let Some(v) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        let header =
            Version { ts, next: AtomicPtr::new(ptr::null_mut()), len, tombstone: value.is_none() };
        // Safety: `v` is a fresh allocation of `layout`, big enough for the header and `len`
        // bytes after it, aligned for the header; the source is a separate slice of `len` bytes.
        unsafe {
            v.as_ptr().write(header);
            let body = v.as_ptr().cast::<u8>().add(std::mem::size_of::<Version>());
            ptr::copy_nonoverlapping(bytes.as_ptr(), body, len);
        }
        v
    }

    /// Frees a version made by `alloc`.
    ///
    /// # Safety
    /// `v` came from `alloc`, is unreachable for every reader, and is freed once.
    unsafe fn free(v: *mut Version) {
        // Safety: the caller's contract; `len` is what `alloc` sized the allocation for.
        unsafe {
            let layout = Self::layout((*v).len).unwrap_or(Layout::new::<Version>());
            alloc::dealloc(v.cast::<u8>(), layout);
        }
    }

    /// The value, or `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        if self.tombstone {
            return None;
        }
        // Safety: `alloc` wrote `len` bytes right after the header, and they never change.
        Some(unsafe {
            let body = std::ptr::from_ref(self).cast::<u8>().add(std::mem::size_of::<Version>());
            std::slice::from_raw_parts(body, self.len)
        })
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
    head: AtomicPtr<Version>,
}

/// A version the collector unlinked, freed by the epoch collector later.
struct Retired(*mut Version);
// Safety: a retired version is reachable from nothing; whichever thread runs the deferred
// function is the only one to touch it.
unsafe impl Send for Retired {}

impl Chain {
    /// A list holding one version.
    pub fn new(ts: Ts, value: Option<&[u8]>) -> Self {
        Chain { head: AtomicPtr::new(Version::alloc(ts, value).as_ptr()) }
    }

    /// Writer: adds the newest version (returns its value bytes). Versions of a key arrive in
    /// timestamp order (equal timestamps when a batch writes a key twice: the later write
    /// wins). Only the memtable's one writer calls this.
    pub fn push(&self, ts: Ts, value: Option<&[u8]>) -> usize {
        let version = Version::alloc(ts, value);
        let head = self.head.load(Ordering::Relaxed);
        // Safety: not yet shared.
        unsafe { version.as_ref() }.next.store(head, Ordering::Relaxed);
        // Release: a reader that sees the new head sees the version built.
        self.head.store(version.as_ptr(), Ordering::Release);
        value.map_or(0, <[u8]>::len)
    }

    /// Reader: the timestamp of the newest version (visible or not).
    pub fn newest_ts(&self, _guard: &Guard) -> Option<Ts> {
        // Safety: pinned, as in `visible`.
        unsafe { self.head.load(Ordering::Acquire).as_ref() }.map(|v| v.ts)
    }

    /// Reader: the newest version with a timestamp `<= snapshot`.
    pub fn visible<'a>(&'a self, snapshot: Ts, _guard: &'a Guard) -> Visible<'a> {
        let mut cur = self.head.load(Ordering::Acquire);
        let mut newest_invisible = None;
        // Safety: the guard is pinned, and a version is freed only after it was unlinked and
        // every thread pinned then has unpinned.
        while let Some(v) = unsafe { cur.as_ref() } {
            if v.ts <= snapshot {
                return Visible::At(v);
            }
            newest_invisible.get_or_insert(v.ts);
            cur = v.next.load(Ordering::Acquire);
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
        let mut cur = self.head.load(Ordering::Acquire);
        // Safety: pinned, as in `visible`; only this collector frees versions.
        let keep = loop {
            match unsafe { cur.as_ref() } {
                None => return (0, 0),
                Some(v) if v.ts <= watermark => break v,
                Some(v) => cur = v.next.load(Ordering::Acquire),
            }
        };
        let mut old = keep.next.swap(ptr::null_mut(), Ordering::AcqRel);
        let (mut versions, mut bytes) = (0, 0);
        // Safety: the versions after `keep` are unreachable for readers that start now; readers
        // already on them are pinned, and the deferred free waits for them. No one else frees
        // them (the caller's contract), so each is freed once.
        while let Some(v) = unsafe { old.as_ref() } {
            let next = v.next.load(Ordering::Acquire);
            versions += 1;
            bytes += v.len;
            let retired = Retired(old);
            unsafe { guard.defer_unchecked(move || Version::free(retired.0)) };
            old = next;
        }
        (versions, bytes)
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let mut cur = *self.head.get_mut();
        // Safety: `&mut self`: no reader, writer or collector can reach the list; versions the
        // collector unlinked are no longer in it, so each remaining one is freed once.
        while let Some(v) = unsafe { cur.as_ref() } {
            let next = v.next.load(Ordering::Relaxed);
            unsafe { Version::free(cur) };
            cur = next;
        }
    }
}

/// Pins the epoch (for readers and the collector).
pub fn pin() -> Guard {
    epoch::pin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_at(c: &Chain, ts: u64) -> Option<Option<Vec<u8>>> {
        let guard = &pin();
        match c.visible(Ts::new(ts), guard) {
            Visible::At(v) => Some(v.value().map(<[u8]>::to_vec)),
            Visible::Missing(_) => None,
        }
    }

    #[test]
    fn readers_see_the_newest_version_at_their_snapshot() {
        let c = Chain::new(Ts::new(2), Some(b"two"));
        c.push(Ts::new(4), None);
        c.push(Ts::new(4), Some(b"four"));
        assert_eq!(value_at(&c, 1), None);
        assert_eq!(value_at(&c, 3), Some(Some(b"two".to_vec())));
        assert_eq!(value_at(&c, 9), Some(Some(b"four".to_vec())), "the later write of a batch");
        match c.visible(Ts::new(1), &pin()) {
            Visible::Missing(newest) => assert_eq!(newest, Some(Ts::new(4))),
            Visible::At(_) => panic!("nothing is visible at 1"),
        }
    }

    #[test]
    fn empty_values_and_tombstones_differ() {
        let c = Chain::new(Ts::new(1), Some(b""));
        assert_eq!(value_at(&c, 1), Some(Some(Vec::new())));
        c.push(Ts::new(2), None);
        assert_eq!(value_at(&c, 2), Some(None));
    }

    #[test]
    fn collection_keeps_what_the_watermark_sees() {
        let c = Chain::new(Ts::new(1), Some(b"1"));
        for ts in 2..=5u8 {
            c.push(Ts::new(u64::from(ts)), Some(&[ts]));
        }
        let guard = &pin();
        // Safety: one collector in this test.
        assert_eq!(unsafe { c.collect(Ts::new(3), guard) }, (2, 2));
        assert_eq!(value_at(&c, 3), Some(Some(vec![3])));
        assert_eq!(value_at(&c, 2), None, "collected");
        assert_eq!(value_at(&c, 9), Some(Some(vec![5])));
        // Safety: as above.
        assert_eq!(unsafe { c.collect(Ts::new(0), guard) }, (0, 0), "nothing below 1");
    }
}
