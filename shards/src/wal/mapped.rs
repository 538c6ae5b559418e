//! The `Normal`/`Async` WAL writer: records are encoded into a stage during a loop turn, copied
//! into a shared mapping of the segment once per turn (`publish`), and made durable by an
//! fdatasync through the ring at least every `sync_interval`.
//!
//! Every sync moves the append offset to the next aligned boundary, so bytes that may be
//! durable are never written again, and the group that starts there begins with a GROUP
//! record carrying the durable claim known when it is copied. When everything written is
//! durable and nothing new arrives for `sync_interval`, the writer writes a claim on its own
//! (a GROUP record alone, synced by the next timed sync), so at rest a claim covers the whole
//! log; `Urgency::claim_now` does it at once for a clean close.
//!
//! Shard-local. Invariants: `claimed <= durable <= written <= staged` (asserted); a record is
//! staged only after it is known to fit in the active segment, so publishing cannot fail.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::chain::SegmentChain;
use super::format::{self, SegmentHeader};
use super::reader::Replayed;
use super::record::{self, WriteOp, GROUP_RECORD_BYTES, RECORD_HEADER_BYTES};
use super::{Urgency, WalError, WalOptions, WalProgress, WalWriter};
use super::{TOKEN_KIND_MASK, TOKEN_WAL_SYNC};
use crate::error::Error;
use crate::io::{IoDone, MapSegment, Storage};
use crate::stats::WalCounters;
use crate::version::{Lsn, Ts};

/// Bytes prefaulted ahead of the append offset at a time.
const POPULATE_AHEAD_BYTES: usize = 256 * 1024;

struct Active<S: Storage> {
    file: S::File,
    path: PathBuf,
    header: SegmentHeader,
    map: S::Map,
    offset: usize,
    populated_to: usize,
    /// Bytes were copied into this segment since its last sync was queued.
    unsynced: bool,
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

/// WAL writer for `Normal` and `Async`.
pub struct MappedWal<S: Storage> {
    chain: SegmentChain,
    active: Option<Active<S>>,
    next_lsn: Lsn,
    stage: Vec<u8>,
    /// Start offset of each record in `stage` (a GROUP record first when `stage_claims`).
    stage_starts: Vec<usize>,
    /// The stage begins with a GROUP record whose claim is filled in at publication.
    stage_claims: bool,
    progress: WalProgress,
    /// The active offset is on a fresh aligned boundary: the next group starts with a claim.
    fresh: bool,
    syncs: VecDeque<PendingSync<S>>,
    next_sync_id: u64,
    last_sync: Instant,
    /// When `durable` last advanced (a claim is written on its own `sync_interval` after).
    durable_at: Instant,
    counters: WalCounters,
}

impl<S: Storage> MappedWal<S> {
    /// A writer that continues after `replayed`.
    pub fn new(opts: WalOptions, replayed: &Replayed, now: Instant) -> Self {
        let last = replayed.next_lsn.prev();
        MappedWal {
            chain: SegmentChain::new(opts, replayed.tail.clone(), replayed.next_sequence),
            active: None,
            next_lsn: replayed.next_lsn,
            stage: Vec::with_capacity(64 * 1024),
            stage_starts: Vec::with_capacity(256),
            stage_claims: false,
            progress: WalProgress {
                staged: last,
                written: last,
                durable: last,
                claimed: replayed.claimed.min(last),
            },
            fresh: true,
            syncs: VecDeque::new(),
            next_sync_id: 0,
            last_sync: now,
            durable_at: now,
            counters: WalCounters::default(),
        }
    }

    fn interval(&self) -> Duration {
        self.chain.opts().sync_interval
    }

