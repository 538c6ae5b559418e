//! Report generation from a recorded run: a `RunReport` built by hand (synthetic histograms,
//! a timeline, lightning's per-shard statistics) renders to every report file; the `.hgrm` and
//! `.hlog` files read back to the histograms they came from; per-thread histograms merge; and a
//! run survives JSON and re-renders to the same page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use lightning_bench::model::{
    histogram_to_hex, CaseConfig, CaseReport, IntervalPoint, Machine, OpReport, RunReport,
    TransferReport,
};
use lightning_bench::report::{self, html};
use lightning_bench::runner::new_histogram;

/// A deterministic latency sample (ns): mostly a few µs, a 1 % tail around a millisecond.
fn latencies(seed: u64, n: usize, base_ns: f64) -> Histogram<u64> {
    let mut h = new_histogram();
    let mut x = seed | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let tail = if x.is_multiple_of(100) { 300.0 } else { 1.0 };
        h.record((base_ns * (1.0 - (1.0 - u).ln()) * tail) as u64).unwrap();
    }
    h
}

fn config(threads: usize, shards: usize) -> CaseConfig {
    CaseConfig {
        keys: 10_000,
        key_bytes: 16,
        value_bytes: 100,
        distribution: "zipfian".into(),
        threads,
        shards,
        mode: "normal".into(),
        cache_bytes: 1 << 20,
        compression: false,
        rate: None,
        seed: 42,
    }
}

fn timeline(seed: u64, seconds: usize) -> Vec<IntervalPoint> {
    (0..seconds)
        .map(|i| {
            let h = latencies(seed + i as u64, 2_000 + 500 * i, 2_000.0);
            IntervalPoint {
                t: i as f64 + 1.0,
                ops_per_sec: h.len() as f64,
                p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
                histogram_hex: histogram_to_hex(&h),
            }
        })
        .collect()
}

fn shard_stats(scale: u64) -> serde_json::Value {
    let shard = |id: u64, puts: u64| {
        serde_json::json!({
            "shard": id,
            "ops": {
                "put": {"count": puts, "p50_us": 4.5 + id as f64, "p99_us": 40.0 + 9.0 * id as f64,
                        "p999_us": 90.0, "max_us": 400.0, "mean_us": 6.0},
                "delete": {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0,
                           "max_us": 0.0, "mean_us": 0.0},
                "sync": {"count": 2, "p50_us": 900.0, "p99_us": 900.0, "p999_us": 900.0,
                         "max_us": 900.0, "mean_us": 900.0}
            },
            "errors": 0, "drain_depth_mean": 3.5, "drain_depth_max": 40,
            "wal_bytes": puts * 140, "wal_records": puts, "wal_group_writes": puts / 8,
            "wal_records_per_group_mean": 8.0, "fdatasyncs": 30 + id, "turns": puts / 4,
            "stalls": id, "recent_stalls": [], "cache_hits": 0, "cache_misses": 0,
            "memtable_bytes": 1 << 20, "memtable_versions": puts
        })
    };
    let shards = vec![shard(0, 5_000 * scale), shard(1, 4_600 * scale)];
    serde_json::json!({ "shards": shards, "total": shard(0, 9_600 * scale) })
}

fn case(engine: &str, threads: usize, shards: usize, seed: u64) -> CaseReport {
    let read = latencies(seed, 20_000, 1_500.0);
    let update = latencies(seed + 7, 20_000, 6_000.0);
    let ops = read.len() + update.len();
    CaseReport {
        engine: engine.into(),
        workload: "ycsb_a".into(),
        config: config(threads, shards),
        durability: format!("{engine}: survives kill -9"),
        secs: 3.4,
        ops,
        ops_per_sec: ops as f64 / 3.4,
        mb_per_sec: ops as f64 * 116.0 / 3.4 / 1e6,
        ops_by_type: vec![OpReport::new("read", &read), OpReport::new("update", &update)],
        timeline: timeline(seed, 4),
        engine_stats: (engine == "lightning").then(|| shard_stats(threads as u64)),
        notes: vec![format!("synthetic case {seed}")],
        transfer: None,
    }
}

