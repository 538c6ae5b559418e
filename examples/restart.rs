//! Restart cost: fills a database, dies (`kill -9`) or closes, then times the reopen.
//!
//! ```sh
//! cargo build --release --example restart
//! target/release/examples/restart fill   DIR KEYS MODE [kill|close]   # MODE: sync|normal|async
//! target/release/examples/restart reopen DIR
//! ```
//!
//! `fill` writes `KEYS` keys of 16 bytes with 100-byte values from 4 threads (the `Sync` mode
//! needs concurrent writers to fill groups) and then either kills itself with `SIGKILL`, so
//! nothing is flushed or closed, or calls `close()` and prints how long it took. `reopen` opens
//! the directory, reads one key, and prints how long the open took, the records replayed and the
//! peak resident memory of the process. `scripts/restart.sh` runs both; the figures are in
//! `docs/BENCHMARKS.md`.
//!
//! For memory diagnosis, `fill` reads: `RESTART_THREADS` (writers, default 4),
//! `RESTART_MEMTABLE_MB` (`memtable_bytes`), `RESTART_CACHE_MB` (`cache_size`), and
//! `RESTART_CURVE_SECS`: every that many seconds, print a `curve` line with the keys written
//! so far, `RssAnon`, `RssFile` and the memtables and cache the statistics count
//! (`scripts/memory_curve.sh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lightning_db::{Database, LightningDbConfig, WalSyncMode};

/// Writer threads of `fill` (RESTART_THREADS overrides it, for memory diagnosis).
const THREADS: u64 = 4;

fn threads() -> u64 {
    std::env::var("RESTART_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(THREADS).max(1)
}

fn key(i: u64) -> [u8; 16] {
    (u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 1).to_be_bytes()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `RssAnon` and `RssFile` now (MiB): heap versus mapped files (the WAL segments in `Normal`).
fn rss_split_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn usage() -> ! {
    eprintln!("usage: restart fill DIR KEYS sync|normal|async [kill|close] | restart reopen DIR");
    std::process::exit(2)
}

fn main() -> lightning_db::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fill") if args.len() >= 4 => {
            let keys: u64 = args[2].parse().unwrap_or_else(|_| usage());
            let mode = match args[3].as_str() {
                "sync" => WalSyncMode::Sync,
                "normal" => WalSyncMode::Normal,
                "async" => WalSyncMode::Async,
                _ => usage(),
            };
            let kill = args.get(4).is_none_or(|a| a == "kill");
            fill(&args[1], keys, mode, kill)
        }
        Some("reopen") if args.len() == 2 => reopen(&args[1]),
        _ => usage(),
    }
}

fn fill(dir: &str, keys: u64, mode: WalSyncMode, kill: bool) -> lightning_db::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    // RESTART_MEMTABLE_MB sets memtable_bytes (0: never flush), for memory diagnosis.
    let memtable_bytes = std::env::var("RESTART_MEMTABLE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(LightningDbConfig::default().memtable_bytes, |mb| mb << 20);
    let cache_size = std::env::var("RESTART_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(LightningDbConfig::default().cache_size, |mb| mb << 20);
    let curve = std::env::var("RESTART_CURVE_SECS").ok().and_then(|v| v.parse::<f64>().ok());
    let config = LightningDbConfig {
        wal_sync_mode: mode,
        memtable_bytes,
        cache_size,
        ..LightningDbConfig::default()
    };
    let db = Database::open(dir, config)?;
    let started = Instant::now();
    let threads = threads();
    let written = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (db, written, done) = (&db, &written, &done);
        if let Some(every) = curve.filter(|e| *e > 0.0) {
            s.spawn(move || {
                println!("curve secs keys rss_anon_mib rss_file_mib memtables_mib cache_mib");
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs_f64(every));
                    let (anon, file) = rss_split_mib();
                    let (mem, cache) = db.stats().map_or((0, 0), |st| {
                        let t = st.total();
                        (t.memtable_bytes, t.cache_bytes)
                    });
                    println!(
                        "curve {:.1} {} {anon:.0} {file:.0} {:.0} {:.0}",
                        started.elapsed().as_secs_f64(),
                        written.load(Ordering::Relaxed),
                        mem as f64 / (1 << 20) as f64,
                        cache as f64 / (1 << 20) as f64,
                    );
                }
            });
        }
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let value = [t as u8; 100];
                    (t..keys).step_by(threads as usize).try_for_each(|i| {
                        db.put(key(i), value)?;
                        written.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    })
                })
            })
            .collect();
        let result = workers.into_iter().try_for_each(|w| w.join().unwrap_or(Ok(())));
        done.store(true, Ordering::Relaxed);
        result
    })?;
    let took = started.elapsed();
    let stats = db.stats()?.total();
    println!(
        "filled {keys} keys ({mode:?}) in {:.2} s, peak RSS {:.0} MiB; {} flushes ({:.2} s, \
         heap trims {:.3} s), {} WAL segments removed, {} write stalls, memtables {:.0} MiB, \
         cache {:.0} MiB",
        took.as_secs_f64(),
        peak_rss_mib(),
        stats.flush.flushes,
        stats.flush.flush_time.as_secs_f64(),
        lightning_db::heap_trim_time().as_secs_f64(),
        stats.flush.segments_removed,
        stats.flush.write_stalls,
        stats.memtable_bytes as f64 / (1 << 20) as f64,
        stats.cache_bytes as f64 / (1 << 20) as f64,
    );
    let (anon, file) = rss_split_mib();
    println!("RSS now: {anon:.0} MiB heap, {file:.0} MiB mapped files");
    if std::env::var_os("RESTART_MALLOC_TRIM").is_some() {
        // Diagnosis: how much of the heap is memory freed but kept by the allocator.
        // Safety: malloc_trim only releases free memory at the allocator's discretion.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
        let (anon, _) = rss_split_mib();
        println!("after malloc_trim: {anon:.0} MiB heap");
    }
    if kill {
        // Everything acknowledged is in the log; nothing is closed or flushed.
        // Safety: kill(2) on this process, with a signal that ends it.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    let started = Instant::now();
    db.close()?;
    println!("close took {:.3} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn reopen(dir: &str) -> lightning_db::Result<()> {
    let config = LightningDbConfig { create_if_missing: false, ..LightningDbConfig::default() };
    let started = Instant::now();
    let db = Database::open(dir, config)?;
    let took = started.elapsed();
    let present = db.get(key(0))?.is_some();
    let replayed: u64 = db.start_reports().iter().map(|r| r.replayed_records).sum();
    println!(
        "reopen took {:.3} s: {replayed} records replayed, key 0 present: {present}, peak RSS \
         {:.0} MiB",
        took.as_secs_f64(),
        peak_rss_mib()
    );
    db.close()
}
