#![allow(clippy::unwrap_used)]
//! The database file stays small when one key is rewritten many times.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_store::{Durability, SqliteStore, Store, StoreOptions};
use bytes::Bytes;

const UPDATES: usize = 200_000;
const VALUE_SIZE: usize = 256;
const WRITERS: usize = 64;

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_updated_many_times_keeps_the_file_small() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let wal = dir.path().join("store.db-wal");
    // Durability does not change the file layout; NORMAL keeps this test quick. No timer:
    // the store must compact on its own because of the write backlog.
    let options = StoreOptions {
        sync: Durability::Normal,
        history: 1000,
        compact_interval: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = SqliteStore::open(&path, options).unwrap();
    store.create("/hot", Bytes::from(vec![0u8; VALUE_SIZE])).await.unwrap();

    let remaining = Arc::new(AtomicUsize::new(UPDATES));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            let remaining = Arc::clone(&remaining);
            tokio::spawn(async move {
                let mut value = vec![writer as u8; VALUE_SIZE];
                while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                    value[0] = value[0].wrapping_add(1);
                    store.update("/hot", Bytes::copy_from_slice(&value), None).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    let current = store.current_revision().await.unwrap();
    assert_eq!(current, UPDATES as i64 + 1);
    // The backlog rule compacts once 1000 revisions beyond `history` are compactable; the
    // last job may still be running right after the last acknowledgment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let compacted = loop {
        let compacted = store.compacted_revision().await.unwrap();
        if compacted > current - 2000 {
            break compacted;
        }
        assert!(std::time::Instant::now() < deadline, "automatic compaction stuck at {compacted} (current {current})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // Uncompacted, the log would hold UPDATES rows of VALUE_SIZE bytes (about 50 MB). The file
    // may hold the kept history plus free pages and the WAL, nowhere near that.
    let history_bytes = (UPDATES * VALUE_SIZE) as u64;
    let db = file_size(&path);
    let total = db + file_size(&wal);
    eprintln!("after {UPDATES} updates: db {db} bytes, db+wal {total} bytes, history {history_bytes} bytes");
    assert!(total < history_bytes / 4, "db+wal is {total} bytes");
    assert!(db < 4 * 1024 * 1024, "db is {db} bytes");

    let hot = store.get("/hot").await.unwrap().unwrap();
    assert_eq!((hot.create_revision, hot.mod_revision), (1, current));
    // History above the compacted revision is still replayable.
    let mut watch = store.watch("/hot", compacted).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.revision, compacted + 1);
    assert!(first.prev_value.is_some());
}
