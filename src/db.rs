//! `Database`: open, read, write, scan, sync, close.
//!
//! Caller-side and shared: one `Database` is used from any number of threads (`Send + Sync`).
//! Writes are routed to the owning shard's ingress queue and the caller waits for the
//! acknowledgement; reads are served on the caller's thread from the shard's published view
//! (its memtable at the shard's visible sequence), so a thread always reads its own
//! acknowledged writes and never a write that is not yet acknowledged.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lightning_shards::{
    Error, Limits, OpRef, Oracle, Result, ShardHandle, ShardStats, StartReport, StartingShard,
    Ticket, Ts, WalSyncMode,
};

use crate::batch::WriteBatch;
use crate::config::LightningDbConfig;
use crate::meta::{self, Meta, HASH_CRC32C_LEMIRE};
use crate::router::Router;
use crate::scan::{owned_bounds, prefix_bounds, DbIterator};
use crate::snapshot::{DbSnapshot, Snapshot};
use crate::txn::TxTable;

/// Memory held by a database's memtables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Approximate bytes of keys, values and index nodes.
    pub memtable_bytes: u64,
    /// Stored versions across all keys (old versions awaiting collection included).
    pub versions: u64,
}

/// Statistics of every shard, from [`Database::stats`].
#[derive(Clone, Debug)]
pub struct DbStats {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardStats>,
}

impl DbStats {
    /// All shards added together (histograms merged).
    pub fn total(&self) -> ShardStats {
        let mut total = ShardStats::new(0);
        for s in &self.shards {
            total.merge(s);
        }
        total
    }

    /// What every shard did between `earlier` and `self`, two snapshots of this database (see
    /// [`ShardStats::since`]): take one before a piece of work and one after to see that work
    /// alone. Shards missing from `earlier` are reported whole.
    pub fn since(&self, earlier: &DbStats) -> DbStats {
        let shards = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| earlier.shards.get(i).map_or_else(|| s.clone(), |e| s.since(e)))
            .collect();
        DbStats { shards }
    }
}

/// An open Lightning DB database.
pub struct Database {
    path: PathBuf,
    shards: Vec<ShardHandle>,
    router: Router,
    limits: Limits,
    mode: WalSyncMode,
    oracle: Arc<Oracle>,
    transactions: Arc<TxTable>,
    /// Rolls back transactions left open past the timeout.
    reaper: Option<std::thread::JoinHandle<()>>,
    // Released last, after every shard has stopped.
    _lock: meta::DirLock,
}

impl Database {
    /// Opens the database in directory `path`, creating it if needed (`create_if_missing`).
    /// Replays every shard's WAL before returning.
    pub fn open(path: impl AsRef<Path>, config: LightningDbConfig) -> Result<Database> {
        Database::open_on(path.as_ref(), config, &Backend::Disk)
    }

    /// Opens the database whose shards keep their files on the simulated disk `disk` (the
    /// lock and `META` stay in the real directory `path`, which must exist or be creatable).
    /// For tests: `disk` can lose power, tear and fail writes (`sim`).
    #[cfg(feature = "simulation")]
    pub fn open_simulated(
        disk: &crate::sim::SimDisk,
        path: impl AsRef<Path>,
        config: LightningDbConfig,
    ) -> Result<Database> {
        Database::open_on(path.as_ref(), config, &Backend::Simulated(disk.clone()))
    }

