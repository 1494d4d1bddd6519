//! The writer thread: the only code that modifies the database.
//!
//! It owns the read-write connection. Each turn it drains every queued request (up to
//! [`MAX_GROUP`]), applies them in one `BEGIN IMMEDIATE` transaction and commits once (group
//! commit: one WAL fsync for the whole group). Each request's preconditions (absent for
//! create, present and `mod_revision == expected` for update/delete) are checked inside that
//! transaction, so a failed compare fails only its own request. After the commit it
//! publishes the group's events to the watch hub and only then answers the callers, so an
//! acknowledged revision is always visible to reads and watches.
//!
//! Compaction runs on the same thread in bounded chunks between write groups, so a large
//! compaction never stalls writers for long.

use std::io;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::sqlite::{BUSY_TIMEOUT, META_COMPACTED, META_REVISION, StoreOptions};
use crate::watch::Hub;
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 1024;
/// Revisions compacted per transaction.
const COMPACT_CHUNK: i64 = 5000;
/// Compaction starts on its own once this many revisions (or `history`, if larger) are
/// compactable, so a write burst cannot grow the file until the next timer tick.
const MIN_COMPACT_BACKLOG: i64 = 1000;
/// How long a checkpoint may wait for readers to move to the newest snapshot.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(200);

pub(crate) enum WriteOp {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: Option<Revision> },
    Delete { key: String, expected: Option<Revision> },
}

impl WriteOp {
    fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => key,
        }
    }
}

pub(crate) enum Command {
    Write { op: WriteOp, reply: oneshot::Sender<Result<KeyValue>> },
    Compact { revision: Revision, reply: oneshot::Sender<Result<()>> },
}

struct PendingWrite {
    op: WriteOp,
    reply: oneshot::Sender<Result<KeyValue>>,
}

struct CompactionJob {
    target: Revision,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

pub(crate) struct Writer {
    conn: Connection,
    hub: Arc<Hub>,
    history: i64,
    compact_interval: Option<Duration>,
    current: Revision,
    compacted: Revision,
    job: Option<CompactionJob>,
    next_timer: Option<Instant>,
    last_checkpoint: Instant,
}

/// The row a key currently points at.
struct Existing {
    mod_revision: Revision,
    create_revision: Revision,
    value: Bytes,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        hub: Arc<Hub>,
        options: StoreOptions,
        current: Revision,
        compacted: Revision,
    ) -> Writer {
        let compact_interval = (!options.compact_interval.is_zero()).then_some(options.compact_interval);
        Writer {
            conn,
            hub,
            history: options.history.max(0),
            compact_interval,
            current,
            compacted,
            job: None,
            next_timer: compact_interval.map(|interval| Instant::now() + interval),
            last_checkpoint: Instant::now(),
        }
    }

    pub(crate) fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            // With compaction in progress, only take what is already queued, then continue it.
            let first = if self.job.is_some() {
                match commands.try_recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else if let Some(deadline) = self.next_timer {
                match commands.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match commands.recv() {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvError) => break,
                }
            };

            let mut group = Vec::new();
            if let Some(command) = first {
                self.accept(command, &mut group);
                while group.len() < MAX_GROUP {
                    match commands.try_recv() {
                        Ok(command) => self.accept(command, &mut group),
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit_group(group);
            }

            if let (Some(deadline), Some(interval)) = (self.next_timer, self.compact_interval)
                && Instant::now() >= deadline
            {
                self.next_timer = Some(Instant::now() + interval);
                self.schedule_compaction(self.current - self.history);
                if self.job.is_none() {
                    self.checkpoint_if_due();
                }
            }
            let target = self.current - self.history;
            if self.job.is_none() && target - self.compacted >= self.history.max(MIN_COMPACT_BACKLOG) {
                self.schedule_compaction(target);
            }
            if self.job.is_some() {
                self.compaction_step();
            }
        }
        tracing::debug!(revision = self.current, "store writer stopping");
    }

    fn accept(&mut self, command: Command, group: &mut Vec<PendingWrite>) {
        match command {
            Command::Write { op, reply } => group.push(PendingWrite { op, reply }),
            Command::Compact { revision, reply } => {
                if revision > self.current {
                    let _ = reply.send(Err(Error::FutureRevision { requested: revision, current: self.current }));
                } else if revision <= self.compacted && self.job.is_none() {
                    let _ = reply.send(Ok(()));
                } else {
                    self.schedule_compaction(revision);
                    if let Some(job) = &mut self.job {
                        job.waiters.push(reply);
                    }
                }
            }
        }
    }

