//! Stress test: many threads of mixed operations checked against a model, then `kill -9` and
//! reopen, several rounds, in `WalSyncMode::Normal` and `WalSyncMode::Sync`.
//!
//! ```sh
//! cargo run --release --example stress_test
//! cargo run --release --example stress_test -- --seconds 60 --threads 8 --rounds 10
//! ```
//!
//! Options: `--seconds S` (phase one, default 6), `--threads T` (default 4), `--rounds R` (kill
//! rounds per mode, default 3), `--shards N` (default: the library's default, at least 2),
//! `--pause-us P` (the children's average pause per operation, default 500), `--seed X`
//! (default: from the clock; printed, so a failing run can be repeated).
//!
//! Every thread mixes single puts, deletes and gets of its own keys; cross-shard
//! `write_batch`es; bank transfers in transactions (the `Transaction` handle through
//! `db.transaction_with`, which retries conflicts, and the seed id API with a retry loop of its
//! own, at both isolation levels), starting with a conflict provoked on purpose; counter
//! increments in transactions (handle, seed API, closure); and audits through snapshots
//! (`scan_prefix`, reverse `range`, `multi_get`, a snapshot read again after a write, scans
//! inside transactions). The model has three parts:
//!
//! - a bank: accounts on every shard whose total never changes. Every snapshot scan, every
//!   `multi_get` and every reopen must see exactly the starting total.
//! - per-thread counters, incremented in transactions: after a reopen each holds the last
//!   acknowledged value, or one more if the increment in flight at the kill made it.
//! - batches writing one version to K keys, one per shard: all K always agree (atomic across
//!   shards, in snapshots and after a crash), and hold the last acknowledged version or the one
//!   in flight. The same holds for each thread's single puts and deletes, and a batch every
//!   thread writes to K shared keys must always agree too.
//!
//! Phase one runs the threads in this process at full speed for `--seconds` and checks the
//! model exactly. Then, for each mode, a new database gets `--rounds` kill rounds: each
//! re-executes this program as a child (`--child <dir> <mode> ...`) that runs the same threads
//! and prints one line before and one after each write (the intent, then the
//! acknowledgement), flushed. The parent reads the lines from the pipe, kills the child with
//! SIGKILL a random 0.3–1.5 s after it opened the database, reopens it and checks it: every
//! acknowledged write is there (`Normal` and `Sync` promise that an acknowledged write survives
//! `kill -9`), and nothing else changed except, per thread, the one write in flight. A child
//! that finds a check failing prints `FAIL ...` and exits; the parent fails on it. Each round
//! continues on its mode's database.
//!
//! The children pause between bursts of operations (`--pause-us`), and phase one's database is
//! not reopened, because opening a database replays its whole WAL (README, "Not yet") and
//! replay time grows quickly with the log: unpaced, the reopens would dominate the run.
//!
//! Exits 0 when every check passed; otherwise prints `FAILED: ...` and exits 1. The databases
//! live in a directory under `std::env::temp_dir()`, removed at the end (kept after a failure,
//! for a look).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lightning_db::{Database, Error, Isolation, LightningDbConfig, WalSyncMode, WriteBatch};

/// Each account's balance at creation.
const START_BALANCE: u64 = 1_000;
/// Accounts placed on each shard.
const ACCOUNTS_PER_SHARD: usize = 4;
/// Keys each thread puts, deletes and reads on its own.
const KV_KEYS: u32 = 32;
/// Attempts of a seed-API transfer before it gives up (nothing applied).
const SEED_ATTEMPTS: usize = 32;

/// Why a check failed.
type Failure = String;

/// How a tracked write ended, when it did not fail a check.
enum Outcome {
    Applied,
    /// A conflict outlived its retries: nothing was applied.
    GaveUp(String),
}
use Outcome::{Applied, GaveUp};

fn mode_name(mode: WalSyncMode) -> &'static str {
    match mode {
        WalSyncMode::Sync => "sync",
        WalSyncMode::Normal => "normal",
        WalSyncMode::Async => "async",
    }
}

fn parse_mode(s: &str) -> WalSyncMode {
    match s {
        "sync" => WalSyncMode::Sync,
        "async" => WalSyncMode::Async,
        _ => WalSyncMode::Normal,
    }
}

fn config(mode: WalSyncMode, shards: usize) -> LightningDbConfig {
    LightningDbConfig { wal_sync_mode: mode, shards, ..Default::default() }
}

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and values

/// Where everything lives; a function of the shard count and the thread count only, so the
/// parent and every child compute the same keys.
struct Layout {
    threads: usize,
    accounts: Vec<Vec<u8>>,
    /// Three accounts on different shards (where there are three), fought over on purpose.
    hot: Vec<Vec<u8>>,
    /// Per thread: K keys, one on each shard, always written together with one version.
    groups: Vec<Vec<Vec<u8>>>,
    /// K keys, one on each shard, written together by every thread.
    shared: Vec<Vec<u8>>,
}

impl Layout {
    fn new(db: &Database, threads: usize) -> Layout {
        let shards = db.shard_count();
        let mut accounts = Vec::new();
        let mut per_shard = vec![0usize; shards];
        let mut hot = Vec::new();
        for j in 0.. {
            let key = format!("acct/{j:04}").into_bytes();
            let s = db.shard_for_key(&key);
            if per_shard[s] < ACCOUNTS_PER_SHARD {
                if per_shard[s] == 0 && hot.len() < 3 {
                    hot.push(key.clone());
                }
                per_shard[s] += 1;
                accounts.push(key);
            }
            if per_shard.iter().all(|&n| n == ACCOUNTS_PER_SHARD) {
                break;
            }
        }
        accounts.sort();
        while hot.len() < 2 {
            hot.push(accounts[hot.len()].clone()); // one shard: any two accounts
        }
        let groups = (0..threads).map(|t| one_per_shard(db, &format!("grp/t{t:03}/"))).collect();
        Layout { threads, accounts, hot, groups, shared: one_per_shard(db, "grp/all/") }
    }

    fn total(&self) -> u64 {
        self.accounts.len() as u64 * START_BALANCE
    }
}

/// The first key `<prefix><j>` found on each shard, in shard order.
fn one_per_shard(db: &Database, prefix: &str) -> Vec<Vec<u8>> {
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; db.shard_count()];
    for j in 0.. {
        let key = format!("{prefix}{j:03}").into_bytes();
        let s = db.shard_for_key(&key);
        if slots[s].is_none() {
            slots[s] = Some(key);
        }
        if slots.iter().all(Option::is_some) {
            break;
        }
    }
    slots.into_iter().map(Option::unwrap).collect()
}

fn counter_key(t: usize) -> Vec<u8> {
    format!("ctr/{t:03}").into_bytes()
}

