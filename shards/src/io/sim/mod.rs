//! A simulated disk for tests: in memory, with power loss, torn and failed writes, by seed.
//!
//! [`SimDisk`] is the disk (shared, `Send + Sync`); [`SimStorage`] is one shard's [`Storage`]
//! on it. The disk keeps, for each file, the bytes written (what reads see: the page cache)
//! and the bytes durable (what survives a power loss for sure); `disk.rs` states the crash and
//! power-loss models. Faults are injected by rule ([`Fault`]: the next N operations of a kind
//! on matching paths fail with an errno) or by rate ([`FaultRates`], drawn from the disk's
//! seeded generator), and every fault that fires is recorded ([`SimDisk::take_fired`]).
//!
//! Two ways to run: [`SimDisk::new`] completes operations at once and uses the real clock, for
//! a whole database on real threads; [`SimDisk::deterministic`] leaves operations in flight
//! until [`SimDisk::complete_some`] finishes some (in random order) and moves the clock only by
//! [`SimDisk::advance_clock`], for the single-threaded simulation runner where one seed gives
//! one run.

mod disk;
mod rng;

pub use disk::{Completion, SIM_SECTOR_BYTES};
pub use rng::SimRng;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use disk::DiskState;

use super::{FileHandle, IoBuf, IoDone, MapSegment, OpenHow, ReadAt, Storage};
use crate::error::{Error, Result};
use crate::ingress::Inbox;

/// Which operation a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultOp {
    /// A write submitted through the ring (a `Sync` group write).
    Write,
    /// An fdatasync submitted through the ring (`Normal`/`Async`).
    Sync,
    /// A blocking fdatasync (segment creation, start-up).
    FileSync,
    /// A directory fsync.
    DirSync,
    /// Preallocating a file (segment creation): ENOSPC is a full disk.
    Allocate,
    /// A blocking write (a segment's header or zero fill).
    WriteAt,
}

/// A rule: the next `count` operations of kind `op` on a path containing `path_contains` (any
/// path when `None`) fail with `errno`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: FaultOp,
    /// A substring the path must contain, e.g. `"shard-001"`.
    pub path_contains: Option<String>,
    /// The error, e.g. `libc::EIO` or `libc::ENOSPC`.
    pub errno: i32,
    /// How many operations fail.
    pub count: u32,
}

impl Fault {
    /// The next operation of kind `op` (anywhere) fails with `errno`.
    pub fn next(op: FaultOp, errno: i32) -> Fault {
        Fault { op, path_contains: None, errno, count: 1 }
    }

    /// Only on paths containing `part`.
    pub fn on_path(mut self, part: &str) -> Fault {
        self.path_contains = Some(part.to_string());
        self
    }

    /// The next `count` operations instead of one.
    pub fn times(mut self, count: u32) -> Fault {
        self.count = count;
        self
    }
}

/// Probabilities, per operation, that it fails (drawn from the disk's seeded generator).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// A ring write fails with EIO (half of the time ENOSPC).
    pub write: f64,
    /// A ring fdatasync fails with EIO.
    pub sync: f64,
    /// A blocking fdatasync or directory fsync fails with EIO.
    pub blocking_sync: f64,
    /// A preallocation fails with ENOSPC.
    pub allocate: f64,
}

impl FaultRates {
    fn for_op(&self, op: FaultOp) -> (f64, i32) {
        match op {
            FaultOp::Write => (self.write, libc::EIO),
            FaultOp::Sync => (self.sync, libc::EIO),
            FaultOp::FileSync | FaultOp::DirSync => (self.blocking_sync, libc::EIO),
            FaultOp::Allocate => (self.allocate, libc::ENOSPC),
            FaultOp::WriteAt => (0.0, libc::EIO),
        }
    }
}

/// A fault that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiredFault {
    /// The operation it hit.
    pub op: FaultOp,
    /// The file or directory.
    pub path: PathBuf,
    /// The error returned.
    pub errno: i32,
}

/// A simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
    base: Instant,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk").finish_non_exhaustive()
    }
}

