//! The shard's write-ahead log: preallocated segments of checksummed records, group commit,
//! and replay. One writer per durability mode, chosen by measurement (ADR 0002):
//!
//! - `Normal` and `Async`: [`MappedWal`] copies records into a shared mapping of the segment
//!   (the page cache outlives the process) and fdatasyncs through the ring on a timer.
//! - `Sync`: [`DirectWal`] writes each group from a sector-aligned buffer with
//!   `O_DIRECT | O_DSYNC` through the ring and acknowledges at completion.
//!
//! Both start every group that follows a durable point on a fresh sector, so a sector that
//! holds acknowledged, durable records is never written again. Shard-local.

pub mod format;
pub mod reader;
pub mod recovery;
pub mod segment;

mod chain;
mod direct;
mod mapped;

pub use direct::DirectWal;
pub use mapped::MappedWal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::WalSyncMode;
use crate::error::Error;
use crate::faults::FaultPlan;

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
    /// `Sync`: register the group buffers with the ring.
    pub register_buffers: bool,
    /// `Normal`/`Async`: longest time between fdatasyncs while records are pending.
    pub sync_interval: Duration,
    /// Fault injection for tests.
    pub faults: Option<Arc<FaultPlan>>,
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
