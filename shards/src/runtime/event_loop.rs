//! The shard event loop: turns of work, then spin, then park in the storage.
//!
//! Shard-local: runs on the pinned shard thread for its whole life. Each turn hands the
//! storage's finished operations to the reactor (the shard) and lets it drain its ingress and
//! submit I/O. When a turn finds nothing to do, the loop keeps polling for `spin_before_park`
//! (yielding the CPU, since on small machines callers share the shard's core), then announces
//! that it parks and blocks in the storage until an operation finishes, the doorbell rings, or
//! the next timer deadline passes. Time comes from the storage's clock.
//!
//! The loop never waits for operations in flight when it stops: the storage owns everything
//! they point to, and dropping it waits for them (`io::uring::RING_DRAIN_TIMEOUT`).

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::ingress::Inbox;
use crate::io::{IoDone, Storage};

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
pub trait Reactor<S: Storage> {
    /// One turn: drain ingress, handle completions recorded by `on_completion`, submit I/O.
    fn turn(&mut self, io: &mut S, inbox: &Inbox) -> Turn;
    /// Records a finished operation (handled in the next `turn`).
    fn on_completion(&mut self, done: IoDone);
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
pub fn run<S: Storage>(io: &mut S, inbox: &Inbox, reactor: &mut impl Reactor<S>, cfg: LoopConfig) {
    let mut idle_since: Option<Instant> = None;
    let mut done = Vec::new();
    loop {
        if let Err(e) = io.reap(&mut done) {
            reactor.on_loop_error(e);
        }
        deliver(reactor, &mut done);
        match reactor.turn(io, inbox) {
            Turn::Stop => return,
            Turn::Worked => {
                idle_since = None;
                continue;
            }
            Turn::Idle => {}
        }
        let now = io.now();
        let since = *idle_since.get_or_insert(now);
        if now.duration_since(since) < cfg.spin_before_park && !deadline_passed(reactor, now) {
            std::thread::yield_now();
            continue;
        }
        if let Err(e) = park(io, inbox, reactor, &mut done) {
            reactor.on_loop_error(e);
        }
        deliver(reactor, &mut done);
        idle_since = None;
    }
}

fn deliver<S: Storage>(reactor: &mut impl Reactor<S>, done: &mut Vec<IoDone>) {
    for d in done.drain(..) {
        reactor.on_completion(d);
    }
}

fn deadline_passed<S: Storage>(reactor: &impl Reactor<S>, now: Instant) -> bool {
    reactor.next_deadline().is_some_and(|d| d <= now)
}

fn park<S: Storage>(
    io: &mut S,
    inbox: &Inbox,
    reactor: &mut impl Reactor<S>,
    done: &mut Vec<IoDone>,
) -> Result<()> {
    if !inbox.announce_park() {
        return Ok(());
    }
    let now = io.now();
    let timeout = reactor.next_deadline().map(|d| d.saturating_duration_since(now));
    let result = io.park(inbox, timeout, done);
    inbox.awake();
    result
}
