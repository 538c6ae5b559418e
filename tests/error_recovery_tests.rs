//! Recovery from crashes and damaged files.
//!
//! The crash test re-executes this test binary as a child that writes from several threads and
//! prints every acknowledged write; the parent `kill -9`s it at a random moment, reopens the
//! database and checks the durability promise of the mode: in `Sync` and `Normal` every
//! acknowledged write is there (with that value or a newer one), and in every mode no value is
//! torn. The other tests damage WAL files on purpose: a torn tail is cut and the database
//! keeps working; damage followed by valid records is `Error::Corruption`, never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{collect, key, small_config, value, MODES};
use lightning_db::{Database, Error, WalSyncMode, WriteBatch};

const CHILD_DIR: &str = "LDB_CRASH_CHILD_DIR";
const CHILD_MODE: &str = "LDB_CRASH_CHILD_MODE";
const WRITERS: u64 = 3;
const KEYS_PER_WRITER: u64 = 150;

fn mode_name(mode: WalSyncMode) -> &'static str {
    match mode {
        WalSyncMode::Sync => "sync",
        WalSyncMode::Normal => "normal",
        WalSyncMode::Async => "async",
    }
}

fn parse_mode(s: &str) -> WalSyncMode {
    match s {
        "sync" => WalSyncMode::Sync,
        "async" => WalSyncMode::Async,
        _ => WalSyncMode::Normal,
    }
}

fn crash_key(writer: u64, k: u64) -> Vec<u8> {
    format!("w{writer}/{k:04}").into_bytes()
}

/// A value that names its key and version and checks itself: torn values fail `check_value`.
fn crash_value(writer: u64, k: u64, version: u64) -> Vec<u8> {
    let body = format!("{writer}:{k}:{version}:{}", "p".repeat((version % 200) as usize));
    let crc = crc32(body.as_bytes());
    format!("{body}#{crc:08x}").into_bytes()
}

fn crc32(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| (h ^ u32::from(x)).wrapping_mul(0x0100_0193))
}

/// Returns the version stored in a well-formed value for (writer, k); panics on a torn one.
fn check_value(writer: u64, k: u64, v: &[u8]) -> u64 {
    let s = std::str::from_utf8(v)
        .unwrap_or_else(|_| panic!("w{writer}/{k}: value is not UTF-8: torn"));
    let (body, crc) =
        s.rsplit_once('#').unwrap_or_else(|| panic!("w{writer}/{k}: torn value {s:?}"));
    assert_eq!(format!("{:08x}", crc32(body.as_bytes())), crc, "w{writer}/{k}: torn value {s:?}");
    let mut parts = body.split(':');
    assert_eq!(parts.next(), Some(writer.to_string().as_str()), "value of another key");
    assert_eq!(parts.next(), Some(k.to_string().as_str()), "value of another key");
    parts.next().unwrap().parse().unwrap()
}

/// The child: writes forever from `WRITERS` threads, printing `A writer k version` per ack.
fn child_main(dir: &Path, mode: WalSyncMode) -> ! {
    let db = std::sync::Arc::new(Database::open(dir, small_config(mode)).unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, out) = (db.clone(), out.clone());
            std::thread::spawn(move || {
                let mut version = 1u64;
                let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (w + 1);
                loop {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let acked: Vec<(u64, u64)> = if rng.is_multiple_of(4) {
                        let mut b = WriteBatch::new();
                        let ks: Vec<u64> =
                            (0..4).map(|i| (rng >> (8 * i)) % KEYS_PER_WRITER).collect();
                        for &k in &ks {
                            b.put(crash_key(w, k), crash_value(w, k, version)).unwrap();
                        }
                        db.write_batch(&b).unwrap();
                        ks.into_iter().map(|k| (k, version)).collect()
                    } else {
                        let k = rng % KEYS_PER_WRITER;
                        db.put(crash_key(w, k), crash_value(w, k, version)).unwrap();
                        vec![(k, version)]
                    };
                    let mut o = out.lock().unwrap();
                    for (k, v) in acked {
                        writeln!(o, "A {w} {k} {v}").unwrap();
                    }
                    o.flush().unwrap();
                    version += 1;
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
fn crash_child() {
    if let (Ok(dir), Ok(mode)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_MODE)) {
        child_main(Path::new(&dir), parse_mode(&mode));
    }
}

/// Runs one child until a random moment, kills it with SIGKILL, returns the acked versions.
fn run_and_kill(dir: &Path, mode: WalSyncMode, kill_after: Duration) -> HashMap<(u64, u64), u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_MODE, mode_name(mode))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() != 4 || f[0] != "A" {
                continue; // test harness chatter, or the line the kill cut short
            }
            let (Ok(w), Ok(k), Ok(v)) = (f[1].parse(), f[2].parse(), f[3].parse()) else {
                continue;
            };
            let e = acked.entry((w, k)).or_insert(0u64);
            *e = (*e).max(v);
        }
        acked
    });
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must die by the signal");
    reader.join().unwrap()
}

