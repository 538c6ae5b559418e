//! Command line: which engines, workloads and knobs, expanded into the cases to run (the
//! matrix: every engine × workload × threads × shards × mode given), then run and reported.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::engine::{err, BenchError, Mode, Result};
use crate::model::{CaseReport, RunReport};
use crate::runner::{run_case, CaseParams};
use crate::workload::{spec, Distribution, WORKLOADS};

/// Benchmark harness of Lightning DB: db_bench and YCSB workloads against lightning_db and its
/// peers, closed or open loop, with full latency distributions.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// Engines, comma separated: lightning, fjall, redb, sled, lmdb, rocksdb (peers need their
    /// cargo feature, e.g. `--features peers`).
    #[arg(long, value_delimiter = ',', default_value = "lightning")]
    pub engines: Vec<String>,
    /// Workloads, comma separated (see --list).
    #[arg(long, value_delimiter = ',', default_value = "fillseq,readrandom,ycsb_a")]
    pub workloads: Vec<String>,
    /// Keys in the data set (for `transfer`: accounts, each an 8-byte balance; fewer accounts,
    /// more conflicts).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Key size, bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    pub key_bytes: usize,
    /// Value size, bytes.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Key distribution: uniform, zipfian[:θ], latest[:θ], sequential (default: per workload).
    #[arg(long)]
    pub distribution: Option<String>,
    /// Caller threads; several values run each (matrix).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Shards for lightning (0 = one per CPU); several values run each (matrix).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub shards: Vec<usize>,
    /// Lightning: leave its shard threads unpinned (default: each pinned to its own CPU).
    #[arg(long)]
    pub unpinned: bool,
    /// Lightning: how long an idle shard thread polls before it parks, µs (default: its own).
    #[arg(long)]
    pub spin_us: Option<u64>,
    /// Durability modes: sync, normal, async; several values run each (matrix).
    #[arg(long, value_delimiter = ',', default_value = "normal")]
    pub modes: Vec<String>,
    /// Engine cache, MiB.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    /// Turn on compression where the engine has it.
    #[arg(long)]
    pub compression: bool,
    /// Operations in each measured phase (default: --keys; for fillbatch, batches, by default
    /// enough to write --keys keys once).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Measure each case for this many seconds instead of a number of operations.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Operations per measured phase in sync mode (durable writes are slow), at most.
    #[arg(long, default_value_t = 20_000)]
    pub sync_ops: u64,
    /// Cap on each measured phase, seconds (a capped case says so).
    #[arg(long, default_value_t = 120.0)]
    pub max_secs: f64,
    /// After the preload, read every key once in order, untimed, so the measured phase starts
    /// with whatever the engine caches warm (its own cache, the page cache).
    #[arg(long)]
    pub warm: bool,
    /// Print a Markdown summary of recorded runs (report.json files) and exit.
    #[arg(long, value_delimiter = ',')]
    pub markdown: Vec<PathBuf>,
    /// Open loop: target operations per second (all threads together).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Puts per batch in fillbatch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Entries per scan.
    #[arg(long, default_value_t = 100)]
    pub scan_len: usize,
    /// Where databases are created (must not be tmpfs for durable figures).
    #[arg(long, default_value = "target/bench-data")]
    pub data_dir: PathBuf,
    /// Where reports are written.
    #[arg(long, default_value = "target/bench-report")]
    pub out_dir: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// List workloads and engines, then exit.
    #[arg(long)]
    pub list: bool,
    /// Render earlier runs (report.json files) into one comparison page, without running.
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<PathBuf>,
}

