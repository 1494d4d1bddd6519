//! [`SqliteStore`]: the revisioned key-value store on one SQLite file.
//!
//! # Schema
//!
//! * `log` is the kine-style append-only history. `id` (the rowid) is the global revision.
//!   Every create, update and delete inserts one row: `key`, `created` (first write after
//!   absence), `deleted` (tombstone), `create_revision`, `prev_revision` (the key's previous
//!   row while it existed, else 0) and `value` (empty for tombstones; the deleted value is
//!   the `prev_revision` row's).
//! * `current` maps each live key to its latest `log` row, so point reads and ranges never
//!   scan history.
//! * `meta` holds the revision counter and the compacted revision. The counter is stored
//!   because compaction may delete the highest row (a tombstone): revisions are never reused.
//!
//! # Durability
//!
//! * `journal_mode=WAL`: readers never block the writer, and a crash can never leave a torn
//!   database (the WAL is replayed or ignored by its checksums on the next open).
//! * `synchronous=FULL` ([`Durability::Full`], the default): every commit fsyncs the WAL
//!   before the writer thread acknowledges any request of that group, so an acknowledged
//!   write survives `kill -9`, a kernel crash or a power loss (given honest disks).
//!   [`Durability::Normal`] skips that fsync: still safe against a process crash, but the
//!   last commits may roll back after a power loss or OS crash.
//! * `auto_vacuum=INCREMENTAL`: pages freed by compaction are reused, and given back to the
//!   file system with `incremental_vacuum` when most of the file is free.
//! * `journal_size_limit` caps the WAL file size kept after checkpoints, and the writer runs
//!   `wal_checkpoint(TRUNCATE)` at most once per compaction interval.
//!
//! # Threads
//!
//! All writes (and compaction) run on one dedicated OS thread that owns the read-write
//! connection and commits queued requests in groups (see the `writer` module). Reads run on
//! a small pool of read-only connections inside `spawn_blocking`. A request is answered only
//! after its group has committed, and every read opens a fresh snapshot, so reads see every
//! acknowledged write.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql};
use tokio::sync::oneshot;

use crate::watch::{Hub, Replay};
use crate::writer::{Command, WriteOp, Writer};
use crate::{CommitObserver, Error, Event, EventKind, KeyValue, ListResult, Result, Revision, Store, Watch};

/// How hard a commit tries to reach stable storage before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: fsync the WAL on every commit. Survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash; the newest commits may be lost on
    /// power loss or an OS crash.
    Normal,
}

/// Tuning for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub sync: Durability,
    /// Revisions of history kept behind the current one; older history is compacted.
    pub history: i64,
    /// How often background compaction runs (`Duration::ZERO` disables the timer; the
    /// store still compacts once more than `max(history, 1000)` revisions are compactable).
    pub compact_interval: Duration,
    /// Recent events kept in memory to start watches without reading the log.
    pub watch_cache_events: usize,
    /// Commit groups a watcher may fall behind before it is cut off with `WatchLagged`.
    pub watch_lag_limit: usize,
    /// Events buffered in each watch's channel.
    pub watch_channel_capacity: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: Durability::Full,
            history: 10_000,
            compact_interval: Duration::from_secs(30),
            watch_cache_events: 10_000,
            watch_lag_limit: 4096,
            watch_channel_capacity: 256,
        }
    }
}

/// Revisioned key-value store on a SQLite file. See the module docs.
pub struct SqliteStore {
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    hub: Arc<Hub>,
    readers: Arc<Readers>,
    watch_channel_capacity: usize,
    /// Held for the store's lifetime: a second process on the same file would break the
    /// single-writer revision counter and the in-memory watch feed.
    _lock: File,
}

