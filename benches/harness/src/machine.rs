//! What machine a run happened on: CPU, kernel, the data directory's filesystem and disk,
//! memory, load. Read from `/proc` and `/sys`; anything unreadable is reported as "unknown".

use std::path::Path;

use crate::model::Machine;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1/5/15-minute load averages.
pub fn load() -> [f64; 3] {
    let text = read("/proc/loadavg");
    let mut it = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [it.next().unwrap_or(0.0), it.next().unwrap_or(0.0), it.next().unwrap_or(0.0)]
}

/// Describes this machine, with `data_dir`'s filesystem and disk.
pub fn describe(data_dir: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let (filesystem, device) = mount_of(data_dir);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        filesystem,
        disk: disk_of(&device),
        memory_bytes,
        load_start: load(),
        load_end: [0.0; 3],
    }
}

/// The filesystem type and device of the mount holding `path` (longest matching mount point).
fn mount_of(path: &Path) -> (String, String) {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(usize, String, String)> = None;
    for line in read("/proc/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !canonical.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|(len, _, _)| f[1].len() > *len) {
            best = Some((f[1].len(), f[2].to_string(), f[0].to_string()));
        }
    }
    best.map_or(("unknown".into(), "unknown".into()), |(_, fs, dev)| (fs, dev))
}

/// `/dev/vda` → "vda (virtio, 512 B sectors, write back)" where `/sys` says so.
fn disk_of(device: &str) -> String {
    let Some(name) = device.strip_prefix("/dev/") else { return device.to_string() };
    let base: String = name.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    let base =
        if Path::new(&format!("/sys/block/{base}")).exists() { base } else { name.to_string() };
    let sys = |f: &str| read(&format!("/sys/block/{base}/{f}")).trim().to_string();
    let model = sys("device/model");
    let sector = sys("queue/logical_block_size");
    let cache = sys("queue/write_cache");
    let rotational = if sys("queue/rotational") == "1" { ", rotational" } else { "" };
    let mut parts = vec![base.clone()];
    if !model.is_empty() {
        parts.push(model);
    }
    if !sector.is_empty() {
        parts.push(format!("{sector} B sectors"));
    }
    if !cache.is_empty() {
        parts.push(format!("cache {cache}"));
    }
    format!("{}{rotational}", parts.join(", "))
}