/// The cases `args` asks for, in run order.
pub fn cases(args: &Args) -> Result<Vec<CaseParams>> {
    let mut out = Vec::new();
    for w in &args.workloads {
        let workload = spec(w).ok_or_else(|| {
            BenchError(format!("unknown workload `{w}` (known: {})", WORKLOADS.join(", ")))
        })?;
        let dist_name = args.distribution.as_deref().unwrap_or(workload.default_distribution);
        let distribution = if workload.ordered {
            Distribution::Sequential
        } else {
            Distribution::parse(dist_name)
                .ok_or_else(|| BenchError(format!("unknown distribution `{dist_name}`")))?
        };
        let (keys, value_bytes) = match w.as_str() {
            "large" => (args.keys.min(4096), 64 * 1024),
            "large_1m" => (args.keys.min(512), 1 << 20),
            // Each account's value is its balance, a u64.
            "transfer" => (args.keys, 8),
            _ => (args.keys, args.value_bytes),
        };
        for engine in &args.engines {
            for m in &args.modes {
                let mode = Mode::parse(m).ok_or_else(|| {
                    BenchError(format!("unknown mode `{m}` (sync, normal, async)"))
                })?;
                if workload.read_only() && m != &args.modes[0] {
                    continue; // reads do not depend on the durability mode: run them once
                }
                for &threads in &args.threads {
                    for &shards in &args.shards {
                        if shards != 0 && engine != "lightning" && args.shards.contains(&0) {
                            continue; // shard counts only vary lightning
                        }
                        out.push(CaseParams {
                            engine: engine.clone(),
                            workload: workload.clone(),
                            keys,
                            key_bytes: args.key_bytes.max(8),
                            value_bytes,
                            distribution: distribution.clone(),
                            threads: threads.max(1),
                            shards,
                            pin_shards: !args.unpinned,
                            spin_us: args.spin_us,
                            mode,
                            cache_bytes: args.cache_mb << 20,
                            compression: args.compression,
                            ops: phase_ops(args, w, keys, mode),
                            duration: args.duration_secs.map(Duration::from_secs_f64),
                            max_time: Some(Duration::from_secs_f64(args.max_secs.max(0.1))),
                            rate: args.rate,
                            seed: args.seed,
                            batch_size: args.batch_size.max(1),
                            scan_len: args.scan_len.max(1),
                            warm: args.warm,
                            data_dir: args.data_dir.clone(),
                            progress: !args.quiet,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Operations of one measured phase: `--ops` (default `--keys`; for `fillbatch` the batches
/// that write `--keys` keys once), at most `--sync-ops` in sync mode, at most the key count for
/// the large-value fills.
fn phase_ops(args: &Args, workload: &str, keys: u64, mode: Mode) -> Option<u64> {
    let default = if workload == "fillbatch" {
        keys.div_ceil(args.batch_size.max(1) as u64).max(1)
    } else {
        keys
    };
    let mut ops = args.ops.unwrap_or(default);
    if matches!(workload, "large" | "large_1m") {
        ops = ops.min(keys);
    }
    if mode == Mode::Sync {
        ops = ops.min(args.sync_ops);
    }
    Some(ops)
}

/// Runs everything `args` asks for and writes the reports; returns the run.
pub fn run(args: &Args, command: Vec<String>) -> Result<RunReport> {
    let cases = cases(args)?;
    std::fs::create_dir_all(&args.data_dir).map_err(err)?;
    let mut report = RunReport {
        tool: format!("lightning-bench {}", env!("CARGO_PKG_VERSION")),
        command,
        started_utc: crate::report::utc_now(),
        finished_utc: String::new(),
        machine: crate::machine::describe(&args.data_dir),
        cases: Vec::new(),
    };
    for (i, case) in cases.iter().enumerate() {
        eprintln!(
            "[{}/{}] {} {} threads={} shards={} mode={}",
            i + 1,
            cases.len(),
            case.engine,
            case.workload.name,
            case.threads,
            case.shards,
            case.mode.name()
        );
        let result: CaseReport = match run_case(case) {
            Ok(r) if r.ops_by_type.is_empty() && !r.notes.is_empty() => {
                // A case that measured nothing (an engine without transactions for
                // `transfer`) says why on the console too, not only in the reports.
                eprintln!("  {}", r.notes.join("; "));
                r
            }
            Ok(r) => r,
            Err(e) => {
                eprintln!("  failed: {e}");
                failed(case, &e)
            }
        };
        report.cases.push(result);
    }
    report.machine.load_end = crate::machine::load();
    report.finished_utc = crate::report::utc_now();
    Ok(report)
}

fn failed(case: &CaseParams, e: &BenchError) -> CaseReport {
    CaseReport {
        engine: case.engine.clone(),
        workload: case.workload.name.to_string(),
        config: Default::default(),
        durability: String::new(),
        secs: 0.0,
        ops: 0,
        ops_per_sec: 0.0,
        mb_per_sec: 0.0,
        ops_by_type: Vec::new(),
        timeline: Vec::new(),
        engine_stats: None,
        notes: vec![format!("failed: {e}")],
        transfer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Args {
        Args::parse_from(std::iter::once("lightning-bench").chain(line.split_whitespace()))
    }

    #[test]
    fn the_matrix_is_the_cross_product() {
        let a = args("--engines lightning --workloads fillseq,ycsb_a --threads 1,2 --shards 1,2 --modes sync,normal");
        let c = cases(&a).unwrap();
        assert_eq!(c.len(), 2 * 2 * 2 * 2);
        assert!(c.iter().any(|x| x.workload.name == "ycsb_a"
            && x.threads == 2
            && x.shards == 1
            && x.mode == Mode::Sync));
    }

    #[test]
    fn read_only_workloads_run_in_one_mode_and_sync_phases_are_capped() {
        let c = cases(&args("--workloads readrandom,fillrandom --modes normal,sync --keys 50000"))
            .unwrap();
        let names: Vec<_> = c.iter().map(|x| (x.workload.name, x.mode)).collect();
        assert_eq!(
            names,
            vec![
                ("readrandom", Mode::Normal),
                ("fillrandom", Mode::Normal),
                ("fillrandom", Mode::Sync)
            ]
        );
        assert_eq!(c[1].ops, Some(50_000));
        assert_eq!(c[2].ops, Some(20_000), "--sync-ops defaults to 20 000");
    }

    #[test]
    fn fillbatch_writes_the_key_set_once_in_batches() {
        let c = cases(&args("--workloads fillbatch --keys 200000 --batch-size 1000")).unwrap();
        assert_eq!(c[0].ops, Some(200), "200 batches of 1000 puts, not 200 000 batches");
        let c = cases(&args("--workloads fillbatch --keys 10 --batch-size 1000")).unwrap();
        assert_eq!(c[0].ops, Some(1), "at least one batch");
        let c = cases(&args("--workloads fillbatch --keys 10 --ops 7")).unwrap();
        assert_eq!(c[0].ops, Some(7), "--ops counts batches");
    }

    #[test]
    fn bad_names_are_errors() {
        assert!(cases(&args("--workloads nope")).is_err());
        assert!(cases(&args("--modes fast")).is_err());
        assert!(cases(&args("--workloads readrandom --distribution gaussian")).is_err());
    }

    #[test]
    fn transfer_uses_the_keys_as_accounts_of_8_byte_balances() {
        let c =
            cases(&args("--workloads transfer --keys 1000 --threads 1,2,4 --modes normal,sync"))
                .unwrap();
        assert_eq!(c.len(), 2 * 3, "transfer writes: it runs in every mode");
        assert!(c.iter().all(|x| x.keys == 1000 && x.value_bytes == 8));
        assert!(c.iter().all(|x| matches!(x.distribution, Distribution::Uniform)));
        assert_eq!(c[0].ops, Some(1000), "one transfer per account by default");
    }

    #[test]
    fn large_workloads_use_large_values() {
        let c = cases(&args("--workloads large,large_1m --keys 100000")).unwrap();
        assert_eq!((c[0].value_bytes, c[0].keys), (64 * 1024, 4096));
        assert_eq!((c[1].value_bytes, c[1].keys), (1 << 20, 512));
    }
}
