//! What a ReplicaSet controller has just done that its pod cache may not show yet (upstream's
//! `ControllerExpectations`, tracked per pod uid). Pods it created count as existing until the
//! watch delivers them, and pods it deleted count as gone, so a lagging cache never causes a
//! duplicate create or delete. Entries expire after five minutes, as upstream's do, in case a
//! watch event is never seen.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use crate::util::meta;

const TTL: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Inner {
    /// uid -> (owner key, when created) for pods created but not yet seen in the cache.
    creates: HashMap<String, (String, Instant)>,
    /// uid -> (owner key, when deleted) for pods deleted but still shown as live in the cache.
    deletes: HashMap<String, (String, Instant)>,
    /// Pods the watch has shown, so a create response that arrives after the watch event
    /// does not leave a stale expectation behind.
    seen: HashMap<String, Instant>,
    /// Pods the watch has shown deleted or terminating.
    gone: HashMap<String, Instant>,
    last_prune: Option<Instant>,
}

impl Inner {
    fn prune(&mut self) {
        let now = Instant::now();
        if self.last_prune.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return;
        }
        self.last_prune = Some(now);
        self.creates.retain(|_, (_, t)| now.duration_since(*t) < TTL);
        self.deletes.retain(|_, (_, t)| now.duration_since(*t) < TTL);
        self.seen.retain(|_, t| now.duration_since(*t) < TTL);
        self.gone.retain(|_, t| now.duration_since(*t) < TTL);
    }
}

/// Outstanding creates and deletes of one owner.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Created pods not yet in the cache.
    pub creates: usize,
    /// Uids of deleted pods the cache still shows as live.
    pub deletes: HashSet<String>,
}

/// Expectations of every owner of one controller.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<Inner>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watch showed this pod (added, modified, or with a deletion timestamp when `terminating`).
    pub fn observe(&self, uid: &str, terminating: bool) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.creates.remove(uid);
        inner.seen.insert(uid.to_string(), now);
        if terminating {
            inner.deletes.remove(uid);
            inner.gone.insert(uid.to_string(), now);
        }
    }

    /// The watch showed this pod deleted.
    pub fn observe_deleted(&self, uid: &str) {
        self.observe(uid, true);
    }

    /// Observes what a pod watch event shows; returns the pod it carries, if any.
    pub fn observe_event<'e>(&self, event: &'e watcher::Event<Pod>) -> Option<&'e Pod> {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                self.observe(
                    pod.metadata.uid.as_deref().unwrap_or_default(),
                    pod.metadata.deletion_timestamp.is_some(),
                );
                Some(pod)
            }
            watcher::Event::Delete(pod) => {
                self.observe_deleted(meta::uid(&pod.metadata));
                Some(pod)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }

    /// `owner` created the pod `uid`.
    pub fn created(&self, owner: &str, uid: &str) {
        let mut inner = self.lock();
        if !inner.seen.contains_key(uid) {
            inner.creates.insert(uid.to_string(), (owner.to_string(), Instant::now()));
        }
    }

    /// `owner` is about to delete the pod `uid`.
    pub fn deleting(&self, owner: &str, uid: &str) {
        let mut inner = self.lock();
        if !inner.gone.contains_key(uid) {
            inner.deletes.insert(uid.to_string(), (owner.to_string(), Instant::now()));
        }
    }

    /// A delete that failed: the pod is still there.
    pub fn delete_failed(&self, uid: &str) {
        self.lock().deletes.remove(uid);
    }

    /// Outstanding work of `owner`. `cached` are the uids of the pods the cache shows as owned
    /// and live: a create already visible there is settled.
    pub fn pending<'a>(&self, owner: &str, cached: impl IntoIterator<Item = &'a str>) -> Pending {
        let mut inner = self.lock();
        inner.prune();
        let cached: HashSet<&str> = cached.into_iter().collect();
        let now = Instant::now();
        inner.creates.retain(|uid, (_, t)| !cached.contains(uid.as_str()) && now.duration_since(*t) < TTL);
        let creates = inner.creates.values().filter(|(o, _)| o == owner).count();
        // A delete settles once the cache no longer lists the pod as live.
        inner
            .deletes
            .retain(|uid, (o, t)| now.duration_since(*t) < TTL && (o != owner || cached.contains(uid.as_str())));
        let deletes = inner.deletes.iter().filter(|(_, (o, _))| o == owner).map(|(u, _)| u.clone()).collect();
        Pending { creates, deletes }
    }

    /// Drops everything about a deleted owner.
    pub fn forget(&self, owner: &str) {
        let mut inner = self.lock();
        inner.creates.retain(|_, (o, _)| o != owner);
        inner.deletes.retain(|_, (o, _)| o != owner);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_pods_count_until_seen() {
        let e = Expectations::default();
        e.created("ns/rs", "p1");
        e.created("ns/rs", "p2");
        e.created("ns/other", "p3");
        assert_eq!(e.pending("ns/rs", []).creates, 2);
        e.observe("p1", false);
        assert_eq!(e.pending("ns/rs", []).creates, 1);
        // Visible in the cache settles it even without an event.
        assert_eq!(e.pending("ns/rs", ["p2"]).creates, 0);
        assert_eq!(e.pending("ns/other", []).creates, 1);
    }

    #[test]
    fn watch_event_before_create_response_leaves_nothing_pending() {
        let e = Expectations::default();
        e.observe("p1", false);
        e.created("ns/rs", "p1");
        assert_eq!(e.pending("ns/rs", []).creates, 0);
    }

    #[test]
    fn deleted_pods_stay_gone_until_the_cache_drops_them() {
        let e = Expectations::default();
        e.deleting("ns/rs", "p1");
        assert!(e.pending("ns/rs", ["p1"]).deletes.contains("p1"));
        // Cache no longer lists the pod: settled.
        assert!(e.pending("ns/rs", []).deletes.is_empty());
        e.deleting("ns/rs", "p2");
        e.observe_deleted("p2");
        assert!(e.pending("ns/rs", ["p2"]).deletes.is_empty());
        e.deleting("ns/rs", "p3");
        e.delete_failed("p3");
        assert!(e.pending("ns/rs", ["p3"]).deletes.is_empty());
    }

    #[test]
    fn forget_drops_an_owner() {
        let e = Expectations::default();
        e.created("ns/rs", "p1");
        e.deleting("ns/rs", "p2");
        e.forget("ns/rs");
        assert_eq!(e.pending("ns/rs", ["p2"]), Pending::default());
    }
}
