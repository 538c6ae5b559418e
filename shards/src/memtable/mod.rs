//! The MVCC memtable: an ordered map of key → versions (value or tombstone), one writer, any
//! number of lock-free readers.
//!
//! Written by one thread at a time: whoever holds the shard's commit lock (a caller or the shard
//! thread), and at open the replay ([`MemtableWriter`], one per memtable). Old
//! versions are collected by the shard thread ([`GarbageCollector`], one per memtable). Read
//! concurrently by caller threads (the published read view, `docs/ARCHITECTURE.md` "Reads and
//! MVCC"). A reader at snapshot `s` sees, per key, the newest version with timestamp `<= s`.
//! Versions are keyed on the MVCC timestamp (`version::Ts`), never on a log position.
//!
//! Layout (ADR 0003): an ordered index of keys (`tree`: a B+tree, one writer, optimistic
//! readers) whose entries each hold the key's versions newest first (`chain`), and a hash index
//! key → entry (`hash`). A new key is one insert into each; an overwrite finds its entry by hash
//! and only prepends to its list. A point read is one hash probe; a scan copies whole leaves.
//!
//! Old versions are removed (`GarbageCollector::collect_garbage`) only when a newer version is
//! at or below the GC watermark, i.e. visible to every registered snapshot. Point reads do not
//! register: a get that finds only versions newer than its snapshot re-reads the visible
//! timestamp and retries (`view::ShardView::get`), which stays correct while older versions
//! disappear. Keys are never removed from the index (a memtable only grows until it is
//! replaced).

mod chain;
mod hash;
mod tree;

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use self::chain::{pin, Chain, Visible};
use self::hash::HashIndex;
use self::tree::{Keyed, LeafCopy, Seek, Tree};
use crate::version::Ts;

/// Keys a leaf of the index holds.
pub const LEAF_KEYS: usize = 64;
/// Children an inner node of the index holds.
pub const INNER_CHILDREN: usize = 64;

/// Approximate bytes a version costs beyond its value (list node, allocator overhead).
const VERSION_OVERHEAD_BYTES: usize = 48;
/// Memtables made so far: each gets its own number, which its entry handles carry.
static MEMTABLES: AtomicU64 = AtomicU64::new(0);
/// Approximate bytes a key costs in the index beyond its heap bytes (entry, leaf slot share).
const KEY_OVERHEAD_BYTES: usize = 96;

/// Keys up to this many bytes live inside their memtable entry (no separate allocation, one cache
/// miss less per comparison).
pub const INLINE_KEY_BYTES: usize = 22;

/// A user key, stored inline when short.
#[derive(Clone, Debug)]
pub struct KeyBytes(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE_KEY_BYTES] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    /// Copies `key`, inline when it is short.
    pub fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY_BYTES {
            let mut buf = [0u8; INLINE_KEY_BYTES];
            buf[..key.len()].copy_from_slice(key);
            KeyBytes(Repr::Inline { len: key.len() as u8, buf })
        } else {
            KeyBytes(Repr::Heap(key.into()))
        }
    }

    /// The key bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }

    fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Heap(b) => b.len(),
        }
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl std::hash::Hash for KeyBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly like `[u8]`, so lookups by `&[u8]` (Borrow) find the entry.
        self.as_slice().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Result of a point lookup at a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The newest visible version is a value.
    Found(Vec<u8>),
    /// The newest visible version is a tombstone.
    Deleted,
    /// No visible version; `newest_invisible` is the newest version that was too new, if any.
    Missing {
        /// Timestamp of the newest version above the snapshot.
        newest_invisible: Option<Ts>,
    },
}

/// Scan direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// One chunk of a scan.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Visible `(key, value)` pairs, in scan order (keys are copied inline when short).
    pub entries: Vec<(KeyBytes, Vec<u8>)>,
    /// The last key examined; the next chunk starts strictly after it. `None`: range exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// One key of the index: the key and its versions.
struct KeyEntry {
    key: KeyBytes,
    versions: Chain,
}

