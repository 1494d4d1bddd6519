//! One helper shared by every component that keeps watch-fed caches (the service proxy,
//! cluster DNS, the router, the endpoints controllers): a reflector store per kind, kept
//! current by a future its owner runs, with a callback after each applied event; the usual
//! callback wakes one `Notify` so that the owner rebuilds once per burst of events.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// A store of `K` kept current from the API, and the future that keeps it: every applied or
/// deleted object wakes `changed`; watch errors are logged and retried with back-off.
pub fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watch_with(api, (), move |_| changed.notify_one())
}

/// As [`watch`] for any kind (`dyntype` names a dynamic one), calling `on_event` after the
/// store has applied each event.
pub fn watch_with<K, H>(
    api: Api<K>,
    dyntype: K::DynamicType,
    mut on_event: H,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync + 'static,
    H: FnMut(&watcher::Event<K>) + Send + 'static,
{
    let writer = reflector::store::Writer::new(dyntype.clone());
    let reader = writer.as_reader();
    let run = async move {
        let stream =
            reflector::reflector(writer, watcher(api, watcher::Config::default().any_semantic()).default_backoff());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => on_event(&event),
                Err(err) => tracing::warn!(kind = %K::kind(&dyntype), %err, "watch failed, retrying"),
            }
        }
    };
    (reader, run)
}
