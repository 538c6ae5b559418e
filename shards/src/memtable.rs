//! The MVCC memtable: an ordered, concurrent map of `(key, timestamp)` → value or tombstone.
//!
//! Written only by its shard thread; read concurrently by caller threads (the published read
//! view, `docs/ARCHITECTURE.md` "Reads and MVCC"). Entries sort by key ascending, then timestamp
//! *descending*, so the newest version of a key comes first. A reader at snapshot `s` sees,
//! per key, the newest version with timestamp `<= s`. Versions are keyed on the MVCC
//! timestamp (`version::Ts`), never on a log position.
//!
//! Old versions are removed by the shard (`collect_garbage`) only when a newer version is at or
//! below the GC watermark, i.e. visible to every registered snapshot. Point reads do not
//! register: a get that finds only versions newer than its snapshot re-reads the visible
//! timestamp and retries (`view::ShardView::get`), which stays correct while older versions
//! disappear.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Guard};
use crossbeam_skiplist::base::{Entry, SkipList};

use crate::version::Ts;

/// Approximate per-entry overhead of the skiplist node, for memory accounting.
const ENTRY_OVERHEAD_BYTES: usize = 96;

/// Keys up to this many bytes live inside the skiplist node (no separate allocation, one cache
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

/// A key plus its version. Orders by key ascending, then timestamp descending.
#[derive(Clone, Debug)]
pub struct VersionedKey {
    ts: Ts,
    key: KeyBytes,
}

impl VersionedKey {
    /// Builds from a key and a timestamp.
    pub fn new(key: &[u8], ts: Ts) -> Self {
        VersionedKey { ts, key: KeyBytes::new(key) }
    }

    /// The user key.
    pub fn key(&self) -> &[u8] {
        self.key.as_slice()
    }

    /// The version's timestamp.
    pub fn ts(&self) -> Ts {
        self.ts
    }

    fn heap_bytes(&self) -> usize {
        self.key.heap_bytes()
    }
}

impl PartialEq for VersionedKey {
    fn eq(&self, other: &Self) -> bool {
        self.ts == other.ts && self.key() == other.key()
    }
}

impl Eq for VersionedKey {}

impl Ord for VersionedKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key()).then_with(|| other.ts.cmp(&self.ts))
    }
}

impl PartialOrd for VersionedKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A stored version: a value, or a tombstone (`None`). Shared by the ordered list and the
/// point-read index.
pub type Slot = Option<Arc<[u8]>>;

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
    /// Visible `(key, value)` pairs, in scan order.
    /// (Keys are copied inline when short; values are shared, not copied.)
    pub entries: Vec<(KeyBytes, Arc<[u8]>)>,
    /// The last key examined; the next chunk starts strictly after it. `None`: range exhausted.
    pub resume_after: Option<Vec<u8>>,
}

/// The memtable of one shard: every version in an ordered concurrent skiplist (scans,
/// snapshot reads), plus a concurrent hash index of each key's newest version, so a point read
/// costs one hash probe instead of a skiplist descent (`examples/memtable_ops.rs` measures
/// both).
pub struct Memtable {
    map: SkipList<VersionedKey, Slot>,
    latest: papaya::HashMap<KeyBytes, (Ts, Slot), foldhash::fast::RandomState>,
    approx_bytes: AtomicUsize,
}

/// Per-key overhead of the hash index, for memory accounting.
const INDEX_OVERHEAD_BYTES: usize = 64;

impl Default for Memtable {
    fn default() -> Self {
        Memtable {
            map: SkipList::new(epoch::default_collector().clone()),
            // foldhash: fast for short keys, randomly seeded per map. Blocking resize: only the
            // shard thread writes, and readers are never blocked by a resize.
            latest: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            approx_bytes: AtomicUsize::new(0),
        }
    }
}

