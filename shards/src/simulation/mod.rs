//! The simulation runner: shards on a simulated disk, driven step by step on one thread, so a
//! seed gives one run and a failing seed replays exactly (`scripts/simulate.sh --seed S`).
//!
//! Each seed picks a durability mode, small segments, fault rates, and a few callers. Every step
//! the callers send puts, deletes, batches and syncs, the shards run a turn, the disk completes
//! some operations in flight (in any order) and the clock moves; now and then the process
//! crashes (in the middle of a turn, too), the machine loses power, or a shard closes cleanly,
//! and the shards reopen, sometimes in another mode. After every reopen the recovered state is
//! checked against the model (`model.rs`): every write acknowledged in `Sync` survives power
//! loss, every write acknowledged survives a process crash, a `sync()` covers a power loss in
//! every mode, nothing unacknowledged appears torn or half-applied, and a torn tail never
//! fails replay. Reads check that a caller reads its own acknowledged write, and a failed write
//! or sync must poison its shard, after which nothing is acknowledged.
//!
//! Feature `simulation` (and the crate's own tests); single-threaded by construction.

mod model;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::commit::{Commit, OwnedOps, Written};
use crate::config::{Limits, ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{ingress, Completion, Inbox, IngressSender, Request, Responder, WriteOp};
use crate::io::sim::{FaultOp, FaultRates, SimDisk, SimRng, SimStorage};
use crate::io::{IoDone, Storage};
use crate::runtime::event_loop::{Reactor, Turn};
use crate::shard::{self, Shard};
use crate::view::ShardView;
use model::{Outcome, ShardModel, State, Survive};

/// Keys each shard's callers write (small, so keys are overwritten and GC runs).
const KEYS: u64 = 24;
/// How many times a reopen is tried while injected faults keep failing it.
const OPEN_ATTEMPTS: usize = 8;

/// How long a seed runs and how much it says.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    /// Steps per seed.
    pub steps: usize,
    /// Print every event.
    pub verbose: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { steps: 400, verbose: false }
    }
}

/// What a seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedSummary {
    /// Writes acknowledged.
    pub acked: u64,
    /// Process crashes.
    pub crashes: u64,
    /// Power losses.
    pub power_losses: u64,
    /// Clean closes.
    pub closes: u64,
    /// Faults the disk fired.
    pub faults: u64,
    /// Tails recovery cut.
    pub cuts: u64,
    /// A digest of every state the shards recovered to: two runs of one seed agree on it.
    pub digest: u32,
}

/// A seed that broke a promise: where, what, and how to replay it.
#[derive(Clone, Debug)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// The step it failed at.
    pub step: usize,
    /// What went wrong.
    pub what: String,
}

impl std::fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} failed at step {}: {}\n  replay it: scripts/simulate.sh --seed {} --verbose",
            self.seed, self.step, self.what, self.seed
        )
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: SimOptions) -> std::result::Result<SeedSummary, SeedFailure> {
    let mut run = Run::new(seed, options);
    let result = run.go();
    result.map(|()| run.summary.clone()).map_err(|what| SeedFailure { seed, step: run.step, what })
}

/// A shard that is running: its state machine, its storage and its queue.
struct Live {
    shard: Shard<SimStorage>,
    io: SimStorage,
    view: Arc<ShardView>,
    sender: IngressSender,
    inbox: Inbox,
    done: Vec<IoDone>,
    /// `Normal`/`Async`: the commit lock the simulated callers write under.
    commit: Arc<Commit>,
}

/// A caller's request in flight.
struct Outstanding {
    shard: usize,
    completion: Arc<Completion>,
    what: Sending,
    /// The step it was sent at (to tell requests sent after a poisoning was seen).
    step: usize,
}

#[derive(Clone, Debug)]
enum Sending {
    /// `send` numbers the write; the model learns its place when it is placed.
    Write {
        send: u64,
        keys: Vec<Vec<u8>>,
    },
    Sync {
        sent_before: usize,
    },
}

