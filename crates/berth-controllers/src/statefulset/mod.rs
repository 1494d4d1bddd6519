//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`, one claim per pod and
//! claim template, created in order and one at a time (OrderedReady) or all at once
//! (Parallel), updated from the highest ordinal down to the partition, with the template
//! history kept as ControllerRevisions (upstream `pkg/controller/statefulset`).

pub mod logic;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::history;
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

/// Errors of one StatefulSet sync.
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
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Shared state of the StatefulSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    recorder: Recorder,
    /// Our own recent writes, for syncs that start before the watch delivers them.
    written_sets: Overlay<StatefulSet>,
    written_revisions: Overlay<ControllerRevision>,
}

/// Registers the controller's watches on the informers and returns the controller's run loop.
pub fn controller(
    client: Client,
    set_informer: &mut Informer<StatefulSet>,
    pod_informer: &mut Informer<Pod>,
    revision_informer: &mut Informer<ControllerRevision>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<StatefulSet>();
    let sets = set_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_informer.store(),
        revisions: revision_informer.store(),
        recorder: Recorder::new(client, "statefulset-controller"),
        written_sets: Overlay::default(),
        written_revisions: Overlay::default(),
    });
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        set_informer.on_event(move |event| match event {
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => queue.enqueue_object(s),
            watcher::Event::Delete(s) => ctx.written_sets.forget(s),
            watcher::Event::Init | watcher::Event::InitDone => {}
        });
    }
    {
        let queue = queue.clone();
        let sets = sets.clone();
        pod_informer.on_event(move |event| match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) | watcher::Event::Delete(pod) => {
                enqueue_for_pod(&queue, &sets, pod)
            }
            watcher::Event::InitDone => queue.enqueue_all(&sets, None),
            watcher::Event::Init => {}
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
    let (pods, revisions) = (ctx.pods.clone(), ctx.revisions.clone());
    let ready = async move {
        let _ = futures::join!(pods.wait_until_ready(), revisions.wait_until_ready());
    };
    runtime::run("statefulset", ready, sets, receiver, ctx, reconcile)
}

fn enqueue_for_pod(queue: &Queue<StatefulSet>, sets: &Store<StatefulSet>, pod: &Pod) {
    if queue.enqueue_controller_of(&pod.metadata) {
        return;
    }
    // An orphan: the set it is named after may adopt it.
    let ns = meta::namespace(&pod.metadata);
    if let Some((parent, _)) = logic::parent_and_ordinal(meta::name(&pod.metadata))
        && sets.find(|s| meta::namespace(&s.metadata) == ns && meta::name(&s.metadata) == parent).is_some()
    {
        queue.enqueue(Some(ns), parent);
    }
}

async fn reconcile(cached: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    let set = ctx.written_sets.latest(&cached);
    let mut sync = SetSync::new(&ctx, set);
    sync.run().await
}

/// One sync of one StatefulSet.
struct SetSync<'a> {
    ctx: &'a Context,
    set: StatefulSet,
    pods_api: Api<Pod>,
    revisions_api: Api<ControllerRevision>,
    now: k8s_openapi::jiff::Timestamp,
}

impl<'a> SetSync<'a> {
    fn new(ctx: &'a Context, set: StatefulSet) -> Self {
        let ns = meta::namespace(&set.metadata).to_string();
        SetSync {
            ctx,
            set,
            pods_api: Api::namespaced(ctx.client.clone(), &ns),
            revisions_api: Api::namespaced(ctx.client.clone(), &ns),
            now: time::now(),
        }
    }

    fn name(&self) -> &str {
        meta::name(&self.set.metadata)
    }

    fn key(&self) -> String {
        meta::key(&self.set.metadata)
    }

