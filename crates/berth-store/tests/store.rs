#![allow(clippy::unwrap_used)]
//! Behaviour of `SqliteStore` through the `Store` trait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Error, Event, EventKind, Revision, SqliteStore, Store, StoreOptions, Watch};
use bytes::Bytes;

const DEADLINE: Duration = Duration::from_secs(20);

fn open(dir: &tempfile::TempDir, options: StoreOptions) -> Arc<SqliteStore> {
    SqliteStore::open(&dir.path().join("store.db"), options).unwrap()
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(DEADLINE, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Polls `condition` until it holds or the deadline passes.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn create_get_update_delete_with_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 0);

    let created = store.create("/a", b("one")).await.unwrap();
    assert_eq!((created.create_revision, created.mod_revision), (1, 1));
    assert_eq!(store.get("/a").await.unwrap(), Some(created.clone()));
    assert!(matches!(store.create("/a", b("again")).await, Err(Error::AlreadyExists(key)) if key == "/a"));

    match store.update("/a", b("two"), Some(7)).await {
        Err(Error::Conflict { key, expected: 7, actual: 1 }) => assert_eq!(key, "/a"),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, b("one"), "failed CAS must not write");

    let updated = store.update("/a", b("two"), Some(1)).await.unwrap();
    assert_eq!((updated.create_revision, updated.mod_revision), (1, 2));
    let unconditional = store.update("/a", b("three"), None).await.unwrap();
    assert_eq!(unconditional.mod_revision, 3);
    assert!(matches!(store.update("/missing", b("x"), None).await, Err(Error::NotFound(_))));

    assert!(matches!(store.delete("/a", Some(2)).await, Err(Error::Conflict { expected: 2, actual: 3, .. })));
    let deleted = store.delete("/a", Some(3)).await.unwrap();
    assert_eq!(deleted.value, b("three"));
    assert_eq!((deleted.create_revision, deleted.mod_revision), (1, 4));
    assert_eq!(store.get("/a").await.unwrap(), None);
    assert!(matches!(store.delete("/a", None).await, Err(Error::NotFound(_))));

    let recreated = store.create("/a", b("four")).await.unwrap();
    assert_eq!((recreated.create_revision, recreated.mod_revision), (5, 5));
    assert_eq!(store.current_revision().await.unwrap(), 5, "failed requests take no revision");
}

#[tokio::test]
async fn list_pages_by_key_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    for key in ["/pods/b", "/pods/a", "/pods/c", "/podsx", "/pod", "/services/a"] {
        store.create(key, b(key)).await.unwrap();
    }
    store.delete("/pods/c", None).await.unwrap();
    store.update("/pods/a", b("a2"), None).await.unwrap();

    let all = store.list("/pods/", None, None).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pods/a", "/pods/b"]);
    assert_eq!(all.items[0].value, b("a2"));
    assert_eq!(all.items[0].mod_revision, 8);
    assert_eq!(all.revision, 8);
    assert!(!all.more);

    let first = store.list("/", None, Some(2)).await.unwrap();
    let keys: Vec<_> = first.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pod", "/pods/a"]);
    assert!(first.more);
    let second = store.list("/", Some("/pods/a"), Some(2)).await.unwrap();
    let keys: Vec<_> = second.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pods/b", "/podsx"]);
    assert!(second.more);
    let last = store.list("/", Some("/podsx"), Some(2)).await.unwrap();
    let keys: Vec<_> = last.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/services/a"]);
    assert!(!last.more);
    let exact = store.list("/", Some("/pod"), Some(4)).await.unwrap();
    assert_eq!(exact.items.len(), 4);
    assert!(!exact.more, "a limit that exactly fits leaves nothing more");
    assert_eq!(store.list("", None, Some(0)).await.unwrap().items.len(), 5, "limit 0 means no limit");
}

