//! The `Normal`/`Async` WAL writer: records are encoded into a staging buffer during a loop
//! turn, copied into a shared mapping of the segment once per turn (`publish_staged`), and made
//! durable by an fdatasync through the ring at least every `sync_interval`.
//!
//! Shard-local. Invariants: `durable_lsn <= written_lsn <= staged_lsn`; after every sync the
//! append offset moves to the next sector boundary, so durable sectors are never rewritten; a
//! record is staged only after it is known to fit in the active segment, so publishing a stage
//! cannot fail.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use io_uring::{opcode, types};

use super::chain::SegmentChain;
use super::format::{self, SegmentHeader, RECORD_HEADER_BYTES};
use super::reader::Tail;
use super::{WalError, WalOptions, TOKEN_KIND_MASK, TOKEN_WAL_SYNC};
use crate::error::Error;
use crate::ingress::{Ack, WriteOp};
use crate::io::mapped::MappedSegment;
use crate::runtime::ring::Ring;
use crate::stats::WalCounters;

/// Bytes prefaulted ahead of the append offset at a time.
const POPULATE_AHEAD_BYTES: usize = 256 * 1024;

struct Active {
    file: Rc<File>,
    path: PathBuf,
    header: SegmentHeader,
    map: MappedSegment,
    offset: usize,
    populated_to: usize,
}

/// An fdatasync covering every record up to `lsn` in its segment. Syncs complete in any
/// order; `durable_lsn` advances over the completed prefix only.
struct PendingSync {
    id: u64,
    lsn: u64,
    path: PathBuf,
    // Keeps the descriptor open until the fdatasync completes, even across a rollover.
    file: Rc<File>,
    submitted: bool,
    done: bool,
}

/// WAL writer for `Normal` and `Async`.
pub struct MappedWal {
    chain: SegmentChain,
    active: Option<Active>,
    next_lsn: u64,
    staged: Vec<u8>,
    /// Start offset of each record in `staged`.
    staged_starts: Vec<usize>,
    staged_lsn: u64,
    written_lsn: u64,
    durable_lsn: u64,
    /// Syncs queued or in flight, in LSN order: at most one for the active segment, plus one
    /// per segment retired by a rollover.
    syncs: VecDeque<PendingSync>,
    next_sync_id: u64,
    last_sync: Instant,
    sync_waiters: Vec<(u64, Ack)>,
    counters: WalCounters,
}

impl MappedWal {
    /// A writer that continues after replay: the next record gets `next_lsn`.
    pub fn new(opts: WalOptions, tail: Tail, next_lsn: u64) -> Self {
        let last = next_lsn - 1;
        MappedWal {
            chain: SegmentChain::new(opts, tail),
            active: None,
            next_lsn,
            staged: Vec::with_capacity(64 * 1024),
            staged_starts: Vec::with_capacity(256),
            staged_lsn: last,
            written_lsn: last,
            durable_lsn: last,
            syncs: VecDeque::new(),
            next_sync_id: 0,
            last_sync: Instant::now(),
            sync_waiters: Vec::new(),
            counters: WalCounters::default(),
        }
    }

    /// Encodes a record for `ops` into the stage and returns its LSN. Rolls to a new segment
    /// first when the record would not fit in the active one.
    pub fn stage(&mut self, ops: &[WriteOp]) -> Result<u64, WalError> {
        let bytes = format::write_record_bytes(ops);
        let fits = self
            .active
            .as_ref()
            .is_some_and(|a| a.offset + self.staged.len() + bytes <= a.map.len());
        if !fits {
            self.roll_over()?;
        }
        let lsn = self.next_lsn;
        let generation = self.active.as_ref().map_or(0, |a| a.header.generation());
        self.staged_starts.push(self.staged.len());
        format::encode_write_record(&mut self.staged, lsn, generation, ops);
        self.next_lsn += 1;
        self.staged_lsn = lsn;
        Ok(lsn)
    }

    /// Copies the stage into the mapping: from here the records survive a process crash.
    /// Returns the highest LSN written.
    pub fn publish_staged(&mut self) -> u64 {
        if let (Some(active), false) = (self.active.as_mut(), self.staged.is_empty()) {
            // Record by record, each header after its body: a kill at any instant leaves a
            // prefix of complete records, never a gap followed by a valid record.
            let ends = self
                .staged_starts
                .iter()
                .skip(1)
                .copied()
                .chain(std::iter::once(self.staged.len()));
            for (start, end) in self.staged_starts.iter().copied().zip(ends) {
                let record = &self.staged[start..end];
                let copied =
                    active.map.write_record_at(active.offset + start, record, RECORD_HEADER_BYTES);
                debug_assert!(copied, "stage was sized to fit the segment");
            }
            active.offset += self.staged.len();
            self.counters.group(self.staged_starts.len(), self.staged.len());
            if active.offset + POPULATE_AHEAD_BYTES / 2 > active.populated_to {
                active.map.populate(active.populated_to, POPULATE_AHEAD_BYTES);
                active.populated_to += POPULATE_AHEAD_BYTES;
            }
            self.staged.clear();
            self.staged_starts.clear();
            self.written_lsn = self.staged_lsn;
        }
        self.written_lsn
    }

