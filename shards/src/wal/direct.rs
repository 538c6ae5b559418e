//! The `Sync` WAL writer: group commit with durable writes.
//!
//! Records are appended to the open *group*: a sector-aligned buffer bound to a place in a
//! segment. Up to [`MAX_WRITES_IN_FLIGHT`] group writes are in flight at once
//! (`O_DIRECT | O_DSYNC`, so a write is durable when it completes); meanwhile new records fill
//! the next group. `durable` advances in LSN order: when the oldest group in flight completes,
//! it and every completed group behind it count.
//!
//! Every group starts with a GROUP record carrying the durable claim when it was submitted. If
//! a crash leaves an earlier group unwritten and a later one written, replay sees that the
//! later group's claim does not reach the hole: nothing from the hole on was acknowledged (the
//! shard acknowledges in LSN order), so the tail is cut instead of reported as corruption. An
//! idle shard writes a group holding only a claim `sync_interval` after its last durable
//! write, and at once when closing.
//!
//! Shard-local. Invariants: `claimed <= durable <= staged` (asserted); every group starts on an
//! aligned boundary past the previous group's padded end, so no durable byte is rewritten; a
//! group's buffer belongs to the storage while its write is in flight.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use super::chain::SegmentChain;
use super::format;
use super::reader::Replayed;
use super::record::{self, WriteOp, GROUP_RECORD_BYTES};
use super::{Urgency, WalError, WalOptions, WalProgress, WalWriter};
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

struct Segment<S: Storage> {
    file: S::File,
    path: PathBuf,
    generation: u32,
    len: usize,
}

struct Group<S: Storage> {
    id: u64,
    first_lsn: Lsn,
    last_lsn: Lsn,
    records: usize,
    done: bool,
    /// `None` while the write is in flight: the storage holds the buffer.
    buf: Option<IoBuf>,
    fill: usize,
    segment: Rc<Segment<S>>,
    offset: usize,
    submitted: bool,
    /// Its size is final: the next group's place was computed from it (`close_group`), so it
    /// takes no more records, even if opening that next group then failed.
    sealed: bool,
    /// A group of no records that only carries a durable claim.
    claim_only: bool,
}

/// WAL writer for `Sync`.
pub struct DirectWal<S: Storage> {
    chain: SegmentChain,
    active: Option<Rc<Segment<S>>>,
    /// Where the next group in the active segment starts.
    next_offset: usize,
    next_lsn: Lsn,
    progress: WalProgress,
    groups: VecDeque<Group<S>>,
    next_group_id: u64,
    in_flight: usize,
    free: Vec<IoBuf>,
    scratch: Vec<u8>,
    /// When `durable` last advanced.
    durable_at: Instant,
    counters: WalCounters,
}

impl<S: Storage> DirectWal<S> {
    /// A writer that continues after `replayed`.
    pub fn new(opts: WalOptions, replayed: &Replayed, now: Instant) -> Self {
        let last = replayed.next_lsn.prev();
        DirectWal {
            chain: SegmentChain::new(opts, replayed.tail.clone(), replayed.next_sequence),
            active: None,
            next_offset: 0,
            next_lsn: replayed.next_lsn,
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
            scratch: Vec::with_capacity(4096),
            durable_at: now,
            counters: WalCounters::default(),
        }
    }

