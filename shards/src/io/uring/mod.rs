//! The real storage: the shard's io_uring ring for group writes and fdatasyncs, a shared
//! mapping for the `Normal`/`Async` copy, plain system calls for the rest, the real clock.
//!
//! Shard-local: created on the shard thread, which the ring requires (`SINGLE_ISSUER`), and
//! dropped there. Field order is drop order: the ring first, so every operation in flight has
//! completed (or been leaked) and the registration is gone before the registered buffers are
//! freed.

pub mod batch;
mod mapped;
mod ring;

pub use mapped::MappedSegment;
pub use ring::RingSetup;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::Ring;

use super::aligned::{AlignedBuf, SECTOR_BYTES};
use super::{sys, FileHandle, IoBuf, IoDone, OpenHow, ReadAt, RegisteredPool, Storage};
use crate::error::{Error, Result};
use crate::ingress::Inbox;

/// A file opened by [`UringStorage`].
#[derive(Debug)]
/// A reader of one file for any thread: `pread` into an aligned buffer (`O_DIRECT` needs one).
struct SharedReader {
    file: File,
    direct: bool,
}

impl ReadAt for SharedReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        batch::read_one(&self.file, self.direct, offset, len)
    }

    fn read_many(&self, reqs: &[(u64, usize)]) -> Vec<io::Result<Vec<u8>>> {
        batch::read_many(&self.file, self.direct, reqs)
    }

    fn file(&self) -> Option<(&File, bool)> {
        Some((&self.file, self.direct))
    }
}

pub struct RealFile {
    file: File,
    path: PathBuf,
}

impl FileHandle for Rc<RealFile> {
    fn path(&self) -> &Path {
        &self.path
    }
}

/// Buffers registered with the ring: how many and how large.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// Number of buffers (0: none).
    pub buffers: usize,
    /// Bytes of each.
    pub buffer_bytes: usize,
}

/// The real storage of one shard.
pub struct UringStorage {
    ring: Ring,
    /// The registered buffers (dropped after the ring; leases keep the memory alive anyway).
    pool: Option<Arc<RegisteredPool>>,
    rng: u64,
}

impl UringStorage {
    /// Creates the ring on the calling thread and registers `registration`'s buffers.
    pub fn new(registration: Registration) -> Result<Self> {
        let mut ring = Ring::new()?;
        let mut pool = None;
        if registration.buffers > 0 {
            let p = RegisteredPool::new(registration.buffers, registration.buffer_bytes)
                .ok_or_else(|| Error::EnvUnsupported {
                    what: "cannot allocate the WAL's registered buffers".into(),
                })?;
            ring.register_buffers(&p.buffers().iter().collect::<Vec<_>>())?;
            pool = Some(p);
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(UringStorage { ring, pool, rng: seed | 1 })
    }
}

impl Storage for UringStorage {
    type File = Rc<RealFile>;
    type Map = MappedSegment;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn ring_setup(&self) -> Option<RingSetup> {
        Some(self.ring.setup)
    }

    fn random_u64(&mut self) -> u64 {
        // xorshift64*: enough for jitter; nothing secret depends on it.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..], offset + got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn open(&mut self, path: &Path, how: OpenHow) -> io::Result<Self::File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match how {
            OpenHow::CreateNew => {
                options.create_new(true);
            }
            OpenHow::Buffered => {}
            OpenHow::Direct => {
                let direct = options.clone().custom_flags(libc::O_DIRECT).open(path);
                match direct {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    other => {
                        let file = other?;
                        return Ok(Rc::new(RealFile { file, path: path.to_path_buf() }));
                    }
                }
            }
            OpenHow::Durable { direct } => {
                let direct_flag = if direct { libc::O_DIRECT } else { 0 };
                options.custom_flags(libc::O_DSYNC | direct_flag);
            }
        }
        let file = options.open(path)?;
        Ok(Rc::new(RealFile { file, path: path.to_path_buf() }))
    }

    fn allocate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()> {
        match sys::fallocate(&file.file, bytes) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => file.file.set_len(bytes),
            other => other,
        }
    }

    fn write_at(&mut self, file: &Self::File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        file.file.write_all_at(bytes, offset)
    }

    fn truncate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()> {
        file.file.set_len(bytes)
    }

    fn sync_file(&mut self, file: &Self::File) -> io::Result<()> {
        sys::fdatasync(&file.file)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            from,
            rustix::fs::CWD,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(io::Error::from)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        sys::fsync_dir(dir)
    }

    fn free_bytes(&mut self, dir: &Path) -> io::Result<u64> {
        sys::free_bytes(dir)
    }

    fn probe_direct_io(&mut self, dir: &Path) -> Result<()> {
        probe_direct_io(dir)
    }

    fn map(&mut self, file: &Self::File, len: usize) -> io::Result<Self::Map> {
        MappedSegment::map(&file.file, len)
    }

    fn shared_reader(&mut self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        let direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path);
        let (file, direct) = match direct {
            Ok(file) => (file, true),
            // A file system without O_DIRECT (tmpfs): read through the page cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (OpenOptions::new().read(true).open(path)?, false)
            }
            Err(e) => return Err(e),
        };
        Ok(Arc::new(SharedReader { file, direct }))
    }

    fn buffer(&mut self, bytes: usize) -> Option<IoBuf> {
        let leased =
            self.pool.as_ref().filter(|p| bytes <= p.buffer_bytes()).and_then(|p| p.lease());
        leased.or_else(|| IoBuf::zeroed(bytes))
    }

    fn submit_write(
        &mut self,
        file: &Self::File,
        offset: u64,
        buf: IoBuf,
        len: usize,
        token: u64,
    ) -> Result<()> {
        self.ring.write(file.clone(), offset, buf, len, token)
    }

    fn submit_sync(&mut self, file: &Self::File, token: u64) -> Result<()> {
        self.ring.fdatasync(file.clone(), token)
    }

    fn in_flight(&self) -> usize {
        self.ring.in_flight()
    }

    fn reap(&mut self, out: &mut Vec<IoDone>) -> Result<()> {
        self.ring.reap(out)
    }

    fn park(
        &mut self,
        inbox: &Inbox,
        timeout: Option<Duration>,
        out: &mut Vec<IoDone>,
    ) -> Result<()> {
        self.ring.arm_doorbell(inbox.eventfd())?;
        self.ring.wait(timeout, out)
    }
}

