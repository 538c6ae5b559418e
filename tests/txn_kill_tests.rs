//! Cross-shard commits across a real `kill -9`: a re-executed child moves money between
//! accounts on every shard with transactions and batches from several threads, printing each
//! acknowledged counter; the parent kills it at a random moment, reopens, and checks that the
//! total is unchanged (no transfer half-applied) and that every acknowledged counter survived.
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

fn config(mode: WalSyncMode) -> LightningDbConfig {
    LightningDbConfig { shards: 4, ..small_config(mode) }
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
    for t in threads {
        let _ = t.join();
    }
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
            if let ["A", t, n] = f.as_slice() {
                if let (Ok(t), Ok(n)) = (t.parse(), n.parse()) {
                    let e = acked.entry(t).or_insert(0u64);
                    *e = (*e).max(n);
                }
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
            for (&t, &n) in &acked {
                let found = number(db.get(counter(t)).unwrap());
                assert!(found >= n, "{mode:?} round {round}: thread {t} acked {n}, found {found}");
            }
            eprintln!(
                "{mode:?} round {round}: killed after {kill_after:?}, {} transfers acked",
                acked.values().sum::<u64>()
            );
            db.close().unwrap();
        }
    }
}
