//! `LightningDbConfig`: every knob, its default, and the checks that reject values the engine
//! cannot run with. Defaults are documented here, in one place.
//!
//! Caller-side: read once by `Database::open`, which validates it and derives each shard's
//! `ShardConfig` from it.

use std::path::Path;
use std::sync::Arc;

use lightning_shards::{Error, Limits, Oracle, Result, ShardConfig, WalSyncMode};

/// Most shards a database may have.
pub const MAX_SHARDS: usize = 256;
/// Largest `max_key_bytes` accepted, whatever the page size.
pub const KEY_BYTES_LIMIT: usize = 64 * 1024;
/// Largest `max_value_bytes` accepted (values are framed with 32-bit lengths).
pub const VALUE_BYTES_LIMIT: usize = 1 << 30;

/// Configuration of a database. `LightningDbConfig::default()` is the documented default set.
///
/// Fields marked *creation-time* are stored in the database's metadata when it is created and
/// read back from there on every later open; the value passed to a later open is ignored.
#[derive(Clone, Debug)]
pub struct LightningDbConfig {
    /// Page size of the on-disk B+tree, in bytes: a power of two, 4096 to 65536.
    /// Default 4096. *Creation-time.* It also bounds `max_key_bytes` (at most a quarter page).
    pub page_size: u32,
    /// Bytes of cache across all shards (each shard gets `cache_size / shards`). Must be > 0.
    /// Default 256 MiB.
    pub cache_size: u64,
    /// Compress pages and run blocks with lz4 where it pays. Default true.
    pub compression_enabled: bool,
    /// Most transactions open at once. Must be > 0. Default 1024.
    pub max_active_transactions: usize,
    /// A transaction left open longer than this, in ms, is rolled back (its id then answers
    /// `Error::TransactionTimedOut`), so an abandoned one cannot hold old versions forever.
    /// 0: never. Default 60 000.
    pub transaction_timeout_ms: u64,
    /// When an acknowledged write is durable. Default [`WalSyncMode::Normal`].
    pub wal_sync_mode: WalSyncMode,
    /// Number of shards (each a pinned thread with its own WAL and memtable), 1 to 256.
    /// Default: the number of CPUs this process may run on. *Creation-time.*
    pub shards: usize,
    /// `Normal`: longest time between fdatasyncs while writes are pending, in ms (> 0).
    /// Default 100.
    pub sync_interval_ms: u64,
    /// `Async`: longest time between fdatasyncs while writes are pending, in ms (> 0).
    /// Default 100.
    pub flush_interval_ms: u64,
    /// Size of one preallocated WAL segment file, in bytes: a multiple of 4096, at least
    /// `max_batch_bytes` plus 8 KiB. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Largest key, in bytes (1 to `page_size / 4`). Default 1024.
    pub max_key_bytes: usize,
    /// Largest value, in bytes (1 to 1 GiB, and below `max_batch_bytes`). Default 16 MiB.
    pub max_value_bytes: usize,
    /// Largest encoded write that one shard applies atomically (a put, or one shard's part of
    /// a `WriteBatch`), in bytes. Default 32 MiB.
    pub max_batch_bytes: usize,
    /// Write `Sync`-mode WAL segments with `O_DIRECT` (fails clearly on filesystems without
    /// it). Default true.
    pub direct_io: bool,
    /// Register the `Sync`-mode WAL buffers with io_uring (512 KiB of `RLIMIT_MEMLOCK` per
    /// shard). Default true.
    pub register_buffers: bool,
    /// Pin each shard thread to its own CPU. Default true.
    pub pin_shards: bool,
    /// Requests queued per shard before callers block. Default 1024.
    pub ingress_queue_depth: usize,
    /// How long an idle shard polls its queue (yielding the CPU) before parking, in µs.
    /// Default 200.
    pub spin_before_park_us: u64,
    /// Bytes a shard's memtable holds before it is frozen and flushed into the shard's on-disk
    /// tree, after which the WAL behind it is removed. The memtables of the whole database
    /// hold about `shards × memtable_bytes`, up to twice that while flushes run (a frozen
    /// memtable stays readable until its flush is published, and longer while a snapshot
    /// taken before holds it). 0: never flush (everything stays in memory and the WAL is
    /// never truncated). Default 64 MiB.
    pub memtable_bytes: usize,
    /// Create the database if the directory holds none. Default true.
    pub create_if_missing: bool,
    /// A shard loop turn longer than this (ms) is counted and logged as a stall
    /// (`Database::stats`). Default 10.
    pub stall_threshold_ms: u64,
}

