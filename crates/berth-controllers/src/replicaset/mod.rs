//! The ReplicaSet controller: keeps `spec.replicas` pods running for each ReplicaSet, adopting and
//! releasing pods by selector, and reports counts and failures in the ReplicaSet's status.

pub mod logic;

use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::expectations::Expectations;
use crate::runtime::{self, Outcome, Queue};
use crate::util::events::{EventType, Recorder};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::pods;
use crate::util::selector::Selector;
use crate::util::semantic;
use crate::util::time;
use logic::{Claim, ManageError, ReplicaAction};

/// Errors of one ReplicaSet sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Pods could not be created or deleted; the status already reports it.
    #[error("{0}")]
    ManageReplicas(String),
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Shared state of the ReplicaSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Registers the controller's watches on the informers and returns the controller's run loop.
pub fn controller(
    client: Client,
    pod_informer: &mut Informer<Pod>,
    rs_informer: &mut Informer<ReplicaSet>,
    quota_informer: &mut Informer<ResourceQuota>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<ReplicaSet>();
    let rs_store = rs_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_informer.store(),
        replica_sets: rs_store.clone(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client, "replicaset-controller"),
    });

    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        rs_informer.on_event(move |event| match event {
            watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => queue.enqueue_object(rs),
            watcher::Event::Delete(rs) => ctx.expectations.forget(&meta::key(&rs.metadata)),
            watcher::Event::Init | watcher::Event::InitDone => {}
        });
    }
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        let rs_store = rs_store.clone();
        pod_informer.on_event(move |event| {
            if let Some(pod) = ctx.expectations.observe_event(event) {
                enqueue_for_pod(&queue, &rs_store, pod);
            } else if let watcher::Event::InitDone = event {
                // After a relist, deletions may have been missed: look at everything again.
                queue.enqueue_all(&rs_store, None);
            }
        });
    }
    {
        // Raising a quota lets failed creates succeed: retry ReplicaSets that reported failures.
        let queue = queue.clone();
        let rs_store = rs_store.clone();
        quota_informer.on_event(move |event| {
            if let watcher::Event::Apply(q) | watcher::Event::Delete(q) = event {
                queue.enqueue_all(&rs_store, Some(meta::namespace(&q.metadata)));
            }
        });
    }

    let pods = ctx.pods.clone();
    let ready = async move {
        let _ = pods.wait_until_ready().await;
    };
    runtime::run("replicaset", ready, rs_store, receiver, ctx, reconcile)
}

fn enqueue_for_pod(queue: &Queue<ReplicaSet>, rs_store: &Store<ReplicaSet>, pod: &Pod) {
    if !queue.enqueue_controller_of(&pod.metadata) {
        queue.enqueue_adopters(rs_store, &pod.metadata, |rs| rs.spec.as_ref().map(|s| &s.selector));
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    let key = meta::key(&rs.metadata);
    let ns = meta::namespace(&rs.metadata).to_string();
    let rs_uid = meta::uid(&rs.metadata).to_string();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let selector = rs
        .spec
        .as_ref()
        .map(|s| Selector::from_label_selector(&s.selector))
        .transpose()
        .unwrap_or(None)
        .unwrap_or(Selector::Nothing);

    let candidates: Vec<Arc<Pod>> = ctx.pods.state_filter(|p| meta::namespace(&p.metadata) == ns && pods::is_active(p));
    let owned = claim_pods(&ctx, &rs, &rs_uid, deleting, &selector, candidates).await?;

    let pending = ctx.expectations.pending(&key, owned.iter().map(|p| meta::uid(&p.metadata)));
    let live: Vec<&Pod> =
        owned.iter().map(|p| p.as_ref()).filter(|p| !pending.deletes.contains(meta::uid(&p.metadata))).collect();

    let mut manage_error = None;
    if !deleting {
        let related = related_pods(&ctx, &rs);
        let related_refs: Vec<&Pod> = related.iter().map(|p| p.as_ref()).collect();
        let desired = logic::desired_replicas(&rs);
        match logic::manage_replicas(desired, &live, pending.creates, &related_refs) {
            ReplicaAction::Nothing => {}
            ReplicaAction::Create(n) => manage_error = create_pods(&ctx, &rs, &key, n).await,
            ReplicaAction::Delete(victims) => manage_error = delete_pods(&ctx, &rs, &key, &victims).await,
        }
    }

    let owned_refs: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
    let now = time::now();
    let status = logic::calculate_status(&rs, &owned_refs, manage_error.as_ref(), now);
    if !semantic::status_equal(&Some(&status), &rs.status.as_ref()) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(meta::name(&rs.metadata), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            // Deleted meanwhile: its pods belong to the garbage collector now.
            Err(e) if meta::is_not_found(&e) => return Ok(Outcome::done()),
            Err(e) => return Err(api_err(format!("updating status of replica set {key}"))(e)),
        }
    }
    if let Some(err) = manage_error {
        return Err(Error::ManageReplicas(err.message));
    }
    Ok(match logic::requeue_for_availability(&rs, &owned_refs, now) {
        Some(delay) => Outcome::after(delay),
        None => Outcome::done(),
    })
}