    fn schedule_compaction(&mut self, target: Revision) {
        if target <= self.compacted {
            return;
        }
        match &mut self.job {
            Some(job) => job.target = job.target.max(target),
            None => self.job = Some(CompactionJob { target, waiters: Vec::new() }),
        }
    }

    fn commit_group(&mut self, group: Vec<PendingWrite>) {
        let base = self.current;
        match apply_group(&mut self.conn, &group, base) {
            Ok((current, outcomes, events)) => {
                self.current = current;
                // Publish before answering: whoever sees the acknowledgment can watch from it.
                self.hub.publish(events, current);
                for (write, outcome) in group.into_iter().zip(outcomes) {
                    // The caller may have given up waiting; the write stands regardless.
                    let _ = write.reply.send(outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, requests = group.len(), "store write group failed; rolled back");
                for write in group {
                    let _ = write.reply.send(Err(copy_storage_error(&err)));
                }
            }
        }
    }

    /// Compacts one chunk of the current job, finishing it when the target is reached.
    fn compaction_step(&mut self) {
        let Some(job) = &self.job else { return };
        let target = job.target;
        let from = self.compacted;
        let to = target.min(from.saturating_add(COMPACT_CHUNK));
        match compact_range(&mut self.conn, from, to) {
            Ok(removed) => {
                self.compacted = to;
                self.hub.set_compacted(to);
                tracing::trace!(from, to, removed, "compacted chunk");
            }
            Err(err) => {
                tracing::error!(error = %err, from, to, "store compaction failed");
                if let Some(job) = self.job.take() {
                    for waiter in job.waiters {
                        let _ = waiter.send(Err(copy_storage_error(&err)));
                    }
                }
                return;
            }
        }
        if to < target {
            return;
        }
        if let Some(job) = self.job.take() {
            tracing::debug!(compacted = to, current = self.current, "compaction finished");
            if let Err(err) = self.release_free_pages() {
                tracing::warn!(error = %err, "incremental vacuum failed");
            }
            self.checkpoint_if_due();
            for waiter in job.waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Gives free pages back to the file system once they are most of the file; fewer are
    /// kept for reuse by the next writes.
    fn release_free_pages(&mut self) -> rusqlite::Result<()> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
        let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
        if free < 256 || free * 2 < pages {
            return Ok(());
        }
        // Keep a quarter of the free pages for upcoming writes. The pragma frees pages as
        // it is stepped, so run it to completion.
        let release = free - free / 4;
        let mut statement = self.conn.prepare(&format!("PRAGMA incremental_vacuum({release})"))?;
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
        tracing::debug!(pages, free, release, "released free pages");
        Ok(())
    }

    fn checkpoint_if_due(&mut self) {
        let due = self.compact_interval.unwrap_or(Duration::from_secs(30));
        if self.last_checkpoint.elapsed() < due {
            return;
        }
        self.last_checkpoint = Instant::now();
        // TRUNCATE waits (through the busy handler) for readers on older snapshots; do not
        // let a slow reader hold up writes for the full busy timeout. Busy is not an error:
        // the next round retries.
        let checkpoint = self.conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT).and_then(|()| {
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
        });
        match checkpoint {
            Ok((busy, wal_pages, copied)) => tracing::debug!(busy, wal_pages, copied, "wal checkpoint"),
            Err(err) => tracing::warn!(error = %err, "wal checkpoint failed"),
        }
        if let Err(err) = self.conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(error = %err, "cannot restore busy timeout");
        }
    }
}

/// Applies one group in one transaction. The outer error aborts (rolls back) the whole group;
/// inner errors are per-request precondition failures.
#[allow(clippy::type_complexity)]
fn apply_group(
    conn: &mut Connection,
    group: &[PendingWrite],
    base: Revision,
) -> rusqlite::Result<(Revision, Vec<Result<KeyValue>>, Vec<Event>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut next = base;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut events = Vec::with_capacity(group.len());
    for write in group {
        match apply_write(&tx, &write.op, next + 1)? {
            Ok((kv, event)) => {
                next += 1;
                outcomes.push(Ok(kv));
                events.push(event);
            }
            Err(err) => outcomes.push(Err(err)),
        }
    }
    if next > base {
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = ?2")?.execute(params![next, META_REVISION])?;
    }
    tx.commit()?;
    Ok((next, outcomes, events))
}

