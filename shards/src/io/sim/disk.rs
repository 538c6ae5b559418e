//! The simulated disk's state: files with the bytes written and the bytes durable, directories
//! with their entries written and durable, operations in flight, faults, and the two crash
//! models.
//!
//! Shared by every `SimStorage` of one `SimDisk` behind one mutex. The models:
//! - **Process crash**: the page cache survives, so every byte written stays (readable, not
//!   yet durable); each operation in flight either happened or not.
//! - **Power loss**: what was synced stays. Every write not yet synced is kept, dropped or torn
//!   at 512-byte sector granularity: each sector a pending write touched ends up holding the
//!   bytes of some prefix of its history of unsynced writes (none, some, or all of them, in
//!   order), chosen by the seeded generator. Directory operations not yet synced survive as a
//!   prefix of their order. Directories themselves are durable once created.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rng::SimRng;
use super::{Fault, FaultOp, FaultRates, FiredFault};
use crate::io::{IoBuf, IoDone};

/// The unit a power loss tears writes at: the device's logical sector.
pub const SIM_SECTOR_BYTES: usize = 512;

/// An unsynced change to a file.
#[derive(Clone, Debug)]
enum Change {
    Write { offset: usize, bytes: Vec<u8> },
    Resize { len: usize },
}

#[derive(Clone, Debug)]
struct Dirty {
    seq: u64,
    change: Change,
}

/// One file (an inode): what reads see, and what survives a power loss for sure.
#[derive(Clone, Debug, Default)]
pub(super) struct SimFile {
    pub(super) written: Vec<u8>,
    durable: Vec<u8>,
    dirty: Vec<Dirty>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    journal: Vec<DirOp>,
}

fn apply_dir_op(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, inode) => {
            entries.insert(name.clone(), *inode);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(inode) = entries.remove(from) {
                entries.insert(to.clone(), inode);
            }
        }
    }
}

/// An asynchronous operation submitted and not completed.
pub(super) enum PendingKind {
    Write { inode: u64, offset: usize, buf: IoBuf, len: usize, durable: bool, path: PathBuf },
    Sync { inode: u64, upto_seq: u64, path: PathBuf },
}

pub(super) struct Pending {
    owner: u64,
    token: u64,
    kind: PendingKind,
}

/// How asynchronous operations complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// At submission (real threads drive the shards; a test waits for results).
    Immediate,
    /// When the simulation says so (`SimDisk::complete_some`), in the order it picks.
    Manual,
}

/// Everything one simulated disk holds.
pub(super) struct DiskState {
    pub(super) rng: SimRng,
    /// Ordered maps throughout: iteration order feeds the generator, and one seed must give
    /// one run.
    files: BTreeMap<u64, SimFile>,
    next_inode: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    next_seq: u64,
    pending: Vec<Pending>,
    completed: BTreeMap<u64, Vec<IoDone>>,
    pub(super) completion: Completion,
    /// Simulated time since the disk was made, when the simulation moves the clock.
    pub(super) clock: Option<Duration>,
    faults: Vec<Fault>,
    rates: FaultRates,
    fired: Vec<FiredFault>,
    /// Mutating operations left before the process "dies" mid-step.
    freeze_after: Option<u64>,
    pub(super) frozen: bool,
    /// The interrupted store of the freeze happened (in part) already.
    pub(super) frozen_torn_done: bool,
    /// A dead process's I/O fails (EIO) instead of vanishing, so its threads stop.
    pub(super) fail_dead: bool,
    /// Bumped by every crash: storages of an earlier epoch belong to a dead process.
    pub(super) epoch: u64,
    pub(super) next_owner: u64,
    capacity_bytes: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok((dir, name.to_string()))
}

fn put_bytes(image: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(bytes);
}

impl DiskState {
    pub(super) fn new(seed: u64, completion: Completion) -> Self {
        DiskState {
            rng: SimRng::new(seed),
            files: BTreeMap::new(),
            next_inode: 1,
            dirs: BTreeMap::new(),
            next_seq: 1,
            pending: Vec::new(),
            completed: BTreeMap::new(),
            completion,
            clock: (completion == Completion::Manual).then_some(Duration::ZERO),
            faults: Vec::new(),
            rates: FaultRates::default(),
            fired: Vec::new(),
            freeze_after: None,
            frozen: false,
            frozen_torn_done: false,
            fail_dead: false,
            epoch: 0,
            next_owner: 1,
            capacity_bytes: 1 << 40,
        }
    }