/// Pods of the ReplicaSets that share this ReplicaSet's controller (its Deployment's other
/// revisions), used to spread deletions across nodes like upstream's related-pods ranking.
fn related_pods(ctx: &Context, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
    let ns = meta::namespace(&rs.metadata);
    let mut family: std::collections::HashSet<String> = std::collections::HashSet::new();
    family.insert(meta::uid(&rs.metadata).to_string());
    if let Some(owner) = meta::controller_of(&rs.metadata) {
        for sibling in ctx.replica_sets.state() {
            if meta::namespace(&sibling.metadata) == ns && meta::is_controlled_by(&sibling.metadata, &owner.uid) {
                family.insert(meta::uid(&sibling.metadata).to_string());
            }
        }
    }
    ctx.pods.state_filter(|p| {
        meta::namespace(&p.metadata) == ns && meta::controller_of(&p.metadata).is_some_and(|o| family.contains(&o.uid))
    })
}

async fn claim_pods(
    ctx: &Context,
    rs: &ReplicaSet,
    rs_uid: &str,
    deleting: bool,
    selector: &Selector,
    candidates: Vec<Arc<Pod>>,
) -> Result<Vec<Arc<Pod>>, Error> {
    let ns = meta::namespace(&rs.metadata);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut owned = Vec::new();
    let mut adoption_checked = false;
    for pod in candidates {
        match logic::claim(rs_uid, deleting, selector, &pod) {
            Claim::Keep => owned.push(pod),
            Claim::Ignore => {}
            Claim::Adopt => {
                if !adoption_checked {
                    // Re-read the ReplicaSet so a stale cache never adopts for a deleted owner.
                    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
                    let fresh = rs_api.get_opt(meta::name(&rs.metadata)).await.map_err(api_err(format!(
                        "checking replica set {} before adoption",
                        meta::key(&rs.metadata)
                    )))?;
                    match fresh {
                        Some(f) if meta::uid(&f.metadata) == rs_uid && f.metadata.deletion_timestamp.is_none() => {}
                        _ => return Ok(owned),
                    }
                    adoption_checked = true;
                }
                let mut updated = (*pod).clone();
                updated.metadata.owner_references.get_or_insert_with(Vec::new).push(meta::controller_ref(rs));
                match api.replace(meta::name(&pod.metadata), &PostParams::default(), &updated).await {
                    Ok(adopted) => owned.push(Arc::new(adopted)),
                    Err(e) if meta::is_not_found(&e) => {}
                    Err(e) => return Err(api_err(format!("adopting pod {}", meta::key(&pod.metadata)))(e)),
                }
            }
            Claim::Release => {
                let mut updated = (*pod).clone();
                if let Some(refs) = updated.metadata.owner_references.as_mut() {
                    refs.retain(|r| r.uid != rs_uid);
                }
                match api.replace(meta::name(&pod.metadata), &PostParams::default(), &updated).await {
                    Ok(_) => {}
                    Err(e) if meta::is_not_found(&e) => {}
                    Err(e) => return Err(api_err(format!("releasing pod {}", meta::key(&pod.metadata)))(e)),
                }
            }
        }
    }
    Ok(owned)
}

async fn create_pods(ctx: &Context, rs: &ReplicaSet, key: &str, count: usize) -> Option<ManageError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), meta::namespace(&rs.metadata));
    let template = logic::pod_from_template(rs);
    let params = PostParams::default();
    for batch in logic::slow_start_batches(count) {
        let results = join_all((0..batch).map(|_| api.create(&params, &template))).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(pod) => {
                    ctx.expectations.created(key, meta::uid(&pod.metadata));
                    ctx.recorder.record(
                        rs,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", meta::name(&pod.metadata)),
                    );
                }
                // The namespace is going away: nothing more can be created, and that is fine.
                Err(e) if meta::is_namespace_terminating(&e) => return None,
                Err(e) => {
                    let message = meta::error_message(&e);
                    ctx.recorder.record(rs, EventType::Warning, "FailedCreate", format!("Error creating: {message}"));
                    first_error.get_or_insert(ManageError { message });
                }
            }
        }
        if first_error.is_some() {
            return first_error;
        }
    }
    None
}

async fn delete_pods(ctx: &Context, rs: &ReplicaSet, key: &str, victims: &[&Pod]) -> Option<ManageError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), meta::namespace(&rs.metadata));
    for pod in victims {
        ctx.expectations.deleting(key, meta::uid(&pod.metadata));
    }
    let results = join_all(victims.iter().map(|pod| {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        let api = api.clone();
        async move { (pod, api.delete(meta::name(&pod.metadata), &params).await) }
    }))
    .await;
    let mut first_error = None;
    for (pod, result) in results {
        let name = meta::name(&pod.metadata);
        match result {
            Ok(_) => ctx.recorder.record(rs, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}")),
            Err(e) if meta::is_not_found(&e) => {}
            Err(e) => {
                ctx.expectations.delete_failed(meta::uid(&pod.metadata));
                let message = meta::error_message(&e);
                ctx.recorder.record(rs, EventType::Warning, "FailedDelete", format!("Error deleting: {message}"));
                first_error.get_or_insert(ManageError { message });
            }
        }
    }
    first_error
}
