//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets
//! (RollingUpdate or Recreate), scales them proportionally, keeps the revision history and
//! reports progress and availability (upstream `pkg/controller/deployment`).

pub mod rolling;
pub mod util;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::runtime::{self, Outcome, Queue};
use crate::util::events::{EventType, Recorder};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::overlay::Overlay;
use crate::util::pods;
use crate::util::selector::{self, Selector};
use crate::util::semantic;
use crate::util::time;
use util::reason;

/// Errors of one Deployment sync.
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
    /// The new ReplicaSet's name is taken by a different ReplicaSet; collisionCount was raised.
    #[error("hash collision creating replica set {0}; retrying with a new collision count")]
    HashCollision(String),
    /// The spec cannot be acted on.
    #[error(transparent)]
    Spec(#[from] util::Error),
    /// The Deployment was deleted during the sync; nothing more to do.
    #[error("deployment was deleted")]
    Gone,
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Shared state of the Deployment controller.
pub struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    recorder: Recorder,
    /// Our own recent writes, for syncs that start before the watch delivers them.
    written_deployments: Overlay<Deployment>,
    written_replica_sets: Overlay<ReplicaSet>,
}

/// Registers the controller's watches on the informers and returns the controller's run loop.
pub fn controller(
    client: Client,
    deployment_informer: &mut Informer<Deployment>,
    rs_informer: &mut Informer<ReplicaSet>,
    pod_informer: &mut Informer<Pod>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<Deployment>();
    let deployments = deployment_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        replica_sets: rs_informer.store(),
        pods: pod_informer.store(),
        recorder: Recorder::new(client, "deployment-controller"),
        written_deployments: Overlay::default(),
        written_replica_sets: Overlay::default(),
    });
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        deployment_informer.on_event(move |event| match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => queue.enqueue_object(d),
            watcher::Event::Delete(d) => ctx.written_deployments.forget(d),
            watcher::Event::Init | watcher::Event::InitDone => {}
        });
    }
    {
        let queue = queue.clone();
        let deployments = deployments.clone();
        let ctx = ctx.clone();
        rs_informer.on_event(move |event| match event {
            watcher::Event::Apply(rs) | watcher::Event::InitApply(rs) => {
                enqueue_for_replica_set(&queue, &deployments, rs)
            }
            watcher::Event::Delete(rs) => {
                ctx.written_replica_sets.forget(rs);
                enqueue_for_replica_set(&queue, &deployments, rs)
            }
            watcher::Event::InitDone => queue.enqueue_all(&deployments, None),
            watcher::Event::Init => {}
        });
    }
    {
        // A Recreate rollout waits for old pods to be gone; their deletion is the signal.
        let queue = queue.clone();
        let replica_sets = ctx.replica_sets.clone();
        pod_informer.on_event(move |event| {
            if let watcher::Event::Delete(pod) = event
                && let Some(owner) = meta::controller_of(&pod.metadata)
                && owner.kind == "ReplicaSet"
            {
                let ns = meta::namespace(&pod.metadata);
                let rs =
                    replica_sets.find(|rs| meta::namespace(&rs.metadata) == ns && meta::uid(&rs.metadata) == owner.uid);
                if let Some(d_owner) = rs.as_ref().and_then(|rs| meta::controller_of(&rs.metadata))
                    && d_owner.kind == "Deployment"
                {
                    queue.enqueue(Some(ns), &d_owner.name);
                }
            }
        });
    }
    let (replica_sets, pods) = (ctx.replica_sets.clone(), ctx.pods.clone());
    let ready = async move {
        let _ = futures::join!(replica_sets.wait_until_ready(), pods.wait_until_ready());
    };
    runtime::run("deployment", ready, deployments, receiver, ctx, reconcile)
}

