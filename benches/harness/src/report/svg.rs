//! A small SVG plotting kit for the HTML report: linear and log scales, axes with tick marks
//! and grid lines, polylines with markers, grouped bars, and a legend that wraps below the plot.
//! Pure string building; every chart is a self-contained `<svg>` element sized by its
//! `viewBox`, so it scales with the page.

use std::fmt::Write as _;

/// Chart width in SVG units.
pub const WIDTH: f64 = 640.0;
const PLOT_HEIGHT: f64 = 270.0;
const BAR_PLOT_HEIGHT: f64 = 200.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 34.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 64.0;
const LEGEND_ROW: f64 = 20.0;

/// Distinct, colour-blind-friendly series colours (Okabe–Ito first, then Tableau).
pub const PALETTE: [&str; 12] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#332288",
    "#999933", "#882255", "#44AA99", "#7F7F7F",
];

/// How an axis maps values to positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// `min..max`, evenly.
    Linear {
        /// Value at the start of the axis.
        min: f64,
        /// Value at the end.
        max: f64,
    },
    /// `min..max` by decades; both must be positive.
    Log {
        /// Value at the start of the axis.
        min: f64,
        /// Value at the end.
        max: f64,
    },
}

/// How tick values are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// Counts and rates with SI suffixes: 0, 250K, 1.5M.
    Si,
    /// Microseconds: 10 µs, 1 ms, 2 s.
    Micros,
    /// `1/(1-p)` written as the percentile p: 0%, 90%, 99%, 99.9%.
    Percentile,
    /// The number as is.
    Plain,
}

/// One axis of a chart.
#[derive(Clone, Debug)]
pub struct Axis {
    /// Axis title, with its unit.
    pub label: String,
    /// The mapping.
    pub scale: Scale,
    /// Tick label style.
    pub format: Format,
}

impl Scale {
    /// A linear scale from 0 (or `lo` if negative) to a round number at or above `hi`.
    pub fn nice_linear(lo: f64, hi: f64) -> Scale {
        let min = lo.min(0.0);
        let step = nice_step((hi - min).max(1e-12) / 5.0);
        Scale::Linear { min, max: ((hi / step).ceil() * step).max(min + step) }
    }

    /// A log scale covering `lo..hi` in whole decades.
    pub fn decades(lo: f64, hi: f64) -> Scale {
        let lo = if lo > 0.0 { lo } else { 1.0 };
        let hi = hi.max(lo);
        let min = 10f64.powf(lo.log10().floor());
        let mut max = 10f64.powf(hi.log10().ceil());
        if max <= min {
            max = min * 10.0;
        }
        Scale::Log { min, max }
    }

    /// The position of `v` along the axis, 0 at the start and 1 at the end.
    pub fn fraction(&self, v: f64) -> f64 {
        let f = match *self {
            Scale::Linear { min, max } => (v - min) / (max - min),
            Scale::Log { min, max } => {
                (v.max(min * 1e-3).log10() - min.log10()) / (max / min).log10()
            }
        };
        if f.is_finite() {
            f
        } else {
            0.0
        }
    }

    /// Ticks: (value, labelled). Log scales tick every decade and mark 2…9 in between, labelled
    /// when the axis spans at most two decades.
    pub fn ticks(&self) -> Vec<(f64, bool)> {
        match *self {
            Scale::Linear { min, max } => {
                let step = nice_step((max - min) / 5.0);
                let n = ((max - min) / step).round() as i64;
                (0..=n).map(|i| (min + i as f64 * step, true)).collect()
            }
            Scale::Log { min, max } => {
                let few = (max / min).log10() <= 2.01;
                let mut out = Vec::new();
                let mut decade = min;
                while decade <= max * 1.0001 {
                    out.push((decade, true));
                    for m in 2..10 {
                        let v = decade * f64::from(m);
                        if v < max * 0.9999 {
                            out.push((v, few && (m == 2 || m == 5)));
                        }
                    }
                    decade *= 10.0;
                }
                out
            }
        }
    }
}

/// 1, 2, 2.5 or 5 × 10^k, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 { raw } else { 1.0 };
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&m| f <= m + 1e-9).unwrap_or(10.0);
    m * mag
}

/// Writes a tick value.
pub fn format_value(v: f64, format: Format) -> String {
    match format {
        Format::Si => si(v),
        Format::Micros => micros(v),
        Format::Percentile => percentile_of_odds(v),
        Format::Plain => trim(v, 2),
    }
}

fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9, 2))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6, 2))
    } else if a >= 1e3 {
        format!("{}K", trim(v / 1e3, 1))
    } else {
        trim(v, 2)
    }
}

