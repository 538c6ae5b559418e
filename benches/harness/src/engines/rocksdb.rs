//! RocksDB (C++, built from source by `librocksdb-sys`, with LZ4 as its only compression
//! library) under the harness: the default column family, an LRU block cache of `cache_bytes`,
//! the WAL always on.
//!
//! Durability: sync mode writes with `WriteOptions::set_sync(true)` (the WAL is fdatasynced
//! before every put/delete/WriteBatch returns; concurrent writers share one sync through group
//! commit); normal/async write with `sync=false` (the WAL record is handed to the OS page cache
//! with write(2), no sync).
//!
//! Transactions: none here yet, so `transfer` keeps the trait's default (`Ok(None)`) and the
//! `transfer` workload skips RocksDB. An implementation would open an
//! `OptimisticTransactionDB` when `EngineConfig::transactional` is set (as the fjall adapter
//! does) and run each transfer as `transaction_opt` with the mode's `WriteOptions`, two
//! `get_for_update`s, two `put`s and `commit`, mapping a `Busy` commit error to
//! `Transfer::Conflict`; it is not written because the `rocksdb` feature is not built here.

use ::rocksdb::properties::{self, PropName};
use ::rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, WriteBatch, WriteOptions, DB,
};

use crate::engine::{err, BatchOp, Engine, EngineConfig, Mode, Result};

/// Memtable (write buffer) size.
const WRITE_BUFFER_BYTES: usize = 64 << 20;

/// Block size of the block-based tables.
const BLOCK_BYTES: usize = 4 << 10;

/// Bloom filter bits per key (db_bench's usual setting).
const BLOOM_BITS: f64 = 10.0;

/// RocksDB.
pub struct RocksDb {
    db: DB,
    /// The shared block cache (also referenced by the table options), for its usage figure.
    cache: Cache,
    sync: bool,
    describe: String,
}

impl RocksDb {
    /// Opens (creates) a database in `cfg.dir`.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        let cache_bytes = usize::try_from(cfg.cache_bytes).map_err(err)?;
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_block_size(BLOCK_BYTES);
        table.set_bloom_filter(BLOOM_BITS, false);
        table.set_cache_index_and_filter_blocks(false);

        let jobs =
            std::thread::available_parallelism().map(usize::from).unwrap_or(1).clamp(1, 64) as i32;
        let compression =
            if cfg.compression { DBCompressionType::Lz4 } else { DBCompressionType::None };
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.increase_parallelism(jobs);
        opts.set_max_background_jobs(jobs);
        opts.set_compression_type(compression);
        opts.set_bottommost_compression_type(compression);
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, &cfg.dir).map_err(err)?;

        let sync = cfg.mode == Mode::Sync;
        let meaning = match cfg.mode {
            Mode::Sync => {
                "sync: WAL on, WriteOptions.sync=true: the WAL is fdatasynced before every \
                 put/delete/WriteBatch returns (one sync per batch; concurrent writers share one \
                 sync through group commit)"
            }
            Mode::Normal | Mode::Async => {
                "normal/async (same for RocksDB): WAL on, WriteOptions.sync=false: each write's \
                 WAL record is appended with write(2) into the OS page cache before the call \
                 returns, never synced per operation; survives a process crash, not a power loss \
                 (disableWAL would be faster but not crash-safe)"
            }
        };
        let describe = format!(
            "RocksDB via rocksdb 0.25.0 (librocksdb-sys 0.19.0+11.8.1 = RocksDB 11.8.1): \
             {meaning}; default column family; LRU block cache {} MiB, {} KiB blocks, bloom \
             {BLOOM_BITS} bits/key, index/filter blocks outside the cache; compression {}; \
             write_buffer_size {} MiB, leveled compaction, max_background_jobs {jobs} \
             (increase_parallelism {jobs}); other options default; sync() = FlushWAL(sync=true)",
            cfg.cache_bytes >> 20,
            BLOCK_BYTES >> 10,
            if cfg.compression { "LZ4 on every level" } else { "off" },
            WRITE_BUFFER_BYTES >> 20,
        );
        Ok(RocksDb { db, cache, sync, describe })
    }

    fn write_opts(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        wo
    }

    fn property(&self, name: &PropName) -> Option<u64> {
        self.db.property_int_value(name).ok().flatten()
    }
}

impl Engine for RocksDb {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put_opt(key, value, &self.write_opts()).map_err(err)
    }

    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match self.db.get_pinned(key).map_err(err)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.db.delete_opt(key, &self.write_opts()).map_err(err)
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        self.db.write_opt(batch, &self.write_opts()).map_err(err)
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut it = self.db.raw_iterator();
        it.seek(start);
        let mut n = 0;
        while n < limit && it.valid() {
            match (it.key(), it.value()) {
                (Some(k), Some(v)) => visit(k, v),
                _ => break,
            }
            n += 1;
            it.next();
        }
        it.status().map_err(err)?;
        Ok(n)
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(err)
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "block_cache_usage_bytes": self.cache.get_usage(),
            "estimate_num_keys": self.property(properties::ESTIMATE_NUM_KEYS),
            "total_sst_files_bytes": self.property(properties::TOTAL_SST_FILES_SIZE),
            "memtables_bytes": self.property(properties::CUR_SIZE_ALL_MEM_TABLES),
            "pending_compaction_bytes": self.property(properties::ESTIMATE_PENDING_COMPACTION_BYTES),
            "running_flushes": self.property(properties::NUM_RUNNING_FLUSHES),
            "running_compactions": self.property(properties::NUM_RUNNING_COMPACTIONS),
        }))
    }
}
