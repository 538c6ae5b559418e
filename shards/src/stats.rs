//! Per-shard statistics: operation counts and latencies inside the engine, ingress depth, WAL
//! traffic and group sizes, and the stall detector.
//!
//! Shard-local: a `ShardStats` is owned and updated by its shard thread only (no atomics, no
//! sharing); `db.stats()` asks each shard for a copy through its ingress queue. Latencies are
//! measured from the moment the shard takes a request off its queue to the moment it
//! acknowledges it, in nanoseconds, with hdrhistogram (3 significant digits).

use std::time::Duration;

use hdrhistogram::Histogram;

/// A distribution of recorded values (latencies in ns, or counts): the crate's own type, so
/// the public statistics do not depend on how they are kept (an hdrhistogram at 3 significant
/// digits inside).
#[derive(Clone, Debug)]
pub struct Distribution(Histogram<u64>);

impl Distribution {
    fn bounded(high: u64) -> Self {
        Distribution(bounded(high))
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        self.0.min()
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.0.max()
    }

    /// The mean (0 when empty).
    pub fn mean(&self) -> f64 {
        self.0.mean()
    }

    /// The value at quantile `q` (0.0 to 1.0), e.g. `0.99` for the 99th percentile.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    fn record(&mut self, v: u64) {
        let _ = self.0.record(v.clamp(1, self.0.high()));
    }

    fn add(&mut self, other: &Distribution) {
        let _ = self.0.add(&other.0);
    }

    /// `self` minus `earlier`; `self` whole when they cannot be subtracted.
    fn minus(&self, earlier: &Distribution) -> Distribution {
        let mut h = self.0.clone();
        if h.subtract(&earlier.0).is_err() {
            h = self.0.clone();
        }
        Distribution(h)
    }
}

/// What kind of request a latency belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// A single put.
    Put,
    /// A single delete.
    Delete,
    /// One shard's part of a `WriteBatch`.
    Batch,
    /// A `sync()` / `flush()`.
    Sync,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [OpKind::Put, OpKind::Delete, OpKind::Batch, OpKind::Sync];

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::Batch => "batch",
            OpKind::Sync => "sync",
        }
    }

    fn index(self) -> usize {
        match self {
            OpKind::Put => 0,
            OpKind::Delete => 1,
            OpKind::Batch => 2,
            OpKind::Sync => 3,
        }
    }
}

/// A loop turn that took longer than the stall threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// How long the turn took.
    pub duration: Duration,
    /// The phase of the turn that took longest.
    pub phase: &'static str,
    /// How long that phase took.
    pub phase_duration: Duration,
}

/// How many stalls a shard remembers (the most recent ones).
pub const STALLS_KEPT: usize = 16;

/// What a WAL writer counts; kept by the writer, copied into [`ShardStats`].
#[derive(Clone, Debug)]
pub struct WalCounters {
    /// Bytes handed to the kernel (records, padding, group headers).
    pub bytes: u64,
    /// Records written.
    pub records: u64,
    /// Group writes.
    pub group_writes: u64,
    /// Records per group write.
    pub records_per_group: Distribution,
    /// fdatasyncs completed.
    pub fdatasyncs: u64,
}

impl Default for WalCounters {
    fn default() -> Self {
        WalCounters {
            bytes: 0,
            records: 0,
            group_writes: 0,
            records_per_group: Distribution::bounded(COUNT_HIGH),
            fdatasyncs: 0,
        }
    }
}

impl WalCounters {
    /// Records one group write.
    pub fn group(&mut self, records: usize, bytes: usize) {
        self.group_writes += 1;
        self.records += records as u64;
        self.bytes += bytes as u64;
        if records > 0 {
            self.records_per_group.record(records as u64);
        }
    }
}

