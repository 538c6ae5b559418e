//! The shard cache: decoded tree extents, bounded in bytes, shared by every thread that reads
//! the shard (`docs/ARCHITECTURE.md`, "The shard cache").
//!
//! Keyed by the pointer that reaches an extent (page, length and checksum), so a page written
//! again by a later generation is a different entry: a stale one is never returned, it only
//! ages out. Split into [`PARTS`] parts by key hash, each behind its own mutex, so readers on
//! different threads rarely wait for each other.
//!
//! Policy: segmented LRU, scan-resistant. A new entry enters the *probation* segment; a hit
//! there promotes it to the *protected* segment (at most 80 % of a part's bytes; its least
//! recently used entries fall back to probation). Eviction takes probation's least recently
//! used entry first. So a long scan, which touches each leaf once, cycles through probation and
//! leaves the protected hot set alone.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::page::{ExtentRef, Node};

/// Parts of a cache, each with its own lock.
pub const PARTS: usize = 8;
/// Share of a part's bytes the protected segment may hold, in percent.
const PROTECTED_PERCENT: usize = 80;
/// Bytes an entry costs beyond its decoded contents (map slot, list links, `Arc`).
const ENTRY_OVERHEAD: usize = 96;

/// The cache map's hasher: a multiply-rotate over the extent pointer's words. The keys are
/// page numbers and checksums of the shard's own file, not input an attacker chooses, so the
/// standard library's SipHash (keyed against flooding) bought nothing and cost every lookup.
#[derive(Default)]
struct ExtentHasher(u64);

impl Hasher for ExtentHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A bounded cache of decoded extents (see the module documentation).
pub struct PageCache {
    parts: Vec<Mutex<Part>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("bytes", &self.bytes()).finish()
    }
}

impl PageCache {
    /// A cache of at most about `capacity` bytes (0: caches nothing).
    pub fn new(capacity: usize) -> Arc<PageCache> {
        let per_part = capacity / PARTS;
        Arc::new(PageCache {
            parts: (0..PARTS).map(|_| Mutex::new(Part::new(per_part))).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn part(&self, key: &ExtentRef) -> &Mutex<Part> {
        let h = key.page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(key.crc);
        &self.parts[(h >> 32) as usize % PARTS]
    }

    /// The extent `key`, if cached (counts a hit or a miss).
    pub fn get(&self, key: &ExtentRef) -> Option<Arc<Node>> {
        let found = self.part(key).lock().unwrap_or_else(|p| p.into_inner()).get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The extent `key`, if cached, without counting or promoting it.
    pub fn peek(&self, key: &ExtentRef) -> Option<Arc<Node>> {
        let part = self.part(key).lock().unwrap_or_else(|p| p.into_inner());
        part.map.get(key).and_then(|&i| part.slots[i].node.clone())
    }

    /// Caches `node` as the extent `key`.
    pub fn insert(&self, key: ExtentRef, node: Arc<Node>) {
        let bytes = node_bytes(&node) + ENTRY_OVERHEAD;
        self.part(&key).lock().unwrap_or_else(|p| p.into_inner()).insert(key, node, bytes);
    }

    /// Hits and misses so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Bytes held now (approximately).
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).bytes()).sum()
    }

    /// True when `key` is in the protected segment (tests of the policy).
    #[cfg(test)]
    pub fn is_protected(&self, key: &ExtentRef) -> bool {
        let part = self.part(key).lock().unwrap_or_else(|p| p.into_inner());
        part.map.get(key).is_some_and(|&i| part.slots[i].protected)
    }
}

/// Bytes a decoded node holds, roughly.
fn node_bytes(node: &Node) -> usize {
    match node {
        Node::Leaf(leaf) => leaf.heap_bytes(),
        Node::Branch { branch, .. } => {
            branch.separators.heap_bytes() + branch.children.capacity() * 16
        }
        Node::Overflow(v) => v.len(),
        Node::FreeList(pages) => pages.len() * 16,
    }
}

const NIL: usize = usize::MAX;

struct Slot {
    key: ExtentRef,
    node: Option<Arc<Node>>,
    bytes: usize,
    protected: bool,
    prev: usize,
    next: usize,
}

/// A doubly linked list of slots, most recently used at the head.
#[derive(Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
    bytes: usize,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL, bytes: 0 };
}

/// One part: a map into a slab of slots linked into two lists.
struct Part {
    capacity: usize,
    map: HashMap<ExtentRef, usize, BuildHasherDefault<ExtentHasher>>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    probation: List,
    protected: List,
}