struct Run {
    seed: u64,
    options: SimOptions,
    rng: SimRng,
    disk: SimDisk,
    mode: WalSyncMode,
    configs: Vec<ShardConfig>,
    live: Vec<Option<Live>>,
    models: Vec<ShardModel>,
    callers: Vec<Option<Outstanding>>,
    /// The step each shard was first seen poisoned at, this epoch.
    poisoned_at: Vec<Option<usize>>,
    step: usize,
    summary: SeedSummary,
    /// Writes sent to a commit lock and not placed yet: first key's address → send number.
    unplaced: Vec<HashMap<usize, (u64, Vec<WriteOp>)>>,
    /// Send number → index in its shard's model, once placed.
    placed: HashMap<u64, usize>,
    next_send: u64,
}

impl Run {
    fn new(seed: u64, options: SimOptions) -> Run {
        let mut rng = SimRng::new(seed);
        let disk = SimDisk::deterministic(rng.next_u64());
        let mode = pick_mode(&mut rng);
        let shards = rng.between(1, 2) as usize;
        let callers = rng.between(1, 5) as usize;
        let dir = std::path::PathBuf::from(format!("/sim/seed-{seed}"));
        let configs = (0..shards).map(|id| config(&mut rng, &dir, id, mode)).collect();
        if rng.chance(0.6) {
            disk.set_rates(FaultRates {
                write: 0.01 * rng.below(3) as f64,
                sync: 0.01 * rng.below(3) as f64,
                blocking_sync: 0.005 * rng.below(2) as f64,
                allocate: 0.05 * rng.below(3) as f64,
            });
        }
        Run {
            seed,
            options,
            rng,
            disk,

            mode,
            configs,
            live: (0..shards).map(|_| None).collect(),
            models: (0..shards).map(|_| ShardModel::default()).collect(),
            callers: (0..callers).map(|_| None).collect(),
            poisoned_at: vec![None; shards],
            step: 0,
            summary: SeedSummary::default(),
            unplaced: (0..shards).map(|_| HashMap::new()).collect(),
            placed: HashMap::new(),
            next_send: 0,
        }
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.options.verbose {
            eprintln!("[seed {} step {}] {}", self.seed, self.step, what());
        }
    }

    fn go(&mut self) -> std::result::Result<(), String> {
        self.log(|| {
            format!(
                "mode {:?}, {} shards, {} callers",
                self.mode,
                self.live.len(),
                self.callers.len()
            )
        });
        for s in 0..self.live.len() {
            self.open(s)?;
        }
        while self.step < self.options.steps {
            self.step += 1;
            self.callers_act();
            self.run_turns()?;
            self.disk.complete_some(self.rng.below(4) as usize);
            let ms = if self.rng.chance(0.05) { self.rng.below(80) } else { self.rng.below(3) };
            self.disk.advance_clock(Duration::from_millis(ms));
            self.collect_replies()?;
            self.check_faults()?;
            self.maybe_crash()?;
        }
        self.close_all_and_check()
    }

    // ---------------------------------------------------------------------------------------
    // Opening and crashing.

    fn open(&mut self, s: usize) -> std::result::Result<(), String> {
        let mut last = None;
        for attempt in 0..OPEN_ATTEMPTS {
            if attempt + 1 == OPEN_ATTEMPTS {
                self.disk.clear_faults(); // the environment healed
            }
            let mut io = self.disk.storage();
            let opened = shard::open(&mut io, &self.configs[s], None);
            // Faults during an open make it fail, and a failed open poisons nothing.
            self.summary.faults += self.disk.take_fired().len() as u64;
            match opened {
                Ok((shard, opened)) => {
                    let shard::Opened { view, commit, report, .. } = opened;
                    commit.record_placements();
                    self.summary.cuts += u64::from(report.recovery.cut.is_some());
                    let (sender, inbox) = ingress(64).map_err(|e| e.to_string())?;
                    let done = Vec::new();
                    self.live[s] = Some(Live { shard, io, view, sender, inbox, done, commit });
                    self.unplaced[s].clear();
                    self.poisoned_at[s] = None;
                    let recovery = &report.recovery;
                    self.log(|| format!("shard {s} opened: {recovery:?}"));
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e,
                        Error::Corruption { .. } | Error::IncompatibleVersion { .. }
                    ) =>
                {
                    return Err(format!("reopening shard {s} failed: {e}"));
                }
                Err(e) => {
                    // An open submits nothing to the ring: dropping its storage is enough.
                    self.log(|| format!("opening shard {s} failed (fault): {e}"));
                    last = Some(e);
                }
            }
        }
        Err(format!("shard {s} did not open in {OPEN_ATTEMPTS} attempts: {last:?}"))
    }

