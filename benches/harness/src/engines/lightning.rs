//! `lightning_db` under the harness, through its public API only.
//!
//! `transfer` and `same_partition` keep the trait's defaults (no transactions, one partition)
//! until lightning_db has cross-shard transactions, so the `transfer` workload skips it.

use std::sync::Mutex;

use lightning_db::{Database, DbStats, LightningDbConfig, OpKind, WalSyncMode, WriteBatch};

use crate::engine::{
    apply_transfer, decode_balance, err, BatchOp, Engine, EngineConfig, Mode, Result, Transfer,
};

/// Lightning DB.
pub struct Lightning {
    db: Database,
    describe: String,
    /// Statistics at the start of the measured phase.
    baseline: Mutex<Option<DbStats>>,
}

impl Lightning {
    /// Opens a database in `cfg.dir`.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        let wal_sync_mode = match cfg.mode {
            Mode::Sync => WalSyncMode::Sync,
            Mode::Normal => WalSyncMode::Normal,
            Mode::Async => WalSyncMode::Async,
        };
        let mut config = LightningDbConfig {
            wal_sync_mode,
            cache_size: cfg.cache_bytes.max(1),
            compression_enabled: cfg.compression,
            ..Default::default()
        };
        if cfg.shards > 0 {
            config.shards = cfg.shards;
        }
        config.pin_shards = cfg.pin_shards;
        // The memtable budget per shard, to measure reads of data flushed to the tree with a
        // data set smaller than the default 64 MiB memtables.
        if let Some(mb) =
            std::env::var("LIGHTNING_MEMTABLE_MB").ok().and_then(|v| v.parse::<usize>().ok())
        {
            config.memtable_bytes = mb << 20;
        }
        if let Some(us) = cfg.spin_us {
            config.spin_before_park_us = us;
        }
        if cfg.max_value_bytes > config.max_value_bytes {
            config.max_value_bytes = cfg.max_value_bytes;
            config.max_batch_bytes = config.max_batch_bytes.max(2 * cfg.max_value_bytes + 4096);
            config.wal_segment_bytes = config
                .wal_segment_bytes
                .max((config.max_batch_bytes as u64 + 8192).next_multiple_of(4096));
        }
        let db = Database::open(&cfg.dir, config.clone()).map_err(err)?;
        let meaning = match cfg.mode {
            Mode::Sync => "WalSyncMode::Sync: each write's WAL group written with O_DIRECT|O_DSYNC before the reply (survives power loss)",
            Mode::Normal => "WalSyncMode::Normal: WAL record copied into the page cache (mapped segment) before the reply, fdatasync every 100 ms (survives kill -9)",
            Mode::Async => "WalSyncMode::Async: reply after the memtable apply, WAL copied right after, fdatasync every 100 ms",
        };
        let describe = format!(
            "lightning_db {}: {meaning}; {} shards ({}, idle poll {} us); cache {} MiB; memtables {} MiB per shard",
            env!("CARGO_PKG_VERSION"),
            db.shard_count(),
            if config.pin_shards { "pinned" } else { "unpinned" },
            config.spin_before_park_us,
            config.cache_size >> 20,
            config.memtable_bytes >> 20
        );
        Ok(Lightning { db, describe, baseline: Mutex::new(None) })
    }
}

impl Engine for Lightning {
    fn name(&self) -> &'static str {
        "lightning"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(key, value).map_err(err)
    }

    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match self.db.get(key).map_err(err)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.db.delete(key).map_err(err)
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put(k, v).map_err(err)?,
                None => batch.delete(k).map_err(err)?,
            }
        }
        self.db.write_batch(&batch).map_err(err)
    }

    /// One snapshot-isolation transaction: read both balances at its snapshot, write both;
    /// the two keys are on different shards (`same_partition`), so the commit is a two-phase
    /// commit. A lost first-committer race is `Transfer::Conflict`.
    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        let tx = self.db.begin().map_err(err)?;
        let a = decode_balance(tx.get(from).map_err(err)?.as_deref())?;
        let b = decode_balance(tx.get(to).map_err(err)?.as_deref())?;
        let (a, b) = apply_transfer(a, b, amount);
        tx.put(from, a.to_le_bytes()).map_err(err)?;
        tx.put(to, b.to_le_bytes()).map_err(err)?;
        match tx.commit() {
            Ok(()) => Ok(Some(Transfer::Committed)),
            Err(e) if e.is_retryable() => Ok(Some(Transfer::Conflict)),
            Err(e) => Err(err(e)),
        }
    }

    fn same_partition(&self, a: &[u8], b: &[u8]) -> bool {
        self.db.shard_count() > 1 && self.db.shard_for_key(a) == self.db.shard_for_key(b)
    }

    fn multi_get(&self, keys: &[Vec<u8>]) -> Result<usize> {
        Ok(self.db.multi_get(keys).map_err(err)?.iter().filter(|v| v.is_some()).count())
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut n = 0;
        for item in self.db.scan(Some(start), None).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn sync(&self) -> Result<()> {
        self.db.sync().map_err(err)
    }

    fn phase_start(&self) {
        if let Ok(mut baseline) = self.baseline.lock() {
            *baseline = self.db.stats().ok();
        }
    }

    fn stats(&self) -> Option<serde_json::Value> {
        let now = self.db.stats().ok()?;
        let stats = match self.baseline.lock().ok().as_deref() {
            Some(Some(before)) => now.since(before),
            _ => now,
        };
        let shards: Vec<serde_json::Value> = stats.shards.iter().map(shard_json).collect();
        Some(serde_json::json!({ "shards": shards, "total": shard_json(&stats.total()) }))
    }
}

fn shard_json(s: &lightning_db::ShardStats) -> serde_json::Value {
    let ops: serde_json::Map<String, serde_json::Value> = OpKind::ALL
        .iter()
        .map(|&k| {
            let h = s.latency(k);
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            (
                k.name().to_string(),
                serde_json::json!({
                    "count": s.ops(k),
                    "p50_us": us(0.5), "p99_us": us(0.99), "p999_us": us(0.999),
                    "max_us": h.max() as f64 / 1000.0, "mean_us": h.mean() / 1000.0,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "shard": s.shard_id,
        "ops": ops,
        "errors": s.errors,
        "drain_depth_mean": s.drain_depth.mean(),
        "drain_depth_max": s.drain_depth.max(),
        "wal_bytes": s.wal_bytes,
        "wal_records": s.wal_records,
        "wal_group_writes": s.wal_group_writes,
        "wal_records_per_group_mean": s.wal_records_per_group.mean(),
        "fdatasyncs": s.fdatasyncs,
        "turns": s.turns,
        "stalls": s.stall_count,
        "recent_stalls": s.recent_stalls.iter().map(|st| serde_json::json!({
            "ms": st.duration.as_secs_f64() * 1e3, "phase": st.phase,
            "phase_ms": st.phase_duration.as_secs_f64() * 1e3,
        })).collect::<Vec<_>>(),
        "cache_hits": s.cache_hits,
        "cache_misses": s.cache_misses,
        "memtable_bytes": s.memtable_bytes,
        "memtable_versions": s.memtable_versions,
    })
}