fn apply_write(conn: &Connection, op: &WriteOp, revision: Revision) -> rusqlite::Result<Result<(KeyValue, Event)>> {
    let key = op.key();
    let existing = conn
        .prepare_cached(
            "SELECT l.id, l.create_revision, l.value FROM current c JOIN log l ON l.id = c.id WHERE c.key = ?1",
        )?
        .query_row([key], |row| {
            Ok(Existing {
                mod_revision: row.get(0)?,
                create_revision: row.get(1)?,
                value: Bytes::from(row.get::<_, Vec<u8>>(2)?),
            })
        })
        .optional()?;

    let mut insert = conn.prepare_cached(
        "INSERT INTO log (id, key, created, deleted, create_revision, prev_revision, value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    match op {
        WriteOp::Create { value, .. } => {
            if existing.is_some() {
                return Ok(Err(Error::AlreadyExists(key.to_owned())));
            }
            insert.execute(params![revision, key, true, false, revision, 0i64, &value[..]])?;
            set_current(conn, key, revision)?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            };
            let event =
                Event { kind: EventKind::Put, key: key.to_owned(), value: value.clone(), revision, prev_value: None };
            Ok(Ok((kv, event)))
        }
        WriteOp::Update { value, expected, .. } => {
            let existing = match check(key, existing, *expected) {
                Ok(existing) => existing,
                Err(err) => return Ok(Err(err)),
            };
            insert.execute(params![
                revision,
                key,
                false,
                false,
                existing.create_revision,
                existing.mod_revision,
                &value[..]
            ])?;
            set_current(conn, key, revision)?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: existing.create_revision,
                mod_revision: revision,
            };
            let event = Event {
                kind: EventKind::Put,
                key: key.to_owned(),
                value: value.clone(),
                revision,
                prev_value: Some(existing.value),
            };
            Ok(Ok((kv, event)))
        }
        WriteOp::Delete { expected, .. } => {
            let existing = match check(key, existing, *expected) {
                Ok(existing) => existing,
                Err(err) => return Ok(Err(err)),
            };
            // The tombstone stores no value; its `prev_revision` row holds the deleted one.
            insert.execute(params![
                revision,
                key,
                false,
                true,
                existing.create_revision,
                existing.mod_revision,
                &[][..] as &[u8]
            ])?;
            conn.prepare_cached("DELETE FROM current WHERE key = ?1")?.execute([key])?;
            let kv = KeyValue {
                key: key.to_owned(),
                value: existing.value.clone(),
                create_revision: existing.create_revision,
                mod_revision: revision,
            };
            let event = Event {
                kind: EventKind::Delete,
                key: key.to_owned(),
                value: existing.value.clone(),
                revision,
                prev_value: Some(existing.value),
            };
            Ok(Ok((kv, event)))
        }
    }
}

/// The compare part of update/delete: the key must exist, at `expected` if given.
fn check(key: &str, existing: Option<Existing>, expected: Option<Revision>) -> Result<Existing> {
    let Some(existing) = existing else { return Err(Error::NotFound(key.to_owned())) };
    match expected {
        Some(expected) if expected != existing.mod_revision => {
            Err(Error::Conflict { key: key.to_owned(), expected, actual: existing.mod_revision })
        }
        _ => Ok(existing),
    }
}

fn set_current(conn: &Connection, key: &str, revision: Revision) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO current (key, id) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET id = excluded.id",
    )?
    .execute(params![key, revision])?;
    Ok(())
}

/// Removes history in `(from, to]`: every row superseded by a row in that range, and the
/// range's tombstones. Rows superseded by a newer row above `to` stay, so every event above
/// the compacted revision can still be replayed with its previous value.
fn compact_range(conn: &mut Connection, from: Revision, to: Revision) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let superseded = tx.execute(
        "DELETE FROM log WHERE id IN \
         (SELECT prev_revision FROM log WHERE id > ?1 AND id <= ?2 AND prev_revision > 0)",
        params![from, to],
    )?;
    let tombstones = tx.execute("DELETE FROM log WHERE id > ?1 AND id <= ?2 AND deleted = 1", params![from, to])?;
    tx.execute("UPDATE meta SET value = ?1 WHERE name = ?2", params![to, META_COMPACTED])?;
    tx.commit()?;
    Ok(superseded + tombstones)
}

/// The same storage failure, for every request of a failed group.
fn copy_storage_error(err: &rusqlite::Error) -> Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            Error::Storage(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => Error::Io(io::Error::other(other.to_string())),
    }
}