    /// Reads every key of shard `s` after a reopen and checks it against the model.
    fn check_recovered(&mut self, s: usize, survive: Survive) -> std::result::Result<(), String> {
        let Some(live) = &self.live[s] else { return Ok(()) };
        let mut got = State::new();
        for k in 0..KEYS {
            let key = key(k);
            let read = live.view.get(&key).map_err(|e| format!("shard {s}: a read failed: {e}"))?;
            if let Some(v) = read {
                got.insert(key, v);
            }
        }
        for (k, v) in &got {
            self.summary.digest = crc32c::crc32c_append(self.summary.digest, k);
            self.summary.digest = crc32c::crc32c_append(self.summary.digest, v);
        }
        self.models[s].recovered(got, survive).map_err(|e| format!("shard {s}: {e}"))
    }

    fn maybe_crash(&mut self) -> std::result::Result<(), String> {
        let roll = self.rng.below(1000);
        let power = self.rng.chance(0.5);
        match roll {
            0..=7 => self.crash(false, false),
            8..=13 => self.crash(true, false),
            14..=19 => self.crash(power, true),
            20..=24 => self.close_and_reopen(),
            _ => Ok(()),
        }
    }

    /// Kills the process (`power`: the machine) and reopens every shard. `mid_turn`: the death
    /// comes in the middle of the next turns, after a random number of disk operations.
    fn crash(&mut self, power: bool, mid_turn: bool) -> std::result::Result<(), String> {
        if mid_turn {
            self.disk.freeze_after(self.rng.below(12));
            self.callers_act();
            self.run_turns()?;
            self.disk.complete_some(self.rng.below(3) as usize);
            // Acknowledgements of the dying step may be from after the death: doubtful. A
            // refusal is still a refusal (the write is not in the log).
            self.collect_replies()?;
        }
        self.log(|| {
            format!("{} (mid-turn: {mid_turn})", if power { "POWER LOSS" } else { "CRASH" })
        });
        for live in &mut self.live {
            *live = None; // the process is gone: nothing it held is answered
        }
        for c in &mut self.callers {
            *c = None;
        }
        for m in &mut self.models {
            m.crash();
        }
        self.forget_unplaced();
        if power {
            self.disk.power_loss();
            self.summary.power_losses += 1;
        } else {
            self.disk.crash();
            self.summary.crashes += 1;
        }
        // Operations the crash resolved may fire faults: nobody is left to be poisoned.
        self.summary.faults += self.disk.take_fired().len() as u64;
        let survive = match (power, self.mode) {
            (false, _) | (true, WalSyncMode::Sync) => Survive::Acknowledged,
            (true, _) => Survive::Synced,
        };
        self.reopen_all(&vec![survive; self.live.len()])
    }

    fn reopen_all(&mut self, survive: &[Survive]) -> std::result::Result<(), String> {
        if self.rng.chance(0.2) {
            self.mode = pick_mode(&mut self.rng);
            for c in &mut self.configs {
                c.wal_sync_mode = self.mode;
            }
            self.log(|| format!("reopening in {:?}", self.mode));
        }
        for (s, &survive) in survive.iter().enumerate() {
            self.open(s)?;
            self.check_recovered(s, survive)?;
        }
        Ok(())
    }

