//! The EndpointSlice, Endpoints and EndpointSliceMirroring controllers: for every Service with
//! a selector, keep its `discovery.k8s.io/v1` EndpointSlices and its core/v1 Endpoints listing
//! the selected pods, with readiness as upstream defines it (`pkg/controller/endpointslice` and
//! `pkg/controller/endpoint`). Services without a selector are left to their users, who write
//! their own EndpointSlices, or Endpoints that are mirrored into EndpointSlices
//! (`pkg/controller/endpointslicemirroring`); ExternalName Services get nothing.
//!
//! All three are level-triggered: watch events on Services, Pods, Nodes, EndpointSlices and
//! Endpoints only queue Service keys, and each sync recomputes the whole desired state from
//! the watch caches and writes the difference.
//!
//! This module uses nothing from the rest of the crate, so it can be compiled on its own.

pub mod apiserver;
pub mod core_endpoints;
pub mod mirroring;
pub mod pods;
pub mod queue;
pub mod slices;
pub mod tracker;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::{Api, Client};

use queue::{ServiceKey, WorkQueue};
use tracker::{EndpointsTracker, SliceTracker};

/// Why the controllers stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch or worker ended, which only happens when its stream closes.
    #[error("endpoints controllers: {0} stopped")]
    Stopped(&'static str),
}

/// Why one sync of one Service failed; the Service is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API request failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The watch cache does not show this controller's own last write yet.
    #[error("the {0} cache has not caught up with this controller's last write yet")]
    StaleCache(&'static str),
    /// Some selected pods name nodes that do not exist; they were left out for now.
    #[error("pods {pods:?} of service {service} are on nodes that do not exist")]
    NodesMissing {
        /// The Service.
        service: String,
        /// The pods left out.
        pods: Vec<String>,
    },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let action = action.into();
    move |source| SyncError::Api { action, source }
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Whether a create failed because its namespace is being deleted; nothing more can be
/// created there, so the sync is dropped rather than retried.
fn is_namespace_terminating(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => {
            s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
                || (s.code == 403 && s.message.contains("because it is being terminated"))
        }
        _ => false,
    }
}

/// The watch caches and write trackers both controllers share.
struct Shared {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    slice_tracker: Arc<SliceTracker>,
    mirror_tracker: Arc<SliceTracker>,
    endpoints_tracker: EndpointsTracker,
}

fn object_key(meta: &ObjectMeta) -> ServiceKey {
    ServiceKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// The Services (with selectors) in the pod's namespace whose selector matches it.
fn services_selecting(services: &Store<Service>, pod: &Pod) -> BTreeSet<ServiceKey> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            pods::service_selector(s).is_some_and(|sel| pods::selector_matches(sel, pod.metadata.labels.as_ref()))
        })
        .map(|s| object_key(&s.metadata))
        .collect()
}

fn all_services(services: &Store<Service>) -> Vec<ServiceKey> {
    services.state().iter().map(|s| object_key(&s.metadata)).collect()
}

/// The Service a slice managed by the EndpointSlice controller belongs to.
fn managed_slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    slice_service_managed_by(slice, slices::CONTROLLER_NAME)
}

/// The Service (and Endpoints) a slice managed by `controller` belongs to.
fn slice_service_managed_by(slice: &EndpointSlice, controller: &str) -> Option<ServiceKey> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(slices::LABEL_MANAGED_BY).map(String::as_str) != Some(controller) {
        return None;
    }
    let service = labels.get(slices::LABEL_SERVICE_NAME).filter(|n| !n.is_empty())?;
    Some(ServiceKey::new(slice.metadata.namespace.clone().unwrap_or_default(), service.clone()))
}