/// What the shard's recovery at open cut, set aside or removed (`wal::reader`): all zero after
/// a clean close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Records replayed from the WAL.
    pub records_replayed: u64,
    /// Torn tails cut (0 or 1 per open).
    pub tails_cut: u64,
    /// Bytes thrown away with them.
    pub bytes_cut: u64,
    /// Segments set aside (renamed `*.cut`) because they lay past a cut.
    pub segments_set_aside: u64,
    /// Files of interrupted segment creations removed.
    pub temp_files_removed: u64,
    /// Segments whose tail an earlier open had cut.
    pub earlier_cuts: u64,
}

impl RecoveryStats {
    fn add(&mut self, other: &RecoveryStats) {
        self.records_replayed += other.records_replayed;
        self.tails_cut += other.tails_cut;
        self.bytes_cut += other.bytes_cut;
        self.segments_set_aside += other.segments_set_aside;
        self.temp_files_removed += other.temp_files_removed;
        self.earlier_cuts += other.earlier_cuts;
    }
}

/// What the shard's storage below the memtable did: freezes, flushes into the tree, WAL
/// segments removed behind the checkpoints, and the tree's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlushStats {
    /// Memtables frozen (they reached `memtable_bytes`).
    pub freezes: u64,
    /// Frozen memtables merged into the tree.
    pub flushes: u64,
    /// Keys (values and removals) the flushes merged.
    pub keys_flushed: u64,
    /// Time spent flushing (on the shard thread).
    pub flush_time: Duration,
    /// WAL segments removed because both superblocks' checkpoints passed them.
    pub segments_removed: u64,
    /// Writes that waited because the memtable was at twice its budget (a flush was behind).
    pub write_stalls: u64,
    /// Keys in the tree (gauge).
    pub tree_keys: u64,
    /// Pages in the tree file's used range (gauge).
    pub tree_pages: u64,
    /// Of them, free for reuse (gauge).
    pub tree_free_pages: u64,
}

impl FlushStats {
    fn add(&mut self, o: &FlushStats) {
        self.freezes += o.freezes;
        self.flushes += o.flushes;
        self.keys_flushed += o.keys_flushed;
        self.flush_time += o.flush_time;
        self.segments_removed += o.segments_removed;
        self.write_stalls += o.write_stalls;
        self.tree_keys += o.tree_keys;
        self.tree_pages += o.tree_pages;
        self.tree_free_pages += o.tree_free_pages;
    }

    fn since(&self, e: &FlushStats) -> FlushStats {
        FlushStats {
            freezes: self.freezes.saturating_sub(e.freezes),
            flushes: self.flushes.saturating_sub(e.flushes),
            keys_flushed: self.keys_flushed.saturating_sub(e.keys_flushed),
            flush_time: self.flush_time.saturating_sub(e.flush_time),
            segments_removed: self.segments_removed.saturating_sub(e.segments_removed),
            write_stalls: self.write_stalls.saturating_sub(e.write_stalls),
            ..*self
        }
    }
}

