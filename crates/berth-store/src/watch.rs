//! In-memory watch feed: the writer publishes each committed group here, no polling.
//!
//! The hub keeps a ring of recent commit groups (so most watches start without touching
//! SQLite) and a broadcast channel to live watchers. Publishing and subscribing happen under
//! the same lock, so a new watcher's replay ends exactly where its live feed begins: no gap,
//! no duplicate. Broadcasting never waits: a watcher that falls more than the channel's
//! capacity behind sees `Lagged` and is closed with `Error::WatchLagged`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::{CommitObserver, Error, Event, Result, Revision};

/// The events of one commit, in revision order.
pub(crate) type Group = Arc<[Event]>;

pub(crate) struct Hub {
    state: Mutex<HubState>,
    live: broadcast::Sender<Group>,
}

struct HubState {
    current: Revision,
    compacted: Revision,
    /// Every event with revision in `(ring_floor, current]`, grouped by commit.
    ring: VecDeque<Group>,
    ring_events: usize,
    ring_floor: Revision,
    ring_capacity: usize,
    /// Called with each group before it is broadcast (see [`CommitObserver`]).
    observers: Vec<Arc<dyn CommitObserver>>,
}

/// Where a new watch finds the events between its start revision and the live feed.
pub(crate) enum Replay {
    /// Everything needed was in memory (already filtered by prefix).
    Cached(Vec<crate::Event>),
    /// Read `(after, upto]` from the log table.
    Log { upto: Revision },
}

pub(crate) struct Subscription {
    pub(crate) replay: Replay,
    /// The store's revision at subscription; live groups are all above it.
    pub(crate) upto: Revision,
    pub(crate) live: broadcast::Receiver<Group>,
}

impl Hub {
    pub(crate) fn new(current: Revision, compacted: Revision, ring_capacity: usize, lag_limit: usize) -> Hub {
        let (live, _) = broadcast::channel(lag_limit.max(1));
        Hub {
            state: Mutex::new(HubState {
                current,
                compacted,
                ring: VecDeque::new(),
                ring_events: 0,
                ring_floor: current,
                ring_capacity,
                observers: Vec::new(),
            }),
            live,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (current, compacted)
    pub(crate) fn revisions(&self) -> (Revision, Revision) {
        let state = self.lock();
        (state.current, state.compacted)
    }

    pub(crate) fn subscriber_count(&self) -> usize {
        self.live.receiver_count()
    }

    /// Records a committed group (ending at revision `current`) and hands it to watchers.
    pub(crate) fn publish(&self, events: Vec<Event>, current: Revision) {
        let mut state = self.lock();
        state.current = current;
        if events.is_empty() {
            return;
        }
        let group: Group = events.into();
        for observer in &state.observers {
            observer.committed(&group, current);
        }
        state.ring_events += group.len();
        state.ring.push_back(Arc::clone(&group));
        while state.ring_events > state.ring_capacity {
            let Some(oldest) = state.ring.pop_front() else { break };
            state.ring_events -= oldest.len();
            if let Some(last) = oldest.last() {
                state.ring_floor = last.revision;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(group);
    }

    /// Adds an observer; returns the revision after which it sees every commit.
    pub(crate) fn observe(&self, observer: Arc<dyn CommitObserver>) -> Revision {
        let mut state = self.lock();
        state.observers.push(observer);
        state.current
    }

    pub(crate) fn set_compacted(&self, compacted: Revision) {
        self.lock().compacted = compacted;
    }

    pub(crate) fn subscribe(&self, prefix: &str, after: Revision) -> Result<Subscription> {
        let state = self.lock();
        if after < state.compacted {
            return Err(Error::Compacted { requested: after, compacted: state.compacted });
        }
        if after > state.current {
            return Err(Error::FutureRevision { requested: after, current: state.current });
        }
        let live = self.live.subscribe();
        let replay = if after >= state.ring_floor {
            let events = state
                .ring
                .iter()
                .flat_map(|group| group.iter())
                .filter(|event| event.revision > after && event.key.starts_with(prefix))
                .cloned()
                .collect();
            Replay::Cached(events)
        } else {
            Replay::Log { upto: state.current }
        };
        Ok(Subscription { replay, upto: state.current, live })
    }
}