fn run() -> RunReport {
    let mut skipped = case("lightning", 1, 2, 99);
    skipped.workload = "transfer".into();
    skipped.ops_by_type.clear();
    skipped.timeline.clear();
    skipped.engine_stats = None;
    skipped.notes = vec!["transfer needs cross-shard transactions; skipped".into()];
    RunReport {
        tool: "lightning-bench 0.1.0".into(),
        command: vec!["lightning-bench".into(), "--workloads".into(), "ycsb_a".into()],
        started_utc: "2026-12-01T21:34:31Z".into(),
        finished_utc: "2026-12-01T21:35:02Z".into(),
        machine: Machine {
            cpu: "Synthetic CPU @ 3.0GHz".into(),
            cpus: 2,
            kernel: "6.1.0-test".into(),
            filesystem: "ext4".into(),
            disk: "vda, 512 B sectors".into(),
            memory_bytes: 8 << 30,
            load_start: [0.1, 0.2, 0.3],
            load_end: [1.5, 0.6, 0.4],
        },
        cases: vec![
            case("lightning", 1, 2, 1),
            case("lightning", 2, 2, 2),
            case("sled", 1, 0, 3),
            skipped,
        ],
    }
}

#[test]
fn write_all_creates_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let paths = report::write_all(&run(), dir.path()).unwrap();
    let names: Vec<String> =
        paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "report.json",
        "report.html",
        "lightning-ycsb_a-t1-s2-normal-read.hgrm",
        "lightning-ycsb_a-t1-s2-normal-update.hgrm",
        "lightning-ycsb_a-t2-s2-normal-read.hgrm",
        "sled-ycsb_a-t1-s0-normal-update.hgrm",
        "lightning-ycsb_a-t1-s2-normal.hlog",
        "lightning-ycsb_a-t2-s2-normal.hlog",
        "sled-ycsb_a-t1-s0-normal.hlog",
    ] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }
    assert_eq!(names.len(), 2 + 6 + 3, "the skipped case has no histograms: {names:?}");
    for p in &paths {
        assert!(std::fs::metadata(p).unwrap().len() > 0, "{} is empty", p.display());
    }
}

#[test]
fn the_page_has_every_chart_kind_and_the_run_details() {
    let page = html::render(&[(String::new(), &run())]);
    assert!(page.starts_with("<!DOCTYPE html>"));
    for external in ["<script", "src=", "<link", "url(", "@import"] {
        assert!(!page.contains(external), "the page must be self-contained: {external}");
    }
    let svgs = page.matches("<svg").count();
    // throughput + 2 spectra + shard charts: ops, put latency, WAL MB, groups, fdatasyncs, stalls.
    assert_eq!(svgs, 1 + 2 + 6, "{svgs} charts");
    for needle in [
        "ycsb_a · throughput over time",
        "ycsb_a · read latency by percentile",
        "ycsb_a · update latency by percentile",
        "Per-shard breakdown",
        "ycsb_a · operations per shard",
        "shard-side put latency",
        "WAL written per shard",
        "fdatasyncs per shard",
        "stalls per shard",
        "lightning · 1 thread",
        "sled",
        ">0%<",
        ">90%<",
        ">99%<",
        ">99.9%<",
        ">99.99%<",
        "latency (µs, log scale)",
        "throughput (ops/s)",
        "Synthetic CPU @ 3.0GHz",
        "6.1.0-test",
        "ext4",
        "vda, 512 B sectors",
        "0.10 / 0.20 / 0.30 at start → 1.50 / 0.60 / 0.40 at end",
        "synthetic case 2",
        "transfer needs cross-shard transactions; skipped",
        "lightning: survives kill -9",
        "p99.99 µs",
    ] {
        assert!(page.contains(needle), "page lacks {needle:?}");
    }
}