    /// Upstream `syncStatefulSet` and `UpdateStatefulSet`.
    async fn run(&mut self) -> Result<Outcome, Error> {
        let selector = self.set.spec.as_ref().map(|s| Selector::from_label_selector(&s.selector));
        let Some(Ok(selector)) = selector else {
            // Validation keeps bad selectors out; an unparsable one selects nothing.
            return Ok(Outcome::done());
        };
        let owned = self.claim_pods(&selector).await?;
        let mut revisions = self.revisions();
        let (current, update, collision_count) = self.sync_revisions(&mut revisions).await?;
        let current_name = meta::name(&current.metadata).to_string();
        let update_name = meta::name(&update.metadata).to_string();

        let pods_after = if self.set.metadata.deletion_timestamp.is_some() {
            owned
        } else {
            self.update_pods(owned, &current, &update).await?
        };

        let refs: Vec<&Pod> = pods_after.iter().collect();
        let status = logic::calculate_status(&self.set, &refs, &current_name, &update_name, collision_count, self.now);
        self.write_status(status).await?;
        self.truncate_history(&revisions, &pods_after, &current_name, &update_name).await?;

        // Ready pods waiting out minReadySeconds become available without any event.
        let min_ready = logic::min_ready_seconds(&self.set);
        let wait = pods_after
            .iter()
            .filter(|p| pods::is_ready(p) && !pods::is_available(p, min_ready, self.now))
            .filter_map(|p| pods::becomes_available_at(p, min_ready))
            .map(|at| time::until(self.now, at) + Duration::from_secs(1))
            .min();
        Ok(wait.map_or_else(Outcome::done, Outcome::after))
    }

    /// The pods this set controls, adopting orphans named after it.
    async fn claim_pods(&self, selector: &Selector) -> Result<Vec<Pod>, Error> {
        let ns = meta::namespace(&self.set.metadata).to_string();
        let candidates = self.ctx.pods.state_filter(|p| meta::namespace(&p.metadata) == ns);
        claim::claim_pods(&self.pods_api, &self.set, selector, candidates, |p| {
            logic::ordinal_of(&self.set, p).is_some()
        })
        .await
        .map_err(|e| Error::Api { action: e.action, source: e.source })
    }

    fn revisions(&self) -> Vec<ControllerRevision> {
        let ns = meta::namespace(&self.set.metadata);
        let mut revs: Vec<ControllerRevision> =
            history::owned_revisions(&self.ctx.revisions, ns, meta::uid(&self.set.metadata))
                .iter()
                .map(|r| self.ctx.written_revisions.latest(r))
                .collect();
        history::sort(&mut revs);
        revs
    }

