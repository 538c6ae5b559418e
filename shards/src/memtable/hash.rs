//! The memtable's point-read index: an open-addressing hash table from key to entry, written by
//! the memtable's one writer, read by any thread without locks.
//!
//! Why beside the tree: a point read or an overwrite of a key already present costs one probe
//! here (usually one cache miss) instead of a descent through the B+tree (several). Measured in
//! ADR 0003: without it, point reads were ~30 % slower end to end.
//!
//! Why so simple: keys are never removed from a memtable, so the table needs no tombstones and
//! no deletion; one writer means no compare-and-swap. A slot is empty until the writer stores
//! the entry's hash and then (`Release`) its pointer; a slot once filled never changes. When the
//! table is half full the writer builds one twice the size, publishes it (`Release`) and hands
//! the old one to `crossbeam-epoch`, which frees it once every reader pinned at the time has
//! moved on.
//!
//! Invariants (`docs/SAFETY.md`): the entries pointed to are owned by the memtable's tree and
//! outlive this table (the memtable drops the table first); a reader loads the table and the
//! slots with `Acquire` while pinned; only the one writer inserts and grows.
//!
//! Shared: one writer, any number of readers.

#![allow(unsafe_code)]

use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use super::tree::Keyed;

/// Slots of a new table.
const INITIAL_SLOTS: usize = 1024;

struct Slot<T> {
    hash: AtomicU64,
    entry: AtomicPtr<T>,
}

struct Table<T> {
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    slots: Box<[Slot<T>]>,
}

impl<T> Table<T> {
    fn with_slots(n: usize) -> Self {
        let slots = (0..n)
            .map(|_| Slot { hash: AtomicU64::new(0), entry: AtomicPtr::new(std::ptr::null_mut()) })
            .collect();
        Table { mask: n - 1, slots }
    }

    /// Writer: stores `entry` in the first empty slot from `hash`'s position (there is one: the
    /// table is never more than half full).
    fn put(&self, hash: u64, entry: *mut T) {
        let mut i = hash as usize & self.mask;
        while !self.slots[i].entry.load(Ordering::Relaxed).is_null() {
            i = (i + 1) & self.mask;
        }
        self.fill(i, hash, entry);
    }

    /// Writer: fills the empty slot `i`.
    fn fill(&self, i: usize, hash: u64, entry: *mut T) {
        let slot = &self.slots[i];
        slot.hash.store(hash, Ordering::Relaxed);
        // Release: a reader that sees the pointer sees the hash and the entry built.
        slot.entry.store(entry, Ordering::Release);
    }
}

/// Where a key missing from the index would go.
#[derive(Debug)]
pub struct Vacant {
    hash: u64,
    index: usize,
    /// The size of the table the slot belongs to.
    slots: usize,
}

/// Key → entry, for entries owned elsewhere (see the module documentation).
pub struct HashIndex<T: 'static> {
    table: Atomic<Table<T>>,
    /// Readers on other threads get `&T`: the index is `Send`/`Sync` only when `T: Sync`.
    _shares: PhantomData<&'static T>,
    /// Entries stored (the writer's count).
    len: AtomicUsize,
    hasher: foldhash::fast::RandomState,
}