type MapEntry<'a, 'g> = Entry<'a, 'g, VersionedKey, Slot>;

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Memtable::default()
    }

    /// Approximate bytes held (keys, values, node overhead).
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes.load(AtomicOrdering::Relaxed)
    }

    /// Number of versions stored (all keys, all versions, tombstones included).
    pub fn version_count(&self) -> usize {
        self.map.len()
    }

    /// Shard-side: inserts a version. Returns true when the key has an older version, so the
    /// caller can queue the key for garbage collection. Versions of a key arrive in increasing
    /// timestamp order (one writer per shard), so the index always holds the newest.
    pub fn insert(&self, key: &[u8], ts: Ts, value: Slot) -> bool {
        debug_assert!(ts >= Ts::FIRST);
        let vk = VersionedKey::new(key, ts);
        let index_key = vk.key.clone();
        let mut bytes =
            vk.heap_bytes() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD_BYTES;
        let guard = &epoch::pin();
        self.map.insert(vk, value.clone(), guard).release(guard);
        let index = self.latest.pin();
        let older = match index.insert(index_key, (ts, value)) {
            Some(&(previous, _)) => {
                // Equal when a batch writes the same key twice (one timestamp per batch).
                debug_assert!(previous <= ts);
                true
            }
            None => {
                bytes += INDEX_OVERHEAD_BYTES;
                false
            }
        };
        self.approx_bytes.fetch_add(bytes, AtomicOrdering::Relaxed);
        older
    }

    /// The newest version of `key` with timestamp `<= snapshot`.
    pub fn get(&self, key: &[u8], snapshot: Ts) -> Lookup {
        match self.latest.pin().get(key) {
            None => return Lookup::Missing { newest_invisible: None },
            Some((ts, slot)) if *ts <= snapshot => {
                return match slot {
                    Some(v) => Lookup::Found(v.to_vec()),
                    None => Lookup::Deleted,
                };
            }
            Some(_) => {} // the newest version is still in flight: walk the versions
        }
        self.get_ordered(key, snapshot)
    }

    /// `get` by walking the ordered versions (used when the newest is not yet visible).
    fn get_ordered(&self, key: &[u8], snapshot: Ts) -> Lookup {
        let guard = &epoch::pin();
        let probe = VersionedKey::new(key, Ts::MAX);
        let mut cursor = self.map.lower_bound(Bound::Included(&probe), guard);
        let mut newest_invisible = None;
        while let Some(entry) = cursor {
            if entry.key().key() != key {
                break;
            }
            let ts = entry.key().ts();
            if ts <= snapshot {
                return match entry.value() {
                    Some(v) => Lookup::Found(v.to_vec()),
                    None => Lookup::Deleted,
                };
            }
            newest_invisible.get_or_insert(ts);
            cursor = entry.next();
        }
        Lookup::Missing { newest_invisible }
    }

    /// Shard-side: removes the versions of `key` that no snapshot at or above `watermark` can
    /// see (everything older than the newest version `<= watermark`). Returns bytes freed.
    pub fn collect_garbage(&self, key: &[u8], watermark: Ts) -> usize {
        let guard = &epoch::pin();
        let probe = VersionedKey::new(key, watermark);
        let Some(keep) = self.map.lower_bound(Bound::Included(&probe), guard) else { return 0 };
        if keep.key().key() != key {
            return 0;
        }
        let mut freed = 0;
        let mut cursor = keep.next();
        while let Some(entry) = cursor {
            if entry.key().key() != key {
                break;
            }
            freed += entry.key().heap_bytes() + entry.value().as_ref().map_or(0, |v| v.len());
            freed += ENTRY_OVERHEAD_BYTES;
            cursor = entry.next();
            entry.remove();
        }
        self.approx_bytes.fetch_sub(freed.min(self.approx_bytes()), AtomicOrdering::Relaxed);
        freed
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
        let limit = limit.max(1);
        let guard = &epoch::pin();
        match direction {
            Direction::Forward => self.chunk_forward(lower, upper, snapshot, limit, guard),
            Direction::Reverse => self.chunk_reverse(lower, upper, snapshot, limit, guard),
        }
    }

    fn chunk_forward(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Ts,
        limit: usize,
        guard: &Guard,
    ) -> Chunk {
        let mut out = Chunk::default();
        let mut cursor = match lower {
            Bound::Included(k) => {
                self.map.lower_bound(Bound::Included(&VersionedKey::new(k, Ts::MAX)), guard)
            }
            Bound::Excluded(k) => {
                self.map.lower_bound(Bound::Excluded(&VersionedKey::new(k, Ts::ZERO)), guard)
            }
            Bound::Unbounded => self.map.front(guard),
        };
        // The key whose visible version is already decided; older versions of it are skipped.
        let mut current: Option<MapEntry<'_, '_>> = None;
        while let Some(entry) = cursor {
            let key = entry.key().key();
            if !below_upper(key, upper) {
                return out; // resume_after stays None: exhausted
            }
            let decided = current.as_ref().is_some_and(|c| c.key().key() == key);
            if !decided && entry.key().ts() <= snapshot {
                if out.entries.len() == limit {
                    out.resume_after = current.map(|c| c.key().key().to_vec());
                    return out;
                }
                if let Some(v) = entry.value() {
                    out.entries.push((KeyBytes::new(key), v.clone()));
                }
                current = Some(entry.clone());
            }
            cursor = entry.next();
        }
        out
    }

    fn chunk_reverse(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        snapshot: Ts,
        limit: usize,
        guard: &Guard,
    ) -> Chunk {
        let mut out = Chunk::default();
        let mut cursor = match upper {
            Bound::Excluded(k) => {
                self.map.upper_bound(Bound::Excluded(&VersionedKey::new(k, Ts::MAX)), guard)
            }
            Bound::Included(k) => {
                self.map.upper_bound(Bound::Included(&VersionedKey::new(k, Ts::ZERO)), guard)
            }
            Bound::Unbounded => self.map.back(guard),
        };
        // Walking backwards, a key's versions come oldest first: the visible one is the last
        // version `<= snapshot` seen before the key changes.
        let mut pending: Option<MapEntry<'_, '_>> = None;
        let mut last_decided: Option<Vec<u8>> = None;
        while let Some(entry) = cursor {
            let key = entry.key().key();
            if !above_lower(key, lower) {
                break;
            }
            if pending.as_ref().is_some_and(|p| p.key().key() != key)
                && !settle(&mut out, pending.take(), &mut last_decided, limit)
            {
                return out;
            }
            let prev = entry.prev();
            if entry.key().ts() <= snapshot {
                pending = Some(entry);
            }
            cursor = prev;
        }
        settle(&mut out, pending, &mut last_decided, limit);
        out
    }
}

