//! Cross-shard commits and flushes across a real `kill -9`: a re-executed child moves money
//! between accounts on every shard with transactions from several threads, printing each
//! acknowledged counter, while another thread overwrites filler keys with rising versions
//! (the memtables are small, so shards freeze and flush into their trees all along); the
//! parent kills it at a random moment, reopens, and checks that the total is unchanged (no
//! transfer half-applied), that every acknowledged counter survived, and that every filler key
//! holds at least its last acknowledged version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::small_config;
use lightning_db::{Database, LightningDbConfig, WalSyncMode, WriteBatch};

const CHILD_DIR: &str = "LDB_TXN_CHILD_DIR";
const CHILD_MODE: &str = "LDB_TXN_CHILD_MODE";
const ACCOUNTS: u64 = 32;
const START: u64 = 1_000;
const THREADS: u64 = 3;
/// Acknowledgements of filler key `i` are kept under `FILLER_SLOT + i`.
const FILLER_SLOT: u64 = 1 << 32;

const FILLER_KEYS: u64 = 2_000;

fn config(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig { shards: 4, memtable_bytes: 64 * 1024, ..small_config(mode) }
}

fn filler(i: u64) -> Vec<u8> {
    format!("filler{i:05}").into_bytes()
}

/// A filler value: its version, then padding.
fn filler_value(version: u64) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    v.resize(8 + (version % 200) as usize, 0xab);
    v
}

fn filler_version(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| u64::from_le_bytes(v[..8].try_into().unwrap()))
}

fn account(i: u64) -> Vec<u8> {
    format!("acct{i:03}").into_bytes()
}

fn counter(t: u64) -> Vec<u8> {
    format!("counter{t}").into_bytes()
}

fn number(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
}

fn child_main(dir: &Path, mode: WalSyncMode) -> ! {
    let db = std::sync::Arc::new(Database::open(dir, config(mode)).unwrap());
    if db.get(account(0)).unwrap().is_none() {
        let mut batch = WriteBatch::new();
        for i in 0..ACCOUNTS {
            batch.put(account(i), START.to_le_bytes()).unwrap();
        }
        db.write_batch(&batch).unwrap();
    }
    println!("READY");
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, out) = (db.clone(), out.clone());
            std::thread::spawn(move || {
                let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (t + 1);
                loop {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let (f, g) = (rng % ACCOUNTS, (rng >> 20) % ACCOUNTS);
                    if f == g {
                        continue;
                    }
                    // The transfer and this thread's counter commit together.
                    let acked = db.transaction(|tx| {
                        let (x, y) = (number(tx.get(account(f))?), number(tx.get(account(g))?));
                        let amount = x.min(rng % 20);
                        tx.put(account(f), (x - amount).to_le_bytes())?;
                        tx.put(account(g), (y + amount).to_le_bytes())?;
                        let n = number(tx.get(counter(t))?) + 1;
                        tx.put(counter(t), n.to_le_bytes())?;
                        Ok(n)
                    });
                    if let Ok(n) = acked {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "A {t} {n}").unwrap();
                        o.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    let writer = {
        let (db, out) = (db.clone(), out.clone());
        std::thread::spawn(move || {
            // Rising versions, every key in turn, above what a previous round left (they
            // start from the clock, in µs).
            let mut version = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            loop {
                version += 1;
                let i = version % FILLER_KEYS;
                if db.put(filler(i), filler_value(version)).is_ok() {
                    let mut o = out.lock().unwrap();
                    writeln!(o, "F {i} {version}").unwrap();
                    o.flush().unwrap();
                }
            }
        })
    };
    for t in threads {
        let _ = t.join();
    }
    let _ = writer.join();
    std::process::exit(1)
}

/// Entry point of the re-executed child; a no-op in a normal test run.
#[test]
fn txn_crash_child() {
    if let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_MODE)) {
        let mode = if mode == "sync" { WalSyncMode::Sync } else { WalSyncMode::Normal };
        child_main(Path::new(&dir), mode);
    }
}

fn run_and_kill(dir: &Path, mode: WalSyncMode, kill_after: Duration) -> HashMap<u64, u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "txn_crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, if mode == WalSyncMode::Sync { "sync" } else { "normal" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("READY") {
                let _ = ready_tx.send(());
            }
            let f: Vec<&str> = line.split(' ').collect();
            let (slot, n) = match f.as_slice() {
                ["A", t, n] => (t.parse::<u64>().ok(), n.parse::<u64>().ok()),
                ["F", i, n] => (i.parse::<u64>().ok().map(|i| FILLER_SLOT + i), n.parse().ok()),
                _ => (None, None),
            };
            if let (Some(slot), Some(n)) = (slot, n) {
                let e = acked.entry(slot).or_insert(0u64);
                *e = (*e).max(n);
            }
        }
        acked
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill(); // never leave the child running
        panic!("the child did not start writing within 30 s");
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success(), "the child must die by the signal");
    reader.join().unwrap()
}

#[test]
fn kill_9_never_tears_a_cross_shard_transaction() {
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    for mode in [WalSyncMode::Normal, WalSyncMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let kill_after = Duration::from_millis(100 + (seed >> 33) % 500);
            let acked = run_and_kill(dir.path(), mode, kill_after);
            let db = Database::open(dir.path(), config(mode)).unwrap();
            let total: u64 = (0..ACCOUNTS).map(|i| number(db.get(account(i)).unwrap())).sum();
            assert_eq!(total, ACCOUNTS * START, "{mode:?} round {round}: a transfer was torn");
            for (&slot, &n) in &acked {
                if slot >= FILLER_SLOT {
                    let i = slot - FILLER_SLOT;
                    let found = filler_version(db.get(filler(i)).unwrap());
                    assert!(
                        found >= n,
                        "{mode:?} round {round}: filler {i} acked {n}, found {found}"
                    );
                    continue;
                }
                let found = number(db.get(counter(slot)).unwrap());
                assert!(
                    found >= n,
                    "{mode:?} round {round}: thread {slot} acked {n}, found {found}"
                );
            }
            let tree_keys = db.stats().unwrap().total().flush.tree_keys;
            db.verify().unwrap();
            eprintln!(
                "{mode:?} round {round}: killed after {kill_after:?}, {} transfers and {} filler \
                 writes acked, {tree_keys} keys in the trees",
                acked.iter().filter(|(s, _)| **s < FILLER_SLOT).map(|(_, n)| n).sum::<u64>(),
                acked.iter().filter(|(s, _)| **s >= FILLER_SLOT).count()
            );
            db.close().unwrap();
        }
    }
}
