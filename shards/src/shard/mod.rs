//! Starting, reaching and stopping one shard.
//!
//! [`ShardHandle`] is the caller-side handle (shared by every caller thread): the ingress
//! sender, the published view, the CPU the shard is pinned to. [`ShardHandle::spawn`] starts
//! the shard thread, which pins itself, creates its storage (the ring), replays its WAL and
//! reports back before it enters its loop, so every start-up failure reaches `Database::open`
//! as an error. On the thread, the storage is created first and dropped last: after the shard
//! (whose acknowledgements then answer `Closed`), and after a panic too, and its drop waits for
//! every operation in flight (`docs/SAFETY.md`).

mod acks;
mod core;

pub(crate) use self::core::Shard;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;

use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{ingress, Completion, Inbox, IngressSender, Request, Responder, WaitPolicy};
use crate::io::sys;
use crate::io::uring::{Registration, RingSetup, UringStorage};
use crate::io::Storage;
use crate::memtable::Memtable;
use crate::runtime::event_loop::{self, LoopConfig};
use crate::version::Lsn;
use crate::view::ShardView;
use crate::wal::direct::{GROUP_BUFFER_BYTES, REGISTERED_BUFFERS};
use crate::wal::reader::{self, RecoveryReport};
use crate::wal::record::Record;
use crate::wal::{open_writer, WalError, WalOptions};

/// What a shard found while starting, for the environment report.
#[derive(Clone, Debug)]
pub struct StartReport {
    /// The CPU the shard thread is pinned to, if pinning succeeded.
    pub pinned_cpu: Option<usize>,
    /// Ring setup flags the kernel accepted (`None` on a simulated disk).
    pub ring: Option<RingSetup>,
    /// WAL records replayed.
    pub replayed_records: u64,
    /// Whether the WAL buffers are registered with the ring.
    pub registered_buffers: bool,
    /// What recovery cut, set aside or removed.
    pub recovery: RecoveryReport,
}

/// Caller-side handle to a running shard.
pub struct ShardHandle {
    view: Arc<ShardView>,
    sender: IngressSender,
    report: StartReport,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ShardHandle {
    /// Spawns the shard thread on the real disk and waits until it is ready.
    pub fn start(config: ShardConfig) -> Result<ShardHandle> {
        Self::spawn(config)?.ready()
    }

    /// Spawns the shard thread on the real disk; [`StartingShard::ready`] waits for its
    /// start-up to finish. Spawning every shard before waiting lets them replay in parallel.
    pub fn spawn(config: ShardConfig) -> Result<StartingShard> {
        let registration = registration(&config);
        Self::spawn_with(config, move || UringStorage::new(registration))
    }

    /// Spawns the shard thread on the storage `make` creates (on the shard thread).
    pub fn spawn_with<S, F>(config: ShardConfig, make: F) -> Result<StartingShard>
    where
        S: Storage + 'static,
        F: FnOnce() -> Result<S> + Send + 'static,
    {
        let (sender, inbox) = ingress(config.ingress_queue_depth)
            .map_err(|e| Error::io("create shard doorbell (eventfd)", &config.dir, e))?;
        let (ready_tx, ready) = bounded::<Result<(Arc<ShardView>, StartReport)>>(1);
        let name = format!("ldb-shard-{}", config.shard_id);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || shard_thread(config, inbox, make, ready_tx))
            .map_err(|e| Error::io("spawn shard thread", "", e))?;
        Ok(StartingShard { sender, ready, thread })
    }

    /// The shard's published state (memtable, visible timestamp, poisoned flag).
    pub fn view(&self) -> &Arc<ShardView> {
        &self.view
    }

    /// What the shard found while starting.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// Queues a request (ringing the doorbell if the shard is parked).
    pub fn send(&self, req: Request) -> Result<()> {
        self.sender.send(req)
    }

    /// How many times callers woke this shard with its eventfd doorbell.
    pub fn doorbell_rings(&self) -> u64 {
        self.sender.doorbell_rings()
    }

    /// Requests queued right now.
    pub fn queued(&self) -> usize {
        self.sender.queued()
    }

    /// How a caller should wait for this shard's replies.
    pub fn wait_policy(&self) -> WaitPolicy {
        WaitPolicy { shard_cpu: self.report.pinned_cpu, ..WaitPolicy::DEFAULT }
    }

    /// Asks the shard to make everything durable and stop, and joins its thread. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        let mut guard = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        let Some(thread) = guard.take() else { return Ok(()) };
        let done = Arc::new(Completion::new(1));
        let sent = self.send(Request::Shutdown { done: Responder::new(done.clone()) });
        let result = match sent {
            Ok(()) => done.wait(&WaitPolicy { spin: Duration::ZERO, ..WaitPolicy::DEFAULT }),
            Err(e) => Err(e),
        };
        let _ = thread.join();
        result
    }
}

/// A shard thread that is still starting (pinning, creating its ring, replaying its WAL).
pub struct StartingShard {
    sender: IngressSender,
    ready: crossbeam_channel::Receiver<Result<(Arc<ShardView>, StartReport)>>,
    thread: JoinHandle<()>,
}