fn kv_key(t: usize, k: u32) -> Vec<u8> {
    format!("kv/{t:03}/{k:03}").into_bytes()
}

/// A value that names its key and version and checks itself, so a torn or misplaced value is
/// caught: `t/k/version/padding#checksum`.
fn kv_value(t: usize, k: u32, version: u64) -> Vec<u8> {
    let body = format!("{t}/{k}/{version}/{}", "x".repeat((version % 97) as usize));
    format!("{body}#{:08x}", fnv(body.as_bytes())).into_bytes()
}

fn fnv(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| (h ^ u32::from(x)).wrapping_mul(0x0100_0193))
}

/// The version in a well-formed value of `kv_key(t, k)`.
fn kv_version(t: usize, k: u32, v: &[u8]) -> Result<u64, Failure> {
    let bad = || format!("kv {t}/{k}: malformed or torn value {:?}", String::from_utf8_lossy(v));
    let s = std::str::from_utf8(v).map_err(|_| bad())?;
    let (body, sum) = s.rsplit_once('#').ok_or_else(bad)?;
    if format!("{:08x}", fnv(body.as_bytes())) != sum {
        return Err(bad());
    }
    let mut parts = body.split('/');
    if parts.next() != Some(&t.to_string()) || parts.next() != Some(&k.to_string()) {
        return Err(format!("kv {t}/{k}: holds the value of another key: {s:?}"));
    }
    parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)
}

fn u64_of(what: &str, v: Option<Vec<u8>>) -> Result<u64, Failure> {
    match v {
        Some(b) if b.len() == 8 => Ok(u64::from_le_bytes(b.try_into().unwrap())),
        Some(b) => Err(format!("{what}: not an 8-byte number: {b:?}")),
        None => Err(format!("{what}: missing")),
    }
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn db_err(what: &str, e: Error) -> Failure {
    format!("{what}: unexpected error: {e}")
}

// ---------------------------------------------------------------------------------------------
// Events: what a worker reports, in process or as lines on the child's stdout

/// A write whose outcome the model tracks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Put {
        k: u32,
        ver: u64,
    },
    Del {
        k: u32,
        ver: u64,
    },
    /// The thread's counter goes to `to`.
    Ctr {
        to: u64,
    },
    /// The thread's group goes to `ver`.
    Grp {
        ver: u64,
    },
    /// The shared group (only its agreement is checked).
    Shr,
    /// A bank transfer (only the total is checked).
    Xfer,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Ready,
    /// About to write: from here until `Ack` or `Dropped` the write may or may not be applied.
    Intent(usize, Op),
    /// Acknowledged: it must survive.
    Ack(usize, Op),
    /// Definitely not applied (a conflict that outlived its retries), and why.
    Dropped(usize, String),
    /// A transaction conflict that was retried.
    Retry(usize),
    /// A snapshot audit passed.
    Audit(usize),
    /// A read checked against the thread's own writes.
    Read(usize),
    Fail(Failure),
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Put { k, ver } => format!("put {k} {ver}"),
            Op::Del { k, ver } => format!("del {k} {ver}"),
            Op::Ctr { to } => format!("ctr {to}"),
            Op::Grp { ver } => format!("grp {ver}"),
            Op::Shr => "shr".into(),
            Op::Xfer => "xfer".into(),
        }
    }

    fn parse(f: &[&str]) -> Option<Op> {
        let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        Some(match *f.first()? {
            "put" => Op::Put { k: n(1)? as u32, ver: n(2)? },
            "del" => Op::Del { k: n(1)? as u32, ver: n(2)? },
            "ctr" => Op::Ctr { to: n(1)? },
            "grp" => Op::Grp { ver: n(1)? },
            "shr" => Op::Shr,
            "xfer" => Op::Xfer,
            _ => return None,
        })
    }
}

impl Ev {
    fn line(&self) -> String {
        match self {
            Ev::Ready => "READY".into(),
            Ev::Intent(t, op) => format!("I {t} {}", op.line()),
            Ev::Ack(t, op) => format!("A {t} {}", op.line()),
            Ev::Dropped(t, why) => format!("N {t} {}", why.replace('\n', " ")),
            Ev::Retry(t) => format!("R {t}"),
            Ev::Audit(t) => format!("U {t}"),
            Ev::Read(t) => format!("G {t}"),
            Ev::Fail(why) => format!("FAIL {}", why.replace('\n', " ")),
        }
    }

    fn parse(line: &str) -> Option<Ev> {
        if line == "READY" {
            return Some(Ev::Ready);
        }
        if let Some(why) = line.strip_prefix("FAIL ") {
            return Some(Ev::Fail(why.to_string()));
        }
        let f: Vec<&str> = line.split(' ').collect();
        let t: usize = f.get(1)?.parse().ok()?;
        Some(match f[0] {
            "I" => Ev::Intent(t, Op::parse(&f[2..])?),
            "A" => Ev::Ack(t, Op::parse(&f[2..])?),
            "N" => Ev::Dropped(t, f[2..].join(" ")),
            "R" => Ev::Retry(t),
            "U" => Ev::Audit(t),
            "G" => Ev::Read(t),
            _ => return None,
        })
    }
}

trait Sink: Sync {
    fn emit(&self, ev: Ev);
}

/// The child's sink: one line per event on stdout, flushed before the worker goes on.
struct PrintSink(Mutex<std::io::Stdout>);

impl Sink for PrintSink {
    fn emit(&self, ev: Ev) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if writeln!(out, "{}", ev.line()).and_then(|()| out.flush()).is_err() {
            std::process::exit(4); // the parent is gone
        }
    }
}

/// The in-process sink: events go straight into the model.
struct ModelSink(Mutex<Model>);

impl Sink for ModelSink {
    fn emit(&self, ev: Ev) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).apply(ev);
    }
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Clone, Copy, Default)]
struct Counts {
    puts: u64,
    deletes: u64,
    counters: u64,
    groups: u64,
    shared: u64,
    transfers: u64,
    dropped: u64,
    retries: u64,
    audits: u64,
    reads: u64,
}

impl Counts {
    fn acked(&self) -> u64 {
        self.puts + self.deletes + self.counters + self.groups + self.shared + self.transfers
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes acked (put {}, delete {}, counter tx {}, group batch {}, shared batch {}, \
             transfer tx {}), {} conflicts retried, {} given up, {} snapshot audits, {} reads",
            self.acked(),
            self.puts,
            self.deletes,
            self.counters,
            self.groups,
            self.shared,
            self.transfers,
            self.retries,
            self.dropped,
            self.audits,
            self.reads
        )
    }
}

