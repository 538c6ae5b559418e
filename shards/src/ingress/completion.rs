//! `Completion`: how a shard tells a waiting caller that its request is done.
//!
//! Shared between one caller thread (the waiter) and the shards that answer it. A completion
//! counts outstanding parts (one per shard a multi-shard call touched); the shard that finishes
//! the last part wakes the waiter only if it parked. The waiter spins first (yielding the CPU
//! when the shard it waits on shares its CPU, measured in ADR 0001), then parks.
//!
//! Ordering: the waiter publishes `parked` and then re-reads `pending` (both SeqCst); the shard
//! decrements `pending` and then reads `parked` (both SeqCst). One of the two always sees the
//! other, so a wake-up is never lost.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How a caller waits for its reply.
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    /// Spin (and yield) this long before parking.
    pub spin: Duration,
    /// Spin without yielding for this long when the shard runs on another CPU.
    pub busy_spin: Duration,
    /// The CPU the answering shard is pinned to, if known.
    pub shard_cpu: Option<usize>,
}

impl WaitPolicy {
    /// The default measured in ADR 0001: spin up to 50 µs, busy-spin 1.5 µs.
    pub const DEFAULT: WaitPolicy = WaitPolicy {
        spin: Duration::from_micros(50),
        busy_spin: Duration::from_nanos(1500),
        shard_cpu: None,
    };
}

/// A countdown of outstanding parts plus the first error any part reported.
#[derive(Debug)]
pub struct Completion {
    pending: AtomicU32,
    parked: AtomicBool,
    waiter: Thread,
    error: Mutex<Option<Error>>,
}

impl Completion {
    /// A completion for `parts` replies, to be waited on by the calling thread.
    pub fn new(parts: u32) -> Self {
        Completion {
            pending: AtomicU32::new(parts),
            parked: AtomicBool::new(false),
            waiter: std::thread::current(),
            error: Mutex::new(None),
        }
    }

    /// Shard-side: one part is done with `result`. The first error wins.
    pub fn complete(&self, result: Result<()>) {
        if let Err(e) = result {
            if let Ok(mut slot) = self.error.lock() {
                if slot.is_none() {
                    *slot = Some(e);
                }
            }
        }
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 && self.parked.load(Ordering::SeqCst) {
            self.waiter.unpark();
        }
    }

    /// True once every part has completed.
    pub fn is_done(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// Caller-side, without blocking: the result once every part completed (the first error,
    /// if any; taken, so a second call after an error returns `Ok`).
    pub fn try_result(&self) -> Option<Result<()>> {
        if !self.is_done() {
            return None;
        }
        Some(match self.error.lock() {
            Ok(mut slot) => slot.take().map_or(Ok(()), Err),
            Err(_) => Err(Error::Closed),
        })
    }

    /// Caller-side: parks for at most `timeout` unless done (woken early when the last part
    /// completes).
    pub fn park_timeout(&self, timeout: Duration) {
        self.parked.store(true, Ordering::SeqCst);
        if !self.is_done() {
            std::thread::park_timeout(timeout);
        }
    }

    /// Caller-side: blocks until every part completed, then returns the first error, if any.
    pub fn wait(&self, policy: &WaitPolicy) -> Result<()> {
        if !self.spin(policy) {
            self.parked.store(true, Ordering::SeqCst);
            while !self.is_done() {
                std::thread::park();
            }
        }
        match self.error.lock() {
            Ok(mut slot) => slot.take().map_or(Ok(()), Err),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Spins until done or the budget is spent. Yields the CPU when the shard shares ours (it
    /// cannot answer while we spin on its core) or once the busy-spin budget is spent.
    fn spin(&self, policy: &WaitPolicy) -> bool {
        let start = Instant::now();
        let mut rounds: u32 = 0;
        let mut shares_cpu = same_cpu(policy);
        loop {
            if self.is_done() {
                return true;
            }
            rounds = rounds.wrapping_add(1);
            let elapsed = start.elapsed();
            if elapsed >= policy.spin {
                return false;
            }
            if rounds.is_multiple_of(64) {
                shares_cpu = same_cpu(policy);
            }
            if shares_cpu || elapsed >= policy.busy_spin {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn same_cpu(policy: &WaitPolicy) -> bool {
    policy.shard_cpu.is_some() && policy.shard_cpu == crate::io::sys::current_cpu()
}

/// The shard side of a [`Completion`]: signals one part exactly once. Dropped without
/// signalling (a request left in a stopped shard's queue, or a shard thread that panicked), it
/// signals `Error::Closed`, so no caller ever waits forever.
#[derive(Debug)]
pub struct Responder(Option<Arc<Completion>>);

impl Responder {
    /// A responder for one part of `completion`.
    pub fn new(completion: Arc<Completion>) -> Self {
        Responder(Some(completion))
    }

    /// A responder nobody waits on.
    pub fn detached() -> Self {
        Responder(None)
    }

    /// Signals the part with `result`.
    pub fn complete(mut self, result: Result<()>) {
        if let Some(c) = self.0.take() {
            c.complete(result);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.complete(Err(Error::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_every_part_and_keeps_first_error() {
        let c = Arc::new(Completion::new(2));
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c2.complete(Err(Error::Closed));
            c2.complete(Err(Error::Poisoned { shard: 1 }));
        });
        let r = c.wait(&WaitPolicy::DEFAULT);
        assert!(matches!(r, Err(Error::Closed)));
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_responder_signals_closed() {
        let c = Arc::new(Completion::new(2));
        Responder::new(c.clone()).complete(Ok(()));
        drop(Responder::new(c.clone()));
        assert!(matches!(c.wait(&WaitPolicy::DEFAULT), Err(Error::Closed)));
    }

    #[test]
    fn fast_completion_needs_no_park() {
        let c = Completion::new(1);
        c.complete(Ok(()));
        assert!(c.wait(&WaitPolicy::DEFAULT).is_ok());
    }
}
