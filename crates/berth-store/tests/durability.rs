#![allow(clippy::unwrap_used)]
//! Acknowledged writes survive `kill -9` of the writing process.
//!
//! The test re-runs this test binary as a child in "writer" mode (selected by an
//! environment variable). The child prints one line per acknowledged write; the parent
//! SIGKILLs it mid-stream, reopens the database and checks every acknowledged write.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_store::{SqliteStore, Store, StoreOptions};
use bytes::Bytes;

const CHILD_DB_ENV: &str = "BERTH_STORE_DURABILITY_CHILD_DB";
const ACK: &str = "ACK ";
const ACKS_BEFORE_KILL: usize = 300;

/// In the child: write forever from several tasks, reporting each acknowledged write.
/// Without the environment variable this is a no-op test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child_writer() {
    let Ok(path) = std::env::var(CHILD_DB_ENV) else { return };
    let store = SqliteStore::open(std::path::Path::new(&path), StoreOptions::default()).unwrap();
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let store: Arc<SqliteStore> = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/d/{writer}/{i}");
                    let kv = store.create(&key, Bytes::from(format!("value of {key}"))).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{ACK}{key} {}", kv.mod_revision).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "durability_child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.len() < ACKS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "child acknowledged only {} writes", acknowledged.len());
        let line = lines.next().expect("child exited early").unwrap();
        if let Some(ack) = line.strip_prefix(ACK) {
            acknowledged.push(ack.to_owned());
        }
    }
    // SIGKILL mid-stream: writes are in flight and groups are being committed.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the child must die from SIGKILL, not exit: {status}");
    // Lines already in the pipe were acknowledged before the kill too.
    for line in lines {
        if let Some(ack) = line.unwrap().strip_prefix(ACK) {
            acknowledged.push(ack.to_owned());
        }
    }

    // The database opens cleanly and is intact.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(integrity, "ok");
    }
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let mut highest = 0;
    for ack in &acknowledged {
        let (key, revision) = ack.split_once(' ').unwrap();
        let revision: i64 = revision.parse().unwrap();
        let kv = store.get(key).await.unwrap().unwrap_or_else(|| panic!("acknowledged key {key} lost"));
        assert_eq!(kv.mod_revision, revision);
        assert_eq!(kv.value, Bytes::from(format!("value of {key}")));
        highest = highest.max(revision);
    }
    let current = store.current_revision().await.unwrap();
    assert!(current >= highest);
    let next = store.create("/after-restart", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(next.mod_revision, current + 1);
}