impl StartingShard {
    /// Waits until the shard is running, or returns why it could not start.
    pub fn ready(self) -> Result<ShardHandle> {
        let started = self.ready.recv().map_err(|_| Error::Closed).and_then(|r| r);
        match started {
            Ok((view, report)) => Ok(ShardHandle {
                view,
                sender: self.sender,
                report,
                thread: Mutex::new(Some(self.thread)),
            }),
            Err(e) => {
                let _ = self.thread.join();
                Err(e)
            }
        }
    }
}

/// The buffers a shard's ring registers: the `Sync` writer's group buffers, if asked for.
fn registration(config: &ShardConfig) -> Registration {
    if config.wal_sync_mode == WalSyncMode::Sync && config.register_buffers {
        Registration { buffers: REGISTERED_BUFFERS, buffer_bytes: GROUP_BUFFER_BYTES }
    } else {
        Registration::default()
    }
}

type Ready = crossbeam_channel::Sender<Result<(Arc<ShardView>, StartReport)>>;

/// The shard thread: storage, start-up, loop; then the shard is dropped before the storage.
fn shard_thread<S, F>(config: ShardConfig, inbox: Inbox, make: F, ready: Ready)
where
    S: Storage + 'static,
    F: FnOnce() -> Result<S>,
{
    let pinned_cpu = pin(&config);
    let mut io = match make() {
        Ok(io) => io,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (mut shard, view, report) = match open(&mut io, &config, pinned_cpu) {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok((view.clone(), report)));
    let cfg = LoopConfig { spin_before_park: Duration::from_micros(config.spin_before_park_us) };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        event_loop::run(&mut io, &inbox, &mut shard, cfg);
    }));
    if ran.is_err() {
        // A bug, never an expected path. Refuse writes from now on.
        view.poison();
        log::error!("shard {} stopped after a panic; writes are refused", config.shard_id);
    }
    // Its waiting acknowledgements answer `Closed`; nothing it owns is in flight.
    drop(shard);
    // Waits for every operation in flight before anything they point to is freed.
    drop(io);
}

fn pin(config: &ShardConfig) -> Option<usize> {
    config.cpu.and_then(|cpu| match sys::pin_current_thread(cpu) {
        Ok(()) => Some(cpu),
        Err(e) => {
            log::warn!(
                "shard {}: could not pin to CPU {cpu}: {e}; running unpinned",
                config.shard_id
            );
            None
        }
    })
}

/// Shard start-up on its storage: replay, the WAL writer and its first segment.
pub(crate) fn open<S: Storage + 'static>(
    io: &mut S,
    config: &ShardConfig,
    pinned_cpu: Option<usize>,
) -> Result<(Shard<S>, Arc<ShardView>, StartReport)> {
    io.create_dir_all(&config.dir)
        .map_err(|e| Error::io("create shard directory", &config.dir, e))?;
    if config.wal_sync_mode == WalSyncMode::Sync && config.direct_io {
        io.probe_direct_io(&config.dir)?;
    }
    let memtable = Arc::new(Memtable::new());
    let replayed = reader::replay(io, &config.dir, config.shard_id as u32, Lsn::FIRST, |rec| {
        let Record::Write(w) = rec;
        for op in w.ops {
            let value = op.value().map(std::sync::Arc::<[u8]>::from);
            memtable.insert(op.key(), w.ts, value);
        }
    })?;
    let view = Arc::new(ShardView::new(config.shard_id, memtable.clone(), replayed.last_ts));
    let mut wal = open_writer(wal_options(config), &replayed, io.now());
    if let Err(e) = wal.prepare(io) {
        return Err(first_segment_error(io, config, e));
    }
    let report = StartReport {
        pinned_cpu,
        ring: io.ring_setup(),
        replayed_records: replayed.report.records_applied,
        registered_buffers: registration(config).buffers > 0 && io.ring_setup().is_some(),
        recovery: replayed.report.clone(),
    };
    let shard =
        Shard::new(config.clone(), view.clone(), memtable, wal, replayed.last_ts, &replayed.report);
    Ok((shard, view, report))
}

/// A full disk at open gets a clear error: less room than one segment.
fn first_segment_error<S: Storage>(io: &mut S, config: &ShardConfig, e: WalError) -> Error {
    let e = e.into_error();
    if !e.is_disk_full() {
        return e;
    }
    let free = io.free_bytes(&config.dir).map_or("unknown".to_string(), |b| b.to_string());
    Error::EnvUnsupported {
        what: format!(
            "{}: no room for a WAL segment: the filesystem has {free} bytes free and a segment \
             takes wal_segment_bytes = {}; free space or lower wal_segment_bytes ({e})",
            config.dir.display(),
            config.wal_segment_bytes
        ),
    }
}

fn wal_options(config: &ShardConfig) -> WalOptions {
    let interval_ms = match config.wal_sync_mode {
        WalSyncMode::Async => config.flush_interval_ms,
        _ => config.sync_interval_ms,
    };
    WalOptions {
        shard_id: config.shard_id as u32,
        dir: config.dir.clone(),
        mode: config.wal_sync_mode,
        segment_bytes: config.wal_segment_bytes,
        direct_io: config.direct_io,
        sync_interval: Duration::from_millis(interval_ms),
    }
}