/// Runs both controllers until one of their watches or workers stops (which is an error) or
/// the future is dropped.
pub async fn run(client: Client) -> Result<(), Error> {
    let slice_queue = WorkQueue::default();
    let endpoints_queue = WorkQueue::default();
    let mirror_queue = WorkQueue::default();
    let slice_tracker = Arc::new(SliceTracker::default());
    let mirror_tracker = Arc::new(SliceTracker::default());

    let (services, services_watch) = berth_watch::watch_with(Api::<Service>::all(client.clone()), (), {
        let (sq, eq, mq) = (slice_queue.clone(), endpoints_queue.clone(), mirror_queue.clone());
        move |event| {
            if let Event::Apply(s) | Event::InitApply(s) | Event::Delete(s) = event {
                let key = object_key(&s.metadata);
                sq.add(key.clone());
                eq.add(key.clone());
                mq.add(key);
            }
        }
    });

    let (pods, pods_watch) = berth_watch::watch_with(Api::<Pod>::all(client.clone()), (), {
        let (sq, eq, services) = (slice_queue.clone(), endpoints_queue.clone(), services.clone());
        // The Services each pod last matched: a pod whose labels changed must also leave the
        // Services it no longer matches, and watch events carry only the new labels.
        let memberships: Mutex<HashMap<ServiceKey, BTreeSet<ServiceKey>>> = Mutex::default();
        move |event| {
            let enqueue = |keys: &BTreeSet<ServiceKey>| {
                for key in keys {
                    sq.add(key.clone());
                    eq.add(key.clone());
                }
            };
            match event {
                Event::Apply(pod) | Event::InitApply(pod) => {
                    let now = services_selecting(&services, pod);
                    let before = memberships
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(object_key(&pod.metadata), now.clone())
                        .unwrap_or_default();
                    enqueue(&now.union(&before).cloned().collect());
                }
                Event::Delete(pod) => {
                    let mut keys = services_selecting(&services, pod);
                    let before =
                        memberships.lock().unwrap_or_else(|e| e.into_inner()).remove(&object_key(&pod.metadata));
                    keys.extend(before.into_iter().flatten());
                    enqueue(&keys);
                }
                // A relist may have hidden deletions: look at everything again.
                Event::InitDone => enqueue(&all_services(&services).into_iter().collect()),
                Event::Init => {}
            }
        }
    });

    let (nodes, nodes_watch) = berth_watch::watch_with(Api::<Node>::all(client.clone()), (), {
        let (sq, services) = (slice_queue.clone(), services.clone());
        // Only a node appearing, disappearing or changing zone matters to endpoints; its
        // frequent status updates do not.
        let zones: Mutex<HashMap<String, Option<String>>> = Mutex::default();
        move |event| {
            let changed = match event {
                Event::Apply(node) | Event::InitApply(node) => {
                    let zone = node.metadata.labels.as_ref().and_then(|l| l.get(slices::LABEL_ZONE).cloned());
                    let name = node.metadata.name.clone().unwrap_or_default();
                    zones.lock().unwrap_or_else(|e| e.into_inner()).insert(name, zone.clone()) != Some(zone)
                }
                Event::Delete(node) => {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    zones.lock().unwrap_or_else(|e| e.into_inner()).remove(&name).is_some()
                }
                Event::Init | Event::InitDone => false,
            };
            if changed {
                for key in all_services(&services) {
                    sq.add(key);
                }
            }
        }
    });

    let (slice_store, slices_watch) = berth_watch::watch_with(Api::<EndpointSlice>::all(client.clone()), (), {
        let (sq, mq) = (slice_queue.clone(), mirror_queue.clone());
        let (tracker, mirror_tracker) = (slice_tracker.clone(), mirror_tracker.clone());
        move |event| match event {
            Event::Apply(slice) | Event::InitApply(slice) => {
                if let Some(key) = managed_slice_service(slice) {
                    sq.add(key);
                } else if let Some(key) = slice_service_managed_by(slice, mirroring::CONTROLLER_NAME) {
                    mq.add(key);
                }
            }
            Event::Delete(slice) => {
                let name = slice.metadata.name.as_deref().unwrap_or("");
                if let Some(key) = managed_slice_service(slice) {
                    tracker.observed_deletion(&key, name);
                    sq.add(key);
                } else if let Some(key) = slice_service_managed_by(slice, mirroring::CONTROLLER_NAME) {
                    mirror_tracker.observed_deletion(&key, name);
                    mq.add(key);
                }
            }
            Event::Init | Event::InitDone => {}
        }
    });

    let (endpoints, endpoints_watch) = berth_watch::watch_with(Api::<Endpoints>::all(client.clone()), (), {
        let (eq, mq) = (endpoints_queue.clone(), mirror_queue.clone());
        move |event| match event {
            Event::Apply(e) | Event::InitApply(e) => mq.add(object_key(&e.metadata)),
            Event::Delete(e) => {
                eq.add(object_key(&e.metadata));
                mq.add(object_key(&e.metadata));
            }
            Event::Init | Event::InitDone => {}
        }
    });

    let shared = Arc::new(Shared {
        client,
        services,
        pods,
        nodes,
        slices: slice_store,
        endpoints,
        slice_tracker,
        mirror_tracker,
        endpoints_tracker: EndpointsTracker::default(),
    });

    let workers = async move {
        // Syncing before every cache is complete would delete what only looks missing.
        let _ = futures::join!(
            shared.services.wait_until_ready(),
            shared.pods.wait_until_ready(),
            shared.nodes.wait_until_ready(),
            shared.slices.wait_until_ready(),
            shared.endpoints.wait_until_ready(),
        );
        for key in all_services(&shared.services) {
            slice_queue.add(key.clone());
            endpoints_queue.add(key);
        }
        // Endpoints left behind by Services deleted while the controller was down, and
        // Endpoints to mirror.
        for e in shared.endpoints.state() {
            endpoints_queue.add(object_key(&e.metadata));
            mirror_queue.add(object_key(&e.metadata));
        }
        tracing::info!("endpoints, endpointslice and endpointslice mirroring controllers started");
        futures::join!(
            worker(Controller::EndpointSlice, shared.clone(), slice_queue),
            worker(Controller::Endpoints, shared.clone(), endpoints_queue),
            worker(Controller::Mirroring, shared, mirror_queue),
        );
    };

    tokio::select! {
        _ = services_watch => Err(Error::Stopped("service watch")),
        _ = pods_watch => Err(Error::Stopped("pod watch")),
        _ = nodes_watch => Err(Error::Stopped("node watch")),
        _ = slices_watch => Err(Error::Stopped("endpointslice watch")),
        _ = endpoints_watch => Err(Error::Stopped("endpoints watch")),
        _ = workers => Err(Error::Stopped("endpoints workers")),
    }
}