fn verify_after_crash(dir: &Path, mode: WalSyncMode, acked: &HashMap<(u64, u64), u64>) -> usize {
    let db = Database::open(dir, small_config(mode)).unwrap();
    let promised = mode != WalSyncMode::Async;
    for (&(w, k), &version) in acked {
        match db.get(crash_key(w, k)).unwrap() {
            Some(v) => {
                let found = check_value(w, k, &v);
                if promised {
                    assert!(
                        found >= version,
                        "{mode:?}: w{w}/{k} acked v{version}, found older v{found}"
                    );
                }
            }
            None if promised => panic!("{mode:?}: acknowledged key w{w}/{k} (v{version}) lost"),
            None => {}
        }
    }
    let all = collect(db.scan(None, None).unwrap());
    for (key, v) in &all {
        let s = std::str::from_utf8(key).unwrap();
        let (w, k) = s[1..].split_once('/').unwrap();
        check_value(w.parse().unwrap(), k.parse().unwrap(), v);
    }
    // The recovered database keeps working: write, close, reopen.
    db.put(b"after-crash", b"ok").unwrap();
    db.close().unwrap();
    let db = Database::open(dir, small_config(mode)).unwrap();
    assert_eq!(db.get(b"after-crash").unwrap(), Some(b"ok".to_vec()));
    all.len()
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    for mode in MODES {
        for round in 0..3 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let kill_after = Duration::from_millis(150 + (seed >> 33) % 600);
            let dir = tempfile::tempdir().unwrap();
            let acked = run_and_kill(dir.path(), mode, kill_after);
            assert!(
                !acked.is_empty(),
                "{mode:?} round {round}: the child acknowledged nothing in {kill_after:?}"
            );
            let found = verify_after_crash(dir.path(), mode, &acked);
            eprintln!("{mode:?} round {round}: killed after {kill_after:?}, {} keys acked, {found} recovered", acked.len());
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in std::fs::read_dir(&shard).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "log") {
                    all.push(f);
                }
            }
        }
    }
    all.sort();
    all
}

/// Offset just past the last non-zero byte of a segment (where its records end).
fn used_end(path: &Path) -> usize {
    let b = std::fs::read(path).unwrap();
    b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1)
}

fn write_at(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset as u64)
        .unwrap();
}

fn one_shard(mode: WalSyncMode) -> lightning_db::LightningDbConfig {
    lightning_db::LightningDbConfig { shards: 1, ..small_config(mode) }
}

#[test]
fn a_torn_tail_is_cut_and_the_database_keeps_working() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path(), one_shard(mode)).unwrap();
            for i in 0..100 {
                db.put(key(i), value(i, 0)).unwrap();
            }
            db.close().unwrap();
        }
        // A half-written record after the last one: a header promising more bytes than exist.
        let seg = segments(dir.path()).pop().unwrap();
        let end = used_end(&seg);
        write_at(&seg, end, &[0xde, 0xad, 0xbe, 0xef, 0x40, 0, 0, 0, 101, 0, 0, 0]);
        {
            let db = Database::open(dir.path(), one_shard(mode)).unwrap();
            for i in 0..100 {
                assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 0)), "{mode:?}");
            }
            db.put(b"after", b"torn tail").unwrap();
            db.close().unwrap();
        }
        let db = Database::open(dir.path(), one_shard(mode)).unwrap();
        assert_eq!(db.get(b"after").unwrap(), Some(b"torn tail".to_vec()), "{mode:?}");
        assert_eq!(collect(db.scan(None, None).unwrap()).len(), 101);
    }
}