impl Keyed for KeyEntry {
    fn key(&self) -> &[u8] {
        self.key.as_slice()
    }
}

type Index = Tree<KeyEntry, LEAF_KEYS, INNER_CHILDREN>;
type Leaf<'t> = LeafCopy<'t, KeyEntry, LEAF_KEYS>;

/// The memtable of one shard (see the module documentation).
pub struct Memtable {
    /// This memtable's number (entry handles name it).
    id: u64,
    /// Key → entry, for point reads and overwrites. Declared before `index`, which owns the
    /// entries: dropped first.
    points: HashIndex<KeyEntry>,
    index: Index,
    approx_bytes: AtomicUsize,
    versions: AtomicUsize,
}

impl Default for Memtable {
    fn default() -> Self {
        Memtable {
            id: MEMTABLES.fetch_add(1, AtomicOrdering::Relaxed),
            points: HashIndex::new(),
            index: Index::new(),
            approx_bytes: AtomicUsize::new(0),
            versions: AtomicUsize::new(0),
        }
    }
}

impl Memtable {
    /// An empty memtable, its one writer and its one garbage collector.
    pub fn create() -> (Arc<Memtable>, MemtableWriter, GarbageCollector) {
        let table = Arc::new(Memtable::default());
        let writer = MemtableWriter { table: table.clone() };
        let collector = GarbageCollector { table: table.clone() };
        (table, writer, collector)
    }

