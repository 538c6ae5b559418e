//! The `Normal`/`Async` WAL writer, in two halves.
//!
//! [`MappedLog`] is the half a write needs: the shared mapping of the active segment, the next
//! LSN and the log's progress. It holds no file and needs no storage, so it can live under the
//! shard's commit lock (`commit.rs`), and whoever holds the lock, a caller thread or the shard
//! thread, copies a record straight into the mapping: from there it survives a process crash.
//! [`MappedWal`] is the shard thread's half: the segment chain (segments are created through
//! the shard's storage), the open files, fdatasyncs through the ring at least every
//! `sync_interval`, and durable claims. Each of its calls is handed the log, locked.
//!
//! Every sync moves the append offset to the next aligned boundary, so bytes that may be
//! durable are never written again, and the group that starts there begins with a GROUP
//! record carrying the durable claim known when it is copied. When everything written is
//! durable and nothing new arrives for `sync_interval`, the shard writes a claim on its own (a
//! GROUP record alone, synced by the next timed sync), so at rest a claim covers the whole log;
//! `Urgency::claim_now` does it at once for a clean close.
//!
//! Invariants: `claimed <= durable <= written <= staged` (asserted), and `written == staged`
//! (a record is placed by copying it); a record is copied only when it fits in the active
//! segment, so a copy never fails; a full segment is rolled over by the shard thread only.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::chain::SegmentChain;
use super::format;
use super::reader::Replayed;
use super::record::{self, Body, GROUP_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::{Urgency, WalError, WalOptions, WalProgress};
use super::{TOKEN_KIND_MASK, TOKEN_WAL_SYNC};
use crate::error::Error;
use crate::io::{IoDone, MapSegment, Storage};
use crate::stats::WalCounters;
use crate::version::{Lsn, Ts};

/// Bytes prefaulted ahead of the append offset at a time.
const POPULATE_AHEAD_BYTES: usize = 256 * 1024;

/// The active segment's mapping and where the next record goes.
struct MappedSegmentState {
    map: Box<dyn MapSegment + Send>,
    generation: u32,
    offset: usize,
    populated_to: usize,
    /// Below this the mapping's pages were released (`MapSegment::release`).
    released_to: usize,
    /// Bytes were copied into this segment since its last sync was queued.
    unsynced: bool,
}

/// The half of the mapped WAL a write needs (see the module documentation). `Send`: it lives
/// under the shard's commit lock.
pub struct MappedLog {
    active: Option<MappedSegmentState>,
    next_lsn: Lsn,
    progress: WalProgress,
    /// The active offset is on a fresh aligned boundary: the next record follows a claim.
    fresh: bool,
    /// Reused to encode one record.
    scratch: Vec<u8>,
    counters: WalCounters,
}

impl MappedLog {
    fn new(replayed: &Replayed) -> Self {
        let last = replayed.next_lsn.prev();
        MappedLog {
            active: None,
            next_lsn: replayed.next_lsn,
            progress: WalProgress {
                staged: last,
                written: last,
                durable: last,
                claimed: replayed.claimed.min(last),
            },
            fresh: true,
            scratch: Vec::with_capacity(4096),
            counters: WalCounters::default(),
        }
    }

    /// Room left in the active segment.
    fn room(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.map.len().saturating_sub(a.offset))
    }

    /// Bytes a record of `bytes` needs (a GROUP record first, on a fresh boundary).
    fn need(&self, bytes: usize) -> usize {
        bytes + if self.fresh { GROUP_RECORD_BYTES } else { 0 }
    }

    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// True when a record of `bytes` fits the active segment now.
    pub fn fits(&self, bytes: usize) -> bool {
        self.active.is_some() && self.room() >= self.need(bytes)
    }

    /// Copies a WRITE record for `ops` at `ts` into the active segment and returns its LSN, or
    /// `None` (copying nothing) when it does not fit: the shard thread must roll over first.
    pub fn append(&mut self, ts: Ts, body: Body<'_>) -> Option<Lsn> {
        let bytes = body.record_bytes();
        if self.room() < self.need(bytes) {
            return None;
        }
        self.claim_if_fresh();
        let lsn = self.next_lsn;
        let active = self.active.as_mut()?;
        self.scratch.clear();
        body.encode(&mut self.scratch, lsn, ts, active.generation);
        // The body first, then the header: a kill at any instant leaves a prefix of complete
        // records, never a gap followed by a valid record.
        let copied = active.map.write_record_at(active.offset, &self.scratch, RECORD_HEADER_BYTES);
        assert!(copied, "room was checked");
        active.offset += bytes;
        active.unsynced = true;
        if active.offset + POPULATE_AHEAD_BYTES / 2 > active.populated_to {
            active.map.populate(active.populated_to, POPULATE_AHEAD_BYTES);
            active.populated_to += POPULATE_AHEAD_BYTES;
            // The pages behind the append offset are never written again: out of the
            // process's resident memory with them (they stay in the page cache and the file).
            let done = active.offset / 4096 * 4096;
            if done > active.released_to + POPULATE_AHEAD_BYTES {
                active.map.release(active.released_to, done - active.released_to);
                active.released_to = done;
            }
        }
        self.counters.group(1, bytes);
        self.next_lsn = lsn.next();
        self.progress.staged = lsn;
        self.progress.written = lsn;
        Some(lsn)
    }

    /// On a fresh boundary, copies the GROUP record that opens the group, claiming what is
    /// durable now. The caller checked the room.
    fn claim_if_fresh(&mut self) {
        if !self.fresh {
            return;
        }
        let Some(active) = self.active.as_mut() else { return };
        let mut group = [0u8; GROUP_RECORD_BYTES];
        record::encode_group(&mut group, self.next_lsn, active.generation, self.progress.durable);
        let copied = active.map.write_record_at(active.offset, &group, RECORD_HEADER_BYTES);
        assert!(copied, "room was checked");
        active.offset += GROUP_RECORD_BYTES;
        active.unsynced = true;
        self.progress.claimed = self.progress.claimed.max(self.progress.durable);
        self.fresh = false;
    }

    /// Moves the append offset to the next aligned boundary: what follows starts a new group.
    fn align(&mut self) {
        if let Some(a) = self.active.as_mut().filter(|_| !self.fresh) {
            a.offset = format::next_group_offset(a.offset).min(a.map.len());
        }
        self.fresh = true;
    }

    /// How far the log has come.
    pub fn progress(&self) -> WalProgress {
        self.progress
    }

    /// Traffic counters.
    pub fn counters(&self) -> &WalCounters {
        &self.counters
    }
}

