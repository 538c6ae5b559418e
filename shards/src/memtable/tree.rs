//! The memtable's ordered index: a B+tree that one thread writes and any number of threads
//! read without locks.
//!
//! Why its own tree: writes to a shard's memtable are already serialised (the commit lock, or
//! the shard thread), so the index needs one writer and lock-free readers, not a structure
//! where every writer races every other. A B+tree keeps keys in wide, contiguous nodes: a
//! random insert costs a few node visits instead of a skiplist's pointer chase per level, and a
//! scan reads whole leaves (ADR 0003 has the measurements).
//!
//! How readers stay safe without locks (optimistic lock coupling): every node carries a
//! version counter, odd while the writer changes the node. A reader notes a node's version,
//! reads what it needs with atomic loads, and checks the version again; if it moved, the
//! reader starts over from the root. Going down, it checks the parent's version after it read
//! the child's, so a child that split in between is never trusted. The writer marks every
//! node it changes (and the root pointer, when the tree grows) before it touches it and clears
//! the marks only after the whole change, parents included, is in place.
//!
//! Invariants (what the `unsafe` below relies on, `docs/SAFETY.md`):
//! - Nothing is freed before the tree drops: nodes and entries are never removed (a memtable
//!   only grows; old versions are collected inside an entry, not here). Every non-null pointer
//!   a reader loads, even from a torn read, points to a live node or entry.
//! - Entries and nodes are fully built before a `Release` store publishes them; readers load
//!   every pointer with `Acquire`.
//! - One writer at a time: the writing methods are `unsafe fn`s with that contract, called only
//!   through the memtable's unique writer handle.
//! - Keys only ever move right (a split moves a node's upper half into a new right sibling), so
//!   a forward scan that follows `next` from a leaf it read consistently misses no key that
//!   existed when it read that leaf.
//! - A node's level never changes, so a child pointer's type follows from its parent's level.
//!
//! Shared: written by the one writer, read by any thread. All fields are atomics, so torn reads
//! are data, never undefined behaviour; they are caught by the version check.

#![allow(unsafe_code)]

mod node;

use std::cmp::Ordering;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, Ordering as Mo};

pub use self::node::Keyed;
use self::node::Probe;
use self::node::{Header, Inner, Keys, Leaf, SlotCopy};

/// Times a reader spins on a node the writer holds before it yields the CPU.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Where a seek lands, and which entries of the leaf it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek<'a> {
    /// The first key `>= k` and what follows.
    Ge(&'a [u8]),
    /// The first key `> k` and what follows.
    Gt(&'a [u8]),
    /// The last key `< k` and what precedes it.
    Lt(&'a [u8]),
    /// The last key `<= k` and what precedes it.
    Le(&'a [u8]),
    /// The first key.
    First,
    /// The last key.
    Last,
}

impl Seek<'_> {
    /// Descend by "separators `< k`" (the left child on a tie) rather than `<= k`.
    fn left_on_tie(self) -> bool {
        matches!(self, Seek::Lt(_))
    }

    /// Within the leaf: the first key `> k` rather than `>= k`.
    fn past_equal(self) -> bool {
        matches!(self, Seek::Gt(_) | Seek::Le(_))
    }
}

/// One leaf's entries, copied consistently by a reader, and where to go on.
pub struct LeafCopy<'t, T, const L: usize> {
    /// The leaf's entries in key order.
    pub entries: Vec<&'t T>,
    /// Where the seek landed: forward seeks want `entries[pos..]`, backward ones
    /// `entries[..pos]`.
    pub pos: usize,
    next: *const Leaf<T, L>,
}

impl<T, const L: usize> LeafCopy<'_, T, L> {
    /// An empty copy with room for one leaf.
    pub fn new() -> Self {
        LeafCopy { entries: Vec::with_capacity(L), pos: 0, next: std::ptr::null() }
    }

    /// True when a leaf follows to the right.
    pub fn has_next(&self) -> bool {
        !self.next.is_null()
    }
}

impl<T, const L: usize> Default for LeafCopy<'_, T, L> {
    fn default() -> Self {
        Self::new()
    }
}