impl SimDisk {
    /// A disk whose operations complete at once, on the real clock: for a database whose
    /// shards run on real threads.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk::with(seed, Completion::Immediate)
    }

    /// A disk whose operations complete only when [`SimDisk::complete_some`] says, on a clock
    /// only [`SimDisk::advance_clock`] moves: for a single-threaded simulation.
    pub fn deterministic(seed: u64) -> SimDisk {
        SimDisk::with(seed, Completion::Manual)
    }

    fn with(seed: u64, completion: Completion) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(DiskState::new(seed, completion))),
            base: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A storage for one shard (one process's view of the disk).
    pub fn storage(&self) -> SimStorage {
        let mut s = self.lock();
        let owner = s.next_owner;
        s.next_owner += 1;
        SimStorage { disk: self.clone(), owner, epoch: s.epoch }
    }

    /// Adds a fault rule.
    pub fn inject(&self, fault: Fault) {
        self.lock().inject(fault);
    }

    /// Sets the fault rates (all zero by default).
    pub fn set_rates(&self, rates: FaultRates) {
        self.lock().set_rates(rates);
    }

    /// Removes every fault rule and rate.
    pub fn clear_faults(&self) {
        self.lock().clear_faults();
    }

    /// The faults that fired since the last call.
    pub fn take_fired(&self) -> Vec<FiredFault> {
        self.lock().take_fired()
    }

    /// Limits the disk to `bytes` of file data (ENOSPC past it).
    pub fn set_capacity(&self, bytes: u64) {
        self.lock().set_capacity(bytes);
    }

    /// The process crashes now (see the crash model in `disk.rs`). Storages made before are
    /// dead: nothing they do reaches the disk any more.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// The machine loses power now (see the power-loss model in `disk.rs`).
    pub fn power_loss(&self) {
        self.lock().power_loss();
    }

    /// From now on, the I/O of a dead process (after a crash, or past a `freeze_after` limit)
    /// fails with EIO instead of vanishing without an answer: for tests that keep using (and
    /// then drop) a database whose process "died", so its threads see errors and stop. What
    /// reaches the disk is the same either way.
    pub fn fail_dead_io(&self, on: bool) {
        self.lock().fail_dead = on;
    }

    /// The process dies after `ops` more mutating operations, in the middle of whatever it is
    /// doing: the operation that hits the limit happens in part, later ones not at all.
    /// [`SimDisk::frozen`] tells when it happened; then call `crash` or `power_loss`.
    pub fn freeze_after(&self, ops: u64) {
        self.lock().freeze_after(ops);
    }

    /// True once a `freeze_after` limit was reached.
    pub fn frozen(&self) -> bool {
        self.lock().frozen
    }

    /// Moves the simulated clock (deterministic disks only).
    pub fn advance_clock(&self, by: Duration) {
        let mut s = self.lock();
        if let Some(c) = s.clock.as_mut() {
            *c += by;
        }
    }

    /// The simulated clock, as an `Instant`.
    pub fn now(&self) -> Instant {
        match self.lock().clock {
            Some(c) => self.base + c,
            None => Instant::now(),
        }
    }

    /// Completes up to `max` operations in flight, in random order (deterministic disks).
    pub fn complete_some(&self, max: usize) {
        self.lock().complete_some(max);
    }

    /// Operations in flight on the whole disk.
    pub fn pending_ops(&self) -> usize {
        self.lock().pending_ops()
    }

    /// What reads of `path` return now, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let inode = s.lookup(path).ok()?;
        s.file(inode).ok().map(|f| f.written.clone())
    }

    /// The names in `dir`.
    pub fn list(&self, dir: &Path) -> Vec<String> {
        self.lock().list_dir(dir).unwrap_or_default()
    }

    /// Makes `bytes` the whole durable content of `path` (a fixture).
    pub fn put_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.lock().put_file(path, bytes)
    }

    /// The writes to `path` not yet made durable, as `(offset, length)`, oldest first: for tests
    /// of write ordering (what must be durable before what).
    pub fn unsynced(&self, path: &Path) -> io::Result<Vec<(usize, usize)>> {
        self.lock().unsynced(path)
    }

    /// Flips the bits `mask` of the durable byte at `offset` of `path`: media damage.
    pub fn damage(&self, path: &Path, offset: usize, mask: u8) -> io::Result<()> {
        self.lock().damage(path, offset, mask)
    }

    /// Removes `path`, durably (a fixture).
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.remove(path)?;
        s.sync_dir(path.parent().unwrap_or(Path::new("")))
    }

    /// A number from the disk's generator (for fixtures that want the same seed).
    pub fn random_u64(&self) -> u64 {
        self.lock().rng.next_u64()
    }
}

/// A file open on a simulated disk.
#[derive(Clone, Debug)]
pub struct SimFile {
    inode: u64,
    path: PathBuf,
    durable: bool,
}

impl FileHandle for SimFile {
    fn path(&self) -> &Path {
        &self.path
    }
}

