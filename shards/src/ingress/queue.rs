//! The shard's ingress: a bounded MPSC queue, a `parked` flag and an eventfd doorbell.
//!
//! Shared: callers push from any thread; only the shard thread pops. A caller rings the
//! doorbell (one `write(2)`) only when the shard said it is parked, so while a shard is busy
//! no system call is paid per request. The shard parks by setting `parked`, re-checking the
//! queue, and only then waiting in its ring on a read of the eventfd (SeqCst on both sides:
//! either the caller sees `parked`, or the shard sees the request).
//!
//! When the shard thread ends (a shutdown, or a panic), it *closes* its inbox: it sets
//! `stopped` and drops every queued request, whose responders answer `Closed`. A caller that
//! pushes while that happens sees `stopped` after its push and drops what is left itself (the
//! sender keeps a receiver for that): either way no request is stranded in the queue with a
//! caller waiting on it forever (SeqCst on both sides, as for `parked`).

use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::Request;
use crate::error::{Error, Result};
use crate::io::sys::EventFd;

/// Caller-side end of a shard's ingress. `Send + Sync`; shared by every caller thread.
pub struct IngressSender {
    tx: Sender<Request>,
    /// Only for dropping requests a stopped shard will never take.
    leftovers: Receiver<Request>,
    bell: std::sync::Arc<Doorbell>,
}

/// Shard-side end of the ingress.
pub struct Inbox {
    rx: Receiver<Request>,
    bell: std::sync::Arc<Doorbell>,
}

/// The parked flag and the eventfd, shared by both ends.
pub struct Doorbell {
    parked: AtomicBool,
    /// Shared with the ring's armed read of it, which must keep it open until it completes.
    eventfd: std::sync::Arc<EventFd>,
    /// Times a caller wrote the eventfd (each is one system call).
    rings: AtomicU64,
    /// The shard thread has ended: nothing queued will ever be taken.
    stopped: AtomicBool,
    /// A caller left work for the shard outside the queue (`Sync`: a record staged in the open
    /// group under the commit lock).
    work: AtomicBool,
}

/// Creates a shard's ingress with room for `depth` queued requests.
pub fn ingress(depth: usize) -> io::Result<(IngressSender, Inbox)> {
    let (tx, rx) = crossbeam_channel::bounded(depth.max(1));
    let bell = std::sync::Arc::new(Doorbell {
        parked: AtomicBool::new(false),
        eventfd: std::sync::Arc::new(EventFd::new()?),
        rings: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        work: AtomicBool::new(false),
    });
    let sender = IngressSender { tx, leftovers: rx.clone(), bell: bell.clone() };
    Ok((sender, Inbox { rx, bell }))
}

impl IngressSender {
    /// Queues `req` (blocking while the queue is full) and wakes the shard if it is parked.
    pub fn send(&self, req: Request) -> Result<()> {
        if self.bell.stopped.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.tx.send(req).map_err(|_| Error::Closed)?;
        fence(Ordering::SeqCst);
        if self.bell.stopped.load(Ordering::SeqCst) {
            // The shard ended while we pushed: it may have drained before our request landed.
            while let Ok(req) = self.leftovers.try_recv() {
                drop(req); // its responder answers `Closed`
            }
            return Ok(());
        }
        self.ring_if_parked();
        Ok(())
    }

    /// Tells the shard a caller left work for it outside the queue, waking it if it is parked
    /// (SeqCst, paired with `announce_park`: either the shard sees the work, or we see it
    /// parked).
    pub fn nudge(&self) {
        self.bell.work.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.ring_if_parked();
    }

    fn ring_if_parked(&self) {
        if self.bell.parked.load(Ordering::SeqCst) && self.bell.parked.swap(false, Ordering::SeqCst)
        {
            self.bell.rings.fetch_add(1, Ordering::Relaxed);
            self.bell.eventfd.ring();
        }
    }

    /// How many times callers rang this shard's doorbell (one `write(2)` each) so far.
    pub fn doorbell_rings(&self) -> u64 {
        self.bell.rings.load(Ordering::Relaxed)
    }

    /// Requests waiting in the queue right now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

impl Inbox {
    /// Called by the shard thread as it ends: marks the inbox stopped and drops every queued
    /// request (their responders answer `Closed`).
    pub fn close(&self) {
        self.bell.stopped.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        while let Ok(req) = self.rx.try_recv() {
            drop(req);
        }
    }

    /// Takes the next request without blocking. `Err(Closed)` once every sender is gone.
    pub fn try_pop(&self) -> Result<Option<Request>> {
        match self.rx.try_recv() {
            Ok(r) => Ok(Some(r)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Error::Closed),
        }
    }

    /// True when no request is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Announces that the shard is about to park. Returns false (and stays awake) when a
    /// request arrived meanwhile; the caller must then not wait.
    pub fn announce_park(&self) -> bool {
        self.bell.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.rx.is_empty() || self.bell.work.load(Ordering::SeqCst) {
            self.bell.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Takes the note that callers left work outside the queue (true once per nudge or more).
    pub fn take_work(&self) -> bool {
        self.bell.work.swap(false, Ordering::SeqCst)
    }

    /// Clears the parked flag after waking.
    pub fn awake(&self) {
        self.bell.parked.store(false, Ordering::SeqCst);
    }

    /// The doorbell eventfd, for the storage to wait on while parked.
    pub fn eventfd(&self) -> &std::sync::Arc<EventFd> {
        &self.bell.eventfd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{Completion, Responder};
    use std::sync::Arc;

    #[test]
    fn parked_shard_gets_rung_once() {
        let (tx, inbox) = ingress(4).unwrap();
        assert!(inbox.announce_park());
        tx.send(Request::Sync { done: Responder::new(Arc::new(Completion::new(1))) }).unwrap();
        // The sender cleared the flag when it rang.
        assert!(!inbox.bell.parked.load(Ordering::SeqCst));
        assert!(inbox.try_pop().unwrap().is_some());
        assert!(!inbox.announce_park() || inbox.is_empty());
    }

    #[test]
    fn a_closed_inbox_strands_no_request() {
        let (tx, inbox) = ingress(4).unwrap();
        let c = Arc::new(Completion::new(2));
        tx.send(Request::Sync { done: Responder::new(c.clone()) }).unwrap();
        inbox.close();
        assert!(matches!(
            tx.send(Request::Sync { done: Responder::new(c.clone()) }),
            Err(Error::Closed)
        ));
        assert!(matches!(c.try_result(), Some(Err(Error::Closed))), "both answered Closed");
    }

    #[test]
    fn a_nudge_refuses_the_park_and_wakes_a_parked_shard() {
        let (tx, inbox) = ingress(4).unwrap();
        tx.nudge();
        assert!(!inbox.announce_park(), "work left outside the queue keeps the shard awake");
        assert!(inbox.take_work());
        assert!(!inbox.take_work(), "taken once");
        assert!(inbox.announce_park());
        tx.nudge();
        assert!(!inbox.bell.parked.load(Ordering::SeqCst), "rung");
        assert_eq!(tx.doorbell_rings(), 1);
    }

    #[test]
    fn park_is_refused_when_work_is_queued() {
        let (tx, inbox) = ingress(4).unwrap();
        tx.send(Request::Sync { done: Responder::new(Arc::new(Completion::new(1))) }).unwrap();
        assert!(!inbox.announce_park());
    }
}