    fn open_on(path: &Path, config: LightningDbConfig, backend: &Backend) -> Result<Database> {
        config.validate()?;
        let path = path.to_path_buf();
        meta::ensure_dir(&path, config.create_if_missing)?;
        // Before the lock file exists: a refused directory is left exactly as it was.
        meta::check_can_hold_database(&path, config.create_if_missing)?;
        let lock = meta::lock(&path)?;
        let wanted = Meta {
            shards: config.shards as u32,
            page_size: config.page_size,
            hash: HASH_CRC32C_LEMIRE,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let meta = meta::load_or_create(&path, wanted, config.create_if_missing)?;
        check_meta(&path, &meta)?;
        // The page size is the database's: the limits must hold for it too.
        let config = LightningDbConfig { page_size: meta.page_size, ..config };
        config.validate()?;
        let oracle = Oracle::new();
        let shards = start_shards(&path, &config, meta.shards as usize, backend, &oracle)?;
        let transactions =
            TxTable::new(config.max_active_transactions, config.transaction_timeout_ms);
        let mut db = Database {
            path,
            router: Router::new(meta.shards),
            shards,
            limits: config.limits(),
            mode: config.wal_sync_mode,
            oracle,
            transactions,
            reaper: None,
            _lock: lock,
        };
        // Nothing is accepted before every commit a crash left in doubt is settled.
        db.resolve_in_doubt()?;
        if db.transactions.has_timeout() {
            let table = db.transactions.clone();
            let reaper = std::thread::Builder::new()
                .name("ldb-tx-reaper".into())
                .spawn(move || table.reap())
                .map_err(|e| Error::io("spawn transaction reaper thread", "", e))?;
            db.reaper = Some(reaper);
        }
        Ok(db)
    }

    /// The directory of this database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of shards (fixed when the database was created).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The durability mode this handle writes with.
    pub fn wal_sync_mode(&self) -> WalSyncMode {
        self.mode
    }

    /// What each shard found at start-up: pinned CPU, ring flags, records replayed.
    pub fn start_reports(&self) -> Vec<StartReport> {
        self.shards.iter().map(|s| s.report().clone()).collect()
    }

    /// Memory held by the shards' memtables right now (all versions, tombstones included).
    pub fn memory_usage(&self) -> MemoryUsage {
        let mut usage = MemoryUsage::default();
        for shard in &self.shards {
            let (bytes, versions) = shard.memtable_usage();
            usage.memtable_bytes += bytes;
            usage.versions += versions;
        }
        usage
    }

    /// Each shard's statistics: operation counts and engine-side latency histograms, ingress
    /// depth at drain, WAL bytes, records and group writes, fdatasyncs, loop turns and stalls,
    /// memtable size. Asks every shard through its queue (one message each).
    pub fn stats(&self) -> Result<DbStats> {
        let shards = self.shards.iter().map(ShardHandle::stats).collect::<Result<_>>()?;
        Ok(DbStats { shards })
    }

    /// Sets `key` to `value`. Returns once the write is acknowledged under the configured
    /// `WalSyncMode`.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check_key(key)?;
        self.check_value(value)?;
        self.write_one(OpRef::Put { key, value })
    }