    /// True when an operation by a storage of `epoch` must have no effect: its process died.
    pub(super) fn dead(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch || self.frozen {
            return true;
        }
        if let Some(left) = self.freeze_after.as_mut() {
            if *left == 0 {
                self.frozen = true;
                self.freeze_after = None;
                return true;
            }
            *left -= 1;
        }
        false
    }

    pub(super) fn freeze_after(&mut self, ops: u64) {
        self.freeze_after = Some(ops);
        self.frozen_torn_done = false;
    }

    /// Decides whether `op` on `path` fails, by an injected fault or by the fault rates.
    pub(super) fn fault(&mut self, op: FaultOp, path: &Path) -> Option<i32> {
        let text = path.to_string_lossy();
        let hit = self.faults.iter_mut().position(|f| {
            f.op == op && f.count > 0 && f.path_contains.as_deref().is_none_or(|p| text.contains(p))
        });
        let errno = match hit {
            Some(i) => {
                let f = &mut self.faults[i];
                f.count -= 1;
                let errno = f.errno;
                if f.count == 0 {
                    self.faults.remove(i);
                }
                Some(errno)
            }
            None => {
                let (rate, errno) = self.rates.for_op(op);
                (rate > 0.0 && self.rng.chance(rate)).then_some(errno)
            }
        }?;
        self.fired.push(FiredFault { op, path: path.to_path_buf(), errno });
        Some(errno)
    }

    pub(super) fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub(super) fn set_rates(&mut self, rates: FaultRates) {
        self.rates = rates;
    }

    pub(super) fn clear_faults(&mut self) {
        self.faults.clear();
        self.rates = FaultRates::default();
    }

    pub(super) fn take_fired(&mut self) -> Vec<FiredFault> {
        std::mem::take(&mut self.fired)
    }