/// One shard's statistics.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard.
    pub shard_id: usize,
    /// Requests handled, per kind.
    pub ops: [u64; 4],
    /// Engine-side latency per kind, ns: for requests the shard thread handles, queue pop →
    /// acknowledgement; for writes a caller applies under the commit lock (`Normal`/`Async`),
    /// the call → acknowledgement, the wait for the lock included, sampled one write in
    /// `LATENCY_SAMPLE_EVERY` (8) per thread (the counts in `ops` are exact).
    pub latency: [Distribution; 4],
    /// Requests drained per loop turn that found any.
    pub drain_depth: Distribution,
    /// Requests that failed (rejected, poisoned, closed), all kinds.
    pub errors: u64,
    /// WAL bytes handed to the kernel (records, padding and group headers).
    pub wal_bytes: u64,
    /// WAL records written (one per put, delete or batch part).
    pub wal_records: u64,
    /// Group writes: `Sync` durable writes; `Normal`/`Async` copies into the mapping (one per
    /// record: each caller copies its own).
    pub wal_group_writes: u64,
    /// Records per group write.
    pub wal_records_per_group: Distribution,
    /// fdatasyncs completed (`Normal`/`Async`; in `Sync` each group write is itself durable).
    pub fdatasyncs: u64,
    /// Loop turns run.
    pub turns: u64,
    /// Turns that took longer than the stall threshold.
    pub stall_count: u64,
    /// The most recent stalls, oldest first (at most [`STALLS_KEPT`]).
    pub recent_stalls: Vec<Stall>,
    /// Tree page lookups the shard cache answered (reads, scans and flushes).
    pub cache_hits: u64,
    /// Tree page lookups that read the file.
    pub cache_misses: u64,
    /// Bytes the shard cache holds (gauge).
    pub cache_bytes: u64,
    /// Approximate bytes held by the memtables (the active one and one being flushed).
    pub memtable_bytes: u64,
    /// Versions held by the memtables (the active one and one being flushed).
    pub memtable_versions: u64,
    /// What recovery did when the shard opened.
    pub recovery: RecoveryStats,
    /// Freezes, flushes, WAL removal, tree size.
    pub flush: FlushStats,
}

/// A histogram of `1..=high` at 3 significant digits.
#[allow(clippy::expect_used)]
fn bounded(high: u64) -> Histogram<u64> {
    // Invariant: the bounds are constants with low = 1 and high >= 2, and 3 significant
    // digits is within hdrhistogram's 0..=5, so construction cannot fail.
    Histogram::new_with_bounds(1, high, 3).expect("constant histogram bounds are valid")
}

/// Largest latency kept: 1 h, in ns.
const LATENCY_HIGH_NS: u64 = 3_600_000_000_000;
/// Largest count per event kept: 16 M.
const COUNT_HIGH: u64 = 1 << 24;

fn latency_distribution() -> Distribution {
    Distribution::bounded(LATENCY_HIGH_NS)
}

impl ShardStats {
    /// Empty statistics for `shard_id`.
    pub fn new(shard_id: usize) -> Self {
        ShardStats {
            shard_id,
            ops: [0; 4],
            latency: std::array::from_fn(|_| latency_distribution()),
            drain_depth: Distribution::bounded(COUNT_HIGH),
            errors: 0,
            wal_bytes: 0,
            wal_records: 0,
            wal_group_writes: 0,
            wal_records_per_group: Distribution::bounded(COUNT_HIGH),
            fdatasyncs: 0,
            turns: 0,
            stall_count: 0,
            recent_stalls: Vec::new(),
            cache_hits: 0,
            cache_misses: 0,
            cache_bytes: 0,
            memtable_bytes: 0,
            memtable_versions: 0,
            recovery: RecoveryStats::default(),
            flush: FlushStats::default(),
        }
    }

    /// Requests of `kind` handled.
    pub fn ops(&self, kind: OpKind) -> u64 {
        self.ops[kind.index()]
    }

    /// Engine-side latency histogram of `kind`.
    pub fn latency(&self, kind: OpKind) -> &Distribution {
        &self.latency[kind.index()]
    }