    /// Approximate bytes held (keys, values, index and list nodes).
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes.load(AtomicOrdering::Relaxed)
    }

    /// Number of versions stored (all keys, all versions, tombstones included).
    pub fn version_count(&self) -> usize {
        self.versions.load(AtomicOrdering::Relaxed)
    }

    /// The newest version of `key` with timestamp `<= snapshot`.
    pub fn get(&self, key: &[u8], snapshot: Ts) -> Lookup {
        let guard = &pin();
        let Some(entry) = self.points.get(key, guard) else {
            return Lookup::Missing { newest_invisible: None };
        };
        match entry.versions.visible(snapshot, guard) {
            Visible::At(v) => match v.value() {
                Some(value) => Lookup::Found(value.to_vec()),
                None => Lookup::Deleted,
            },
            Visible::Missing(newest_invisible) => Lookup::Missing { newest_invisible },
        }
    }

    /// The timestamp of `key`'s newest version, visible or not (a transaction's conflict
    /// check: a version newer than its snapshot was committed after it began).
    pub fn newest_ts(&self, key: &[u8]) -> Option<Ts> {
        let guard = &pin();
        self.points.get(key, guard).and_then(|e| e.versions.newest_ts(guard))
    }

    /// True when some key within the bounds has a version newer than `ts` (a serializable
    /// transaction's range check: a key was written, inserted or deleted after its snapshot).
    pub fn written_after(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>, ts: Ts) -> bool {
        let guard = &pin();
        let mut found = false;
        self.forward(lower, upper, |entry| {
            found = entry.versions.newest_ts(guard).is_some_and(|newest| newest > ts);
            !found
        });
        found
    }

    /// Visits the entries within the bounds in ascending key order while `visit` says go on.
    fn forward<'t>(
        &'t self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        mut visit: impl FnMut(&'t KeyEntry) -> bool,
    ) {
        let mut leaf = Leaf::new();
        let seek = match lower {
            Bound::Included(k) => Seek::Ge(k),
            Bound::Excluded(k) => Seek::Gt(k),
            Bound::Unbounded => Seek::First,
        };
        self.index.seek(seek, &mut leaf);
        let mut from = leaf.pos;
        loop {
            for entry in &leaf.entries[from..] {
                if !below_upper(entry.key(), upper) || !visit(entry) {
                    return;
                }
            }
            if !leaf.has_next() {
                return;
            }
            self.index.seek_next(&mut leaf);
            from = 0;
        }
    }

    /// Up to `limit` visible entries within the bounds at `snapshot`, in `direction` order.
    /// Keys are examined in order; a later chunk resumes after `Chunk::resume_after`.
    pub fn chunk(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Ts,
        direction: Direction,
        limit: usize,
    ) -> Chunk {
        let (entries, resume_after) =
            self.walk(lower, upper, snapshot, direction, limit, |key, value| {
                value.map(|v| (key.clone(), v.to_vec()))
            });
        Chunk { entries, resume_after }
    }

    /// As [`chunk`](Self::chunk), but a key whose visible version is a tombstone is returned
    /// too, with `None` (and counts toward `limit`): what a merge with older layers needs.
    pub fn chunk_versions(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Ts,
        direction: Direction,
        limit: usize,
    ) -> VersionChunk {
        let (entries, resume_after) =
            self.walk(lower, upper, snapshot, direction, limit, |key, value| {
                Some((key.clone(), value.map(<[u8]>::to_vec)))
            });
        VersionChunk { entries, resume_after }
    }

    /// Walks the keys within the bounds in `direction` order and keeps what `make` makes of
    /// each key's visible version (`None`: a tombstone), up to `limit` kept.
    fn walk<E>(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Ts,
        direction: Direction,
        limit: usize,
        make: impl Fn(&KeyBytes, Option<&[u8]>) -> Option<E>,
    ) -> (Vec<E>, Option<Vec<u8>>) {
        let mut scan = ChunkBuilder {
            out: Vec::with_capacity(limit.clamp(1, 1024)),
            resume_after: None,
            limit: limit.max(1),
            last: None,
            make,
        };
        let guard = &pin();
        match direction {
            Direction::Forward => {
                self.forward(lower, upper, |entry| scan.offer(entry, snapshot, guard));
            }
            Direction::Reverse => {
                let mut leaf = Leaf::new();
                let seek = match upper {
                    Bound::Included(k) => Seek::Le(k),
                    Bound::Excluded(k) => Seek::Lt(k),
                    Bound::Unbounded => Seek::Last,
                };
                self.index.seek(seek, &mut leaf);
                'leaves: loop {
                    for entry in leaf.entries[..leaf.pos].iter().rev() {
                        // A key inserted since the first seek may sit above the bound in a
                        // later leaf's copy (it is invisible at the snapshot anyway).
                        if !below_upper(entry.key(), upper) {
                            continue;
                        }
                        if !above_lower(entry.key(), lower) || !scan.offer(entry, snapshot, guard) {
                            break 'leaves;
                        }
                    }
                    // Every leaf but the leftmost starts with a key below which the previous
                    // leaf's keys lie; the leftmost has nothing before it.
                    let Some(&first) = leaf.entries.first() else { break };
                    self.index.seek(Seek::Lt(first.key()), &mut leaf);
                    if leaf.pos == 0 {
                        break;
                    }
                }
            }
        }
        (scan.out, scan.resume_after)
    }
}

/// One chunk of a walk that keeps tombstones ([`Memtable::chunk_versions`]).
#[derive(Debug, Default)]
pub struct VersionChunk {
    /// Visible `(key, value)` pairs in walk order; `None` is a tombstone.
    pub entries: Vec<(KeyBytes, Option<Vec<u8>>)>,
    /// The last key examined; `None`: range exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// A chunk being filled.
struct ChunkBuilder<'t, E, F> {
    out: Vec<E>,
    resume_after: Option<Vec<u8>>,
    limit: usize,
    /// The last key examined.
    last: Option<&'t KeyEntry>,
    make: F,
}

impl<'t, E, F: Fn(&KeyBytes, Option<&[u8]>) -> Option<E>> ChunkBuilder<'t, E, F> {
    /// Examines `entry`: keeps what `make` makes of its visible version, if any. False when
    /// the chunk is full (then `resume_after` is the key examined before it).
    fn offer(&mut self, entry: &'t KeyEntry, snapshot: Ts, guard: &crossbeam_epoch::Guard) -> bool {
        if let Visible::At(v) = entry.versions.visible(snapshot, guard) {
            if self.out.len() == self.limit {
                // Full before copying this one: the next chunk examines it again.
                self.resume_after = self.last.map(|e| e.key().to_vec());
                return false;
            }
            if let Some(made) = (self.make)(&entry.key, v.value()) {
                self.out.push(made);
            }
        }
        self.last = Some(entry);
        true
    }
}