/// What the database must hold: the acknowledged state, and per thread the write in flight.
struct Model {
    counter: Vec<u64>,
    group: Vec<u64>,
    /// `[thread][k]`: the version present, or `None` for absent.
    kv: Vec<Vec<Option<u64>>>,
    pending: Vec<Option<Op>>,
    counts: Counts,
    /// Why writes gave up (the first few).
    gave_up: Vec<String>,
    ready: bool,
    failure: Option<Failure>,
}

impl Model {
    fn new(threads: usize) -> Model {
        Model {
            counter: vec![0; threads],
            group: vec![0; threads],
            kv: vec![vec![None; KV_KEYS as usize]; threads],
            pending: vec![None; threads],
            counts: Counts::default(),
            gave_up: Vec::new(),
            ready: false,
            failure: None,
        }
    }

    fn fail(&mut self, why: Failure) {
        self.failure.get_or_insert(why);
    }

    fn apply(&mut self, ev: Ev) {
        let threads = self.pending.len();
        match ev {
            Ev::Ready => self.ready = true,
            Ev::Fail(why) => self.fail(why),
            Ev::Intent(t, _) | Ev::Ack(t, _) | Ev::Dropped(t, _) if t >= threads => {
                self.fail(format!("event of unknown thread {t}"))
            }
            Ev::Intent(t, op) => {
                if let Some(prev) = &self.pending[t] {
                    self.fail(format!("thread {t}: {op:?} begun while {prev:?} is in flight"));
                }
                self.pending[t] = Some(op);
            }
            Ev::Ack(t, op) => {
                if self.pending[t].as_ref() != Some(&op) {
                    let p = &self.pending[t];
                    self.fail(format!("thread {t}: ack of {op:?} but in flight was {p:?}"));
                }
                self.pending[t] = None;
                let c = &mut self.counts;
                match op {
                    Op::Put { k, ver } => {
                        self.kv[t][k as usize] = Some(ver);
                        c.puts += 1;
                    }
                    Op::Del { k, .. } => {
                        self.kv[t][k as usize] = None;
                        c.deletes += 1;
                    }
                    Op::Ctr { to } => {
                        self.counter[t] = to;
                        c.counters += 1;
                    }
                    Op::Grp { ver } => {
                        self.group[t] = ver;
                        c.groups += 1;
                    }
                    Op::Shr => c.shared += 1,
                    Op::Xfer => c.transfers += 1,
                }
            }
            Ev::Dropped(t, why) => {
                self.pending[t] = None;
                self.counts.dropped += 1;
                if self.gave_up.len() < 3 {
                    self.gave_up.push(why);
                }
            }
            Ev::Retry(_) => self.counts.retries += 1,
            Ev::Audit(_) => self.counts.audits += 1,
            Ev::Read(_) => self.counts.reads += 1,
        }
    }
}

/// Reads the whole database and checks it against `model`: the bank total, every thread's
/// counter, group and keys (the acknowledged state, or the write in flight), every group's
/// agreement, and that nothing else is there. Then makes the model the state found. Returns a
/// line saying what was found.
fn verify(db: &Database, lay: &Layout, model: &mut Model) -> Result<String, Failure> {
    let snap = db.snapshot().map_err(|e| db_err("snapshot", e))?;
    // The bank, three ways.
    let total = lay.total();
    let mut sum = 0;
    let mut n = 0;
    for item in snap.scan_prefix(b"acct/").map_err(|e| db_err("scan accounts", e))? {
        let (k, v) = item.map_err(|e| db_err("scan accounts", e))?;
        sum += u64_of(&show(&k), Some(v))?;
        n += 1;
    }
    if n != lay.accounts.len() || sum != total {
        return Err(format!(
            "bank: {n} accounts holding {sum}; expected {} holding {total}",
            lay.accounts.len()
        ));
    }
    let values = db.multi_get(&lay.accounts).map_err(|e| db_err("multi_get accounts", e))?;
    let mut got = 0;
    for (k, v) in lay.accounts.iter().zip(values) {
        got += u64_of(&show(k), v)?;
    }
    if got != total {
        return Err(format!("bank: multi_get sums to {got}, expected {total}"));
    }
    // Writes in flight at the kill whose effect is checked, and how many of them applied.
    let (mut in_flight, mut in_flight_applied) = (0, 0);
    for t in 0..lay.threads {
        let pending = model.pending[t].take();
        // Counter.
        let c =
            u64_of(&format!("counter {t}"), db.get(counter_key(t)).map_err(|e| db_err("get", e))?)?;
        let flying = matches!(pending, Some(Op::Ctr { to }) if to == c);
        if c != model.counter[t] && !flying {
            return Err(format!(
                "thread {t}: counter is {c}; acknowledged {} (in flight: {pending:?})",
                model.counter[t]
            ));
        }
        if matches!(pending, Some(Op::Ctr { .. })) {
            in_flight += 1;
            in_flight_applied += usize::from(flying);
        }
        model.counter[t] = c;
        // Group: all K keys hold one version, the acknowledged one or the one in flight.
        let vers = snap.multi_get(&lay.groups[t]).map_err(|e| db_err("multi_get group", e))?;
        let first = vers[0].clone();
        if vers.iter().any(|v| *v != first) {
            return Err(format!("thread {t}: group torn across shards: {}", group_text(&vers)));
        }
        let g: u64 = first
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
            .ok_or_else(|| format!("thread {t}: group value {}", group_text(&vers)))?;
        let flying = matches!(pending, Some(Op::Grp { ver }) if ver == g);
        if g != model.group[t] && !flying {
            return Err(format!(
                "thread {t}: group holds version {g}; acknowledged {} (in flight: {pending:?})",
                model.group[t]
            ));
        }
        if matches!(pending, Some(Op::Grp { .. })) {
            in_flight += 1;
            in_flight_applied += usize::from(flying);
        }
        model.group[t] = g;
        // Single keys.
        for k in 0..KV_KEYS {
            let found = match db.get(kv_key(t, k)).map_err(|e| db_err("get", e))? {
                Some(v) => Some(kv_version(t, k, &v)?),
                None => None,
            };
            let acked = model.kv[t][k as usize];
            let flying = match pending {
                Some(Op::Put { k: pk, ver }) if pk == k => Some(Some(ver)),
                Some(Op::Del { k: pk, .. }) if pk == k => Some(None),
                _ => None,
            };
            if found != acked && flying != Some(found) {
                return Err(format!(
                    "thread {t}: key {} holds {found:?}; acknowledged {acked:?} (in flight: \
                     {pending:?})",
                    show(&kv_key(t, k))
                ));
            }
            if flying.is_some() {
                in_flight += 1;
                in_flight_applied += usize::from(flying == Some(found));
            }
            model.kv[t][k as usize] = found;
        }
    }
    // The shared group agrees.
    let vals = snap.multi_get(&lay.shared).map_err(|e| db_err("multi_get shared", e))?;
    if vals.iter().any(|v| *v != vals[0]) {
        return Err(format!("shared group torn across shards: {}", group_text(&vals)));
    }
    // Nothing else, and a reverse scan agrees with the forward one.
    let all: Vec<Vec<u8>> = snap
        .scan(None, None)
        .map_err(|e| db_err("scan", e))?
        .map(|r| r.map(|(k, _)| k))
        .collect::<lightning_db::Result<_>>()
        .map_err(|e| db_err("scan", e))?;
    let mut back: Vec<Vec<u8>> = snap
        .scan(None, None)
        .map_err(|e| db_err("scan", e))?
        .rev()
        .map(|r| r.map(|(k, _)| k))
        .collect::<lightning_db::Result<_>>()
        .map_err(|e| db_err("reverse scan", e))?;
    back.reverse();
    if all != back {
        return Err(format!("reverse scan: {} keys, forward {}", back.len(), all.len()));
    }
    if !all.windows(2).all(|w| w[0] < w[1]) {
        return Err("scan: keys out of order".into());
    }
    let known = [&b"acct/"[..], b"ctr/", b"grp/", b"kv/"];
    if let Some(k) = all.iter().find(|k| !known.iter().any(|p| k.starts_with(p))) {
        return Err(format!("an unknown key appeared: {:?}", show(k)));
    }
    let present = model.kv.iter().flatten().filter(|v| v.is_some()).count();
    Ok(format!(
        "bank total {sum} in {n} accounts; counters {:?}; {present} single keys present; \
         {} keys in all; writes in flight when it stopped: {in_flight_applied} of {in_flight} \
         applied",
        model.counter,
        all.len()
    ))
}