    /// The current and update revisions and the collision count (upstream
    /// `getStatefulSetRevisions`): the update revision is the one whose data equals the set's
    /// template, created if none does, and given the next number if it is an older one (a
    /// rollback); the current revision is the one the status names, else the update revision.
    async fn sync_revisions(
        &mut self,
        revisions: &mut Vec<ControllerRevision>,
    ) -> Result<(ControllerRevision, ControllerRevision, i32), Error> {
        let mut collision_count = self.set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let template = self.set.spec.as_ref().map(|s| &s.template);
        let data = history::template_patch(template);
        let next = history::max_revision(revisions) + 1;
        let equal = history::find_equal(revisions, &data);
        let update = match equal.last() {
            Some(&i) if i + 1 == revisions.len() => revisions[i].clone(),
            Some(&i) => {
                let mut bumped = revisions[i].clone();
                bumped.revision = next;
                let updated = self
                    .revisions_api
                    .replace(meta::name(&bumped.metadata), &PostParams::default(), &bumped)
                    .await
                    .map_err(api_err(format!("updating revision {}", meta::key(&bumped.metadata))))?;
                self.ctx.written_revisions.record(revisions[i].metadata.resource_version.as_deref(), &updated);
                revisions[i] = updated.clone();
                history::sort(revisions);
                updated
            }
            None => {
                let labels = template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref());
                let created = loop {
                    let hash = history::hash_data(&data, Some(collision_count));
                    let rev = history::new_revision(&self.set, labels, data.clone(), next, &hash);
                    match self.revisions_api.create(&PostParams::default(), &rev).await {
                        Ok(created) => break created,
                        Err(e) if meta::is_already_exists(&e) => {
                            let name = meta::name(&rev.metadata);
                            let existing = self
                                .revisions_api
                                .get(name)
                                .await
                                .map_err(api_err(format!("reading revision {name}")))?;
                            if semantic::equal(history::data(&existing), &data) {
                                break existing;
                            }
                            collision_count += 1;
                        }
                        Err(e) => return Err(api_err(format!("creating a revision of {}", self.key()))(e)),
                    }
                };
                if !revisions.iter().any(|r| r.metadata.uid == created.metadata.uid) {
                    revisions.push(created.clone());
                    history::sort(revisions);
                }
                created
            }
        };
        let wanted = self.set.status.as_ref().and_then(|s| s.current_revision.as_deref()).unwrap_or("");
        let current =
            revisions.iter().find(|r| meta::name(&r.metadata) == wanted).cloned().unwrap_or_else(|| update.clone());
        Ok((current, update, collision_count))
    }

    /// Creates, replaces and deletes pods by the set's rules; returns the pods owned afterwards.
    async fn update_pods(
        &self,
        owned: Vec<Pod>,
        current: &ControllerRevision,
        update: &ControllerRevision,
    ) -> Result<Vec<Pod>, Error> {
        let set = &self.set;
        let monotonic = logic::is_monotonic(set);
        let min_ready = logic::min_ready_seconds(set);
        let start = logic::start_ordinal(set);
        let count = usize::try_from(logic::replicas(set)).unwrap_or(0);
        let mut after = owned.clone();

        let mut replicas: Vec<Option<Pod>> = vec![None; count];
        let mut condemned: Vec<(i32, Pod)> = Vec::new();
        for pod in owned {
            match logic::ordinal_of(set, &pod) {
                Some(ord) if logic::in_range(set, ord) => {
                    let slot = &mut replicas[usize::try_from(ord - start).unwrap_or(0)];
                    if slot.is_none() {
                        *slot = Some(pod);
                    }
                }
                Some(ord) => condemned.push((ord, pod)),
                None => condemned.push((i32::MAX, pod)),
            }
        }
        condemned.sort_by_key(|(ord, _)| *ord);
        let first_unhealthy: Option<String> = replicas
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
            .find(|p| !logic::is_healthy(p))
            .map(|p| meta::name(&p.metadata).to_string());

        let update_template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let current_template = logic::revision_template(current).unwrap_or_else(|| update_template.clone());

        for (i, slot) in replicas.iter().enumerate() {
            let ordinal = start + i32::try_from(i).unwrap_or(0);
            match slot {
                None => {
                    let (template, revision) = if logic::uses_current_revision(set, ordinal) {
                        (&current_template, meta::name(&current.metadata))
                    } else {
                        (&update_template, meta::name(&update.metadata))
                    };
                    let pod = logic::new_pod(set, template, revision, ordinal);
                    if let Some(created) = self.create_pod(&pod, ordinal).await? {
                        after.push(created);
                    }
                    if monotonic {
                        return Ok(after);
                    }
                }
                Some(pod) => {
                    if logic::is_finished(pod) {
                        // Deleted now, made again on the sync after it is gone.
                        if pod.metadata.deletion_timestamp.is_none() {
                            self.delete_pod(pod).await?;
                            after.retain(|p| p.metadata.uid != pod.metadata.uid);
                        }
                        if monotonic {
                            return Ok(after);
                        }
                        continue;
                    }
                    let waiting = pod.metadata.deletion_timestamp.is_some()
                        || !logic::running_and_ready(pod)
                        || !logic::running_and_available(pod, min_ready, self.now);
                    if waiting && monotonic {
                        return Ok(after);
                    }
                }
            }
        }

        // Pods beyond the replica count go highest ordinal first.
        for (_, pod) in condemned.iter().rev() {
            if pod.metadata.deletion_timestamp.is_some() {
                if monotonic {
                    return Ok(after);
                }
                continue;
            }
            let name = meta::name(&pod.metadata);
            if monotonic && !logic::running_and_ready(pod) && first_unhealthy.as_deref() != Some(name) {
                return Ok(after);
            }
            self.delete_pod(pod).await?;
            after.retain(|p| p.metadata.uid != pod.metadata.uid);
            if monotonic {
                return Ok(after);
            }
        }

        if logic::strategy_type(set) != "RollingUpdate" {
            return Ok(after);
        }
        // Replace the highest-ordinal pod not at the update revision, down to the partition,
        // one at a time, waiting for each replacement to be healthy.
        let update_min = usize::try_from(logic::partition(set).unwrap_or(0)).unwrap_or(0);
        for target in (update_min..count).rev() {
            let Some(pod) = &replicas[target] else { continue };
            if logic::pod_revision(pod) != meta::name(&update.metadata) && pod.metadata.deletion_timestamp.is_none() {
                self.delete_pod(pod).await?;
                after.retain(|p| p.metadata.uid != pod.metadata.uid);
                return Ok(after);
            }
            if !logic::is_healthy(pod) {
                return Ok(after);
            }
        }
        Ok(after)
    }

    /// Creates the pod's claims, then the pod. `None` when the pod already exists (a cache that
    /// has not seen it yet).
    async fn create_pod(&self, pod: &Pod, ordinal: i32) -> Result<Option<Pod>, Error> {
        let name = meta::name(&pod.metadata).to_string();
        let set_name = self.name().to_string();
        let claims_api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), meta::namespace(&self.set.metadata));
        for claim in logic::claims(&self.set, ordinal) {
            let claim_name = meta::name(&claim.metadata).to_string();
            match claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.ctx.recorder.record(
                    &self.set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("create Claim {claim_name} Pod {name} in StatefulSet {set_name} success"),
                ),
                Err(e) if meta::is_already_exists(&e) => {}
                Err(e) => {
                    self.ctx.recorder.record(
                        &self.set,
                        EventType::Warning,
                        "FailedCreate",
                        format!(
                            "create Claim {claim_name} for Pod {name} in StatefulSet {set_name} failed error: {}",
                            meta::error_message(&e)
                        ),
                    );
                    return Err(api_err(format!("creating claim {claim_name}"))(e));
                }
            }
        }
        match self.pods_api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                self.ctx.recorder.record(
                    &self.set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {set_name} successful"),
                );
                Ok(Some(created))
            }
            Err(e) if meta::is_already_exists(&e) => Ok(None),
            Err(e) => {
                self.ctx.recorder.record(
                    &self.set,
                    EventType::Warning,
                    "FailedCreate",
                    format!("create Pod {name} in StatefulSet {set_name} failed error: {}", meta::error_message(&e)),
                );
                Err(api_err(format!("creating pod {name}"))(e))
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), Error> {
        let name = meta::name(&pod.metadata);
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match self.pods_api.delete(name, &params).await {
            Ok(_) => {
                self.ctx.recorder.record(
                    &self.set,
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!("delete Pod {name} in StatefulSet {} successful", self.name()),
                );
                Ok(())
            }
            // Gone already, or replaced by a pod of the same name: the next sync sees which.
            Err(e) if meta::is_not_found(&e) || meta::is_conflict(&e) => Ok(()),
            Err(e) => {
                self.ctx.recorder.record(
                    &self.set,
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} failed error: {}",
                        self.name(),
                        meta::error_message(&e)
                    ),
                );
                Err(api_err(format!("deleting pod {name}"))(e))
            }
        }
    }

    async fn write_status(&mut self, status: k8s_openapi::api::apps::v1::StatefulSetStatus) -> Result<(), Error> {
        if semantic::status_equal(&Some(&status), &self.set.status.as_ref()) {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), meta::namespace(&self.set.metadata));
        let patch = serde_json::json!({ "status": status });
        match api.patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => {
                self.ctx.written_sets.record(self.set.metadata.resource_version.as_deref(), &updated);
                self.set = updated;
                Ok(())
            }
            Err(e) if meta::is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("updating status of stateful set {}", self.key()))(e)),
        }
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit`, never one a pod or the
    /// status still uses.
    async fn truncate_history(
        &self,
        revisions: &[ControllerRevision],
        pods: &[Pod],
        current: &str,
        update: &str,
    ) -> Result<(), Error> {
        let mut live: HashSet<String> = pods.iter().map(|p| logic::pod_revision(p).to_string()).collect();
        live.insert(current.to_string());
        live.insert(update.to_string());
        for rev in history::to_truncate(revisions, &live, logic::revision_history_limit(&self.set)) {
            let name = meta::name(&rev.metadata);
            match self.revisions_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if meta::is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("deleting revision {name}"))(e)),
            }
        }
        Ok(())
    }
}