/// An fdatasync covering every record up to `lsn` in its segment. Syncs complete in any
/// order; `durable` advances over the completed prefix only.
struct PendingSync<S: Storage> {
    id: u64,
    lsn: Lsn,
    sequence: u64,
    path: PathBuf,
    file: S::File,
    submitted: bool,
    done: bool,
}

/// The active segment's file, kept by the shard thread for its fdatasyncs.
struct ActiveFile<S: Storage> {
    file: S::File,
    path: PathBuf,
    sequence: u64,
}

/// The shard thread's half of the mapped WAL (see the module documentation).
pub struct MappedWal<S: Storage> {
    chain: SegmentChain,
    active: Option<ActiveFile<S>>,
    syncs: VecDeque<PendingSync<S>>,
    next_sync_id: u64,
    last_sync: Instant,
    /// When `durable` last advanced (a claim is written on its own `sync_interval` after).
    durable_at: Instant,
    /// When the shard last looked at the log: callers write without waking the shard, so it
    /// looks again at least every `sync_interval`.
    looked_at: Instant,
}

impl<S: Storage> MappedWal<S> {
    /// Both halves of a writer that continues after `replayed`.
    pub fn new(opts: WalOptions, replayed: &Replayed, now: Instant) -> (Self, MappedLog) {
        let wal = MappedWal {
            chain: SegmentChain::new(opts, replayed.tail.clone(), replayed.next_sequence),
            active: None,
            syncs: VecDeque::new(),
            next_sync_id: 0,
            last_sync: now,
            durable_at: now,
            looked_at: now,
        };
        (wal, MappedLog::new(replayed))
    }

    fn interval(&self) -> Duration {
        self.chain.opts().sync_interval
    }

