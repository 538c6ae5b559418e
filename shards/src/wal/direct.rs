//! The `Sync` WAL writer: group commit with durable writes.
//!
//! Records are appended to the open *group*: a sector-aligned buffer bound to a place in a
//! segment. Up to [`MAX_WRITES_IN_FLIGHT`] group writes are in flight at once
//! (`O_DIRECT | O_DSYNC`, so a write is durable when it completes); meanwhile new records fill
//! the next group. Requests are acknowledged in LSN order: when the oldest in-flight group
//! completes, it and every completed group behind it are acknowledged at once.
//!
//! Every group starts with a GROUP record carrying the highest LSN that was durable when the
//! group was submitted. If a crash leaves an earlier group unwritten and a later one written,
//! replay sees that the later group was submitted before the hole was durable: nothing from the
//! hole on was ever acknowledged, so the tail is cut instead of reported as corruption.
//!
//! Shard-local. Invariants: acknowledgements in LSN order; every group starts on a sector
//! boundary past the previous group's padded end, so no acknowledged sector is rewritten; an
//! SQE's buffer stays owned by its group until the completion is reaped.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

use io_uring::{opcode, types};

use super::chain::SegmentChain;
use super::format;
use super::reader::Tail;
use super::{WalError, WalOptions, TOKEN_KIND_MASK, TOKEN_WAL_WRITE};
use crate::error::Error;
use crate::ingress::{Ack, WriteOp};
use crate::io::aligned::AlignedBuf;
use crate::runtime::ring::Ring;
use crate::stats::WalCounters;

/// Size of a pooled group buffer. Larger records get a buffer of their own.
pub const GROUP_BUFFER_BYTES: usize = 256 * 1024;
/// Pooled buffers registered with the ring (fixed buffers).
pub const REGISTERED_BUFFERS: usize = 2;
/// Group writes in flight at once per shard. Two lets a group be written while the previous
/// one is still on its way to the device (ADR 0002: 4 writers, 2 shards).
pub const MAX_WRITES_IN_FLIGHT: usize = 2;

struct GroupBuf {
    buf: AlignedBuf,
    fixed_index: Option<u16>,
}

struct Segment {
    file: Rc<File>,
    path: PathBuf,
    generation: u32,
    len: usize,
}

struct Group {
    id: u64,
    first_lsn: u64,
    done: bool,
    buf: GroupBuf,
    fill: usize,
    segment: Rc<Segment>,
    offset: usize,
    last_lsn: u64,
    records: usize,
    waiters: Vec<Ack>,
    submitted: bool,
}

/// What a completed group write acknowledges.
pub struct GroupDone {
    /// Highest LSN now durable.
    pub last_lsn: u64,
    /// Requests to acknowledge.
    pub waiters: Vec<Ack>,
}

/// WAL writer for `Sync`.
pub struct DirectWal {
    chain: SegmentChain,
    active: Option<Rc<Segment>>,
    /// Where the next group in the active segment starts.
    next_offset: usize,
    next_lsn: u64,
    durable_lsn: u64,
    groups: VecDeque<Group>,
    /// Requests of a failed group, until the shard takes them with `take_waiters`.
    orphans: Vec<Ack>,
    counters: WalCounters,
    next_group_id: u64,
    in_flight: usize,
    free: Vec<GroupBuf>,
    scratch: Vec<u8>,
}

impl DirectWal {
    /// A writer that continues after replay. `registered` says whether the first
    /// [`REGISTERED_BUFFERS`] pooled buffers are registered with the ring.
    pub fn new(
        opts: WalOptions,
        tail: Tail,
        next_lsn: u64,
        pool: Vec<AlignedBuf>,
        registered: bool,
    ) -> Self {
        let free = pool
            .into_iter()
            .enumerate()
            .map(|(i, buf)| GroupBuf { buf, fixed_index: registered.then_some(i as u16) })
            .collect();
        DirectWal {
            chain: SegmentChain::new(opts, tail),
            active: None,
            next_offset: 0,
            next_lsn,
            durable_lsn: next_lsn - 1,
            groups: VecDeque::new(),
            orphans: Vec::new(),
            counters: WalCounters::default(),
            next_group_id: 0,
            in_flight: 0,
            free,
            scratch: Vec::with_capacity(4096),
        }
    }