    fn roll_over(&mut self) -> Result<(), WalError> {
        self.publish_staged();
        if let Some(old) = self.active.take() {
            // The periodic sync covers only the active segment: queue one for the retired
            // segment (submitted by the next `maybe_start_sync`, through the ring, so the loop
            // does not stall on a segment's worth of dirty pages).
            if self.written_lsn > self.pending_lsn() {
                self.queue_sync(self.written_lsn, old.path, old.file);
            }
        }
        let opened = self.chain.open_next(self.next_lsn)?;
        let len = usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX);
        let map = MappedSegment::map(&opened.file, len)
            .map_err(|e| WalError::Rejected(Error::io("map WAL segment", &opened.path, e)))?;
        map.populate(opened.offset, POPULATE_AHEAD_BYTES);
        self.active = Some(Active {
            file: Rc::new(opened.file),
            path: opened.path,
            header: opened.header,
            map,
            offset: opened.offset,
            populated_to: opened.offset + POPULATE_AHEAD_BYTES,
        });
        Ok(())
    }

    fn queue_sync(&mut self, lsn: u64, path: PathBuf, file: Rc<File>) {
        self.next_sync_id += 1;
        self.syncs.push_back(PendingSync {
            id: self.next_sync_id,
            lsn,
            path,
            file,
            submitted: false,
            done: false,
        });
    }

    /// The highest LSN a queued or in-flight sync will cover.
    fn pending_lsn(&self) -> u64 {
        self.syncs.back().map_or(self.durable_lsn, |s| s.lsn)
    }

    /// Submits queued syncs of retired segments, and starts an fdatasync of the active segment
    /// if written records are not yet covered and either `force` is set or the sync interval
    /// has passed. At most one sync of the active segment is in flight.
    pub fn maybe_start_sync(
        &mut self,
        ring: &mut Ring,
        now: Instant,
        force: bool,
    ) -> Result<(), WalError> {
        self.publish_staged();
        let active_busy = self
            .active
            .as_ref()
            .is_some_and(|a| self.syncs.iter().any(|s| Rc::ptr_eq(&s.file, &a.file)));
        let due = force || now.duration_since(self.last_sync) >= self.chain.opts().sync_interval;
        if !active_busy && due && self.written_lsn > self.pending_lsn() {
            if let Some(active) = self.active.as_mut() {
                // Records after this sync start on a fresh sector: synced ones are never rewritten.
                active.offset = format::next_group_offset(active.offset).min(active.map.len());
                let (path, file) = (active.path.clone(), active.file.clone());
                self.queue_sync(self.written_lsn, path, file);
                self.last_sync = now;
            }
        }
        for sync in self.syncs.iter_mut().filter(|s| !s.submitted) {
            let sqe = opcode::Fsync::new(types::Fd(sync.file.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(TOKEN_WAL_SYNC | (sync.id & !TOKEN_KIND_MASK));
            ring.push(&sqe).map_err(WalError::Poisoned)?;
            sync.submitted = true;
        }
        Ok(())
    }

    /// When the next timed sync is due, if any records are waiting for one.
    pub fn next_sync_deadline(&self) -> Option<Instant> {
        (self.written_lsn > self.pending_lsn())
            .then(|| self.last_sync + self.chain.opts().sync_interval)
    }

    /// Handles the completion of the fdatasync tagged `token`.
    /// Returns the sync requests now satisfied, for the shard to acknowledge.
    pub fn on_sync_complete(&mut self, token: u64, result: i32) -> Result<Vec<Ack>, WalError> {
        let id = token & !TOKEN_KIND_MASK;
        let Some(sync) =
            self.syncs.iter_mut().find(|s| s.submitted && !s.done && s.id & !TOKEN_KIND_MASK == id)
        else {
            return Ok(Vec::new());
        };
        let faults = self.chain.opts().faults.as_deref();
        let injected =
            faults.is_some_and(|f| f.take_fdatasync_failure(self.chain.opts().shard_id as usize));
        if result < 0 || injected {
            let code = if injected { libc::EIO } else { -result };
            let err = Error::io(
                "fdatasync WAL segment",
                &sync.path,
                std::io::Error::from_raw_os_error(code),
            );
            return Err(WalError::Poisoned(err));
        }
        sync.done = true;
        self.counters.fdatasyncs += 1;
        while self.syncs.front().is_some_and(|s| s.done) {
            if let Some(s) = self.syncs.pop_front() {
                debug_assert!(s.lsn <= self.written_lsn);
                self.durable_lsn = self.durable_lsn.max(s.lsn);
            }
        }
        let durable = self.durable_lsn;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.sync_waiters.drain(..).partition(|(lsn, _)| *lsn <= durable);
        self.sync_waiters = waiting;
        Ok(ready.into_iter().map(|(_, ack)| ack).collect())
    }

    /// Holds `ack` until everything written so far is durable; hands it back at once when
    /// that is already so.
    pub fn request_sync(&mut self, ack: Ack) -> Option<Ack> {
        let target = self.publish_staged();
        if target <= self.durable_lsn {
            return Some(ack);
        }
        self.sync_waiters.push((target, ack));
        None
    }

    /// True while callers wait for a sync.
    pub fn has_sync_waiters(&self) -> bool {
        !self.sync_waiters.is_empty()
    }

    /// True while an fdatasync is in flight.
    pub fn sync_in_flight(&self) -> bool {
        !self.syncs.is_empty()
    }

    /// Hands back every waiting request (after the shard was poisoned).
    pub fn take_waiters(&mut self) -> Vec<Ack> {
        self.sync_waiters.drain(..).map(|(_, ack)| ack).collect()
    }

    /// Traffic counters.
    pub fn counters(&self) -> &WalCounters {
        &self.counters
    }

    /// Highest LSN written into the mapping.
    pub fn written_lsn(&self) -> u64 {
        self.written_lsn
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }
}
