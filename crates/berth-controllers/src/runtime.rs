//! Runs a reconciler over a work queue with kube-rs' `applier`: requests for the same object are
//! de-duplicated and never reconciled concurrently, failures are retried with per-object
//! exponential back-off, and a reconciler may ask to be called again after a delay.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use kube::Resource;
use kube::runtime::controller::{Action, Config, applier};
use kube::runtime::reflector::{ObjectRef, Store};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::util::backoff::Backoff;
use crate::util::meta;
use crate::util::selector::Selector;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Reconcile again after this long even if nothing changes (progress deadlines, minReadySeconds).
    pub requeue_after: Option<Duration>,
}

impl Outcome {
    /// Nothing more to do until something changes.
    pub fn done() -> Self {
        Outcome { requeue_after: None }
    }

    /// Check again after `delay`.
    pub fn after(delay: Duration) -> Self {
        Outcome { requeue_after: Some(delay) }
    }

    /// The earlier of two requests.
    pub fn merge(self, other: Outcome) -> Outcome {
        match (self.requeue_after, other.requeue_after) {
            (Some(a), Some(b)) => Outcome::after(a.min(b)),
            (a, b) => Outcome { requeue_after: a.or(b) },
        }
    }
}

/// The sending side of a controller's work queue.
pub struct Queue<K: Resource<DynamicType = ()>> {
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
}

impl<K: Resource<DynamicType = ()>> Clone for Queue<K> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone() }
    }
}

impl<K: Resource<DynamicType = ()>> Queue<K> {
    /// Asks for `namespace/name` to be reconciled.
    pub fn enqueue(&self, namespace: Option<&str>, name: &str) {
        let mut r = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        // The receiver lives as long as the controller; a closed queue means it has stopped.
        let _ = self.tx.unbounded_send(r);
    }

    /// Asks for `obj` to be reconciled.
    pub fn enqueue_object(&self, obj: &K) {
        let meta = obj.meta();
        if let Some(name) = meta.name.as_deref() {
            self.enqueue(meta.namespace.as_deref(), name);
        }
    }

    /// Asks for the controller of `child` to be reconciled if it is a `K` (same kind and API
    /// group, as upstream's `resolveControllerRef`). Returns whether `child` has a controller
    /// of any kind: only orphans are worth offering to adopters.
    pub fn enqueue_controller_of(&self, child: &ObjectMeta) -> bool {
        let Some(owner) = meta::controller_of(child) else { return false };
        let group = owner.api_version.rsplit_once('/').map_or("", |(group, _)| group);
        if owner.kind == K::kind(&()) && group == K::group(&()) {
            self.enqueue(child.namespace.as_deref(), &owner.name);
        }
        true
    }

    /// Asks for every object of `store` (in `namespace`, if given) to be reconciled: after a
    /// relist, when deletions may have been missed, or when something they all read changed.
    pub fn enqueue_all(&self, store: &Store<K>, namespace: Option<&str>)
    where
        K: Clone,
    {
        for obj in store.state() {
            if namespace.is_none_or(|ns| obj.meta().namespace.as_deref() == Some(ns)) {
                self.enqueue_object(&obj);
            }
        }
    }

    /// Asks for every object of `store` in `orphan`'s namespace whose selector (read by
    /// `selector`) selects it to be reconciled: the orphan's possible adopters. An empty or
    /// invalid selector selects nothing, as upstream. Orphans being deleted are not adopted.
    pub fn enqueue_adopters(
        &self,
        store: &Store<K>,
        orphan: &ObjectMeta,
        selector: impl Fn(&K) -> Option<&LabelSelector>,
    ) where
        K: Clone,
    {
        if orphan.deletion_timestamp.is_some() {
            return;
        }
        for obj in store.state() {
            let selects = obj.meta().namespace == orphan.namespace
                && selector(&obj)
                    .and_then(|s| Selector::from_label_selector(s).ok())
                    .is_some_and(|s| !s.is_everything() && s.matches(orphan.labels.as_ref()));
            if selects {
                self.enqueue_object(&obj);
            }
        }
    }
}

/// The receiving side of a controller's work queue.
pub struct QueueReceiver<K: Resource<DynamicType = ()>> {
    rx: mpsc::UnboundedReceiver<ObjectRef<K>>,
}

/// A new work queue.
pub fn queue<K: Resource<DynamicType = ()>>() -> (Queue<K>, QueueReceiver<K>) {
    let (tx, rx) = mpsc::unbounded();
    (Queue { tx }, QueueReceiver { rx })
}

/// Reconciles objects from `queue` (looked up in `store`) until the queue closes, starting once
/// `caches_ready` resolves: a controller must not act before every cache it reads has finished
/// its first list, or objects that are only not listed yet look missing (a ReplicaSet whose pods
/// are not listed yet would create them again). Upstream's controllers wait for their
/// informers to sync for the same reason. Requests queued meanwhile are kept.
pub async fn run<K, Ctx, E, F, Fut>(
    name: &'static str,
    caches_ready: impl Future<Output = ()>,
    store: Store<K>,
    queue: QueueReceiver<K>,
    ctx: Arc<Ctx>,
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
    E: std::error::Error + Send + 'static,
    F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, E>> + Send + 'static,
{
    caches_ready.await;
    let _ = store.wait_until_ready().await;
    let backoff = Arc::new(Backoff::default());
    let reconcile = Arc::new(reconcile);
    let backoff_ok = backoff.clone();
    let reconciler = move |obj: Arc<K>, ctx: Arc<Ctx>| {
        let reconcile = reconcile.clone();
        let backoff = backoff_ok.clone();
        let key = object_key(obj.as_ref());
        async move {
            let result = reconcile(obj, ctx).await;
            if result.is_ok() {
                backoff.reset(&key);
            }
            result.map(|o| match o.requeue_after {
                Some(d) => Action::requeue(d),
                None => Action::await_change(),
            })
        }
        .boxed()
    };
    let error_policy = move |obj: Arc<K>, err: &E, _ctx: Arc<Ctx>| {
        let key = object_key(obj.as_ref());
        let delay = backoff.next_delay(&key);
        tracing::info!(controller = name, object = %key, error = %err, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    };
    let requests = queue.rx.map(Ok::<_, Infallible>);
    let results = applier(reconciler, error_policy, ctx, store, requests, Config::default());
    futures::pin_mut!(results);
    while let Some(result) = results.next().await {
        if let Err(err) = result {
            tracing::debug!(controller = name, %err, "reconcile request dropped");
        }
    }
}

fn object_key<K: Resource>(obj: &K) -> String {
    crate::util::meta::key(obj.meta())
}