impl Part {
    fn new(capacity: usize) -> Part {
        Part {
            capacity,
            map: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            probation: List::EMPTY,
            protected: List::EMPTY,
        }
    }

    fn bytes(&self) -> usize {
        self.probation.bytes + self.protected.bytes
    }

    fn list(&mut self, protected: bool) -> &mut List {
        if protected {
            &mut self.protected
        } else {
            &mut self.probation
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next, protected, bytes) = {
            let s = &self.slots[i];
            (s.prev, s.next, s.protected, s.bytes)
        };
        if prev != NIL {
            self.slots[prev].next = next;
        }
        if next != NIL {
            self.slots[next].prev = prev;
        }
        let list = self.list(protected);
        if list.head == i {
            list.head = next;
        }
        if list.tail == i {
            list.tail = prev;
        }
        list.bytes -= bytes;
    }

    fn push_front(&mut self, i: usize, protected: bool) {
        let bytes = self.slots[i].bytes;
        let list = *self.list(protected);
        {
            let s = &mut self.slots[i];
            s.protected = protected;
            s.prev = NIL;
            s.next = list.head;
        }
        if list.head != NIL {
            self.slots[list.head].prev = i;
        }
        let list = self.list(protected);
        list.head = i;
        if list.tail == NIL {
            list.tail = i;
        }
        list.bytes += bytes;
    }

    fn get(&mut self, key: &ExtentRef) -> Option<Arc<Node>> {
        let i = *self.map.get(key)?;
        self.unlink(i);
        // A hit in probation promotes; a hit in protected refreshes.
        self.push_front(i, true);
        let limit = self.capacity * PROTECTED_PERCENT / 100;
        while self.protected.bytes > limit && self.protected.tail != i {
            let t = self.protected.tail;
            self.unlink(t);
            self.push_front(t, false);
        }
        self.slots[i].node.clone()
    }

    fn insert(&mut self, key: ExtentRef, node: Arc<Node>, bytes: usize) {
        if bytes > self.capacity {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            self.slots[i].node = Some(node);
            return;
        }
        while self.bytes() + bytes > self.capacity {
            let victim =
                if self.probation.tail != NIL { self.probation.tail } else { self.protected.tail };
            if victim == NIL {
                break;
            }
            self.unlink(victim);
            let key = self.slots[victim].key;
            self.slots[victim].node = None;
            self.map.remove(&key);
            self.free.push(victim);
        }
        let slot = Slot { key, node: Some(node), bytes, protected: false, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.map.insert(key, i);
        self.push_front(i, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::page::{Leaf, PackedLeaf, Value};

    fn leaf(bytes: usize) -> Arc<Node> {
        let leaf = Leaf { entries: vec![(vec![1], Value::Inline(vec![0; bytes]))] };
        Arc::new(Node::Leaf(PackedLeaf::pack(&leaf)))
    }

    fn at(page: u64) -> ExtentRef {
        ExtentRef { page, pages: 1, crc: page as u32 ^ 0x5a5a }
    }

    #[test]
    fn stays_within_its_bytes_and_counts() {
        let cache = PageCache::new(PARTS * 10_000);
        for p in 0..1000 {
            cache.insert(at(p), leaf(900));
        }
        assert!(cache.bytes() <= PARTS * 10_000);
        assert!(cache.get(&at(999)).is_some());
        assert!(cache.get(&at(0)).is_none());
        assert_eq!(cache.counts(), (1, 1));
        // Another checksum at the same page is another extent.
        assert!(cache.get(&ExtentRef { crc: 1, ..at(999) }).is_none());
    }

    #[test]
    fn a_long_scan_does_not_evict_the_hot_set() {
        let cache = PageCache::new(PARTS * 20_000);
        let hot: Vec<ExtentRef> = (0..40).map(at).collect();
        for &h in &hot {
            cache.insert(h, leaf(1000));
            assert!(cache.get(&h).is_some(), "just inserted");
            assert!(cache.get(&h).is_some());
        }
        // A scan: 5 000 pages touched once each, far more than the cache holds.
        for p in 10_000..15_000 {
            if cache.get(&at(p)).is_none() {
                cache.insert(at(p), leaf(1000));
            }
        }
        let kept = hot.iter().filter(|h| cache.get(h).is_some()).count();
        assert_eq!(kept, hot.len(), "the scan evicted the hot set");
        // A plain LRU would have kept none of it: the scan alone is 25× the cache.
        assert!(cache.bytes() <= PARTS * 20_000);
        assert!(hot.iter().all(|h| cache.is_protected(h)));
    }
}