    pub(super) fn set_capacity(&mut self, bytes: u64) {
        self.capacity_bytes = bytes;
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.written.len() as u64).sum()
    }

    pub(super) fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes())
    }

    // ---------------------------------------------------------------------------------------
    // Directories and files.

    pub(super) fn create_dir_all(&mut self, dir: &Path) {
        for ancestor in dir.ancestors() {
            self.dirs.entry(ancestor.to_path_buf()).or_default();
        }
    }

    pub(super) fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let d = self.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let mut names: Vec<String> = d.entries.keys().cloned().collect();
        let subdirs = self.dirs.keys().filter(|p| p.parent() == Some(dir) && p.as_path() != dir);
        names.extend(subdirs.filter_map(|p| p.file_name()?.to_str().map(str::to_string)));
        Ok(names)
    }

    pub(super) fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    pub(super) fn file(&self, inode: u64) -> io::Result<&SimFile> {
        self.files.get(&inode).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn file_mut(&mut self, inode: u64) -> io::Result<&mut SimFile> {
        self.files.get_mut(&inode).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    pub(super) fn create_new(&mut self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        let d = self.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        if d.entries.contains_key(&name) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let inode = self.next_inode;
        self.next_inode += 1;
        d.entries.insert(name.clone(), inode);
        d.journal.push(DirOp::Link(name, inode));
        self.files.insert(inode, SimFile::default());
        Ok(inode)
    }

    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if dir != to_dir {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let d = self.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        if d.entries.contains_key(&to_name) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let inode = d.entries.remove(&from_name).ok_or_else(|| not_found(from))?;
        d.entries.insert(to_name.clone(), inode);
        d.journal.push(DirOp::Rename(from_name, to_name));
        Ok(())
    }

    pub(super) fn remove(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let d = self.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        d.entries.remove(&name).ok_or_else(|| not_found(path))?;
        d.journal.push(DirOp::Unlink(name));
        Ok(())
    }

    pub(super) fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let d = self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        d.durable = d.entries.clone();
        d.journal.clear();
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A buffered write: in the page cache now, durable at the next sync (or at once, for a
    /// file opened durable).
    pub(super) fn write(
        &mut self,
        inode: u64,
        offset: usize,
        bytes: &[u8],
        durable: bool,
    ) -> io::Result<()> {
        let seq = self.next_seq();
        let f = self.file_mut(inode)?;
        put_bytes(&mut f.written, offset, bytes);
        if durable {
            put_bytes(&mut f.durable, offset, bytes);
        } else {
            f.dirty.push(Dirty { seq, change: Change::Write { offset, bytes: bytes.to_vec() } });
        }
        Ok(())
    }

    pub(super) fn allocate(&mut self, inode: u64, len: usize) -> io::Result<()> {
        let seq = self.next_seq();
        let free = self.free_bytes();
        let f = self.file_mut(inode)?;
        if len > f.written.len() {
            if (len - f.written.len()) as u64 > free {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            f.written.resize(len, 0);
            f.dirty.push(Dirty { seq, change: Change::Resize { len } });
        }
        Ok(())
    }

    /// Shortens (or extends) `inode` to `len`; durable at its next sync, and a power loss
    /// before keeps the old length or the new one.
    pub(super) fn truncate(&mut self, inode: u64, len: usize) -> io::Result<()> {
        let seq = self.next_seq();
        let f = self.file_mut(inode)?;
        f.written.resize(len, 0);
        f.dirty.push(Dirty { seq, change: Change::Resize { len } });
        Ok(())
    }

    /// Makes every change to `inode` up to `upto_seq` durable.
    fn sync_upto(&mut self, inode: u64, upto_seq: u64) -> io::Result<()> {
        let f = self.file_mut(inode)?;
        let (done, rest): (Vec<_>, Vec<_>) = f.dirty.drain(..).partition(|d| d.seq <= upto_seq);
        f.dirty = rest;
        for d in done {
            match d.change {
                Change::Write { offset, bytes } => put_bytes(&mut f.durable, offset, &bytes),
                Change::Resize { len } => f.durable.resize(len, 0),
            }
        }
        Ok(())
    }

    pub(super) fn sync_file(&mut self, inode: u64) -> io::Result<()> {
        let upto = self.next_seq();
        self.sync_upto(inode, upto)
    }

    // ---------------------------------------------------------------------------------------
    // Asynchronous operations.

    pub(super) fn submit_write(
        &mut self,
        owner: u64,
        token: u64,
        target: (u64, PathBuf, bool),
        offset: usize,
        buf: IoBuf,
        len: usize,
    ) {
        let (inode, path, durable) = target;
        let kind = PendingKind::Write { inode, offset, buf, len, durable, path };
        self.start(Pending { owner, token, kind });
    }

    pub(super) fn submit_sync(&mut self, owner: u64, token: u64, inode: u64, path: PathBuf) {
        let upto_seq = self.next_seq;
        self.start(Pending { owner, token, kind: PendingKind::Sync { inode, upto_seq, path } });
    }

    fn start(&mut self, op: Pending) {
        match self.completion {
            Completion::Immediate => self.finish(op),
            Completion::Manual => self.pending.push(op),
        }
    }

    pub(super) fn in_flight(&self, owner: u64) -> usize {
        self.pending.iter().filter(|p| p.owner == owner).count()
            + self.completed.get(&owner).map_or(0, Vec::len)
    }

    pub(super) fn take_completed(&mut self, owner: u64, out: &mut Vec<IoDone>) {
        if let Some(done) = self.completed.get_mut(&owner) {
            out.append(done);
        }
    }

    pub(super) fn has_completed(&self, owner: u64) -> bool {
        self.completed.get(&owner).is_some_and(|d| !d.is_empty())
    }

    pub(super) fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// Completes up to `max` operations in flight, picked at random (so they finish in any
    /// order, as on a real device).
    pub(super) fn complete_some(&mut self, max: usize) {
        for _ in 0..max {
            if self.pending.is_empty() {
                return;
            }
            let i = self.rng.below(self.pending.len() as u64) as usize;
            let op = self.pending.swap_remove(i);
            self.finish(op);
        }
    }

    /// Performs an operation (or fails it by a fault) and queues its completion.
    fn finish(&mut self, op: Pending) {
        let Pending { owner, token, kind } = op;
        let done = match kind {
            PendingKind::Write { inode, offset, mut buf, len, durable, path } => {
                let result = match self.fault(FaultOp::Write, &path) {
                    Some(errno) => {
                        // A failed write may have written any of its sectors.
                        let bytes = buf.as_slice()[..len].to_vec();
                        self.write_some_sectors(inode, offset, &bytes, durable);
                        -errno
                    }
                    None => match self.write(inode, offset, &buf.as_slice()[..len], durable) {
                        Ok(()) => len as i32,
                        Err(_) => -libc::EBADF,
                    },
                };
                buf.set_in_kernel(false);
                IoDone { token, result, buf: Some(buf) }
            }
            PendingKind::Sync { inode, upto_seq, path } => {
                // A failed fdatasync leaves the pages in the cache, not on the device: they
                // stay dirty and a power loss decides their fate.
                let result = match self.fault(FaultOp::Sync, &path) {
                    Some(errno) => -errno,
                    None => match self.sync_upto(inode, upto_seq) {
                        Ok(()) => 0,
                        Err(_) => -libc::EBADF,
                    },
                };
                IoDone { token, result, buf: None }
            }
        };
        self.completed.entry(owner).or_default().push(done);
    }

    fn write_some_sectors(&mut self, inode: u64, offset: usize, bytes: &[u8], durable: bool) {
        let mut at = 0;
        while at < bytes.len() {
            let end = ((offset + at) / SIM_SECTOR_BYTES + 1) * SIM_SECTOR_BYTES - offset;
            let end = end.min(bytes.len());
            if self.rng.chance(0.5) {
                let _ = self.write(inode, offset + at, &bytes[at..end], durable);
            }
            at = end;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Crashes.

    /// The process dies: the page cache survives; each operation in flight happened or not.
    pub(super) fn crash(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            if self.rng.chance(0.5) {
                self.finish(op);
            } else {
                let Pending { owner, token, kind } = op;
                let buf = match kind {
                    PendingKind::Write { mut buf, .. } => {
                        buf.set_in_kernel(false); // the operation never happened: the buffer is free
                        Some(buf)
                    }
                    PendingKind::Sync { .. } => None,
                };
                if self.fail_dead {
                    let done = IoDone { token, result: -libc::EIO, buf };
                    self.completed.entry(owner).or_default().push(done);
                }
            }
        }
        self.end_epoch();
    }

    /// The machine loses power: see the module header.
    pub(super) fn power_loss(&mut self) {
        // Writes in flight become unsynced changes of their files, syncs in flight are lost.
        for op in std::mem::take(&mut self.pending) {
            let Pending { owner, token, kind } = op;
            let buf = match kind {
                PendingKind::Write { inode, offset, buf, len, .. } => {
                    let seq = self.next_seq();
                    if let Ok(f) = self.file_mut(inode) {
                        let bytes = buf.as_slice()[..len].to_vec();
                        f.dirty.push(Dirty { seq, change: Change::Write { offset, bytes } });
                    }
                    let mut buf = buf;
                    buf.set_in_kernel(false);
                    Some(buf)
                }
                PendingKind::Sync { .. } => None,
            };
            if self.fail_dead {
                let done = IoDone { token, result: -libc::EIO, buf };
                self.completed.entry(owner).or_default().push(done);
            }
        }
        let inodes: Vec<u64> = self.files.keys().copied().collect();
        for inode in inodes {
            self.lose_power_on(inode);
        }
        let mut rng = std::mem::replace(&mut self.rng, SimRng::new(0));
        for d in self.dirs.values_mut() {
            let keep = rng.below(d.journal.len() as u64 + 1) as usize;
            for op in &d.journal[..keep] {
                apply_dir_op(&mut d.durable, op);
            }
            d.journal.clear();
            d.entries = d.durable.clone();
        }
        self.rng = rng;
        self.end_epoch();
    }

    /// Each sector a dirty write touched keeps a random prefix of its history of writes.
    fn lose_power_on(&mut self, inode: u64) {
        let Some(mut f) = self.files.remove(&inode) else { return };
        let mut history: HashMap<usize, u32> = HashMap::new();
        let mut resizes = 0u32;
        for d in &f.dirty {
            match &d.change {
                Change::Write { offset, bytes } => {
                    for s in sectors(*offset, bytes.len()) {
                        *history.entry(s).or_default() += 1;
                    }
                }
                Change::Resize { .. } => resizes += 1,
            }
        }
        let mut keep: HashMap<usize, u32> = HashMap::new();
        let mut sorted: Vec<_> = history.into_iter().collect();
        sorted.sort_unstable(); // a fixed order, so one seed gives one outcome
        for (s, n) in sorted {
            keep.insert(s, self.rng.below(u64::from(n) + 1) as u32);
        }
        let mut keep_resizes = self.rng.below(u64::from(resizes) + 1) as u32;
        let mut seen: HashMap<usize, u32> = HashMap::new();
        for d in std::mem::take(&mut f.dirty) {
            match d.change {
                Change::Write { offset, bytes } => {
                    for s in sectors(offset, bytes.len()) {
                        let n = seen.entry(s).or_default();
                        *n += 1;
                        if *n <= keep.get(&s).copied().unwrap_or(0) {
                            let lo = (s * SIM_SECTOR_BYTES).max(offset);
                            let hi = ((s + 1) * SIM_SECTOR_BYTES).min(offset + bytes.len());
                            put_bytes(&mut f.durable, lo, &bytes[lo - offset..hi - offset]);
                        }
                    }
                }
                Change::Resize { len } => {
                    if keep_resizes > 0 {
                        keep_resizes -= 1;
                        f.durable.resize(len, 0);
                    }
                }
            }
        }
        f.written = f.durable.clone();
        self.files.insert(inode, f);
    }

    fn end_epoch(&mut self) {
        if self.fail_dead {
            // The dead process's operations answer EIO (their buffers handed back), so a test
            // that drops its database afterwards does not wait for them forever.
            for done in self.completed.values_mut().flatten() {
                done.result = -libc::EIO;
            }
        } else {
            self.completed.clear();
        }
        self.frozen = false;
        self.frozen_torn_done = false;
        self.freeze_after = None;
        self.epoch += 1;
    }

    // ---------------------------------------------------------------------------------------
    // Test fixtures: direct access to what a file holds.

    /// Writes `bytes` as the whole, durable content of `path` (creating it, durably linked).
    pub(super) fn put_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let (dir, name) = split(path)?;
        self.create_dir_all(&dir);
        let inode = match self.lookup(path) {
            Ok(inode) => inode,
            Err(_) => self.create_new(path)?,
        };
        let f = self.file_mut(inode)?;
        f.written = bytes.to_vec();
        f.durable = bytes.to_vec();
        f.dirty.clear();
        if let Some(d) = self.dirs.get_mut(&dir) {
            d.durable.insert(name, inode);
        }
        Ok(())
    }

    /// Flips bits of one durable byte: media damage.
    pub(super) fn unsynced(&self, path: &Path) -> io::Result<Vec<(usize, usize)>> {
        let f = self.file(self.lookup(path)?)?;
        Ok(f.dirty
            .iter()
            .filter_map(|d| match &d.change {
                Change::Write { offset, bytes } => Some((*offset, bytes.len())),
                Change::Resize { .. } => None,
            })
            .collect())
    }

    pub(super) fn damage(&mut self, path: &Path, offset: usize, mask: u8) -> io::Result<()> {
        let inode = self.lookup(path)?;
        let f = self.file_mut(inode)?;
        for image in [&mut f.written, &mut f.durable] {
            if let Some(b) = image.get_mut(offset) {
                *b ^= mask;
            }
        }
        Ok(())
    }
}

/// The sectors `[offset, offset + len)` touches.
fn sectors(offset: usize, len: usize) -> std::ops::Range<usize> {
    if len == 0 {
        return 0..0;
    }
    offset / SIM_SECTOR_BYTES..(offset + len - 1) / SIM_SECTOR_BYTES + 1
}