/// The one thread that adds versions to a memtable (see the module documentation). Not
/// `Clone`: `Memtable::create` makes the only one.
pub struct MemtableWriter {
    table: Arc<Memtable>,
}

impl MemtableWriter {
    /// Approximate bytes its memtable holds.
    pub fn approx_bytes(&self) -> usize {
        self.table.approx_bytes()
    }

    /// Inserts a version (`value` `None`: a tombstone), copying the key and the value. Returns
    /// the key's handle when the key has older versions, so the caller can queue it for garbage
    /// collection. Versions of a key arrive in increasing timestamp order (equal when a batch
    /// writes the same key twice: the later write wins).
    pub fn insert(&mut self, key: &[u8], ts: Ts, value: Option<&[u8]>) -> Option<EntryRef> {
        let prepared = Prepared { hash: self.table.points.hash(key) };
        self.insert_prepared(prepared, key, ts, value)
    }

    /// Starts loading what inserting `key` will touch first, so that work done meanwhile (the
    /// WAL record's encoding) overlaps the memory access; pass the result to
    /// `insert_prepared`.
    pub fn prepare(&mut self, key: &[u8]) -> Prepared {
        let hash = self.table.points.hash(key);
        // Safety: `MemtableWriter` is the memtable's only writer (see `insert`).
        #[allow(unsafe_code)]
        unsafe {
            self.table.points.prefetch(hash);
        }
        Prepared { hash }
    }

    /// `insert`, for a key `prepare` was called for.
    pub fn insert_prepared(
        &mut self,
        prepared: Prepared,
        key: &[u8],
        ts: Ts,
        value: Option<&[u8]>,
    ) -> Option<EntryRef> {
        debug_assert!(ts >= Ts::FIRST);
        debug_assert_eq!(prepared.hash, self.table.points.hash(key), "prepared for another key");
        let t = &self.table;
        let mut bytes = value.map_or(0, <[u8]>::len) + VERSION_OVERHEAD_BYTES;
        let older = match t.points.lookup_hashed(key, prepared.hash, &pin()) {
            Ok(entry) => {
                entry.versions.push(ts, value);
                Some(EntryRef { table: t.id, entry: NonNull::from(entry) })
            }
            Err(vacant) => {
                let entry = KeyEntry { key: KeyBytes::new(key), versions: Chain::new(ts, value) };
                bytes += KEY_OVERHEAD_BYTES + entry.key.heap_bytes();
                // Safety: `MemtableWriter` is the only writer of this memtable's tree and hash
                // index (`create` makes one and it is not `Clone`), and `&mut self` keeps its
                // calls one at a time, so nothing was inserted since the lookup. The tree owns
                // the entry until the memtable drops, after the hash index (field order).
                #[allow(unsafe_code)]
                unsafe {
                    let (entry, fresh) = t.index.insert(key, || Box::new(entry));
                    debug_assert!(fresh, "a key missing from the hash index is new");
                    t.points.insert(vacant, entry);
                }
                None
            }
        };
        t.approx_bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        t.versions.fetch_add(1, AtomicOrdering::Relaxed);
        older
    }
}

/// A key's hash, computed (and its hash slot prefetched) ahead of its insert.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    hash: u64,
}

/// A key of one memtable, for its garbage collector: cheaper to queue than a copy of the key.
/// Only that memtable's collector can use it (it checks).
#[derive(Clone, Copy, Debug)]
pub struct EntryRef {
    table: u64,
    entry: NonNull<KeyEntry>,
}

// Safety: a handle is a number and an address; it is only dereferenced by the collector of the
// memtable that made it (`GarbageCollector::collect_garbage` checks `table`), which holds that
// memtable, so the entry is alive, and entries are `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for EntryRef {}

/// The one thread that collects a memtable's old versions. Not `Clone`: `Memtable::create`
/// makes the only one.
pub struct GarbageCollector {
    table: Arc<Memtable>,
}