    /// Closes every shard cleanly (then, at random, the power goes), and reopens: a clean close
    /// makes every acknowledged write durable.
    fn close_and_reopen(&mut self) -> std::result::Result<(), String> {
        self.log(|| "CLOSE".to_string());
        let mut clean = Vec::with_capacity(self.live.len());
        for s in 0..self.live.len() {
            let ok = self.close(s)?;
            self.log(|| format!("shard {s} closed {}", if ok { "cleanly" } else { "poisoned" }));
            clean.push(ok);
        }
        // The replies a clean close gave are as good as any.
        self.collect_replies()?;
        for c in &mut self.callers {
            *c = None;
        }
        for m in &mut self.models {
            m.crash();
        }
        self.forget_unplaced();
        self.summary.closes += 1;
        let power = self.rng.chance(0.5);
        self.log(|| format!("then {}", if power { "POWER LOSS" } else { "the process exits" }));
        if power {
            self.disk.power_loss();
        } else {
            self.disk.crash();
        }
        self.summary.faults += self.disk.take_fired().len() as u64;
        let survive: Vec<Survive> = clean
            .iter()
            .map(|&clean| {
                let durable = clean || !power || self.mode == WalSyncMode::Sync;
                if durable {
                    Survive::Acknowledged
                } else {
                    Survive::Synced
                }
            })
            .collect();
        self.reopen_all(&survive)
    }

    /// Shuts shard `s` down; true when it stopped cleanly (not poisoned).
    fn close(&mut self, s: usize) -> std::result::Result<bool, String> {
        let Some(live) = self.live[s].as_mut() else { return Ok(true) };
        let done = Arc::new(Completion::new(1));
        let _ = live.sender.send(Request::Shutdown { done: Responder::new(done.clone()) });
        for _ in 0..10_000 {
            self.disk.complete_some(4);
            self.disk.advance_clock(Duration::from_millis(1));
            let Some(live) = self.live[s].as_mut() else { break };
            live.io.reap(&mut live.done).map_err(|e| e.to_string())?;
            for d in live.done.drain(..) {
                live.shard.on_completion(d);
            }
            let stopped = live.shard.turn(&mut live.io, &live.inbox) == Turn::Stop;
            self.note_placed(s);
            if stopped {
                self.live[s] = None;
                break;
            }
        }
        if self.live[s].is_some() {
            return Err(format!("shard {s} did not stop after a shutdown"));
        }
        Ok(matches!(done.try_result(), Some(Ok(()))))
    }