fn group_text(vals: &[Option<Vec<u8>>]) -> String {
    let parts: Vec<String> =
        vals.iter().map(|v| v.as_deref().map_or("<absent>".into(), show)).collect();
    parts.join(", ")
}

/// A new database: every account, counter, group and the shared group in one cross-shard
/// batch.
fn create(dir: &Path, shards: usize, threads: usize) -> Result<(), Failure> {
    let db = Database::open(dir, config(WalSyncMode::Normal, shards))
        .map_err(|e| db_err("create the database", e))?;
    let lay = Layout::new(&db, threads);
    let mut batch = WriteBatch::new();
    for a in &lay.accounts {
        batch.put(a, START_BALANCE.to_le_bytes()).unwrap();
    }
    for t in 0..threads {
        batch.put(counter_key(t), 0u64.to_le_bytes()).unwrap();
        for g in &lay.groups[t] {
            batch.put(g, b"0").unwrap();
        }
    }
    for g in &lay.shared {
        batch.put(g, b"init").unwrap();
    }
    db.write_batch(&batch).map_err(|e| db_err("initial batch", e))?;
    db.close().map_err(|e| db_err("close", e))
}

// ---------------------------------------------------------------------------------------------
// The workers

struct Worker<'a> {
    db: &'a Database,
    lay: &'a Layout,
    sink: &'a dyn Sink,
    t: usize,
    rng: Rng,
    /// Versions this thread writes: unique and increasing across rounds.
    seq: u64,
    /// This thread's own keys as it last wrote them (nobody else writes them).
    kv: Vec<Option<u64>>,
    counter: u64,
    audits: u64,
}

