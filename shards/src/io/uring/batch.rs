//! Several reads of one file in flight together, from any thread: a small io_uring ring per
//! calling thread (created on first use, dropped with the thread), so a `multi_get` or a
//! scan's read-ahead fills the device queue instead of waiting for one read at a time
//! (`docs/adr/0004-read-path.md`).
//!
//! Ownership: a batch's buffers belong to this function's frame from submission until every
//! completion of the batch is reaped. If the ring fails while reads are in flight, those
//! buffers are leaked (never freed under the kernel), the thread's ring is dropped, and the
//! batch's remaining reads, like every later one on that thread, are plain `pread`s.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use io_uring::{opcode, types, IoUring};

use crate::io::aligned::{AlignedBuf, SECTOR_BYTES};

/// Reads in flight at once from one thread (and the ring's submission queue size).
pub const BATCH_READS: usize = 64;

thread_local! {
    /// This thread's ring: `None` before first use; `Some(None)` once it could not be made or
    /// failed (reads are then `pread`s).
    static RING: RefCell<Option<Option<IoUring>>> = const { RefCell::new(None) };
}

/// Reads `len` bytes at `offset` for each request, into a sector-aligned buffer when `direct`.
pub fn read_one(file: &File, direct: bool, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    if !direct {
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset)?;
        return Ok(out);
    }
    let mut buf = aligned(len)?;
    let span = &mut buf.as_mut_slice()[..len.next_multiple_of(SECTOR_BYTES)];
    file.read_exact_at(span, offset)?;
    Ok(span[..len].to_vec())
}

/// One read of a batch: the file, whether it was opened `O_DIRECT`, offset and length.
#[derive(Clone, Copy, Debug)]
pub struct FileRead<'f> {
    /// The file.
    pub file: &'f File,
    /// Opened with `O_DIRECT` (the buffer is sector-aligned either way).
    pub direct: bool,
    /// Byte offset.
    pub offset: u64,
    /// Bytes.
    pub len: usize,
}

impl FileRead<'_> {
    fn alone(&self) -> io::Result<Vec<u8>> {
        read_one(self.file, self.direct, self.offset, self.len)
    }
}

/// Every request `(offset, len)` of one file read, in order, with up to [`BATCH_READS`] in
/// flight at once.
pub fn read_many(file: &File, direct: bool, reqs: &[(u64, usize)]) -> Vec<io::Result<Vec<u8>>> {
    let reads: Vec<FileRead<'_>> =
        reqs.iter().map(|&(offset, len)| FileRead { file, direct, offset, len }).collect();
    read_files(&reads)
}

/// Every read, of any files, in order, with up to [`BATCH_READS`] in flight at once.
pub fn read_files(reads: &[FileRead<'_>]) -> Vec<io::Result<Vec<u8>>> {
    if reads.len() <= 1 {
        return reads.iter().map(FileRead::alone).collect();
    }
    let mut out = Vec::with_capacity(reads.len());
    RING.with(|cell| {
        let mut cell = cell.borrow_mut();
        let ring = cell.get_or_insert_with(|| IoUring::new(BATCH_READS as u32).ok());
        for window in reads.chunks(BATCH_READS) {
            match ring.as_mut().map(|r| ring_window(r, window)) {
                Some(Ok(results)) => out.extend(results),
                Some(Err(e)) => {
                    log::warn!(
                        "a read batch's io_uring failed ({e}); this thread reads with pread"
                    );
                    *ring = None;
                    out.extend(window.iter().map(FileRead::alone));
                }
                None => out.extend(window.iter().map(FileRead::alone)),
            }
        }
    });
    out
}

fn aligned(len: usize) -> io::Result<AlignedBuf> {
    AlignedBuf::zeroed(len).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// One window of reads through `ring`. `Err` only when the ring itself failed with reads in
/// flight (their buffers are then leaked); a failed read is an `Err` in its own place.
fn ring_window(
    ring: &mut IoUring,
    window: &[FileRead<'_>],
) -> io::Result<Vec<io::Result<Vec<u8>>>> {
    let mut bufs = Vec::with_capacity(window.len());
    for read in window {
        bufs.push(aligned(read.len)?);
    }
    let mut results: Vec<Option<io::Result<Vec<u8>>>> = (0..window.len()).map(|_| None).collect();
    for (i, (read, buf)) in window.iter().zip(&mut bufs).enumerate() {
        let span = read.len.next_multiple_of(SECTOR_BYTES) as u32;
        let fd = types::Fd(read.file.as_raw_fd());
        let sqe = opcode::Read::new(fd, buf.as_mut_slice().as_mut_ptr(), span)
            .offset(read.offset)
            .build()
            .user_data(i as u64);
        // Safety: the entry points into `bufs[i]`, a heap buffer this frame owns and neither
        // moves nor frees until its completion is reaped below (or leaks on failure); the
        // file outlives the call (the kernel also holds its own reference while reading).
        if unsafe { ring.submission().push(&sqe) }.is_err() {
            // Cannot happen: the queue holds BATCH_READS entries and was empty. Nothing of
            // this window was submitted yet, so the buffers are ours.
            return Err(io::Error::other("io_uring submission queue full"));
        }
    }
    let mut pending = window.len();
    while pending > 0 {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Reads may still be in flight into these buffers: leak them.
                std::mem::forget(bufs);
                return Err(e);
            }
        }
        for cqe in ring.completion() {
            let Some(i) = usize::try_from(cqe.user_data()).ok().filter(|&i| i < window.len())
            else {
                continue;
            };
            if results[i].is_some() {
                continue;
            }
            pending -= 1;
            let read = &window[i];
            let res = cqe.result();
            results[i] = Some(if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else if (res as usize) < read.len {
                // Short (the end of the file, or an interrupted read): read it again
                // synchronously, which answers the same as a lone read would.
                read.alone()
            } else {
                Ok(bufs[i].as_slice()[..read.len].to_vec())
            });
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("no completion"))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn a_batch_reads_what_single_reads_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..64 * 4096).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        drop(f);
        let buffered = File::open(&path).unwrap();
        let direct =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).ok();
        // Out of order, repeated, longer than one page, one past the end of the file, and
        // more than one window.
        let mut reqs = vec![(8192u64, 4096usize), (0, 8192), (8192, 4096), (63 * 4096, 8192)];
        for i in 0..100u64 {
            reqs.push(((i * 37 % 64) * 4096, 4096));
        }
        let files = std::iter::once((&buffered, false)).chain(direct.as_ref().map(|f| (f, true)));
        for (file, direct) in files {
            let got = read_many(file, direct, &reqs);
            assert_eq!(got.len(), reqs.len());
            for (&(o, l), r) in reqs.iter().zip(&got) {
                let end = o as usize + l;
                if end > data.len() {
                    assert_eq!(r.as_ref().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
                } else {
                    assert_eq!(r.as_ref().unwrap(), &data[o as usize..end], "direct {direct}");
                }
            }
        }
    }
}