    fn open_segment(&mut self, io: &mut S) -> Result<(), WalError> {
        let opened = self.chain.open_next(io, self.next_lsn)?;
        self.next_offset = opened.offset;
        self.active = Some(Rc::new(Segment {
            generation: opened.header.generation(),
            len: usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX),
            file: opened.file,
            path: opened.path,
        }));
        Ok(())
    }

    fn tail_group_fits(&self, bytes: usize) -> bool {
        self.groups.back().is_some_and(|g| {
            let padded = format::next_group_offset(g.fill + bytes);
            let cap = g.buf.as_ref().map_or(0, IoBuf::len);
            !g.submitted
                && !g.sealed
                && !g.claim_only
                && padded <= cap
                && g.offset + padded <= g.segment.len
        })
    }

    /// Closes the tail group (its size is final) and opens a new one with room for `bytes`.
    fn open_group(&mut self, io: &mut S, bytes: usize, claim_only: bool) -> Result<(), WalError> {
        if let Some(tail) = self.groups.back_mut() {
            if !tail.submitted {
                tail.sealed = true;
                let (offset, fill, segment) = (tail.offset, tail.fill, tail.segment.clone());
                self.close_group(offset, fill, &segment);
            }
        }
        let need = format::next_group_offset(GROUP_RECORD_BYTES + bytes);
        let fits = self.active.as_ref().is_some_and(|a| self.next_offset + need <= a.len);
        if !fits {
            self.open_segment(io)?;
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
        self.groups.push_back(Group {
            id: self.next_group_id,
            first_lsn: self.next_lsn,
            last_lsn: Lsn::ZERO,
            records: 0,
            done: false,
            buf: Some(buf),
            fill: GROUP_RECORD_BYTES, // the GROUP record is written at submission
            offset: self.next_offset,
            segment,
            submitted: false,
            sealed: false,
            claim_only,
        });
        Ok(())
    }

    /// A group's size is final (submitted, or followed by a newer group): the next group in
    /// its segment starts on the aligned boundary after its padded end.
    fn close_group(&mut self, offset: usize, fill: usize, segment: &Rc<Segment<S>>) {
        if self.active.as_ref().is_some_and(|a| Rc::ptr_eq(a, segment)) {
            self.next_offset = self.next_offset.max(offset + format::next_group_offset(fill));
        }
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

    /// Opens a group holding only a claim when nothing is queued and the newest claim is older
    /// than what is durable (at once with `now_please`, else `sync_interval` after the last
    /// durable write).
    fn maybe_claim(&mut self, io: &mut S, now: Instant, now_please: bool) -> Result<(), WalError> {
        let p = self.progress;
        let interval = self.chain.opts().sync_interval;
        let due = now_please || now.saturating_duration_since(self.durable_at) >= interval;
        if !self.groups.is_empty() || p.durable <= p.claimed || !due {
            return Ok(());
        }
        self.open_group(io, 0, true).inspect_err(|_| self.durable_at = now)
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
            if group.fill <= GROUP_RECORD_BYTES && !group.claim_only {
                break; // an empty tail group: nothing to write yet
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
            let group = &self.groups[i];
            self.counters.group(group.records, len);
            let (offset, fill, segment) = (group.offset, group.fill, group.segment.clone());
            self.close_group(offset, fill, &segment);
        }
        Ok(())
    }
}

impl<S: Storage> WalWriter<S> for DirectWal<S> {
    fn prepare(&mut self, io: &mut S) -> Result<(), WalError> {
        if self.active.is_none() {
            self.open_segment(io)?;
        }
        Ok(())
    }

    fn append(&mut self, io: &mut S, ts: Ts, ops: &[WriteOp]) -> Result<Lsn, WalError> {
        let bytes = record::write_record_bytes(ops);
        if !self.tail_group_fits(bytes) {
            self.open_group(io, bytes, false)?;
        }
        let lsn = self.next_lsn;
        let Some(group) = self.groups.back_mut() else {
            return Err(WalError::Rejected(Error::Closed));
        };
        let Some(buf) = group.buf.as_mut() else {
            return Err(WalError::Rejected(Error::Closed));
        };
        self.scratch.clear();
        record::encode_write(&mut self.scratch, lsn, ts, group.segment.generation, ops);
        buf.as_mut_slice()[group.fill..group.fill + bytes].copy_from_slice(&self.scratch);
        group.fill += bytes;
        group.last_lsn = lsn;
        group.records += 1;
        self.next_lsn = lsn.next();
        self.progress.staged = lsn;
        Ok(lsn)
    }

    fn publish(&mut self, _io: &mut S) {}

    fn submit(&mut self, io: &mut S, now: Instant, urgency: Urgency) -> Result<(), WalError> {
        self.maybe_claim(io, now, urgency.claim_now)?;
        self.submit_groups(io)
    }

    fn on_completion(&mut self, io: &mut S, done: IoDone) -> Result<(), WalError> {
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
        self.progress.check();
        Ok(())
    }

    fn progress(&self) -> WalProgress {
        self.progress
    }

    fn next_deadline(&self) -> Option<Instant> {
        let p = self.progress;
        (self.groups.is_empty() && p.durable > p.claimed)
            .then(|| self.durable_at + self.chain.opts().sync_interval)
    }

    fn is_idle(&self) -> bool {
        self.groups.is_empty()
    }

    fn counters(&self) -> &WalCounters {
        &self.counters
    }
}