/// One shard's storage on a [`SimDisk`].
pub struct SimStorage {
    disk: SimDisk,
    owner: u64,
    epoch: u64,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SimStorage {
    /// Runs a mutating operation unless this storage's process is dead, in which case it
    /// "succeeds" without reaching the disk (nobody is left to see the difference).
    fn mutate<T>(
        &self,
        fault: Option<(FaultOp, &Path)>,
        dead: T,
        f: impl FnOnce(&mut DiskState) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.disk.lock();
        if s.dead(self.epoch) {
            if s.fail_dead {
                return Err(errno(libc::EIO));
            }
            return Ok(dead);
        }
        if let Some((op, path)) = fault {
            if let Some(code) = s.fault(op, path) {
                return Err(errno(code));
            }
        }
        f(&mut s)
    }
}

impl Storage for SimStorage {
    type File = SimFile;
    type Map = SimMap;

    fn now(&self) -> Instant {
        self.disk.now()
    }

    fn random_u64(&mut self) -> u64 {
        self.disk.random_u64()
    }

    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        self.mutate(None, (), |s| {
            s.create_dir_all(dir);
            Ok(())
        })
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.lock().list_dir(dir)
    }

    fn read_file(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.disk.lock();
        let inode = s.lookup(path)?;
        Ok(s.file(inode)?.written.clone())
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = self.disk.lock();
        let inode = s.lookup(path)?;
        let written = &s.file(inode)?.written;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(written.len());
        Ok(written[start..start.saturating_add(len).min(written.len())].to_vec())
    }

    fn open(&mut self, path: &Path, how: OpenHow) -> io::Result<Self::File> {
        let durable = matches!(how, OpenHow::Durable { .. });
        let inode = match how {
            OpenHow::CreateNew => self.mutate(None, 0, |s| s.create_new(path))?,
            OpenHow::Buffered | OpenHow::Direct | OpenHow::Durable { .. } => {
                self.disk.lock().lookup(path)?
            }
        };
        Ok(SimFile { inode, path: path.to_path_buf(), durable })
    }

    fn allocate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()> {
        let len = usize::try_from(bytes).map_err(|_| errno(libc::EFBIG))?;
        self.mutate(Some((FaultOp::Allocate, &file.path)), (), |s| s.allocate(file.inode, len))
    }

    fn write_at(&mut self, file: &Self::File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
        self.mutate(Some((FaultOp::WriteAt, &file.path)), (), |s| {
            s.write(file.inode, offset, bytes, file.durable)
        })
    }

    fn truncate(&mut self, file: &Self::File, bytes: u64) -> io::Result<()> {
        let len = usize::try_from(bytes).map_err(|_| errno(libc::EFBIG))?;
        self.mutate(None, (), |s| s.truncate(file.inode, len))
    }

    fn sync_file(&mut self, file: &Self::File) -> io::Result<()> {
        self.mutate(Some((FaultOp::FileSync, &file.path)), (), |s| s.sync_file(file.inode))
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(None, (), |s| s.rename(from, to))
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.mutate(None, (), |s| s.remove(path))
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.mutate(Some((FaultOp::DirSync, dir)), (), |s| s.sync_dir(dir))
    }

    fn free_bytes(&mut self, _dir: &Path) -> io::Result<u64> {
        Ok(self.disk.lock().free_bytes())
    }

