//! Sector-aligned heap buffers for `O_DIRECT` I/O.
//!
//! Shard-local. While an operation that points into a buffer is in flight, the buffer must not
//! be freed: a buffer submitted to the ring is wrapped in an [`super::IoBuf`] and owned by the
//! storage until the operation's completion is reaped (`docs/SAFETY.md`).

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment and size granule of every direct I/O: 4096, so code tested on this VM's 512-byte
/// sectors also runs on 4Kn drives.
pub const SECTOR_BYTES: usize = 4096;

/// Rounds `n` up to a whole number of sectors.
pub const fn round_up(n: usize) -> usize {
    n.div_ceil(SECTOR_BYTES) * SECTOR_BYTES
}

/// A zero-initialised, 4096-aligned buffer whose length is a multiple of 4096.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// Safety: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
#[allow(unsafe_code)]
unsafe impl Send for AlignedBuf {}

// Safety: shared references only read (`as_slice`); writing needs `&mut self`, or the exclusive
// lease of `leased_mut_slice`.
#[allow(unsafe_code)]
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of no bytes that owns no allocation (what a leaked buffer leaves behind).
    pub const fn empty() -> Self {
        AlignedBuf { ptr: NonNull::dangling(), len: 0 }
    }

    /// Allocates `len` bytes rounded up to whole sectors, zeroed. Returns `None` when the
    /// allocator refuses (the caller turns that into an error).
    #[allow(unsafe_code)]
    pub fn zeroed(len: usize) -> Option<Self> {
        let len = round_up(len.max(1));
        let layout = Layout::from_size_align(len, SECTOR_BYTES).ok()?;
        // Safety: the layout has a non-zero size (len >= SECTOR_BYTES).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(raw).map(|ptr| AlignedBuf { ptr, len })
    }

    /// Length in bytes (a multiple of [`SECTOR_BYTES`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Raw pointer for an SQE.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    #[allow(unsafe_code)]
    pub fn as_slice(&self) -> &[u8] {
        // Safety: ptr is valid for len initialised bytes for the life of self (or dangling and
        // aligned with len 0, which a slice allows).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    #[allow(unsafe_code)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // Safety: ptr is valid for len initialised bytes (or dangling with len 0) and &mut self
        // is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AlignedBuf {
    /// The bytes, writable through a shared reference: for a registered buffer lent out by
    /// `RegisteredPool::lease`, whose lease is the one handle that may touch these bytes.
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub(crate) fn leased_mut_slice(&self) -> &mut [u8] {
        // Safety: the pool hands out at most one lease per buffer (an atomic flag), the lease
        // holds the pool (so the memory lives), and only the lease calls this, through its own
        // `&mut self`: no other reference to these bytes exists while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.len == 0 {
            return; // `empty()`: nothing was allocated
        }
        if let Ok(layout) = Layout::from_size_align(self.len, SECTOR_BYTES) {
            // Safety: allocated in `zeroed` with exactly this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::zeroed(5000).unwrap();
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % SECTOR_BYTES, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[8191] = 1;
        assert_eq!(b.as_slice()[8191], 1);
    }

    #[test]
    fn empty_owns_nothing() {
        let e = AlignedBuf::empty();
        assert!(e.len() == 0 && e.as_slice().is_empty());
    }

    #[test]
    fn round_up_is_sector_granular() {
        assert_eq!(round_up(0), 0);
        assert_eq!(round_up(1), 4096);
        assert_eq!(round_up(4096), 4096);
        assert_eq!(round_up(4097), 8192);
    }
}
