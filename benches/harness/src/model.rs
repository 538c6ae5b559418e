//! What a benchmark run records: the data every report (terminal table, JSON, `.hgrm`,
//! interval log, HTML) is generated from. A `RunReport` serialises to JSON and back, so a
//! recorded run can be re-rendered later (and is, in the report tests).

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One whole invocation of the harness: the machine, and every measured case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// Harness version and command line.
    pub tool: String,
    /// The arguments as given.
    pub command: Vec<String>,
    /// UTC start and end, RFC 3339.
    pub started_utc: String,
    /// UTC end.
    pub finished_utc: String,
    /// The machine.
    pub machine: Machine,
    /// Every case, in the order run.
    pub cases: Vec<CaseReport>,
}

/// Where the run happened.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Filesystem type of the data directory.
    pub filesystem: String,
    /// Block device behind the data directory, with its model if known.
    pub disk: String,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// 1/5/15-minute load averages when the run started.
    pub load_start: [f64; 3],
    /// Load averages when it ended.
    pub load_end: [f64; 3],
}

/// One engine × workload × configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseReport {
    /// Engine name (`lightning`, `fjall`, ...).
    pub engine: String,
    /// Workload name (`fillseq`, `ycsb_a`, ...).
    pub workload: String,
    /// The knobs this case ran with.
    pub config: CaseConfig,
    /// What the durability mode means for this engine.
    pub durability: String,
    /// Wall time of the measured phase, seconds.
    pub secs: f64,
    /// Operations completed.
    pub ops: u64,
    /// Operations per second over the measured phase.
    pub ops_per_sec: f64,
    /// Key + value bytes moved per second, in MB (10^6).
    pub mb_per_sec: f64,
    /// Per operation type (`read`, `update`, `insert`, `scan`, `rmw`, `batch`...).
    pub ops_by_type: Vec<OpReport>,
    /// Throughput per one-second interval, all types together.
    pub timeline: Vec<IntervalPoint>,
    /// The engine's own statistics, if it has any (lightning: per shard).
    pub engine_stats: Option<serde_json::Value>,
    /// Anything the reader should know (capped by time, unsupported, ...).
    pub notes: Vec<String>,
    /// The `transfer` workload's own figures (absent for every other workload, and in reports
    /// recorded before the workload existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferReport>,
}

/// What the `transfer` workload counts besides throughput and latency. Its `ops` are committed
/// transfers, so `ops_per_sec` is transactions per second, and each latency covers one whole
/// transfer, its retries included.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TransferReport {
    /// Accounts (keys) the transfers moved money between.
    pub accounts: u64,
    /// Transaction attempts: every commit tried, committed or refused.
    pub attempts: u64,
    /// Attempts refused by the engine's optimistic concurrency control (each one retried).
    pub conflicts: u64,
    /// `conflicts / attempts` (0 with no attempts).
    pub conflict_rate: f64,
    /// Sum of every balance after the measured phase: checked equal to `accounts` × the
    /// initial balance, or the case fails.
    pub total_balance: u64,
}

impl TransferReport {
    /// The one-line summary the reports show, e.g. "conflicts 12 of 10012 attempts (0.12 %);
    /// total of 1000 balances unchanged (1000000000)".
    pub fn summary(&self) -> String {
        format!(
            "conflicts {} of {} attempts ({:.2} %); total of {} balances unchanged ({})",
            self.conflicts,
            self.attempts,
            self.conflict_rate * 100.0,
            self.accounts,
            self.total_balance
        )
    }
}

/// The knobs of a case.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CaseConfig {
    /// Keys in the data set.
    pub keys: u64,
    /// Key size, bytes.
    pub key_bytes: usize,
    /// Value size, bytes.
    pub value_bytes: usize,
    /// Key distribution.
    pub distribution: String,
    /// Caller threads.
    pub threads: usize,
    /// Shards (lightning only; 0 = the engine's default).
    pub shards: usize,
    /// Durability mode: `sync`, `normal` or `async`.
    pub mode: String,
    /// Engine cache, bytes.
    pub cache_bytes: u64,
    /// Compression on.
    pub compression: bool,
    /// Target rate (ops/s) for the open loop; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Seed of every random choice.
    pub seed: u64,
}

/// The latency distribution of one operation type.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpReport {
    /// Operation type.
    pub op: String,
    /// Operations of this type.
    pub count: u64,
    /// Percentiles and mean, µs.
    pub summary: LatencySummary,
    /// The whole histogram (ns), V2-serialised and base64-free hex, for re-rendering.
    pub histogram_hex: String,
}

/// Percentiles of a latency histogram, µs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencySummary {
    /// Reads the summary off a nanosecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        LatencySummary {
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            p9999: us(0.9999),
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }
}

/// Throughput in one interval.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IntervalPoint {
    /// Seconds since the measured phase started (end of the interval).
    pub t: f64,
    /// Operations per second in the interval.
    pub ops_per_sec: f64,
    /// p99 latency in the interval, µs.
    pub p99_us: f64,
    /// The interval's histogram (ns, all operation types), as [`histogram_to_hex`].
    pub histogram_hex: String,
}

/// Serialises a histogram to hex (V2 format) so reports can carry it in JSON.
pub fn histogram_to_hex(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2Serializer::new().serialize(h, &mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`histogram_to_hex`].
pub fn histogram_from_hex(hex: &str) -> Option<Histogram<u64>> {
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| hex.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect();
    Deserializer::new().deserialize(&mut bytes?.as_slice()).ok()
}

impl OpReport {
    /// The report of one operation type from its histogram (ns).
    pub fn new(op: &str, h: &Histogram<u64>) -> Self {
        OpReport {
            op: op.to_string(),
            count: h.len(),
            summary: LatencySummary::of(h),
            histogram_hex: histogram_to_hex(h),
        }
    }

    /// The histogram back.
    pub fn histogram(&self) -> Option<Histogram<u64>> {
        histogram_from_hex(&self.histogram_hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_through_hex() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [100, 2_000, 2_000, 50_000, 9_000_000] {
            h.record(v).unwrap();
        }
        let back = histogram_from_hex(&histogram_to_hex(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }

    #[test]
    fn summary_is_in_microseconds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record(1_500).unwrap();
        let s = LatencySummary::of(&h);
        assert!((s.p50 - 1.5).abs() < 0.01 && (s.max - 1.5).abs() < 0.01);
    }
}
