//! The charts of the HTML page, from the recorded cases of one workload: throughput over time,
//! the latency percentile spectrum per operation type (HdrHistogram's classic plot: x is
//! `1/(1-p)` on a log axis, y is latency on a log axis), and, for lightning cases whose
//! engine statistics carry `shards`, the per-shard breakdown as grouped bars.

use hdrhistogram::Histogram;
use serde_json::Value;

use super::svg::{self, Axis, BarChart, BarSeries, Format, LineChart, Scale, Series};
use crate::model::CaseReport;

/// A case as the page shows it.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// Label of the run it belongs to (empty on a single-run page).
    pub run: String,
    /// The case.
    pub case: &'a CaseReport,
    /// Its name in legends.
    pub label: String,
    /// Its colour, the same in every chart of the page.
    pub color: &'static str,
}

/// Shortest interval (s) worth plotting: a sliver at the end of a phase scales up to noise.
const MIN_INTERVAL_SECS: f64 = 0.25;

/// Throughput per interval of `case` as (end of interval s, ops/s): the last, partial interval
/// is scaled to its real length (or dropped when shorter than a quarter second, unless it is
/// the whole phase), and seconds in which no operation completed count as zero.
pub fn throughput_points(case: &CaseReport) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for p in &case.timeline {
        if let Some(&(last, _)) = out.last() {
            let mut gap = last + 1.0;
            while gap < p.t - 0.5 {
                out.push((gap, 0.0));
                gap += 1.0;
            }
        }
        let (begin, length) = super::hlog::interval_span(p.t, case.secs);
        let secs = length.as_secs_f64();
        if secs >= MIN_INTERVAL_SECS || (out.is_empty() && secs > 0.0) {
            out.push((begin.as_secs_f64() + secs, p.ops_per_sec / secs));
        }
    }
    out
}

