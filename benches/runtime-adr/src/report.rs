//! Figures: one hdrhistogram summary per (measurement, candidate), printed as a table, written
//! as TSV, and aggregated over several runs into the median with its spread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Res;

/// A histogram of nanoseconds from 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// What one measurement collected: latencies, the operations (or messages) they covered, and
/// the time they took (deliberate pauses excluded). Samples of the same measurement taken in
/// several rounds are merged.
pub struct Sample {
    /// Latency of each timed step, ns.
    pub hist: Histogram<u64>,
    /// Operations or messages covered.
    pub units: u64,
    /// Total timed time.
    pub busy: Duration,
}

impl Sample {
    /// An empty sample.
    pub fn new() -> Res<Sample> {
        Ok(Sample { hist: new_histogram()?, units: 0, busy: Duration::ZERO })
    }

    /// One timed step that covered `units` operations.
    pub fn record(&mut self, took: Duration, units: u64) {
        self.busy += took;
        self.units += units;
        self.hist.saturating_record(took.as_nanos() as u64);
    }

    /// Adds `other` into this sample.
    pub fn merge(&mut self, other: &Sample) -> Res<()> {
        self.hist.add(&other.hist)?;
        self.units += other.units;
        self.busy += other.busy;
        Ok(())
    }

    /// The figure of this sample.
    pub fn figure(&self, measurement: &str, candidate: &str) -> Figure {
        Figure::from_histogram(measurement, candidate, &self.hist, self.units, self.busy)
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// `rt_awake`, `rt_parked`, `pipelined`, `wal_*`, `startup`.
    pub measurement: String,
    /// `ours`, `glommio`, ... with the variant.
    pub candidate: String,
    /// Samples in the histogram.
    pub count: u64,
    /// Median, ns.
    pub p50: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// 99.9th percentile, ns.
    pub p999: u64,
    /// Mean, ns.
    pub mean: f64,
    /// Largest sample, ns.
    pub max: u64,
    /// Operations (or messages, for `pipelined`) per second of measured time.
    pub rate: f64,
    /// Samples above 1 ms (stalls: a missed wake, a preempted thread, a slow device).
    pub over_1ms: u64,
}

impl Figure {
    /// Summarises `hist`; `units` operations took `busy` in total (sleeps excluded).
    pub fn from_histogram(
        measurement: &str,
        candidate: &str,
        hist: &Histogram<u64>,
        units: u64,
        busy: Duration,
    ) -> Figure {
        let secs = busy.as_secs_f64();
        Figure {
            measurement: measurement.to_owned(),
            candidate: candidate.to_owned(),
            count: hist.len(),
            p50: hist.value_at_quantile(0.50),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            mean: hist.mean(),
            max: hist.max(),
            rate: if secs > 0.0 { units as f64 / secs } else { 0.0 },
            over_1ms: hist.count_between(1_000_001, u64::MAX),
        }
    }

    /// A figure of one sample (start-up time).
    pub fn single(measurement: &str, candidate: &str, took: Duration) -> Figure {
        let ns = took.as_nanos() as u64;
        Figure {
            measurement: measurement.to_owned(),
            candidate: candidate.to_owned(),
            count: 1,
            p50: ns,
            p99: ns,
            p999: ns,
            mean: ns as f64,
            max: ns,
            rate: 1.0 / took.as_secs_f64().max(1e-9),
            over_1ms: u64::from(ns > 1_000_000),
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<22} {:<26} n={:>7}  p50 {:>8}  p99 {:>8}  p99.9 {:>8}  mean {:>8}  max {:>8} µs  {:>10}/s  >1ms {}",
            self.measurement,
            self.candidate,
            self.count,
            us(self.p50 as f64),
            us(self.p99 as f64),
            us(self.p999 as f64),
            us(self.mean),
            us(self.max as f64),
            rate(self.rate),
            self.over_1ms,
        )
    }
}

/// Nanoseconds as microseconds with 3 significant digits or so.
pub fn us(ns: f64) -> String {
    let v = ns / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A rate with an SI suffix.
pub fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.0} k", r / 1e3)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