/// The three controllers sharing this module's caches.
#[derive(Debug, Clone, Copy)]
enum Controller {
    EndpointSlice,
    Endpoints,
    Mirroring,
}

/// Runs one controller's syncs one key at a time, retrying failures with back-off.
async fn worker(controller: Controller, shared: Arc<Shared>, queue: WorkQueue) {
    loop {
        let key = queue.next().await;
        let result = match controller {
            Controller::EndpointSlice => sync_slices(&shared, &key).await,
            Controller::Endpoints => sync_endpoints(&shared, &key).await,
            Controller::Mirroring => sync_mirror(&shared, &key).await,
        };
        match result {
            Ok(()) => queue.forget(&key),
            Err(err) => {
                let delay = queue.retry(key.clone());
                tracing::info!(?controller, service = %key, error = %err, retry_in = ?delay, "sync failed");
            }
        }
    }
}

fn service_ref(key: &ServiceKey) -> ObjectRef<Service> {
    ObjectRef::new(&key.name).within(&key.namespace)
}

fn selected_pods(shared: &Shared, service: &Service) -> Option<Vec<Arc<Pod>>> {
    let selector = pods::service_selector(service)?;
    let ns = service.metadata.namespace.as_deref();
    Some(shared.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == ns && pods::selector_matches(selector, p.metadata.labels.as_ref())
    }))
}