#[tokio::test]
async fn list_at_an_older_revision_until_it_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store.create("/pods/a", b("a1")).await.unwrap(); // 1
    store.create("/pods/b", b("b1")).await.unwrap(); // 2
    store.create("/pods/c", b("c1")).await.unwrap(); // 3
    store.create("/other", b("o")).await.unwrap(); // 4
    store.update("/pods/a", b("a2"), None).await.unwrap(); // 5
    store.delete("/pods/b", None).await.unwrap(); // 6
    store.create("/pods/d", b("d1")).await.unwrap(); // 7
    store.delete("/pods/c", None).await.unwrap(); // 8
    store.create("/pods/c", b("c2")).await.unwrap(); // 9

    let view = |items: &[berth_store::KeyValue]| -> Vec<(String, String, Revision)> {
        items
            .iter()
            .map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision))
            .collect()
    };
    let at4 = store.list_at("/pods/", None, None, 4).await.unwrap();
    assert_eq!(at4.revision, 4);
    assert_eq!(
        view(&at4.items),
        [("/pods/a".into(), "a1".into(), 1), ("/pods/b".into(), "b1".into(), 2), ("/pods/c".into(), "c1".into(), 3)]
    );
    let page = store.list_at("/pods/", Some("/pods/a"), Some(1), 4).await.unwrap();
    assert_eq!(view(&page.items), [("/pods/b".into(), "b1".into(), 2)]);
    assert!(page.more);
    let at7 = store.list_at("/pods/", None, None, 7).await.unwrap();
    assert_eq!(
        view(&at7.items),
        [("/pods/a".into(), "a2".into(), 5), ("/pods/c".into(), "c1".into(), 3), ("/pods/d".into(), "d1".into(), 7)]
    );
    let now = store.list_at("/pods/", None, None, 9).await.unwrap();
    assert_eq!(view(&now.items), view(&store.list("/pods/", None, None).await.unwrap().items));
    assert!(matches!(store.list_at("/pods/", None, None, 10).await, Err(Error::FutureRevision { .. })));

    store.compact(5).await.unwrap();
    assert!(matches!(store.list_at("/pods/", None, None, 4).await, Err(Error::Compacted { compacted: 5, .. })));
    let at5 = store.list_at("/pods/", None, None, 5).await.unwrap();
    assert_eq!(
        view(&at5.items),
        [("/pods/a".into(), "a2".into(), 5), ("/pods/b".into(), "b1".into(), 2), ("/pods/c".into(), "c1".into(), 3)]
    );
}

/// Records what an observer saw.
struct Seen(std::sync::Mutex<Vec<(Revision, Vec<String>)>>);

impl berth_store::CommitObserver for Seen {
    fn committed(&self, events: &[Event], revision: Revision) {
        self.0.lock().unwrap().push((revision, events.iter().map(|e| e.key.clone()).collect()));
    }
}

#[tokio::test]
async fn observers_see_a_write_before_it_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store.create("/before", b("x")).await.unwrap();
    let seen = Arc::new(Seen(std::sync::Mutex::new(Vec::new())));
    assert_eq!(store.observe(seen.clone()), 1);
    let created = store.create("/a", b("x")).await.unwrap();
    assert_eq!(seen.0.lock().unwrap().last(), Some(&(created.mod_revision, vec!["/a".to_owned()])));
    assert!(store.create("/a", b("x")).await.is_err());
    let deleted = store.delete("/a", None).await.unwrap();
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), 2, "a failed write commits nothing: {seen:?}");
    assert_eq!(seen[1].0, deleted.mod_revision);
}

#[tokio::test]
async fn revisions_continue_after_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store.create("/keep", b("v")).await.unwrap();
    store.create("/gone", b("v")).await.unwrap();
    let tombstone = store.delete("/gone", None).await.unwrap().mod_revision;
    assert_eq!(tombstone, 3);
    // Compaction removes the tombstone, which was the highest row in the log.
    store.compact(tombstone).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), 3);
    drop(store);

    let store = open(&dir, StoreOptions::default());
    assert_eq!(store.current_revision().await.unwrap(), 3);
    assert_eq!(store.compacted_revision().await.unwrap(), 3);
    assert_eq!(store.get("/keep").await.unwrap().unwrap().mod_revision, 1);
    assert_eq!(store.get("/gone").await.unwrap(), None);
    let next = store.create("/gone", b("back")).await.unwrap();
    assert_eq!(next.mod_revision, 4, "revisions are never reused");
}

#[tokio::test]
async fn second_open_of_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    assert!(SqliteStore::open(&dir.path().join("store.db"), StoreOptions::default()).is_err());
    drop(store);
    SqliteStore::open(&dir.path().join("store.db"), StoreOptions::default()).unwrap();
}