/// Rows of an `.hgrm` file: (value µs, percentile as a fraction, total count).
fn hgrm_rows(text: &str) -> Vec<(f64, f64, u64)> {
    text.lines()
        .skip(2)
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn hgrm_files_parse_back_to_their_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let run = run();
    report::write_all(&run, dir.path()).unwrap();
    let op = &run.cases[0].ops_by_type[1];
    let h = op.histogram().unwrap();
    let text =
        std::fs::read_to_string(dir.path().join("lightning-ycsb_a-t1-s2-normal-update.hgrm"))
            .unwrap();
    assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
    let rows = hgrm_rows(&text);
    assert!(rows.len() > 50, "{} rows", rows.len());
    for &(value, q, count) in &rows {
        // Each row: the bucket where the running count first reaches the percentile, its
        // highest equivalent value, and the count of every value up to it.
        let ns = (value * 1000.0).round() as u64;
        assert_eq!(count, h.count_between(0, ns), "at {q}");
        assert!(count as f64 >= q * h.len() as f64 - 1e-6, "at {q}: {count}");
        let at = h.value_at_quantile((count as f64 - 0.5) / h.len() as f64) as f64 / 1000.0;
        assert!((value - at).abs() <= 0.001, "at {q}: {value} vs {at}");
    }
    let last = rows.last().unwrap();
    assert_eq!((last.1, last.2), (1.0, h.len()));
    // The summary's percentiles lie between the rows either side of them.
    let n = h.len() as f64;
    for (target, summary) in [(0.5, op.summary.p50), (0.9, op.summary.p90), (0.99, op.summary.p99)]
    {
        let below = rows.iter().rfind(|r| r.1 <= target).unwrap().0;
        let above = rows.iter().find(|r| r.2 as f64 >= target * n).unwrap().0;
        assert!(below <= summary + 0.001 && summary <= above + 0.001, "p{target}: {summary}");
    }
    assert!(text.contains(&format!("Total count    = {:>12}]", h.len())));
    assert!(text.contains(&format!("#[Max     = {:>12.3},", h.max() as f64 / 1000.0)));
}

/// Standard base64, as the interval log encodes histograms.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn hlog_files_read_back_with_one_histogram_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let run = run();
    report::write_all(&run, dir.path()).unwrap();
    let case = &run.cases[1];
    let bytes = std::fs::read(dir.path().join("lightning-ycsb_a-t2-s2-normal.hlog")).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("#[StartTime: 1796160871.000 (seconds since epoch)]"), "{text}");
    assert!(text.contains("\"StartTimestamp\",\"Interval_Length\""));
    let mut intervals = Vec::new();
    let mut start_times = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.unwrap() {
            LogEntry::Interval(h) => intervals.push(h),
            LogEntry::StartTime(_) => start_times += 1,
            LogEntry::BaseTime(_) => {}
        }
    }
    assert_eq!(start_times, 1);
    assert_eq!(intervals.len(), case.timeline.len());
    for (i, (logged, point)) in intervals.iter().zip(&case.timeline).enumerate() {
        assert_eq!(logged.start_timestamp().as_secs_f64(), i as f64);
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut base64_decode(logged.encoded_histogram()).as_slice())
            .unwrap();
        assert_eq!(h.len() as f64, point.ops_per_sec);
        let max_us = h.max() as f64 / 1000.0;
        assert!((logged.max() - max_us).abs() < 0.001, "max in µs: {} vs {max_us}", logged.max());
    }
    // The last interval stops where the phase did (3.4 s).
    let last = intervals.last().unwrap();
    assert!((last.duration().as_secs_f64() - 0.4).abs() < 1e-3);
}

#[test]
fn histogram_merge_sums_counts_and_keeps_the_largest_max() {
    let a = latencies(11, 10_000, 2_000.0);
    let mut b = latencies(12, 5_000, 9_000.0);
    b.record(75_000_000).unwrap();
    let mut merged = new_histogram();
    merged.add(&a).unwrap();
    merged.add(&b).unwrap();
    assert_eq!(merged.len(), a.len() + b.len());
    assert_eq!(merged.max(), a.max().max(b.max()));
    assert_eq!(merged.min(), a.min().min(b.min()));
    let mean = (a.mean() * a.len() as f64 + b.mean() * b.len() as f64) / merged.len() as f64;
    assert!((merged.mean() - mean).abs() / mean < 1e-3);
    let report = OpReport::new("read", &merged);
    assert_eq!(report.count, 15_001);
    assert_eq!(report.histogram().unwrap().len(), 15_001);
    assert!((report.summary.max - 75_000.0).abs() / 75_000.0 < 1e-3);
}

#[test]
fn a_recorded_run_re_renders_to_the_same_page() {
    let run = run();
    let json = serde_json::to_string_pretty(&run).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(html::render(&[(String::new(), &back)]), html::render(&[(String::new(), &run)]));
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    report::write_all(&run, one.path()).unwrap();
    report::write_all(&back, two.path()).unwrap();
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in ["report.html", "report.json", "sled-ycsb_a-t1-s0-normal-read.hgrm"] {
        assert_eq!(read(one.path(), f), read(two.path(), f), "{f} differs");
    }
}