fn enqueue_for_replica_set(queue: &Queue<Deployment>, deployments: &Store<Deployment>, rs: &ReplicaSet) {
    if !queue.enqueue_controller_of(&rs.metadata) {
        queue.enqueue_adopters(deployments, &rs.metadata, |d| d.spec.as_ref().map(|s| &s.selector));
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    let d = ctx.written_deployments.latest(&d);
    let mut sync = DeploymentSync::new(&ctx, d);
    match sync.run().await {
        Ok(()) => Ok(sync.outcome),
        Err(Error::Gone) => Ok(Outcome::done()),
        Err(e) => Err(e),
    }
}

/// One sync of one Deployment. Every write replaces the local copy with the server's answer, so
/// later steps of the same sync see their own effects even before the watch delivers them.
struct DeploymentSync<'a> {
    ctx: &'a Context,
    d: Deployment,
    /// The status the server has (the last one read or written).
    server_status: Option<DeploymentStatus>,
    rss: Vec<ReplicaSet>,
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    now: Timestamp,
    outcome: Outcome,
}

impl<'a> DeploymentSync<'a> {
    fn new(ctx: &'a Context, d: Deployment) -> Self {
        let ns = meta::namespace(&d.metadata).to_string();
        DeploymentSync {
            ctx,
            server_status: d.status.clone(),
            d,
            rss: Vec::new(),
            deployments: Api::namespaced(ctx.client.clone(), &ns),
            replica_sets: Api::namespaced(ctx.client.clone(), &ns),
            now: time::now(),
            outcome: Outcome::done(),
        }
    }

    fn name(&self) -> String {
        meta::name(&self.d.metadata).to_string()
    }

    fn key(&self) -> String {
        meta::key(&self.d.metadata)
    }

