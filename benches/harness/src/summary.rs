//! A Markdown summary of recorded runs, for `docs/BENCHMARKS.md` (`scripts/bench.sh` splices
//! it in): the machine, then one table per workload with every engine's throughput and latency
//! percentiles and lightning's ratio to the best peer in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{CaseReport, RunReport};

/// The summary of `runs`.
pub fn markdown(runs: &[RunReport]) -> String {
    let mut out = String::new();
    for run in runs {
        let m = &run.machine;
        let _ = writeln!(
            out,
            "Run {} – {} (`{}`): {} × {}, {:.0} GiB, kernel {}, {} on {}, load {:.2} → {:.2}.\n",
            run.started_utc,
            run.finished_utc,
            run.command.join(" "),
            m.cpus,
            m.cpu,
            m.memory_bytes as f64 / f64::from(1u32 << 30),
            m.kernel,
            m.filesystem,
            m.disk,
            m.load_start[0],
            m.load_end[0]
        );
    }
    let mut by_workload: BTreeMap<(usize, String), Vec<&CaseReport>> = BTreeMap::new();
    for run in runs {
        for c in &run.cases {
            let rank =
                crate::workload::WORKLOADS.iter().position(|w| *w == c.workload).unwrap_or(99);
            by_workload.entry((rank, c.workload.clone())).or_default().push(c);
        }
    }
    for ((_, workload), cases) in by_workload {
        let _ = writeln!(out, "#### {workload}\n");
        let _ = writeln!(out, "| engine | threads | mode | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | ÷ best peer | notes |");
        let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|---:|---:|---|");
        for c in &cases {
            let lat = c.ops_by_type.first().map(|o| o.summary).unwrap_or_default();
            let ratio = ratio_to_best_peer(c, &cases).map_or(String::new(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |",
                c.engine,
                c.config.threads,
                c.config.mode,
                human(c.ops_per_sec),
                lat.p50,
                lat.p99,
                lat.p999,
                lat.max,
                ratio,
                c.notes.join("; ")
            );
        }
        out.push('\n');
    }
    out
}

/// lightning's throughput over the best peer's in the same threads and mode, if any.
fn ratio_to_best_peer(c: &CaseReport, all: &[&CaseReport]) -> Option<f64> {
    if c.engine != "lightning" || c.ops_per_sec <= 0.0 {
        return None;
    }
    let best = all
        .iter()
        .filter(|o| {
            o.engine != "lightning"
                && o.config.threads == c.config.threads
                && o.config.mode == c.config.mode
        })
        .map(|o| o.ops_per_sec)
        .fold(0.0, f64::max);
    (best > 0.0).then(|| c.ops_per_sec / best)
}

/// 1234567 → "1.23 M".
pub fn human(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} K", x / 1e3),
        x => format!("{x:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human(1_234_567.0), "1.23 M");
        assert_eq!(human(45_600.0), "45.6 K");
        assert_eq!(human(12.0), "12");
    }
}
