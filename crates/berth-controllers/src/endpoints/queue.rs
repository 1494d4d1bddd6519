//! A de-duplicating work queue of Service keys with per-key exponential retry delays, in the
//! manner of client-go's rate-limited work queue (5 ms doubling, capped).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

const RETRY_BASE: Duration = Duration::from_millis(5);
// Upstream caps at 1000 s; on one machine nothing else would retry sooner, so keep it short.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// `namespace/name` of a Service (and of the Endpoints named after it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Default)]
struct State {
    order: VecDeque<ServiceKey>,
    queued: HashSet<ServiceKey>,
    failures: HashMap<ServiceKey, u32>,
}

/// The queue; cheap to clone, all clones share it.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for `key` to be synced; a key already waiting is not queued twice.
    pub fn add(&self, key: ServiceKey) {
        let mut state = self.lock();
        if state.queued.insert(key.clone()) {
            state.order.push_back(key);
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Asks for `key` to be synced after `delay`.
    pub fn add_after(&self, key: ServiceKey, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Requeues `key` after its next back-off delay (a failed sync).
    pub fn retry(&self, key: ServiceKey) -> Duration {
        let delay = {
            let mut state = self.lock();
            let n = state.failures.entry(key.clone()).or_insert(0);
            let delay = RETRY_BASE.saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX)).min(RETRY_MAX);
            *n = n.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
        delay
    }

    /// Forgets the failures of a key that synced cleanly.
    pub fn forget(&self, key: &ServiceKey) {
        self.lock().failures.remove(key);
    }

    /// Waits for the next key. Keys come out in the order they were first added.
    pub async fn next(&self) -> ServiceKey {
        loop {
            let notified = self.wake.notified();
            {
                let mut state = self.lock();
                if let Some(key) = state.order.pop_front() {
                    state.queued.remove(&key);
                    return key;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_retries_back_off() {
        let q = WorkQueue::default();
        q.add(ServiceKey::new("a", "x"));
        q.add(ServiceKey::new("a", "y"));
        q.add(ServiceKey::new("a", "x"));
        assert_eq!(q.next().await, ServiceKey::new("a", "x"));
        assert_eq!(q.next().await, ServiceKey::new("a", "y"));
        let k = ServiceKey::new("a", "z");
        assert_eq!(q.retry(k.clone()), Duration::from_millis(5));
        assert_eq!(q.retry(k.clone()), Duration::from_millis(10));
        q.forget(&k);
        assert_eq!(q.retry(k.clone()), Duration::from_millis(5));
        // The retried key comes back after its delay.
        assert_eq!(q.next().await, k);
    }
}
