//! WAL write-path micro-benchmark (ADR 0002): what each candidate mechanism costs on this
//! machine, and what a put costs end to end through the engine in each `WalSyncMode`.
//!
//! `cargo bench --bench micro_wal` (or `-- --quick`). Files go under `$LDB_BENCH_DIR`
//! (default `target/bench-wal`, which must not be tmpfs). Part 1 times the raw mechanisms at
//! queue depth 1, as a single writer with nothing else to group with:
//!
//! - small appends that survive `kill -9` (`Normal`): `pwrite(2)` into the page cache, an
//!   io_uring buffered write, and a `memcpy` into a shared mapping of the segment;
//! - 4 KiB appends that survive power loss (`Sync`): `O_DIRECT | O_DSYNC` through io_uring,
//!   `O_DIRECT` write linked to `fdatasync`, buffered `pwrite` + `fdatasync`;
//! - the `fdatasync` of a mapping after small appends (what `Normal` pays per interval).
//!
//! Part 2 runs the engine: one caller's put latency per mode, and `Sync` puts from 4 callers
//! (group commit). Figures are hdrhistogram percentiles; compare them only within one run.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use common::{header, hist, report};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use lightning_db::{Database, LightningDbConfig, WalSyncMode};

const SEGMENT: usize = 64 << 20;

#[repr(align(4096))]
struct Sector([u8; 4096]);

/// A preallocated, zero-written segment file opened with `flags`.
fn segment(dir: &Path, name: &str, flags: i32) -> File {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    {
        let f = File::create(&path).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for i in 0..SEGMENT >> 20 {
            f.write_all_at(&zeros, (i << 20) as u64).unwrap();
        }
        f.sync_all().unwrap();
    }
    OpenOptions::new().read(true).write(true).custom_flags(flags).open(&path).unwrap()
}

fn ring_wait(ring: &mut IoUring, want: usize) {
    let mut got = 0;
    while got < want {
        ring.submit_and_wait(want - got).unwrap();
        for cqe in ring.completion() {
            assert!(cqe.result() >= 0, "I/O failed: {}", cqe.result());
            got += 1;
        }
    }
}

fn small_appends(dir: &Path, n: usize) {
    header("Small appends (128 B records) that survive kill -9, one at a time");
    let rec = [7u8; 128];
    let f = segment(dir, "pwrite.seg", 0);
    let mut h = hist();
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&rec, (i * 128) as u64).unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("pwrite(2), buffered", &h);

    let f = segment(dir, "uring.seg", 0);
    let mut ring = IoUring::new(64).unwrap();
    let mut h = hist();
    for i in 0..n.min(20_000) {
        let t = Instant::now();
        let sqe = opcode::Write::new(types::Fd(f.as_raw_fd()), rec.as_ptr(), 128)
            .offset((i * 128) as u64)
            .build();
        unsafe { ring.submission().push(&sqe).unwrap() };
        ring_wait(&mut ring, 1);
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("io_uring write, buffered (wait for completion)", &h);

    let f = segment(dir, "mmap.seg", 0);
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SEGMENT,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let base = map.cast::<u8>();
    let mut h = hist();
    for i in 0..n {
        let t = Instant::now();
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), base.add(i * 128), 128) };
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("memcpy into a MAP_SHARED segment (mapped WAL)", &h);
    let t = Instant::now();
    unsafe { libc::fdatasync(f.as_raw_fd()) };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{:<48} {ms:>9.2} ms for {} KiB of appends",
        "  fdatasync of the mapping afterwards",
        n * 128 / 1024
    );
    unsafe { libc::munmap(map, SEGMENT) };
}

