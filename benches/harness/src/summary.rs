//! A Markdown summary of recorded runs, for `docs/BENCHMARKS.md` (`scripts/bench.sh` splices
//! it in): the machine, then one table per workload with every engine's throughput and latency
//! percentiles and lightning's ratio to the best peer in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{CaseReport, RunReport};

/// The summary of `runs`: the runs (oldest first), one overview table of every engine's
/// throughput per configuration with lightning's ratio to the best peer, the configurations
/// where lightning is behind, then one detailed table per workload.
pub fn markdown(runs: &[RunReport]) -> String {
    let mut runs: Vec<&RunReport> = runs.iter().collect();
    runs.sort_by(|a, b| a.started_utc.cmp(&b.started_utc));
    let mut out = String::new();
    for run in &runs {
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
    for run in &runs {
        for c in &run.cases {
            let rank =
                crate::workload::WORKLOADS.iter().position(|w| *w == c.workload).unwrap_or(99);
            by_workload.entry((rank, c.workload.clone())).or_default().push(c);
        }
    }
    overview(&mut out, &by_workload);
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

/// One row per workload, threads, mode and rate: each engine's ops/s (for open-loop rows, the
/// worst p99, as throughput is the target rate), the best in bold, and lightning's ratio to the
/// best peer (> 1: lightning is ahead); then the rows where that ratio is below 1.
fn overview(out: &mut String, by_workload: &BTreeMap<(usize, String), Vec<&CaseReport>>) {
    let mut engines: Vec<&str> = Vec::new();
    for cases in by_workload.values() {
        for c in cases {
            if !engines.contains(&c.engine.as_str()) {
                engines.push(&c.engine);
            }
        }
    }
    // lightning last, next to its ratio.
    engines.sort_by_key(|e| *e == "lightning");
    let _ = writeln!(out, "#### Overview: throughput, ops/s\n");
    let _ = writeln!(
        out,
        "| workload | threads | mode | {} | lightning ÷ best peer |",
        engines.join(" | ")
    );
    let _ = writeln!(out, "|---|---:|---|{}---:|", "---:|".repeat(engines.len()));
    let mut behind = Vec::new();
    let mut rows = 0;
    for ((_, workload), cases) in by_workload {
        let mut configs: Vec<(usize, &str, Option<u64>)> = Vec::new();
        for c in cases {
            let key = (c.config.threads, c.config.mode.as_str(), rate_key(c));
            if !configs.contains(&key) {
                configs.push(key);
            }
        }
        for (threads, mode, rate) in configs {
            let row: Vec<Option<&CaseReport>> = engines
                .iter()
                .map(|e| {
                    cases.iter().copied().find(|c| {
                        c.engine == *e
                            && c.config.threads == threads
                            && c.config.mode == mode
                            && rate_key(c) == rate
                    })
                })
                .collect();
            let best = row.iter().flatten().filter_map(|c| score(c)).fold(0.0, f64::max);
            let cells: Vec<String> = row
                .iter()
                .map(|c| match c.and_then(|c| score(c).map(|s| (c, s))) {
                    Some((c, s)) if s == best => format!("**{}**", cell(c)),
                    Some((c, _)) => cell(c),
                    None => "–".to_string(),
                })
                .collect();
            let lightning = row.iter().flatten().find(|c| c.engine == "lightning");
            let ratio = lightning.and_then(|c| ratio_to_best_peer(c, cases));
            let mut label = workload.clone();
            if workload == "fillbatch" {
                label.push_str(" (batches/s)");
            }
            if let Some(r) = rate {
                label.push_str(&format!(" at {} ops/s (p99 µs)", human(r as f64)));
            }
            let _ = writeln!(
                out,
                "| {label} | {threads} | {mode} | {} | {} |",
                cells.join(" | "),
                ratio.map_or_else(|| "–".to_string(), |r| format!("{r:.2}"))
            );
            rows += 1;
            if let Some(r) = ratio.filter(|r| *r < 1.0) {
                behind.push(format!("{label} ({threads} threads, {mode}): {r:.2}×"));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nLightning is behind the best peer in {} of {rows} configurations: {}.\n",
        behind.len(),
        if behind.is_empty() { "none".to_string() } else { behind.join("; ") }
    );
}

/// How good a case is, higher is better: its throughput, or for an open-loop case (whose
/// throughput is the target rate) the inverse of its worst p99. None for a case that did not run.
fn score(c: &CaseReport) -> Option<f64> {
    if c.ops_per_sec <= 0.0 {
        return None;
    }
    if c.config.rate.is_none() {
        return Some(c.ops_per_sec);
    }
    let p99 = worst_p99(c);
    (p99 > 0.0).then(|| 1.0 / p99)
}

/// The overview's figure for a case: ops/s, or p99 in µs for an open-loop case.
fn cell(c: &CaseReport) -> String {
    if c.config.rate.is_some() {
        format!("{:.1}", worst_p99(c))
    } else {
        human(c.ops_per_sec)
    }
}

/// The largest p99 of a case's operation types, µs.
fn worst_p99(c: &CaseReport) -> f64 {
    c.ops_by_type.iter().map(|o| o.summary.p99).fold(0.0, f64::max)
}

/// The target rate of an open-loop case, in whole ops/s.
fn rate_key(c: &CaseReport) -> Option<u64> {
    c.config.rate.map(|r| r.round() as u64)
}

/// lightning's [`score`] over the best peer's in the same threads, mode and rate, if any.
fn ratio_to_best_peer(c: &CaseReport, all: &[&CaseReport]) -> Option<f64> {
    if c.engine != "lightning" {
        return None;
    }
    let mine = score(c)?;
    let best = all
        .iter()
        .filter(|o| {
            o.engine != "lightning"
                && o.config.threads == c.config.threads
                && o.config.mode == c.config.mode
                && rate_key(o) == rate_key(c)
        })
        .filter_map(|o| score(o))
        .fold(0.0, f64::max);
    (best > 0.0).then(|| mine / best)
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
