//! The `Sync` WAL writer: group commit with durable writes, in two halves.
//!
//! Records are appended to the open *group*: a sector-aligned buffer bound to a place in a
//! segment. [`DirectLog`] holds it: the half a write needs, which lives under the shard's commit
//! lock, so a caller encodes its own record into the group (ADR 0003) and then waits for the
//! group's write. [`DirectWal`] is the shard thread's half: the segments, the buffers, and the
//! groups sealed for writing. Each of its calls is handed the log, locked. Up to
//! [`MAX_WRITES_IN_FLIGHT`] group writes are in flight at once (`O_DIRECT | O_DSYNC`, so a write
//! is durable when it completes); meanwhile callers fill the next group. `durable` advances in
//! LSN order: when the oldest group in flight completes, it and every completed group behind it
//! count.
//!
//! Every group starts with a GROUP record carrying the durable claim when it was submitted. If
//! a crash leaves an earlier group unwritten and a later one written, replay sees that the
//! later group's claim does not reach the hole: nothing from the hole on was acknowledged (the
//! shard acknowledges in LSN order), so the tail is cut instead of reported as corruption. An
//! idle shard writes a group holding only a claim `sync_interval` after its last durable
//! write, and at once when closing.
//!
//! Invariants: `claimed <= durable <= staged` (asserted); every group starts on an aligned
//! boundary past the previous group's padded end, so no durable byte is rewritten; a group's
//! buffer belongs to the storage while its write is in flight; a record is copied into the open
//! group only when it fits, so a copy never fails (a caller whose record does not fit sends it
//! to the shard thread, which seals the group and opens one that fits).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use super::chain::SegmentChain;
use super::format;
use super::reader::Replayed;
use super::record::{self, Body, GROUP_RECORD_BYTES};
use super::{Urgency, WalError, WalOptions, WalProgress};
use super::{TOKEN_KIND_MASK, TOKEN_WAL_WRITE};
use crate::error::Error;
use crate::io::{IoBuf, IoDone, Storage};
use crate::stats::WalCounters;
use crate::version::{Lsn, Ts};

/// Size of a pooled group buffer. Larger records get a buffer of their own.
pub const GROUP_BUFFER_BYTES: usize = 256 * 1024;
/// Group buffers registered with the ring (fixed buffers): one per write in flight.
pub const REGISTERED_BUFFERS: usize = MAX_WRITES_IN_FLIGHT;
/// Group writes in flight at once per shard. Two lets a group be written while the previous
/// one is still on its way to the device (ADR 0002: 4 writers, 2 shards).
pub const MAX_WRITES_IN_FLIGHT: usize = 2;
/// Pooled buffers kept for reuse: one per write in flight plus the group being filled.
const BUFFERS_KEPT: usize = MAX_WRITES_IN_FLIGHT + 1;

/// The group callers append to.
struct OpenGroup {
    id: u64,
    buf: IoBuf,
    fill: usize,
    /// The padded size the group may reach: its buffer, or what is left of its segment.
    cap: usize,
    first_lsn: Lsn,
    last_lsn: Lsn,
    records: usize,
    generation: u32,
}

/// The half of the `Sync` WAL a write needs (see the module documentation). `Send`: it lives
/// under the shard's commit lock.
pub struct DirectLog {
    open: Option<OpenGroup>,
    next_lsn: Lsn,
    /// The last LSN placed.
    staged: Lsn,
    /// Reused to encode one record.
    scratch: Vec<u8>,
}

impl DirectLog {
    /// Copies a WRITE record for `ops` at `ts` into the open group and returns its LSN, or
    /// `None` (copying nothing) when there is no room: the shard thread must open a group that
    /// fits first.
    pub fn append(&mut self, ts: Ts, body: Body<'_>) -> Option<Lsn> {
        let bytes = body.record_bytes();
        let lsn = self.next_lsn;
        let group = self.open.as_mut()?;
        if format::next_group_offset(group.fill + bytes) > group.cap {
            return None;
        }
        self.scratch.clear();
        body.encode(&mut self.scratch, lsn, ts, group.generation);
        group.buf.as_mut_slice()[group.fill..group.fill + bytes].copy_from_slice(&self.scratch);
        group.fill += bytes;
        group.last_lsn = lsn;
        group.records += 1;
        self.next_lsn = lsn.next();
        self.staged = lsn;
        Some(lsn)
    }

    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// True when a record of `bytes` fits the open group now.
    pub fn fits(&self, bytes: usize) -> bool {
        self.open.as_ref().is_some_and(|g| format::next_group_offset(g.fill + bytes) <= g.cap)
    }

