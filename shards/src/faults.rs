//! Fault injection for tests: make the next fdatasync fail, or make WAL segment allocation hit a
//! full disk, on one shard, deterministically.
//!
//! Shared: a `FaultPlan` is created by a test, handed to the database through its config, and
//! read by shard threads at the points where a real I/O result comes back. The real I/O still
//! happens; only its result is replaced, so the error paths under test are the production ones.
//! Production configs carry `None` and pay one branch per injection point.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Which I/O results to replace with errors. All counters are "fail the next N".
#[derive(Debug, Default)]
pub struct FaultPlan {
    fdatasync_failures: AtomicU64,
    segment_alloc_failures: AtomicU64,
    only_shard: AtomicU64,
    any_shard: AtomicBool,
}

impl FaultPlan {
    /// A plan that injects nothing until told to.
    pub fn new() -> Self {
        FaultPlan { any_shard: AtomicBool::new(true), ..Default::default() }
    }

    /// Restrict injection to one shard (all shards by default).
    pub fn only_shard(&self, shard: usize) {
        self.only_shard.store(shard as u64, Ordering::SeqCst);
        self.any_shard.store(false, Ordering::SeqCst);
    }

    /// The next `n` durable syncs (fdatasync or the durable write itself) fail with EIO.
    pub fn fail_next_fdatasyncs(&self, n: u64) {
        self.fdatasync_failures.store(n, Ordering::SeqCst);
    }

    /// The next `n` WAL segment allocations fail with ENOSPC.
    pub fn fail_next_segment_allocs(&self, n: u64) {
        self.segment_alloc_failures.store(n, Ordering::SeqCst);
    }

    fn applies(&self, shard: usize) -> bool {
        self.any_shard.load(Ordering::SeqCst)
            || self.only_shard.load(Ordering::SeqCst) == shard as u64
    }

    fn take(counter: &AtomicU64) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// Shard-side: should this durable sync report EIO?
    pub fn take_fdatasync_failure(&self, shard: usize) -> bool {
        self.applies(shard) && Self::take(&self.fdatasync_failures)
    }

    /// Shard-side: should this segment allocation report ENOSPC?
    pub fn take_segment_alloc_failure(&self, shard: usize) -> bool {
        self.applies(shard) && Self::take(&self.segment_alloc_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_and_filters_by_shard() {
        let plan = FaultPlan::new();
        plan.only_shard(1);
        plan.fail_next_fdatasyncs(2);
        assert!(!plan.take_fdatasync_failure(0));
        assert!(plan.take_fdatasync_failure(1));
        assert!(plan.take_fdatasync_failure(1));
        assert!(!plan.take_fdatasync_failure(1));
    }
}
