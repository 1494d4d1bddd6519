//! A watch-fed cache of one resource kind that fans every watch event out to the controllers that
//! registered interest (client-go's shared informer, built from kube-rs' `watcher` and `reflector`).
//! Sharing one informer per kind keeps a single watch per kind however many controllers read it.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

type Handler<K> = Arc<dyn Fn(&watcher::Event<K>) + Send + Sync>;

/// An informer being set up: register handlers, then [`Informer::run`] it.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    reader: Store<K>,
    writer: Writer<K>,
    handlers: Vec<Handler<K>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// An informer over every object `api` can list.
    pub fn new(api: Api<K>) -> Self {
        let (reader, writer) = reflector::store();
        Informer { api, reader, writer, handlers: Vec::new() }
    }

    /// The cache this informer keeps current.
    pub fn store(&self) -> Store<K> {
        self.reader.clone()
    }

    /// Calls `handler` for every watch event, after the cache has applied it.
    pub fn on_event(&mut self, handler: impl Fn(&watcher::Event<K>) + Send + Sync + 'static) {
        self.handlers.push(Arc::new(handler));
    }

    /// Watches forever; watch errors are retried with back-off.
    pub async fn run(self) {
        let Informer { api, writer, handlers, .. } = self;
        let config = watcher::Config::default().any_semantic();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    for h in &handlers {
                        h(&event);
                    }
                }
                Err(err) => tracing::warn!(kind = %K::kind(&()), %err, "watch failed, retrying"),
            }
        }
    }
}

/// The object an event carries, if any (`Init` and `InitDone` carry none).
pub fn event_object<K>(event: &watcher::Event<K>) -> Option<&K> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) => Some(o),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}