impl GarbageCollector {
    /// Removes the versions of `key` that no snapshot at or above `watermark` can see
    /// (everything older than the newest version `<= watermark`). Returns bytes freed; 0 for a
    /// handle of another memtable.
    pub fn collect_garbage(&mut self, key: EntryRef, watermark: Ts) -> usize {
        let t = &self.table;
        if key.table != t.id {
            return 0;
        }
        // Safety: the handle was made by this memtable (checked above), whose entries live
        // until it drops, and `self` holds it.
        #[allow(unsafe_code)]
        let entry = unsafe { key.entry.as_ref() };
        let guard = &pin();
        // Safety: `GarbageCollector` is this memtable's only collector (`create` makes one and
        // it is not `Clone`), and `&mut self` keeps its calls one at a time.
        #[allow(unsafe_code)]
        let (versions, value_bytes) = unsafe { entry.versions.collect(watermark, guard) };
        let freed = value_bytes + versions * VERSION_OVERHEAD_BYTES;
        let _ =
            t.approx_bytes.fetch_update(AtomicOrdering::Relaxed, AtomicOrdering::Relaxed, |b| {
                Some(b.saturating_sub(freed))
            });
        t.versions.fetch_sub(versions, AtomicOrdering::Relaxed);
        freed
    }
}

/// True when `key` is within `upper`.
pub(crate) fn below_upper(key: &[u8], upper: Bound<&[u8]>) -> bool {
    match upper {
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
        Bound::Unbounded => true,
    }
}

