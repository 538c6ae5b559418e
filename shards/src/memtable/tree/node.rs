//! The nodes of the memtable's B+tree (`super`): keys compared inline by a 16-byte prefix,
//! the per-node version counter readers validate against, and the two node kinds.
//!
//! Shared: every field a reader and the writer share is an atomic, so a torn read is wrong data
//! (caught by the node's version check), never undefined behaviour. The one `unsafe` here
//! dereferences an entry pointer loaded from a node, which the tree keeps alive until it drops
//! (`super`'s invariants, `docs/SAFETY.md`).

#![allow(unsafe_code)]

use std::cmp::Ordering;
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering as Mo};

/// Key bytes compared inline, in two big-endian words, before an entry's full key is needed.
const PREFIX_BYTES: usize = 16;
/// The stored length of a key longer than the prefix (they compare by full key on a tie).
const LONG: u8 = PREFIX_BYTES as u8 + 1;

/// Entries ordered by a key they own.
pub trait Keyed {
    /// The key the entry is ordered by; it never changes.
    fn key(&self) -> &[u8];
}

/// A key prepared for comparison: its first 16 bytes, zero-padded, as two big-endian words,
/// and its length (saturated at 17). For keys of at most 16 bytes the triple orders exactly as
/// the bytes do; two longer keys with the same prefix compare by full key.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub(super) hi: u64,
    pub(super) lo: u64,
    pub(super) len: u8,
    pub(super) key: &'a [u8],
}

impl<'a> Probe<'a> {
    /// Prepares `key`.
    pub fn new(key: &'a [u8]) -> Self {
        let mut prefix = [0u8; PREFIX_BYTES];
        let n = key.len().min(PREFIX_BYTES);
        prefix[..n].copy_from_slice(&key[..n]);
        let (hi, lo) = prefix.split_at(8);
        Probe {
            hi: u64::from_be_bytes(hi.try_into().unwrap_or([0; 8])),
            lo: u64::from_be_bytes(lo.try_into().unwrap_or([0; 8])),
            len: key.len().min(usize::from(LONG)) as u8,
            key,
        }
    }
}

/// A copy of one slot, for the writer's shuffles.
pub(super) struct SlotCopy<T> {
    pub(super) hi: u64,
    pub(super) lo: u64,
    pub(super) len: u8,
    pub(super) ptr: *mut T,
}

impl<T> Clone for SlotCopy<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SlotCopy<T> {}

/// `N` sorted keys with a pointer to each key's entry.
pub(super) struct Keys<T, const N: usize> {
    /// `(hi, lo)` side by side: a binary search step reads one cache line.
    pub(super) words: [[AtomicU64; 2]; N],
    pub(super) lens: [AtomicU8; N],
    pub(super) ptrs: [AtomicPtr<T>; N],
}

impl<T: Keyed, const N: usize> Keys<T, N> {
    pub(super) fn new() -> Self {
        Keys {
            words: [const { [AtomicU64::new(0), AtomicU64::new(0)] }; N],
            lens: [const { AtomicU8::new(0) }; N],
            ptrs: [const { AtomicPtr::new(std::ptr::null_mut()) }; N],
        }
    }

    /// How slot `i` orders against `probe`; `None` on a torn read (a null entry).
    pub(super) fn cmp_at(&self, i: usize, probe: &Probe<'_>) -> Option<Ordering> {
        let [hi, lo] = &self.words[i];
        let ord = (hi.load(Mo::Relaxed), lo.load(Mo::Relaxed)).cmp(&(probe.hi, probe.lo));
        if ord != Ordering::Equal {
            return Some(ord);
        }
        let len = self.lens[i].load(Mo::Relaxed);
        if len < LONG || probe.len < LONG {
            return Some(len.cmp(&probe.len));
        }
        let ptr = self.ptrs[i].load(Mo::Acquire);
        if ptr.is_null() {
            return None;
        }
        // Safety: a non-null entry pointer in a node points to an entry the tree owns until it
        // drops (module invariants), and `&self` borrows the tree.
        let entry = unsafe { &*ptr };
        Some(entry.key().cmp(probe.key))
    }