/// The throughput-over-time chart of a workload, if any case has a timeline.
pub fn throughput(workload: &str, entries: &[Entry<'_>]) -> Option<String> {
    let series: Vec<Series> = entries
        .iter()
        .map(|e| Series {
            name: e.label.clone(),
            color: e.color.to_string(),
            points: throughput_points(e.case),
            dashed: false,
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return None;
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all().map(|p| p.1).fold(1.0, f64::max);
    let markers = series.iter().all(|s| s.points.len() <= 24);
    let (scale, label) = if spread(&series) >= 20.0 {
        let y_min = all().map(|p| p.1).filter(|&y| y > 0.0).fold(y_max, f64::min);
        (Scale::decades(y_min, y_max), "throughput (ops/s, log scale)")
    } else {
        (Scale::nice_linear(0.0, y_max * 1.05), "throughput (ops/s)")
    };
    Some(svg::line_chart(&LineChart {
        title: format!("{workload} · throughput over time"),
        x: Axis {
            label: "time into the measured phase (s)".into(),
            scale: Scale::nice_linear(0.0, x_max),
            format: Format::Plain,
        },
        y: Axis { label: label.into(), scale, format: Format::Si },
        series,
        markers,
    }))
}

/// How far apart the series' typical rates are: the largest median over the smallest. A
/// spread of 20 or more puts throughput on a log axis, so sync and async runs both show.
fn spread(series: &[Series]) -> f64 {
    let medians: Vec<f64> = series
        .iter()
        .filter_map(|s| {
            let mut ys: Vec<f64> = s.points.iter().map(|p| p.1).filter(|&y| y > 0.0).collect();
            ys.sort_by(f64::total_cmp);
            ys.get(ys.len() / 2).copied()
        })
        .collect();
    let max = medians.iter().copied().fold(0.0, f64::max);
    let min = medians.iter().copied().fold(f64::INFINITY, f64::min);
    if min > 0.0 && min.is_finite() {
        max / min
    } else {
        1.0
    }
}

/// Steps per decade of `1/(1-p)` in the spectrum.
const SPECTRUM_STEPS: i32 = 24;

/// The percentile spectrum of a nanosecond histogram as (`1/(1-p)`, latency µs): from p = 0
/// up to the last percentile its sample count resolves (`1/(1-p)` = count), where it ends at
/// the maximum.
pub fn spectrum_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = Vec::new();
    let mut k = 0;
    loop {
        let x = 10f64.powf(f64::from(k) / f64::from(SPECTRUM_STEPS));
        if x >= n {
            break;
        }
        out.push((x, us(1.0 - 1.0 / x)));
        k += 1;
    }
    out.push((n.max(1.0), h.max() as f64 / 1000.0));
    out
}

/// Operation types of the entries, in order of first appearance.
fn op_types(entries: &[Entry<'_>]) -> Vec<String> {
    let mut ops: Vec<String> = Vec::new();
    for o in entries.iter().flat_map(|e| &e.case.ops_by_type) {
        if !ops.contains(&o.op) {
            ops.push(o.op.clone());
        }
    }
    ops
}

/// One percentile-spectrum chart per operation type of the workload: every case with that
/// operation is a line, so engines, configurations and runs share the chart.
pub fn spectra(workload: &str, entries: &[Entry<'_>]) -> Vec<String> {
    op_types(entries).iter().filter_map(|op| spectrum(workload, op, entries)).collect()
}

fn spectrum(workload: &str, op: &str, entries: &[Entry<'_>]) -> Option<String> {
    let series: Vec<Series> = entries
        .iter()
        .filter_map(|e| {
            let report = e.case.ops_by_type.iter().find(|o| o.op == op)?;
            let points = spectrum_points(&report.histogram()?);
            Some(Series {
                name: e.label.clone(),
                color: e.color.to_string(),
                points,
                dashed: false,
            })
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return None;
    }
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(100.0, f64::max);
    let y_min = all().map(|p| p.1).filter(|&y| y > 0.0).fold(f64::INFINITY, f64::min);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max);
    Some(svg::line_chart(&LineChart {
        title: format!("{workload} · {op} latency by percentile"),
        x: Axis {
            label: "percentile (log scale of 1/(1−p))".into(),
            scale: Scale::decades(1.0, x_max),
            format: Format::Percentile,
        },
        y: Axis {
            label: "latency (µs, log scale)".into(),
            scale: Scale::decades(y_min.min(y_max), y_max),
            format: Format::Micros,
        },
        series,
        markers: false,
    }))
}

/// One shard's figures, from lightning's `engine_stats.shards[i]`.
#[derive(Clone, Debug, Default)]
pub struct ShardFigures {
    /// Shard id.
    pub shard: u64,
    /// (kind, count, p50 µs, p99 µs) per operation kind the shard counts, `sync` excluded.
    pub kinds: Vec<(String, f64, f64, f64)>,
    /// WAL bytes written.
    pub wal_bytes: f64,
    /// WAL group writes.
    pub wal_group_writes: f64,
    /// fdatasync calls.
    pub fdatasyncs: f64,
    /// Loop turns over the stall threshold.
    pub stalls: f64,
}

/// The per-shard figures of a case, if its engine statistics have `shards`. The `sync` kind
/// (the harness's own calls between phases) is left out of the operation figures.
pub fn shard_figures(case: &CaseReport) -> Option<Vec<ShardFigures>> {
    let shards = case.engine_stats.as_ref()?.get("shards")?.as_array()?;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let figures = shards.iter().enumerate().map(|(i, s)| {
        let kinds = s.get("ops").and_then(Value::as_object).map_or_else(Vec::new, |ops| {
            ops.iter()
                .filter(|(k, _)| k.as_str() != "sync")
                .map(|(k, v)| (k.clone(), num(v, "count"), num(v, "p50_us"), num(v, "p99_us")))
                .collect()
        });
        ShardFigures {
            shard: s.get("shard").and_then(Value::as_u64).unwrap_or(i as u64),
            kinds,
            wal_bytes: num(s, "wal_bytes"),
            wal_group_writes: num(s, "wal_group_writes"),
            fdatasyncs: num(s, "fdatasyncs"),
            stalls: num(s, "stalls"),
        }
    });
    Some(figures.collect())
}

/// The per-shard breakdown of a workload: its bar charts, and the names of the figures that
/// were zero in every shard of every case (not drawn). `None` when no case has shard figures.
pub fn shard_breakdown(
    workload: &str,
    entries: &[Entry<'_>],
) -> Option<(Vec<String>, Vec<String>)> {
    let cases: Vec<(&Entry<'_>, Vec<ShardFigures>)> =
        entries.iter().filter_map(|e| Some((e, shard_figures(e.case)?))).collect();
    let shards = cases.iter().map(|(_, f)| f.len()).max().filter(|&n| n > 0)?;
    let mut out = Breakdown {
        workload,
        groups: (0..shards).map(|i| i.to_string()).collect(),
        charts: Vec::new(),
        zero: Vec::new(),
    };
    out.metric(&cases, "operations per shard", "operations", &|f: &ShardFigures| {
        f.kinds.iter().map(|k| k.1).sum::<f64>()
    });
    for kind in shard_kinds(&cases) {
        let p99 = |f: &ShardFigures| kind_figure(f, &kind, |k| k.3);
        let p50 = |f: &ShardFigures| kind_figure(f, &kind, |k| k.2);
        let series = bar_series(&cases, &p99, Some(&p50));
        let title = format!("shard-side {kind} latency");
        out.push(&title, "latency (µs)", Format::Micros, series, "tick = p50, bar = p99");
    }
    out.metric(&cases, "WAL written per shard", "MB", &|f| f.wal_bytes / 1e6);
    out.metric(&cases, "WAL group writes per shard", "group writes", &|f| f.wal_group_writes);
    out.metric(&cases, "fdatasyncs per shard", "fdatasync calls", &|f| f.fdatasyncs);
    out.metric(&cases, "stalls per shard", "stalled loop turns", &|f| f.stalls);
    Some((out.charts, out.zero))
}

/// The shard charts of a workload as they are built.
struct Breakdown<'w> {
    workload: &'w str,
    groups: Vec<String>,
    charts: Vec<String>,
    zero: Vec<String>,
}

impl Breakdown<'_> {
    fn metric(
        &mut self,
        cases: &[(&Entry<'_>, Vec<ShardFigures>)],
        title: &str,
        y_label: &str,
        get: &dyn Fn(&ShardFigures) -> f64,
    ) {
        self.push(title, y_label, Format::Si, bar_series(cases, get, None), "");
    }

    /// Adds the chart, or notes the figure as all zero.
    fn push(
        &mut self,
        title: &str,
        y_label: &str,
        format: Format,
        series: Vec<BarSeries>,
        tick_legend: &str,
    ) {
        let max = series.iter().flat_map(|s| s.values.iter()).copied().fold(0.0, f64::max);
        if max <= 0.0 {
            self.zero.push(title.to_string());
            return;
        }
        self.charts.push(svg::bar_chart(&BarChart {
            title: format!("{} · {title}", self.workload),
            groups: self.groups.clone(),
            x_label: "shard".into(),
            y: Axis { label: y_label.into(), scale: Scale::nice_linear(0.0, max * 1.05), format },
            series,
            tick_legend: tick_legend.into(),
        }));
    }
}

/// Operation kinds with a count somewhere, in order of first appearance.
fn shard_kinds(cases: &[(&Entry<'_>, Vec<ShardFigures>)]) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for (name, count, ..) in cases.iter().flat_map(|(_, f)| f).flat_map(|f| &f.kinds) {
        if *count > 0.0 && !kinds.contains(name) {
            kinds.push(name.clone());
        }
    }
    kinds
}

fn kind_figure(f: &ShardFigures, kind: &str, pick: fn(&(String, f64, f64, f64)) -> f64) -> f64 {
    f.kinds.iter().find(|k| k.0 == kind).map_or(0.0, pick)
}

fn bar_series(
    cases: &[(&Entry<'_>, Vec<ShardFigures>)],
    value: &dyn Fn(&ShardFigures) -> f64,
    tick: Option<&dyn Fn(&ShardFigures) -> f64>,
) -> Vec<BarSeries> {
    cases
        .iter()
        .map(|(e, figures)| BarSeries {
            name: e.label.clone(),
            color: e.color.to_string(),
            values: figures.iter().map(value).collect(),
            ticks: tick.map_or_else(Vec::new, |t| figures.iter().map(t).collect()),
        })
        .collect()
}
