//! The acknowledgements a shard holds: requests whose record is placed in the log and waits
//! for its mode's promise, and `sync()` requests waiting for durability.
//!
//! Shard-local. The WAL writers know nothing of who waits: they report how far the log has
//! come (`WalProgress`), and the shard releases, in LSN order, every acknowledgement that
//! point covers. Invariant, asserted in release builds: acknowledgements leave in LSN order,
//! and the visible timestamp published with them only rises.

use std::collections::VecDeque;
use std::time::Instant;

use crate::ingress::Responder;
use crate::stats::OpKind;
use crate::version::{Lsn, Ts};

/// A request its shard is answering: whom to signal, what kind of request it is, and when the
/// shard took it off its queue (for the engine-side latency in `ShardStats`).
#[derive(Debug)]
pub struct Ack {
    /// The caller's responder.
    pub done: Responder,
    /// What the request was.
    pub kind: OpKind,
    /// When the shard took it off its queue.
    pub started: Instant,
}

/// A write placed in the log, waiting for its promise.
#[derive(Debug)]
struct Placed {
    lsn: Lsn,
    ts: Ts,
    ack: Ack,
}

/// The acknowledgements a shard holds, in LSN order.
#[derive(Debug, Default)]
pub struct PendingAcks {
    writes: VecDeque<Placed>,
    /// `sync()` requests and the LSN each needs durable.
    syncs: VecDeque<(Lsn, Ack)>,
    /// The last LSN released (for the order assertion).
    released: Lsn,
}

/// What became acknowledgeable at a point of the log.
#[derive(Debug, Default)]
pub struct Released {
    /// The acknowledgements, in LSN order.
    pub acks: Vec<Ack>,
    /// The highest timestamp among the released writes, to publish before acknowledging them.
    pub visible: Option<Ts>,
}

impl PendingAcks {
    /// Holds `ack` for the write placed at `lsn` with timestamp `ts`.
    pub fn push_write(&mut self, lsn: Lsn, ts: Ts, ack: Ack) {
        assert!(
            self.writes.back().is_none_or(|p| p.lsn < lsn) && lsn > self.released,
            "writes are placed in LSN order"
        );
        self.writes.push_back(Placed { lsn, ts, ack });
    }

    /// Holds a `sync()` until `target` is durable.
    pub fn push_sync(&mut self, target: Lsn, ack: Ack) {
        self.syncs.push_back((target, ack));
    }

    /// True while a `sync()` waits.
    pub fn has_syncs(&self) -> bool {
        !self.syncs.is_empty()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.syncs.is_empty()
    }

    /// Releases every write whose LSN is at or below `visible_at` (its mode's point) and every
    /// `sync()` whose target is at or below `durable`, into `out`.
    pub fn release(&mut self, visible_at: Lsn, durable: Lsn, out: &mut Released) {
        while self.writes.front().is_some_and(|p| p.lsn <= visible_at) {
            let Some(p) = self.writes.pop_front() else { break };
            assert!(p.lsn > self.released, "acknowledgements leave in LSN order");
            self.released = p.lsn;
            out.visible = Some(out.visible.map_or(p.ts, |v| v.max(p.ts)));
            out.acks.push(p.ack);
        }
        while self.syncs.front().is_some_and(|(target, _)| *target <= durable) {
            if let Some((_, ack)) = self.syncs.pop_front() {
                out.acks.push(ack);
            }
        }
    }

    /// Takes every acknowledgement (the shard was poisoned: they all get the error).
    pub fn take_all(&mut self) -> Vec<Ack> {
        let mut out: Vec<Ack> = self.writes.drain(..).map(|p| p.ack).collect();
        out.extend(self.syncs.drain(..).map(|(_, ack)| ack));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::Completion;
    use std::sync::Arc;

    fn ack(c: &Arc<Completion>) -> Ack {
        Ack { done: Responder::new(c.clone()), kind: OpKind::Put, started: Instant::now() }
    }

    #[test]
    fn releases_in_lsn_order_with_the_highest_timestamp() {
        let c = Arc::new(Completion::new(4));
        let mut p = PendingAcks::default();
        p.push_write(Lsn::new(1), Ts::new(10), ack(&c));
        p.push_write(Lsn::new(2), Ts::new(11), ack(&c));
        p.push_sync(Lsn::new(2), ack(&c));
        p.push_write(Lsn::new(3), Ts::new(12), ack(&c));
        let mut out = Released::default();
        p.release(Lsn::new(2), Lsn::new(1), &mut out);
        assert_eq!((out.acks.len(), out.visible), (2, Some(Ts::new(11))));
        let mut out = Released::default();
        p.release(Lsn::new(2), Lsn::new(2), &mut out);
        assert_eq!((out.acks.len(), out.visible), (1, None), "the sync, once durable");
        assert_eq!(p.take_all().len(), 1);
        assert!(p.is_empty());
    }

    #[test]
    #[should_panic(expected = "LSN order")]
    fn out_of_order_placement_is_a_bug() {
        let c = Arc::new(Completion::new(2));
        let mut p = PendingAcks::default();
        p.push_write(Lsn::new(2), Ts::new(1), ack(&c));
        p.push_write(Lsn::new(1), Ts::new(2), ack(&c));
    }
}
