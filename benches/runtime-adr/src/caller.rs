//! The caller side, identical for both candidates: build a `Request::Sync`, send it, wait on
//! its `Completion` with the shard's `WaitPolicy` (spin, then park).
//!
//! Runs on the benchmark's main thread (pinned to the caller CPU). Only `Target::send`
//! differs between the candidates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lightning_shards::internals::{Completion, Request, Responder, WaitPolicy};

use crate::report::Sample;
use crate::Res;

/// Round trips run before recording (caches, branch predictors, first-park effects).
const WARMUP_ROUND_TRIPS: u64 = 2_000;
/// Round trips with a pause run before recording.
const WARMUP_PARKED: u64 = 20;
/// Bursts run before recording.
const WARMUP_BURSTS: u64 = 50;

/// A shard the caller can send requests to.
pub trait Target {
    /// The candidate's name in the report.
    fn candidate(&self) -> &str;
    /// Queues `req` on the shard's ingress, waking the shard if needed.
    fn send(&self, req: Request) -> Res<()>;
    /// How the caller waits for this shard's replies.
    fn policy(&self) -> WaitPolicy;
}

/// `iters` request/reply round trips, back to back or with `pause` before each one.
pub fn round_trip(
    target: &dyn Target,
    iters: u64,
    pause: Option<Duration>,
    max: Duration,
) -> Res<Sample> {
    let policy = target.policy();
    let warmup = if pause.is_some() { WARMUP_PARKED } else { WARMUP_ROUND_TRIPS };
    let mut sample = Sample::new()?;
    let mut started = Instant::now();
    for i in 0..warmup + iters {
        if i == warmup {
            started = Instant::now();
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        let done = Arc::new(Completion::new(1));
        let t0 = Instant::now();
        target.send(Request::Sync { done: Responder::new(done.clone()) })?;
        done.wait(&policy)?;
        let took = t0.elapsed();
        if i >= warmup {
            sample.record(took, 1);
            if started.elapsed() > max {
                break;
            }
        }
    }
    Ok(sample)
}

/// `bursts` bursts of `k` requests: send all, then wait once for all of them. The histogram
/// holds one sample per burst; the rate is messages per second.
pub fn pipelined(target: &dyn Target, bursts: u64, k: u32, max: Duration) -> Res<Sample> {
    let policy = target.policy();
    let mut sample = Sample::new()?;
    let mut started = Instant::now();
    for i in 0..WARMUP_BURSTS + bursts {
        if i == WARMUP_BURSTS {
            started = Instant::now();
        }
        // One completion counts the whole burst down: the cost measured is the messages, not
        // an allocation per message.
        let done = Arc::new(Completion::new(k));
        let t0 = Instant::now();
        for _ in 0..k {
            target.send(Request::Sync { done: Responder::new(done.clone()) })?;
        }
        done.wait(&policy)?;
        let took = t0.elapsed();
        if i >= WARMUP_BURSTS {
            sample.record(took, u64::from(k));
            if started.elapsed() > max {
                break;
            }
        }
    }
    Ok(sample)
}
