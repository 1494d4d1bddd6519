//! Berth's store: a revisioned key-value log in the spirit of etcd's MVCC API.
//!
//! Keys are strings such as `/registry/apps/deployments/default/web`; values are opaque
//! bytes (the API server stores JSON). Every write takes the next value of one global,
//! monotonically increasing revision, which the API server exposes as `resourceVersion`.
//!
//! The implementation is [`SqliteStore`] (see the `sqlite` module docs for the schema and
//! the durability settings).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

mod sqlite;
mod watch;
mod writer;

pub use sqlite::{Durability, SqliteStore, StoreOptions};

pub type Revision = i64;

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision that created this key (stays the same across updates).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value for `Put`; the last value before deletion for `Delete`.
    pub value: Bytes,
    /// The revision of this write (for `Delete`, the revision of the deletion).
    pub revision: Revision,
    /// The value before this write, if the key existed.
    pub prev_value: Option<Bytes>,
}

/// A page of a range read.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The store's revision at which the read was made.
    pub revision: Revision,
    /// More keys follow the last returned one (only when `limit` cut the page).
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The compare part of a compare-and-swap failed.
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    /// The requested revision is older than the oldest one kept.
    #[error("revision {requested} has been compacted; oldest available is {compacted}")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's current one.
    #[error("revision {requested} is in the future; current is {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("store is closed")]
    Closed,
    /// A watcher did not keep up with the write rate and was cut off; re-watch from
    /// `last_revision` (every event at or below it was delivered or filtered out).
    #[error("watch fell too far behind after revision {last_revision}")]
    WatchLagged { last_revision: Revision },
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Sees every committed group of writes synchronously, in revision order: it is called on the
/// writer thread, under the watch feed's lock, before any write of the group is acknowledged.
/// So once a write is acknowledged, every observer has seen it. It must be quick and must not
/// call back into the store.
pub trait CommitObserver: Send + Sync + 'static {
    /// `events` (never empty) were committed; `revision` is the store's revision after them.
    fn committed(&self, events: &[Event], revision: Revision);
}

/// A live watch. Events arrive strictly in revision order. The stream ends with
/// `Some(Err(..))` if the watcher fell too far behind (the caller re-watches from the
/// last revision it saw), or `None` when the store shuts down.
pub struct Watch {
    pub rx: tokio::sync::mpsc::Receiver<Result<Event>>,
}

impl Watch {
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

/// The storage interface the API server depends on.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Current (latest committed) revision.
    async fn current_revision(&self) -> Result<Revision>;
    /// Oldest revision still available to watches (everything at or below it is compacted).
    async fn compacted_revision(&self) -> Result<Revision>;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys starting with `prefix`, in key order, strictly after `start_after` if given,
    /// at most `limit` items if given (0 or None means no limit).
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> Result<ListResult>;
    /// As `list`, but the keys as they were at `revision` (between the compacted revision and
    /// the current one; `Compacted` or `FutureRevision` otherwise). The result's `revision` is
    /// `revision`.
    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        revision: Revision,
    ) -> Result<ListResult>;
    /// Create `key`; fails with `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;
    /// Replace `key`'s value. With `expected = Some(rev)`, fails with `Conflict` unless the
    /// key's `mod_revision == rev`. Fails with `NotFound` if the key is absent.
    async fn update(&self, key: &str, value: Bytes, expected: Option<Revision>) -> Result<KeyValue>;
    /// Delete `key`, returning its last value (with the deletion's revision as
    /// `mod_revision`). `expected` as in `update`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;
    /// Watch keys starting with `prefix` for writes with revision strictly greater than
    /// `after`. Fails with `Compacted` if `after` is older than the kept history.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;
    /// Registers `observer` for every commit from now on; returns the revision it starts after.
    fn observe(&self, observer: std::sync::Arc<dyn CommitObserver>) -> Revision;
    /// Drop history at or below `revision` (the current value of every live key is kept).
    async fn compact(&self, revision: Revision) -> Result<()>;
}

pub type DynStore = Arc<dyn Store>;