/// One sync of the EndpointSlice controller (upstream `syncService`).
async fn sync_slices(shared: &Shared, key: &ServiceKey) -> Result<(), SyncError> {
    let Some(service) = shared.services.get(&service_ref(key)) else {
        // Slices of a deleted Service go with it through their owner reference.
        shared.slice_tracker.forget(key);
        return Ok(());
    };
    if pods::is_external_name(&service) {
        return Ok(());
    }
    let Some(selected) = selected_pods(shared, &service) else { return Ok(()) };
    let ns = key.namespace.as_str();
    let existing: Vec<EndpointSlice> = shared
        .slices
        .state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.deletion_timestamp.is_none()
                && managed_slice_service(s).is_some_and(|k| k == *key)
        })
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let cached = |name: &str| {
        shared
            .slices
            .get(&ObjectRef::new(name).within(ns))
            .map(|s| (s.metadata.resource_version.clone(), s.metadata.uid.clone()))
    };
    if shared.slice_tracker.is_stale(key, cached) {
        return Err(SyncError::StaleCache("EndpointSlice"));
    }
    let node_zone = |name: &str| -> slices::NodeZone {
        shared
            .nodes
            .get(&ObjectRef::new(name))
            .map(|n| n.metadata.labels.as_ref().and_then(|l| l.get(slices::LABEL_ZONE).cloned()))
    };
    let pod_refs: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
    let plan = slices::plan(&service, &pod_refs, &node_zone, &existing);

    apply_plan(shared, &shared.slice_tracker, key, &plan).await?;
    if !plan.pods_on_missing_nodes.is_empty() {
        return Err(SyncError::NodesMissing { service: key.to_string(), pods: plan.pods_on_missing_nodes });
    }
    Ok(())
}

/// Writes a slice plan: creates, then updates, then deletes, recording each write.
async fn apply_plan(
    shared: &Shared,
    tracker: &SliceTracker,
    key: &ServiceKey,
    plan: &slices::Plan,
) -> Result<(), SyncError> {
    let ns = key.namespace.as_str();
    let api: Api<EndpointSlice> = Api::namespaced(shared.client.clone(), ns);
    for slice in &plan.create {
        match api.create(&PostParams::default(), slice).await {
            Ok(created) => tracker.written(key, &created),
            // Nothing can be created in a namespace being deleted; drop the sync.
            Err(e) if is_namespace_terminating(&e) => return Ok(()),
            Err(e) => return Err(api_err(format!("creating an EndpointSlice for {key}"))(e)),
        }
    }
    for slice in &plan.update {
        let name = slice.metadata.name.as_deref().unwrap_or("");
        let updated = api
            .replace(name, &PostParams::default(), slice)
            .await
            .map_err(api_err(format!("updating EndpointSlice {ns}/{name} for {key}")))?;
        tracker.written(key, &updated);
    }
    for slice in &plan.delete {
        let name = slice.metadata.name.as_deref().unwrap_or("");
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracker.deleted(key, slice),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(format!("deleting EndpointSlice {ns}/{name} of {key}"))(e)),
        }
    }
    Ok(())
}

/// One sync of the EndpointSliceMirroring controller (upstream `syncEndpoints`): mirror the
/// Endpoints of a selector-less Service, and remove mirrored slices in every other case.
async fn sync_mirror(shared: &Shared, key: &ServiceKey) -> Result<(), SyncError> {
    let ns = key.namespace.as_str();
    let mirrored: Vec<EndpointSlice> = shared
        .slices
        .state_filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && slice_service_managed_by(s, mirroring::CONTROLLER_NAME).is_some_and(|k| k == *key)
        })
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let endpoints = shared.endpoints.get(&ObjectRef::new(&key.name).within(ns));
    let service = shared.services.get(&service_ref(key));
    let to_mirror = match (&endpoints, &service) {
        (Some(e), Some(s)) if mirroring::should_mirror(e) && pods::service_selector(s).is_none() => Some(e),
        _ => None,
    };
    let Some(endpoints) = to_mirror else {
        shared.mirror_tracker.forget(key);
        let plan = slices::Plan { delete: mirrored, ..Default::default() };
        return apply_plan(shared, &shared.mirror_tracker, key, &plan).await;
    };
    let existing: Vec<EndpointSlice> =
        mirrored.into_iter().filter(|s| s.metadata.deletion_timestamp.is_none()).collect();
    let cached = |name: &str| {
        shared
            .slices
            .get(&ObjectRef::new(name).within(ns))
            .map(|s| (s.metadata.resource_version.clone(), s.metadata.uid.clone()))
    };
    if shared.mirror_tracker.is_stale(key, cached) {
        return Err(SyncError::StaleCache("EndpointSlice"));
    }
    let plan = mirroring::plan(endpoints, &existing);
    apply_plan(shared, &shared.mirror_tracker, key, &plan).await
}

