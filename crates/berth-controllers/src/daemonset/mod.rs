//! The DaemonSet controller: one pod on each node the template admits, replaced node by node
//! on a template change (RollingUpdate with maxUnavailable or maxSurge, or OnDelete), with the
//! template history kept as ControllerRevisions (upstream `pkg/controller/daemon`).

pub mod logic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::expectations::Expectations;
use crate::history::{self, CONTROLLER_REVISION_HASH};
use crate::runtime::{self, Outcome, Queue};
use crate::util::claim;
use crate::util::events::{EventType, Recorder};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::overlay::Overlay;
use crate::util::pods;
use crate::util::selector::Selector;
use crate::util::semantic;
use crate::util::time;

/// Errors of one DaemonSet sync.
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
    /// The revision name is taken by another template; collisionCount was raised.
    #[error("hash collision creating revision {0}; retrying with a new collision count")]
    HashCollision(String),
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Shared state of the DaemonSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    recorder: Recorder,
    written_sets: Overlay<DaemonSet>,
    written_revisions: Overlay<ControllerRevision>,
}

/// Registers the controller's watches on the informers and returns the controller's run loop.
pub fn controller(
    client: Client,
    ds_informer: &mut Informer<DaemonSet>,
    pod_informer: &mut Informer<Pod>,
    node_informer: &mut Informer<Node>,
    revision_informer: &mut Informer<ControllerRevision>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<DaemonSet>();
    let sets = ds_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_informer.store(),
        nodes: node_informer.store(),
        revisions: revision_informer.store(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client, "daemonset-controller"),
        written_sets: Overlay::default(),
        written_revisions: Overlay::default(),
    });
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        ds_informer.on_event(move |event| match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => queue.enqueue_object(d),
            watcher::Event::Delete(d) => {
                ctx.written_sets.forget(d);
                ctx.expectations.forget(&meta::key(&d.metadata));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        });
    }
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        let sets = sets.clone();
        pod_informer.on_event(move |event| {
            if let Some(pod) = ctx.expectations.observe_event(event) {
                enqueue_for_pod(&queue, &sets, pod);
            } else if let watcher::Event::InitDone = event {
                // After a relist, deletions may have been missed: look at everything again.
                queue.enqueue_all(&sets, None);
            }
        });
    }
    {
        // A node that appears, changes labels or taints, or goes away changes every daemon's plan.
        let queue = queue.clone();
        let sets = sets.clone();
        node_informer.on_event(move |event| {
            if !matches!(event, watcher::Event::Init) {
                queue.enqueue_all(&sets, None);
            }
        });
    }
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        revision_informer.on_event(move |event| {
            if let Some(rev) = crate::util::informer::event_object(event) {
                if let watcher::Event::Delete(_) = event {
                    ctx.written_revisions.forget(rev);
                }
                queue.enqueue_controller_of(&rev.metadata);
            }
        });
    }
    let (pods, nodes, revisions) = (ctx.pods.clone(), ctx.nodes.clone(), ctx.revisions.clone());
    let ready = async move {
        let _ = futures::join!(pods.wait_until_ready(), nodes.wait_until_ready(), revisions.wait_until_ready());
    };
    runtime::run("daemonset", ready, sets, receiver, ctx, reconcile)
}

fn enqueue_for_pod(queue: &Queue<DaemonSet>, sets: &Store<DaemonSet>, pod: &Pod) {
    if !queue.enqueue_controller_of(&pod.metadata) {
        queue.enqueue_adopters(sets, &pod.metadata, |d| d.spec.as_ref().map(|s| &s.selector));
    }
}

async fn reconcile(cached: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    let ds = ctx.written_sets.latest(&cached);
    let mut sync = DaemonSync::new(&ctx, ds);
    sync.run().await
}

struct DaemonSync<'a> {
    ctx: &'a Context,
    ds: DaemonSet,
    key: String,
    pods_api: Api<Pod>,
    revisions_api: Api<ControllerRevision>,
    now: k8s_openapi::jiff::Timestamp,
}

impl<'a> DaemonSync<'a> {
    fn new(ctx: &'a Context, ds: DaemonSet) -> Self {
        let ns = meta::namespace(&ds.metadata).to_string();
        DaemonSync {
            ctx,
            key: meta::key(&ds.metadata),
            ds,
            pods_api: Api::namespaced(ctx.client.clone(), &ns),
            revisions_api: Api::namespaced(ctx.client.clone(), &ns),
            now: time::now(),
        }
    }

    fn name(&self) -> String {
        meta::name(&self.ds.metadata).to_string()
    }

