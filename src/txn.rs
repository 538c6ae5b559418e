//! Transactions: the seed's id-based calls, the `Transaction` handle, and the commit path that
//! `write_batch` shares.
//!
//! Caller-side. A transaction reads at a database snapshot taken when it begins, buffers its
//! writes, and commits them all or none:
//! - on one shard, in one step under that shard's commit lock (validate, then one WRITE record);
//! - across shards, by two-phase commit driven from the caller's thread: every participant
//!   validates, locks its keys and logs a PREPARE; the coordinator (the lowest participant
//!   with writes) logs the DECISION; then, holding every participant's commit lock, one commit
//!   timestamp is taken and every part applied at it. No decision means abort.
//!
//! Isolation: snapshot isolation with first committer wins (a key written after the snapshot
//! by another commit refuses the commit with `Error::Conflict`), or serializable (the keys and
//! ranges it read are checked too). `docs/ARCHITECTURE.md`, "Transactions" and "Cross-shard
//! commits", has the protocol, the recovery rules and why readers are never blocked.
//!
//! Shared: the table of open transactions is used by every caller thread and by the reaper
//! thread, which rolls back transactions left open past `transaction_timeout_ms`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lightning_shards::{Error, KeyRange, OpRef, Result};

use crate::snapshot::DbSnapshot;

use crate::db::Database;
use crate::scan::{owned_bounds, DbIterator};

/// How a transaction is isolated from concurrent ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Reads see one snapshot; the commit fails with `Error::Conflict` if another commit
    /// wrote one of its keys after that snapshot (first committer wins). Write skew is
    /// possible. The default.
    #[default]
    Snapshot,
    /// As `Snapshot`, and the commit also fails if another commit wrote a key it read or a key
    /// inside a range it scanned after its snapshot: the outcome is as if the transactions ran
    /// one at a time.
    Serializable,
}

/// How many times [`Database::transaction`] runs its closure at most (conflicts retried).
pub const TRANSACTION_ATTEMPTS: usize = 16;

/// One open transaction's state.
struct TxState {
    snapshot: Arc<DbSnapshot>,
    isolation: Isolation,
    /// Buffered writes, by key (the last write of a key wins); `None` is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Bytes the writes take in a record.
    write_bytes: usize,
    /// Serializable: keys read.
    reads: BTreeSet<Vec<u8>>,
    /// Serializable: ranges scanned.
    ranges: Vec<KeyRange>,
    deadline: Option<Instant>,
}

type Shared = Arc<Mutex<TxState>>;

/// The open transactions of a database.
pub(crate) struct TxTable {
    open: Mutex<Table>,
    max_active: usize,
    timeout: Option<Duration>,
    /// Wakes the reaper early (to stop).
    wake: Condvar,
}

#[derive(Default)]
struct Table {
    txs: HashMap<u64, Shared>,
    /// Ids rolled back by the timeout, so their next use says so (bounded: oldest dropped).
    timed_out: BTreeSet<u64>,
    stopping: bool,
}

/// Ids remembered as timed out, at most.
const TIMED_OUT_KEPT: usize = 4096;