    /// Retires the active segment (queueing a sync of what it holds) and maps the next one.
    pub fn roll_over(&mut self, io: &mut S, log: &mut MappedLog) -> Result<(), WalError> {
        if let (Some(old), Some(mapped)) = (self.active.take(), log.active.take()) {
            // The periodic sync covers only the active segment: queue one for the retired
            // segment (submitted by the next `submit`, through the ring, so the loop does not
            // stall on a segment's worth of dirty pages).
            if mapped.unsynced {
                self.queue_sync(log.progress.written, &old);
            }
        }
        let opened = self.chain.open_next(io, log.next_lsn)?;
        let len = usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX);
        let mut map = io
            .map(&opened.file, len)
            .map_err(|e| WalError::Rejected(Error::io("map WAL segment", &opened.path, e)))?;
        map.populate(opened.offset, POPULATE_AHEAD_BYTES);
        log.active = Some(MappedSegmentState {
            map: Box::new(map),
            generation: opened.header.generation(),
            offset: opened.offset,
            populated_to: opened.offset + POPULATE_AHEAD_BYTES,
            released_to: 0,
            unsynced: false,
        });
        self.active = Some(ActiveFile {
            file: opened.file,
            path: opened.path,
            sequence: opened.header.sequence,
        });
        log.fresh = true;
        Ok(())
    }

    /// Creates (or reopens) the segment the next record goes to.
    pub fn prepare(&mut self, io: &mut S, log: &mut MappedLog) -> Result<(), WalError> {
        if log.active.is_none() {
            self.roll_over(io, log)?;
        }
        Ok(())
    }

    fn queue_sync(&mut self, lsn: Lsn, segment: &ActiveFile<S>) {
        self.next_sync_id += 1;
        self.syncs.push_back(PendingSync {
            id: self.next_sync_id,
            lsn,
            sequence: segment.sequence,
            path: segment.path.clone(),
            file: segment.file.clone(),
            submitted: false,
            done: false,
        });
    }

    /// Writes a durable claim on its own when everything written is durable, nothing else is
    /// pending, and the newest claim is older (at once with `now_please`, else after one
    /// `sync_interval` without new writes).
    fn maybe_claim(
        &mut self,
        io: &mut S,
        log: &mut MappedLog,
        now: Instant,
        now_please: bool,
    ) -> Result<(), WalError> {
        let p = log.progress;
        let settled = p.durable > p.claimed && p.written == p.durable;
        let due = now_please || now.saturating_duration_since(self.durable_at) >= self.interval();
        if !settled || !due || !self.syncs.is_empty() {
            return Ok(());
        }
        log.align();
        if log.room() < GROUP_RECORD_BYTES {
            if let Err(e) = self.roll_over(io, log) {
                self.durable_at = now; // try again one interval later, not in a spin
                return Err(e);
            }
        }
        log.claim_if_fresh();
        log.counters.bytes += GROUP_RECORD_BYTES as u64;
        Ok(())
    }

    /// Queues an fdatasync of the active segment when bytes await one and either `now_please`
    /// or the interval has passed. At most one sync of the active segment is in flight.
    fn maybe_sync(&mut self, log: &mut MappedLog, now: Instant, now_please: bool) {
        let due = now_please || now.saturating_duration_since(self.last_sync) >= self.interval();
        let Some(mapped) = log.active.as_ref() else { return };
        let Some(active) = self.active.take() else { return };
        let busy = self.syncs.iter().any(|s| s.sequence == active.sequence && !s.done);
        if mapped.unsynced && !busy && due {
            self.queue_sync(log.progress.written, &active);
            // What follows starts on a fresh boundary: bytes this sync makes durable are never
            // written again.
            log.align();
            if let Some(m) = log.active.as_mut() {
                m.unsynced = false;
            }
            self.last_sync = now;
        }
        self.active = Some(active);
    }

    /// Submits the I/O that is due: timed or urgent syncs, durable claims.
    pub fn submit(
        &mut self,
        io: &mut S,
        log: &mut MappedLog,
        now: Instant,
        urgency: Urgency,
    ) -> Result<(), WalError> {
        self.looked_at = now;
        self.maybe_claim(io, log, now, urgency.claim_now)?;
        self.maybe_sync(log, now, urgency.sync_now || urgency.claim_now);
        for sync in self.syncs.iter_mut().filter(|s| !s.submitted) {
            let token = TOKEN_WAL_SYNC | (sync.id & !TOKEN_KIND_MASK);
            io.submit_sync(&sync.file, token).map_err(WalError::Poisoned)?;
            sync.submitted = true;
        }
        Ok(())
    }

    /// Handles a finished fdatasync.
    pub fn on_completion(
        &mut self,
        io: &mut S,
        log: &mut MappedLog,
        done: IoDone,
    ) -> Result<(), WalError> {
        let id = done.token & !TOKEN_KIND_MASK;
        let Some(sync) = self.syncs.iter_mut().find(|s| s.submitted && !s.done && s.id == id)
        else {
            return Ok(());
        };
        if done.result < 0 {
            let err = std::io::Error::from_raw_os_error(-done.result);
            return Err(WalError::Poisoned(Error::io("fdatasync WAL segment", &sync.path, err)));
        }
        sync.done = true;
        log.counters.fdatasyncs += 1;
        while self.syncs.front().is_some_and(|s| s.done) {
            if let Some(s) = self.syncs.pop_front() {
                if s.lsn > log.progress.durable {
                    log.progress.durable = s.lsn;
                    self.durable_at = io.now();
                }
            }
        }
        log.progress.check();
        Ok(())
    }

    /// The next time something is due: a timed sync or claim, and in any case a look at the
    /// log one `sync_interval` after the last (callers copy records without waking the shard).
    pub fn next_deadline(&self, log: &MappedLog) -> Option<Instant> {
        let unsynced = log.active.as_ref().is_some_and(|a| a.unsynced);
        let sync = unsynced.then(|| self.last_sync + self.interval());
        let p = log.progress;
        let claim = (p.durable > p.claimed && p.written == p.durable && self.syncs.is_empty())
            .then(|| self.durable_at + self.interval());
        let look = self.looked_at + self.interval();
        [sync, claim].into_iter().flatten().chain([look]).min()
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.syncs.is_empty()
    }
}
