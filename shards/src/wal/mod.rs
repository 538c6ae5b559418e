//! The shard's write-ahead log: preallocated segments of checksummed records, group commit,
//! durable claims, and replay. One writer per durability mode, chosen by measurement (ADR
//! 0002):
//!
//! - `Normal` and `Async`: [`MappedLog`] is copied into, under the shard's commit lock, by
//!   whichever thread holds it (a caller's, usually: ADR 0003); a record in the shared mapping
//!   survives a process crash. [`MappedWal`], on the shard thread, creates the segments and
//!   fdatasyncs them through the ring on a timer.
//! - `Sync`: callers encode their records into the open group of [`DirectLog`] under the
//!   commit lock; [`DirectWal`], on the shard thread, writes each group from its sector-aligned
//!   buffer with `O_DIRECT | O_DSYNC` through the ring; a group is durable when its write
//!   completes.
//!
//! Writers place records and report progress ([`WalProgress`]: staged, written, durable, and
//! the newest durable claim written); they hold no acknowledgements: the shard acknowledges
//! each request when its mode's point is reached. Both writers start every group that follows a
//! durable point on a fresh aligned unit (`format::GROUP_ALIGN_BYTES`), so bytes that are
//! durable are never written again, and begin every such group with a GROUP record carrying
//! their durable claim, which replay uses to tell a torn tail from damaged durable data.
//!
//! Shard-local. Invariant, asserted in release builds: `claimed <= durable <= written <=
//! staged`.

pub mod format;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segment;

mod chain;
pub(crate) mod direct;
mod mapped;
#[cfg(test)]
#[path = "tests/recovery_cases.rs"]
mod recovery_cases;

pub use direct::{DirectLog, DirectWal};
pub use mapped::{MappedLog, MappedWal};

use std::path::PathBuf;
use std::time::Duration;

use crate::config::WalSyncMode;
use crate::error::Error;
use crate::version::Lsn;

/// `user_data` tag (top byte) of a WAL group write.
pub const TOKEN_WAL_WRITE: u64 = 1 << 56;
/// `user_data` tag (top byte) of a WAL fdatasync.
pub const TOKEN_WAL_SYNC: u64 = 2 << 56;
/// Mask of the tag byte.
pub const TOKEN_KIND_MASK: u64 = 0xff << 56;

/// What a WAL writer needs to know.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The shard this WAL belongs to.
    pub shard_id: u32,
    /// The shard's directory.
    pub dir: PathBuf,
    /// Durability mode.
    pub mode: WalSyncMode,
    /// Preallocated size of each segment.
    pub segment_bytes: u64,
    /// `Sync`: open segments with `O_DIRECT`.
    pub direct_io: bool,
    /// `Normal`/`Async`: longest time between fdatasyncs while records are pending. Also how
    /// long a writer waits, with nothing else to write, before it writes a durable claim on
    /// its own.
    pub sync_interval: Duration,
}

/// How a WAL operation failed.
#[derive(Debug)]
pub enum WalError {
    /// The write was not placed (for example, no room for a new segment). Nothing durable is
    /// in doubt; the shard stays healthy.
    Rejected(Error),
    /// A durable write or fdatasync failed: what the device holds is unknown. The shard must
    /// poison itself.
    Poisoned(Error),
}

impl WalError {
    /// The underlying error.
    pub fn into_error(self) -> Error {
        match self {
            WalError::Rejected(e) | WalError::Poisoned(e) => e,
        }
    }
}

/// How far the log has come. Invariant: `claimed <= durable <= written <= staged`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalProgress {
    /// The last LSN placed (in a stage or a group).
    pub staged: Lsn,
    /// The last LSN out of the process (copied into the page cache, or durably written).
    pub written: Lsn,
    /// The last LSN durable on the device.
    pub durable: Lsn,
    /// The highest durable claim written into the log: replay treats damage at or below it as
    /// corruption, never as a torn tail.
    pub claimed: Lsn,
}

impl WalProgress {
    /// Asserts the invariant (cheap; release builds too: a broken order would acknowledge
    /// writes that are not where their promise says).
    pub fn check(&self) {
        assert!(
            self.claimed <= self.durable
                && self.durable <= self.written
                && self.written <= self.staged,
            "WAL progress out of order: {self:?}"
        );
    }
}

/// What the shard needs done now, beyond what is due by time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Urgency {
    /// Someone waits for everything written to be durable (`sync()`, or a close).
    pub sync_now: bool,
    /// The shard is closing: write a durable claim for everything durable now, not later.
    pub claim_now: bool,
}
