//! The one trait every measured engine is driven through, with the same knobs for all.
//!
//! Each engine says what its durability mode means in `describe` (it goes into every report):
//! "sync" is durable on return for every engine; "normal"/"async" are each engine's cheaper
//! modes (for peers without such a distinction, both map to their no-fsync mode).

use std::path::PathBuf;

/// Errors of the harness: a message.
#[derive(Debug)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// Result alias of the harness.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Wraps any displayable error.
pub fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(e.to_string())
}

/// Durability mode of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every write durable on return (power-loss safe).
    Sync,
    /// Survives a process crash; synced in the background.
    Normal,
    /// May lose the last moments of writes on a crash.
    Async,
}

impl Mode {
    /// Parses `sync`, `normal` or `async`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "sync" => Some(Mode::Sync),
            "normal" | "nosync" => Some(Mode::Normal),
            "async" => Some(Mode::Async),
            _ => None,
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Normal => "normal",
            Mode::Async => "async",
        }
    }
}

/// What an engine is opened with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// A fresh, empty directory.
    pub dir: PathBuf,
    /// Durability mode.
    pub mode: Mode,
    /// Cache size, bytes (engines without a cache ignore it and say so).
    pub cache_bytes: u64,
    /// Compression on (where the engine has it).
    pub compression: bool,
    /// Shards (lightning only; 0 = its default, one per CPU).
    pub shards: usize,
    /// Pin shard threads to CPUs (lightning only; its default is true).
    pub pin_shards: bool,
    /// How long an idle shard thread polls before it parks, µs (lightning only; `None`: its
    /// default).
    pub spin_us: Option<u64>,
    /// Largest value the workload writes (engines with a value limit are configured for it).
    pub max_value_bytes: usize,
    /// Open for [`Engine::transfer`] (the `transfer` workload only): an engine whose
    /// transactional database is a different type from its plain one (fjall's
    /// `OptimisticTxDatabase`) opens that instead; every other engine ignores it, so the other
    /// workloads open exactly what they did before.
    pub transactional: bool,
}

/// One operation of an atomic batch: a put (`Some(value)`) or a delete (`None`).
pub type BatchOp<'a> = (&'a [u8], Option<&'a [u8]>);

/// How one [`Engine::transfer`] attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Both balances were written and the transaction committed.
    Committed,
    /// The engine's optimistic concurrency control refused the commit (another transaction
    /// wrote a key this one read): nothing was written, and the caller retries.
    Conflict,
}

/// The balance stored in an account's value: 8 bytes, `u64` little-endian; a missing key is 0.
pub fn decode_balance(value: Option<&[u8]>) -> Result<u64> {
    match value {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v).map(u64::from_le_bytes).map_err(|_| {
            BenchError(format!("an account's value is {} bytes, not an 8-byte balance", v.len()))
        }),
    }
}

/// The balances after moving `amount` from an account holding `from` to one holding `to`:
/// the debit saturates at `from`, and `to` is credited with what was actually debited, so the
/// sum of the two never changes (the workload's invariant).
pub fn apply_transfer(from: u64, to: u64, amount: u64) -> (u64, u64) {
    let moved = amount.min(from);
    (from - moved, to.saturating_add(moved))
}

/// A key-value store under test. `&self` everywhere: engines are shared by every thread.
pub trait Engine: Send + Sync {
    /// Engine name.
    fn name(&self) -> &'static str;
    /// The exact configuration and what the durability mode means for this engine.
    fn describe(&self) -> String;
    /// Insert or overwrite.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Point read: copies the value into `out` on a hit.
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool>;
    /// Point reads of several keys in one call; returns how many were found. By default one
    /// `get` after another; an engine with a batched read overrides it.
    fn multi_get(&self, keys: &[Vec<u8>]) -> Result<usize> {
        let mut out = Vec::new();
        let mut found = 0;
        for k in keys {
            found += usize::from(self.get(k, &mut out)?);
        }
        Ok(found)
    }
    /// Remove.
    fn delete(&self, key: &[u8]) -> Result<()>;
    /// Apply `ops` atomically (as far as the engine can: lightning is atomic per shard).
    fn write_batch(&self, ops: &[BatchOp<'_>]) -> Result<()>;
    /// Visit up to `limit` entries from `start` in key order; returns how many.
    fn scan(
        &self,
        start: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<usize>;
    /// Make everything written durable (untimed, between phases).
    fn sync(&self) -> Result<()>;
    /// The measured phase starts now: an engine that keeps statistics takes its baseline, so
    /// [`Engine::stats`] reports the measured phase alone (not the preload).
    fn phase_start(&self) {}
    /// The engine's own statistics as JSON, if it keeps any: since [`Engine::phase_start`].
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }
    /// One transaction of the `transfer` workload: read the balances of `from` and `to`
    /// ([`decode_balance`]), write both back after [`apply_transfer`], commit with the mode's
    /// durability. `from != to`. An optimistic conflict is `Ok(Some(Transfer::Conflict))`, not
    /// an error: nothing was written and the runner retries the same transfer. `Ok(None)` (the
    /// default) means the engine has no transactions, and the workload skips it.
    fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Result<Option<Transfer>> {
        let _ = (from, to, amount);
        Ok(None)
    }
    /// True when `a` and `b` live in the same partition (shard) of the engine. The `transfer`
    /// workload re-picks its second account while this holds (a bounded number of times), so a
    /// partitioned engine is measured on transactions that span two partitions. The default,
    /// false, suits every engine that is not partitioned.
    fn same_partition(&self, a: &[u8], b: &[u8]) -> bool {
        let _ = (a, b);
        false
    }
}

/// Names of the engines this build can open.
pub fn available() -> Vec<&'static str> {
    let mut v = vec!["lightning"];
    if cfg!(feature = "fjall") {
        v.push("fjall");
    }
    if cfg!(feature = "redb") {
        v.push("redb");
    }
    if cfg!(feature = "sled") {
        v.push("sled");
    }
    if cfg!(feature = "lmdb") {
        v.push("lmdb");
    }
    if cfg!(feature = "rocksdb") {
        v.push("rocksdb");
    }
    v
}

/// Opens engine `name` in `cfg.dir`.
pub fn open(name: &str, cfg: &EngineConfig) -> Result<Box<dyn Engine>> {
    match name {
        "lightning" => Ok(Box::new(crate::engines::lightning::Lightning::open(cfg)?)),
        #[cfg(feature = "fjall")]
        "fjall" => Ok(Box::new(crate::engines::fjall::Fjall::open(cfg)?)),
        #[cfg(feature = "redb")]
        "redb" => Ok(Box::new(crate::engines::redb::Redb::open(cfg)?)),
        #[cfg(feature = "sled")]
        "sled" => Ok(Box::new(crate::engines::sled::Sled::open(cfg)?)),
        #[cfg(feature = "lmdb")]
        "lmdb" => Ok(Box::new(crate::engines::lmdb::Lmdb::open(cfg)?)),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Ok(Box::new(crate::engines::rocksdb::RocksDb::open(cfg)?)),
        other => Err(BenchError(format!(
            "engine `{other}` is not in this build (available: {}; peers need their cargo feature, e.g. --features peers)",
            available().join(", ")
        ))),
    }
}