/// A latency in µs in the unit that suits it: 0.5 µs, 20 µs, 1.5 ms, 2 s.
pub fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6, 2))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3, 2))
    } else {
        format!("{} µs", trim(us, 2))
    }
}

/// `1/(1-p)` → "99.9%".
fn percentile_of_odds(x: f64) -> String {
    if x <= 1.0 {
        return "0%".to_string();
    }
    let p = 100.0 - 100.0 / x;
    let decimals = (x.log10().round() as i64 - 2).clamp(0, 9) as usize;
    format!("{p:.decimals$}%")
}

/// `v` with at most `decimals` decimals and no trailing zeros.
fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Escapes text for XML and HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: String,
    /// (x, y) in data units, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed stroke (to tell operation types apart within one colour).
    pub dashed: bool,
}

/// A chart of lines over two axes.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// Title above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The lines.
    pub series: Vec<Series>,
    /// Draw a dot at every point (for short series).
    pub markers: bool,
}

/// One colour of a grouped bar chart: a value per group, and optionally a second value per
/// group drawn as a tick across the bar (p50 on a p99 bar).
#[derive(Clone, Debug)]
pub struct BarSeries {
    /// Legend text.
    pub name: String,
    /// Fill colour.
    pub color: String,
    /// Bar height per group.
    pub values: Vec<f64>,
    /// A tick per group, if any.
    pub ticks: Vec<f64>,
}

/// Bars grouped along the x axis: one group per category, one bar per series.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// Category labels, left to right.
    pub groups: Vec<String>,
    /// Title of the horizontal axis.
    pub x_label: String,
    /// Vertical axis.
    pub y: Axis,
    /// The bars.
    pub series: Vec<BarSeries>,
    /// What the ticks mean, for the legend (empty: no ticks).
    pub tick_legend: String,
}

/// The plot area of a chart.
struct Frame {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
}

impl Frame {
    fn new(h: f64) -> Frame {
        Frame { x0: LEFT, y0: TOP, w: WIDTH - LEFT - RIGHT, h }
    }

    fn px(&self, scale: &Scale, v: f64) -> f64 {
        self.x0 + scale.fraction(v).clamp(-0.02, 1.02) * self.w
    }

    fn py(&self, scale: &Scale, v: f64) -> f64 {
        self.y0 + self.h - scale.fraction(v).clamp(-0.02, 1.02) * self.h
    }

    fn bottom(&self) -> f64 {
        self.y0 + self.h
    }
}

/// The legend below the plot of `f`, wrapped into rows: its SVG and how many rows it took.
fn legend_rows(f: &Frame, entries: &[(String, String, Swatch)]) -> (String, usize) {
    let mut out = String::new();
    let (mut x, mut row) = (LEFT, 0usize);
    let top = f.bottom() + BOTTOM;
    for (name, color, kind) in entries {
        let width = 30.0 + 6.6 * name.chars().count() as f64 + 16.0;
        if x + width > WIDTH - RIGHT && x > LEFT {
            x = LEFT;
            row += 1;
        }
        let y = top + row as f64 * LEGEND_ROW;
        let swatch = match kind {
            Swatch::Line { dashed } => format!(
                r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"{}/>"#,
                x + 22.0,
                if *dashed { r#" stroke-dasharray="6 4""# } else { "" }
            ),
            Swatch::Box => format!(
                r#"<rect x="{x:.1}" y="{:.1}" width="16" height="12" rx="2" fill="{color}"/>"#,
                y - 6.0
            ),
            Swatch::Tick => format!(
                r##"<rect x="{x:.1}" y="{:.1}" width="16" height="12" rx="2" fill="#c9ced6"/><line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#1d2330" stroke-width="2.5"/>"##,
                y - 6.0,
                x - 2.0,
                x + 18.0
            ),
        };
        let _ = write!(
            out,
            r#"{swatch}<text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
            x + 28.0,
            y + 4.0,
            esc(name)
        );
        x += width;
    }
    (out, if entries.is_empty() { 0 } else { row + 1 })
}

enum Swatch {
    Line { dashed: bool },
    Box,
    Tick,
}

fn open_svg(f: &Frame, title: &str, legend_rows: usize) -> String {
    let height = f.bottom() + BOTTOM + legend_rows as f64 * LEGEND_ROW + 8.0;
    format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}"><title>{t}</title><text x="{LEFT}" y="24" class="title">{t}</text>"#,
        t = esc(title)
    )
}

