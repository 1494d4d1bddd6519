//! Read-your-writes on top of a watch cache. After a controller writes an object, the cache may
//! still show the version it replaced for a moment; a sync that starts in that window would work
//! from stale data and its writes would fail with a conflict. The overlay remembers each write and
//! which resourceVersions it superseded, and hands back the written copy while the cache lags.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::Resource;

struct Entry<K> {
    superseded: HashSet<String>,
    latest: K,
}

/// Objects this controller wrote, by uid.
pub struct Overlay<K> {
    entries: Mutex<HashMap<String, Entry<K>>>,
}

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Overlay { entries: Mutex::new(HashMap::new()) }
    }
}

fn rv<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta().resource_version.as_deref()
}

fn uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta().uid.as_deref()
}

impl<K: Resource + Clone> Overlay<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<K>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `written` replaced the version `previous_rv`.
    pub fn record(&self, previous_rv: Option<&str>, written: &K) {
        let (Some(uid), Some(prev)) = (uid(written), previous_rv) else {
            return;
        };
        let mut entries = self.lock();
        match entries.get_mut(uid) {
            Some(entry) if rv(&entry.latest) == Some(prev) => {
                entry.superseded.insert(prev.to_string());
                entry.latest = written.clone();
            }
            _ => {
                let superseded = std::iter::once(prev.to_string()).collect();
                entries.insert(uid.to_string(), Entry { superseded, latest: written.clone() });
            }
        }
    }

    /// The freshest known version of `cached`: our own write if the cache has not caught up.
    pub fn latest(&self, cached: &K) -> K {
        let (Some(uid), Some(cached_rv)) = (uid(cached), rv(cached)) else {
            return cached.clone();
        };
        let mut entries = self.lock();
        if let Some(entry) = entries.get(uid) {
            if entry.superseded.contains(cached_rv) {
                return entry.latest.clone();
            }
            // The cache shows our write or something newer: it is current again.
            entries.remove(uid);
        }
        cached.clone()
    }

    /// Forgets a deleted object.
    pub fn forget(&self, obj: &K) {
        if let Some(uid) = uid(obj) {
            self.lock().remove(uid);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm(rv: &str, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { uid: Some("u".into()), resource_version: Some(rv.into()), ..Default::default() },
            data: Some([("k".to_string(), data.to_string())].into_iter().collect()),
            ..Default::default()
        }
    }

    #[test]
    fn stale_cache_yields_the_written_copy_until_it_catches_up() {
        let o = Overlay::default();
        o.record(Some("1"), &cm("2", "mine"));
        o.record(Some("2"), &cm("3", "mine again"));
        assert_eq!(o.latest(&cm("1", "old")).resource_version(), Some("3".into()));
        assert_eq!(o.latest(&cm("2", "old")).resource_version(), Some("3".into()));
        // The cache caught up (or someone else wrote): trust it.
        assert_eq!(o.latest(&cm("4", "theirs")).resource_version(), Some("4".into()));
        assert_eq!(o.latest(&cm("1", "old")).resource_version(), Some("1".into()));
    }

    trait Rv {
        fn resource_version(&self) -> Option<String>;
    }
    impl Rv for ConfigMap {
        fn resource_version(&self) -> Option<String> {
            self.metadata.resource_version.clone()
        }
    }
}
