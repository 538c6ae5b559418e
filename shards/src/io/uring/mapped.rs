//! A WAL segment mapped into memory with `MAP_SHARED`: the `Normal`/`Async` write path.
//!
//! A `memcpy` into a shared file mapping puts the bytes in the kernel's page cache, which
//! outlives the process: that is exactly the `Normal` promise (survive `kill -9`) at ~30 ns per
//! record instead of a ~1.2 µs `pwrite` or a ~60 µs io_uring buffered write (ADR 0002).
//! fdatasync on the file descriptor makes the mapped writes durable.
//!
//! Shard-local. Invariants: the file is fully preallocated *before* it is mapped (so no write
//! into the mapping needs block allocation and none can raise SIGBUS on a full disk), and it is
//! never truncated while mapped.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, ProtFlags};

use crate::io::MapSegment;

/// A writable shared mapping of a whole, preallocated file.
pub struct MappedSegment {
    ptr: NonNull<u8>,
    len: usize,
}

impl MappedSegment {
    /// Maps `len` bytes of `file` (which must be at least `len` bytes long) read-write, shared.
    pub fn map(file: &File, len: usize) -> io::Result<Self> {
        // Safety: a fresh mapping placed by the kernel (null hint), so it aliases no Rust
        // object; the file is at least `len` bytes long and never truncated while mapped.
        let raw = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }?;
        let ptr =
            NonNull::new(raw.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(MappedSegment { ptr, len })
    }

    /// Copies `bytes` into the mapping at `offset`. Returns false (and writes nothing) when the
    /// range does not fit.
    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        let Some(end) = offset.checked_add(bytes.len()) else { return false };
        if end > self.len {
            return false;
        }
        // Safety: [offset, end) lies inside the mapping (checked above); the source is a
        // separate Rust slice, so the ranges cannot overlap; &mut self is exclusive.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        };
        true
    }
}

// Safety: the mapping is process memory owned by this value alone (nothing else holds `ptr`);
// moving the owner to another thread moves that exclusive access with it, and every write
// goes through `&mut self`.
unsafe impl Send for MappedSegment {}

impl MapSegment for MappedSegment {
    fn len(&self) -> usize {
        self.len
    }

    /// The body first, then (after a compiler fence, so the stores stay in program order) the
    /// header that makes it valid. Stores retire in program order for the killed thread's own
    /// memory image, so a later record can never be complete while an earlier one is not.
    fn write_record_at(&mut self, offset: usize, record: &[u8], header_bytes: usize) -> bool {
        let header_bytes = header_bytes.min(record.len());
        let Some(end) = offset.checked_add(record.len()) else { return false };
        if end > self.len {
            return false;
        }
        let (header, body) = record.split_at(header_bytes);
        self.write_at(offset + header_bytes, body);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        self.write_at(offset, header)
    }

    /// Best effort: an old kernel without `MADV_POPULATE_WRITE` (Linux 5.14) only loses the hint.
    fn populate(&mut self, offset: usize, len: usize) {
        // From the page holding `offset`.
        let page = rustix::param::page_size();
        let end = offset.saturating_add(len).min(self.len);
        // Safety (of the advice): it does not change the mapping's contents.
        self.advise(offset / page * page, end, Advice::LinuxPopulateWrite);
    }

    fn release(&mut self, offset: usize, len: usize) {
        // Whole pages only: never the page that holds `offset + len`.
        let page = rustix::param::page_size();
        let end = offset.saturating_add(len).min(self.len) / page * page;
        // Safety (of the advice): MADV_DONTNEED on a shared file mapping unmaps the pages from
        // this process only: their contents stay in the page cache (a dirty page keeps its
        // dirty state and is written back), and a later access faults them in again from
        // there, so no byte of the file changes.
        self.advise(offset.div_ceil(page) * page, end, Advice::LinuxDontNeed);
    }
}

impl MappedSegment {
    /// `madvise` over `[start, end)`, page-aligned `start`, ignoring failure (every advice here
    /// is a hint). Callers pass only advice that leaves the file's bytes as they are.
    fn advise(&mut self, start: usize, end: usize, advice: Advice) {
        let end = end.min(self.len);
        if start >= end {
            return;
        }
        // Safety: [start, end) lies inside the mapping (`end` is clamped to its length) and
        // the advice, by the callers' contract, changes no byte of it.
        let _ = unsafe {
            rustix::mm::madvise(self.ptr.as_ptr().add(start).cast(), end - start, advice)
        };
    }
}

impl Drop for MappedSegment {
    fn drop(&mut self) {
        // Safety: ptr/len describe a mapping this value created and nobody else references
        // (the only access is through &mut self, which the drop ends).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn writes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file =
            File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.set_len(8192).unwrap();
        let mut m = MappedSegment::map(&file, 8192).unwrap();
        m.populate(0, 8192);
        assert!(m.write_record_at(4096, b"HHhello", 2));
        assert!(!m.write_record_at(8190, b"too long", 2));
        let mut buf = [0u8; 7];
        file.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"HHhello");
    }

    /// The mapping's resident KiB, from `/proc/self/smaps`.
    fn resident_kib(m: &MappedSegment) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", m.ptr.as_ptr() as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn released_pages_keep_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file =
            File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let len = 64 * 4096;
        file.set_len(len as u64).unwrap();
        let mut m = MappedSegment::map(&file, len).unwrap();
        m.populate(0, len);
        for page in 0..64 {
            assert!(m.write_record_at(page * 4096 + 100, format!("HHpage{page:02}").as_bytes(), 2));
        }
        let before = resident_kib(&m);
        // Not synced: the pages are dirty in the page cache when they leave the mapping.
        m.release(0, 40 * 4096 + 5);
        let after = resident_kib(&m);
        assert_eq!(before, 64 * 4, "every page was written");
        assert_eq!(after, 24 * 4, "40 whole pages left the process's resident memory");
        // The same bytes, through the file and through the mapping (faulted in again).
        let mut buf = [0u8; 8];
        for page in 0..64 {
            file.read_exact_at(&mut buf, (page * 4096 + 100) as u64).unwrap();
            assert_eq!(buf, *format!("HHpage{page:02}").as_bytes());
        }
        assert!(m.write_record_at(3 * 4096 + 200, b"HHagain", 2));
        let mut again = [0u8; 7];
        file.read_exact_at(&mut again, (3 * 4096 + 200) as u64).unwrap();
        assert_eq!(&again, b"HHagain");
        drop(m);
        let mapped_again = MappedSegment::map(&file, len).unwrap();
        // Safety (test): reading the mapping's first page, inside its length.
        let first = unsafe { std::slice::from_raw_parts(mapped_again.ptr.as_ptr().add(100), 8) };
        assert_eq!(first, b"HHpage00");
    }
}