/// True when `key` is within `lower`.
pub(crate) fn above_lower(key: &[u8], lower: Bound<&[u8]>) -> bool {
    match lower {
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
        Bound::Unbounded => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Arc<Memtable>, MemtableWriter) {
        let (m, w, _) = Memtable::create();
        (m, w)
    }

    fn put(w: &mut MemtableWriter, k: &[u8], ts: u64, v: &[u8]) -> Option<EntryRef> {
        w.insert(k, Ts::new(ts), Some(v))
    }

    fn t(n: u64) -> Ts {
        Ts::new(n)
    }

    #[test]
    fn versions_and_snapshots() {
        let (m, mut w) = table();
        assert!(put(&mut w, b"a", 1, b"a1").is_none());
        assert!(put(&mut w, b"a", 3, b"a3").is_some());
        w.insert(b"a", t(5), None);
        assert_eq!(m.get(b"a", t(2)), Lookup::Found(b"a1".to_vec()));
        assert_eq!(m.get(b"a", t(4)), Lookup::Found(b"a3".to_vec()));
        assert_eq!(m.get(b"a", t(9)), Lookup::Deleted);
        assert_eq!(m.get(b"b", t(9)), Lookup::Missing { newest_invisible: None });
        assert_eq!(m.get(b"a", t(0)), Lookup::Missing { newest_invisible: Some(t(5)) });
        assert_eq!(m.version_count(), 3);
    }

    #[test]
    fn prefix_keys_sort_before_longer_keys() {
        let (m, mut w) = table();
        put(&mut w, b"a\0", 1, b"x");
        put(&mut w, b"a", 2, b"y");
        let c = m.chunk(Bound::Unbounded, Bound::Unbounded, t(9), Direction::Forward, 10);
        let keys: Vec<_> = c.entries.iter().map(|(k, _)| k.as_slice().to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"a\0".to_vec()]);
    }

    #[test]
    fn gc_keeps_what_the_watermark_sees() {
        let (m, mut w, mut gc) = Memtable::create();
        put(&mut w, b"k", 1, b"1");
        put(&mut w, b"k", 2, b"2");
        let k = put(&mut w, b"k", 3, b"3").unwrap();
        assert!(gc.collect_garbage(k, t(2)) > 0);
        assert_eq!(m.version_count(), 2);
        assert_eq!(m.get(b"k", t(2)), Lookup::Found(b"2".to_vec()));
        assert_eq!(m.get(b"k", t(9)), Lookup::Found(b"3".to_vec()));
        // A handle from another memtable is refused, not followed.
        let (_other, mut w2, _) = Memtable::create();
        w2.insert(b"k", t(1), Some(b"x"));
        let foreign = w2.insert(b"k", t(2), Some(b"y")).unwrap();
        assert_eq!(gc.collect_garbage(foreign, t(9)), 0);
    }

    #[test]
    fn chunks_resume_both_directions() {
        let (m, mut w) = table();
        for i in 0..10u8 {
            put(&mut w, &[i], u64::from(i) + 1, &[i]);
        }
        w.insert(&[4], t(20), None);
        let fwd = m.chunk(
            Bound::Included(&[2][..]),
            Bound::Excluded(&[8][..]),
            t(100),
            Direction::Forward,
            3,
        );
        assert_eq!(
            fwd.entries.iter().map(|e| e.0.as_slice()[0]).collect::<Vec<_>>(),
            vec![2, 3, 5]
        );
        let next = fwd.resume_after.unwrap();
        let fwd2 = m.chunk(
            Bound::Excluded(&next),
            Bound::Excluded(&[8][..]),
            t(100),
            Direction::Forward,
            3,
        );
        assert_eq!(fwd2.entries.iter().map(|e| e.0.as_slice()[0]).collect::<Vec<_>>(), vec![6, 7]);
        assert!(fwd2.resume_after.is_none());
        let rev = m.chunk(
            Bound::Included(&[2][..]),
            Bound::Excluded(&[8][..]),
            t(100),
            Direction::Reverse,
            3,
        );
        assert_eq!(
            rev.entries.iter().map(|e| e.0.as_slice()[0]).collect::<Vec<_>>(),
            vec![7, 6, 5]
        );
        let next = rev.resume_after.unwrap();
        let rev2 = m.chunk(
            Bound::Included(&[2][..]),
            Bound::Excluded(&next),
            t(100),
            Direction::Reverse,
            3,
        );
        assert_eq!(rev2.entries.iter().map(|e| e.0.as_slice()[0]).collect::<Vec<_>>(), vec![3, 2]);
        // At an old snapshot the tombstone is invisible and key 4 is back.
        let old = m.chunk(Bound::Unbounded, Bound::Unbounded, t(10), Direction::Forward, 100);
        assert_eq!(old.entries.len(), 10);
    }

    #[test]
    fn chunks_cross_many_leaves_both_ways() {
        let (m, mut w) = table();
        let n = 5 * LEAF_KEYS as u32;
        for i in 0..n {
            put(&mut w, &(i * 2).to_be_bytes(), u64::from(i) + 1, b"v");
        }
        let all = |dir| {
            let mut keys = Vec::new();
            let mut bound: Option<Vec<u8>> = None;
            loop {
                let b = bound.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let (lo, hi) = match dir {
                    Direction::Forward => (b, Bound::Unbounded),
                    Direction::Reverse => (Bound::Unbounded, b),
                };
                let c = m.chunk(lo, hi, Ts::MAX, dir, 7);
                keys.extend(c.entries.iter().map(|(k, _)| k.as_slice().to_vec()));
                match c.resume_after {
                    Some(r) => bound = Some(r),
                    None => return keys,
                }
            }
        };
        let fwd = all(Direction::Forward);
        let mut rev = all(Direction::Reverse);
        assert_eq!(fwd.len(), n as usize);
        assert!(fwd.windows(2).all(|p| p[0] < p[1]));
        rev.reverse();
        assert_eq!(fwd, rev);
        // A bound between keys, in the middle of the index.
        let mid = (n + 1).to_be_bytes();
        let c =
            m.chunk(Bound::Included(&mid[..]), Bound::Unbounded, Ts::MAX, Direction::Forward, 2);
        assert_eq!(c.entries[0].0.as_slice(), &(n + 2).to_be_bytes());
        let c =
            m.chunk(Bound::Unbounded, Bound::Included(&mid[..]), Ts::MAX, Direction::Reverse, 2);
        assert_eq!(c.entries[0].0.as_slice(), &n.to_be_bytes(), "n is even, so a key");
    }
}