/// The tree: `L` keys a leaf, `I` children an inner node.
pub struct Tree<T, const L: usize, const I: usize> {
    /// Odd while the writer replaces the root (with `height`).
    root_version: AtomicU64,
    root: AtomicPtr<Header>,
    /// Levels of inner nodes above the leaves (0: the root is a leaf).
    height: AtomicU32,
    /// The writer's: the rightmost leaf, where ascending keys go.
    tail: AtomicPtr<Leaf<T, L>>,
    /// Entries owned (the writer's count).
    len: AtomicU64,
    /// The tree owns its entries.
    _entries: PhantomData<Box<T>>,
}

// Safety: the tree owns its nodes and entries (freed only by `Drop`, with `&mut self`); shared
// access goes through atomics and the single-writer contract; entries cross threads as `&T`
// (readers) and are dropped on whichever thread drops the tree, so `T: Send + Sync`.
unsafe impl<T: Send + Sync, const L: usize, const I: usize> Send for Tree<T, L, I> {}
// Safety: as above.
unsafe impl<T: Send + Sync, const L: usize, const I: usize> Sync for Tree<T, L, I> {}

/// A leaf reached by a descent, with the version its reads are validated against.
struct Landing<'t, T, const L: usize> {
    leaf: &'t Leaf<T, L>,
    version: u64,
}

impl<T: Keyed, const L: usize, const I: usize> Default for Tree<T, L, I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Keyed, const L: usize, const I: usize> Tree<T, L, I> {
    const VALID: () = assert!(L >= 2 && I >= 3 && L <= u32::MAX as usize);

    /// An empty tree (one empty leaf).
    pub fn new() -> Self {
        let () = Self::VALID;
        let leaf = Box::into_raw(Leaf::<T, L>::boxed());
        Tree {
            root_version: AtomicU64::new(0),
            root: AtomicPtr::new(leaf.cast::<Header>()),
            height: AtomicU32::new(0),
            tail: AtomicPtr::new(leaf),
            len: AtomicU64::new(0),
            _entries: PhantomData,
        }
    }