    /// Records wait in the open group for the shard to write them.
    pub fn has_staged(&self) -> bool {
        self.open.as_ref().is_some_and(|g| g.records > 0)
    }
}

struct Segment<S: Storage> {
    file: S::File,
    path: PathBuf,
    generation: u32,
    len: usize,
}

/// A group whose size is final: written, being written, or waiting for a write slot.
struct Group<S: Storage> {
    id: u64,
    last_lsn: Lsn,
    first_lsn: Lsn,
    records: usize,
    done: bool,
    /// `None` while the write is in flight: the storage holds the buffer.
    buf: Option<IoBuf>,
    fill: usize,
    segment: Rc<Segment<S>>,
    offset: usize,
    submitted: bool,
}

/// The shard thread's half of the `Sync` WAL (see the module documentation).
pub struct DirectWal<S: Storage> {
    chain: SegmentChain,
    active: Option<Rc<Segment<S>>>,
    /// Where the group after the open one starts in the active segment.
    next_offset: usize,
    /// The open group's segment and offset (the log holds its buffer).
    open_at: Option<(Rc<Segment<S>>, usize)>,
    /// `durable` and `claimed` (`staged` is the log's; `written == durable` in this mode).
    progress: WalProgress,
    groups: VecDeque<Group<S>>,
    next_group_id: u64,
    in_flight: usize,
    free: Vec<IoBuf>,
    /// When `durable` last advanced.
    durable_at: Instant,
    counters: WalCounters,
}

impl<S: Storage> DirectWal<S> {
    /// Both halves of a writer that continues after `replayed`.
    pub fn new(opts: WalOptions, replayed: &Replayed, now: Instant) -> (Self, DirectLog) {
        let last = replayed.next_lsn.prev();
        let wal = DirectWal {
            chain: SegmentChain::new(opts, replayed.tail.clone(), replayed.next_sequence),
            active: None,
            next_offset: 0,
            open_at: None,
            progress: WalProgress {
                staged: last,
                written: last,
                durable: last,
                claimed: replayed.claimed.min(last),
            },
            groups: VecDeque::new(),
            next_group_id: 0,
            in_flight: 0,
            free: Vec::with_capacity(BUFFERS_KEPT),
            durable_at: now,
            counters: WalCounters::default(),
        };
        let log = DirectLog {
            open: None,
            next_lsn: replayed.next_lsn,
            staged: last,
            scratch: Vec::with_capacity(4096),
        };
        (wal, log)
    }

    /// Creates (or reopens) the segment the next record goes to and opens the first group, so
    /// a disk without room for a segment fails at open rather than at the first write.
    pub fn prepare(&mut self, io: &mut S, log: &mut DirectLog) -> Result<(), WalError> {
        if log.open.is_none() {
            self.open_group(io, log, 0)?;
        }
        Ok(())
    }