/// The y axis: grid lines, tick marks, labels and the rotated title.
fn y_axis(f: &Frame, axis: &Axis) -> String {
    let mut out = String::new();
    for (v, labelled) in axis.scale.ticks() {
        let y = f.py(&axis.scale, v);
        let (class, len) = if labelled { ("grid", 6.0) } else { ("grid minor", 3.0) };
        let _ = write!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="{class}"/><line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="tick"/>"#,
            f.x0,
            f.x0 + f.w,
            f.x0 - len,
            f.x0
        );
        if labelled {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" class="ticklabel" text-anchor="end">{}</text>"#,
                f.x0 - 9.0,
                y + 4.0,
                esc(&format_value(v, axis.format))
            );
        }
    }
    let cy = f.y0 + f.h / 2.0;
    let _ = write!(
        out,
        r#"<text x="16" y="{cy:.1}" class="axislabel" text-anchor="middle" transform="rotate(-90 16 {cy:.1})">{}</text>"#,
        esc(&axis.label)
    );
    out
}

/// The x axis of a line chart. Tick labels that would overlap are thinned to every second,
/// third... one.
fn x_axis(f: &Frame, axis: &Axis) -> String {
    let mut out = String::new();
    let ticks = axis.scale.ticks();
    let labels: Vec<(f64, String)> = ticks
        .iter()
        .filter(|t| t.1)
        .map(|&(v, _)| (f.px(&axis.scale, v), format_value(v, axis.format)))
        .collect();
    let stride = label_stride(&labels);
    for (v, labelled) in ticks {
        let x = f.px(&axis.scale, v);
        let (class, len) = if labelled { ("grid", 6.0) } else { ("grid minor", 3.0) };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" class="{class}"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" class="tick"/>"#,
            f.y0,
            f.bottom(),
            f.bottom(),
            f.bottom() + len
        );
    }
    for (x, text) in labels.iter().step_by(stride) {
        // A label that would run off the right edge ends at the edge instead.
        let (x, anchor) = if x + text_width(text) / 2.0 > WIDTH - 2.0 {
            (WIDTH - 2.0, "end")
        } else {
            (*x, "middle")
        };
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" class="ticklabel" text-anchor="{anchor}">{}</text>"#,
            f.bottom() + 20.0,
            esc(text)
        );
    }
    out.push_str(&x_title(f, &axis.label));
    out
}

/// Approximate width of tick label text, in SVG units (12 px sans-serif).
fn text_width(s: &str) -> f64 {
    7.0 * s.chars().count() as f64
}

/// The smallest step through `labels` (centre x, text) that keeps them 10 units apart.
fn label_stride(labels: &[(f64, String)]) -> usize {
    (1..labels.len().max(1))
        .find(|&k| {
            let kept: Vec<_> = labels.iter().step_by(k).collect();
            kept.windows(2).all(|w| {
                w[1].0 - w[0].0 >= (text_width(&w[0].1) + text_width(&w[1].1)) / 2.0 + 10.0
            })
        })
        .unwrap_or(1)
}

fn x_title(f: &Frame, label: &str) -> String {
    format!(
        r#"<text x="{:.1}" y="{:.1}" class="axislabel" text-anchor="middle">{}</text>"#,
        f.x0 + f.w / 2.0,
        f.bottom() + 40.0,
        esc(label)
    )
}

fn frame_box(f: &Frame) -> String {
    format!(
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" class="frame"/>"#,
        f.x0, f.y0, f.w, f.h
    )
}

/// Renders a line chart.
pub fn line_chart(c: &LineChart) -> String {
    let f = Frame::new(PLOT_HEIGHT);
    let entries: Vec<_> = c
        .series
        .iter()
        .map(|s| (s.name.clone(), s.color.clone(), Swatch::Line { dashed: s.dashed }))
        .collect();
    let (legend, rows) = legend_rows(&f, &entries);
    let mut out = open_svg(&f, &c.title, rows);
    out.push_str(&y_axis(&f, &c.y));
    out.push_str(&x_axis(&f, &c.x));
    for s in &c.series {
        out.push_str(&polyline(&f, c, s));
    }
    out.push_str(&frame_box(&f));
    out.push_str(&legend);
    out.push_str("</svg>");
    out
}