/// Writes a mixed history, watches `/a/` from revision 2, and checks replay then live events.
async fn check_watch_replay_and_live(options: StoreOptions) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, options);
    store.create("/a/1", b("x1")).await.unwrap(); // 1
    store.create("/b/1", b("other")).await.unwrap(); // 2
    store.update("/a/1", b("x2"), None).await.unwrap(); // 3
    store.create("/a/2", b("y1")).await.unwrap(); // 4
    store.update("/b/1", b("other2"), None).await.unwrap(); // 5
    store.delete("/a/1", None).await.unwrap(); // 6
    store.create("/ab", b("not under /a/")).await.unwrap(); // 7

    let mut watch = store.watch("/a/", 2).await.unwrap();
    let replayed = [next_event(&mut watch).await, next_event(&mut watch).await, next_event(&mut watch).await];
    assert_eq!(
        replayed,
        [
            Event { kind: EventKind::Put, key: "/a/1".into(), value: b("x2"), revision: 3, prev_value: Some(b("x1")) },
            Event { kind: EventKind::Put, key: "/a/2".into(), value: b("y1"), revision: 4, prev_value: None },
            Event {
                kind: EventKind::Delete,
                key: "/a/1".into(),
                value: b("x2"),
                revision: 6,
                prev_value: Some(b("x2"))
            },
        ]
    );

    store.update("/b/1", b("other3"), None).await.unwrap(); // 8
    store.update("/a/2", b("y2"), Some(4)).await.unwrap(); // 9
    store.create("/a/1", b("x3")).await.unwrap(); // 10
    let live = [next_event(&mut watch).await, next_event(&mut watch).await];
    assert_eq!(
        live,
        [
            Event { kind: EventKind::Put, key: "/a/2".into(), value: b("y2"), revision: 9, prev_value: Some(b("y1")) },
            Event { kind: EventKind::Put, key: "/a/1".into(), value: b("x3"), revision: 10, prev_value: None },
        ]
    );

    // A watch from the current revision sees only new writes.
    let mut from_now = store.watch("", 10).await.unwrap();
    store.delete("/ab", None).await.unwrap();
    let event = next_event(&mut from_now).await;
    assert_eq!((event.kind, event.key.as_str(), event.revision), (EventKind::Delete, "/ab", 11));
}

#[tokio::test]
async fn watch_replays_from_memory_then_streams_live() {
    check_watch_replay_and_live(StoreOptions::default()).await;
}

#[tokio::test]
async fn watch_replays_from_log_when_memory_does_not_cover_it() {
    check_watch_replay_and_live(StoreOptions { watch_cache_events: 1, ..StoreOptions::default() }).await;
}

#[tokio::test]
async fn long_log_replay_is_complete_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    // More events than one history page, none of them in memory.
    let store = open(&dir, StoreOptions { watch_cache_events: 10, ..StoreOptions::default() });
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.create(&format!("/w/{writer}"), b("0")).await.unwrap();
                for i in 1..400 {
                    store.update(&format!("/w/{writer}"), b(&i.to_string()), None).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    assert_eq!(current, 3200);
    let mut watch = store.watch("/w/", 0).await.unwrap();
    let mut last_value = std::collections::HashMap::new();
    for revision in 1..=current {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision, revision);
        assert_eq!(event.prev_value, last_value.insert(event.key.clone(), event.value.clone()));
    }
}

#[tokio::test]
async fn watch_rejects_compacted_and_future_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    for i in 0..10 {
        store.create(&format!("/n/{i}"), b("v")).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    assert!(matches!(store.compact(current + 1).await, Err(Error::FutureRevision { .. })));
    store.compact(5).await.unwrap();
    store.compact(3).await.unwrap(); // already compacted: no-op
    assert_eq!(store.compacted_revision().await.unwrap(), 5);

    assert!(matches!(store.watch("/", 4).await, Err(Error::Compacted { requested: 4, compacted: 5 })));
    assert!(matches!(store.watch("/", current + 1).await, Err(Error::FutureRevision { .. })));
    let mut watch = store.watch("/n/", 5).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision, 6);
}

#[tokio::test]
async fn compaction_keeps_live_values_and_replayable_history() {
    let dir = tempfile::tempdir().unwrap();
    // No in-memory events: replays after compaction must come from the log table.
    let store = open(&dir, StoreOptions { watch_cache_events: 0, ..StoreOptions::default() });
    for i in 0..50 {
        store.create(&format!("/k/{i}"), b("0")).await.unwrap();
    }
    for round in 1..=3 {
        for i in 0..50 {
            store.update(&format!("/k/{i}"), b(&round.to_string()), None).await.unwrap();
        }
    }
    for i in 0..10 {
        store.delete(&format!("/k/{i}"), None).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    assert_eq!(current, 210);
    store.compact(175).await.unwrap();

    let listed = store.list("/k/", None, None).await.unwrap();
    assert_eq!(listed.items.len(), 40);
    assert!(listed.items.iter().all(|kv| kv.value == b("3")));

    let mut watch = store.watch("/k/", 175).await.unwrap();
    for revision in 176..=current {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision, revision);
        if revision <= 200 {
            assert_eq!(
                (event.kind, event.value.clone(), event.prev_value.clone()),
                (EventKind::Put, b("3"), Some(b("2")))
            );
        } else {
            assert_eq!(
                (event.kind, event.value.clone(), event.prev_value.clone()),
                (EventKind::Delete, b("3"), Some(b("3")))
            );
        }
    }
}

