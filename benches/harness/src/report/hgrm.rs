//! `.hgrm` files: HdrHistogram's percentile distribution text format, as written by Java's
//! `Histogram.outputPercentileDistribution(out, 5, 1000.0)`: five ticks per half distance to
//! 100 %, values scaled from nanoseconds to microseconds, then the `#[Mean …]`, `#[Max …]` and
//! `#[Buckets …]` footer. HdrHistogram's plotter and `HistogramLogProcessor` users read these.
//!
//! One file per case and operation type: `<engine>-<workload>-t<threads>-s<shards>-<mode>-<op>.hgrm`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::engine::{err, Result};
use crate::model::RunReport;

/// Ticks per half distance to 100 %, as HdrHistogram's tools default to.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Nanoseconds per microsecond: the output value unit scaling ratio.
pub const SCALING_RATIO: f64 = 1000.0;

/// The percentile distribution of `h`, values divided by `scaling_ratio`, in the classic
/// format (`Value Percentile TotalCount 1/(1-Percentile)`, then the footer lines).
pub fn percentile_distribution(h: &Histogram<u64>, scaling_ratio: f64) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / scaling_ratio;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let odds = 1.0 / (1.0 - q);
            let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10} {odds:>14.2}");
        } else {
            let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.digits$}, StdDeviation   = {:>12.digits$}]",
        h.mean() / scaling_ratio,
        h.stdev() / scaling_ratio
    );
    let max = if h.is_empty() { 0.0 } else { h.max() as f64 / scaling_ratio };
    let _ = writeln!(out, "#[Max     = {max:>12.digits$}, Total count    = {:>12}]", h.len());
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    out
}

/// Sub-buckets per bucket for `sigfig` significant digits: the smallest power of two at
/// least 2 × 10^sigfig (HdrHistogram's layout; 2048 for 3 digits).
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// Writes one `.hgrm` file per case and operation type of `run` into `dir`; `stems` are the
/// cases' file name stems (see [`super::case_stems`]).
pub fn write(run: &RunReport, stems: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for (case, stem) in run.cases.iter().zip(stems) {
        for op in &case.ops_by_type {
            let h = op
                .histogram()
                .ok_or_else(|| err(format!("{stem}: the {} histogram does not decode", op.op)))?;
            let path = dir.join(format!("{stem}-{}.hgrm", super::file_safe(&op.op)));
            std::fs::write(&path, percentile_distribution(&h, SCALING_RATIO))
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
            paths.push(path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_layout() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let text = percentile_distribution(&h, 1000.0);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        assert_eq!(lines.next().unwrap(), "       1.000 0.000000000000          1           1.00");
        assert!(text.contains("     500.223 0.500000000000        500           2.00\n"), "{text}");
        assert!(text.contains("#[Mean    =      500."), "{text}");
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.ends_with("SubBuckets     =         2048]\n"), "{text}");
        let last_row = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert_eq!(last_row.split_whitespace().count(), 3, "the 100% row has no 1/(1-p)");
    }

    #[test]
    fn sub_buckets() {
        assert_eq!(sub_bucket_count(3), 2048);
        assert_eq!(sub_bucket_count(2), 256);
    }
}