    fn open_segment(&mut self, io: &mut S, log: &DirectLog) -> Result<(), WalError> {
        let opened = self.chain.open_next(io, log.next_lsn)?;
        self.next_offset = opened.offset;
        self.active = Some(Rc::new(Segment {
            generation: opened.header.generation(),
            len: usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX),
            file: opened.file,
            path: opened.path,
        }));
        Ok(())
    }

    /// Seals the open group (if any: its size is final) and opens a new one with room for a
    /// record of `bytes` (in a new segment if the active one is too full).
    fn open_group(
        &mut self,
        io: &mut S,
        log: &mut DirectLog,
        bytes: usize,
    ) -> Result<(), WalError> {
        self.seal(log, false);
        if let Some(empty) = log.open.take() {
            // Nothing in it, so it used no room: give its buffer back.
            self.open_at = None;
            self.recycle(empty.buf);
        }
        let need = format::next_group_offset(GROUP_RECORD_BYTES + bytes);
        let fits = self.active.as_ref().is_some_and(|a| self.next_offset + need <= a.len);
        if !fits {
            self.open_segment(io, log)?;
        }
        let Some(segment) = self.active.clone() else {
            return Err(WalError::Rejected(Error::Closed));
        };
        if self.next_offset + need > segment.len {
            return Err(WalError::Rejected(Error::LimitExceeded {
                what: "WAL record bytes",
                actual: bytes as u64,
                max: (segment.len - format::SEGMENT_HEADER_BYTES) as u64,
            }));
        }
        let buf = self.take_buffer(io, GROUP_RECORD_BYTES + bytes)?;
        self.next_group_id += 1;
        let cap = buf.len().min(segment.len - self.next_offset);
        log.open = Some(OpenGroup {
            id: self.next_group_id,
            buf,
            fill: GROUP_RECORD_BYTES, // the GROUP record is written at submission
            cap,
            first_lsn: log.next_lsn,
            last_lsn: Lsn::ZERO,
            records: 0,
            generation: segment.generation,
        });
        self.open_at = Some((segment, self.next_offset));
        Ok(())
    }

    /// Takes the open group out of the log (when it holds records, or as a claim) and queues it
    /// for writing; the next group in its segment starts after its padded end.
    fn seal(&mut self, log: &mut DirectLog, claim_only: bool) {
        let Some(open) = log.open.take_if(|g| g.records > 0 || claim_only) else { return };
        let Some((segment, offset)) = self.open_at.take() else { return };
        if self.active.as_ref().is_some_and(|a| Rc::ptr_eq(a, &segment)) {
            self.next_offset = self.next_offset.max(offset + format::next_group_offset(open.fill));
        }
        self.groups.push_back(Group {
            id: open.id,
            first_lsn: open.first_lsn,
            last_lsn: open.last_lsn,
            records: open.records,
            done: false,
            buf: Some(open.buf),
            fill: open.fill,
            segment,
            offset,
            submitted: false,
        });
    }

    /// A record of `bytes` did not fit the open group: seal it and open one that fits.
    pub fn make_room(
        &mut self,
        io: &mut S,
        log: &mut DirectLog,
        bytes: usize,
    ) -> Result<(), WalError> {
        self.open_group(io, log, bytes)
    }

    fn take_buffer(&mut self, io: &mut S, bytes: usize) -> Result<IoBuf, WalError> {
        if bytes <= GROUP_BUFFER_BYTES {
            if let Some(b) = self.free.pop() {
                return Ok(b);
            }
        }
        io.buffer(format::next_group_offset(bytes).max(GROUP_BUFFER_BYTES)).ok_or_else(|| {
            let out_of_memory = std::io::Error::from(std::io::ErrorKind::OutOfMemory);
            WalError::Rejected(Error::io("allocate a WAL group buffer", "", out_of_memory))
        })
    }

    fn recycle(&mut self, buf: IoBuf) {
        if buf.len() == GROUP_BUFFER_BYTES && self.free.len() < BUFFERS_KEPT {
            self.free.push(buf);
        }
    }

    /// Writes a group holding only a claim when nothing is staged or queued and the newest
    /// claim is older than what is durable (at once with `now_please`, else `sync_interval`
    /// after the last durable write).
    fn maybe_claim(
        &mut self,
        io: &mut S,
        log: &mut DirectLog,
        now: Instant,
        now_please: bool,
    ) -> Result<(), WalError> {
        let p = self.progress;
        let interval = self.chain.opts().sync_interval;
        let due = now_please || now.saturating_duration_since(self.durable_at) >= interval;
        if !self.groups.is_empty() || log.has_staged() || p.durable <= p.claimed || !due {
            return Ok(());
        }
        if log.open.is_none() {
            // Opening failed earlier (no room for a segment): try again, one interval later.
            self.open_group(io, log, 0).inspect_err(|_| self.durable_at = now)?;
        }
        self.seal(log, true);
        self.open_group(io, log, 0).inspect_err(|_| self.durable_at = now)
    }

    /// Submits the I/O that is due: the open group when a write slot is free, queued groups,
    /// durable claims.
    pub fn submit(
        &mut self,
        io: &mut S,
        log: &mut DirectLog,
        now: Instant,
        urgency: Urgency,
    ) -> Result<(), WalError> {
        self.maybe_claim(io, log, now, urgency.claim_now)?;
        let waiting = self.groups.iter().filter(|g| !g.submitted).count();
        if log.has_staged() && self.in_flight + waiting < MAX_WRITES_IN_FLIGHT {
            self.open_group(io, log, 0)?;
        }
        self.submit_groups(io)
    }

    fn submit_groups(&mut self, io: &mut S) -> Result<(), WalError> {
        let durable_before = self.progress.durable;
        for i in 0..self.groups.len() {
            if self.in_flight >= MAX_WRITES_IN_FLIGHT {
                break;
            }
            let group = &mut self.groups[i];
            if group.submitted {
                continue;
            }
            let len = format::next_group_offset(group.fill);
            let Some(mut buf) = group.buf.take() else { continue };
            let bytes = buf.as_mut_slice();
            record::encode_group(bytes, group.first_lsn, group.segment.generation, durable_before);
            // Zero the padding: a reused buffer holds an older group's bytes past `fill`.
            bytes[group.fill..len].fill(0);
            let token = TOKEN_WAL_WRITE | (group.id & !TOKEN_KIND_MASK);
            let (file, offset) = (group.segment.file.clone(), group.offset as u64);
            group.submitted = true;
            io.submit_write(&file, offset, buf, len, token).map_err(WalError::Poisoned)?;
            self.in_flight += 1;
            self.progress.claimed = self.progress.claimed.max(durable_before);
            let records = self.groups[i].records;
            self.counters.group(records, len);
        }
        Ok(())
    }

    /// Handles a finished group write.
    pub fn on_completion(&mut self, io: &mut S, done: IoDone) -> Result<(), WalError> {
        let id = done.token & !TOKEN_KIND_MASK;
        let Some(index) = self.groups.iter().position(|g| g.submitted && !g.done && g.id == id)
        else {
            return Ok(());
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let expected = format::next_group_offset(self.groups[index].fill);
        if let Some(buf) = done.buf {
            self.recycle(buf);
        }
        if done.result < 0 || done.result as usize != expected {
            let source = if done.result < 0 {
                std::io::Error::from_raw_os_error(-done.result)
            } else {
                std::io::Error::other(format!("short write: {} of {expected} bytes", done.result))
            };
            let path = self.groups[index].segment.path.clone();
            self.groups.remove(index);
            return Err(WalError::Poisoned(Error::io("durable WAL write (O_DSYNC)", path, source)));
        }
        self.groups[index].done = true;
        while self.groups.front().is_some_and(|g| g.done) {
            let Some(g) = self.groups.pop_front() else { break };
            if g.records > 0 {
                assert!(g.last_lsn > self.progress.durable, "groups complete in LSN order");
                self.progress.durable = g.last_lsn;
                self.progress.written = g.last_lsn;
                self.durable_at = io.now();
            }
        }
        Ok(())
    }

    /// How far the log has come (`staged` from the log half).
    pub fn progress(&self, log: &DirectLog) -> WalProgress {
        let p = WalProgress { staged: log.staged, ..self.progress };
        p.check();
        p
    }

    /// The next time something is due (a claim), if any.
    pub fn next_deadline(&self, log: &DirectLog) -> Option<Instant> {
        let p = self.progress;
        (self.groups.is_empty() && !log.has_staged() && p.durable > p.claimed)
            .then(|| self.durable_at + self.chain.opts().sync_interval)
    }

    /// Nothing staged, nothing queued, nothing in flight.
    pub fn is_idle(&self, log: &DirectLog) -> bool {
        self.groups.is_empty() && !log.has_staged()
    }

    /// Traffic counters.
    pub fn counters(&self) -> &WalCounters {
        &self.counters
    }
}