impl<'a> Worker<'a> {
    fn new(
        db: &'a Database,
        lay: &'a Layout,
        sink: &'a dyn Sink,
        t: usize,
        round: u64,
        seed: u64,
    ) -> Result<Self, Failure> {
        let mut kv = Vec::new();
        for k in 0..KV_KEYS {
            kv.push(match db.get(kv_key(t, k)).map_err(|e| db_err("get", e))? {
                Some(v) => Some(kv_version(t, k, &v)?),
                None => None,
            });
        }
        let counter =
            u64_of("counter", db.get(counter_key(t)).map_err(|e| db_err("get counter", e))?)?;
        Ok(Worker {
            db,
            lay,
            sink,
            t,
            rng: Rng::new(seed ^ (round << 32) ^ (t as u64 + 1)),
            seq: round << 32,
            kv,
            counter,
            audits: 0,
        })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Runs `write` between an intent and an acknowledgement (or the report that it gave up).
    fn tracked(
        &mut self,
        op: Op,
        write: impl FnOnce(&mut Self) -> Result<Outcome, Failure>,
    ) -> Result<(), Failure> {
        self.sink.emit(Ev::Intent(self.t, op.clone()));
        match write(self)? {
            Applied => self.sink.emit(Ev::Ack(self.t, op)),
            GaveUp(why) => self.sink.emit(Ev::Dropped(self.t, why)),
        }
        Ok(())
    }

    /// Mixed operations until `stop`, pausing `pause` per operation on average (see
    /// `--pause-us`): in bursts of 32, so that threads still collide and idle shards park.
    fn run(&mut self, stop: &AtomicBool, pause: Duration) -> Result<(), Failure> {
        self.provoked_conflict()?;
        let mut ops = 0u32;
        while !stop.load(Ordering::Relaxed) {
            ops += 1;
            if ops.is_multiple_of(32) && !pause.is_zero() {
                std::thread::sleep(pause * 32);
            }
            match self.rng.below(100) {
                0..=19 => self.put()?,
                20..=27 => self.delete()?,
                28..=39 => self.read()?,
                40..=49 => self.group_batch()?,
                50..=54 => self.shared_batch()?,
                55..=69 => self.transfer_handle()?,
                70..=79 => self.transfer_seed()?,
                80..=89 => self.count()?,
                _ => self.audit()?,
            }
        }
        Ok(())
    }

    fn put(&mut self) -> Result<(), Failure> {
        let (t, k, ver) = (self.t, self.rng.below(u64::from(KV_KEYS)) as u32, self.next_seq());
        let value = kv_value(t, k, ver);
        self.tracked(Op::Put { k, ver }, |w| {
            w.db.put(kv_key(t, k), &value).map_err(|e| db_err("put", e))?;
            Ok(Applied)
        })?;
        self.kv[k as usize] = Some(ver);
        if self.rng.below(2) == 0 {
            let got = self.db.get(kv_key(t, k)).map_err(|e| db_err("get", e))?;
            if got.as_ref() != Some(&value) {
                return Err(format!(
                    "thread {t}: read {:?} right after putting version {ver} of {}",
                    got.map(|v| show(&v)),
                    show(&kv_key(t, k))
                ));
            }
            self.sink.emit(Ev::Read(t));
        }
        Ok(())
    }

    fn delete(&mut self) -> Result<(), Failure> {
        let (t, k, ver) = (self.t, self.rng.below(u64::from(KV_KEYS)) as u32, self.next_seq());
        let key = kv_key(t, k);
        let in_tx = self.rng.below(2) == 0;
        self.tracked(Op::Del { k, ver }, |w| {
            if !in_tx {
                w.db.delete(&key).map_err(|e| db_err("delete", e))?;
                return Ok(Applied);
            }
            // The seed API: delete_tx, read it back inside, commit.
            let id = w.db.begin_transaction().map_err(|e| db_err("begin_transaction", e))?;
            w.db.delete_tx(id, &key).map_err(|e| db_err("delete_tx", e))?;
            let inside = w.db.get_tx(id, &key).map_err(|e| db_err("get_tx", e))?;
            if inside.is_some() {
                return Err(format!(
                    "thread {t}: get_tx sees {} after its own delete_tx",
                    show(&key)
                ));
            }
            // Nobody else writes this key: a conflict here would be a bug.
            w.db.commit_transaction(id).map_err(|e| db_err("commit_transaction (delete)", e))?;
            Ok(Applied)
        })?;
        self.kv[k as usize] = None;
        Ok(())
    }

    fn read(&mut self) -> Result<(), Failure> {
        let (t, k) = (self.t, self.rng.below(u64::from(KV_KEYS)) as u32);
        let key = kv_key(t, k);
        let found = match self.db.get(&key).map_err(|e| db_err("get", e))? {
            Some(v) => Some(kv_version(t, k, &v)?),
            None => None,
        };
        if found != self.kv[k as usize] {
            return Err(format!(
                "thread {t}: {} holds version {found:?}; this thread last wrote {:?}",
                show(&key),
                self.kv[k as usize]
            ));
        }
        let contains = self.db.contains_key(&key).map_err(|e| db_err("contains_key", e))?;
        if contains != found.is_some() {
            return Err(format!("thread {t}: contains_key({}) = {contains}", show(&key)));
        }
        self.sink.emit(Ev::Read(t));
        Ok(())
    }

    fn group_batch(&mut self) -> Result<(), Failure> {
        let ver = self.next_seq();
        let mut batch = WriteBatch::new();
        for g in &self.lay.groups[self.t] {
            batch.put(g, ver.to_string()).map_err(|e| db_err("batch.put", e))?;
        }
        self.tracked(Op::Grp { ver }, |w| match w.db.write_batch(&batch) {
            Ok(()) => Ok(Applied),
            Err(e) if e.is_retryable() => Ok(GaveUp(format!("group batch: {e}"))),
            Err(e) => Err(db_err("write_batch (group)", e)),
        })
        .map(drop)
    }

    fn shared_batch(&mut self) -> Result<(), Failure> {
        let ver = self.next_seq();
        let value = format!("t{}:{ver}", self.t);
        let mut batch = WriteBatch::new();
        for g in &self.lay.shared {
            batch.put(g, &value).map_err(|e| db_err("batch.put", e))?;
        }
        self.tracked(Op::Shr, |w| match w.db.write_batch(&batch) {
            Ok(()) => Ok(Applied),
            Err(e) if e.is_retryable() => Ok(GaveUp(format!("shared batch: {e}"))),
            Err(e) => Err(db_err("write_batch (shared)", e)),
        })
        .map(drop)
    }

    /// Two accounts, half the time from the hot few so transfers collide.
    fn pick_pair(&mut self) -> (Vec<u8>, Vec<u8>) {
        let pool = if self.rng.below(2) == 0 { &self.lay.hot } else { &self.lay.accounts };
        let a = self.rng.below(pool.len() as u64) as usize;
        let b = (a + 1 + self.rng.below(pool.len() as u64 - 1) as usize) % pool.len();
        (pool[a].clone(), pool[b].clone())
    }

    /// A transfer through `db.transaction` (the handle; conflicts retried by the library).
    fn transfer_handle(&mut self) -> Result<(), Failure> {
        let (from, to) = self.pick_pair();
        let want = self.rng.below(50);
        let isolation =
            if self.rng.below(4) == 0 { Isolation::Serializable } else { Isolation::Snapshot };
        let t = self.t;
        self.tracked(Op::Xfer, |w| {
            let mut runs = 0;
            let result = w.db.transaction_with(isolation, |tx| {
                runs += 1;
                let f = tx.get(&from)?;
                let g = tx.get(&to)?;
                let (Ok(f), Ok(g)) = (u64_of("from", f), u64_of("to", g)) else {
                    return Ok(Err(format!("thread {t}: an account is missing or malformed")));
                };
                let amount = want.min(f);
                tx.put(&from, (f - amount).to_le_bytes())?;
                tx.put(&to, (g + amount).to_le_bytes())?;
                Ok(Ok(()))
            });
            for _ in 1..runs {
                w.sink.emit(Ev::Retry(t));
            }
            match result {
                Ok(Ok(())) => Ok(Applied),
                Ok(Err(why)) => Err(why),
                Err(e) if e.is_retryable() => Ok(GaveUp(format!("transfer, {runs} runs: {e}"))),
                Err(e) => Err(db_err("transaction (transfer)", e)),
            }
        })
        .map(drop)
    }

    /// A transfer through the seed id API, retrying conflicts itself.
    fn transfer_seed(&mut self) -> Result<(), Failure> {
        let (from, to) = self.pick_pair();
        let want = self.rng.below(50);
        let serializable = self.rng.below(4) == 0;
        let t = self.t;
        self.tracked(Op::Xfer, |w| {
            let db = w.db;
            for _ in 0..SEED_ATTEMPTS {
                let id = if serializable {
                    db.begin_transaction_with(Isolation::Serializable)
                } else {
                    db.begin_transaction()
                }
                .map_err(|e| db_err("begin_transaction", e))?;
                let f = u64_of("from", db.get_tx(id, &from).map_err(|e| db_err("get_tx", e))?)?;
                let g = u64_of("to", db.get_tx(id, &to).map_err(|e| db_err("get_tx", e))?)?;
                let amount = want.min(f);
                db.put_tx(id, &from, (f - amount).to_le_bytes())
                    .map_err(|e| db_err("put_tx", e))?;
                db.put_tx(id, &to, (g + amount).to_le_bytes()).map_err(|e| db_err("put_tx", e))?;
                match db.commit_transaction(id) {
                    Ok(()) => return Ok(Applied),
                    Err(e) if e.is_retryable() => {
                        w.sink.emit(Ev::Retry(t));
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(db_err("commit_transaction (transfer)", e)),
                }
            }
            Ok(GaveUp(format!("seed transfer: {SEED_ATTEMPTS} conflicts")))
        })
        .map(drop)
    }

    /// Two transactions of this thread take from the same hot account: the first commits, the
    /// second must get a retryable `Error::Conflict` (unless another thread beat the first),
    /// and then succeeds when retried.
    fn provoked_conflict(&mut self) -> Result<(), Failure> {
        let (a, b) = (self.lay.hot[0].clone(), self.lay.hot[1].clone());
        let t = self.t;
        self.tracked(Op::Xfer, |w| {
            let db = w.db;
            let move_one = |tx: &lightning_db::Transaction<'_>| -> lightning_db::Result<bool> {
                let f = tx.get(&a)?.map(|v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                let g = tx.get(&b)?.map(|v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
                let (Some(f), Some(g)) = (f, g) else { return Ok(false) };
                let amount = u64::from(f > 0);
                tx.put(&a, (f - amount).to_le_bytes())?;
                tx.put(&b, (g + amount).to_le_bytes())?;
                Ok(true)
            };
            let first = db.begin().map_err(|e| db_err("begin", e))?;
            let second = db.begin_with(Isolation::Snapshot).map_err(|e| db_err("begin_with", e))?;
            let ok1 = move_one(&first).map_err(|e| db_err("tx get/put", e))?;
            let ok2 = move_one(&second).map_err(|e| db_err("tx get/put", e))?;
            if !ok1 || !ok2 {
                return Err(format!("thread {t}: a hot account is missing"));
            }
            let second_id = second.id();
            match first.commit() {
                Ok(()) => match second.commit() {
                    Err(e @ Error::Conflict { .. }) if e.is_retryable() => {
                        w.sink.emit(Ev::Retry(t));
                    }
                    Err(e) => return Err(db_err("the second of two clashing commits", e)),
                    Ok(()) => {
                        return Err(format!(
                            "thread {t}: two transactions wrote {} from one snapshot and both \
                             committed (a lost update); second id {second_id}",
                            show(&a)
                        ))
                    }
                },
                Err(e) if e.is_retryable() => drop(second), // another thread won: rolls back
                Err(e) => return Err(db_err("commit", e)),
            }
            // The retry.
            match db.transaction(move_one) {
                Ok(true) => Ok(Applied),
                Ok(false) => Err(format!("thread {t}: a hot account vanished")),
                Err(e) if e.is_retryable() => Ok(GaveUp(format!("clash retry: {e}"))),
                Err(e) => Err(db_err("retry of the clashing transfer", e)),
            }
        })
        .map(drop)
    }

    /// The thread's counter + 1 in a transaction: the handle or the seed API, either
    /// isolation.
    fn count(&mut self) -> Result<(), Failure> {
        let t = self.t;
        let to = self.counter + 1;
        let key = counter_key(t);
        let how = self.rng.below(3);
        let expected = self.counter;
        self.tracked(Op::Ctr { to }, |w| {
            let db = w.db;
            let seen = match how {
                0 => db
                    .transaction(|tx| {
                        let v = tx.get(&key)?;
                        let n = v.map_or(u64::MAX, |b| {
                            u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]))
                        });
                        tx.put(&key, n.wrapping_add(1).to_le_bytes())?;
                        Ok(n)
                    })
                    .map_err(|e| db_err("transaction (counter)", e))?,
                1 => {
                    let tx =
                        db.begin_with(Isolation::Serializable).map_err(|e| db_err("begin", e))?;
                    let n = u64_of("counter", tx.get(&key).map_err(|e| db_err("tx.get", e))?)?;
                    tx.put(&key, (n + 1).to_le_bytes()).map_err(|e| db_err("tx.put", e))?;
                    tx.commit().map_err(|e| db_err("tx.commit (counter)", e))?;
                    n
                }
                _ => {
                    let id = db.begin_transaction().map_err(|e| db_err("begin_transaction", e))?;
                    let n =
                        u64_of("counter", db.get_tx(id, &key).map_err(|e| db_err("get_tx", e))?)?;
                    db.put_tx(id, &key, (n + 1).to_le_bytes()).map_err(|e| db_err("put_tx", e))?;
                    let own = db.get_tx(id, &key).map_err(|e| db_err("get_tx", e))?;
                    if own != Some((n + 1).to_le_bytes().to_vec()) {
                        return Err(format!("thread {t}: get_tx does not see its own put_tx"));
                    }
                    db.commit_transaction(id).map_err(|e| db_err("commit_transaction", e))?;
                    n
                }
            };
            if seen != expected {
                return Err(format!(
                    "thread {t}: counter read {seen} in a transaction; this thread last wrote \
                     {expected}"
                ));
            }
            Ok(Applied)
        })?;
        self.counter = to;
        Ok(())
    }

