//! Runs one case: opens the engine in a fresh directory, preloads it (untimed), then drives the
//! measured phase from `threads` caller threads, closed loop (as fast as possible) or open
//! loop (`rate`), recording one hdrhistogram per operation type per thread and one per
//! one-second interval, merged at the end.
//!
//! Open loop: each thread has a [`Schedule`] of intended start times (`rate / threads` per
//! second) and times every operation from its *intended* start, not its actual one, so a stall
//! shows up in the latencies of every operation it delayed (no coordinated omission; YCSB's
//! `-target` with HdrHistogram does the same).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::engine::{self, BatchOp, BenchError, Engine, EngineConfig, Mode, Result, Transfer};
use crate::model::{CaseConfig, CaseReport, IntervalPoint, OpReport, TransferReport};
use crate::workload::{
    self, Distribution, KeyChooser, Op, Rng, ValuePool, WorkloadSpec, INITIAL_BALANCE, MAX_AMOUNT,
    SAME_PARTITION_TRIES,
};

/// Everything one case needs.
#[derive(Clone, Debug)]
pub struct CaseParams {
    /// Engine name.
    pub engine: String,
    /// Workload.
    pub workload: WorkloadSpec,
    /// Keys in the data set (and written by fills).
    pub keys: u64,
    /// Key size.
    pub key_bytes: usize,
    /// Value size.
    pub value_bytes: usize,
    /// Key distribution.
    pub distribution: Distribution,
    /// Caller threads.
    pub threads: usize,
    /// Shards (lightning; 0 = default).
    pub shards: usize,
    /// Pin lightning's shard threads (its default).
    pub pin_shards: bool,
    /// Lightning's idle shard polling before it parks, µs (`None`: its default).
    pub spin_us: Option<u64>,
    /// Durability mode.
    pub mode: Mode,
    /// Engine cache bytes.
    pub cache_bytes: u64,
    /// Compression.
    pub compression: bool,
    /// Operations in the measured phase (all threads); `None` = `keys`, or run for `duration`.
    pub ops: Option<u64>,
    /// Measure for this long instead of a fixed number of operations.
    pub duration: Option<Duration>,
    /// Stop a fixed-count phase after this long anyway (the case is then marked capped).
    pub max_time: Option<Duration>,
    /// Open loop: total target operations per second.
    pub rate: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Puts per batch (`fillbatch`).
    pub batch_size: usize,
    /// Entries per scan.
    pub scan_len: usize,
    /// Read every key once in order after the preload, untimed.
    pub warm: bool,
    /// Parent of the case's data directory.
    pub data_dir: PathBuf,
    /// Print a progress line every second.
    pub progress: bool,
}

impl CaseParams {
    fn config(&self) -> CaseConfig {
        CaseConfig {
            keys: self.keys,
            key_bytes: self.key_bytes,
            value_bytes: self.value_bytes,
            distribution: self.distribution.name(),
            threads: self.threads,
            shards: self.shards,
            mode: self.mode.name().to_string(),
            cache_bytes: self.cache_bytes,
            compression: self.compression,
            rate: self.rate,
            seed: self.seed,
        }
    }
}

/// Intended start times of an open-loop thread: `start + k × interval`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// When operation 0 is due.
    pub start: Instant,
    /// Time between intended starts.
    pub interval: Duration,
}

impl Schedule {
    /// A schedule of `rate` operations per second from `start`.
    pub fn new(start: Instant, rate: f64) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate.max(1e-9));
        Schedule { start, interval }
    }

    /// When operation `k` is due.
    pub fn intended(&self, k: u64) -> Instant {
        self.start + self.interval.mul_f64(k as f64)
    }

    /// The latency of operation `k` that completed at `done`: from its intended start, so
    /// time spent waiting behind a stall counts.
    pub fn latency(&self, k: u64, done: Instant) -> Duration {
        done.saturating_duration_since(self.intended(k))
    }
}

/// A nanosecond latency histogram, 1 ns to 1 h.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Invariant: constant bounds with low = 1 < high and 3 significant digits are valid.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant histogram bounds are valid")
}

/// One thread's recordings.
struct Recorder {
    per_op: Vec<Histogram<u64>>,
    interval: Histogram<u64>,
    interval_index: u64,
    phase_start: Instant,
    intervals: mpsc::Sender<(u64, Histogram<u64>)>,
    done: Arc<AtomicU64>,
}

