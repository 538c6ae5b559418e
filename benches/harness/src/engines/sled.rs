//! sled 0.34 (the latest stable release; 1.0 is an alpha with another API) under the harness:
//! the default tree, `cache_capacity` = `cache_bytes`, `Mode::HighThroughput`, batches through
//! `Db::apply_batch`.
//!
//! Durability: normal/async leave writes in sled's in-memory log buffers, which a background
//! thread writes and fsyncs every 500 ms. Sync mode calls `Db::flush()` after every
//! put/delete/batch and then fdatasyncs the log file `<dir>/db` itself: sled 0.34's flush only
//! waits with sync_file_range, which neither flushes the device cache nor syncs metadata.
//!
//! Transactions: a transfer is one `Tree::transaction` (read both, write both), made durable
//! like a batch in sync mode. sled reruns a conflicting transaction inside `transaction`
//! itself and does not say how often, so the harness counts no conflicts for sled.

use std::fs::File;
use std::path::{Path, PathBuf};

use ::sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::engine::{
    apply_transfer, decode_balance, err, BatchOp, BenchError, Engine, EngineConfig, Mode, Result,
    Transfer,
};

/// sled's default segment size; log messages above a quarter of it become files in `blobs/`.
const SEGMENT_BYTES: usize = 512 << 10;

/// sled's background flush period (its default), stated in the report.
const FLUSH_EVERY_MS: u64 = 500;

/// sled 0.34.
pub struct Sled {
    db: ::sled::Db,
    /// Sync mode: a handle on sled's log file `<dir>/db`, fdatasynced after every flush.
    log: Option<File>,
    dir: PathBuf,
    describe: String,
}

impl Sled {
    /// Opens a database in `cfg.dir`.
    pub fn open(cfg: &EngineConfig) -> Result<Self> {
        let db = ::sled::Config::new()
            .path(&cfg.dir)
            .cache_capacity(cfg.cache_bytes)
            .mode(::sled::Mode::HighThroughput)
            .use_compression(false)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(err)?;
        let log = match cfg.mode {
            Mode::Sync => Some(File::open(cfg.dir.join("db")).map_err(err)?),
            Mode::Normal | Mode::Async => None,
        };
        let blob_threshold = SEGMENT_BYTES / 4 - 20;
        let meaning = match cfg.mode {
            Mode::Sync => format!(
                "sync: after every insert/remove/batch Db::flush() (writes the log buffers, waits \
                 with sync_file_range) followed by fdatasync of <dir>/db by the harness, one per \
                 batch; caveat: sled writes log messages above ~{} KiB (values or node images) \
                 as separate files under blobs/ and never fsyncs them, so those are not \
                 power-loss durable until sync(){}",
                blob_threshold >> 10,
                if cfg.max_value_bytes >= blob_threshold {
                    " (this workload's values are that large)"
                } else {
                    ""
                }
            ),
            Mode::Normal | Mode::Async => format!(
                "normal/async (same for sled): sled's normal mode: writes go to in-memory log \
                 buffers, a background thread writes and fsyncs them every {FLUSH_EVERY_MS} ms \
                 (flush_every_ms default); no per-operation write or sync, so a process crash \
                 can lose the last ~{FLUSH_EVERY_MS} ms"
            ),
        };
        let describe = format!(
            "sled 0.34.7: {meaning}; cache_capacity {} MiB, Mode::HighThroughput, default tree, \
             batches via Db::apply_batch (atomic); compression off (sled's zstd needs its \
             `compression` feature, not built, so --compression is ignored); sync() = flush() + \
             fsync of <dir>/db and of every file in blobs/",
            cfg.cache_bytes >> 20
        );
        Ok(Sled { db, log, dir: cfg.dir.clone(), describe })
    }

    fn after_write(&self) -> Result<()> {
        if let Some(log) = &self.log {
            self.db.flush().map_err(err)?;
            // fsync works per inode: syncing this descriptor syncs sled's writes too.
            log.sync_data().map_err(err)?;
        }
        Ok(())
    }
}

/// fsyncs every file directly in `dir` and `dir` itself (missing `dir` is fine).
fn sync_dir_files(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for entry in entries {
        let path = entry.map_err(err)?.path();
        if path.is_file() {
            File::open(&path).and_then(|f| f.sync_all()).map_err(err)?;
        }
    }
    File::open(dir).and_then(|f| f.sync_all()).map_err(err)
}

impl Engine for Sled {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.insert(key, value).map_err(err)?;
        self.after_write()
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
        self.db.remove(key).map_err(err)?;
        self.after_write()
    }

    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()> {
        let mut batch = ::sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(*k, *v),
                None => batch.remove(*k),
            }
        }
        self.db.apply_batch(batch).map_err(err)?;
        self.after_write()
    }

    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize> {
        let mut n = 0;
        for item in self.db.range(start..).take(limit) {
            let (k, v) = item.map_err(err)?;
            visit(&k, &v);
            n += 1;
        }
        Ok(n)
    }

    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        // A balance that does not decode aborts the transaction with the harness's error.
        let decode = |v: Option<::sled::IVec>| {
            decode_balance(v.as_deref()).map_err(ConflictableTransactionError::Abort)
        };
        self.db
            .transaction(|tx| {
                let a = decode(tx.get(from)?)?;
                let b = decode(tx.get(to)?)?;
                let (a, b) = apply_transfer(a, b, amount);
                tx.insert(from, &a.to_le_bytes()[..])?;
                tx.insert(to, &b.to_le_bytes()[..])?;
                Ok(())
            })
            .map_err(|e: TransactionError<BenchError>| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => err(e),
            })?;
        self.after_write()?;
        Ok(Some(Transfer::Committed))
    }

    fn sync(&self) -> Result<()> {
        self.db.flush().map_err(err)?;
        File::open(self.dir.join("db")).and_then(|f| f.sync_all()).map_err(err)?;
        sync_dir_files(&self.dir.join("blobs"))
    }

    fn stats(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "size_on_disk_bytes": self.db.size_on_disk().ok(),
        }))
    }
}
