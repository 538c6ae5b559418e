//! The shard event loop: turns of work, then spin, then park in the ring.
//!
//! Shard-local: runs on the pinned shard thread for its whole life. Each turn reaps the ring's
//! completions and lets the reactor (the shard) drain its ingress and submit I/O. When a turn
//! finds nothing to do, the loop keeps polling for `spin_before_park` (yielding the CPU, since
//! on small machines callers share the shard's core), then announces that it parks, arms the
//! doorbell read, and blocks in `io_uring_enter` until a completion, the doorbell, or the next
//! timer deadline.

use std::time::{Duration, Instant};

use super::ring::{Ring, DOORBELL_TOKEN};
use crate::error::Result;
use crate::ingress::Inbox;

/// What a turn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// Something was done; run another turn right away.
    Worked,
    /// Nothing to do.
    Idle,
    /// The reactor is finished; leave the loop.
    Stop,
}

/// The shard logic the loop drives.
pub trait Reactor {
    /// One turn: drain ingress, handle completions recorded by `on_completion`, submit I/O.
    fn turn(&mut self, ring: &mut Ring, inbox: &Inbox) -> Turn;
    /// Records a completion (called while reaping; submit follow-ups in the next `turn`).
    fn on_completion(&mut self, token: u64, result: i32);
    /// The next timer deadline (e.g. a periodic fdatasync), if any.
    fn next_deadline(&self) -> Option<Instant>;
    /// Called when the loop fails in a way the reactor cannot see (the ring broke).
    fn on_loop_error(&mut self, err: crate::error::Error);
}

/// Loop tuning.
#[derive(Clone, Copy, Debug)]
pub struct LoopConfig {
    /// How long an idle shard polls before parking.
    pub spin_before_park: Duration,
}

/// Runs `reactor` until it returns [`Turn::Stop`].
pub fn run(ring: &mut Ring, inbox: &Inbox, reactor: &mut impl Reactor, cfg: LoopConfig) {
    let mut idle_since: Option<Instant> = None;
    let mut doorbell_armed = false;
    loop {
        if let Err(e) = ring.reap(|token, res| on_cqe(reactor, &mut doorbell_armed, token, res)) {
            reactor.on_loop_error(e);
        }
        match reactor.turn(ring, inbox) {
            Turn::Stop => break,
            Turn::Worked => {
                idle_since = None;
                continue;
            }
            Turn::Idle => {}
        }
        let now = Instant::now();
        let since = *idle_since.get_or_insert(now);
        if now.duration_since(since) < cfg.spin_before_park && !deadline_passed(reactor, now) {
            std::thread::yield_now();
            continue;
        }
        if let Err(e) = park(ring, inbox, reactor, &mut doorbell_armed) {
            reactor.on_loop_error(e);
        }
        idle_since = None;
    }
    drain_in_flight(ring, reactor, &mut doorbell_armed);
}

fn deadline_passed(reactor: &impl Reactor, now: Instant) -> bool {
    reactor.next_deadline().is_some_and(|d| d <= now)
}

fn on_cqe(reactor: &mut impl Reactor, doorbell_armed: &mut bool, token: u64, res: i32) {
    if token == DOORBELL_TOKEN {
        *doorbell_armed = false;
    } else {
        reactor.on_completion(token, res);
    }
}

fn park(
    ring: &mut Ring,
    inbox: &Inbox,
    reactor: &mut impl Reactor,
    doorbell_armed: &mut bool,
) -> Result<()> {
    if !inbox.announce_park() {
        return Ok(());
    }
    if !*doorbell_armed {
        ring.arm_doorbell(inbox.doorbell_fd())?;
        *doorbell_armed = true;
    }
    let timeout = reactor.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
    let result = ring.wait(timeout, |token, res| on_cqe(reactor, doorbell_armed, token, res));
    inbox.awake();
    result
}

/// Waits for every tracked operation to complete, so no SQE outlives the buffers it uses.
fn drain_in_flight(ring: &mut Ring, reactor: &mut impl Reactor, doorbell_armed: &mut bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ring.in_flight() > 0 && Instant::now() < deadline {
        let step = ring.wait(Some(Duration::from_millis(100)), |token, res| {
            on_cqe(reactor, doorbell_armed, token, res)
        });
        if step.is_err() {
            break;
        }
    }
}