    /// Upstream `syncDeployment`.
    async fn run(&mut self) -> Result<(), Error> {
        let selector = self.d.spec.as_ref().map(|s| s.selector.clone());
        if selector::is_empty_selector(selector.as_ref()) {
            self.ctx.recorder.record(
                &self.d,
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".to_string(),
            );
            let observed = self.d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if observed < self.d.metadata.generation.unwrap_or(0) {
                self.d.status.get_or_insert_with(Default::default).observed_generation = self.d.metadata.generation;
                self.write_status().await?;
            }
            return Ok(());
        }
        self.rss = self.claim_replica_sets().await?;

        if self.d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only().await;
        }
        self.check_paused_conditions().await?;
        if util::paused(&self.d) {
            return self.sync().await;
        }
        if self.is_scaling_event().await? {
            return self.sync().await;
        }
        match util::strategy_type(&self.d) {
            "Recreate" => self.rollout_recreate().await,
            "RollingUpdate" => self.rollout_rolling().await,
            other => Err(util::Error::UnsupportedStrategy(other.to_string()).into()),
        }
    }

    // ---- writes --------------------------------------------------------------------------------

    async fn update_rs(&mut self, idx: usize, rs: ReplicaSet) -> Result<(), Error> {
        let name = meta::name(&rs.metadata).to_string();
        let updated = self
            .replica_sets
            .replace(&name, &PostParams::default(), &rs)
            .await
            .map_err(api_err(format!("updating replica set {}/{name}", meta::namespace(&rs.metadata))))?;
        self.ctx.written_replica_sets.record(rs.metadata.resource_version.as_deref(), &updated);
        self.rss[idx] = updated;
        Ok(())
    }

    /// Writes the Deployment's annotations (the revision) through the main resource.
    async fn write_annotations(&mut self) -> Result<(), Error> {
        let name = self.name();
        let updated = match self.deployments.replace(&name, &PostParams::default(), &self.d).await {
            Ok(u) => u,
            Err(e) if meta::is_not_found(&e) => return Err(Error::Gone),
            Err(e) => return Err(api_err(format!("updating revision of deployment {}", self.key()))(e)),
        };
        self.ctx.written_deployments.record(self.d.metadata.resource_version.as_deref(), &updated);
        let wanted_status = self.d.status.take();
        self.server_status = updated.status.clone();
        self.d = updated;
        self.d.status = wanted_status;
        Ok(())
    }

    /// Writes the local status if it differs from the server's.
    async fn write_status(&mut self) -> Result<(), Error> {
        if semantic::status_equal(&self.d.status, &self.server_status) {
            return Ok(());
        }
        let name = self.name();
        let updated = match self.deployments.replace_status(&name, &PostParams::default(), &self.d).await {
            Ok(u) => u,
            Err(e) if meta::is_not_found(&e) => return Err(Error::Gone),
            Err(e) => return Err(api_err(format!("updating status of deployment {}", self.key()))(e)),
        };
        self.ctx.written_deployments.record(self.d.metadata.resource_version.as_deref(), &updated);
        self.server_status = updated.status.clone();
        self.d = updated;
        Ok(())
    }

    fn status_mut(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    // ---- ReplicaSet ownership ------------------------------------------------------------------

    /// The ReplicaSets this Deployment controls, adopting matching orphans and releasing owned
    /// ones that no longer match (upstream `getReplicaSetsForDeployment`).
    async fn claim_replica_sets(&mut self) -> Result<Vec<ReplicaSet>, Error> {
        let ns = meta::namespace(&self.d.metadata).to_string();
        let d_uid = meta::uid(&self.d.metadata).to_string();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let selector = self
            .d
            .spec
            .as_ref()
            .and_then(|s| Selector::from_label_selector(&s.selector).ok())
            .unwrap_or(Selector::Nothing);
        let candidates = self.ctx.replica_sets.state_filter(|rs| meta::namespace(&rs.metadata) == ns);
        let mut owned = Vec::new();
        let mut adoption_checked = false;
        for cached in candidates {
            let rs = self.ctx.written_replica_sets.latest(&cached);
            let matches = selector.matches(rs.metadata.labels.as_ref());
            match meta::controller_of(&rs.metadata) {
                Some(owner) if owner.uid == d_uid => {
                    if matches {
                        owned.push(rs);
                    } else if !deleting {
                        let mut released = rs.clone();
                        if let Some(refs) = released.metadata.owner_references.as_mut() {
                            refs.retain(|r| r.uid != d_uid);
                        }
                        match self
                            .replica_sets
                            .replace(meta::name(&rs.metadata), &PostParams::default(), &released)
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if meta::is_not_found(&e) => {}
                            Err(e) => {
                                return Err(api_err(format!("releasing replica set {}", meta::key(&rs.metadata)))(e));
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if !adoption_checked {
                        // Never adopt on behalf of a Deployment that a stale cache still shows.
                        let fresh = self
                            .deployments
                            .get_opt(&self.name())
                            .await
                            .map_err(api_err(format!("checking deployment {} before adoption", self.key())))?;
                        match fresh {
                            Some(f) if meta::uid(&f.metadata) == d_uid && f.metadata.deletion_timestamp.is_none() => {}
                            _ => return Ok(owned),
                        }
                        adoption_checked = true;
                    }
                    let mut adopted = rs.clone();
                    adopted.metadata.owner_references.get_or_insert_with(Vec::new).push(meta::controller_ref(&self.d));
                    match self.replica_sets.replace(meta::name(&rs.metadata), &PostParams::default(), &adopted).await {
                        Ok(updated) => owned.push(updated),
                        Err(e) if meta::is_not_found(&e) => {}
                        Err(e) => return Err(api_err(format!("adopting replica set {}", meta::key(&rs.metadata)))(e)),
                    }
                }
            }
        }
        Ok(owned)
    }

    // ---- new and old ReplicaSets ---------------------------------------------------------------

    /// (new, old) ReplicaSet indices, with the new one's and the Deployment's revision brought up
    /// to date, creating the new one when `create` (upstream `getAllReplicaSetsAndSyncRevision`).
    async fn all_replica_sets(&mut self, create: bool) -> Result<(Option<usize>, Vec<usize>), Error> {
        let old = util::find_old_rss(&self.d, &self.rss);
        let new = self.new_replica_set(&old, create).await?;
        Ok((new, old))
    }

    async fn new_replica_set(&mut self, old: &[usize], create: bool) -> Result<Option<usize>, Error> {
        let existing = util::find_new_rs(&self.d, &self.rss);
        let new_revision = util::max_revision(old.iter().map(|&i| &self.rss[i])) + 1;
        if let Some(i) = existing {
            let mut copy = self.rss[i].clone();
            let annotations_changed = util::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let min_ready = util::min_ready_seconds(&self.d);
            let spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready;
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = Some(min_ready);
                self.update_rs(i, copy).await?;
            }
            let rev = self.rss[i]
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(util::REVISION))
                .cloned()
                .unwrap_or_default();
            let revision_changed = util::set_deployment_revision(&mut self.d, &rev);
            if util::progress_deadline(&self.d).is_some()
                && util::get_condition(self.d.status.as_ref(), reason::PROGRESSING).is_none()
            {
                let msg = format!("Found new replica set \"{}\"", meta::name(&self.rss[i].metadata));
                let c = util::new_condition(reason::PROGRESSING, "True", reason::FOUND_NEW_RS, msg, self.now);
                util::set_condition(self.status_mut(), c);
            }
            if revision_changed {
                self.write_annotations().await?;
            }
            self.write_status().await?;
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        self.create_new_replica_set(old, new_revision).await.map(Some)
    }

    async fn create_new_replica_set(&mut self, old: &[usize], new_revision: i64) -> Result<usize, Error> {
        let template = util::template(&self.d);
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::compute_hash(&template, collision_count);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(util::POD_TEMPLATE_HASH.to_string(), hash.clone());
        let selector = selector::with_label(self.d.spec.as_ref().map(|s| &s.selector), util::POD_TEMPLATE_HASH, &hash);
        let rs_name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                owner_references: Some(vec![meta::controller_ref(&self.d)]),
                labels: new_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(util::min_ready_seconds(&self.d)),
                selector,
                template: Some(new_template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().map(|&i| &self.rss[i]).chain(std::iter::once(&rs)).collect();
        let replicas = util::new_rs_new_replicas(&self.d, &all, &rs)?;
        util::set_rs_replicas(&mut rs, replicas);
        util::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);

        let mut already_exists = false;
        let created = match self.replica_sets.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(e) if meta::is_already_exists(&e) => {
                let existing =
                    self.replica_sets.get(&rs_name).await.map_err(api_err(format!("reading replica set {rs_name}")))?;
                let ours = meta::is_controlled_by(&existing.metadata, meta::uid(&self.d.metadata));
                let same_template = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(&util::template(&self.d), t));
                if ours && same_template {
                    already_exists = true;
                    existing
                } else {
                    // Another ReplicaSet has this name: a new collision count gives a new hash.
                    let status = self.status_mut();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status().await?;
                    return Err(Error::HashCollision(rs_name));
                }
            }
            Err(e) if meta::is_namespace_terminating(&e) => {
                return Err(api_err(format!("creating replica set {rs_name}"))(e));
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{rs_name}\": {}", meta::error_message(&e));
                if util::progress_deadline(&self.d).is_some() {
                    let c = util::new_condition(
                        reason::PROGRESSING,
                        "False",
                        reason::FAILED_RS_CREATE,
                        msg.clone(),
                        self.now,
                    );
                    util::set_condition(self.status_mut(), c);
                    // The create failure is the error worth reporting; a failed status write is not.
                    let _ = self.write_status().await;
                }
                self.ctx.recorder.record(&self.d, EventType::Warning, reason::FAILED_RS_CREATE, msg);
                return Err(api_err(format!("creating replica set {rs_name}"))(e));
            }
        };
        if !already_exists && replicas > 0 {
            self.ctx.recorder.record(
                &self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
            );
        }
        let revision_changed = util::set_deployment_revision(&mut self.d, &new_revision.to_string());
        if !already_exists && util::progress_deadline(&self.d).is_some() {
            let msg = format!("Created new replica set \"{rs_name}\"");
            let c = util::new_condition(reason::PROGRESSING, "True", reason::NEW_REPLICA_SET, msg, self.now);
            util::set_condition(self.status_mut(), c);
        }
        self.rss.push(created);
        if revision_changed {
            self.write_annotations().await?;
        }
        self.write_status().await?;
        Ok(self.rss.len() - 1)
    }

    // ---- scaling -------------------------------------------------------------------------------

    async fn scale_and_record(&mut self, idx: usize, new_scale: i32) -> Result<bool, Error> {
        let current = util::rs_replicas(&self.rss[idx]);
        if current == new_scale {
            return Ok(false);
        }
        let op = if current < new_scale { "up" } else { "down" };
        self.scale_replica_set(idx, new_scale, op).await
    }

    async fn scale_replica_set(&mut self, idx: usize, new_scale: i32, op: &str) -> Result<bool, Error> {
        let rs = &self.rss[idx];
        let old_scale = util::rs_replicas(rs);
        let size_changed = old_scale != new_scale;
        let desired = util::replicas(&self.d);
        let max = desired + util::max_surge(&self.d);
        if !size_changed && !util::replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        util::set_rs_replicas(&mut copy, new_scale);
        util::set_replicas_annotations(&mut copy, desired, max);
        let name = meta::name(&copy.metadata).to_string();
        self.update_rs(idx, copy).await?;
        if size_changed {
            self.ctx.recorder.record(
                &self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {old_scale} to {new_scale}"),
            );
        }
        Ok(size_changed)
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().copied().filter(|&i| util::rs_replicas(&self.rss[i]) > 0).collect()
    }

    /// Scaling outside a rollout, proportionally across active ReplicaSets (upstream `scale`).
    async fn scale(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), Error> {
        let desired = util::replicas(&self.d);
        if let Some(i) = util::find_active_or_latest(&self.rss, new, old) {
            if util::rs_replicas(&self.rss[i]) != desired {
                self.scale_and_record(i, desired).await?;
            }
            return Ok(());
        }
        if let Some(n) = new
            && util::is_saturated(&self.d, &self.rss[n])
        {
            for i in self.active(old) {
                self.scale_and_record(i, 0).await?;
            }
            return Ok(());
        }
        if util::is_rolling_update(&self.d) {
            let mut candidates = old.to_vec();
            candidates.extend(new);
            let active = self.active(&candidates);
            for (i, size, op) in util::proportional_sizes(&self.d, &self.rss, &active) {
                self.scale_replica_set(i, size, op).await?;
            }
        }
        Ok(())
    }

    /// Deletes old ReplicaSets beyond revisionHistoryLimit, oldest revision first, once they are
    /// scaled to zero (upstream `cleanupDeployment`).
    async fn cleanup(&mut self, old: &[usize]) -> Result<(), Error> {
        let Some(limit) = util::revision_history_limit(&self.d) else {
            return Ok(());
        };
        let mut cleanable: Vec<usize> =
            old.iter().copied().filter(|&i| self.rss[i].metadata.deletion_timestamp.is_none()).collect();
        let surplus = cleanable.len() as i64 - i64::from(limit);
        if surplus <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|&a, &b| util::by_revision(&self.rss[a], &self.rss[b]));
        for &i in cleanable.iter().take(surplus as usize) {
            let rs = &self.rss[i];
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if util::rs_status_replicas(rs) != 0
                || util::rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = meta::name(&rs.metadata).to_string();
            match self.replica_sets.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if meta::is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("deleting old replica set {name}"))(e)),
            }
        }
        Ok(())
    }

    // ---- status --------------------------------------------------------------------------------

    fn refs(&self, indices: &[usize]) -> Vec<&ReplicaSet> {
        indices.iter().map(|&i| &self.rss[i]).collect()
    }

    fn all_indices(new: Option<usize>, old: &[usize]) -> Vec<usize> {
        let mut all = old.to_vec();
        all.extend(new);
        all
    }

    async fn sync_deployment_status(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), Error> {
        let all = Self::all_indices(new, old);
        let status = util::calculate_status(&self.refs(&all), new.map(|i| &self.rss[i]), &self.d, self.now);
        self.d.status = Some(status);
        self.write_status().await
    }

    async fn sync_rollout_status(&mut self, new: Option<usize>, old: &[usize]) -> Result<(), Error> {
        let all = Self::all_indices(new, old);
        let status = util::rollout_status(&self.refs(&all), new.map(|i| &self.rss[i]), &self.d, self.now);
        if semantic::status_equal(&Some(&status), &self.server_status.as_ref()) {
            if let Some(after) = util::progress_check_after(&self.d, &status, self.now) {
                self.outcome = self.outcome.merge(Outcome::after(after));
            }
            return Ok(());
        }
        self.d.status = Some(status);
        self.write_status().await
    }

    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if util::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let cond = util::get_condition(self.d.status.as_ref(), reason::PROGRESSING);
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let paused = util::paused(&self.d);
        let condition = if paused && !paused_cond {
            util::new_condition(reason::PROGRESSING, "Unknown", reason::PAUSED, "Deployment is paused".into(), self.now)
        } else if !paused && paused_cond {
            util::new_condition(
                reason::PROGRESSING,
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                self.now,
            )
        } else {
            return Ok(());
        };
        util::set_condition(self.status_mut(), condition);
        self.write_status().await
    }

    // ---- strategies ----------------------------------------------------------------------------

    async fn sync_status_only(&mut self) -> Result<(), Error> {
        let (new, old) = self.all_replica_sets(false).await?;
        self.sync_deployment_status(new, &old).await
    }

    /// Scaling events and paused Deployments (upstream `sync`).
    async fn sync(&mut self) -> Result<(), Error> {
        let (new, old) = self.all_replica_sets(false).await?;
        self.scale(new, &old).await?;
        if util::paused(&self.d) {
            self.cleanup(&old).await?;
        }
        self.sync_deployment_status(new, &old).await
    }

    /// Whether spec.replicas differs from what the active ReplicaSets were last scaled for.
    async fn is_scaling_event(&mut self) -> Result<bool, Error> {
        let (new, old) = self.all_replica_sets(false).await?;
        let desired = util::replicas(&self.d);
        let all = Self::all_indices(new, &old);
        Ok(self
            .active(&all)
            .into_iter()
            .filter_map(|i| util::desired_replicas_annotation(&self.rss[i]))
            .any(|annotated| annotated != desired))
    }

    async fn rollout_rolling(&mut self) -> Result<(), Error> {
        let (new, old) = self.all_replica_sets(true).await?;
        let Some(new_idx) = new else {
            return self.sync_rollout_status(new, &old).await;
        };
        let all = Self::all_indices(new, &old);
        let target = rolling::new_rs_target(&self.d, &self.refs(&all), &self.rss[new_idx])?;
        if let Some(target) = target
            && self.scale_and_record(new_idx, target).await?
        {
            return self.sync_rollout_status(new, &old).await;
        }
        let active_old = self.active(&old);
        let downs = rolling::old_rs_scale_downs(&self.d, &self.rss, &active_old, new_idx);
        if !downs.is_empty() {
            for (i, size) in downs {
                self.scale_and_record(i, size).await?;
            }
            return self.sync_rollout_status(new, &old).await;
        }
        if util::deployment_complete(&self.d, self.d.status.as_ref()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(new, &old).await
    }

    async fn rollout_recreate(&mut self) -> Result<(), Error> {
        // Do not create the new ReplicaSet before the old pods are gone.
        let (mut new, mut old) = self.all_replica_sets(false).await?;
        let mut scaled_down = false;
        for i in self.active(&old) {
            scaled_down |= self.scale_and_record(i, 0).await?;
        }
        if scaled_down || self.old_pods_running(new, &old) {
            return self.sync_rollout_status(new, &old).await;
        }
        if new.is_none() {
            (new, old) = self.all_replica_sets(true).await?;
        }
        if let Some(n) = new {
            self.scale_and_record(n, util::replicas(&self.d)).await?;
        }
        if util::deployment_complete(&self.d, self.d.status.as_ref()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(new, &old).await
    }

    /// Whether any old ReplicaSet still reports pods or any of their pods is not terminal.
    fn old_pods_running(&self, new: Option<usize>, old: &[usize]) -> bool {
        if util::actual_replica_count(old.iter().map(|&i| &self.rss[i])) > 0 {
            return true;
        }
        let old_uids: HashSet<&str> = old.iter().map(|&i| meta::uid(&self.rss[i].metadata)).collect();
        let new_uid = new.map(|i| meta::uid(&self.rss[i].metadata));
        let ns = meta::namespace(&self.d.metadata);
        self.ctx
            .pods
            .find(|p| {
                meta::namespace(&p.metadata) == ns
                    && meta::controller_of(&p.metadata)
                        .is_some_and(|o| old_uids.contains(o.uid.as_str()) && Some(o.uid.as_str()) != new_uid)
                    && !matches!(pods::phase(p), "Failed" | "Succeeded")
            })
            .is_some()
    }
}
