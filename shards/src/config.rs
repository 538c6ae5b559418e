//! What one shard is told when it starts: durability mode, WAL geometry, limits, loop tuning.
//!
//! Caller-side: built by `lightning_db` from its public `LightningDbConfig` (which validates
//! every field) and moved into the shard thread at spawn. Immutable afterwards.

use std::path::PathBuf;
use std::sync::Arc;

use crate::oracle::Oracle;

/// When an acknowledged write is durable (`docs/ARCHITECTURE.md`, "Durability per mode").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WalSyncMode {
    /// An acknowledged write survives power loss: its WAL record is written and made durable
    /// (group commit: one durable write covers every request the shard drained in a turn)
    /// before the reply.
    Sync,
    /// An acknowledged write survives a process crash (`kill -9`): its WAL record is in the
    /// kernel's page cache before the reply. The shard fdatasyncs at least every
    /// `sync_interval_ms`, so power loss loses at most that window.
    #[default]
    Normal,
    /// The reply is sent after the memtable apply; the WAL record follows in the same loop turn
    /// and is fdatasynced every `flush_interval_ms`. A crash loses at most the writes of the
    /// last `flush_interval_ms`.
    Async,
}

/// Size limits on what callers may write. Input over a limit is an `Error::LimitExceeded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Largest encoded write (one put, or one shard's part of a batch) in bytes.
    pub max_batch_bytes: usize,
}

/// Everything one shard needs to run. Built and validated by `lightning_db`.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Index of this shard, `0..shard_count`.
    pub shard_id: usize,
    /// The shard's own directory (`<db>/shard-NNN`).
    pub dir: PathBuf,
    /// CPU to pin the shard thread to, if any.
    pub cpu: Option<usize>,
    /// Durability mode.
    pub wal_sync_mode: WalSyncMode,
    /// `Normal`: the longest time between fdatasyncs while writes are pending.
    pub sync_interval_ms: u64,
    /// `Async`: the longest time between fdatasyncs while writes are pending.
    pub flush_interval_ms: u64,
    /// Size of one preallocated WAL segment file.
    pub wal_segment_bytes: u64,
    /// Open `Sync`-mode WAL segments with `O_DIRECT` (fails on filesystems without it).
    pub direct_io: bool,
    /// Register the WAL's aligned buffers with io_uring (counts against `RLIMIT_MEMLOCK`).
    pub register_buffers: bool,
    /// Capacity of the shard's ingress queue (requests).
    pub ingress_queue_depth: usize,
    /// Requests drained from the ingress queue per loop turn at most.
    pub ingress_batch_max: usize,
    /// How long an idle shard keeps polling its queue (yielding the CPU) before it parks.
    pub spin_before_park_us: u64,
    /// A loop turn longer than this is counted and logged as a stall (`ShardStats`).
    pub stall_threshold_ms: u64,
    /// Size limits.
    pub limits: Limits,
    /// When the memtable holds about this many bytes it is frozen and flushed into the tree
    /// (0: never: everything stays in memory and the WAL is never truncated).
    pub memtable_bytes: usize,
    /// The tree's page size (the database's, from META).
    pub page_size: usize,
    /// Store tree leaves lz4-compressed where that saves at least 1/8.
    pub compression: bool,
    /// Bytes of the shard cache (decoded tree pages).
    pub cache_bytes: usize,
    /// The database's timestamp order, shared by all its shards (snapshots bound garbage
    /// collection through it).
    pub oracle: Arc<Oracle>,
}

impl ShardConfig {
    /// A configuration for shard `shard_id` in `dir` with the engine's defaults (`Normal` mode,
    /// 64 MiB segments, 1024-deep ingress, 200 µs spin, 10 ms stall threshold, limits of
    /// 1 KiB keys / 16 MiB values / 32 MiB batches, 64 MiB memtables, 4 KiB
    /// compressed pages). `lightning_db` sets every field itself.
    pub fn new(shard_id: usize, dir: PathBuf) -> Self {
        ShardConfig {
            shard_id,
            dir,
            cpu: None,
            wal_sync_mode: WalSyncMode::Normal,
            sync_interval_ms: 100,
            flush_interval_ms: 100,
            wal_segment_bytes: 64 << 20,
            direct_io: true,
            register_buffers: true,
            ingress_queue_depth: 1024,
            ingress_batch_max: 256,
            spin_before_park_us: 200,
            stall_threshold_ms: 10,
            limits: Limits {
                max_key_bytes: 1024,
                max_value_bytes: 16 << 20,
                max_batch_bytes: 32 << 20,
            },
            memtable_bytes: 64 << 20,
            page_size: 4096,
            compression: true,
            cache_bytes: 64 << 20,
            oracle: Oracle::new(),
        }
    }
}