    fn close_all_and_check(&mut self) -> std::result::Result<(), String> {
        self.close_and_reopen()?;
        for s in 0..self.live.len() {
            self.close(s)?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Callers and turns.

    fn callers_act(&mut self) {
        for c in 0..self.callers.len() {
            if self.callers[c].is_none() && self.rng.chance(0.6) {
                self.callers[c] = self.send_one();
            }
        }
    }

    fn send_one(&mut self) -> Option<Outstanding> {
        let s = self.rng.below(self.live.len() as u64) as usize;
        let live = self.live[s].as_ref()?;
        let completion = Arc::new(Completion::new(1));
        let done = Responder::new(completion.clone());
        let roll = self.rng.below(100);
        if roll < 8 {
            let sent_before = self.models[s].sent.len();
            live.sender.send(Request::Sync { done }).ok()?;
            let what = Sending::Sync { sent_before };
            return Some(Outstanding { shard: s, completion, what, step: self.step });
        }
        let n = if roll < 25 { self.rng.between(2, 6) } else { 1 };
        let ops: Vec<WriteOp> = (0..n).map(|_| random_op(&mut self.rng)).collect();
        let keys = ops.iter().map(|op| op.key().to_vec()).collect();
        let send = self.next_send;
        self.next_send += 1;
        self.log(|| format!("shard {s}: write #{send} of {} ops", ops.len()));
        let ops = match <[WriteOp; 1]>::try_from(ops) {
            Ok([op]) => OwnedOps::One(op),
            Err(ops) => OwnedOps::Many(ops),
        };
        let what = Sending::Write { send, keys };
        let commit = live.commit.clone();
        // The model learns the order when the commit lock places it.
        let first = ops.as_ops().first_key().map_or(0, |k| k.as_ptr() as usize);
        self.unplaced[s].insert(first, (send, ops.as_ops().to_vec()));
        let path = self.rng.below(100);
        let sender = &live.sender;
        let forward = |req: Request| {
            let _ = sender.send(req);
        };
        if path < 50 && self.mode == WalSyncMode::Sync {
            // A caller that finds the lock free stages its record in the open group (and what
            // is queued) itself, then nudges the shard; no room: it sends it.
            match commit.stage(ops.as_ops(), done, &forward) {
                Ok(()) => sender.nudge(),
                Err(done) => forward(ops.into_request(done)),
            }
        } else if path < 50 {
            // A caller that finds the lock free: applies it (and whatever is queued) itself,
            // straight from its own buffers; the shard gets them when the segment is full.
            match commit.write(ops.as_ops(), &forward) {
                Written::Done(result) => done.complete(result),
                Written::Staged { .. } | Written::Full => forward(ops.into_request(done)),
            }
        } else if path < 80 {
            // A caller that finds the lock taken: the next holder (a caller or the shard)
            // applies or stages it.
            match commit.enqueue(ops, done) {
                Ok(()) => sender.nudge(),
                Err(ops) => {
                    self.log(|| format!("shard {s}: combining queue full for #{send}"));
                    drop(ops); // answered `Closed` by its dropped responder
                }
            }
        } else {
            forward(ops.into_request(done));
        }
        self.note_placed(s);
        Some(Outstanding { shard: s, completion, what, step: self.step })
    }

    /// Moves the writes the commit lock of shard `s` placed into its model, in order.
    fn note_placed(&mut self, s: usize) {
        let Some(commit) = self.live[s].as_ref().map(|l| l.commit.clone()) else { return };
        for first in commit.take_placed() {
            let Some((send, ops)) = self.unplaced[s].remove(&first) else { continue };
            let index = self.models[s].send(ops);
            self.placed.insert(send, index);
        }
    }

    /// After a crash or a close: writes not placed are gone with their callers.
    fn forget_unplaced(&mut self) {
        for u in &mut self.unplaced {
            u.clear();
        }
        self.placed.clear();
    }

    fn run_turns(&mut self) -> std::result::Result<(), String> {
        for s in 0..self.live.len() {
            let Some(live) = self.live[s].as_mut() else { continue };
            live.io.reap(&mut live.done).map_err(|e| e.to_string())?;
            for d in live.done.drain(..) {
                live.shard.on_completion(d);
            }
            let stopped = live.shard.turn(&mut live.io, &live.inbox) == Turn::Stop;
            self.note_placed(s);
            let Some(live) = self.live[s].as_ref() else { continue };
            if stopped {
                return Err(format!("shard {s} stopped without a shutdown"));
            }
            if live.view.is_poisoned() && self.poisoned_at[s].is_none() {
                self.poisoned_at[s] = Some(self.step);
                self.log(|| format!("shard {s} poisoned"));
            }
        }
        Ok(())
    }

    fn collect_replies(&mut self) -> std::result::Result<(), String> {
        let frozen = self.disk.frozen();
        for c in 0..self.callers.len() {
            let Some(out) = &self.callers[c] else { continue };
            let Some(result) = out.completion.try_result() else { continue };
            let Some(out) = self.callers[c].take() else { continue };
            self.reply(out, result, frozen)?;
        }
        Ok(())
    }

    fn reply(
        &mut self,
        out: Outstanding,
        result: Result<()>,
        frozen: bool,
    ) -> std::result::Result<(), String> {
        let s = out.shard;
        if result.is_ok() && self.poisoned_at[s].is_some_and(|p| p < out.step) {
            return Err(format!("shard {s} acknowledged a request sent after it was poisoned"));
        }
        let outcome =
            if frozen && result.is_ok() { Outcome::InDoubt } else { Outcome::of(&result) };
        if let Err(e) = &result {
            self.log(|| format!("shard {s}: {:?} failed ({outcome:?}): {e}", out.what));
        }
        match out.what {
            Sending::Sync { sent_before } => {
                if outcome == Outcome::Acked {
                    self.models[s].synced(sent_before);
                }
            }
            Sending::Write { send, keys } => {
                let Some(&index) = self.placed.get(&send) else {
                    if outcome == Outcome::Acked {
                        return Err(format!("shard {s}: write #{send} acknowledged, never placed"));
                    }
                    return Ok(()); // refused, or answered `Closed` before it was placed
                };
                self.models[s].reply(index, outcome);
                if outcome == Outcome::Acked {
                    self.summary.acked += 1;
                    self.check_reads(s, index, &keys)?;
                }
            }
        }
        Ok(())
    }

    /// A caller reads what it just wrote: its own value or a later write's.
    fn check_reads(
        &self,
        s: usize,
        index: usize,
        keys: &[Vec<u8>],
    ) -> std::result::Result<(), String> {
        let Some(live) = &self.live[s] else { return Ok(()) };
        for key in keys {
            let got = live.view.get(key).map_err(|e| format!("shard {s}: a read failed: {e}"))?;
            let allowed = self.models[s].readable_after(index, key);
            if !allowed.contains(&got) {
                return Err(format!(
                    "shard {s}: after its write was acknowledged, {} read {:?} bytes; allowed: {:?}",
                    String::from_utf8_lossy(key),
                    got.map(|v| v.len()),
                    allowed.iter().map(|v| v.as_ref().map(Vec::len)).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    /// A failed durable write or sync must leave its shard poisoned.
    fn check_faults(&mut self) -> std::result::Result<(), String> {
        for fired in self.disk.take_fired() {
            self.summary.faults += 1;
            self.log(|| format!("fault: {fired:?}"));
            let durable = matches!(
                fired.op,
                FaultOp::Write | FaultOp::Sync | FaultOp::FileSync | FaultOp::DirSync
            );
            if !durable {
                continue;
            }
            // The completion reaches the shard in its next turn: run it, then look.
            self.run_turns()?;
            let path = fired.path.to_string_lossy().into_owned();
            for s in 0..self.live.len() {
                let mine = path.contains(&format!("shard-{s:03}"));
                let poisoned = self.live[s].as_ref().is_none_or(|l| l.view.is_poisoned());
                if mine && !poisoned {
                    return Err(format!("shard {s}: a failed {:?} did not poison it", fired.op));
                }
            }
        }
        Ok(())
    }

    fn summary_line(&self) -> String {
        format!("{:?}", self.summary)
    }
}

fn pick_mode(rng: &mut SimRng) -> WalSyncMode {
    match rng.below(3) {
        0 => WalSyncMode::Sync,
        1 => WalSyncMode::Normal,
        _ => WalSyncMode::Async,
    }
}

fn config(rng: &mut SimRng, dir: &std::path::Path, id: usize, mode: WalSyncMode) -> ShardConfig {
    let interval = rng.between(5, 60);
    ShardConfig {
        cpu: None,
        wal_sync_mode: mode,
        sync_interval_ms: interval,
        flush_interval_ms: interval,
        wal_segment_bytes: 1 << rng.between(15, 17),
        direct_io: rng.chance(0.5),
        register_buffers: false,
        ingress_queue_depth: 64,
        ingress_batch_max: rng.between(1, 8) as usize,
        spin_before_park_us: 0,
        stall_threshold_ms: 10_000,
        limits: Limits { max_key_bytes: 64, max_value_bytes: 4096, max_batch_bytes: 16384 },
        ..ShardConfig::new(id, dir.join(format!("shard-{id:03}")))
    }
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:02}").into_bytes()
}

fn random_op(rng: &mut SimRng) -> WriteOp {
    let key = key(rng.below(KEYS));
    if rng.chance(0.2) {
        return WriteOp::Delete { key };
    }
    let len = if rng.chance(0.1) { rng.between(500, 2500) } else { rng.between(0, 120) } as usize;
    let fill = rng.next_u64() as u8;
    WriteOp::Put { key, value: vec![fill; len].into() }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.options.verbose {
            eprintln!("[seed {}] {}", self.seed, self.summary_line());
        }
    }
}