    /// Among the first `n` slots: the first whose key is `>= probe` (`strict`: `> probe`).
    /// `None` on a torn read.
    #[inline(always)]
    pub(super) fn search(&self, n: usize, probe: &Probe<'_>, strict: bool) -> Option<usize> {
        let (mut low, mut high) = (0, n.min(N));
        while low < high {
            let mid = (low + high) / 2;
            let ord = self.cmp_at(mid, probe)?;
            if ord == Ordering::Less || (strict && ord == Ordering::Equal) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Some(low)
    }

    pub(super) fn get(&self, i: usize) -> SlotCopy<T> {
        let [hi, lo] = &self.words[i];
        SlotCopy {
            hi: hi.load(Mo::Relaxed),
            lo: lo.load(Mo::Relaxed),
            len: self.lens[i].load(Mo::Relaxed),
            ptr: self.ptrs[i].load(Mo::Acquire),
        }
    }

    pub(super) fn set(&self, i: usize, s: SlotCopy<T>) {
        let [hi, lo] = &self.words[i];
        hi.store(s.hi, Mo::Relaxed);
        lo.store(s.lo, Mo::Relaxed);
        self.lens[i].store(s.len, Mo::Relaxed);
        self.ptrs[i].store(s.ptr, Mo::Release);
    }
}

/// What both node kinds start with.
#[repr(C)]
pub(super) struct Header {
    /// Odd while the writer changes the node.
    pub(super) version: AtomicU64,
    /// Keys in use.
    pub(super) count: AtomicU32,
}

impl Header {
    pub(super) fn new() -> Self {
        Header { version: AtomicU64::new(0), count: AtomicU32::new(0) }
    }

    /// Writer: marks the node changing.
    pub(super) fn lock(&self) {
        let v = self.version.load(Mo::Relaxed);
        debug_assert!(v & 1 == 0, "a node locked twice");
        self.version.store(v + 1, Mo::Relaxed);
        fence(Mo::Release);
    }

    /// Writer: the change is complete.
    pub(super) fn unlock(&self) {
        let v = self.version.load(Mo::Relaxed);
        debug_assert!(v & 1 == 1, "unlocking a node that is not locked");
        self.version.store(v + 1, Mo::Release);
    }

    /// Reader: the version to validate against, once the writer is not in the node.
    pub(super) fn read_begin(&self) -> Option<u64> {
        let v = self.version.load(Mo::Acquire);
        (v & 1 == 0).then_some(v)
    }

    /// Reader: true when nothing changed since `read_begin` returned `v`.
    pub(super) fn read_valid(&self, v: u64) -> bool {
        fence(Mo::Acquire);
        self.version.load(Mo::Relaxed) == v
    }

    pub(super) fn count(&self, cap: usize) -> usize {
        (self.count.load(Mo::Relaxed) as usize).min(cap)
    }
}

/// A leaf: up to `L` keys and their entries, and the next leaf to the right.
#[repr(C)]
pub(super) struct Leaf<T, const L: usize> {
    pub(super) header: Header,
    pub(super) next: AtomicPtr<Leaf<T, L>>,
    pub(super) keys: Keys<T, L>,
}

/// An inner node: up to `I` children and `I - 1` separators; child `i` holds the keys from
/// separator `i - 1` (included) to separator `i` (excluded).
#[repr(C)]
pub(super) struct Inner<T, const I: usize> {
    pub(super) header: Header,
    pub(super) keys: Keys<T, I>,
    pub(super) children: [AtomicPtr<Header>; I],
}

impl<T: Keyed, const L: usize> Leaf<T, L> {
    pub(super) fn boxed() -> Box<Self> {
        Box::new(Leaf {
            header: Header::new(),
            next: AtomicPtr::new(std::ptr::null_mut()),
            keys: Keys::new(),
        })
    }
}

impl<T: Keyed, const I: usize> Inner<T, I> {
    pub(super) fn boxed() -> Box<Self> {
        Box::new(Inner {
            header: Header::new(),
            keys: Keys::new(),
            children: [const { AtomicPtr::new(std::ptr::null_mut()) }; I],
        })
    }
}