    /// Checks the bank and every group in one snapshot; now and then also a reverse scan, the
    /// snapshot's stability over this thread's own write, `multi_get`, and scans inside
    /// transactions.
    fn audit(&mut self) -> Result<(), Failure> {
        let t = self.t;
        self.audits += 1;
        let db = self.db;
        let snap = db.snapshot().map_err(|e| db_err("snapshot", e))?;
        let total = self.lay.total();
        let mut sum = 0;
        let mut n = 0;
        let mut forward = Vec::new();
        for item in snap.scan_prefix(b"acct/").map_err(|e| db_err("scan_prefix", e))? {
            let (k, v) = item.map_err(|e| db_err("scan_prefix", e))?;
            sum += u64_of(&show(&k), Some(v.clone()))?;
            n += 1;
            forward.push((k, v));
        }
        if n != self.lay.accounts.len() || sum != total {
            return Err(format!(
                "thread {t}: a snapshot scan saw {n} accounts holding {sum}, expected {} \
                 holding {total} (a torn or lost transfer)",
                self.lay.accounts.len()
            ));
        }
        let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for item in snap.scan_prefix(b"grp/").map_err(|e| db_err("scan_prefix", e))? {
            let (k, v) = item.map_err(|e| db_err("scan_prefix", e))?;
            let cut = k.iter().rposition(|&c| c == b'/').unwrap_or(k.len());
            groups.entry(k[..cut].to_vec()).or_default().push(v);
        }
        let k_keys = self.lay.shared.len();
        if groups.len() != self.lay.threads + 1 {
            return Err(format!("thread {t}: a snapshot saw {} groups", groups.len()));
        }
        for (name, vals) in &groups {
            if vals.len() != k_keys || vals.iter().any(|v| *v != vals[0]) {
                let vals: Vec<Option<Vec<u8>>> = vals.iter().cloned().map(Some).collect();
                return Err(format!(
                    "thread {t}: a snapshot saw group {} torn across shards: {}",
                    show(name),
                    group_text(&vals)
                ));
            }
        }
        match self.audits % 4 {
            0 => {
                // Backwards, over a RangeBounds range.
                let mut back = snap
                    .range(b"acct/".as_slice()..b"acct0".as_slice())
                    .map_err(|e| db_err("range", e))?
                    .rev()
                    .collect::<lightning_db::Result<Vec<_>>>()
                    .map_err(|e| db_err("reverse range", e))?;
                back.reverse();
                if back != forward {
                    return Err(format!("thread {t}: a reverse scan disagrees with a forward one"));
                }
            }
            1 => {
                // The snapshot does not move when this thread writes.
                let key = kv_key(t, 0);
                let before = snap.get(&key).map_err(|e| db_err("snapshot get", e))?;
                self.put()?;
                let after = snap.get(&key).map_err(|e| db_err("snapshot get", e))?;
                let vals =
                    snap.multi_get(&self.lay.accounts).map_err(|e| db_err("multi_get", e))?;
                let again: u64 =
                    vals.into_iter().map(|v| u64_of("account", v)).sum::<Result<_, _>>()?;
                if before != after || again != total {
                    return Err(format!("thread {t}: a snapshot changed under later writes"));
                }
            }
            2 => {
                let vals = db.multi_get(&self.lay.accounts).map_err(|e| db_err("multi_get", e))?;
                let got: u64 =
                    vals.into_iter().map(|v| u64_of("account", v)).sum::<Result<_, _>>()?;
                if got != total {
                    return Err(format!("thread {t}: db.multi_get saw the bank holding {got}"));
                }
            }
            _ => {
                // A transaction's scan (seed API, rolled back) and a handle's range (dropped).
                let id = db.begin_transaction().map_err(|e| db_err("begin_transaction", e))?;
                let mut got = 0;
                for item in db
                    .scan_tx(id, Some(b"acct/"), Some(b"acct0"))
                    .map_err(|e| db_err("scan_tx", e))?
                {
                    got += u64_of("account", Some(item.map_err(|e| db_err("scan_tx", e))?.1))?;
                }
                db.rollback_transaction(id).map_err(|e| db_err("rollback_transaction", e))?;
                let tx = db.begin().map_err(|e| db_err("begin", e))?;
                let mut got2 = 0;
                for item in tx.range(b"acct/".as_slice()..).map_err(|e| db_err("tx.range", e))? {
                    let (k, v) = item.map_err(|e| db_err("tx.range", e))?;
                    if !k.starts_with(b"acct/") {
                        break;
                    }
                    got2 += u64_of("account", Some(v))?;
                }
                drop(tx);
                if got != total || got2 != total {
                    return Err(format!(
                        "thread {t}: transaction scans saw the bank holding {got} and {got2}"
                    ));
                }
            }
        }
        self.sink.emit(Ev::Audit(t));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The child

/// `--child <dir> <mode> <threads> <round> <seed> <pause_us>`: runs the workers until killed,
/// printing every event.
fn child_main(args: &[String]) -> ! {
    let sink = PrintSink(Mutex::new(std::io::stdout()));
    let parsed = (|| -> Option<_> {
        let [dir, mode, threads, round, seed, pause] = args else { return None };
        Some((
            PathBuf::from(dir),
            parse_mode(mode),
            threads.parse::<usize>().ok()?,
            round.parse::<u64>().ok()?,
            seed.parse::<u64>().ok()?,
            Duration::from_micros(pause.parse().ok()?),
        ))
    })();
    let Some((dir, mode, threads, round, seed, pause)) = parsed else {
        sink.emit(Ev::Fail(format!("child: bad arguments {args:?}")));
        std::process::exit(2);
    };
    std::panic::set_hook(Box::new(|info| {
        println!("FAIL the child panicked: {}", info.to_string().replace('\n', " "));
        std::process::exit(3);
    }));
    // The shard count is fixed at creation; the value given here is ignored.
    let db = match Database::open(&dir, config(mode, 1)) {
        Ok(db) => db,
        Err(e) => {
            sink.emit(Ev::Fail(db_err("child: open", e)));
            std::process::exit(2);
        }
    };
    let lay = Layout::new(&db, threads);
    sink.emit(Ev::Ready);
    let never = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (db, lay, sink, never) = (&db, &lay, &sink, &never);
            s.spawn(move || {
                let result = Worker::new(db, lay, sink, t, round, seed)
                    .and_then(|mut w| w.run(never, pause));
                if let Err(why) = result {
                    sink.emit(Ev::Fail(why));
                    std::process::exit(2);
                }
            });
        }
    });
    std::process::exit(2)
}

