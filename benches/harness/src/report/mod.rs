//! Reports generated from a recorded run: the terminal table, the JSON summary, `.hgrm`
//! percentile files, interval logs, and the self-contained HTML page.

pub mod charts;
pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod svg;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::engine::{err, Result};
use crate::model::{CaseReport, RunReport};

/// Writes every report file of `run` into `dir` and returns their paths: `report.json` (the
/// whole run, re-renderable), `report.html`, one `.hgrm` per case and operation type, and one
/// `.hlog` interval log per case.
pub fn write_all(run: &RunReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let json = dir.join("report.json");
    write_file(&json, &serde_json::to_string_pretty(run).map_err(err)?)?;
    let page = dir.join("report.html");
    write_file(&page, &html::render(&[(String::new(), run)]))?;
    let stems = case_stems(&run.cases);
    let mut paths = vec![json, page];
    paths.extend(hgrm::write(run, &stems, dir)?);
    paths.extend(hlog::write(run, &stems, dir)?);
    Ok(paths)
}

/// Renders several recorded runs (`report.json` files) into one comparison page in `dir`:
/// `compare.html`, every run's cases on the same charts, each run labelled by its start time
/// (or its file's directory when two runs started in the same second), and `compare.json`,
/// the runs as loaded.
pub fn compare(runs: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut loaded = Vec::new();
    for path in runs {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let run: RunReport =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        loaded.push(run);
    }
    let labels = run_labels(runs, &loaded);
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let json = dir.join("compare.json");
    write_file(&json, &serde_json::to_string_pretty(&loaded).map_err(err)?)?;
    let labelled: Vec<(String, &RunReport)> = labels.into_iter().zip(&loaded).collect();
    let page = dir.join("compare.html");
    write_file(&page, &html::render(&labelled))?;
    Ok(vec![json, page])
}

/// A label per run: its start time, or where it was loaded from if that is ambiguous.
fn run_labels(paths: &[PathBuf], runs: &[RunReport]) -> Vec<String> {
    runs.iter()
        .zip(paths)
        .map(|(run, path)| {
            let twins = runs.iter().filter(|r| r.started_utc == run.started_utc).count();
            if twins == 1 && !run.started_utc.is_empty() {
                run.started_utc.clone()
            } else {
                let parent = path.parent().and_then(Path::file_name);
                parent.map_or_else(|| path.display().to_string(), |p| p.to_string_lossy().into())
            }
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// File name stems of the cases, `<engine>-<workload>-t<threads>-s<shards>-<mode>`, made
/// unique with `-2`, `-3`... when a configuration ran more than once.
pub fn case_stems(cases: &[CaseReport]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(cases.len());
    for c in cases {
        let base = file_safe(&format!(
            "{}-{}-t{}-s{}-{}",
            c.engine, c.workload, c.config.threads, c.config.shards, c.config.mode
        ));
        let mut stem = base.clone();
        let mut n = 1;
        while out.contains(&stem) {
            n += 1;
            stem = format!("{base}-{n}");
        }
        out.push(stem);
    }
    out
}

/// `s` with everything but ASCII letters, digits, `-`, `_` and `.` replaced by `_`.
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect()
}

/// Parses the `YYYY-MM-DDTHH:MM:SSZ` times [`utc_now`] writes.
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, m as u32, d as u32)).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss))
}

/// The current time, UTC, RFC 3339 (seconds).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01: the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        for days in [0, 59, 60, 365, 10_957, 20_788, 47_482] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn utc_times_parse_back() {
        let t = parse_utc("2026-12-01T21:34:31Z").unwrap();
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 20_788 * 86_400 + 21 * 3600 + 34 * 60 + 31);
        assert!(parse_utc(&utc_now()).is_some());
        assert!(parse_utc("yesterday").is_none());
    }

    #[test]
    fn stems_are_unique_and_file_safe() {
        assert_eq!(file_safe("ycsb a/b"), "ycsb_a_b");
    }
}
