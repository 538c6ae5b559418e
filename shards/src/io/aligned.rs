//! Sector-aligned heap buffers for `O_DIRECT` I/O.
//!
//! Shard-local: a buffer is owned by one shard's WAL writer. While an SQE that points into a
//! buffer is in flight, the buffer must not move or be freed; the WAL writer guarantees it by
//! owning the buffer for the life of the ring and never reallocating one that is in flight.

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

impl AlignedBuf {
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

    /// Always false: buffers hold at least one sector.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Raw pointer for an SQE.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    #[allow(unsafe_code)]
    pub fn as_slice(&self) -> &[u8] {
        // Safety: ptr is valid for len initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    #[allow(unsafe_code)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // Safety: ptr is valid for len initialised bytes and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
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
    fn round_up_is_sector_granular() {
        assert_eq!(round_up(0), 0);
        assert_eq!(round_up(1), 4096);
        assert_eq!(round_up(4096), 4096);
        assert_eq!(round_up(4097), 8192);
    }
}