#[test]
fn compare_puts_every_run_on_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let first = run();
    let mut second = run();
    second.started_utc = "2026-12-02T08:00:00Z".into();
    second.cases.truncate(1);
    let mut inputs = Vec::new();
    for (name, r) in [("a", &first), ("b", &second)] {
        let d = dir.path().join(name);
        report::write_all(r, &d).unwrap();
        inputs.push(d.join("report.json"));
    }
    let out = dir.path().join("cmp");
    let paths = report::compare(&inputs, &out).unwrap();
    assert!(paths.iter().any(|p| p.ends_with("compare.html")));
    assert!(paths.iter().any(|p| p.ends_with("compare.json")));
    let page = std::fs::read_to_string(out.join("compare.html")).unwrap();
    assert!(page.contains("2 runs on one page"));
    assert!(page.contains("2026-12-01T21:34:31Z · lightning · 1 thread"), "runs label the lines");
    assert!(page.contains("2026-12-02T08:00:00Z · lightning"));
    let loaded: Vec<RunReport> =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    assert_eq!(loaded.len(), 2);
}

#[test]
fn the_markdown_summary_has_an_overview_and_says_where_lightning_is_behind() {
    let mut r = run();
    // lightning at 1 thread: 1000 ops/s against sled's 4000.
    r.cases[0].ops_per_sec = 1_000.0;
    r.cases[2].ops_per_sec = 4_000.0;
    r.cases[3].ops_per_sec = 0.0; // the skipped case, as the runner records it
    let md = lightning_bench::summary::markdown(&[r]);
    assert!(md.contains("#### Overview: throughput, ops/s"), "{md}");
    assert!(md.contains("| workload | threads | mode | sled | lightning | lightning ÷ best peer |"));
    assert!(md.contains("| ycsb_a | 1 | normal | **4.0 K** | 1.0 K | 0.25 |"), "{md}");
    assert!(md.contains("| transfer | 1 | normal | – | – | – |"), "skipped: no figure");
    assert!(
        md.contains("Lightning is behind the best peer in 1 of 3 configurations: ycsb_a (1 threads, normal): 0.25×"),
        "{md}"
    );
    assert!(md.contains("#### ycsb_a"), "the detailed table follows");
}

/// A measured transfer case as the runner records it: one op type, `transfer`, and its figures.
fn transfer_case(engine: &str, seed: u64) -> CaseReport {
    let mut c = case(engine, 2, 0, seed);
    let h = latencies(seed, 9_800, 30_000.0);
    c.workload = "transfer".into();
    c.config.value_bytes = 8;
    c.ops = h.len();
    c.ops_per_sec = h.len() as f64 / 3.4;
    c.ops_by_type = vec![OpReport::new("transfer", &h)];
    c.engine_stats = None;
    let figures = TransferReport {
        accounts: 1_000,
        attempts: 10_000,
        conflicts: 200,
        conflict_rate: 0.02,
        total_balance: 1_000_000_000,
    };
    c.notes = vec![figures.summary()];
    c.transfer = Some(figures);
    c
}

#[test]
fn transfer_figures_reach_every_report_and_survive_json() {
    let mut r = run();
    r.cases.push(transfer_case("fjall", 5));
    let t = r.cases.last().unwrap().ops_by_type[0].summary;
    let line =
        "conflicts 200 of 10000 attempts (2.00 %); total of 1000 balances unchanged (1000000000)";
    let table = report::table::render(&r);
    assert!(table.contains(&format!("fjall      transfer     {line}")), "{table}");
    assert!(table.contains(&format!("{:.2}", t.p99)), "the p99 is in the transfer row: {table}");
    let page = html::render(&[(String::new(), &r)]);
    assert!(page.contains(line), "the page's notes carry the conflict rate");
    assert!(page.contains("transfer · transfer latency by percentile"));
    let md = lightning_bench::summary::markdown(&[r.clone()]);
    assert!(
        md.contains(&format!(
            "| fjall | 2 | normal | {} | {:.2} |",
            lightning_bench::summary::human(r.cases[4].ops_per_sec),
            t.p50
        )),
        "{md}"
    );
    assert!(md.contains(line), "{md}");
    let json = serde_json::to_string(&r).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.cases[4].transfer, r.cases[4].transfer);
    // Other workloads carry no transfer field, and runs recorded before it existed still load.
    assert_eq!(json.matches("\"transfer\":{").count(), 1, "{json}");
    assert!(back.cases[..4].iter().all(|c| c.transfer.is_none()));
}
