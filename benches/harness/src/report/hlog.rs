//! Interval logs (`.hlog`): HdrHistogram's interval log format, one per case, with the
//! one-second interval histograms the runner recorded (all operation types together), written
//! through `hdrhistogram`'s `IntervalLogWriter` with the V2 + deflate encoding that Java's
//! `HistogramLogWriter` uses, so `HistogramLogProcessor` and HdrHistogram's plotters read them.
//!
//! The log's `#[StartTime]` is the run's start; the case's own wall-clock start is not
//! recorded, so interval timestamps are seconds since the case's measured phase began (a
//! comment line says so). Maximums are written in microseconds (`MaxValueDivisor` 1000).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;

use crate::engine::{err, Result};
use crate::model::{histogram_from_hex, CaseReport, RunReport};

/// The column legend line that follows the header, as Java's `HistogramLogWriter` writes it.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

/// The interval log of one case: `start` is the log's `StartTime`.
pub fn interval_log(case: &CaseReport, start: SystemTime) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut header = IntervalLogWriterBuilder::new();
    header
        .add_comment(&format!(
            "[Logged with lightning-bench: {} {} threads={} shards={} mode={}]",
            case.engine, case.workload, case.config.threads, case.config.shards, case.config.mode
        ))
        .add_comment("[Histogram log format version 1.3]")
        .add_comment("[Interval timestamps: seconds since the case's measured phase began]")
        .add_comment("[Histograms in nanoseconds, all operation types together]")
        .with_start_time(start);
    drop(header.begin_log_with(&mut out, &mut serializer).map_err(err)?);
    out.extend_from_slice(LEGEND.as_bytes());
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)
        .map_err(err)?;
    for (i, point) in case.timeline.iter().enumerate() {
        let h = histogram_from_hex(&point.histogram_hex).ok_or_else(|| {
            err(format!("interval {i} of {}: histogram does not decode", case.workload))
        })?;
        let (begin, length) = interval_span(point.t, case.secs);
        log.write_histogram(&h, begin, length, None).map_err(err)?;
    }
    drop(log);
    Ok(out)
}

/// Start and length of the interval that ends at second `t` of a phase of `secs` seconds:
/// one second, except that the last one stops where the phase did.
pub fn interval_span(t: f64, secs: f64) -> (Duration, Duration) {
    let begin = (t - 1.0).max(0.0);
    let end = if secs > begin && secs < t { secs } else { t };
    (Duration::from_secs_f64(begin), Duration::from_secs_f64((end - begin).max(0.0)))
}

/// Writes one `.hlog` per case of `run` into `dir`; `stems` are the cases' file name stems.
/// Cases without a timeline (skipped or failed) get none.
pub fn write(run: &RunReport, stems: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
    let start = super::parse_utc(&run.started_utc).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut paths = Vec::new();
    for (case, stem) in run.cases.iter().zip(stems) {
        if case.timeline.is_empty() {
            continue;
        }
        let path = dir.join(format!("{stem}.hlog"));
        std::fs::write(&path, interval_log(case, start)?)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_interval_ends_with_the_phase() {
        let s = |t, secs| {
            let (b, l) = interval_span(t, secs);
            (b.as_secs_f64(), l.as_secs_f64())
        };
        assert_eq!(s(1.0, 3.5), (0.0, 1.0));
        assert_eq!(s(4.0, 3.5), (3.0, 0.5));
        assert_eq!(s(1.0, 0.25), (0.0, 0.25));
    }
}