fn polyline(f: &Frame, c: &LineChart, s: &Series) -> String {
    let pts: Vec<(f64, f64)> =
        s.points.iter().map(|&(x, y)| (f.px(&c.x.scale, x), f.py(&c.y.scale, y))).collect();
    let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let dash = if s.dashed { r#" stroke-dasharray="7 4""# } else { "" };
    let mut out = format!(
        r#"<g><title>{}</title><polyline points="{}" fill="none" stroke="{}" stroke-width="2.2" stroke-linejoin="round" stroke-linecap="round"{dash}/>"#,
        esc(&s.name),
        coords.join(" "),
        s.color
    );
    if c.markers || pts.len() == 1 {
        for (x, y) in &pts {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.2" fill="{}" stroke="white" stroke-width="1"/>"#,
                s.color
            );
        }
    }
    out.push_str("</g>");
    out
}

/// Renders a grouped bar chart.
pub fn bar_chart(c: &BarChart) -> String {
    let f = Frame::new(BAR_PLOT_HEIGHT);
    let mut entries: Vec<_> =
        c.series.iter().map(|s| (s.name.clone(), s.color.clone(), Swatch::Box)).collect();
    if !c.tick_legend.is_empty() {
        entries.push((c.tick_legend.clone(), String::new(), Swatch::Tick));
    }
    let (legend, rows) = legend_rows(&f, &entries);
    let mut out = open_svg(&f, &c.title, rows);
    out.push_str(&y_axis(&f, &c.y));
    let groups = c.groups.len().max(1) as f64;
    let slot = f.w / groups;
    let bars = c.series.len().max(1) as f64;
    let bar_w = (slot * 0.8 / bars).min(48.0);
    let group_w = bar_w * bars;
    for (g, label) in c.groups.iter().enumerate() {
        let gx = f.x0 + slot * (g as f64 + 0.5);
        let _ = write!(
            out,
            r#"<line x1="{gx:.1}" y1="{:.1}" x2="{gx:.1}" y2="{:.1}" class="tick"/><text x="{gx:.1}" y="{:.1}" class="ticklabel" text-anchor="middle">{}</text>"#,
            f.bottom(),
            f.bottom() + 6.0,
            f.bottom() + 20.0,
            esc(label)
        );
        for (i, s) in c.series.iter().enumerate() {
            let x = gx - group_w / 2.0 + bar_w * i as f64;
            out.push_str(&bar(&f, c, s, g, x, bar_w));
        }
    }
    out.push_str(&x_title(&f, &c.x_label));
    out.push_str(&frame_box(&f));
    out.push_str(&legend);
    out.push_str("</svg>");
    out
}

fn bar(f: &Frame, c: &BarChart, s: &BarSeries, g: usize, x: f64, w: f64) -> String {
    let v = s.values.get(g).copied().unwrap_or(0.0);
    let base = match c.y.scale {
        Scale::Linear { min, .. } => f.py(&c.y.scale, min.max(0.0)),
        Scale::Log { .. } => f.bottom(),
    };
    let top = f.py(&c.y.scale, v).min(base);
    let inset = if w > 6.0 { 1.0 } else { 0.0 };
    let mut out = format!(
        r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
        x + inset,
        (w - 2.0 * inset).max(0.5),
        base - top,
        s.color,
        esc(&s.name),
        esc(&format_value(v, c.y.format))
    );
    if let Some(&t) = s.ticks.get(g) {
        let ty = f.py(&c.y.scale, t).min(base);
        let _ = write!(
            out,
            r##"<line x1="{:.1}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#1d2330" stroke-width="2.5"/>"##,
            x,
            x + w
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_scales() {
        assert_eq!(Scale::nice_linear(0.0, 930.0), Scale::Linear { min: 0.0, max: 1000.0 });
        assert_eq!(Scale::decades(3.0, 4200.0), Scale::Log { min: 1.0, max: 10_000.0 });
        let s = Scale::Log { min: 1.0, max: 1000.0 };
        assert!((s.fraction(10.0) - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_value(1.0, Format::Percentile), "0%");
        assert_eq!(format_value(10.0, Format::Percentile), "90%");
        assert_eq!(format_value(100.0, Format::Percentile), "99%");
        assert_eq!(format_value(10_000.0, Format::Percentile), "99.99%");
        assert_eq!(format_value(1500.0, Format::Micros), "1.5 ms");
        assert_eq!(format_value(0.5, Format::Micros), "0.5 µs");
        assert_eq!(format_value(250_000.0, Format::Si), "250K");
        assert_eq!(format_value(1_500_000.0, Format::Si), "1.5M");
    }

    #[test]
    fn crowded_labels_are_thinned() {
        let labels: Vec<(f64, String)> =
            (0..9).map(|i| (i as f64 * 60.0, format!("99.{}%", "9".repeat(i)))).collect();
        assert_eq!(label_stride(&labels[..3]), 1);
        assert_eq!(label_stride(&labels), 2);
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