/// Events read from the log per query when a watch replays history.
const HISTORY_PAGE: usize = 1000;
/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl SqliteStore {
    /// Opens (or creates) the store at `path`. Blocking: it runs SQLite setup on the
    /// calling thread, so call it before starting work or from `spawn_blocking`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Arc<SqliteStore>> {
        let lock = lock_store_file(path)?;
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_file(path)?,
            Err(e) => return Err(Error::Io(e)),
            Ok(_) => {}
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Only takes effect before the first table exists, i.e. on a new file.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Io(io::Error::other(format!("cannot enable WAL mode (got {mode:?})"))));
        }
        let synchronous = match options.sync {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "journal_size_limit", 64i64 * 1024 * 1024)?;
        conn.execute_batch(SCHEMA)?;
        let current = read_meta(&conn, META_REVISION)?;
        let compacted = read_meta(&conn, META_COMPACTED)?;
        tracing::info!(path = %path.display(), current, compacted, "opened store");

        let hub = Arc::new(Hub::new(current, compacted, options.watch_cache_events, options.watch_lag_limit));
        let (commands, command_rx) = mpsc::channel();
        let watch_channel_capacity = options.watch_channel_capacity.max(1);
        let writer = Writer::new(conn, Arc::clone(&hub), options, current, compacted);
        let writer =
            std::thread::Builder::new().name("berth-store-writer".into()).spawn(move || writer.run(command_rx))?;
        Ok(Arc::new(SqliteStore {
            commands: Some(commands),
            writer: Some(writer),
            hub,
            readers: Arc::new(Readers { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }),
            watch_channel_capacity,
            _lock: lock,
        }))
    }

    /// Live watches (each holds one subscription until its `Watch` is dropped).
    pub fn watcher_count(&self) -> usize {
        self.hub.subscriber_count()
    }

    async fn submit(&self, op: WriteOp) -> Result<KeyValue> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write { op, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    fn send(&self, command: Command) -> Result<()> {
        let commands = self.commands.as_ref().ok_or(Error::Closed)?;
        commands.send(command).map_err(|_| Error::Closed)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer after its current group; joining makes sure the
        // connection is closed before the file lock is released.
        drop(self.commands.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.hub.revisions().0)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.hub.revisions().1)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.readers.run(move |conn| read_key(conn, &key)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        let limit = limit.filter(|&limit| limit > 0);
        self.readers.run(move |conn| read_range(conn, &prefix, start_after.as_deref(), limit)).await
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: Revision,
    ) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        let limit = limit.filter(|&limit| limit > 0);
        self.readers.run(move |conn| read_range_at(conn, &prefix, start_after.as_deref(), limit, revision)).await
    }

    fn observe(&self, observer: Arc<dyn CommitObserver>) -> Revision {
        self.hub.observe(observer)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.submit(WriteOp::Create { key: key.to_owned(), value }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<KeyValue> {
        self.submit(WriteOp::Update { key: key.to_owned(), value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.submit(WriteOp::Delete { key: key.to_owned(), expected }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let subscription = self.hub.subscribe(prefix, after)?;
        let prefix = prefix.to_owned();
        let (initial, history_left) = match subscription.replay {
            Replay::Cached(events) => (events, None),
            Replay::Log { upto } => {
                // The first page is read here so that a concurrent compaction past `after`
                // surfaces as an error of `watch` itself rather than on the stream.
                let page_prefix = prefix.clone();
                let page =
                    self.readers.run(move |conn| read_history(conn, &page_prefix, after, upto, HISTORY_PAGE)).await?;
                let more = page.len() == HISTORY_PAGE;
                (page, more.then_some(upto))
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(self.watch_channel_capacity);
        let feed = WatchFeed {
            tx,
            prefix,
            cursor: after,
            replayed_upto: subscription.upto,
            readers: Arc::clone(&self.readers),
            live: subscription.live,
        };
        tokio::spawn(feed.run(initial, history_left));
        Ok(Watch { rx })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Compact { revision, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// The task behind one [`Watch`]: replays history, then forwards live commit groups.
struct WatchFeed {
    tx: tokio::sync::mpsc::Sender<Result<Event>>,
    prefix: String,
    /// Highest revision already delivered or skipped.
    cursor: Revision,
    /// The store's revision when the watch subscribed; live events are all above it.
    replayed_upto: Revision,
    readers: Arc<Readers>,
    live: tokio::sync::broadcast::Receiver<crate::watch::Group>,
}

impl WatchFeed {
    async fn run(mut self, initial: Vec<Event>, mut history_left: Option<Revision>) {
        if !self.deliver(initial).await {
            return;
        }
        while let Some(upto) = history_left {
            let (prefix, after) = (self.prefix.clone(), self.cursor);
            let page = self.readers.run(move |conn| read_history(conn, &prefix, after, upto, HISTORY_PAGE)).await;
            match page {
                Ok(page) => {
                    if page.len() < HISTORY_PAGE {
                        history_left = None;
                    }
                    if !self.deliver(page).await {
                        return;
                    }
                }
                Err(err) => {
                    let _ = self.tx.send(Err(err)).await;
                    return;
                }
            }
        }
        self.cursor = self.cursor.max(self.replayed_upto);

        loop {
            let received = tokio::select! {
                biased;
                _ = self.tx.closed() => return,
                received = self.live.recv() => received,
            };
            match received {
                Ok(group) => {
                    let events = group
                        .iter()
                        .filter(|event| event.revision > self.cursor && event.key.starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    let last = group.last().map_or(self.cursor, |event| event.revision);
                    if !self.deliver(events).await {
                        return;
                    }
                    self.cursor = self.cursor.max(last);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    tracing::debug!(prefix = %self.prefix, cursor = self.cursor, "watch lagged; closing it");
                    let _ = self.tx.send(Err(Error::WatchLagged { last_revision: self.cursor })).await;
                    return;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends events in order; false once the watcher is gone.
    async fn deliver(&mut self, events: Vec<Event>) -> bool {
        for event in events {
            let revision = event.revision;
            if self.tx.send(Ok(event)).await.is_err() {
                return false;
            }
            self.cursor = revision;
        }
        true
    }
}

/// Pool of read-only connections, used from `spawn_blocking`.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || readers.with_connection(read))
            .await
            .map_err(|err| Error::Io(io::Error::other(format!("read task failed: {err}"))))?
    }

    fn with_connection<T>(&self, read: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn
            }
        };
        let result = read(&mut conn);
        // A connection left inside a transaction by a failed read is not reused.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        result
    }
}

pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACTED: &str = "compacted";

const SCHEMA: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', 1), ('revision', 0), ('compacted', 0);
COMMIT;
";

/// Creates a new, empty store file at `path`. SQLite would set up a new file (page 1, the
/// switch to WAL, the schema) in several synchronous transactions, each a few disk flushes:
/// here it is built unsynchronised beside `path`, flushed once and renamed into place, so
/// a crash leaves either no store or a complete empty one. Called with the store lock held.
fn create_file(path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    for leftover in ["", "-wal", "-shm", "-journal"] {
        let mut name = tmp.as_os_str().to_owned();
        name.push(leftover);
        match fs::remove_file(&name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::Io(e)),
            _ => {}
        }
    }
    {
        let conn = Connection::open(&tmp)?;
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Io(io::Error::other(format!("cannot enable WAL mode (got {mode:?})"))));
        }
        conn.execute_batch(SCHEMA)?;
        // Closing the only connection checkpoints the WAL into the file and removes it.
    }
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn read_meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?.query_row([name], |row| row.get(0))
}

fn lock_store_file(path: &Path) -> Result<File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("store {} is already open (lock {} is held)", path.display(), Path::new(&lock_path).display()),
        ))),
        Err(TryLockError::Error(err)) => Err(Error::Io(err)),
    }
}

/// Binds raw bytes as TEXT: a prefix's upper bound need not be valid UTF-8.
struct TextBytes<'a>(&'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or `None`
/// when there is none (empty prefix or all 0xFF bytes).
pub(crate) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn read_key(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
    let mut statement = conn.prepare_cached(
        "SELECT l.value, l.create_revision, l.id FROM current c JOIN log l ON l.id = c.id WHERE c.key = ?1",
    )?;
    let found = statement
        .query_row([key], |row| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
                create_revision: row.get(1)?,
                mod_revision: row.get(2)?,
            })
        })
        .optional()?;
    Ok(found)
}