fn durable_appends(dir: &Path, n: usize) {
    header("4 KiB appends durable on return (power-loss safe), one at a time");
    let mut blk = Box::new(Sector([1u8; 4096]));
    blk.0[0] = 3;
    for (name, flags, link) in [
        ("O_DIRECT|O_DSYNC write via io_uring", libc::O_DIRECT | libc::O_DSYNC, false),
        ("O_DIRECT write IO_LINK'd to fdatasync", libc::O_DIRECT, true),
        ("O_DSYNC buffered write via io_uring", libc::O_DSYNC, false),
    ] {
        let f = segment(dir, "durable.seg", flags);
        let mut ring = IoUring::new(64).unwrap();
        let mut h = hist();
        for i in 0..n {
            let t = Instant::now();
            let mut sqe = opcode::Write::new(types::Fd(f.as_raw_fd()), blk.0.as_ptr(), 4096)
                .offset((i * 4096) as u64)
                .build();
            if link {
                sqe = sqe.flags(squeue::Flags::IO_LINK);
            }
            unsafe { ring.submission().push(&sqe).unwrap() };
            if link {
                let sync = opcode::Fsync::new(types::Fd(f.as_raw_fd()))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                unsafe { ring.submission().push(&sync).unwrap() };
            }
            ring_wait(&mut ring, if link { 2 } else { 1 });
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        report(name, &h);
    }
    let f = segment(dir, "buffered.seg", 0);
    let mut h = hist();
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&blk.0, (i * 4096) as u64).unwrap();
        unsafe { libc::fdatasync(f.as_raw_fd()) };
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    report("pwrite(2) + fdatasync(2), buffered", &h);
}

fn config(mode: WalSyncMode, shards: usize) -> LightningDbConfig {
    LightningDbConfig { wal_sync_mode: mode, shards, ..Default::default() }
}

fn engine_single_caller(dir: &Path, n: usize) {
    header("Engine: one caller, put of 16 B key + 100 B value, 1 shard (caller unpinned)");
    let v = vec![9u8; 100];
    for mode in [WalSyncMode::Sync, WalSyncMode::Normal, WalSyncMode::Async] {
        let path = dir.join(format!("engine-{mode:?}"));
        let _ = std::fs::remove_dir_all(&path);
        let db = Database::open(&path, config(mode, 1)).unwrap();
        let ops = if mode == WalSyncMode::Sync { n / 10 } else { n };
        let mut h = hist();
        for i in 0..ops as u64 {
            let k = (u128::from(i) << 1).to_be_bytes();
            let t = Instant::now();
            db.put(k, &v).unwrap();
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        report(&format!("put, WalSyncMode::{mode:?}"), &h);
        db.close().unwrap();
        let _ = std::fs::remove_dir_all(&path);
    }
}

fn engine_group_commit(dir: &Path, n: usize) {
    header("Engine: Sync puts from 4 callers (group commit), 2 shards");
    let path = dir.join("engine-group");
    let _ = std::fs::remove_dir_all(&path);
    let db = Arc::new(Database::open(&path, config(WalSyncMode::Sync, 2)).unwrap());
    let per = n / 10 / 4;
    let start = Instant::now();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut h = hist();
                for i in 0..per as u64 {
                    let k = (u128::from(t * 1_000_000 + i) << 1).to_be_bytes();
                    let s = Instant::now();
                    db.put(k, [5u8; 100]).unwrap();
                    h.record(s.elapsed().as_nanos() as u64).unwrap();
                }
                h
            })
        })
        .collect();
    let mut h = hist();
    for t in threads {
        h.add(t.join().unwrap()).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    report("put latency, 4 callers", &h);
    println!("{:<48} {:>9.0} puts/s in total", "  throughput", (per * 4) as f64 / secs);
    Arc::try_unwrap(db).unwrap().close().unwrap();
    let _ = std::fs::remove_dir_all(&path);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000 } else { 20_000 };
    let dir =
        PathBuf::from(std::env::var("LDB_BENCH_DIR").unwrap_or_else(|_| "target/bench-wal".into()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("micro_wal: n={n}, dir={}, {}", dir.display(), machine());
    small_appends(&dir, n * 5);
    durable_appends(&dir, n / 4);
    engine_single_caller(&dir, n * 5);
    engine_group_commit(&dir, n * 5);
    let _ = std::fs::remove_dir_all(&dir);
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} CPUs, kernel {}, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}
