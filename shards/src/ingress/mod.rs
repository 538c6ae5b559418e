//! The messages callers send to a shard, and the completion a shard signals back.
//!
//! Shared: `Request`s are built on caller threads and moved through the shard's bounded queue;
//! a `Completion` is shared by the waiting caller and the shard (or shards) that answer it.
//! The shard side of the queue is `Inbox`; the caller side lives in `lightning_db`.

mod completion;
mod queue;

pub use completion::{Completion, Responder, WaitPolicy};
pub use queue::{ingress, Inbox, IngressSender};

/// One write operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value, shared (not copied) between the batch, the WAL encoder and the memtable.
        value: std::sync::Arc<[u8]>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }

    /// The value written, `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { value, .. } => Some(value),
            WriteOp::Delete { .. } => None,
        }
    }

    /// Bytes this op occupies in a WAL record's payload (its framing included): what
    /// `max_batch_bytes` counts.
    pub fn encoded_bytes(&self) -> usize {
        crate::wal::format::OP_HEADER_BYTES + self.key().len() + self.value().map_or(0, <[u8]>::len)
    }
}

/// A message to a shard.
#[derive(Debug)]
pub enum Request {
    /// One write; acknowledged when its `WalSyncMode` promise holds.
    Write {
        /// The operation.
        op: WriteOp,
        /// Signalled once the write is acknowledged (or failed).
        done: Responder,
    },
    /// Several writes applied atomically on this shard (one WAL record, one sequence number).
    Batch {
        /// The operations, applied in order (a later op on the same key wins).
        ops: Vec<WriteOp>,
        /// Signalled once the batch is acknowledged (or failed).
        done: Responder,
    },
    /// Make every write acknowledged so far durable (fdatasync), then signal.
    Sync {
        /// Signalled once durable.
        done: Responder,
    },
    /// Reply with a copy of the shard's statistics.
    Stats {
        /// Where to send them.
        reply: crossbeam_channel::Sender<crate::stats::ShardStats>,
    },
    /// Finish pending work, make everything durable, and stop the shard thread.
    Shutdown {
        /// Signalled once the shard has stopped.
        done: Responder,
    },
}

/// A request its shard is answering: whom to signal, what kind of request it is, and when the
/// shard took it off its queue (for the engine-side latency in `ShardStats`). Shard-local.
#[derive(Debug)]
pub struct Ack {
    /// The caller's responder.
    pub done: Responder,
    /// What the request was.
    pub kind: crate::stats::OpKind,
    /// When the shard took it off its queue.
    pub started: std::time::Instant,
}