impl<T: Keyed + 'static> HashIndex<T> {
    /// An empty index, with a hash seed of its own.
    pub fn new() -> Self {
        HashIndex {
            table: Atomic::new(Table::with_slots(INITIAL_SLOTS)),
            _shares: PhantomData,
            len: AtomicUsize::new(0),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The hash `lookup_hashed` wants for `key`.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Writer: starts loading the slot where the probe for `hash` begins, so a lookup a little
    /// later finds it in cache (a new key's slot is a random one: a miss to memory otherwise).
    ///
    /// # Safety
    /// Only the writer calls this (it reads the current table without pinning: only the writer
    /// replaces tables).
    pub unsafe fn prefetch(&self, hash: u64) {
        // Safety: the caller is the writer, so the current table is not retired meanwhile.
        let table = unsafe { self.table.load(Ordering::Relaxed, epoch::unprotected()).deref() };
        let slot = &table.slots[hash as usize & table.mask];
        #[cfg(target_arch = "x86_64")]
        // Safety: a prefetch is a hint: it reads nothing into the program and cannot fault;
        // SSE is part of every x86-64 target.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// Reader: the entry of `key` (the owner of the entries outlives the index).
    pub fn get<'a>(&'a self, key: &[u8], guard: &Guard) -> Option<&'a T> {
        self.lookup(key, guard).ok()
    }

    /// The entry of `key`, or the empty slot where the probe for it ended (for the writer,
    /// who can fill it without probing again: no one else inserts).
    pub fn lookup<'a>(&'a self, key: &[u8], guard: &Guard) -> Result<&'a T, Vacant> {
        self.lookup_hashed(key, self.hash(key), guard)
    }

    /// `lookup` with `hash = self.hash(key)` already computed.
    pub fn lookup_hashed<'e>(&self, key: &[u8], hash: u64, guard: &Guard) -> Result<&'e T, Vacant> {
        let table = self.table.load(Ordering::Acquire, guard);
        // Safety: pinned; a table is freed only after it was replaced and every thread pinned
        // then has unpinned. It is never null (`new` and `grow` store a table).
        let table = unsafe { table.deref() };
        let mut i = hash as usize & table.mask;
        loop {
            let slot = &table.slots[i];
            let entry = slot.entry.load(Ordering::Acquire);
            if entry.is_null() {
                return Err(Vacant { hash, index: i, slots: table.slots.len() });
            }
            if slot.hash.load(Ordering::Relaxed) == hash {
                // Safety: a stored pointer points to an entry the owner keeps alive for as long
                // as this index exists (module invariants), and `'a` borrows the index.
                let entry = unsafe { &*entry };
                if entry.key() == key {
                    return Ok(entry);
                }
            }
            i = (i + 1) & table.mask;
        }
    }

    /// Writer: adds `entry`, whose key `lookup` did not find and reported `vacant` for.
    ///
    /// # Safety
    /// No other thread inserts at the same time, nothing was inserted since that `lookup`, and
    /// `entry` outlives the index.
    pub unsafe fn insert(&self, vacant: Vacant, entry: &T) {
        debug_assert_eq!(vacant.hash, self.hash(entry.key()), "the vacancy of another key");
        // Safety: only this writer replaces or frees tables, and it is not doing so now.
        let guard = unsafe { epoch::unprotected() };
        // Safety: the writer's current table is live.
        let table = unsafe { self.table.load(Ordering::Relaxed, guard).deref() };
        let len = self.len.load(Ordering::Relaxed);
        let entry = std::ptr::from_ref(entry).cast_mut();
        if (len + 1) * 2 > table.slots.len() {
            self.grow(table);
            // Safety: as above, just stored.
            unsafe { self.table.load(Ordering::Relaxed, guard).deref() }.put(vacant.hash, entry);
        } else {
            debug_assert_eq!(vacant.slots, table.slots.len(), "the table changed");
            table.fill(vacant.index, vacant.hash, entry);
        }
        self.len.store(len + 1, Ordering::Relaxed);
    }

    /// Writer: moves every entry into a table twice the size, publishes it and retires `old`.
    fn grow(&self, old: &Table<T>) {
        let bigger = Table::with_slots(old.slots.len() * 2);
        for slot in old.slots.iter() {
            let entry = slot.entry.load(Ordering::Relaxed);
            if !entry.is_null() {
                bigger.put(slot.hash.load(Ordering::Relaxed), entry);
            }
        }
        let guard = &epoch::pin();
        let old = self.table.swap(Owned::new(bigger), Ordering::AcqRel, guard);
        // Safety: replaced, so no reader that starts now finds it; readers that hold it are
        // pinned and `defer_destroy` waits for them; only the writer retires tables, once each.
        unsafe { guard.defer_destroy(old) };
        // A table is large and retired rarely: hand it to the global queue now, or it waits in
        // this thread's local bag until 64 more retirements fill it (hundreds of MiB across a
        // few writer threads and a few memtables).
        guard.flush();
    }
}

impl<T: 'static> Drop for HashIndex<T> {
    fn drop(&mut self) {
        // Safety: `&mut self`: no reader holds the current table; earlier tables were handed to
        // the epoch collector and are not reachable from here.
        unsafe {
            let guard = epoch::unprotected();
            let table = self.table.load(Ordering::Relaxed, guard);
            if !table.is_null() {
                drop(table.into_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(Vec<u8>);
    impl Keyed for E {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    #[test]
    fn finds_every_key_across_growth_and_misses_the_rest() {
        let entries: Vec<E> = (0..10_000u32).map(|i| E(i.to_be_bytes().to_vec())).collect();
        let index = HashIndex::new();
        let guard = &epoch::pin();
        for e in &entries {
            let vacant = index.lookup(&e.0, guard).err().unwrap();
            // Safety: one writer; `entries` outlives `index` (declared first, dropped last).
            unsafe { index.insert(vacant, e) };
        }
        for e in &entries {
            assert!(std::ptr::eq(index.get(&e.0, guard).unwrap(), e));
        }
        assert!(index.get(&20_000u32.to_be_bytes(), guard).is_none());
        assert!(index.get(b"", guard).is_none());
    }

    #[test]
    fn readers_racing_the_writer_find_what_was_inserted_before_they_looked() {
        use std::sync::Arc;
        const N: usize = 50_000;
        let entries: Arc<Vec<E>> =
            Arc::new((0..N as u64).map(|i| E(i.to_le_bytes().to_vec())).collect());
        let shared = Arc::new(HashIndex::new());
        let done = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (entries, shared, done) = (entries.clone(), shared.clone(), done.clone());
            std::thread::spawn(move || {
                let mut x = 1u64;
                while done.load(Ordering::Acquire) < N {
                    let known = done.load(Ordering::Acquire);
                    if known == 0 {
                        continue;
                    }
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let e = &entries[(x >> 33) as usize % known];
                    let guard = &epoch::pin();
                    assert!(shared.get(&e.0, guard).is_some(), "inserted key not found");
                }
            })
        };
        for (i, e) in entries.iter().enumerate() {
            let vacant = shared.lookup(&e.0, &epoch::pin()).err().unwrap();
            // Safety: this thread is the only writer; the entries outlive the index (the reader
            // holds them until it ends, and the index is dropped after the join).
            unsafe { shared.insert(vacant, e) };
            done.store(i + 1, Ordering::Release);
        }
        reader.join().unwrap();
    }
}