    /// Removes `key` (a no-op if absent). Returns once acknowledged.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        self.check_key(key)?;
        self.write_one(OpRef::Delete { key })
    }

    fn write_one(&self, op: OpRef<'_>) -> Result<()> {
        self.shard_of(op.key()).write(op)
    }

    /// The shard that owns `key`.
    pub(crate) fn shard_index(&self, key: &[u8]) -> usize {
        self.router.shard_for(key)
    }

    pub(crate) fn shard_of(&self, key: &[u8]) -> &ShardHandle {
        &self.shards[self.router.shard_for(key)]
    }

    /// Every shard, in order.
    pub(crate) fn shard_handles(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// The index of the shard that owns `key` (`0..shard_count()`): two keys with different
    /// indexes live on different shards, so a write to both is a cross-shard commit.
    pub fn shard_for_key(&self, key: impl AsRef<[u8]>) -> usize {
        self.router.shard_for(key.as_ref())
    }

    /// A consistent view of the whole database as of now: every read through it sees the
    /// same commits on every shard (never part of a cross-shard commit), and it includes
    /// every write this thread had acknowledged. Old versions it can see are kept until it is
    /// dropped, so do not hold one longer than needed.
    pub fn snapshot(&self) -> Result<Snapshot<'_>> {
        Ok(Snapshot::new(self, self.take_snapshot()?))
    }

    /// Registers a snapshot above every shard's visible watermark and fences every shard at
    /// it (`docs/ARCHITECTURE.md`, "One timestamp order").
    /// Every shard's layers are pinned after its fence, so a flush afterwards changes
    /// nothing the snapshot reads.
    pub(crate) fn take_snapshot(&self) -> Result<Arc<DbSnapshot>> {
        let guard = self
            .oracle
            .register(|| self.shards.iter().map(ShardHandle::visible_ts).max().unwrap_or(Ts::ZERO));
        let mut shards = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            shard.fence(guard.ts())?;
            shards.push(shard.snapshot_at(guard.ts()));
        }
        Ok(Arc::new(DbSnapshot::new(guard, shards)))
    }

    /// The database's timestamp order.
    pub(crate) fn oracle(&self) -> &Arc<Oracle> {
        &self.oracle
    }

    /// The open transactions.
    pub(crate) fn transactions(&self) -> &TxTable {
        &self.transactions
    }

    /// The size limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.check_key(key)?;
        self.shard_of(key).get(key)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.get(key).map(|v| v.is_some())
    }

    /// Flushes every shard's memtable into its tree, rewrites each tree into the lowest pages
    /// of its file and gives the free tail back to the file system. Returns the bytes given
    /// back. Reads and writes go on meanwhile (each shard's loop runs the compaction's steps).
    pub fn compact(&self) -> Result<u64> {
        let mut bytes = 0;
        for shard in &self.shards {
            bytes += shard.compact()?;
        }
        Ok(bytes)
    }

    /// Walks every page of every shard's on-disk tree and checks it (header, checksum, the
    /// checksum its parent's pointer carries, the body's format): the pages checked, or the
    /// first damage found as `Error::Corruption { file, offset }`.
    pub fn verify(&self) -> Result<u64> {
        let mut pages = 0;
        for shard in &self.shards {
            pages += shard.verify()?;
        }
        Ok(pages)
    }

    /// The values of several keys, in the order given, all read at one snapshot (a
    /// cross-shard commit is seen whole or not at all). Keys that must be read from the
    /// shards' on-disk trees are read in flight together, from every shard at once
    /// (`docs/adr/0004-read-path.md`).
    pub fn multi_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        for k in keys {
            self.check_key(k.as_ref())?;
        }
        if keys.len() <= 1 {
            return keys.iter().map(|k| self.get(k)).collect();
        }
        self.snapshot()?.multi_get(keys)
    }

    /// Applies `batch` atomically: every operation or none, across any shards, and across
    /// any crash its `WalSyncMode` promises to survive. A batch on one shard is one WAL record;
    /// across shards it is a two-phase commit (`docs/ARCHITECTURE.md`, "Cross-shard commits").
    /// Returns once it is acknowledged.
    pub fn write_batch(&self, batch: &WriteBatch) -> Result<()> {
        let mut bytes = vec![0usize; self.shards.len()];
        let mut shards_touched = 0;
        let mut last_shard = 0;
        for op in batch.ops() {
            self.check_key(op.key())?;
            if let Some(v) = op.value() {
                self.check_value(v)?;
            }
            let shard = self.router.shard_for(op.key());
            if bytes[shard] == 0 {
                shards_touched += 1;
                last_shard = shard;
            }
            bytes[shard] += op.encoded_bytes();
        }
        if let Some(&over) = bytes.iter().find(|&&b| b > self.limits.max_batch_bytes) {
            return Err(Error::LimitExceeded {
                what: "batch bytes on one shard",
                actual: over as u64,
                max: self.limits.max_batch_bytes as u64,
            });
        }
        match shards_touched {
            0 => Ok(()),
            1 => {
                let ops: Vec<OpRef<'_>> = batch.ops().collect();
                self.send_part(last_shard, &ops)
            }
            _ => {
                let ops: Vec<OpRef<'_>> = batch.ops().collect();
                self.commit_batch(&ops)
            }
        }
    }

    /// A one-shard batch, the fast way: applied by this thread under the shard's commit lock
    /// (or by the shard thread, for a large part when the shard runs on another CPU).
    fn send_part(&self, shard: usize, ops: &[OpRef<'_>]) -> Result<()> {
        let handle = &self.shards[shard];
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut ticket = Ticket::new(1);
            if handle.offloads(ops.len()) {
                handle.send_batch(ops, &mut ticket);
            } else {
                handle.submit_batch(ops, &mut ticket);
            }
            match ticket.wait() {
                // A key is held by a cross-shard commit in progress: it finishes shortly.
                Err(Error::Conflict { .. })
                    if started.elapsed() < crate::commit::BLOCKED_WRITE_PATIENCE =>
                {
                    crate::txn::backoff(attempt)
                }
                other => return other,
            }
        }
    }

    /// Entries with `start <= key < end` in key order (`None`: unbounded), read at one
    /// snapshot taken now. The iterator yields `Result<(key, value)>`; `.rev()` walks it
    /// backwards.
    pub fn scan(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<DbIterator> {
        self.snapshot()?.scan(start, end)
    }

    /// Entries whose keys fall in `range`, in key order, e.g. `db.range(b"a".as_slice()..b"m")`.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<DbIterator> {
        let (lower, upper) = owned_bounds(&range);
        Ok(self.snapshot()?.iter(lower, upper))
    }

    /// Entries whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<DbIterator> {
        let (lower, upper) = prefix_bounds(prefix.as_ref());
        Ok(self.snapshot()?.iter(lower, upper))
    }

    /// Makes every write acknowledged so far durable (fdatasync on every shard).
    pub fn sync(&self) -> Result<()> {
        let mut ticket = Ticket::new(self.shards.len() as u32);
        for shard in &self.shards {
            shard.submit_sync(&mut ticket);
        }
        ticket.wait()
    }

    /// Makes every write acknowledged so far durable. Same as [`Database::sync`] until the
    /// storage below the memtable exists; then it also writes memtables out.
    pub fn flush(&self) -> Result<()> {
        self.sync()
    }

    /// Makes everything durable, stops every shard and releases the directory lock.
    /// Returns the first error a shard reported while stopping.
    pub fn close(mut self) -> Result<()> {
        self.stop_shards()
    }

    fn stop_shards(&mut self) -> Result<()> {
        self.transactions.stop();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
        // Every shard is asked before any is waited for: they finish their flush step, sync
        // and free their memtables in parallel.
        let stopping: Vec<_> = self.shards.iter().filter_map(|s| s.begin_shutdown()).collect();
        let mut first = Ok(());
        for s in stopping {
            let r = s.wait();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(empty_key());
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(Error::LimitExceeded {
                what: "key bytes",
                actual: key.len() as u64,
                max: self.limits.max_key_bytes as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.limits.max_value_bytes {
            return Err(Error::LimitExceeded {
                what: "value bytes",
                actual: value.len() as u64,
                max: self.limits.max_value_bytes as u64,
            });
        }
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = self.stop_shards() {
            log::warn!("closing {} on drop: {e}", self.path.display());
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// The error for an empty key: keys are 1 to `max_key_bytes` bytes (an empty slice is still a
/// valid scan bound).
pub(crate) fn empty_key() -> Error {
    Error::InvalidArgument { what: "an empty key: keys are 1 to max_key_bytes bytes long".into() }
}

fn check_meta(path: &Path, meta: &Meta) -> Result<()> {
    if meta.hash != HASH_CRC32C_LEMIRE {
        return Err(Error::corruption(
            path.join(meta::META_FILE),
            meta::AT_HASH as u64,
            format!("unknown key hash id {}", meta.hash),
        ));
    }
    if meta.shards == 0 || meta.shards as usize > crate::config::MAX_SHARDS {
        return Err(Error::corruption(
            path.join(meta::META_FILE),
            meta::AT_SHARDS as u64,
            format!("shard count {} out of range", meta.shards),
        ));
    }
    Ok(())
}

/// Spawns every shard (they replay their WALs in parallel), then waits for all of them.
/// Where the shards keep their files.
enum Backend {
    /// The real disk, through each shard's io_uring ring.
    Disk,
    /// A simulated disk (tests).
    #[cfg(feature = "simulation")]
    Simulated(crate::sim::SimDisk),
}

impl Backend {
    fn spawn(&self, config: lightning_shards::ShardConfig) -> Result<StartingShard> {
        match self {
            Backend::Disk => ShardHandle::spawn(config),
            #[cfg(feature = "simulation")]
            Backend::Simulated(disk) => {
                let disk = disk.clone();
                ShardHandle::spawn_with(config, move || Ok(disk.storage()))
            }
        }
    }
}

fn start_shards(
    path: &Path,
    config: &LightningDbConfig,
    count: usize,
    backend: &Backend,
    oracle: &Arc<Oracle>,
) -> Result<Vec<ShardHandle>> {
    let mut starting = Vec::with_capacity(count);
    let mut failure = None;
    for id in 0..count {
        match backend.spawn(config.shard_config(path, id, oracle)) {
            Ok(s) => starting.push(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let mut running = Vec::with_capacity(count);
    for s in starting {
        match s.ready() {
            Ok(h) => running.push(h),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        for h in &running {
            let _ = h.shutdown();
        }
        return Err(e);
    }
    Ok(running)
}