#[test]
fn damage_before_valid_records_is_corruption_with_file_and_offset() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path(), one_shard(mode)).unwrap();
            for i in 0..50 {
                db.put(key(i), value(i, 0)).unwrap();
            }
            db.close().unwrap();
        }
        let seg = segments(dir.path()).pop().unwrap();
        // Flip a byte inside the first record (records start after the 4 KiB header sector).
        let mut b = std::fs::read(&seg).unwrap();
        b[4096 + 30] ^= 0x01;
        std::fs::write(&seg, &b).unwrap();
        match Database::open(dir.path(), one_shard(mode)) {
            Err(Error::Corruption { file, offset, what }) => {
                assert_eq!(file, seg, "{mode:?}");
                assert_eq!(offset, 4096, "{mode:?}");
                assert!(what.contains("LSN 1"), "{mode:?}: {what}");
            }
            other => panic!("{mode:?}: expected Corruption, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path(), one_shard(WalSyncMode::Normal)).unwrap();
        for i in 0..40 {
            db.put(key(i), vec![i as u8; 100 * 1024]).unwrap();
        }
        db.close().unwrap();
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "expected several segments, got {}", segs.len());
    std::fs::remove_file(&segs[1]).unwrap();
    match Database::open(dir.path(), one_shard(WalSyncMode::Normal)) {
        Err(Error::Corruption { file, what, .. }) => {
            assert_eq!(file, segs[2]);
            assert!(what.contains("missing"), "{what}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn an_interrupted_segment_creation_is_removed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path(), one_shard(WalSyncMode::Normal)).unwrap();
        db.put(b"k", b"v").unwrap();
        db.close().unwrap();
    }
    // A crash while creating the next segment leaves it under its temporary name, where no
    // record was ever written.
    let seg = segments(dir.path()).pop().unwrap();
    let temp = seg.with_file_name("wal-0000000000000002.log.tmp");
    std::fs::write(&temp, vec![0u8; 8192]).unwrap();
    let db = Database::open(dir.path(), one_shard(WalSyncMode::Normal)).unwrap();
    assert!(!temp.exists(), "the temporary file is removed");
    assert_eq!(db.stats().unwrap().total().recovery.temp_files_removed, 1);
    assert_eq!(db.get(b"k").unwrap(), Some(b"v".to_vec()));
    db.put(b"k2", b"v2").unwrap();
    db.close().unwrap();
    let db = Database::open(dir.path(), one_shard(WalSyncMode::Normal)).unwrap();
    assert_eq!(db.get(b"k2").unwrap(), Some(b"v2".to_vec()));
    let recovery = db.stats().unwrap().total().recovery;
    assert_eq!(recovery.records_replayed, 2);
    assert_eq!(recovery.temp_files_removed + recovery.tails_cut, 0, "a clean reopen");
}

#[test]
fn a_flipped_byte_in_the_newest_segments_header_is_corruption_and_deletes_nothing() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path(), one_shard(mode)).unwrap();
            for i in 0..20 {
                db.put(key(i), value(i, 0)).unwrap();
            }
            db.close().unwrap();
        }
        let seg = segments(dir.path()).pop().unwrap();
        let before = std::fs::read(&seg).unwrap();
        let mut b = before.clone();
        b[20] ^= 0x01; // inside the sequence number, under the header checksum
        std::fs::write(&seg, &b).unwrap();
        match Database::open(dir.path(), one_shard(mode)) {
            Err(Error::Corruption { file, offset, what }) => {
                assert_eq!((file, offset), (seg.clone(), 0), "{mode:?}");
                assert!(what.contains("checksum"), "{mode:?}: {what}");
            }
            other => panic!("{mode:?}: expected Corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(&seg).unwrap(), b, "{mode:?}: recovery changed nothing");
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_of_a_closed_database_is_corruption() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path(), one_shard(mode)).unwrap();
            for i in 0..20 {
                db.put(key(i), value(i, 0)).unwrap();
            }
            db.sync().unwrap();
            db.close().unwrap();
        }
        // The last WRITE record: the close wrote a durable claim after it, so it is covered.
        let seg = segments(dir.path()).pop().unwrap();
        let mut b = std::fs::read(&seg).unwrap();
        let last = b.windows(9).rposition(|w| w == b"key000000").expect("the last key's bytes");
        b[last] ^= 0x01;
        std::fs::write(&seg, &b).unwrap();
        match Database::open(dir.path(), one_shard(mode)) {
            Err(Error::Corruption { file, what, .. }) => {
                assert_eq!(file, seg, "{mode:?}");
                assert!(what.contains("LSN 20"), "{mode:?}: {what}");
            }
            other => panic!("{mode:?}: expected Corruption, not a silent cut; got {other:?}"),
        }
    }
}