impl Default for LightningDbConfig {
    fn default() -> Self {
        LightningDbConfig {
            page_size: 4096,
            cache_size: 256 << 20,
            compression_enabled: true,
            max_active_transactions: 1024,
            transaction_timeout_ms: 60_000,
            wal_sync_mode: WalSyncMode::Normal,
            shards: lightning_shards::default_shard_count().clamp(1, MAX_SHARDS),
            sync_interval_ms: 100,
            flush_interval_ms: 100,
            wal_segment_bytes: 64 << 20,
            max_key_bytes: 1024,
            max_value_bytes: 16 << 20,
            max_batch_bytes: 32 << 20,
            direct_io: true,
            register_buffers: true,
            pin_shards: true,
            ingress_queue_depth: 1024,
            spin_before_park_us: 200,
            create_if_missing: true,
            stall_threshold_ms: 10,
            memtable_bytes: 64 << 20,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { field, reason: reason.into() }
}

impl LightningDbConfig {
    /// Checks every field; the first bad one is reported as `Error::InvalidConfig`.
    pub fn validate(&self) -> Result<()> {
        if !self.page_size.is_power_of_two() || !(4096..=65536).contains(&self.page_size) {
            return Err(invalid(
                "page_size",
                format!("is {}; it must be a power of two from 4096 to 65536", self.page_size),
            ));
        }
        if self.cache_size == 0 {
            return Err(invalid("cache_size", "is 0; the cache needs at least one byte per shard"));
        }
        if self.max_active_transactions == 0 {
            return Err(invalid("max_active_transactions", "is 0; allow at least one transaction"));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(invalid(
                "shards",
                format!("is {}; it must be 1 to {MAX_SHARDS}", self.shards),
            ));
        }
        if self.sync_interval_ms == 0 {
            return Err(invalid("sync_interval_ms", "is 0; it must be at least 1 ms"));
        }
        if self.flush_interval_ms == 0 {
            return Err(invalid("flush_interval_ms", "is 0; it must be at least 1 ms"));
        }
        if self.ingress_queue_depth == 0 {
            return Err(invalid("ingress_queue_depth", "is 0; a shard needs room for one request"));
        }
        self.validate_sizes()
    }

    fn validate_sizes(&self) -> Result<()> {
        let key_max = (self.page_size as usize / 4).min(KEY_BYTES_LIMIT);
        if self.max_key_bytes == 0 || self.max_key_bytes > key_max {
            return Err(invalid(
                "max_key_bytes",
                format!("is {}; it must be 1 to {key_max} (page_size / 4)", self.max_key_bytes),
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > VALUE_BYTES_LIMIT {
            return Err(invalid(
                "max_value_bytes",
                format!("is {}; it must be 1 to {VALUE_BYTES_LIMIT}", self.max_value_bytes),
            ));
        }
        let one_write = self.max_key_bytes + self.max_value_bytes + 64;
        if self.max_batch_bytes < one_write {
            return Err(invalid(
                "max_batch_bytes",
                format!(
                    "is {}; it must hold one largest put ({one_write} bytes)",
                    self.max_batch_bytes
                ),
            ));
        }
        let segment_min = self.max_batch_bytes as u64 + 8192;
        if !self.wal_segment_bytes.is_multiple_of(4096)
            || self.wal_segment_bytes < segment_min.max(64 * 1024)
        {
            return Err(invalid(
                "wal_segment_bytes",
                format!(
                    "is {}; it must be a multiple of 4096 and at least max_batch_bytes + 8 KiB ({})",
                    self.wal_segment_bytes,
                    segment_min.max(64 * 1024)
                ),
            ));
        }
        Ok(())
    }

    /// The size limits callers' writes are checked against.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_batch_bytes: self.max_batch_bytes,
        }
    }

    /// The configuration of shard `shard_id` of a database at `db_dir`.
    pub(crate) fn shard_config(
        &self,
        db_dir: &Path,
        shard_id: usize,
        oracle: &Arc<Oracle>,
    ) -> ShardConfig {
        ShardConfig {
            shard_id,
            dir: db_dir.join(format!("shard-{shard_id:03}")),
            cpu: if self.pin_shards { lightning_shards::cpu_for_shard(shard_id) } else { None },
            wal_sync_mode: self.wal_sync_mode,
            sync_interval_ms: self.sync_interval_ms,
            flush_interval_ms: self.flush_interval_ms,
            wal_segment_bytes: self.wal_segment_bytes,
            direct_io: self.direct_io,
            register_buffers: self.register_buffers,
            ingress_queue_depth: self.ingress_queue_depth,
            ingress_batch_max: self.ingress_queue_depth.min(256),
            spin_before_park_us: self.spin_before_park_us,
            stall_threshold_ms: self.stall_threshold_ms,
            limits: self.limits(),
            memtable_bytes: self.memtable_bytes,
            page_size: self.page_size as usize,
            compression: self.compression_enabled,
            cache_bytes: usize::try_from(self.cache_size / self.shards.max(1) as u64)
                .unwrap_or(usize::MAX),
            oracle: oracle.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        LightningDbConfig::default().validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut LightningDbConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("page_size", Box::new(|c| c.page_size = 3000)),
            ("page_size", Box::new(|c| c.page_size = 2048)),
            ("cache_size", Box::new(|c| c.cache_size = 0)),
            ("shards", Box::new(|c| c.shards = 0)),
            ("shards", Box::new(|c| c.shards = MAX_SHARDS + 1)),
            ("max_active_transactions", Box::new(|c| c.max_active_transactions = 0)),
            ("max_key_bytes", Box::new(|c| c.max_key_bytes = 2000)),
            ("max_value_bytes", Box::new(|c| c.max_value_bytes = 0)),
            ("max_batch_bytes", Box::new(|c| c.max_batch_bytes = 10)),
            ("wal_segment_bytes", Box::new(|c| c.wal_segment_bytes = 1000)),
            ("sync_interval_ms", Box::new(|c| c.sync_interval_ms = 0)),
            ("ingress_queue_depth", Box::new(|c| c.ingress_queue_depth = 0)),
        ];
        for (field, mutate) in cases {
            let mut c = LightningDbConfig::default();
            mutate(&mut c);
            match c.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    }
}