/// Emits the visible version of a key whose versions have all been seen (reverse scans).
/// Returns false, with `resume_after` set, when the chunk is full.
fn settle(
    out: &mut Chunk,
    pending: Option<MapEntry<'_, '_>>,
    last_decided: &mut Option<Vec<u8>>,
    limit: usize,
) -> bool {
    let Some(entry) = pending else { return true };
    if let Some(v) = entry.value() {
        if out.entries.len() >= limit {
            out.resume_after = last_decided.take();
            return false;
        }
        out.entries.push((KeyBytes::new(entry.key().key()), v.clone()));
    }
    *last_decided = Some(entry.key().key().to_vec());
    true
}

fn below_upper(key: &[u8], upper: Bound<&[u8]>) -> bool {
    match upper {
        Bound::Included(u) => key <= u,
        Bound::Excluded(u) => key < u,
        Bound::Unbounded => true,
    }
}

fn above_lower(key: &[u8], lower: Bound<&[u8]>) -> bool {
    match lower {
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
        Bound::Unbounded => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &Memtable, k: &[u8], ts: u64, v: &[u8]) -> bool {
        m.insert(k, Ts::new(ts), Some(v.into()))
    }

    fn t(n: u64) -> Ts {
        Ts::new(n)
    }

    #[test]
    fn versions_and_snapshots() {
        let m = Memtable::new();
        assert!(!put(&m, b"a", 1, b"a1"));
        assert!(put(&m, b"a", 3, b"a3"));
        m.insert(b"a", t(5), None);
        assert_eq!(m.get(b"a", t(2)), Lookup::Found(b"a1".to_vec()));
        assert_eq!(m.get(b"a", t(4)), Lookup::Found(b"a3".to_vec()));
        assert_eq!(m.get(b"a", t(9)), Lookup::Deleted);
        assert_eq!(m.get(b"b", t(9)), Lookup::Missing { newest_invisible: None });
        assert_eq!(m.get(b"a", t(0)), Lookup::Missing { newest_invisible: Some(t(5)) });
    }

    #[test]
    fn prefix_keys_sort_before_longer_keys() {
        let m = Memtable::new();
        put(&m, b"a\0", 1, b"x");
        put(&m, b"a", 2, b"y");
        let c = m.chunk(Bound::Unbounded, Bound::Unbounded, t(9), Direction::Forward, 10);
        let keys: Vec<_> = c.entries.iter().map(|(k, _)| k.as_slice().to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"a\0".to_vec()]);
    }

    #[test]
    fn gc_keeps_what_the_watermark_sees() {
        let m = Memtable::new();
        put(&m, b"k", 1, b"1");
        put(&m, b"k", 2, b"2");
        put(&m, b"k", 3, b"3");
        assert!(m.collect_garbage(b"k", t(2)) > 0);
        assert_eq!(m.version_count(), 2);
        assert_eq!(m.get(b"k", t(2)), Lookup::Found(b"2".to_vec()));
        assert_eq!(m.get(b"k", t(9)), Lookup::Found(b"3".to_vec()));
    }

    #[test]
    fn chunks_resume_both_directions() {
        let m = Memtable::new();
        for i in 0..10u8 {
            put(&m, &[i], u64::from(i) + 1, &[i]);
        }
        m.insert(&[4], t(20), None);
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
}