impl Recorder {
    fn record(&mut self, op: Op, latency: Duration, now: Instant) {
        let ns = (latency.as_nanos() as u64).clamp(1, 3_600_000_000_000);
        let _ = self.per_op[op.index()].record(ns);
        let index = now.saturating_duration_since(self.phase_start).as_secs();
        if index != self.interval_index {
            self.flush_interval();
            self.interval_index = index;
        }
        let _ = self.interval.record(ns);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn flush_interval(&mut self) {
        if !self.interval.is_empty() {
            let h = std::mem::replace(&mut self.interval, new_histogram());
            let _ = self.intervals.send((self.interval_index, h));
        }
    }
}

/// Shared state of one measured phase.
struct Phase {
    engine: Arc<dyn Engine>,
    params: CaseParams,
    values: Arc<ValuePool>,
    permutation: Arc<Vec<u64>>,
    inserted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

/// Transfer attempts and conflicts of one measured phase, all threads together: each thread
/// counts in its own cells and adds them here once, at its end, so counting costs the measured
/// transfers no shared cache line.
#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    conflicts: AtomicU64,
}

/// A transfer refused this many times in a row is an error, not a figure: a livelocked engine
/// must not hang the run.
const MAX_CONFLICTS_IN_A_ROW: u64 = 100_000;

/// Runs one case end to end: opens the engine in a fresh directory, runs the case on it
/// ([`run_case_on`]) and removes the directory.
pub fn run_case(params: &CaseParams) -> Result<CaseReport> {
    let dir = params.data_dir.join(format!(
        "{}-{}-{}",
        params.engine,
        params.workload.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(engine::err)?;
    let config = EngineConfig {
        dir: dir.clone(),
        mode: params.mode,
        cache_bytes: params.cache_bytes,
        compression: params.compression,
        shards: params.shards,
        pin_shards: params.pin_shards,
        spin_us: params.spin_us,
        max_value_bytes: params.value_bytes,
        transactional: is_transfer(params),
    };
    let engine: Arc<dyn Engine> = Arc::from(engine::open(&params.engine, &config)?);
    let result = run_case_on(params, engine);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn is_transfer(params: &CaseParams) -> bool {
    params.workload.name == "transfer"
}

/// Runs one case on `engine`, open on a fresh, empty store: preload (untimed), the measured
/// phase, and for `transfer` the check that no money was lost or made. [`run_case`] opens
/// engines by name; tests pass engines of their own here.
pub fn run_case_on(params: &CaseParams, engine: Arc<dyn Engine>) -> Result<CaseReport> {
    let transfer = is_transfer(params);
    if transfer {
        if params.keys < 2 {
            return Err(BenchError(format!(
                "transfer needs at least 2 accounts (--keys), not {}",
                params.keys
            )));
        }
        // A transfer of 0 asks the engine whether it has transactions at all before anything
        // is loaded; on an engine that does, it writes balances of 0 that the preload replaces.
        let (a, b) = (workload::key(0, params.key_bytes), workload::key(1, params.key_bytes));
        if engine.transfer(&a, &b, 0)?.is_none() {
            return Ok(unsupported(
                params,
                &format!(
                    "skipped: {} has no transactions (Engine::transfer returned None)",
                    engine.name()
                ),
            ));
        }
    }
    let values = Arc::new(ValuePool::new(params.value_bytes, params.seed ^ 0x51));
    let permutation = Arc::new(workload::permutation(params.keys, params.seed));
    if params.workload.preload {
        preload(&engine, params, &values)?;
        if params.warm {
            warm(engine.as_ref(), params.keys)?;
        }
    }
    let phase = Phase {
        engine: engine.clone(),
        params: params.clone(),
        values,
        permutation,
        inserted: Arc::new(AtomicU64::new(if params.workload.preload { params.keys } else { 0 })),
        stop: Arc::new(AtomicBool::new(false)),
        tally: Arc::new(Tally::default()),
    };
    engine.phase_start();
    let result = measure(&phase);
    // Before the final sync, so the engine's statistics cover the measured phase alone.
    let stats = engine.stats();
    let transfers = match (&result, transfer) {
        (Ok(_), true) => {
            let total = verify_balances(engine.as_ref(), params.keys, params.key_bytes)?;
            let attempts = phase.tally.attempts.load(Ordering::Relaxed);
            let conflicts = phase.tally.conflicts.load(Ordering::Relaxed);
            Some(TransferReport {
                accounts: params.keys,
                attempts,
                conflicts,
                conflict_rate: if attempts == 0 { 0.0 } else { conflicts as f64 / attempts as f64 },
                total_balance: total,
            })
        }
        _ => None,
    };
    engine.sync()?;
    let describe = engine.describe();
    drop(phase);
    drop(engine);
    let (secs, per_op, timeline) = result?;
    Ok(report(params, describe, secs, per_op, timeline, stats, transfers))
}

/// Sums the balances of accounts `0..accounts` and fails unless the sum is what the preload
/// wrote (`accounts` × [`INITIAL_BALANCE`]): every transfer moves money, none makes or loses
/// any, so an engine that lost an update or committed half a transfer shows here, whatever its
/// throughput. Returns the sum.
pub fn verify_balances(engine: &dyn Engine, accounts: u64, key_bytes: usize) -> Result<u64> {
    let mut out = Vec::with_capacity(8);
    let mut total: u64 = 0;
    for i in 0..accounts {
        out.clear();
        let found = engine.get(&workload::key(i, key_bytes), &mut out)?;
        let balance = engine::decode_balance(found.then_some(out.as_slice()))?;
        total = total.checked_add(balance).ok_or_else(|| {
            BenchError(format!("transfer: the balances of {accounts} accounts overflow a u64"))
        })?;
    }
    let expected = accounts.saturating_mul(INITIAL_BALANCE);
    if total != expected {
        return Err(BenchError(format!(
            "TRANSFER INVARIANT VIOLATED on {}: the balances of {accounts} accounts sum to \
             {total}, not {expected} ({accounts} × {INITIAL_BALANCE}): money was lost or made",
            engine.name()
        )));
    }
    Ok(total)
}

fn unsupported(params: &CaseParams, why: &str) -> CaseReport {
    CaseReport {
        engine: params.engine.clone(),
        workload: params.workload.name.to_string(),
        config: params.config(),
        durability: String::new(),
        secs: 0.0,
        ops: 0,
        ops_per_sec: 0.0,
        mb_per_sec: 0.0,
        ops_by_type: Vec::new(),
        timeline: Vec::new(),
        engine_stats: None,
        notes: vec![why.to_string()],
        transfer: None,
    }
}

/// Loads `keys` keys with batches of 1000, from every thread, then syncs. Untimed. For
/// `transfer` every value is the account's initial balance, 8 bytes little-endian.
fn preload(engine: &Arc<dyn Engine>, p: &CaseParams, values: &Arc<ValuePool>) -> Result<()> {
    let threads = p.threads.max(1) as u64;
    let per = p.keys.div_ceil(threads);
    let accounts = is_transfer(p);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (engine, values) = (engine.clone(), values.clone());
            let (kb, vb, n) = (p.key_bytes, p.value_bytes, p.keys);
            std::thread::spawn(move || -> Result<()> {
                let balance = INITIAL_BALANCE.to_le_bytes();
                let (start, end) = ((t * per).min(n), ((t + 1) * per).min(n));
                let mut i = start;
                while i < end {
                    let stop = (i + 1000).min(end);
                    let keys: Vec<Vec<u8>> = (i..stop).map(|j| workload::key(j, kb)).collect();
                    let ops: Vec<BatchOp<'_>> = keys
                        .iter()
                        .zip(i..stop)
                        .map(|(k, j)| {
                            let value =
                                if accounts { &balance[..] } else { values.value(j, 0, vb) };
                            (k.as_slice(), Some(value))
                        })
                        .collect();
                    engine.write_batch(&ops)?;
                    i = stop;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| engine::err("a preload thread panicked"))??;
    }
    engine.sync()
}

/// One untimed scan over every key (`--warm`): what the engine caches is warm when the
/// measured phase starts. Fails unless it saw all `keys`.
fn warm(engine: &dyn Engine, keys: u64) -> Result<()> {
    let mut seen = 0u64;
    engine.scan(&[0], usize::try_from(keys).unwrap_or(usize::MAX), &mut |_, _| seen += 1)?;
    if seen != keys {
        return Err(engine::err(format!("warm: scanned {seen} keys, expected {keys}")));
    }
    Ok(())
}

type Measured = (f64, Vec<Histogram<u64>>, Vec<(u64, Histogram<u64>)>);

fn measure(phase: &Phase) -> Result<Measured> {
    let p = &phase.params;
    let threads = p.threads.max(1);
    let total_ops = p.ops.unwrap_or(p.keys);
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let monitor = spawn_monitor(rx, done.clone(), p.progress, start, phase.stop.clone());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ctx = ThreadCtx {
                engine: phase.engine.clone(),
                params: p.clone(),
                values: phase.values.clone(),
                permutation: phase.permutation.clone(),
                inserted: phase.inserted.clone(),
                stop: phase.stop.clone(),
                thread: t,
                tally: phase.tally.clone(),
                attempts: Cell::new(0),
                conflicts: Cell::new(0),
                ops: total_ops / threads as u64
                    + u64::from((t as u64) < total_ops % threads as u64),
                start,
            };
            let recorder = Recorder {
                per_op: Op::ALL.iter().map(|_| new_histogram()).collect(),
                interval: new_histogram(),
                interval_index: 0,
                phase_start: start,
                intervals: tx.clone(),
                done: done.clone(),
            };
            std::thread::spawn(move || drive(ctx, recorder))
        })
        .collect();
    drop(tx);
    if let Some(limit) = p.duration.or(p.max_time) {
        let stop = phase.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut per_op: Vec<Histogram<u64>> = Op::ALL.iter().map(|_| new_histogram()).collect();
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(hists)) => {
                for (total, h) in per_op.iter_mut().zip(hists) {
                    let _ = total.add(&h);
                }
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => {
                first_error = first_error.or(Some(engine::err("a benchmark thread panicked")))
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    phase.stop.store(true, Ordering::Relaxed);
    let timeline = monitor.join().unwrap_or_default();
    match first_error {
        Some(e) => Err(e),
        None => Ok((secs, per_op, timeline)),
    }
}

/// Merges the threads' interval histograms by second and prints the progress line.
fn spawn_monitor(
    rx: mpsc::Receiver<(u64, Histogram<u64>)>,
    done: Arc<AtomicU64>,
    progress: bool,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, Histogram<u64>)>> {
    std::thread::spawn(move || {
        let mut merged: std::collections::BTreeMap<u64, Histogram<u64>> =
            std::collections::BTreeMap::new();
        let mut last_print = Instant::now();
        let mut last_done = 0;
        let mut printed = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok((i, h)) => {
                    let _ = merged.entry(i).or_insert_with(new_histogram).add(&h);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if progress
                && last_print.elapsed() >= Duration::from_secs(1)
                && !stop.load(Ordering::Relaxed)
            {
                let now_done = done.load(Ordering::Relaxed);
                let rate = (now_done - last_done) as f64 / last_print.elapsed().as_secs_f64();
                let p99 = merged
                    .values()
                    .next_back()
                    .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
                eprint!(
                    "\r  {:>6.1}s  {now_done:>10} ops  {rate:>12.0} ops/s  p99 {p99:>9.1} us   ",
                    start.elapsed().as_secs_f64()
                );
                last_done = now_done;
                last_print = Instant::now();
                printed = true;
            }
        }
        if printed {
            eprintln!();
        }
        merged.into_iter().collect()
    })
}

struct ThreadCtx {
    engine: Arc<dyn Engine>,
    params: CaseParams,
    values: Arc<ValuePool>,
    permutation: Arc<Vec<u64>>,
    inserted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: usize,
    /// Where this thread's transfer counts go when it ends.
    tally: Arc<Tally>,
    /// Transfer attempts of this thread.
    attempts: Cell<u64>,
    /// Transfer conflicts of this thread.
    conflicts: Cell<u64>,
    ops: u64,
    start: Instant,
}

fn drive(ctx: ThreadCtx, mut rec: Recorder) -> Result<Vec<Histogram<u64>>> {
    let p = &ctx.params;
    let threads = p.threads.max(1) as u64;
    let slice = (p.keys * ctx.thread as u64 / threads, p.keys * (ctx.thread as u64 + 1) / threads);
    let mut chooser = KeyChooser::new(&p.distribution, p.keys, slice);
    let mut rng = Rng::new(p.seed ^ (ctx.thread as u64 + 1).wrapping_mul(0x9E37_79B9));
    let schedule = p.rate.map(|r| Schedule::new(ctx.start, r / threads as f64));
    let mut out = Vec::with_capacity(p.value_bytes);
    let mut fill_next = slice.0;
    let mut k = 0u64;
    while (p.duration.is_some() || k < ctx.ops) && !ctx.stop.load(Ordering::Relaxed) {
        if let Some(s) = &schedule {
            wait_until(s.intended(k));
        }
        let op = p.workload.mix.pick(&mut rng);
        let began = Instant::now();
        issue(&ctx, op, &mut chooser, &mut rng, &mut out, &mut fill_next, slice)?;
        let now = Instant::now();
        let latency = schedule.map_or(now - began, |s| s.latency(k, now));
        rec.record(op, latency, now);
        k += 1;
    }
    rec.flush_interval();
    ctx.tally.attempts.fetch_add(ctx.attempts.get(), Ordering::Relaxed);
    ctx.tally.conflicts.fetch_add(ctx.conflicts.get(), Ordering::Relaxed);
    Ok(rec.per_op)
}

/// Sleeps, then spins, until `t`. The spin yields the CPU: a pacing caller that busy-spins
/// starves every other thread on its core (an engine's shard or background threads), which on
/// a small machine shows up as millisecond tails that belong to the harness, not the engine.
fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::thread::yield_now();
        }
    }
}

fn issue(
    ctx: &ThreadCtx,
    op: Op,
    chooser: &mut KeyChooser,
    rng: &mut Rng,
    out: &mut Vec<u8>,
    fill_next: &mut u64,
    slice: (u64, u64),
) -> Result<()> {
    let p = &ctx.params;
    let (kb, vb) = (p.key_bytes, p.value_bytes);
    let e = &ctx.engine;
    match op {
        Op::Read => {
            let i = chooser.next(rng, ctx.inserted.load(Ordering::Relaxed));
            e.get(&workload::key(i, kb), out).map(|_| ())
        }
        Op::ReadMissing => {
            let i = chooser.next(rng, ctx.inserted.load(Ordering::Relaxed));
            e.get(&workload::missing_key(i, kb), out).map(|_| ())
        }
        Op::Update => {
            let i = chooser.next(rng, ctx.inserted.load(Ordering::Relaxed));
            e.put(&workload::key(i, kb), ctx.values.value(i, rng.next_u64(), vb))
        }
        Op::Insert => {
            let i = next_insert(ctx, fill_next, slice);
            e.put(&workload::key(i, kb), ctx.values.value(i, 0, vb))
        }
        Op::Scan => {
            let i = chooser.next(rng, ctx.inserted.load(Ordering::Relaxed));
            e.scan(&workload::key(i, kb), p.scan_len, &mut |_, _| {}).map(|_| ())
        }
        Op::ReadModifyWrite => {
            let i = chooser.next(rng, ctx.inserted.load(Ordering::Relaxed));
            let key = workload::key(i, kb);
            e.get(&key, out)?;
            e.put(&key, ctx.values.value(i, rng.next_u64(), vb))
        }
        Op::Batch => {
            let keys: Vec<u64> =
                (0..p.batch_size).map(|_| next_insert(ctx, fill_next, slice)).collect();
            let encoded: Vec<Vec<u8>> = keys.iter().map(|&i| workload::key(i, kb)).collect();
            let ops: Vec<BatchOp<'_>> = encoded
                .iter()
                .zip(&keys)
                .map(|(k, &i)| (k.as_slice(), Some(ctx.values.value(i, 1, vb))))
                .collect();
            e.write_batch(&ops)
        }
        Op::Transfer => transfer(ctx, chooser, rng),
        Op::MultiGet => {
            let inserted = ctx.inserted.load(Ordering::Relaxed);
            let keys: Vec<Vec<u8>> = (0..workload::MULTI_GET_KEYS)
                .map(|_| workload::key(chooser.next(rng, inserted), kb))
                .collect();
            e.multi_get(&keys).map(|_| ())
        }
    }
}

/// One transfer: two distinct accounts (the second re-picked while the engine puts both in the
/// same partition, at most [`SAME_PARTITION_TRIES`] times), an amount in `1..=MAX_AMOUNT`, and
/// the same transfer retried after every conflict until it commits. The caller times the whole
/// of it, retries included: that is what a client waits for.
fn transfer(ctx: &ThreadCtx, chooser: &mut KeyChooser, rng: &mut Rng) -> Result<()> {
    let p = &ctx.params;
    let e = &ctx.engine;
    let n = p.keys;
    let from = chooser.next(rng, n);
    let from_key = workload::key(from, p.key_bytes);
    let mut to_key = Vec::new();
    for _ in 0..SAME_PARTITION_TRIES {
        let mut to = chooser.next(rng, n);
        if to == from {
            // Uniform over the other n - 1 accounts: a skewed or sequential chooser may keep
            // drawing `from` (a one-key slice always does).
            to = (from + 1 + rng.below(n - 1)) % n;
        }
        to_key = workload::key(to, p.key_bytes);
        if !e.same_partition(&from_key, &to_key) {
            break;
        }
    }
    let amount = 1 + rng.below(MAX_AMOUNT);
    for _ in 0..MAX_CONFLICTS_IN_A_ROW {
        ctx.attempts.set(ctx.attempts.get() + 1);
        match e.transfer(&from_key, &to_key, amount)? {
            Some(Transfer::Committed) => return Ok(()),
            Some(Transfer::Conflict) => ctx.conflicts.set(ctx.conflicts.get() + 1),
            None => {
                return Err(BenchError(format!(
                    "{}: transfer returned None in the measured phase after committing the probe",
                    e.name()
                )))
            }
        }
    }
    Err(BenchError(format!(
        "{}: one transfer conflicted {MAX_CONFLICTS_IN_A_ROW} times in a row (livelock?)",
        e.name()
    )))
}

/// The key a fill or insert writes next: fills walk this thread's slice (in order for
/// `fillseq`, through the shared permutation for `fillrandom`); inserts past the preloaded set
/// take fresh indexes.
fn next_insert(ctx: &ThreadCtx, fill_next: &mut u64, slice: (u64, u64)) -> u64 {
    if ctx.params.workload.preload {
        return ctx.inserted.fetch_add(1, Ordering::Relaxed);
    }
    let i = *fill_next;
    *fill_next = if i + 1 >= slice.1 { slice.0 } else { i + 1 };
    if ctx.params.workload.ordered {
        i
    } else {
        ctx.permutation.get(i as usize).copied().unwrap_or(i)
    }
}

fn report(
    p: &CaseParams,
    durability: String,
    secs: f64,
    per_op: Vec<Histogram<u64>>,
    timeline: Vec<(u64, Histogram<u64>)>,
    stats: Option<serde_json::Value>,
    transfer: Option<TransferReport>,
) -> CaseReport {
    let ops: u64 = per_op.iter().map(Histogram::len).sum();
    let secs = secs.max(1e-9);
    let bytes_per_op = match p.workload.name {
        // Two accounts written: two keys and two 8-byte balances, whatever `value_bytes` says.
        "transfer" => 2.0 * (p.key_bytes + 8) as f64,
        name => {
            (p.key_bytes + p.value_bytes) as f64
                * match name {
                    "fillbatch" => p.batch_size as f64,
                    "scan" | "readseq" | "ycsb_e" => p.scan_len as f64,
                    "multiget" => workload::MULTI_GET_KEYS as f64,
                    _ => 1.0,
                }
        }
    };
    let ops_by_type = Op::ALL
        .iter()
        .zip(&per_op)
        .filter(|(_, h)| !h.is_empty())
        .map(|(op, h)| OpReport::new(op.name(), h))
        .collect();
    let timeline = timeline
        .iter()
        .map(|(i, h)| IntervalPoint {
            t: *i as f64 + 1.0,
            ops_per_sec: h.len() as f64,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            histogram_hex: crate::model::histogram_to_hex(h),
        })
        .collect();
    let mut notes = Vec::new();
    let planned = p.ops.unwrap_or(p.keys);
    if p.duration.is_none() && ops < planned {
        notes.push(format!("capped by --max-secs: {ops} of {planned} operations"));
    }
    if p.rate.is_some() {
        notes.push("open loop: latencies from each operation's intended start".to_string());
    }
    if let Some(t) = &transfer {
        notes.push(t.summary());
    }
    CaseReport {
        engine: p.engine.clone(),
        workload: p.workload.name.to_string(),
        config: p.config(),
        durability,
        secs,
        ops,
        ops_per_sec: ops as f64 / secs,
        mb_per_sec: ops as f64 * bytes_per_op / secs / 1e6,
        ops_by_type,
        timeline,
        engine_stats: stats,
        notes,
        transfer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_latency_counts_from_the_intended_start() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0); // one op every millisecond
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(10), t0 + Duration::from_millis(10));
        // Operation 3 was due at 3 ms; a stall let it start at 50 ms and finish at 51 ms:
        // its latency is 48 ms, not 1 ms.
        let done = t0 + Duration::from_millis(51);
        assert_eq!(s.latency(3, done), Duration::from_millis(48));
        // Finishing before the intended start (clock skew) never underflows.
        assert_eq!(s.latency(100, t0), Duration::ZERO);
    }
}
