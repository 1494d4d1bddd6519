//! Remembers what the controllers just wrote so a sync never acts on a watch cache that has not
//! caught up with its own writes (upstream `EndpointSliceTracker` and `staleEndpointsTracker`):
//! acting on a stale cache would create duplicate slices or fail on conflicts.
//!
//! Upstream compares slice generations; EndpointSlices have no spec, so Berth (like etcd)
//! gives them no generation and the tracker compares resourceVersions as numbers instead.
//! An unparsable resourceVersion never counts as stale.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::queue::ServiceKey;

/// A write the cache has not shown yet is forgotten after this long, so an object removed
/// behind the controller's back (and never seen) cannot block its Service forever.
const EXPECTATION_TTL: Duration = Duration::from_secs(10);

fn revision(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|v| v.parse().ok())
}

#[derive(Debug, Clone)]
enum Expectation {
    /// Written at this revision: the cache must show it at least this new.
    AtLeast(Option<u64>),
    /// Deleted: the cache must no longer show this uid.
    Gone(String),
}

/// What is expected of each slice of one Service (by name), and since when.
type Expectations = HashMap<String, (Expectation, Instant)>;

/// Slices written per Service.
#[derive(Default)]
pub struct SliceTracker {
    expected: Mutex<HashMap<ServiceKey, Expectations>>,
}

impl SliceTracker {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ServiceKey, Expectations>) -> R) -> R {
        let mut guard = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Records a slice returned by a create or update.
    pub fn written(&self, key: &ServiceKey, slice: &EndpointSlice) {
        let Some(name) = slice.metadata.name.clone() else { return };
        let rv = revision(slice.metadata.resource_version.as_deref());
        self.with(|m| m.entry(key.clone()).or_default().insert(name, (Expectation::AtLeast(rv), Instant::now())));
    }

    /// Records a slice the controller deleted.
    pub fn deleted(&self, key: &ServiceKey, slice: &EndpointSlice) {
        let (Some(name), Some(uid)) = (slice.metadata.name.clone(), slice.metadata.uid.clone()) else { return };
        self.with(|m| m.entry(key.clone()).or_default().insert(name, (Expectation::Gone(uid), Instant::now())));
    }

    /// A slice disappeared from the cache: nothing more to wait for about it.
    pub fn observed_deletion(&self, key: &ServiceKey, name: &str) {
        self.with(|m| {
            if let Some(slices) = m.get_mut(key) {
                slices.remove(name);
            }
        });
    }

    /// Forgets a Service that is gone.
    pub fn forget(&self, key: &ServiceKey) {
        self.with(|m| m.remove(key));
    }

    /// Whether the cache (looked up by slice name) still lags a write for this Service.
    /// Expectations the cache has met are dropped.
    pub fn is_stale(
        &self,
        key: &ServiceKey,
        cached: impl Fn(&str) -> Option<(Option<String>, Option<String>)>,
    ) -> bool {
        self.with(|m| {
            let Some(slices) = m.get_mut(key) else { return false };
            let mut stale = false;
            slices.retain(|name, (expectation, since)| {
                let seen = cached(name);
                let lagging = match (&*expectation, &seen) {
                    (Expectation::AtLeast(want), Some((rv, _))) => match (want, revision(rv.as_deref())) {
                        (Some(want), Some(have)) => have < *want,
                        _ => false,
                    },
                    // Written but not seen yet.
                    (Expectation::AtLeast(_), None) => true,
                    (Expectation::Gone(uid), Some((_, seen_uid))) => seen_uid.as_deref() == Some(uid.as_str()),
                    (Expectation::Gone(_), None) => false,
                };
                if lagging && since.elapsed() < EXPECTATION_TTL {
                    stale = true;
                    true
                } else {
                    false
                }
            });
            if slices.is_empty() {
                m.remove(key);
            }
            stale
        })
    }
}

/// The resourceVersions of Endpoints the controller has replaced: seeing one again in the
/// cache means the cache is behind.
#[derive(Default)]
pub struct EndpointsTracker {
    replaced: Mutex<HashMap<ServiceKey, String>>,
}

impl EndpointsTracker {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<ServiceKey, String>) -> R) -> R {
        let mut guard = self.replaced.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Records that the version `old_rv` of the Endpoints was replaced.
    pub fn replaced(&self, key: &ServiceKey, old_rv: &str) {
        self.with(|m| m.insert(key.clone(), old_rv.to_string()));
    }

    /// Whether the cached version is one the controller already replaced.
    pub fn is_stale(&self, key: &ServiceKey, cached_rv: Option<&str>) -> bool {
        self.with(|m| cached_rv.is_some() && m.get(key).map(String::as_str) == cached_rv)
    }

    /// Forgets a Service that is gone.
    pub fn forget(&self, key: &ServiceKey) {
        self.with(|m| m.remove(key));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(name: &str, rv: &str, uid: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: None,
        }
    }

    #[test]
    fn stale_until_the_cache_shows_the_write() {
        let t = SliceTracker::default();
        let key = ServiceKey::new("ns", "web");
        t.written(&key, &slice("web-a", "10", "u1"));
        assert!(t.is_stale(&key, |_| None));
        assert!(t.is_stale(&key, |_| Some((Some("9".into()), Some("u1".into())))));
        assert!(!t.is_stale(&key, |_| Some((Some("10".into()), Some("u1".into())))));
        // Met expectations are dropped.
        assert!(!t.is_stale(&key, |_| None));

        t.deleted(&key, &slice("web-a", "11", "u1"));
        assert!(t.is_stale(&key, |_| Some((Some("11".into()), Some("u1".into())))));
        // A new slice that reuses the name is not the deleted one.
        assert!(!t.is_stale(&key, |_| Some((Some("12".into()), Some("u2".into())))));
    }

    #[test]
    fn replaced_endpoints_versions_are_stale() {
        let t = EndpointsTracker::default();
        let key = ServiceKey::new("ns", "web");
        t.replaced(&key, "7");
        assert!(t.is_stale(&key, Some("7")));
        assert!(!t.is_stale(&key, Some("8")));
        t.forget(&key);
        assert!(!t.is_stale(&key, Some("7")));
    }
}
