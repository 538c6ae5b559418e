//! `runtime-adr`: the measurement behind `docs/adr/0001-shard-runtime.md`.
//!
//! It compares the two candidate owners of a shard thread on the same machine, in one run:
//!
//! * **ours**: a real `lightning_shards` shard (`ShardHandle::start`), i.e. our own event loop
//!   over one `io-uring` ring, with the crossbeam ingress queue, the parked flag and the
//!   eventfd doorbell armed in the ring;
//! * **glommio**: one pinned `LocalExecutor` (`Placement::Fixed`) whose ingress is a flume
//!   channel drained by a task in a `Latency::Matters` task queue, so that a wake from the
//!   foreign caller thread forces the executor's eventfd. Also measured: the same with
//!   `spin_before_park(200 µs)`, with an ingress task that polls like our loop before it
//!   awaits, and that polling task on our crossbeam queue instead of flume. Every executor
//!   runs a timer task that keeps glommio 0.9.0 from parking for good (see `glom.rs` and
//!   `--hang-probe`).
//!
//! Both reply through the same `lightning_shards::internals::Completion` (spin, then park), so
//! only the shard side differs. Measurements, each an hdrhistogram:
//!
//! 1. `rt_awake`: request/reply round trip, back to back (the shard has no time to park);
//! 2. `rt_parked`: the same with the caller sleeping ~2 ms between requests (the shard parked;
//!    this is the wake cost);
//! 3. `pipelined`: bursts of K requests sent without waiting, then one wait for all;
//! 4. `wal_*`: a 4 KiB append made durable at queue depth 1, on a preallocated, zeroed file
//!    (overwrites): through our ring (`O_DIRECT|O_DSYNC`, and `O_DIRECT` write linked to a
//!    `DATASYNC` fsync, and write-then-fsync as two waits) and through glommio's `DmaFile`
//!    (`write_at` + `fdatasync`, and a `DmaFile` opened `O_DSYNC`).
//!
//! Run: `cargo run --release --manifest-path benches/runtime-adr/Cargo.toml -- [--iters N]`;
//! see the README beside `Cargo.toml` for the options and `run3.sh` for the 3-run median.

mod caller;
mod env;
mod glom;
mod ours;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use report::Figure;

/// Boxed error: this is a benchmark binary; every failure ends the run with a message.
pub type Res<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Requests per pipelined burst.
const BURST: u32 = 256;
/// Pause between requests for the parked round trip: well past our 200 µs spin budget.
const PARK_PAUSE: Duration = Duration::from_millis(2);
/// Our shard's spin budget before parking (the `lightning_db` default).
const OUR_SPIN_US: u64 = 200;
/// Interleaved rounds per measurement.
const ROUNDS: u64 = 4;

/// Command-line options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Round trips for `rt_awake`; the other measurements are scaled from it.
    pub iters: u64,
    /// Longest time one measurement may run.
    pub max_secs: f64,
    /// Directory for the shard and the WAL file (must be a real disk, never tmpfs).
    pub dir: PathBuf,
    /// Where to write the figures as TSV.
    pub out: Option<PathBuf>,
    /// CPU of the shard thread / executor.
    pub shard_cpu: usize,
    /// CPU the caller thread is pinned to (`None`: unpinned).
    pub caller_cpu: Option<usize>,
    /// Only run measurements whose name starts with one of these.
    pub only: Vec<String>,
    /// Run the glommio hang probe instead of the measurements.
    pub hang_probe: bool,
    /// Period of the glommio executors' rescue timer.
    pub rescue: Duration,
}

impl Options {
    fn parked_iters(&self) -> u64 {
        (self.iters / 100).max(100)
    }
    fn bursts(&self) -> u64 {
        (self.iters / 25).max(100)
    }
    fn wal_iters(&self) -> u64 {
        (self.iters / 20).max(100)
    }
    fn max(&self) -> Duration {
        Duration::from_secs_f64(self.max_secs)
    }
    fn wants(&self, measurement: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| measurement.starts_with(p.as_str()))
    }
}

const USAGE: &str = "\
usage: runtime-adr [--iters N] [--max-secs S] [--dir PATH] [--out FILE.tsv]
                   [--shard-cpu C] [--caller-cpu C|none] [--only NAME[,NAME..]]
                   [--rescue-ms MS] [--hang-probe]
       runtime-adr --aggregate RUN1.tsv RUN2.tsv RUN3.tsv...

  --iters N        round trips of rt_awake (default 100000); rt_parked runs N/100,
                   pipelined N/25 bursts of 256, each wal_* variant N/20 appends
  --max-secs S     cap on one measurement (default 3)
  --dir PATH       where the shard and the WAL file live (default: the temp dir);
                   tmpfs/ramfs are refused (glommio silently drops O_DIRECT there)
  --out FILE       also write the figures as TSV (input of --aggregate)
  --shard-cpu C    CPU of the shard / executor (default: the last allowed CPU)
  --caller-cpu C   CPU of the caller thread, or `none` (default: the first allowed CPU)
  --only LIST      run only measurements starting with these names
                   (rt_awake, rt_parked, pipelined, wal)
  --rescue-ms MS   period of the timer that keeps the glommio executors from parking for
                   good (glommio 0.9.0 bug, see --hang-probe); default 10
  --hang-probe     instead of measuring: back-to-back round trips against glommio
                   executors without the rescue timer, reporting whether (and after how
                   many round trips) each one stopped answering for good
  --aggregate      print the median (min-max) of several runs as a markdown table