    fn probe_direct_io(&mut self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    fn map(&mut self, file: &Self::File, len: usize) -> io::Result<Self::Map> {
        let s = self.disk.lock();
        if s.file(file.inode)?.written.len() < len {
            return Err(errno(libc::EINVAL)); // a mapping past the end would fault on write
        }
        Ok(SimMap { disk: self.disk.clone(), inode: file.inode, len, epoch: self.epoch })
    }

    fn shared_reader(&mut self, path: &Path) -> io::Result<Arc<dyn ReadAt>> {
        self.disk.lock().lookup(path)?;
        Ok(Arc::new(SimReader { disk: self.disk.clone(), path: path.to_path_buf() }))
    }

    fn buffer(&mut self, bytes: usize) -> Option<IoBuf> {
        IoBuf::zeroed(bytes)
    }

    fn submit_write(
        &mut self,
        file: &Self::File,
        offset: u64,
        mut buf: IoBuf,
        len: usize,
        token: u64,
    ) -> Result<()> {
        let mut s = self.disk.lock();
        if s.dead(self.epoch) {
            if s.fail_dead {
                return Err(Error::io("write (dead process)", &file.path, errno(libc::EIO)));
            }
            return Ok(()); // the buffer is simply dropped: no kernel will ever read it
        }
        buf.set_in_kernel(true);
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let target = (file.inode, file.path.clone(), file.durable);
        s.submit_write(self.owner, token, target, offset, buf, len.min(u32::MAX as usize));
        Ok(())
    }

    fn submit_sync(&mut self, file: &Self::File, token: u64) -> Result<()> {
        let mut s = self.disk.lock();
        if !s.dead(self.epoch) {
            s.submit_sync(self.owner, token, file.inode, file.path.clone());
        } else if s.fail_dead {
            return Err(Error::io("fdatasync (dead process)", &file.path, errno(libc::EIO)));
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.disk.lock().in_flight(self.owner)
    }

    fn reap(&mut self, out: &mut Vec<IoDone>) -> Result<()> {
        let mut s = self.disk.lock();
        // A dead process's storage reaps only with `fail_dead_io`: its operations then answer
        // EIO (see `DiskState::end_epoch`).
        if s.epoch == self.epoch || s.fail_dead {
            s.take_completed(self.owner, out);
        }
        Ok(())
    }

    fn park(
        &mut self,
        inbox: &Inbox,
        timeout: Option<Duration>,
        out: &mut Vec<IoDone>,
    ) -> Result<()> {
        let immediate = {
            let s = self.disk.lock();
            s.completion == Completion::Immediate && !s.has_completed(self.owner)
        };
        if immediate {
            let _ = inbox.eventfd().wait(timeout);
            inbox.eventfd().clear();
        }
        self.reap(out)
    }
}

/// A reader of a simulated file: reads see what was written (the page cache).
struct SimReader {
    disk: SimDisk,
    path: PathBuf,
}

impl ReadAt for SimReader {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let s = self.disk.lock();
        let written = &s.file(s.lookup(&self.path)?)?.written;
        let start = usize::try_from(offset).map_err(|_| errno(libc::EINVAL))?;
        let end = start.checked_add(len).ok_or_else(|| errno(libc::EINVAL))?;
        match written.get(start..end) {
            Some(bytes) => Ok(bytes.to_vec()),
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

/// A "mapping" of a simulated file: each record copied in is a write to its page cache.
pub struct SimMap {
    disk: SimDisk,
    inode: u64,
    len: usize,
    epoch: u64,
}

impl MapSegment for SimMap {
    fn len(&self) -> usize {
        self.len
    }

    fn write_record_at(&mut self, offset: usize, record: &[u8], header_bytes: usize) -> bool {
        if offset.checked_add(record.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        let header_bytes = header_bytes.min(record.len());
        let (header, body) = record.split_at(header_bytes);
        let mut s = self.disk.lock();
        // Body, then header: two stores, either of which a crash can interrupt.
        for (at, bytes) in [(offset + header_bytes, body), (offset, header)] {
            if s.dead(self.epoch) {
                if s.frozen {
                    torn_store(&mut s, self.inode, at, bytes);
                }
                return true;
            }
            let _ = s.write(self.inode, at, bytes, false);
        }
        true
    }

    fn populate(&mut self, _offset: usize, _len: usize) {}
}

/// The store a crash interrupted: a random subset of its 8-byte words reached memory.
fn torn_store(s: &mut DiskState, inode: u64, at: usize, bytes: &[u8]) {
    if std::mem::replace(&mut s.frozen_torn_done, true) {
        return;
    }
    for (i, word) in bytes.chunks(8).enumerate() {
        if s.rng.chance(0.5) {
            let _ = s.write(inode, at + i * 8, word, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `fail_dead_io`, a write in flight when the process dies answers EIO to the dead
    /// storage (whether the crash let it happen or not), so whoever waits for it is not left
    /// waiting forever; without it, a dead storage gets no answer.
    #[test]
    fn writes_in_flight_at_a_crash_answer_eio_with_fail_dead_io() {
        for (fail_dead, power_loss) in [(true, false), (true, true), (false, false)] {
            let disk = SimDisk::new(3);
            disk.fail_dead_io(fail_dead);
            let mut io = disk.storage();
            let path = PathBuf::from("/d/f");
            io.create_dir_all(Path::new("/d")).unwrap();
            let file = io.open(&path, OpenHow::CreateNew).unwrap();
            io.allocate(&file, 8192).unwrap();
            for token in 0..4 {
                let buf = IoBuf::zeroed(4096).unwrap();
                io.submit_write(&file, 0, buf, 4096, token).unwrap();
            }
            if power_loss {
                disk.power_loss();
            } else {
                disk.crash();
            }
            let mut out = Vec::new();
            io.reap(&mut out).unwrap();
            if fail_dead {
                assert_eq!(out.len(), 4, "every write answers");
                assert!(out.iter().all(|d| d.result == -libc::EIO));
                assert_eq!(io.in_flight(), 0);
            } else {
                assert!(out.is_empty());
            }
        }
    }
}