    /// Entries in the tree.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len.load(Mo::Relaxed)
    }

    /// True when the tree holds no entry.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reader: the entry whose key is `key` (the memtable finds keys through its hash index;
    /// the tests check the tree's own lookups).
    #[cfg(test)]
    pub fn get(&self, key: &[u8]) -> Option<&T> {
        let probe = Probe::new(key);
        let mut spins = 0;
        loop {
            let Some(at) = self.descend(&probe, false) else {
                backoff(&mut spins);
                continue;
            };
            let keys = &at.leaf.keys;
            let n = at.leaf.header.count(L);
            let Some(pos) = keys.search(n, &probe, false) else {
                backoff(&mut spins);
                continue;
            };
            let found = (pos < n && keys.cmp_at(pos, &probe) == Some(Ordering::Equal))
                .then(|| keys.ptrs[pos].load(Mo::Acquire));
            if !at.leaf.header.read_valid(at.version) {
                backoff(&mut spins);
                continue;
            }
            // Safety: validated, so the pointer is the entry of `key` (non-null below `count`),
            // owned by the tree for as long as `&self` lives.
            return found.filter(|p| !p.is_null()).map(|p| unsafe { &*p });
        }
    }

    /// Reader: copies the leaf `seek` lands on into `out` (see [`LeafCopy`]).
    pub fn seek<'t>(&'t self, seek: Seek<'_>, out: &mut LeafCopy<'t, T, L>) {
        let key: &[u8] = match seek {
            Seek::Ge(k) | Seek::Gt(k) | Seek::Lt(k) | Seek::Le(k) => k,
            Seek::First | Seek::Last => &[],
        };
        let probe = Probe::new(key);
        let mut spins = 0;
        loop {
            let landing = match seek {
                Seek::First => self.descend_edge(false),
                Seek::Last => self.descend_edge(true),
                _ => self.descend(&probe, seek.left_on_tie()),
            };
            let Some(at) = landing else {
                backoff(&mut spins);
                continue;
            };
            if self.copy_leaf(&at, out, |keys, n| match seek {
                Seek::First => Some(0),
                Seek::Last => Some(n),
                _ => keys.search(n, &probe, seek.past_equal()),
            }) {
                return;
            }
            backoff(&mut spins);
        }
    }

    /// Reader: replaces `out` with the leaf to the right of the one it holds (`pos` 0). Does
    /// nothing when there is none.
    pub fn seek_next<'t>(&'t self, out: &mut LeafCopy<'t, T, L>) {
        if out.next.is_null() {
            out.entries.clear();
            out.pos = 0;
            return;
        }
        // Safety: `next` was loaded (Acquire) from a leaf of this tree; leaves live until the
        // tree drops and `'t` borrows it.
        let leaf = unsafe { &*out.next };
        let mut spins = 0;
        loop {
            if let Some(version) = leaf.header.read_begin() {
                if self.copy_leaf(&Landing { leaf, version }, out, |_, _| Some(0)) {
                    return;
                }
            }
            backoff(&mut spins);
        }
    }

    /// Copies `at`'s entries and next pointer into `out`, `pos` from `position`; false when
    /// the leaf changed meanwhile.
    fn copy_leaf<'t>(
        &'t self,
        at: &Landing<'t, T, L>,
        out: &mut LeafCopy<'t, T, L>,
        position: impl Fn(&Keys<T, L>, usize) -> Option<usize>,
    ) -> bool {
        let keys = &at.leaf.keys;
        let n = at.leaf.header.count(L);
        let Some(pos) = position(keys, n) else { return false };
        out.entries.clear();
        let mut torn = false;
        for ptr in &keys.ptrs[..n] {
            let p = ptr.load(Mo::Acquire);
            torn |= p.is_null();
            if !p.is_null() {
                // Safety: a non-null entry pointer points to a live entry of this tree (module
                // invariants); if the read was torn, it is discarded below, still harmless.
                out.entries.push(unsafe { &*p });
            }
        }
        let next = at.leaf.next.load(Mo::Acquire);
        if torn || !at.leaf.header.read_valid(at.version) {
            return false;
        }
        out.pos = pos.min(n);
        out.next = next;
        true
    }

    /// Reader: the leaf for `probe` (`left_on_tie`: by separators `< key`), validated against
    /// its parents. `None`: the writer was in the way; start again.
    fn descend(&self, probe: &Probe<'_>, left_on_tie: bool) -> Option<Landing<'_, T, L>> {
        self.descend_by(|keys, n| keys.search(n, probe, !left_on_tie))
    }

    /// Reader: the leftmost or rightmost leaf.
    fn descend_edge(&self, rightmost: bool) -> Option<Landing<'_, T, L>> {
        self.descend_by(|_, n| Some(if rightmost { n } else { 0 }))
    }

    /// Reader: walks down choosing a child with `choose(separators, count)`.
    fn descend_by(
        &self,
        choose: impl Fn(&Keys<T, I>, usize) -> Option<usize>,
    ) -> Option<Landing<'_, T, L>> {
        let rv = self.root_version.load(Mo::Acquire);
        if rv & 1 == 1 {
            return None;
        }
        let mut node = self.root.load(Mo::Acquire);
        let mut height = self.height.load(Mo::Relaxed);
        fence(Mo::Acquire);
        if self.root_version.load(Mo::Relaxed) != rv || node.is_null() {
            return None;
        }
        // Safety: a non-null node pointer points to a live node (nodes are freed only when the
        // tree drops); `Header` is the first field of both node kinds (`repr(C)`).
        let mut version = unsafe { &*node }.read_begin()?;
        // The root may have been replaced since `rv` was read, with this node now only its
        // left part: check again now that its version is known.
        fence(Mo::Acquire);
        if self.root_version.load(Mo::Relaxed) != rv {
            return None;
        }
        while height > 0 {
            // Safety: nodes above level 0 are inner nodes; `height` was validated with the root.
            let inner = unsafe { &*node.cast::<Inner<T, I>>() };
            let n = inner.header.count(I - 1);
            let i = choose(&inner.keys, n)?;
            let child = inner.children[i.min(I - 1)].load(Mo::Acquire);
            if child.is_null() || !inner.header.read_valid(version) {
                return None;
            }
            // Safety: as for the root.
            let child_version = unsafe { &*child }.read_begin()?;
            // The parent unchanged after the child's version was read: the child still holds
            // the keys the parent sent us there for.
            if !inner.header.read_valid(version) {
                return None;
            }
            node = child;
            version = child_version;
            height -= 1;
        }
        // Safety: level 0 nodes are leaves.
        let leaf = unsafe { &*node.cast::<Leaf<T, L>>() };
        Some(Landing { leaf, version })
    }

    /// Writer: the entry of `key`, inserting `make()` if the key is new (then `true`).
    ///
    /// # Safety
    /// No other thread calls a writing method of this tree while this one runs.
    pub unsafe fn insert(&self, key: &[u8], make: impl FnOnce() -> Box<T>) -> (&T, bool) {
        let probe = Probe::new(key);
        // Ascending keys land past the last key of the rightmost leaf: no descent.
        // Safety: `tail` always points to a live leaf of this tree (the rightmost one).
        let tail = unsafe { &*self.tail.load(Mo::Relaxed) };
        let n = tail.header.count(L);
        let (leaf, n, pos) =
            if n > 0 && n < L && tail.keys.cmp_at(n - 1, &probe) == Some(Ordering::Less) {
                (tail, n, n)
            } else {
                let leaf = self.writer_descend(&probe);
                let n = leaf.header.count(L);
                let pos = writer_search(&leaf.keys, n, &probe, false);
                if pos < n && leaf.keys.cmp_at(pos, &probe) == Some(Ordering::Equal) {
                    // Safety: below `count`, the writer's entry pointers are non-null and live.
                    return (unsafe { &*leaf.keys.ptrs[pos].load(Mo::Relaxed) }, false);
                }
                (leaf, n, pos)
            };
        let entry = Box::into_raw(make());
        debug_assert!(unsafe { &*entry }.key() == key, "the entry must carry its key");
        let slot = SlotCopy { hi: probe.hi, lo: probe.lo, len: probe.len, ptr: entry };
        if n < L {
            leaf.header.lock();
            for i in (pos..n).rev() {
                leaf.keys.set(i + 1, leaf.keys.get(i));
            }
            leaf.keys.set(pos, slot);
            leaf.header.count.store(n as u32 + 1, Mo::Relaxed);
            leaf.header.unlock();
        } else {
            // A split: walk down again, noting the path the new nodes go up. Every node the
            // split changes stays marked until the parents hold the new nodes.
            let mut path = Vec::with_capacity(self.height.load(Mo::Relaxed) as usize);
            let (_, rightmost) = self.writer_descend_path(&probe, &mut path);
            let mut locked = Locked::default();
            let (separator, right) = self.split_leaf(leaf, pos, slot, &mut locked);
            self.insert_up(&path, separator, right, rightmost, &mut locked);
            locked.unlock_all();
        }
        self.len.fetch_add(1, Mo::Relaxed);
        // Safety: just published; owned by the tree from now on.
        (unsafe { &*entry }, true)
    }

    /// Writer: the leaf for `probe`.
    fn writer_descend(&self, probe: &Probe<'_>) -> &Leaf<T, L> {
        let mut node = self.root.load(Mo::Relaxed);
        for _ in 0..self.height.load(Mo::Relaxed) {
            // Safety: the writer's own view of its tree is never torn; levels above 0 are
            // inner nodes.
            let inner = unsafe { &*node.cast::<Inner<T, I>>() };
            let n = inner.header.count(I - 1);
            let i = writer_search(&inner.keys, n, probe, true);
            node = inner.children[i].load(Mo::Relaxed);
        }
        // Safety: level 0 is a leaf.
        unsafe { &*node.cast::<Leaf<T, L>>() }
    }

    /// Writer: the leaf for `probe`, with the inner nodes and child indexes on the way in
    /// `path`; also whether every step took the last child.
    fn writer_descend_path(
        &self,
        probe: &Probe<'_>,
        path: &mut Vec<(*const Inner<T, I>, usize)>,
    ) -> (&Leaf<T, L>, bool) {
        let mut node = self.root.load(Mo::Relaxed);
        let mut rightmost = true;
        for _ in 0..self.height.load(Mo::Relaxed) {
            // Safety: as in `writer_descend`.
            let inner = unsafe { &*node.cast::<Inner<T, I>>() };
            let n = inner.header.count(I - 1);
            let i = writer_search(&inner.keys, n, probe, true);
            rightmost &= i == n;
            path.push((inner, i));
            node = inner.children[i].load(Mo::Relaxed);
        }
        // Safety: level 0 is a leaf.
        (unsafe { &*node.cast::<Leaf<T, L>>() }, rightmost)
    }

    /// Writer: splits the full `leaf` around the new `slot` at `pos`; returns the new right
    /// leaf's first key and the leaf. `leaf` stays locked in `locked`.
    fn split_leaf(
        &self,
        leaf: &Leaf<T, L>,
        pos: usize,
        slot: SlotCopy<T>,
        locked: &mut Locked,
    ) -> (SlotCopy<T>, *mut Header) {
        let mut all: Vec<SlotCopy<T>> = (0..L).map(|i| leaf.keys.get(i)).collect();
        all.insert(pos, slot);
        // Appending at the right edge (ascending keys): keep this leaf full.
        let append = pos == L && leaf.next.load(Mo::Relaxed).is_null();
        let keep = if append { L } else { all.len() / 2 };
        let right = Leaf::<T, L>::boxed();
        for (i, s) in all[keep..].iter().enumerate() {
            right.keys.set(i, *s);
        }
        right.header.count.store((all.len() - keep) as u32, Mo::Relaxed);
        let was_tail = leaf.next.load(Mo::Relaxed).is_null();
        right.next.store(leaf.next.load(Mo::Relaxed), Mo::Relaxed);
        let right = Box::into_raw(right);
        if was_tail {
            self.tail.store(right, Mo::Relaxed);
        }
        leaf.header.lock();
        locked.push(&leaf.header);
        for (i, s) in all[..keep].iter().enumerate().skip(pos.min(keep)) {
            leaf.keys.set(i, *s);
        }
        leaf.header.count.store(keep as u32, Mo::Relaxed);
        leaf.next.store(right, Mo::Release);
        (all[keep], right.cast::<Header>())
    }

    /// Writer: adds `separator` and the new right node `child` to the parent at the end of
    /// `path` (splitting it, and so on up; a new root when the path is empty).
    fn insert_up(
        &self,
        path: &[(*const Inner<T, I>, usize)],
        separator: SlotCopy<T>,
        child: *mut Header,
        rightmost: bool,
        locked: &mut Locked,
    ) {
        let Some((&(parent, i), above)) = path.split_last() else {
            return self.grow(separator, child);
        };
        // Safety: the path holds this tree's inner nodes, live until it drops.
        let parent = unsafe { &*parent };
        let n = parent.header.count(I - 1);
        parent.header.lock();
        locked.push(&parent.header);
        if n < I - 1 {
            for j in (i..n).rev() {
                parent.keys.set(j + 1, parent.keys.get(j));
                let c = parent.children[j + 1].load(Mo::Relaxed);
                parent.children[j + 2].store(c, Mo::Release);
            }
            parent.keys.set(i, separator);
            parent.children[i + 1].store(child, Mo::Release);
            parent.header.count.store(n as u32 + 1, Mo::Relaxed);
            return;
        }
        let mut seps: Vec<SlotCopy<T>> = (0..n).map(|j| parent.keys.get(j)).collect();
        let mut kids: Vec<*mut Header> =
            (0..=n).map(|j| parent.children[j].load(Mo::Relaxed)).collect();
        seps.insert(i, separator);
        kids.insert(i + 1, child);
        // `keep` separators stay, the next one moves up, the rest go right.
        let keep = if rightmost && i == n { n } else { seps.len() / 2 };
        let right = Inner::<T, I>::boxed();
        for (j, s) in seps[keep + 1..].iter().enumerate() {
            right.keys.set(j, *s);
        }
        for (j, c) in kids[keep + 1..].iter().enumerate() {
            right.children[j].store(*c, Mo::Relaxed);
        }
        right.header.count.store((seps.len() - keep - 1) as u32, Mo::Relaxed);
        for (j, s) in seps[..keep].iter().enumerate() {
            parent.keys.set(j, *s);
        }
        for (j, c) in kids[..=keep].iter().enumerate() {
            parent.children[j].store(*c, Mo::Release);
        }
        parent.header.count.store(keep as u32, Mo::Relaxed);
        let right = Box::into_raw(right).cast::<Header>();
        self.insert_up(above, seps[keep], right, rightmost, locked);
    }

    /// Writer: a new root over the old one and `right`.
    fn grow(&self, separator: SlotCopy<T>, right: *mut Header) {
        let old = self.root.load(Mo::Relaxed);
        let root = Inner::<T, I>::boxed();
        root.keys.set(0, separator);
        root.children[0].store(old, Mo::Relaxed);
        root.children[1].store(right, Mo::Relaxed);
        root.header.count.store(1, Mo::Relaxed);
        let root = Box::into_raw(root).cast::<Header>();
        let v = self.root_version.load(Mo::Relaxed);
        self.root_version.store(v + 1, Mo::Relaxed);
        fence(Mo::Release);
        self.root.store(root, Mo::Release);
        self.height.fetch_add(1, Mo::Relaxed);
        self.root_version.store(v + 2, Mo::Release);
    }
}