/// One sync of the Endpoints controller (upstream `syncService`).
async fn sync_endpoints(shared: &Shared, key: &ServiceKey) -> Result<(), SyncError> {
    let api: Api<Endpoints> = Api::namespaced(shared.client.clone(), &key.namespace);
    let Some(service) = shared.services.get(&service_ref(key)) else {
        // The Service is gone: so are its Endpoints, whoever wrote them.
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api_err(format!("deleting endpoints {key}"))(e)),
        }
        shared.endpoints_tracker.forget(key);
        return Ok(());
    };
    if pods::is_external_name(&service) {
        return Ok(());
    }
    let Some(selected) = selected_pods(shared, &service) else { return Ok(()) };
    let pod_refs: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
    let mut subsets = core_endpoints::desired_subsets(&service, &pod_refs);

    let current = shared.endpoints.get(&ObjectRef::new(&key.name).within(&key.namespace));
    if let Some(cur) = &current
        && shared.endpoints_tracker.is_stale(key, cur.metadata.resource_version.as_deref())
    {
        return Err(SyncError::StaleCache("Endpoints"));
    }
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    if let Some(cur) = &current {
        let mut labels = cur.metadata.labels.clone().unwrap_or_default();
        labels.remove(core_endpoints::LABEL_HEADLESS);
        if core_endpoints::subsets_equal(cur.subsets.as_deref().unwrap_or(&[]), &subsets)
            && labels == service_labels
            && core_endpoints::capacity_annotation_correct(cur)
        {
            return Ok(());
        }
    }

    let mut desired = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta { name: Some(key.name.clone()), ..Default::default() },
        subsets: None,
    });
    let truncated = core_endpoints::truncate(&mut subsets);
    desired.subsets = (!subsets.is_empty()).then_some(subsets);
    let mut labels = service_labels;
    if pods::is_service_ip_set(&service) {
        labels.remove(core_endpoints::LABEL_HEADLESS);
    } else {
        labels.insert(core_endpoints::LABEL_HEADLESS.into(), String::new());
    }
    desired.metadata.labels = (!labels.is_empty()).then_some(labels);
    let mut annotations = desired.metadata.annotations.take().unwrap_or_default();
    annotations.remove(core_endpoints::LAST_CHANGE_TRIGGER_TIME_ANNOTATION);
    if truncated {
        annotations.insert(core_endpoints::OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(core_endpoints::OVER_CAPACITY_ANNOTATION);
    }
    desired.metadata.annotations = (!annotations.is_empty()).then_some(annotations);

    match current {
        None => match api.create(&PostParams::default(), &desired).await {
            Ok(_) => Ok(()),
            Err(e) if is_namespace_terminating(&e) => Ok(()),
            Err(e) => Err(api_err(format!("creating endpoints {key}"))(e)),
        },
        Some(cur) => {
            let updated = api
                .replace(&key.name, &PostParams::default(), &desired)
                .await
                .map_err(api_err(format!("updating endpoints {key}")))?;
            if let Some(old_rv) = cur.metadata.resource_version.as_deref()
                && updated.metadata.resource_version.as_deref() != Some(old_rv)
            {
                shared.endpoints_tracker.replaced(key, old_rv);
            }
            Ok(())
        }
    }
}