/// What one kill round measured.
struct Run {
    /// Spawn to ready (the child's open: WAL replay included).
    startup: Duration,
    /// Ready to kill.
    ran: Duration,
}

/// Runs one child until `kill_after` past its open, kills it with SIGKILL, and feeds every
/// complete line it printed into `model`.
fn run_and_kill(
    dir: &Path,
    mode: WalSyncMode,
    o: &Options,
    round: u64,
    kill_after: Duration,
    model: &Arc<Mutex<Model>>,
) -> Result<Run, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(dir)
        .arg(mode_name(mode))
        .args([
            o.threads.to_string(),
            round.to_string(),
            o.seed.to_string(),
            o.pause_us.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("the child has no stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader_model = model.clone();
    // Reads like tests/error_recovery_tests.rs: until EOF, which comes when the child dies.
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Some(text) = line.strip_suffix('\n') else { break }; // cut short by the kill
            let ev = Ev::parse(text);
            let mut m = reader_model.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                Some(Ev::Ready) => {
                    m.apply(Ev::Ready);
                    let _ = ready_tx.send(());
                }
                Some(ev) => m.apply(ev),
                None => m.fail(format!("the child printed an unreadable line: {text:?}")),
            }
        }
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(120));
    let startup = spawned.elapsed();
    let started = Instant::now();
    if ready.is_ok() {
        while started.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(5));
            if model.lock().unwrap_or_else(|p| p.into_inner()).failure.is_some() {
                break;
            }
        }
    }
    let ran = started.elapsed();
    let exited = child.try_wait().map_err(|e| format!("try_wait: {e}"))?;
    if exited.is_none() {
        child.kill().map_err(|e| format!("kill the child: {e}"))?; // SIGKILL
    }
    let status = child.wait().map_err(|e| format!("wait for the child: {e}"))?;
    reader.join().map_err(|_| "the reader thread panicked".to_string())?;
    let m = model.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = &m.failure {
        return Err(format!("the child reported: {why}"));
    }
    if ready.is_err() {
        return Err(format!("the child was not ready after 120 s (status {status:?})"));
    }
    if exited.is_some() || status.signal() != Some(libc::SIGKILL) {
        return Err(format!("the child ended before the kill: {status}"));
    }
    Ok(Run { startup, ran })
}

// ---------------------------------------------------------------------------------------------
// The parent

struct Options {
    seconds: f64,
    threads: usize,
    rounds: usize,
    shards: usize,
    seed: u64,
    pause_us: u64,
}