    fn roll_over(&mut self, io: &mut S) -> Result<(), WalError> {
        self.publish(io);
        if let Some(old) = self.active.take() {
            // The periodic sync covers only the active segment: queue one for the retired
            // segment (submitted by the next `submit`, through the ring, so the loop does not
            // stall on a segment's worth of dirty pages).
            if old.unsynced {
                self.queue_sync(self.progress.written, &old);
            }
        }
        let opened = self.chain.open_next(io, self.next_lsn)?;
        let len = usize::try_from(opened.header.segment_bytes).unwrap_or(usize::MAX);
        let mut map = io
            .map(&opened.file, len)
            .map_err(|e| WalError::Rejected(Error::io("map WAL segment", &opened.path, e)))?;
        map.populate(opened.offset, POPULATE_AHEAD_BYTES);
        self.active = Some(Active {
            file: opened.file,
            path: opened.path,
            header: opened.header,
            map,
            offset: opened.offset,
            populated_to: opened.offset + POPULATE_AHEAD_BYTES,
            unsynced: false,
        });
        self.fresh = true;
        Ok(())
    }

    /// Room left in the active segment after what is staged.
    fn room(&self) -> usize {
        self.active.as_ref().map_or(0, |a| a.map.len().saturating_sub(a.offset + self.stage.len()))
    }

    /// Bytes a record of `bytes` needs in the stage (a GROUP record first, on a fresh start).
    fn need(&self, bytes: usize) -> usize {
        let claim = if self.stage.is_empty() && self.fresh { GROUP_RECORD_BYTES } else { 0 };
        claim + bytes
    }

    fn stage_claim(&mut self) {
        if self.stage.is_empty() && self.fresh {
            self.stage.resize(GROUP_RECORD_BYTES, 0);
            self.stage_starts.push(0);
            self.stage_claims = true;
        }
    }

    fn queue_sync(&mut self, lsn: Lsn, segment: &Active<S>) {
        self.next_sync_id += 1;
        self.syncs.push_back(PendingSync {
            id: self.next_sync_id,
            lsn,
            sequence: segment.header.sequence,
            path: segment.path.clone(),
            file: segment.file.clone(),
            submitted: false,
            done: false,
        });
    }

    /// Writes a durable claim on its own when everything written is durable, nothing else is
    /// pending, and the newest claim is older (at once with `now_please`, else after one
    /// `sync_interval` without new writes).
    fn maybe_claim(&mut self, io: &mut S, now: Instant, now_please: bool) -> Result<(), WalError> {
        let p = self.progress;
        let settled = p.durable > p.claimed && p.written == p.durable && self.stage.is_empty();
        let due = now_please || now.saturating_duration_since(self.durable_at) >= self.interval();
        if !settled || !due || !self.syncs.is_empty() {
            return Ok(());
        }
        if let Some(a) = self.active.as_mut().filter(|_| !self.fresh) {
            a.offset = format::next_group_offset(a.offset).min(a.map.len());
            self.fresh = true;
        }
        if self.room() < GROUP_RECORD_BYTES {
            if let Err(e) = self.roll_over(io) {
                self.durable_at = now; // try again one interval later, not in a spin
                return Err(e);
            }
        }
        self.stage_claim();
        self.publish(io);
        Ok(())
    }

    /// Queues an fdatasync of the active segment when bytes await one and either `now_please`
    /// or the interval has passed. At most one sync of the active segment is in flight.
    fn maybe_sync(&mut self, now: Instant, now_please: bool) {
        let due = now_please || now.saturating_duration_since(self.last_sync) >= self.interval();
        let Some(active) = self.active.as_ref() else { return };
        let busy = self.syncs.iter().any(|s| s.sequence == active.header.sequence && !s.done);
        if !active.unsynced || busy || !due {
            return;
        }
        let lsn = self.progress.written;
        if let Some(active) = self.active.take() {
            self.queue_sync(lsn, &active);
            self.active = Some(active);
        }
        if let Some(a) = self.active.as_mut() {
            // What follows starts on a fresh boundary: bytes this sync makes durable are never
            // written again.
            a.offset = format::next_group_offset(a.offset).min(a.map.len());
            a.unsynced = false;
        }
        self.fresh = true;
        self.last_sync = now;
    }
}

impl<S: Storage> WalWriter<S> for MappedWal<S> {
    fn prepare(&mut self, io: &mut S) -> Result<(), WalError> {
        if self.active.is_none() {
            self.roll_over(io)?;
        }
        Ok(())
    }

