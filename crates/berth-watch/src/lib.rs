//! One helper shared by the components that rebuild a snapshot from several kinds (the
//! service proxy, cluster DNS): a reflector store per kind, and one `Notify` woken on every
//! change so that the owner rebuilds once per burst of events.

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use tokio::sync::Notify;

/// A store of `K` kept current from the API, and the future that keeps it: every applied or
/// deleted object wakes `changed`; watch errors are logged and retried with back-off.
pub fn watch<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, impl std::future::Future<Output = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let run = async move {
        let stream =
            reflector::reflector(writer, watcher(api, watcher::Config::default().any_semantic()).default_backoff());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(err) => tracing::warn!(kind = %K::kind(&()), %err, "watch failed, retrying"),
            }
        }
    };
    (reader, run)
}