impl<T, const L: usize, const I: usize> Drop for Tree<T, L, I> {
    fn drop(&mut self) {
        let root = *self.root.get_mut();
        let height = *self.height.get_mut();
        free::<T, L, I>(root, height);
    }
}

/// Frees the subtree at `node` (`height` levels of inner nodes above its leaves), entries
/// included.
fn free<T, const L: usize, const I: usize>(node: *mut Header, height: u32) {
    if node.is_null() {
        return;
    }
    if height == 0 {
        // Safety: `Drop` has `&mut self`: nothing else can reach the tree. Each leaf is freed
        // once (reached from exactly one parent slot below `count`), and each entry appears in
        // exactly one leaf below that leaf's `count` (slots past it may hold stale copies of
        // entries that moved right, and are not freed here).
        let leaf = unsafe { Box::from_raw(node.cast::<Leaf<T, L>>()) };
        let n = (leaf.header.count.load(Mo::Relaxed) as usize).min(L);
        for ptr in &leaf.keys.ptrs[..n] {
            let p = ptr.load(Mo::Relaxed);
            if !p.is_null() {
                // Safety: as above; entries were allocated by `Box` in `insert`.
                drop(unsafe { Box::from_raw(p) });
            }
        }
        return;
    }
    // Safety: as above; an inner node owns its children below `count + 1`.
    let inner = unsafe { Box::from_raw(node.cast::<Inner<T, I>>()) };
    let n = (inner.header.count.load(Mo::Relaxed) as usize).min(I - 1);
    for child in &inner.children[..=n] {
        free::<T, L, I>(child.load(Mo::Relaxed), height - 1);
    }
}

/// The writer's search: its own view is never torn (a `None` cannot happen; it would order the
/// probe first).
fn writer_search<T: Keyed, const N: usize>(
    keys: &Keys<T, N>,
    n: usize,
    probe: &Probe<'_>,
    strict: bool,
) -> usize {
    let found = keys.search(n, probe, strict);
    debug_assert!(found.is_some(), "the writer's view is never torn");
    found.unwrap_or(0)
}

/// Nodes the writer marked changing during one insert, cleared together at its end.
#[derive(Default)]
struct Locked {
    headers: Vec<*const Header>,
}

impl Locked {
    fn push(&mut self, header: &Header) {
        self.headers.push(header);
    }

    fn unlock_all(&mut self) {
        for h in self.headers.drain(..) {
            // Safety: pushed from live nodes of the tree during this insert.
            unsafe { &*h }.unlock();
        }
    }
}

/// A reader that found the writer in its way: spin a little, then let the writer run.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests;