";

fn parse_args() -> Res<Option<Options>> {
    let cpus = lightning_shards::internals::allowed_cpus();
    let first = cpus.first().copied().unwrap_or(0);
    let last = cpus.last().copied().unwrap_or(0);
    let mut o = Options {
        iters: 100_000,
        max_secs: 3.0,
        dir: std::env::temp_dir(),
        out: None,
        shard_cpu: last,
        caller_cpu: (first != last).then_some(first),
        only: Vec::new(),
        hang_probe: false,
        rescue: glom::RESCUE_TICK,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--iters" => o.iters = value()?.parse()?,
            "--max-secs" => o.max_secs = value()?.parse()?,
            "--dir" => o.dir = PathBuf::from(value()?),
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--shard-cpu" => o.shard_cpu = value()?.parse()?,
            "--caller-cpu" => {
                let v = value()?;
                o.caller_cpu = if v == "none" { None } else { Some(v.parse()?) };
            }
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "--hang-probe" => o.hang_probe = true,
            "--rescue-ms" => o.rescue = Duration::from_millis(value()?.parse()?),
            "--aggregate" => {
                let files: Vec<PathBuf> = args.by_ref().map(PathBuf::from).collect();
                print!("{}", report::aggregate(&files)?);
                return Ok(None);
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if o.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    Ok(Some(o))
}

fn main() {
    // Before any other thread exists: register for private expedited membarrier, which
    // glommio's executor uses before every park. Registering once threads exist costs an RCU
    // grace period (observed 30-80 ms). This is what `glommio::early_init()` does on glommio's
    // master branch; the 0.9.0 release on crates.io has no such function.
    let early = env::register_membarrier_early();
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("runtime-adr: {e}");
            std::process::exit(2);
        }
    };
    if opts.hang_probe {
        // A hung executor cannot be joined: exit the process, which ends it.
        let code = match hang_probe(&opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("runtime-adr: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    if let Err(e) = run(&opts, early) {
        eprintln!("runtime-adr: {e}");
        std::process::exit(1);
    }
}

fn hang_probe(opts: &Options) -> Res<()> {
    if let Some(cpu) = opts.caller_cpu {
        lightning_shards::internals::pin_current_thread(cpu)?;
    }
    let limit = Duration::from_secs_f64(opts.max_secs.max(1.0) * 5.0);
    let stall = Duration::from_secs(2);
    let spin = Duration::from_micros(OUR_SPIN_US);
    let modes = [
        ("glommio", glom::Mode::Wake { spin: None }),
        ("glommio+spin200us", glom::Mode::Wake { spin: Some(spin) }),
        ("glommio+polltask200us", glom::Mode::Poll { budget: spin }),
    ];
    println!(
        "glommio 0.9.0 hang probe: back-to-back round trips for up to {:.0} s each, no rescue \
         timer; 'hung' = no reply for {} s",
        limit.as_secs_f64(),
        stall.as_secs()
    );
    for (name, mode) in modes {
        let (trips, hung) = glom::hang_probe(opts.shard_cpu, mode, limit, stall)?;
        if hung {
            println!("{name:<24} HUNG after {trips} round trips");
        } else {
            println!("{name:<24} ok: {trips} round trips");
        }
    }
    Ok(())
}

/// One candidate's part of a measurement: called once per round with the round's share of
/// the iterations and of the time cap.
type Step<'a> = Box<dyn FnMut(u64, Duration) -> Res<report::Sample> + 'a>;

/// Runs `steps` (candidates of the same measurement) in [`ROUNDS`] interleaved rounds,
/// rotating which goes first, so drift on this shared machine (another process waking up, the
/// disk's cache) spreads over all of them; merges each one's rounds.
fn interleave(
    measurement: &str,
    mut steps: Vec<(String, Step<'_>)>,
    iters: u64,
    max: Duration,
) -> Res<Vec<Figure>> {
    let mut merged = Vec::new();
    for _ in &steps {
        merged.push(report::Sample::new()?);
    }
    let per_round = iters.div_ceil(ROUNDS);
    let n = steps.len();
    for round in 0..ROUNDS as usize {
        for k in 0..n {
            let j = (k + round) % n;
            let sample = (steps[j].1)(per_round, max / ROUNDS as u32)?;
            merged[j].merge(&sample)?;
        }
    }
    Ok(steps.iter().zip(&merged).map(|((c, _), s)| s.figure(measurement, c)).collect())
}

fn run(opts: &Options, early: env::EarlyInit) -> Res<()> {
    let work = env::WorkDir::create(&opts.dir)?;
    let machine = env::Machine::probe(&opts.dir, early)?;
    let header = format!(
        "{machine}\nparams      shard cpu {}, caller cpu {}, iters {}, max {:.1} s per \
         measurement, {ROUNDS} interleaved rounds, glommio rescue tick {} ms\ncommand     {}",
        opts.shard_cpu,
        opts.caller_cpu.map_or("unpinned".to_string(), |c| c.to_string()),
        opts.iters,
        opts.max_secs,
        opts.rescue.as_millis(),
        std::env::args().collect::<Vec<_>>().join(" "),
    );
    println!("{header}\n");
    if let Some(cpu) = opts.caller_cpu {
        lightning_shards::internals::pin_current_thread(cpu)
            .map_err(|e| format!("pin the caller to CPU {cpu}: {e}"))?;
    }

    let mut figures: Vec<Figure> = Vec::new();
    let mut emit = |fs: Vec<Figure>| {
        for f in fs {
            println!("{f}");
            figures.push(f);
        }
    };

    if opts.wants("rt_awake") || opts.wants("rt_parked") || opts.wants("pipelined") {
        // One shard / executor per candidate, all on the shard CPU, started once and kept for
        // the three ingress measurements, as a database keeps its shards. Only the one being
        // measured is awake; the others are parked in their rings.
        let shard = ours::OurShard::start(&work.path().join("shard"), opts.shard_cpu, OUR_SPIN_US)?;
        let spin = Duration::from_micros(OUR_SPIN_US);
        let cpu = opts.shard_cpu;
        let rescue = Some(opts.rescue);
        let start = |mode, chan| glom::GlommioShard::start(cpu, mode, chan, rescue);
        let glom = start(glom::Mode::Wake { spin: None }, glom::Chan::Flume)?;
        let glom_spin = start(glom::Mode::Wake { spin: Some(spin) }, glom::Chan::Flume)?;
        let glom_poll = start(glom::Mode::Poll { budget: spin }, glom::Chan::Flume)?;
        let glom_poll_x = start(glom::Mode::Poll { budget: spin }, glom::Chan::Xbeam)?;
        emit(vec![
            shard.startup_figure(),
            glom.startup_figure(),
            glom_spin.startup_figure(),
            glom_poll.startup_figure(),
            glom_poll_x.startup_figure(),
        ]);
        let targets: [&dyn caller::Target; 5] =
            [&shard, &glom, &glom_spin, &glom_poll, &glom_poll_x];
        let steps = |f: fn(&dyn caller::Target, u64, Duration) -> Res<report::Sample>| {
            targets
                .iter()
                .map(|&t| {
                    let step: Step<'_> = Box::new(move |n, max| f(t, n, max));
                    (t.candidate().to_string(), step)
                })
                .collect::<Vec<_>>()
        };
        if opts.wants("rt_awake") {
            let f = |t: &dyn caller::Target, n, max| caller::round_trip(t, n, None, max);
            emit(interleave("rt_awake", steps(f), opts.iters, opts.max())?);
        }
        if opts.wants("rt_parked") {
            // The spinning/polling variants park too after 200 µs, like ours.
            let f =
                |t: &dyn caller::Target, n, max| caller::round_trip(t, n, Some(PARK_PAUSE), max);
            emit(interleave("rt_parked", steps(f), opts.parked_iters(), opts.max())?);
        }
        if opts.wants("pipelined") {
            let f = |t: &dyn caller::Target, n, max| caller::pipelined(t, n, BURST, max);
            emit(interleave("pipelined", steps(f), opts.bursts(), opts.max())?);
        }
        shard.shutdown()?;
        glom.shutdown()?;
        glom_spin.shutdown()?;
        glom_poll.shutdown()?;
        glom_poll_x.shutdown()?;
    }

    if opts.wants("wal") {
        let file = work.path().join("wal-4k.dat");
        env::prepare_wal_file(&file, ours::WAL_FILE_BYTES)?;
        let cpu = opts.shard_cpu;
        // Warm the device and the file's extents up; not recorded.
        ours::wal(&file, ours::WalVariant::Dsync, cpu, 200, opts.max())?;
        let file = &file;
        let mut dsync: Vec<(String, Step<'_>)> = Vec::new();
        let mut fsync: Vec<(String, Step<'_>)> = Vec::new();
        for v in ours::WalVariant::ALL {
            let (m, c) = v.name();
            let step: Step<'_> = Box::new(move |n, max| ours::wal(file, v, cpu, n, max));
            if m == "wal_4k_dsync" {
                dsync.push((c.into(), step))
            } else {
                fsync.push((c.into(), step))
            }
        }
        for v in glom::WalVariant::ALL {
            let (m, c) = v.name();
            let step: Step<'_> = Box::new(move |n, max| glom::wal(file, v, cpu, n, max));
            if m == "wal_4k_dsync" {
                dsync.push((c.into(), step))
            } else {
                fsync.push((c.into(), step))
            }
        }
        emit(interleave("wal_4k_dsync", dsync, opts.wal_iters(), opts.max())?);
        emit(interleave("wal_4k_write+fdatasync", fsync, opts.wal_iters(), opts.max())?);
    }

    if let Some(out) = &opts.out {
        report::write_tsv(out, &header, &figures)?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}