/// Checks that `dir` accepts `O_DIRECT` writes, so a `Sync`-mode database on a filesystem
/// without it fails at open rather than at its first write.
fn probe_direct_io(dir: &Path) -> Result<()> {
    let path = dir.join(".direct-io-probe");
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let result = match opened {
        Ok(file) => {
            match AlignedBuf::zeroed(SECTOR_BYTES).map(|b| file.write_all_at(b.as_slice(), 0)) {
                Some(Ok(())) | None => Ok(()),
                Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                    Err(direct_io_unsupported(dir))
                }
                Some(Err(e)) => Err(Error::io("probe O_DIRECT writes", &path, e)),
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(direct_io_unsupported(dir)),
        Err(e) => Err(Error::io("probe O_DIRECT writes", &path, e)),
    };
    let _ = std::fs::remove_file(&path);
    result
}

/// The error for a filesystem that refuses `O_DIRECT`.
pub fn direct_io_unsupported(path: &Path) -> Error {
    Error::EnvUnsupported {
        what: format!(
            "the filesystem holding {} does not support O_DIRECT (ramfs, tmpfs before Linux \
             6.6, some FUSE and network filesystems); put the database on ext4 or xfs, or set \
             `direct_io: false`",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::io_leaks;

    /// Writes `count` buffers of `pattern(i)` at offsets `i * 4096` and drops the storage
    /// without reaping anything: the drop must wait for every write, so the file holds them all
    /// and no buffer was freed under the kernel.
    fn writes_outlive_a_dropped_storage(how: OpenHow, registration: Registration) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 64 * 4096]).unwrap();
        let before = io_leaks();
        let count = 48;
        {
            let mut io = UringStorage::new(registration).unwrap();
            let file = io.open(&path, how).unwrap();
            for i in 0..count {
                let mut buf = io.buffer(4096).unwrap();
                buf.as_mut_slice()[..4096].fill(i as u8 + 1);
                io.submit_write(&file, i as u64 * 4096, buf, 4096, i as u64).unwrap();
            }
            assert!(io.in_flight() > 0);
            io.ring.submit().unwrap();
            // Dropped here, with writes in flight (and, registered, leases out).
        }
        assert_eq!(io_leaks(), before, "nothing freed in flight, nothing leaked");
        let bytes = std::fs::read(&path).unwrap();
        for i in 0..count {
            let block = &bytes[i * 4096..(i + 1) * 4096];
            assert!(block.iter().all(|&b| b == i as u8 + 1), "write {i} was not completed");
        }
    }

    #[test]
    fn dropping_the_storage_waits_for_buffered_writes() {
        writes_outlive_a_dropped_storage(OpenHow::Buffered, Registration::default());
    }

    #[test]
    fn dropping_the_storage_waits_for_durable_direct_writes_of_registered_buffers() {
        let registration = Registration { buffers: 2, buffer_bytes: 4096 };
        match UringStorage::new(registration) {
            Ok(_) => {
                writes_outlive_a_dropped_storage(OpenHow::Durable { direct: true }, registration)
            }
            // A low RLIMIT_MEMLOCK refuses registration; the plain path is the same code.
            Err(Error::EnvUnsupported { .. }) => writes_outlive_a_dropped_storage(
                OpenHow::Durable { direct: true },
                Registration::default(),
            ),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_panic_with_writes_in_flight_frees_nothing_under_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; 16 * 4096]).unwrap();
        let before = io_leaks();
        let p = path.clone();
        let t = std::thread::spawn(move || {
            let mut io = UringStorage::new(Registration::default()).unwrap();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let file = io.open(&p, OpenHow::Buffered).unwrap();
                for i in 0..16u64 {
                    let mut buf = io.buffer(4096).unwrap();
                    buf.as_mut_slice().fill(0xab);
                    io.submit_write(&file, i * 4096, buf, 4096, i).unwrap();
                }
                panic!("a bug in the middle of a turn");
            }));
            assert!(ran.is_err());
            drop(io); // after the unwinding, as the shard thread does
        });
        t.join().unwrap();
        assert_eq!(io_leaks(), before);
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0xab));
    }
}
