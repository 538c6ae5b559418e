//! Hostile environment: the directory lock held by another process. A re-executed child (role
//! `lock_holder`) opens the database and holds it; the parent's open must give `Error::Locked`
//! naming the `LOCK` file, and once the child closes, the parent opens the directory and sees
//! the child's write. See `common::hostile` for the re-exec machinery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Instant;

use common::hostile::{
    child_command, child_role, marker, read_all_in_thread, wait_with_timeout, CHILD_TIMEOUT,
    DIR_ENV,
};
use common::small_config;
use lightning_db::{Database, Error, WalSyncMode};

fn child_lock_holder() {
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).unwrap());
    let db = Database::open(&dir, small_config(WalSyncMode::Normal)).unwrap();
    db.put(b"written-by-child", b"yes").unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    // Hold the lock until the parent closes our stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    db.close().unwrap();
    println!("{}", marker("lock_holder"));
}

#[test]
fn lock_held_by_another_process_is_locked_error() {
    if child_role().as_deref() == Some("lock_holder") {
        return child_lock_holder();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command("lock_held_by_another_process_is_locked_error", "lock_holder")
        .env(DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = read_all_in_thread(child.stderr.take().unwrap());
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // libtest may have started the line ("test … ... ").
            Ok(line) if line.ends_with("LOCKED") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "child never printed LOCKED\n--- stdout\n{}\n--- stderr\n{}",
                    seen.join("\n"),
                    stderr.join().unwrap()
                );
            }
        }
    }

    let err = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap_err();
    match &err {
        Error::Locked { path } => assert_eq!(path, &dir.path().join("LOCK")),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("already open"), "{err}");

    drop(child.stdin.take());
    let status = wait_with_timeout(&mut child, CHILD_TIMEOUT);
    reader.join().unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        status.success() && rest.iter().any(|l| l.contains(&marker("lock_holder"))),
        "child failed ({status})\n--- stdout\n{}\n--- stderr\n{}",
        seen.iter().chain(&rest).cloned().collect::<Vec<_>>().join("\n"),
        stderr.join().unwrap()
    );

    let db = Database::open(dir.path(), small_config(WalSyncMode::Normal)).unwrap();
    assert_eq!(db.get(b"written-by-child").unwrap(), Some(b"yes".to_vec()));
    db.put(b"parent", b"now owns it").unwrap();
}