const COLUMNS: &str =
    "measurement\tcandidate\tcount\tp50_ns\tp99_ns\tp999_ns\tmean_ns\tmax_ns\trate_per_s\tover_1ms";

/// Writes `figures` as TSV, with the machine description as `#` lines first.
pub fn write_tsv(path: &Path, machine: &impl fmt::Display, figures: &[Figure]) -> Res<()> {
    let mut s = String::new();
    for line in machine.to_string().lines() {
        s.push_str("# ");
        s.push_str(line);
        s.push('\n');
    }
    s.push_str(COLUMNS);
    s.push('\n');
    for f in figures {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{:.1}\t{}\n",
            f.measurement,
            f.candidate,
            f.count,
            f.p50,
            f.p99,
            f.p999,
            f.mean,
            f.max,
            f.rate,
            f.over_1ms
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn read_tsv(path: &Path) -> Res<(Vec<String>, Vec<Figure>)> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header = Vec::new();
    let mut figures = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header.push(h.to_owned());
            continue;
        }
        if line.is_empty() || line.starts_with("measurement\t") {
            continue;
        }
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() != 10 {
            return Err(format!("{}: bad line {line:?}", path.display()).into());
        }
        figures.push(Figure {
            measurement: c[0].to_owned(),
            candidate: c[1].to_owned(),
            count: c[2].parse()?,
            p50: c[3].parse()?,
            p99: c[4].parse()?,
            p999: c[5].parse()?,
            mean: c[6].parse()?,
            max: c[7].parse()?,
            rate: c[8].parse()?,
            over_1ms: c[9].parse()?,
        });
    }
    Ok((header, figures))
}

/// The median of `v` (the middle value; for an even count the mean of the two middle ones),
/// with min and max.
fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (median, v[0], v[n - 1])
}

/// Markdown table of the median (min–max) of each figure over the runs in `files`.
pub fn aggregate(files: &[PathBuf]) -> Res<String> {
    if files.is_empty() {
        return Err("--aggregate needs at least one TSV file".into());
    }
    let mut runs = Vec::new();
    for f in files {
        runs.push(read_tsv(f)?);
    }
    let mut out = String::new();
    for (i, (header, _)) in runs.iter().enumerate() {
        out.push_str(&format!("run {} ({}):\n", i + 1, files[i].display()));
        for h in header {
            out.push_str(&format!("    {h}\n"));
        }
    }
    out.push_str(&format!(
        "\nmedian of {} runs, (min–max) across runs; latencies in µs\n\n",
        runs.len()
    ));
    out.push_str(
        "| measurement | candidate | p50 µs | p99 µs | p99.9 µs | mean µs | ops/s (msgs/s) | n | >1 ms |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut keys: Vec<(String, String)> = Vec::new();
    for (_, figs) in &runs {
        for f in figs {
            let k = (f.measurement.clone(), f.candidate.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for (m, c) in keys {
        let same: Vec<&Figure> = runs
            .iter()
            .flat_map(|(_, figs)| figs.iter())
            .filter(|f| f.measurement == m && f.candidate == c)
            .collect();
        let cell = |get: &dyn Fn(&Figure) -> f64, fmt: &dyn Fn(f64) -> String| {
            let (med, lo, hi) = median_spread(same.iter().map(|f| get(f)).collect());
            if same.len() == 1 {
                fmt(med)
            } else {
                format!("{} ({}–{})", fmt(med), fmt(lo), fmt(hi))
            }
        };
        // A `|` in a name (`O_DIRECT|O_DSYNC`) would split the markdown cell.
        let c = c.replace('|', "\\|");
        out.push_str(&format!(
            "| {m} | {c} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&|f| f.p50 as f64, &us),
            cell(&|f| f.p99 as f64, &us),
            cell(&|f| f.p999 as f64, &us),
            cell(&|f| f.mean, &us),
            cell(&|f| f.rate, &rate),
            cell(&|f| f.count as f64, &|v| format!("{v:.0}")),
            cell(&|f| f.over_1ms as f64, &|v| format!("{v:.0}")),
        ));
    }
    Ok(out)
}
