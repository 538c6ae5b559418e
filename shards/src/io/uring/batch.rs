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
    static RING: RefCell<Option<Option<BatchRing>>> = const { RefCell::new(None) };
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
    // `try_with`: from another thread-local's destructor, plain reads.
    let batched = RING.try_with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else { return false };
        let ring = cell.get_or_insert_with(|| {
            IoUring::new(BATCH_READS as u32).ok().map(|ring| BatchRing { ring, generation: 0 })
        });
        for window in reads.chunks(BATCH_READS) {
            // Buffers first: running out of memory is not a reason to give up the ring.
            let bufs: Option<Vec<AlignedBuf>> =
                window.iter().map(|r| AlignedBuf::zeroed(r.len)).collect();
            match (ring.as_mut(), bufs) {
                (Some(r), Some(bufs)) => match ring_window(r, window, bufs) {
                    Ok(results) => out.extend(results),
                    Err(e) => {
                        log::warn!(
                            "a read batch's io_uring failed ({e}); this thread reads with pread"
                        );
                        *ring = None;
                        out.extend(window.iter().map(FileRead::alone));
                    }
                },
                _ => out.extend(window.iter().map(FileRead::alone)),
            }
        }
        true
    });
    if batched != Ok(true) {
        out.clear();
        out.extend(reads.iter().map(FileRead::alone));
    }
    out
}

fn aligned(len: usize) -> io::Result<AlignedBuf> {
    AlignedBuf::zeroed(len).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// A thread's ring and the number of the window last submitted through it, carried in the high
/// half of every entry's `user_data`: a completion of any other window (one a failure left
/// behind) is recognised and never taken for one of this window's.
struct BatchRing {
    ring: IoUring,
    generation: u32,
}

/// A window's buffers while the kernel may write into them: dropped before every read was
/// reaped (an error, or a panic unwinding), they are leaked, never freed.
struct InFlight {
    bufs: Vec<AlignedBuf>,
    reaped: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.reaped {
            std::mem::forget(std::mem::take(&mut self.bufs));
        }
    }
}

/// One window of reads through `ring`, into `bufs` (one per read). `Err` when the ring itself
/// failed or answered something unexpected (the buffers are then leaked and the caller drops
/// the ring); a read the kernel failed is read again alone, so it answers what a lone read
/// would.
fn ring_window(
    ring: &mut BatchRing,
    window: &[FileRead<'_>],
    bufs: Vec<AlignedBuf>,
) -> io::Result<Vec<io::Result<Vec<u8>>>> {
    ring.generation = ring.generation.wrapping_add(1);
    let tag = u64::from(ring.generation) << 32;
    let mut flight = InFlight { bufs, reaped: false };
    let mut results: Vec<Option<io::Result<Vec<u8>>>> = (0..window.len()).map(|_| None).collect();
    for (i, (read, buf)) in window.iter().zip(&mut flight.bufs).enumerate() {
        let span = read.len.next_multiple_of(SECTOR_BYTES) as u32;
        let fd = types::Fd(read.file.as_raw_fd());
        let sqe = opcode::Read::new(fd, buf.as_mut_slice().as_mut_ptr(), span)
            .offset(read.offset)
            .build()
            .user_data(tag | i as u64);
        // Safety: the entry points into `flight.bufs[i]`, a heap buffer that neither moves nor
        // is freed until its completion is reaped below: `flight` leaks every buffer if it is
        // dropped before that. The file outlives the call (and the kernel holds its own
        // reference while reading).
        if unsafe { ring.ring.submission().push(&sqe) }.is_err() {
            // Cannot happen: the queue holds BATCH_READS entries and was empty.
            return Err(io::Error::other("io_uring submission queue full"));
        }
    }
    let mut pending = window.len();
    while pending > 0 {
        match ring.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for cqe in ring.ring.completion() {
            let data = cqe.user_data();
            let i = (data & u64::from(u32::MAX)) as usize;
            if data & !u64::from(u32::MAX) != tag || i >= window.len() || results[i].is_some() {
                return Err(io::Error::other("an io_uring completion this batch did not submit"));
            }
            pending -= 1;
            results[i] = Some(answer(&window[i], cqe.result(), &flight.bufs[i]));
        }
    }
    flight.reaped = true;
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("no completion"))))
        .collect())
}

/// What a read answers, given its completion's result and its buffer: the bytes when it read
/// them all; when it failed (EINTR, EAGAIN, a real error) or came back short (the end of the
/// file), whatever the read answers done again alone, which is what a lone read answers.
fn answer(read: &FileRead<'_>, res: i32, buf: &AlignedBuf) -> io::Result<Vec<u8>> {
    match usize::try_from(res) {
        Ok(n) if n >= read.len => Ok(buf.as_slice()[..read.len].to_vec()),
        _ => read.alone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn a_failed_or_short_completion_answers_what_a_lone_read_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let file = File::open(&path).unwrap();
        let buf = aligned(4096).unwrap(); // zeros: never what the file holds
        let read = FileRead { file: &file, direct: false, offset: 4096, len: 4096 };
        for res in [-libc::EINTR, -libc::EAGAIN, -libc::EIO, 0, 100] {
            assert_eq!(answer(&read, res, &buf).unwrap(), vec![7u8; 4096], "result {res}");
        }
        assert_eq!(answer(&read, 4096, &buf).unwrap(), vec![0u8; 4096]);
        let past = FileRead { offset: 8192, ..read };
        assert_eq!(
            answer(&past, -libc::EINTR, &buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

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