    /// Upstream `syncDaemonSet`.
    async fn run(&mut self) -> Result<Outcome, Error> {
        let selector = self.ds.spec.as_ref().map(|s| Selector::from_label_selector(&s.selector));
        let Some(Ok(selector)) = selector else { return Ok(Outcome::done()) };
        if selector.is_everything() {
            return Ok(Outcome::done());
        }
        let owned = self.claim_pods(&selector).await?;
        let nodes: Vec<Arc<Node>> = self.ctx.nodes.state();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        if self.ds.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::done());
        }
        let (revisions, hash) = self.construct_history().await?;

        let pending = self.ctx.expectations.pending(&self.key, owned.iter().map(|p| meta::uid(&p.metadata)));
        let live: Vec<&Pod> = owned
            .iter()
            .filter(|p| !(is_terminal(p) && p.metadata.deletion_timestamp.is_some()))
            .filter(|p| !pending.deletes.contains(meta::uid(&p.metadata)))
            .collect();
        let by_node = group_by_node(&live);
        let satisfied = pending.creates == 0 && pending.deletes.is_empty();
        if satisfied {
            let plan = logic::manage(&self.ds, &node_refs, &by_node, &hash);
            let changed = !plan.create_on.is_empty() || !plan.delete.is_empty();
            self.apply(plan, &live, &hash).await?;
            if !changed && logic::strategy_type(&self.ds) == "RollingUpdate" {
                let plan = logic::rolling_update(&self.ds, &node_refs, &by_node, &hash, self.now);
                self.apply(plan, &live, &hash).await?;
            }
            self.cleanup_history(&revisions, &owned, &hash).await?;
        }

        let status = logic::calculate_status(&self.ds, &node_refs, &by_node, &hash, self.now);
        self.write_status(status).await?;

        let min_ready = logic::min_ready_seconds(&self.ds);
        let wait = live
            .iter()
            .filter(|p| pods::is_ready(p) && !pods::is_available(p, min_ready, self.now))
            .filter_map(|p| pods::becomes_available_at(p, min_ready))
            .map(|at| time::until(self.now, at) + Duration::from_secs(1))
            .min();
        Ok(wait.map_or_else(Outcome::done, Outcome::after))
    }

    async fn claim_pods(&self, selector: &Selector) -> Result<Vec<Pod>, Error> {
        let ns = meta::namespace(&self.ds.metadata).to_string();
        let candidates = self.ctx.pods.state_filter(|p| meta::namespace(&p.metadata) == ns);
        claim::claim_pods(&self.pods_api, &self.ds, selector, candidates, |_| true)
            .await
            .map_err(|e| Error::Api { action: e.action, source: e.source })
    }

    /// The revisions, with the one matching the template created or renumbered to be the
    /// newest, and the hash of that template (upstream `constructHistory` and `snapshot`).
    async fn construct_history(&mut self) -> Result<(Vec<ControllerRevision>, String), Error> {
        let ns = meta::namespace(&self.ds.metadata).to_string();
        let mut revisions: Vec<ControllerRevision> =
            history::owned_revisions(&self.ctx.revisions, &ns, meta::uid(&self.ds.metadata))
                .iter()
                .map(|r| self.ctx.written_revisions.latest(r))
                .collect();
        let template = self.ds.spec.as_ref().map(|s| &s.template);
        let data = history::template_patch(template);
        let matching = history::find_equal(&revisions, &data);
        let next = revisions
            .iter()
            .enumerate()
            .filter(|(i, _)| !matching.contains(i))
            .map(|(_, r)| r.revision)
            .max()
            .unwrap_or(0)
            + 1;
        let current = match matching.iter().max_by_key(|&&i| revisions[i].revision) {
            Some(&i) => {
                if revisions[i].revision < next {
                    let mut bumped = revisions[i].clone();
                    bumped.revision = next;
                    let updated = self
                        .revisions_api
                        .replace(meta::name(&bumped.metadata), &PostParams::default(), &bumped)
                        .await
                        .map_err(api_err(format!("updating revision {}", meta::key(&bumped.metadata))))?;
                    self.ctx.written_revisions.record(revisions[i].metadata.resource_version.as_deref(), &updated);
                    revisions[i] = updated;
                }
                revisions[i].clone()
            }
            None => {
                let collision_count = self.ds.status.as_ref().and_then(|s| s.collision_count);
                let template = template.cloned().unwrap_or_default();
                let hash = crate::deployment::util::compute_hash(&template, collision_count);
                let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
                let mut rev = history::new_revision(&self.ds, labels, data.clone(), next, &hash);
                rev.metadata.name = Some(format!("{}-{hash}", self.name()));
                match self.revisions_api.create(&PostParams::default(), &rev).await {
                    Ok(created) => {
                        revisions.push(created.clone());
                        created
                    }
                    Err(e) if meta::is_already_exists(&e) => {
                        let name = meta::name(&rev.metadata).to_string();
                        let existing =
                            self.revisions_api.get(&name).await.map_err(api_err(format!("reading revision {name}")))?;
                        if meta::is_controlled_by(&existing.metadata, meta::uid(&self.ds.metadata))
                            && semantic::equal(history::data(&existing), &data)
                        {
                            revisions.push(existing.clone());
                            existing
                        } else {
                            let mut status = self.ds.status.clone().unwrap_or_default();
                            status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                            self.write_status(status).await?;
                            return Err(Error::HashCollision(name));
                        }
                    }
                    Err(e) => return Err(api_err(format!("creating a revision of {}", self.key))(e)),
                }
            }
        };
        let hash = current
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH))
            .cloned()
            .unwrap_or_else(|| meta::name(&current.metadata).to_string());
        history::sort(&mut revisions);
        Ok((revisions, hash))
    }

    async fn apply(&self, plan: logic::Plan, live: &[&Pod], hash: &str) -> Result<(), Error> {
        let ds_name = self.name();
        for name in &plan.delete {
            if let Some(pod) = live.iter().find(|p| meta::name(&p.metadata) == name) {
                self.ctx.expectations.deleting(&self.key, meta::uid(&pod.metadata));
            }
        }
        let creates = join_all(plan.create_on.iter().map(|node| {
            let pod = logic::new_pod(&self.ds, node, hash);
            let api = self.pods_api.clone();
            async move { (node, api.create(&PostParams::default(), &pod).await) }
        }));
        let deletes = join_all(plan.delete.iter().map(|name| {
            let uid = live.iter().find(|p| meta::name(&p.metadata) == name).and_then(|p| p.metadata.uid.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid, resource_version: None }),
                ..Default::default()
            };
            let api = self.pods_api.clone();
            async move { (name, api.delete(name, &params).await) }
        }));
        let (created, deleted) = futures::join!(creates, deletes);
        let mut first_error = None;
        for (node, result) in created {
            match result {
                Ok(pod) => {
                    self.ctx.expectations.created(&self.key, meta::uid(&pod.metadata));
                    self.ctx.recorder.record(
                        &self.ds,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", meta::name(&pod.metadata)),
                    );
                }
                Err(e) if meta::is_namespace_terminating(&e) => {}
                Err(e) => {
                    self.ctx.recorder.record(
                        &self.ds,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {}", meta::error_message(&e)),
                    );
                    first_error.get_or_insert(api_err(format!("creating the daemon pod of {ds_name} on {node}"))(e));
                }
            }
        }
        for (name, result) in deleted {
            match result {
                Ok(_) => self.ctx.recorder.record(
                    &self.ds,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ),
                Err(e) if meta::is_not_found(&e) || meta::is_conflict(&e) => {}
                Err(e) => {
                    if let Some(pod) = live.iter().find(|p| meta::name(&p.metadata) == name) {
                        self.ctx.expectations.delete_failed(meta::uid(&pod.metadata));
                    }
                    self.ctx.recorder.record(
                        &self.ds,
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {}", meta::error_message(&e)),
                    );
                    first_error.get_or_insert(api_err(format!("deleting pod {name}"))(e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes revisions beyond `revisionHistoryLimit` that no pod uses (upstream `cleanupHistory`).
    async fn cleanup_history(&self, revisions: &[ControllerRevision], owned: &[Pod], hash: &str) -> Result<(), Error> {
        let mut live_hashes: HashSet<String> = owned.iter().map(|p| logic::pod_hash(p).to_string()).collect();
        live_hashes.insert(hash.to_string());
        let live: HashSet<String> = revisions
            .iter()
            .filter(|r| {
                let h = r.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH));
                h.is_some_and(|h| live_hashes.contains(h))
            })
            .map(|r| meta::name(&r.metadata).to_string())
            .collect();
        for rev in history::to_truncate(revisions, &live, logic::revision_history_limit(&self.ds)) {
            let name = meta::name(&rev.metadata);
            match self.revisions_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if meta::is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("deleting revision {name}"))(e)),
            }
        }
        Ok(())
    }

    async fn write_status(&mut self, status: DaemonSetStatus) -> Result<(), Error> {
        if semantic::status_equal(&Some(&status), &self.ds.status.as_ref()) {
            return Ok(());
        }
        let api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), meta::namespace(&self.ds.metadata));
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => {
                self.ctx.written_sets.record(self.ds.metadata.resource_version.as_deref(), &updated);
                self.ds = updated;
                Ok(())
            }
            Err(e) if meta::is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("updating status of daemon set {}", self.key))(e)),
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pods::phase(pod), "Failed" | "Succeeded")
}

fn group_by_node<'p>(pods: &[&'p Pod]) -> HashMap<String, Vec<&'p Pod>> {
    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for pod in pods {
        if let Some(node) = logic::target_node(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    by_node
}