#[tokio::test]
async fn background_compaction_follows_history_setting() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { history: 10, compact_interval: Duration::from_millis(20), ..StoreOptions::default() };
    let store = open(&dir, options);
    for i in 0..100 {
        store.create(&format!("/n/{i}"), b("v")).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    wait_until("background compaction", || {
        let store = Arc::clone(&store);
        async move { store.compacted_revision().await.unwrap() == current - 10 }
    })
    .await;
    assert!(matches!(store.watch("", current - 11).await, Err(Error::Compacted { .. })));
    assert_eq!(store.list("/n/", None, None).await.unwrap().items.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let tasks: Vec<_> = (0..64)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..40 {
                    let key = format!("/c/{writer}/{i}");
                    let kv = store.create(&key, b(&key)).await.unwrap();
                    // Read-your-writes: an acknowledged write is visible to the next read.
                    assert_eq!(store.get(&key).await.unwrap(), Some(kv.clone()));
                    written.push((key, kv.mod_revision));
                }
                // All writers also fight over one key with CAS; losers must see Conflict.
                let mut wins = 0;
                for _ in 0..5 {
                    let shared = store.get("/shared").await.unwrap();
                    let outcome = match shared {
                        None => store.create("/shared", b("0")).await.map(|_| ()),
                        Some(kv) => store.update("/shared", b("n"), Some(kv.mod_revision)).await.map(|_| ()),
                    };
                    match outcome {
                        Ok(()) => wins += 1,
                        Err(Error::Conflict { .. } | Error::AlreadyExists(_)) => {}
                        Err(err) => panic!("unexpected error {err}"),
                    }
                }
                (written, wins)
            })
        })
        .collect();
    let mut revisions = HashSet::new();
    let mut written = Vec::new();
    let mut wins = 0;
    for task in tasks {
        let (keys, task_wins) = task.await.unwrap();
        for (key, revision) in keys {
            assert!(revisions.insert(revision), "revision {revision} handed out twice");
            written.push((key, revision));
        }
        wins += task_wins;
    }
    assert_eq!(written.len(), 64 * 40);
    let current = store.current_revision().await.unwrap();
    assert_eq!(current, 64 * 40 + wins, "every successful write took exactly one revision");
    for (key, revision) in &written {
        let kv = store.get(key).await.unwrap().unwrap();
        assert_eq!((kv.mod_revision, kv.value.clone()), (*revision, b(key)));
    }
    assert!(wins >= 1, "someone must win the first create");
    assert!(store.get("/shared").await.unwrap().is_some());
}

#[tokio::test]
async fn lagging_watcher_is_cut_off_without_blocking_writers() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { watch_lag_limit: 4, watch_channel_capacity: 4, ..StoreOptions::default() };
    let store = open(&dir, options);
    let mut slow = store.watch("", 0).await.unwrap();
    // Each awaited write is its own commit group; the unread watcher falls far behind.
    for i in 0..200 {
        store.create(&format!("/k/{i}"), b("v")).await.unwrap();
    }
    let mut expected: Revision = 1;
    loop {
        match tokio::time::timeout(DEADLINE, slow.next()).await.unwrap() {
            Some(Ok(event)) => {
                assert_eq!(event.revision, expected, "events stay ordered up to the cut-off");
                expected += 1;
            }
            Some(Err(Error::WatchLagged { last_revision })) => {
                assert_eq!(last_revision, expected - 1);
                assert!(last_revision < 200);
                break;
            }
            other => panic!("expected events then WatchLagged, got {other:?}"),
        }
    }
    assert!(tokio::time::timeout(DEADLINE, slow.next()).await.unwrap().is_none(), "stream closes after the error");
    // The writer was never held up, and re-watching from the reported revision works.
    let mut resumed = store.watch("", expected - 1).await.unwrap();
    assert_eq!(next_event(&mut resumed).await.revision, expected);
}

#[tokio::test]
async fn dropped_watch_releases_its_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    let watch = store.watch("/x", 0).await.unwrap();
    let other = store.watch("/y", 0).await.unwrap();
    assert_eq!(store.watcher_count(), 2);
    drop(watch);
    wait_until("the dropped watch to unsubscribe", || {
        let store = Arc::clone(&store);
        async move { store.watcher_count() == 1 }
    })
    .await;
    drop(other);
    wait_until("both watches to unsubscribe", || {
        let store = Arc::clone(&store);
        async move { store.watcher_count() == 0 }
    })
    .await;
    store.create("/x", b("v")).await.unwrap();
}

#[tokio::test]
async fn closing_the_store_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, StoreOptions::default());
    store.create("/k", b("v")).await.unwrap();
    let mut watch = store.watch("", 0).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision, 1);
    drop(store);
    assert!(tokio::time::timeout(DEADLINE, watch.next()).await.unwrap().is_none());
}