    /// Allocates the pooled buffers a `DirectWal` starts with (to register them first).
    pub fn allocate_pool() -> Option<Vec<AlignedBuf>> {
        (0..REGISTERED_BUFFERS).map(|_| AlignedBuf::zeroed(GROUP_BUFFER_BYTES)).collect()
    }

    /// Appends a record for `ops` to the open group and returns its LSN. Attach the request's
    /// responder with [`DirectWal::attach`] to have it signalled when the group is durable.
    pub fn append(&mut self, ops: &[WriteOp]) -> Result<u64, WalError> {
        let bytes = format::write_record_bytes(ops);
        if !self.tail_group_fits(bytes) {
            self.open_group(bytes)?;
        }
        let lsn = self.next_lsn;
        let Some(group) = self.groups.back_mut() else {
            return Err(WalError::Rejected(Error::Closed));
        };
        self.scratch.clear();
        format::encode_write_record(&mut self.scratch, lsn, group.segment.generation, ops);
        group.buf.buf.as_mut_slice()[group.fill..group.fill + bytes].copy_from_slice(&self.scratch);
        group.fill += bytes;
        group.last_lsn = lsn;
        group.records += 1;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Holds `ack` until the group with the last appended record is durable; hands it back at
    /// once when nothing is pending.
    pub fn attach(&mut self, ack: Ack) -> Option<Ack> {
        match self.groups.back_mut() {
            Some(group) => {
                group.waiters.push(ack);
                None
            }
            None => Some(ack),
        }
    }

    fn tail_group_fits(&self, bytes: usize) -> bool {
        self.groups.back().is_some_and(|g| {
            let padded = format::next_group_offset(g.fill + bytes);
            !g.submitted && padded <= g.buf.buf.len() && g.offset + padded <= g.segment.len
        })
    }

    /// Closes the tail group (its size is final) and opens a new one with room for `bytes`.
    fn open_group(&mut self, bytes: usize) -> Result<(), WalError> {
        if let Some(tail) = self.groups.back() {
            if !tail.submitted {
                self.close_group(tail.offset, tail.fill, &tail.segment.clone());
            }
        }
        let need = format::next_group_offset(format::GROUP_RECORD_BYTES + bytes);
        let fits = self.active.as_ref().is_some_and(|a| self.next_offset + need <= a.len);
        if !fits {
            let opened = self.chain.open_next(self.next_lsn)?;
            self.next_offset = opened.offset;
            self.active = Some(Rc::new(Segment {
                generation: opened.header.generation(),
                len: usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX),
                file: Rc::new(opened.file),
                path: opened.path,
            }));
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
        let buf = self.take_buffer(format::GROUP_RECORD_BYTES + bytes)?;
        self.next_group_id += 1;
        self.groups.push_back(Group {
            id: self.next_group_id,
            first_lsn: self.next_lsn,
            done: false,
            buf,
            fill: format::GROUP_RECORD_BYTES, // the GROUP record is written at submission
            offset: self.next_offset,
            segment,
            last_lsn: 0,
            records: 0,
            waiters: Vec::new(),
            submitted: false,
        });
        Ok(())
    }

    /// A group's size is final (submitted, or followed by a newer group): the next group in
    /// its segment starts on the sector after its padded end.
    fn close_group(&mut self, offset: usize, fill: usize, segment: &Rc<Segment>) {
        if self.active.as_ref().is_some_and(|a| Rc::ptr_eq(a, segment)) {
            self.next_offset = self.next_offset.max(offset + format::next_group_offset(fill));
        }
    }

    fn take_buffer(&mut self, bytes: usize) -> Result<GroupBuf, WalError> {
        if bytes <= GROUP_BUFFER_BYTES {
            if let Some(b) = self.free.pop() {
                return Ok(b);
            }
        }
        AlignedBuf::zeroed(format::next_group_offset(bytes).max(GROUP_BUFFER_BYTES))
            .map(|buf| GroupBuf { buf, fixed_index: None })
            .ok_or_else(|| {
                let out_of_memory = std::io::Error::from(std::io::ErrorKind::OutOfMemory);
                WalError::Rejected(Error::io("allocate a WAL group buffer", "", out_of_memory))
            })
    }

    /// Submits queued groups, oldest first, while fewer than [`MAX_WRITES_IN_FLIGHT`] are in
    /// flight.
    pub fn submit(&mut self, ring: &mut Ring) -> Result<(), WalError> {
        let durable_before = self.durable_lsn;
        for i in 0..self.groups.len() {
            if self.in_flight >= MAX_WRITES_IN_FLIGHT {
                break;
            }
            let group = &mut self.groups[i];
            if group.submitted {
                continue;
            }
            if group.fill <= format::GROUP_RECORD_BYTES {
                break; // an empty tail group: nothing to write yet
            }
            let len = format::next_group_offset(group.fill);
            let bytes = group.buf.buf.as_mut_slice();
            format::encode_group_record(
                bytes,
                group.first_lsn,
                group.segment.generation,
                durable_before,
            );
            // Zero the padding: a reused buffer holds an older group's bytes past `fill`.
            bytes[group.fill..len].fill(0);
            let fd = types::Fd(group.segment.file.as_raw_fd());
            let ptr = group.buf.buf.as_ptr();
            let sqe = match group.buf.fixed_index {
                Some(index) => opcode::WriteFixed::new(fd, ptr, len as u32, index)
                    .offset(group.offset as u64)
                    .build(),
                None => opcode::Write::new(fd, ptr, len as u32).offset(group.offset as u64).build(),
            };
            ring.push(&sqe.user_data(TOKEN_WAL_WRITE | (group.id & !TOKEN_KIND_MASK)))
                .map_err(WalError::Poisoned)?;
            group.submitted = true;
            self.in_flight += 1;
            self.counters.group(group.records, len);
            let (offset, fill, segment) = (group.offset, group.fill, group.segment.clone());
            self.close_group(offset, fill, &segment);
        }
        Ok(())
    }

    /// Handles the completion of the group write tagged `token`. Returns what became durable
    /// in LSN order: the completed groups at the front of the queue.
    pub fn on_write_complete(&mut self, token: u64, result: i32) -> Result<GroupDone, WalError> {
        let id = token & !TOKEN_KIND_MASK;
        let Some(index) = self
            .groups
            .iter()
            .position(|g| g.submitted && !g.done && g.id & !TOKEN_KIND_MASK == id)
        else {
            return Ok(GroupDone { last_lsn: self.durable_lsn, waiters: Vec::new() });
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let opts = self.chain.opts();
        let injected = opts
            .faults
            .as_deref()
            .is_some_and(|f| f.take_fdatasync_failure(opts.shard_id as usize));
        let group = &mut self.groups[index];
        let expected = format::next_group_offset(group.fill);
        if result < 0 || injected || result as usize != expected {
            let source = if injected || result >= 0 {
                std::io::Error::from_raw_os_error(libc::EIO)
            } else {
                std::io::Error::from_raw_os_error(-result)
            };
            let err = Error::io("durable WAL write (O_DSYNC)", &group.segment.path, source);
            if let Some(g) = self.groups.remove(index) {
                // Its requests are answered by `take_waiters`, with the shard's poison.
                self.orphans.extend(g.waiters);
                self.recycle(g.buf);
            }
            return Err(WalError::Poisoned(err));
        }
        group.done = true;
        let mut out = GroupDone { last_lsn: self.durable_lsn, waiters: Vec::new() };
        while self.groups.front().is_some_and(|g| g.done) {
            let Some(g) = self.groups.pop_front() else { break };
            debug_assert!(g.last_lsn > self.durable_lsn);
            self.durable_lsn = g.last_lsn;
            out.last_lsn = g.last_lsn;
            out.waiters.extend(g.waiters);
            self.recycle(g.buf);
        }
        Ok(out)
    }

    fn recycle(&mut self, buf: GroupBuf) {
        if buf.buf.len() == GROUP_BUFFER_BYTES {
            self.free.push(buf);
        }
    }

    /// Holds `ack` until every record appended so far is durable (see [`DirectWal::attach`]).
    pub fn request_sync(&mut self, ack: Ack) -> Option<Ack> {
        self.attach(ack)
    }

    /// True while group writes are queued or in flight.
    pub fn busy(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Hands back every waiting request (after the shard was poisoned). A group whose write
    /// is in flight stays queued (its buffer is the kernel's until the completion is reaped);
    /// the rest are dropped.
    pub fn take_waiters(&mut self) -> Vec<Ack> {
        let mut out = std::mem::take(&mut self.orphans);
        for group in &mut self.groups {
            out.append(&mut group.waiters);
        }
        self.groups.retain(|g| g.submitted && !g.done);
        out
    }

    /// Traffic counters.
    pub fn counters(&self) -> &WalCounters {
        &self.counters
    }

    /// Highest LSN known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }
}
