//! The terminal table: one row per case and operation type (and for `transfer`, a line with
//! its conflict rate).

use crate::model::RunReport;

/// The table of every case in `run`.
pub fn render(run: &RunReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<10} {:<12} {:>3} {:>3} {:<7} {:<13} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "engine",
        "workload",
        "thr",
        "shd",
        "mode",
        "op",
        "ops/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "p99.99",
        "max us"
    ));
    for c in &run.cases {
        if c.ops_by_type.is_empty() {
            out.push_str(&format!("{:<10} {:<12} {}\n", c.engine, c.workload, c.notes.join("; ")));
            continue;
        }
        for (i, o) in c.ops_by_type.iter().enumerate() {
            let rate = if i == 0 { format!("{:.0}", c.ops_per_sec) } else { String::new() };
            let s = &o.summary;
            out.push_str(&format!(
                "{:<10} {:<12} {:>3} {:>3} {:<7} {:<13} {:>12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1}\n",
                c.engine,
                c.workload,
                c.config.threads,
                c.config.shards,
                c.config.mode,
                o.op,
                rate,
                s.p50,
                s.p90,
                s.p99,
                s.p999,
                s.p9999,
                s.max
            ));
        }
        if let Some(t) = &c.transfer {
            // Throughput and latency are in the row above; the conflict rate has no column.
            out.push_str(&format!("{:<10} {:<12} {}\n", c.engine, c.workload, t.summary()));
        }
    }
    out
}