/// A `KeyValue` from a row of `key, value, create_revision, mod_revision`.
fn key_value_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

fn read_range(
    conn: &mut Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: Option<usize>,
) -> Result<ListResult> {
    let tx = conn.transaction()?;
    let revision = read_meta(&tx, META_REVISION)?;
    let end = prefix_end(prefix);
    let mut sql = String::from(
        "SELECT c.key, l.value, l.create_revision, l.id FROM current c JOIN log l ON l.id = c.id WHERE c.key >= ?1",
    );
    let mut params: Vec<Box<dyn ToSql + '_>> = vec![Box::new(prefix)];
    if let Some(end) = &end {
        params.push(Box::new(TextBytes(end)));
        sql.push_str(&format!(" AND c.key < ?{}", params.len()));
    }
    if let Some(start_after) = start_after {
        params.push(Box::new(start_after));
        sql.push_str(&format!(" AND c.key > ?{}", params.len()));
    }
    sql.push_str(" ORDER BY c.key");
    if let Some(limit) = limit {
        // One extra row tells whether more keys follow.
        params.push(Box::new(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT ?{}", params.len()));
    }
    let mut items = {
        let mut statement = tx.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), key_value_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
    let more = limit.is_some_and(|limit| items.len() > limit);
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    Ok(ListResult { items, revision, more })
}

/// The keys under `prefix` (after `start_after`) as they were at `at`: the current rows, except
/// for keys written after `at`, whose first later row tells what they were at `at` (absent if
/// that row created the key, else its `prev_revision` row, which compaction keeps as long as
/// `at` is not compacted).
fn read_range_at(
    conn: &mut Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: Option<usize>,
    at: Revision,
) -> Result<ListResult> {
    let tx = conn.transaction()?;
    let compacted = read_meta(&tx, META_COMPACTED)?;
    let current = read_meta(&tx, META_REVISION)?;
    if at < compacted {
        return Err(Error::Compacted { requested: at, compacted });
    }
    if at > current {
        return Err(Error::FutureRevision { requested: at, current });
    }
    let end = prefix_end(prefix);
    let mut range = String::from(" AND c.key >= ?1");
    let mut params: Vec<Box<dyn ToSql + '_>> = vec![Box::new(prefix)];
    if let Some(end) = &end {
        params.push(Box::new(TextBytes(end)));
        range.push_str(&format!(" AND c.key < ?{}", params.len()));
    }
    if let Some(start_after) = start_after {
        params.push(Box::new(start_after));
        range.push_str(&format!(" AND c.key > ?{}", params.len()));
    }
    let mut keys = std::collections::BTreeMap::new();
    {
        let sql = format!(
            "SELECT c.key, l.value, l.create_revision, l.id FROM current c JOIN log l ON l.id = c.id WHERE 1{range}"
        );
        let mut statement = tx.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), key_value_row)?;
        for kv in rows {
            let kv = kv?;
            keys.insert(kv.key.clone(), kv);
        }
    }
    {
        params.push(Box::new(at));
        let sql = format!(
            "SELECT c.key, c.prev_revision, p.value, p.create_revision FROM log c \
             LEFT JOIN log p ON p.id = c.prev_revision WHERE c.id > ?{}{range} ORDER BY c.id",
            params.len()
        );
        let mut statement = tx.prepare_cached(&sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
        let mut seen = std::collections::HashSet::new();
        while let Some(row) = rows.next()? {
            let key: String = row.get(0)?;
            if !seen.insert(key.clone()) {
                continue;
            }
            let prev: Revision = row.get(1)?;
            if prev == 0 {
                keys.remove(&key);
                continue;
            }
            let Some(value) = row.get::<_, Option<Vec<u8>>>(2)? else {
                return Err(Error::Compacted { requested: at, compacted });
            };
            let kv = KeyValue {
                key: key.clone(),
                value: Bytes::from(value),
                create_revision: row.get(3)?,
                mod_revision: prev,
            };
            keys.insert(key, kv);
        }
    }
    tx.commit()?;
    let mut items: Vec<KeyValue> = keys.into_values().collect();
    let more = limit.is_some_and(|limit| items.len() > limit);
    if let Some(limit) = limit {
        items.truncate(limit);
    }
    Ok(ListResult { items, revision: at, more })
}

/// Events with revision in `(after, upto]` whose key starts with `prefix`, oldest first, at
/// most `limit` of them. Fails with `Compacted` if history after `after` may be incomplete.
fn read_history(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
    limit: usize,
) -> Result<Vec<Event>> {
    let tx = conn.transaction()?;
    let compacted = read_meta(&tx, META_COMPACTED)?;
    if after < compacted {
        return Err(Error::Compacted { requested: after, compacted });
    }
    let end = prefix_end(prefix);
    let mut sql = String::from(
        "SELECT l.id, l.key, l.deleted, l.value, p.value FROM log l LEFT JOIN log p ON p.id = l.prev_revision \
         WHERE l.id > ?1 AND l.id <= ?2 AND l.key >= ?3",
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut params: Vec<Box<dyn ToSql + '_>> = vec![Box::new(after), Box::new(upto), Box::new(prefix), Box::new(limit)];
    if let Some(end) = &end {
        params.push(Box::new(TextBytes(end)));
        sql.push_str(" AND l.key < ?5");
    }
    sql.push_str(" ORDER BY l.id LIMIT ?4");
    let events = {
        let mut statement = tx.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(params.iter()), |row| {
            let deleted: bool = row.get(2)?;
            let value = Bytes::from(row.get::<_, Vec<u8>>(3)?);
            let prev_value = row.get::<_, Option<Vec<u8>>>(4)?.map(Bytes::from);
            let (kind, value) = if deleted {
                // Tombstones store no value: the deleted value is the previous row's.
                (EventKind::Delete, prev_value.clone().unwrap_or_default())
            } else {
                (EventKind::Put, value)
            };
            Ok(Event { kind, key: row.get(1)?, value, revision: row.get(0)?, prev_value })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), Some(b"/registry/pods0".to_vec()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{7f}"), Some(b"a\x80".to_vec()));
    }
}