fn parse_options(args: &[String]) -> Result<Options, Failure> {
    let mut o = Options {
        seconds: 6.0,
        threads: 4,
        rounds: 3,
        shards: LightningDbConfig::default().shards.max(2),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 >> 1),
        pause_us: 500,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: cannot read {value:?}");
        match flag.as_str() {
            "--seconds" => o.seconds = value.parse().map_err(|_| bad())?,
            "--threads" => o.threads = value.parse().map_err(|_| bad())?,
            "--rounds" => o.rounds = value.parse().map_err(|_| bad())?,
            "--shards" => o.shards = value.parse().map_err(|_| bad())?,
            "--seed" => o.seed = value.parse().map_err(|_| bad())?,
            "--pause-us" => o.pause_us = value.parse().map_err(|_| bad())?,
            _ => {
                return Err(format!(
                    "unknown option {flag}; options: --seconds S --threads T --rounds R \
                     --shards N --seed X --pause-us P"
                ))
            }
        }
    }
    if o.threads == 0 || o.shards == 0 || o.seed >= 1 << 63 {
        return Err("--threads and --shards must be at least 1, --seed below 2^63".into());
    }
    Ok(o)
}

/// Phase one: the threads in this process at full speed, stopped after `seconds`; the model
/// checked exactly. (Not reopened: see the note at the top about replay time.)
fn in_process(dir: &Path, o: &Options) -> Result<(), Failure> {
    let db = Database::open(dir, config(WalSyncMode::Normal, o.shards))
        .map_err(|e| db_err("open", e))?;
    let lay = Layout::new(&db, o.threads);
    let sink = ModelSink(Mutex::new(Model::new(o.threads)));
    let stop = AtomicBool::new(false);
    let pause = Duration::ZERO;
    let started = Instant::now();
    let results: Vec<Result<(), Failure>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let (db, lay, sink, stop) = (&db, &lay, &sink, &stop);
                s.spawn(move || {
                    let r = Worker::new(db, lay, sink, t, 0, o.seed)
                        .and_then(|mut w| w.run(stop, pause));
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        while started.elapsed().as_secs_f64() < o.seconds && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a worker thread panicked".into())))
            .collect()
    });
    let ran = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let mut model = sink.0.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(why) = model.failure.take() {
        return Err(why);
    }
    let counts = model.counts;
    let found = verify(&db, &lay, &mut model)?;
    let stats = db.stats().map_err(|e| db_err("stats", e))?.total();
    let mem = db.memory_usage();
    println!(
        "in-process ({} threads, {} shards, normal): {:.1} s, {counts}{}",
        o.threads,
        db.shard_count(),
        ran.as_secs_f64(),
        gave_up_text(&model)
    );
    println!(
        "  engine: {} WAL records, {} fdatasyncs, {} shard loop stalls; memtable {} KiB, {} \
         versions",
        stats.wal_records,
        stats.fdatasyncs,
        stats.stall_count,
        mem.memtable_bytes / 1024,
        mem.versions
    );
    println!("  checked: {found}");
    let closing = Instant::now();
    db.close().map_err(|e| db_err("close", e))?;
    println!("  closed in {:.2} s", closing.elapsed().as_secs_f64());
    Ok(())
}

fn gave_up_text(m: &Model) -> String {
    if m.gave_up.is_empty() {
        String::new()
    } else {
        format!(" (gave up: {})", m.gave_up.join("; "))
    }
}

/// `o.rounds` kill rounds in `mode`, all on one new database in `dir`.
fn kill_rounds(dir: &Path, o: &Options, mode: WalSyncMode) -> Result<(), Failure> {
    create(dir, o.shards, o.threads)?;
    // A new database holds exactly what a new model says.
    let model = Arc::new(Mutex::new(Model::new(o.threads)));
    let mut rng = Rng::new(o.seed ^ mode as u64);
    let mut acked = 0;
    for r in 0..o.rounds {
        let name = format!("{} round {r}", mode_name(mode));
        let kill_after = Duration::from_millis(300 + rng.below(1200));
        {
            let mut m = model.lock().unwrap_or_else(|p| p.into_inner());
            m.counts = Counts::default();
            m.gave_up.clear();
            m.ready = false;
        }
        // Round r + 1: phase one wrote versions of round 0.
        let run = run_and_kill(dir, mode, o, r as u64 + 1, kill_after, &model)
            .map_err(|e| format!("{name}: {e}"))?;
        let mut m = model.lock().unwrap_or_else(|p| p.into_inner());
        let reopening = Instant::now();
        let db = Database::open(dir, config(mode, o.shards))
            .map_err(|e| format!("{name}: reopen after the kill: {e}"))?;
        let opened = reopening.elapsed();
        let lay = Layout::new(&db, o.threads);
        let found =
            verify(&db, &lay, &mut m).map_err(|e| format!("{name}, after the kill: {e}"))?;
        let rec = db.stats().map_err(|e| db_err("stats", e))?.total().recovery;
        db.close().map_err(|e| db_err("close", e))?;
        println!(
            "{name}: child open {:.2} s, killed after {:.2} s; {}{}",
            run.startup.as_secs_f64(),
            run.ran.as_secs_f64(),
            m.counts,
            gave_up_text(&m)
        );
        println!(
            "  reopened in {:.2} s: {} WAL records replayed, {} torn tails cut ({} bytes), {} \
             segments set aside",
            opened.as_secs_f64(),
            rec.records_replayed,
            rec.tails_cut,
            rec.bytes_cut,
            rec.segments_set_aside
        );
        println!("  checked: {found}");
        if m.counts.acked() == 0 {
            println!("  (nothing was acknowledged in this round: a very slow disk?)");
        }
        acked += m.counts.acked();
    }
    if acked == 0 {
        return Err(format!("{}: no round acknowledged any write", mode_name(mode)));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..]);
    }
    let o = match parse_options(&args) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("stress_test: {why}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("lightning-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let phase_one = dir.join("in-process");
    println!(
        "stress_test: {} threads, {} shards, {} s in process, {} kill rounds per mode, pause \
         {} µs, seed {}, in {}",
        o.threads,
        o.shards,
        o.seconds,
        o.rounds,
        o.pause_us,
        o.seed,
        dir.display()
    );
    let started = Instant::now();
    let result = create(&phase_one, o.shards, o.threads)
        .and_then(|()| in_process(&phase_one, &o))
        .and_then(|()| kill_rounds(&dir.join("kill-normal"), &o, WalSyncMode::Normal))
        .and_then(|()| kill_rounds(&dir.join("kill-sync"), &o, WalSyncMode::Sync));
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!("PASS: every check held ({:.1} s)", started.elapsed().as_secs_f64());
        }
        Err(why) => {
            println!("FAILED: {why}");
            println!(
                "(seed {}: rerun with --seed {}; the database is kept in {})",
                o.seed,
                o.seed,
                dir.display()
            );
            std::process::exit(1);
        }
    }
}
