//! The shard's write-ahead log: preallocated segments of checksummed records, group commit,
//! durable claims, and replay. One writer per durability mode, chosen by measurement (ADR
//! 0002):
//!
//! - `Normal` and `Async`: [`MappedLog`] is copied into, under the shard's commit lock, by
//!   whichever thread holds it (a caller's, usually: ADR 0003); a record in the shared mapping
//!   survives a process crash. [`MappedWal`], on the shard thread, creates the segments and
//!   fdatasyncs them through the ring on a timer.
//! - `Sync`: [`DirectWal`] ([`WalWriter`]) writes each group from a sector-aligned buffer
//!   with `O_DIRECT | O_DSYNC` through the ring; a group is durable when its write completes.
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

pub use direct::DirectWal;
pub use mapped::{MappedLog, MappedWal};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::WalSyncMode;
use crate::error::Error;
use crate::io::{IoDone, Storage};
use crate::stats::WalCounters;
use crate::version::{Lsn, Ts};
use record::WriteOp;

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

/// The `Sync` writer's interface, as the shard drives it.
pub trait WalWriter<S: Storage> {
    /// Creates (or reopens) the segment the next record goes to, so a disk without room for a
    /// segment fails at open rather than at the first write.
    fn prepare(&mut self, io: &mut S) -> Result<(), WalError>;
    /// Places a WRITE record for `ops` at timestamp `ts` and returns its LSN.
    fn append(&mut self, io: &mut S, ts: Ts, ops: &[WriteOp]) -> Result<Lsn, WalError>;
    /// Copies placed records out of the process, where the mode does that on the loop
    /// (`Normal`/`Async`: into the mapping); nothing for `Sync`.
    fn publish(&mut self, io: &mut S);
    /// Submits the I/O that is due: group writes, timed or urgent syncs, durable claims.
    fn submit(&mut self, io: &mut S, now: Instant, urgency: Urgency) -> Result<(), WalError>;
    /// Handles a finished operation of this writer.
    fn on_completion(&mut self, io: &mut S, done: IoDone) -> Result<(), WalError>;
    /// How far the log has come.
    fn progress(&self) -> WalProgress;
    /// The next time something is due (a timed sync or claim), if any.
    fn next_deadline(&self) -> Option<Instant>;
    /// Nothing placed but unwritten, nothing queued, nothing in flight.
    fn is_idle(&self) -> bool;
    /// Traffic counters.
    fn counters(&self) -> &WalCounters;
}
