//! The messages callers send to a shard, and the completion a shard signals back.
//!
//! Shared: `Request`s are built on caller threads and moved through the shard's bounded queue;
//! a `Completion` is shared by the waiting caller and the shard (or shards) that answer it.
//! The shard side of the queue is `Inbox`; the caller side lives in `lightning_db`.

mod completion;
mod queue;

pub use crate::wal::record::WriteOp;
pub use completion::{Completion, Responder, WaitPolicy};
pub use queue::{ingress, Inbox, IngressSender};

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
    /// Make room in the log for a record of `bytes` (a commit step found none), then signal.
    MakeRoom {
        /// The record's size.
        bytes: usize,
        /// Signalled once there is room (or it failed).
        done: Responder,
    },
    /// Flush the memtable, then rewrite the tree low in its file and give the free tail back
    /// to the file system; signal with the bytes given back.
    Compact {
        /// Where to send the bytes given back (or the error).
        reply: crossbeam_channel::Sender<crate::error::Result<u64>>,
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