impl TxTable {
    pub(crate) fn new(max_active: usize, timeout_ms: u64) -> Arc<TxTable> {
        Arc::new(TxTable {
            open: Mutex::new(Table::default()),
            max_active,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
            wake: Condvar::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: u64, state: TxState) -> Result<()> {
        let mut table = self.table();
        if table.txs.len() >= self.max_active {
            sweep(&mut table, Instant::now());
            if table.txs.len() >= self.max_active {
                return Err(Error::TooManyTransactions { max: self.max_active });
            }
        }
        table.txs.insert(id, Arc::new(Mutex::new(state)));
        Ok(())
    }

    fn get(&self, id: u64) -> Result<Shared> {
        let mut table = self.table();
        let now = Instant::now();
        if let Some(tx) = table.txs.get(&id) {
            let expired = lock(tx).deadline.is_some_and(|d| now >= d);
            if !expired {
                return Ok(tx.clone());
            }
            table.txs.remove(&id);
            remember(&mut table, id);
        }
        if table.timed_out.contains(&id) {
            Err(Error::TransactionTimedOut { id })
        } else {
            Err(Error::TransactionNotFound { id })
        }
    }

    fn remove(&self, id: u64) -> Result<Shared> {
        let tx = self.get(id)?;
        self.table().txs.remove(&id);
        Ok(tx)
    }

    /// Open transactions right now.
    pub(crate) fn active(&self) -> usize {
        self.table().txs.len()
    }

    /// The reaper: rolls back expired transactions until the table is stopped.
    pub(crate) fn reap(&self) {
        let Some(timeout) = self.timeout else { return };
        let period = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut table = self.table();
        while !table.stopping {
            sweep(&mut table, Instant::now());
            table = match self.wake.wait_timeout(table, period) {
                Ok((t, _)) => t,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub(crate) fn stop(&self) {
        self.table().stopping = true;
        self.wake.notify_all();
    }

    pub(crate) fn has_timeout(&self) -> bool {
        self.timeout.is_some()
    }
}

fn lock(tx: &Shared) -> MutexGuard<'_, TxState> {
    tx.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rolls back every expired transaction (buffered writes only: nothing of it was applied).
fn sweep(table: &mut Table, now: Instant) {
    let expired: Vec<u64> = table
        .txs
        .iter()
        .filter(|(_, tx)| lock(tx).deadline.is_some_and(|d| now >= d))
        .map(|(&id, _)| id)
        .collect();
    for id in expired {
        table.txs.remove(&id);
        remember(table, id);
    }
}

fn remember(table: &mut Table, id: u64) {
    table.timed_out.insert(id);
    while table.timed_out.len() > TIMED_OUT_KEPT {
        table.timed_out.pop_first();
    }
}

impl Database {
    /// Begins a snapshot-isolation transaction and returns its id (the seed's API; see
    /// [`Database::begin`] for a handle). Its reads see the database as of now, and its writes
    /// stay invisible until [`Database::commit_transaction`].
    pub fn begin_transaction(&self) -> Result<u64> {
        self.begin_transaction_with(Isolation::Snapshot)
    }

    /// Begins a transaction with the given isolation and returns its id.
    pub fn begin_transaction_with(&self, isolation: Isolation) -> Result<u64> {
        let snapshot = self.take_snapshot()?;
        let id = self.oracle().next_txid();
        let deadline = self.transactions().timeout.map(|t| Instant::now() + t);
        let state = TxState {
            snapshot,
            isolation,
            writes: BTreeMap::new(),
            write_bytes: 0,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
            deadline,
        };
        self.transactions().insert(id, state)?;
        Ok(id)
    }

    /// Sets `key` to `value` inside transaction `tx_id`.
    pub fn put_tx(&self, tx_id: u64, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check_key(key)?;
        self.check_value(value)?;
        self.buffer_write(tx_id, key, Some(value))
    }

    /// Removes `key` inside transaction `tx_id`.
    pub fn delete_tx(&self, tx_id: u64, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        self.check_key(key)?;
        self.buffer_write(tx_id, key, None)
    }

    fn buffer_write(&self, tx_id: u64, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let tx = self.transactions().get(tx_id)?;
        let mut tx = lock(&tx);
        let bytes = OpRef::Put { key, value: value.unwrap_or_default() }.encoded_bytes();
        let replaced = tx.writes.get(key).map_or(0, |old| {
            OpRef::Put { key, value: old.as_deref().unwrap_or_default() }.encoded_bytes()
        });
        let total = tx.write_bytes - replaced + bytes;
        let max = self.limits().max_batch_bytes;
        if total > max {
            return Err(Error::LimitExceeded {
                what: "transaction write bytes",
                actual: total as u64,
                max: max as u64,
            });
        }
        tx.write_bytes = total;
        tx.writes.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        Ok(())
    }

    /// The value of `key` as transaction `tx_id` sees it: its own writes first, then its
    /// snapshot.
    pub fn get_tx(&self, tx_id: u64, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        self.check_key(key)?;
        let tx = self.transactions().get(tx_id)?;
        let mut tx = lock(&tx);
        if let Some(own) = tx.writes.get(key) {
            return Ok(own.clone());
        }
        if tx.isolation == Isolation::Serializable {
            tx.reads.insert(key.to_vec());
        }
        tx.snapshot.shard(self.shard_index(key)).get(key)
    }

    /// Entries with `start <= key < end` as transaction `tx_id` sees them (its own writes
    /// over its snapshot), in key order.
    pub fn scan_tx(
        &self,
        tx_id: u64,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Result<TxIterator> {
        let lower = start.map_or(Bound::Unbounded, |s| Bound::Included(s.to_vec()));
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        self.range_tx_bounds(tx_id, (lower, upper))
    }

    fn range_tx_bounds(&self, tx_id: u64, range: KeyRange) -> Result<TxIterator> {
        let tx = self.transactions().get(tx_id)?;
        let mut tx = lock(&tx);
        if tx.isolation == Isolation::Serializable {
            tx.ranges.push(range.clone());
        }
        let own: Vec<(Vec<u8>, Option<Vec<u8>>)> = tx
            .writes
            .range::<Vec<u8>, _>(range.clone())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base = DbIterator::new(tx.snapshot.clone(), range.0, range.1);
        Ok(TxIterator::new(base, own))
    }

    /// Commits transaction `tx_id`: all its writes become visible at once, on every shard, or
    /// none do. `Error::Conflict` (retryable) when another commit won a key it wrote (or, when
    /// serializable, one it read); the transaction is then rolled back.
    pub fn commit_transaction(&self, tx_id: u64) -> Result<()> {
        let tx = self.transactions().remove(tx_id)?;
        let tx = lock(&tx);
        let writes: Vec<OpRef<'_>> = tx
            .writes
            .iter()
            .map(|(key, value)| match value {
                Some(value) => OpRef::Put { key, value },
                None => OpRef::Delete { key },
            })
            .collect();
        let reads: Vec<Vec<u8>> = tx.reads.iter().cloned().collect();
        self.commit_writes(tx_id, Some(tx.snapshot.ts()), &writes, &reads, &tx.ranges)
    }

    /// Rolls back transaction `tx_id`: nothing it wrote is applied (the seed's name).
    pub fn abort_transaction(&self, tx_id: u64) -> Result<()> {
        self.transactions().remove(tx_id).map(drop)
    }

    /// Same as [`Database::abort_transaction`].
    pub fn rollback_transaction(&self, tx_id: u64) -> Result<()> {
        self.abort_transaction(tx_id)
    }

    /// Transactions open right now.
    pub fn active_transactions(&self) -> usize {
        self.transactions().active()
    }

    /// Begins a snapshot-isolation transaction as a handle that rolls back when dropped.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        self.begin_with(Isolation::Snapshot)
    }

    /// Begins a transaction with the given isolation as a handle.
    pub fn begin_with(&self, isolation: Isolation) -> Result<Transaction<'_>> {
        let id = self.begin_transaction_with(isolation)?;
        Ok(Transaction { db: self, id, finished: false })
    }

    /// Runs `f` in a snapshot-isolation transaction and commits it, running it again from
    /// the start (up to `TRANSACTION_ATTEMPTS` times in all) while the commit or `f` fails
    /// with a retryable error ([`Error::is_retryable`]). `f` must not have effects outside the
    /// transaction that a retry would repeat.
    pub fn transaction<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.transaction_with(Isolation::Snapshot, f)
    }

    /// [`Database::transaction`] with the given isolation.
    pub fn transaction_with<T>(
        &self,
        isolation: Isolation,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = self.begin_with(isolation)?;
            let result = f(&tx).and_then(|out| tx.commit().map(|()| out));
            match result {
                Err(e) if e.is_retryable() && attempt < TRANSACTION_ATTEMPTS => {
                    backoff(attempt);
                }
                other => return other,
            }
        }
    }
}

/// A short, growing, jittered pause before a retry, so two transactions that conflicted do
/// not collide again in lockstep.
pub(crate) fn backoff(attempt: usize) {
    let spins = 1u64 << attempt.min(10);
    let jitter =
        (Instant::now().elapsed().subsec_nanos() as u64 ^ std::process::id() as u64) % spins;
    if attempt < 4 {
        for _ in 0..(spins + jitter) * 32 {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(spins + jitter));
    }
}

/// An open transaction, from [`Database::begin`]: reads see its snapshot and its own writes;
/// writes are buffered until [`Transaction::commit`]. Dropped without a commit, it rolls back.
pub struct Transaction<'db> {
    db: &'db Database,
    id: u64,
    finished: bool,
}

impl Transaction<'_> {
    /// Its id (the same calls work with it: `db.get_tx(tx.id(), ..)`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.db.get_tx(self.id, key)
    }

    /// Sets `key` to `value` (visible to this transaction now, to others once committed).
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.db.put_tx(self.id, key, value)
    }

    /// Removes `key`.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.db.delete_tx(self.id, key)
    }

    /// Entries whose keys fall in `range` as this transaction sees them, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<TxIterator> {
        self.db.range_tx_bounds(self.id, owned_bounds(&range))
    }

    /// Entries with `start <= key < end` as this transaction sees them, in key order.
    pub fn scan(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<TxIterator> {
        self.db.scan_tx(self.id, start, end)
    }

    /// Commits: every write applied at once, or none (`Error::Conflict` when it lost).
    pub fn commit(mut self) -> Result<()> {
        self.finished = true;
        self.db.commit_transaction(self.id)
    }

    /// Rolls back: nothing it wrote is applied.
    pub fn rollback(mut self) -> Result<()> {
        self.finished = true;
        self.db.abort_transaction(self.id)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.db.abort_transaction(self.id);
        }
    }
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").field("id", &self.id).finish()
    }
}

/// A transaction's scan: its own buffered writes merged over its snapshot, in key order.
pub struct TxIterator {
    base: std::iter::Peekable<DbIterator>,
    /// The transaction's writes within the range, in key order (`None`: deleted).
    own: std::collections::VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
}

impl TxIterator {
    fn new(base: DbIterator, own: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Self {
        TxIterator { base: base.peekable(), own: own.into() }
    }
}

impl Iterator for TxIterator {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base_key = match self.base.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.base.next(),
                None => None,
            };
            let take_own = match (&base_key, self.own.front()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some((o, _))) => o <= b,
            };
            if !take_own {
                return self.base.next();
            }
            let (key, value) = self.own.pop_front()?;
            if base_key.as_ref() == Some(&key) {
                self.base.next(); // shadowed by the transaction's own write
            }
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}
