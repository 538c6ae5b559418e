//! Starting, reaching and stopping one shard.
//!
//! [`ShardHandle`] is the caller-side handle (shared by every caller thread): the ingress
//! sender, the published view, the CPU the shard is pinned to. [`ShardHandle::start`] spawns
//! the shard thread, which pins itself, creates its ring, replays its WAL and reports back
//! before it enters its loop, so every start-up failure reaches `Database::open` as an error.

mod core;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::bounded;

use self::core::{Shard, Wal};
use crate::config::{ShardConfig, WalSyncMode};
use crate::error::{Error, Result};
use crate::ingress::{ingress, Completion, Inbox, IngressSender, Request, Responder, WaitPolicy};
use crate::io::sys;
use crate::memtable::{Memtable, SEQ_MIN};
use crate::runtime::event_loop::{self, LoopConfig};
use crate::runtime::ring::{Ring, RingSetup};
use crate::view::ShardView;
use crate::wal::reader::{self, Replayed};
use crate::wal::{DirectWal, MappedWal, WalOptions};

/// What a shard found while starting, for the environment report.
#[derive(Clone, Debug)]
pub struct StartReport {
    /// The CPU the shard thread is pinned to, if pinning succeeded.
    pub pinned_cpu: Option<usize>,
    /// Ring setup flags the kernel accepted.
    pub ring: RingSetup,
    /// WAL records replayed.
    pub replayed_records: u64,
    /// Whether the WAL buffers are registered with the ring.
    pub registered_buffers: bool,
}

/// Caller-side handle to a running shard.
pub struct ShardHandle {
    view: Arc<ShardView>,
    sender: IngressSender,
    report: StartReport,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ShardHandle {
    /// Spawns the shard thread and waits until it has replayed its WAL and is ready.
    pub fn start(config: ShardConfig) -> Result<ShardHandle> {
        Self::spawn(config)?.ready()
    }

    /// Spawns the shard thread; [`StartingShard::ready`] waits for its start-up to finish.
    /// Spawning every shard before waiting lets them replay their WALs in parallel.
    pub fn spawn(config: ShardConfig) -> Result<StartingShard> {
        let (sender, inbox) = ingress(config.ingress_queue_depth)
            .map_err(|e| Error::io("create shard doorbell (eventfd)", &config.dir, e))?;
        let (ready_tx, ready) = bounded::<Result<(Arc<ShardView>, StartReport)>>(1);
        let name = format!("ldb-shard-{}", config.shard_id);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || match prepare(&config) {
                Ok((mut ring, shard_view, report, shard)) => {
                    let _ = ready_tx.send(Ok((shard_view.clone(), report)));
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_shard(&mut ring, &inbox, shard, &config);
                    }));
                    if ran.is_err() {
                        // A bug, never an expected path. Unwinding dropped the shard, so every
                        // request it held was answered `Closed`; refuse writes from now on.
                        shard_view.poison();
                        log::error!(
                            "shard {} stopped after a panic; writes are refused",
                            config.shard_id
                        );
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::io("spawn shard thread", "", e))?;
        Ok(StartingShard { sender, ready, thread })
    }

    /// The shard's published state (memtable, visible sequence, poisoned flag).
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

type Prepared = (Ring, Arc<ShardView>, StartReport, Shard);

/// Shard-thread start-up: pin, ring, replay, WAL writer.
fn prepare(config: &ShardConfig) -> Result<Prepared> {
    let pinned_cpu = config.cpu.and_then(|cpu| match sys::pin_current_thread(cpu) {
        Ok(()) => Some(cpu),
        Err(e) => {
            log::warn!(
                "shard {}: could not pin to CPU {cpu}: {e}; running unpinned",
                config.shard_id
            );
            None
        }
    });
    let mut ring = Ring::new()?;
    let memtable = Arc::new(Memtable::new());
    let replayed = replay(config, &memtable)?;
    // Replayed records count as durable from here on (sync() and Sync-mode groups rely on
    // it), but after a process crash they may sit only in the page cache: sync them now.
    if let Some(path) = &replayed.last_segment {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open WAL segment", path, e))?;
        sys::fdatasync(&file).map_err(|e| Error::io("fdatasync replayed WAL segment", path, e))?;
    }
    let view = Arc::new(ShardView::new(config.shard_id, memtable.clone(), replayed.next_lsn - 1));
    if config.wal_sync_mode == WalSyncMode::Sync && config.direct_io {
        crate::wal::segment::probe_direct_io(&config.dir)?;
    }
    let opts = wal_options(config);
    let (wal, registered_buffers) = match config.wal_sync_mode {
        WalSyncMode::Sync => {
            let pool = DirectWal::allocate_pool().ok_or_else(|| Error::EnvUnsupported {
                what: "cannot allocate WAL buffers".into(),
            })?;
            let registered = config.register_buffers;
            if registered {
                ring.register_buffers(&pool.iter().collect::<Vec<_>>())?;
            }
            (
                Wal::Direct(DirectWal::new(
                    opts,
                    replayed.tail,
                    replayed.next_lsn,
                    pool,
                    registered,
                )),
                registered,
            )
        }
        WalSyncMode::Normal | WalSyncMode::Async => {
            (Wal::Mapped(MappedWal::new(opts, replayed.tail, replayed.next_lsn)), false)
        }
    };
    let report = StartReport {
        pinned_cpu,
        ring: ring.setup,
        replayed_records: replayed.records,
        registered_buffers,
    };
    let shard = Shard::new(config.clone(), view.clone(), memtable, wal);
    Ok((ring, view, report, shard))
}

fn replay(config: &ShardConfig, memtable: &Memtable) -> Result<Replayed> {
    std::fs::create_dir_all(&config.dir)
        .map_err(|e| Error::io("create shard directory", &config.dir, e))?;
    reader::replay(&config.dir, config.shard_id as u32, SEQ_MIN, |lsn, ops| {
        for op in ops {
            match op {
                crate::ingress::WriteOp::Put { key, value } => {
                    memtable.insert(&key, lsn, Some(value));
                }
                crate::ingress::WriteOp::Delete { key } => {
                    memtable.insert(&key, lsn, None);
                }
            }
        }
    })
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
        register_buffers: config.register_buffers,
        sync_interval: Duration::from_millis(interval_ms),
        faults: config.faults.clone(),
    }
}

fn run_shard(ring: &mut Ring, inbox: &Inbox, mut shard: Shard, config: &ShardConfig) {
    let cfg = LoopConfig { spin_before_park: Duration::from_micros(config.spin_before_park_us) };
    event_loop::run(ring, inbox, &mut shard, cfg);
}