    /// Rolls to a new segment first when the record would not fit in the active one.
    fn append(&mut self, io: &mut S, ts: Ts, ops: &[WriteOp]) -> Result<Lsn, WalError> {
        let bytes = record::write_record_bytes(ops);
        if self.room() < self.need(bytes) {
            self.roll_over(io)?;
            if self.room() < self.need(bytes) {
                return Err(WalError::Rejected(Error::LimitExceeded {
                    what: "WAL record bytes",
                    actual: bytes as u64,
                    max: self.chain.opts().segment_bytes,
                }));
            }
        }
        self.stage_claim();
        let lsn = self.next_lsn;
        let generation = self.active.as_ref().map_or(0, |a| a.header.generation());
        self.stage_starts.push(self.stage.len());
        record::encode_write(&mut self.stage, lsn, ts, generation, ops);
        self.next_lsn = lsn.next();
        self.progress.staged = lsn;
        Ok(lsn)
    }

    /// Copies the stage into the mapping: from here the records survive a process crash.
    fn publish(&mut self, _io: &mut S) {
        let Some(active) = self.active.as_mut() else { return };
        if self.stage.is_empty() {
            return;
        }
        let generation = active.header.generation();
        if self.stage_claims {
            let first = self.progress.written.next();
            record::encode_group(&mut self.stage, first, generation, self.progress.durable);
            self.progress.claimed = self.progress.claimed.max(self.progress.durable);
        }
        // Record by record, each header after its body: a kill at any instant leaves a prefix
        // of complete records, never a gap followed by a valid record.
        let ends = self.stage_starts.iter().skip(1).copied().chain([self.stage.len()]);
        for (start, end) in self.stage_starts.iter().copied().zip(ends) {
            let rec = &self.stage[start..end];
            let copied =
                active.map.write_record_at(active.offset + start, rec, RECORD_HEADER_BYTES);
            assert!(copied, "the stage was sized to fit the segment");
        }
        active.offset += self.stage.len();
        active.unsynced = true;
        let records = self.stage_starts.len() - usize::from(self.stage_claims);
        self.counters.group(records, self.stage.len());
        if active.offset + POPULATE_AHEAD_BYTES / 2 > active.populated_to {
            active.map.populate(active.populated_to, POPULATE_AHEAD_BYTES);
            active.populated_to += POPULATE_AHEAD_BYTES;
        }
        self.stage.clear();
        self.stage_starts.clear();
        self.stage_claims = false;
        self.fresh = false;
        self.progress.written = self.progress.staged;
        self.progress.check();
    }

    fn submit(&mut self, io: &mut S, now: Instant, urgency: Urgency) -> Result<(), WalError> {
        self.publish(io);
        self.maybe_claim(io, now, urgency.claim_now)?;
        self.maybe_sync(now, urgency.sync_now || urgency.claim_now);
        for sync in self.syncs.iter_mut().filter(|s| !s.submitted) {
            let token = TOKEN_WAL_SYNC | (sync.id & !TOKEN_KIND_MASK);
            io.submit_sync(&sync.file, token).map_err(WalError::Poisoned)?;
            sync.submitted = true;
        }
        Ok(())
    }

    fn on_completion(&mut self, io: &mut S, done: IoDone) -> Result<(), WalError> {
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
        self.counters.fdatasyncs += 1;
        while self.syncs.front().is_some_and(|s| s.done) {
            if let Some(s) = self.syncs.pop_front() {
                if s.lsn > self.progress.durable {
                    self.progress.durable = s.lsn;
                    self.durable_at = io.now();
                }
            }
        }
        self.progress.check();
        Ok(())
    }

    fn progress(&self) -> WalProgress {
        self.progress
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sync =
            self.active.as_ref().filter(|a| a.unsynced).map(|_| self.last_sync + self.interval());
        let p = self.progress;
        let claim = (p.durable > p.claimed && p.written == p.durable && self.syncs.is_empty())
            .then(|| self.durable_at + self.interval());
        match (sync, claim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        self.stage.is_empty() && self.syncs.is_empty()
    }

    fn counters(&self) -> &WalCounters {
        &self.counters
    }
}
