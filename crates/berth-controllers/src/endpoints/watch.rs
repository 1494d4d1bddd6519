//! A watch-fed cache of one kind that calls a handler for every event after the cache has
//! applied it (a small shared informer over kube-rs' `watcher` and `reflector`).

use std::fmt::Debug;
use std::future::Future;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Starts caching what `api` lists. Returns the cache and the future that keeps it current
/// (watch failures are retried with back-off; the future only ends if the stream does).
pub fn watch<K, H>(api: Api<K>, handler: H) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: Fn(&watcher::Event<K>) + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let run = async move {
        let config = watcher::Config::default().any_semantic();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => handler(&event),
                Err(err) => tracing::warn!(kind = %K::kind(&()), %err, "watch failed, retrying"),
            }
        }
    };
    (reader, run)
}