    /// Records one acknowledged request.
    pub fn record_op(&mut self, kind: OpKind, elapsed: Duration, ok: bool) {
        self.ops[kind.index()] += 1;
        if !ok {
            self.errors += 1;
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency[kind.index()].record(ns);
    }

    /// Records a request whose latency may not have been measured (`None`: counted only; the
    /// caller-applied writes sample one in `LATENCY_SAMPLE_EVERY`).
    pub fn record_op_sampled(&mut self, kind: OpKind, elapsed: Option<Duration>, ok: bool) {
        match elapsed {
            Some(elapsed) => self.record_op(kind, elapsed, ok),
            None => {
                self.ops[kind.index()] += 1;
                if !ok {
                    self.errors += 1;
                }
            }
        }
    }

    /// Adds the requests `other` recorded (counts, errors, latencies): the writes callers
    /// applied under the commit lock are recorded there, apart from the shard's own.
    pub fn add_ops(&mut self, other: &ShardStats) {
        for k in 0..self.ops.len() {
            self.ops[k] += other.ops[k];
            // Same bounds on both sides, so adding cannot fail.
            let _ = self.latency[k].0.add(&other.latency[k].0);
        }
        self.errors += other.errors;
    }

    /// Records a loop turn that drained `n` requests.
    pub fn record_drain(&mut self, n: usize) {
        if n > 0 {
            self.drain_depth.record(n as u64);
        }
    }

    /// Copies the WAL writer's counters in.
    pub fn set_wal(&mut self, wal: &WalCounters) {
        self.wal_bytes = wal.bytes;
        self.wal_records = wal.records;
        self.wal_group_writes = wal.group_writes;
        self.wal_records_per_group = wal.records_per_group.clone();
        self.fdatasyncs = wal.fdatasyncs;
    }

    /// Records what recovery did.
    pub fn set_recovery(&mut self, report: &crate::wal::reader::RecoveryReport) {
        self.recovery = RecoveryStats {
            records_replayed: report.records_applied,
            tails_cut: u64::from(report.cut.is_some()),
            bytes_cut: report.cut.as_ref().map_or(0, |c| c.bytes),
            segments_set_aside: report.set_aside.len() as u64,
            temp_files_removed: report.temp_files_removed,
            earlier_cuts: report.earlier_cuts,
        };
    }

    /// Records a stall.
    pub fn record_stall(&mut self, stall: Stall) {
        self.stall_count += 1;
        if self.recent_stalls.len() == STALLS_KEPT {
            self.recent_stalls.remove(0);
        }
        self.recent_stalls.push(stall);
    }

    /// Adds `other` into `self` (for whole-database totals). The shard id stays `self`'s.
    pub fn merge(&mut self, other: &ShardStats) {
        for i in 0..4 {
            self.ops[i] += other.ops[i];
            self.latency[i].add(&other.latency[i]);
        }
        self.drain_depth.add(&other.drain_depth);
        self.wal_records_per_group.add(&other.wal_records_per_group);
        self.errors += other.errors;
        self.wal_bytes += other.wal_bytes;
        self.wal_records += other.wal_records;
        self.wal_group_writes += other.wal_group_writes;
        self.fdatasyncs += other.fdatasyncs;
        self.turns += other.turns;
        self.stall_count += other.stall_count;
        self.recent_stalls.extend(other.recent_stalls.iter().cloned());
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.cache_bytes += other.cache_bytes;
        self.memtable_bytes += other.memtable_bytes;
        self.memtable_versions += other.memtable_versions;
        self.recovery.add(&other.recovery);
        self.flush.add(&other.flush);
    }
}

impl ShardStats {
    /// What happened between `earlier` and `self`, two snapshots of the same shard: counters
    /// and histograms are differences, the memtable gauges are `self`'s, and the stalls kept
    /// are those recorded after `earlier` (as far as [`STALLS_KEPT`] remembers). A histogram
    /// that cannot be subtracted (snapshots of different shards) is kept whole.
    pub fn since(&self, earlier: &ShardStats) -> ShardStats {
        let minus = |later: &Distribution, before: &Distribution| later.minus(before);
        let new_stalls = self.stall_count.saturating_sub(earlier.stall_count);
        let keep = usize::try_from(new_stalls).unwrap_or(usize::MAX).min(self.recent_stalls.len());
        ShardStats {
            shard_id: self.shard_id,
            ops: std::array::from_fn(|i| self.ops[i].saturating_sub(earlier.ops[i])),
            latency: std::array::from_fn(|i| minus(&self.latency[i], &earlier.latency[i])),
            drain_depth: minus(&self.drain_depth, &earlier.drain_depth),
            errors: self.errors.saturating_sub(earlier.errors),
            wal_bytes: self.wal_bytes.saturating_sub(earlier.wal_bytes),
            wal_records: self.wal_records.saturating_sub(earlier.wal_records),
            wal_group_writes: self.wal_group_writes.saturating_sub(earlier.wal_group_writes),
            wal_records_per_group: minus(
                &self.wal_records_per_group,
                &earlier.wal_records_per_group,
            ),
            fdatasyncs: self.fdatasyncs.saturating_sub(earlier.fdatasyncs),
            turns: self.turns.saturating_sub(earlier.turns),
            stall_count: new_stalls,
            recent_stalls: self.recent_stalls[self.recent_stalls.len() - keep..].to_vec(),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
            cache_misses: self.cache_misses.saturating_sub(earlier.cache_misses),
            cache_bytes: self.cache_bytes,
            memtable_bytes: self.memtable_bytes,
            memtable_versions: self.memtable_versions,
            recovery: self.recovery,
            flush: self.flush.since(&earlier.flush),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges() {
        let mut a = ShardStats::new(0);
        a.record_op(OpKind::Put, Duration::from_micros(3), true);
        a.record_op(OpKind::Put, Duration::from_micros(5), false);
        let mut wal = WalCounters::default();
        wal.group(2, 8192);
        a.set_wal(&wal);
        let mut b = ShardStats::new(1);
        b.record_op(OpKind::Sync, Duration::from_millis(1), true);
        b.record_stall(Stall {
            duration: Duration::from_millis(20),
            phase: "ingress",
            phase_duration: Duration::from_millis(19),
        });
        a.merge(&b);
        assert_eq!((a.ops(OpKind::Put), a.ops(OpKind::Sync), a.errors), (2, 1, 1));
        assert_eq!(a.latency(OpKind::Put).len(), 2);
        assert_eq!((a.wal_group_writes, a.wal_records, a.wal_bytes), (1, 2, 8192));
        assert_eq!((a.stall_count, a.recent_stalls.len()), (1, 1));
    }

    #[test]
    fn keeps_only_recent_stalls() {
        let mut s = ShardStats::new(0);
        for i in 0..(STALLS_KEPT as u64 + 5) {
            s.record_stall(Stall {
                duration: Duration::from_millis(i),
                phase: "gc",
                phase_duration: Duration::ZERO,
            });
        }
        assert_eq!(s.stall_count, STALLS_KEPT as u64 + 5);
        assert_eq!(s.recent_stalls.len(), STALLS_KEPT);
        assert_eq!(s.recent_stalls[0].duration, Duration::from_millis(5));
    }

    #[test]
    fn since_is_the_difference_of_two_snapshots() {
        let mut s = ShardStats::new(1);
        s.record_op(OpKind::Put, Duration::from_micros(3), true);
        s.record_drain(2);
        s.memtable_versions = 1;
        let before = s.clone();
        s.record_op(OpKind::Put, Duration::from_micros(700), true);
        s.record_op(OpKind::Delete, Duration::from_micros(5), false);
        s.record_stall(Stall {
            duration: Duration::from_millis(9),
            phase: "wal",
            phase_duration: Duration::from_millis(8),
        });
        s.memtable_versions = 3;
        let d = s.since(&before);
        assert_eq!(d.shard_id, 1);
        assert_eq!(d.ops(OpKind::Put), 1);
        assert_eq!(d.ops(OpKind::Delete), 1);
        assert_eq!(d.errors, 1);
        assert_eq!(d.latency(OpKind::Put).len(), 1);
        assert!(d.latency(OpKind::Put).min() >= 690_000, "the 3 us put is gone");
        assert_eq!(d.drain_depth.len(), 0);
        assert_eq!((d.stall_count, d.recent_stalls.len()), (1, 1));
        assert_eq!(d.memtable_versions, 3, "gauges are the later snapshot's");
        assert_eq!(s.since(&s).ops, [0; 4]);
    }
}
