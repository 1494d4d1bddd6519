//! The garbage collector: deletes objects whose owners are gone and carries out the three
//! deletion propagation policies (upstream `pkg/controller/garbagecollector`).
//!
//! * Background: the owner is deleted at once; its dependents, whose ownerReferences now point at
//!   nothing, are deleted afterwards.
//! * Foreground: the owner keeps a deletionTimestamp and the `foregroundDeletion` finalizer until
//!   every dependent that blocks it (`blockOwnerDeletion: true`) is gone; dependents are deleted
//!   first (in the foreground themselves when they have dependents of their own).
//! * Orphan: the owner has the `orphan` finalizer; its reference is stripped from every dependent,
//!   then the finalizer is removed.
//!
//! It watches every resource that discovery reports as listable, watchable and deletable, and
//! keeps a graph of owner references in memory (uids only, not whole objects).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::util::backoff::Backoff;
use crate::util::discovery::{self, Served};
use crate::util::meta;
use crate::util::workqueue::WorkQueue;

/// Finalizer of an owner being deleted in the foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer of an owner whose dependents are being orphaned.
pub const ORPHAN: &str = "orphan";

const WORKERS: usize = 4;
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
const ABSENT_CACHE_LIMIT: usize = 10_000;

/// Errors of one garbage-collection step.
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

/// What the collector knows about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The resource's `plural.group`.
    pub resource: String,
    /// The resource, for API calls.
    pub api: ApiResource,
    /// Namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// Last seen resourceVersion (used as a write precondition).
    pub resource_version: Option<String>,
    /// metadata.ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
    /// metadata.finalizers.
    pub finalizers: Vec<String>,
}

impl Node {
    fn from_object(resource: &str, api: &ApiResource, obj: &DynamicObject) -> Option<Node> {
        let m = &obj.metadata;
        Some(Node {
            resource: resource.to_string(),
            api: api.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            resource_version: m.resource_version.clone(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Being deleted in the foreground: waiting for its dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.resource, self.name),
            None => format!("{} {}", self.resource, self.name),
        }
    }
}

/// The owner graph: nodes by uid and, for each owner uid, its dependents.
#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    by_resource: HashMap<String, HashSet<String>>,
    relisting: HashMap<String, HashSet<String>>,
    /// Owner uids confirmed gone (uids are never reused).
    absent: HashSet<String>,
}

impl Graph {
    /// A node by uid.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The dependents of `uid` the graph knows.
    pub fn dependents_of(&self, uid: &str) -> Vec<Node> {
        self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d)).cloned().collect()
    }

    /// Whether `uid` is known to be gone.
    pub fn is_absent(&self, uid: &str) -> bool {
        self.absent.contains(uid)
    }

    fn mark_absent(&mut self, uid: &str) {
        if self.absent.len() >= ABSENT_CACHE_LIMIT {
            self.absent.clear();
        }
        self.absent.insert(uid.to_string());
    }

    /// Records an added or changed object; returns the uids that need processing.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let mut work = Vec::new();
        let uid = node.uid.clone();
        let old = self.nodes.insert(uid.clone(), node.clone());
        self.by_resource.entry(node.resource.clone()).or_default().insert(uid.clone());
        if let Some(relist) = self.relisting.get_mut(&node.resource) {
            relist.insert(uid.clone());
        }
        let old_owners: Vec<OwnerReference> = old.as_ref().map(|o| o.owners.clone()).unwrap_or_default();
        for r in &old_owners {
            if let Some(deps) = self.dependents.get_mut(&r.uid) {
                deps.remove(&uid);
                if deps.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
        for r in &node.owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(uid.clone());
        }
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        if owners_changed {
            if !node.owners.is_empty() {
                work.push(uid.clone());
            }
            // A dependent that dropped or unblocked its reference may let a foreground owner finish.
            for r in &old_owners {
                if self.nodes.get(&r.uid).is_some_and(Node::deleting_dependents) {
                    work.push(r.uid.clone());
                }
            }
        }
        if node.deleting && node.has_finalizer(ORPHAN) {
            work.push(uid.clone());
        }
        if node.deleting_dependents() {
            work.push(uid.clone());
            work.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        }
        work
    }

    /// Records a deleted object; returns the uids that need processing: its dependents (which
    /// may now be orphans) and owners waiting in the foreground for it to go.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut work = Vec::new();
        self.mark_absent(uid);
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        if let Some(set) = self.by_resource.get_mut(&node.resource) {
            set.remove(uid);
        }
        for r in &node.owners {
            if let Some(deps) = self.dependents.get_mut(&r.uid) {
                deps.remove(uid);
                if deps.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self.nodes.get(&r.uid).is_some_and(Node::deleting_dependents) {
                work.push(r.uid.clone());
            }
        }
        work.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        work
    }

    /// A watch of `resource` restarted: objects not listed again by [`Graph::relist_done`] are gone.
    pub fn relist_start(&mut self, resource: &str) {
        self.relisting.insert(resource.to_string(), HashSet::new());
    }

    /// The relist of `resource` finished: forget what it no longer lists.
    pub fn relist_done(&mut self, resource: &str) -> Vec<String> {
        let Some(listed) = self.relisting.remove(resource) else {
            return Vec::new();
        };
        let known: Vec<String> = self.by_resource.get(resource).into_iter().flatten().cloned().collect();
        let mut work = Vec::new();
        for uid in known {
            if !listed.contains(&uid) {
                work.extend(self.remove(&uid));
            }
        }
        work
    }

    /// Forgets every object of a resource that is no longer served.
    pub fn drop_resource(&mut self, resource: &str) -> Vec<String> {
        let known: Vec<String> = self.by_resource.remove(resource).into_iter().flatten().collect();
        known.iter().flat_map(|uid| self.remove(uid)).collect()
    }
}

/// What an owner reference currently points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// The owner is gone (or the reference is invalid).
    Dangling,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// What to do with a dependent given the state of its owners (upstream `attemptToDeleteItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it alone.
    Keep,
    /// It still has a live owner: drop the references to the owners that are gone or going.
    RemoveReferences(Vec<String>),
    /// Delete it with this propagation policy.
    Delete(Propagation),
}

/// A deletion propagation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete now, collect dependents later.
    Background,
    /// Delete dependents first.
    Foreground,
    /// Keep dependents, stripping the reference.
    Orphan,
}

/// Decides a dependent's fate from its owners' states.
pub fn decide(node: &Node, owners: &[(String, OwnerState)], has_dependents: bool) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    let not_solid: Vec<String> =
        owners.iter().filter(|(_, s)| *s != OwnerState::Solid).map(|(u, _)| u.clone()).collect();
    if solid {
        return if not_solid.is_empty() { Decision::Keep } else { Decision::RemoveReferences(not_solid) };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if waiting && has_dependents {
        // An owner waits for this object, which has dependents of its own: cascade in the foreground.
        return Decision::Delete(Propagation::Foreground);
    }
    let policy = if node.has_finalizer(ORPHAN) {
        Propagation::Orphan
    } else if node.has_finalizer(FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    Decision::Delete(policy)
}

/// The dependents that keep a foreground-deleting owner around.
pub fn blocking_dependents(owner_uid: &str, dependents: &[Node]) -> Vec<Node> {
    dependents
        .iter()
        .filter(|d| d.owners.iter().any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true)))
        .cloned()
        .collect()
}

/// JSON patch operations that drop the owner references with `uids`, last index first so earlier
/// indices stay valid, each guarded by a test of the uid at that index.
pub fn remove_reference_ops(node: &Node, uids: &[String]) -> Vec<serde_json::Value> {
    let mut ops = Vec::new();
    for (i, r) in node.owners.iter().enumerate().rev().filter(|(_, r)| uids.contains(&r.uid)) {
        ops.push(
            serde_json::json!({"op": "test", "path": format!("/metadata/ownerReferences/{i}/uid"), "value": r.uid}),
        );
        ops.push(serde_json::json!({"op": "remove", "path": format!("/metadata/ownerReferences/{i}")}));
    }
    ops
}

/// JSON patch operations that drop `finalizer`, guarded by a test of its position.
pub fn remove_finalizer_ops(node: &Node, finalizer: &str) -> Vec<serde_json::Value> {
    let mut ops = Vec::new();
    for (i, f) in node.finalizers.iter().enumerate().rev().filter(|(_, f)| *f == finalizer) {
        ops.push(serde_json::json!({"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": f}));
        ops.push(serde_json::json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}));
    }
    ops
}

/// The collector's shared state.
pub struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    queue: WorkQueue,
    backoff: Backoff,
    /// (group, kind) -> served resource, for resolving owner references.
    kinds: Mutex<HashMap<(String, String), Served>>,
}

impl Collector {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, uids: Vec<String>) {
        for uid in uids {
            self.queue.add(&uid);
        }
    }

    fn api_for(&self, node: &Node) -> Api<DynamicObject> {
        match &node.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &node.api),
            None => Api::all_with(self.client.clone(), &node.api),
        }
    }

    /// Resolves an owner reference the graph does not know by reading the owner.
    async fn owner_state_live(&self, node: &Node, owner: &OwnerReference) -> Result<OwnerState, Error> {
        let group = owner.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("").to_string();
        let served = {
            let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            kinds.get(&(group, owner.kind.clone())).cloned()
        };
        let Some(served) = served else {
            // An owner of a kind the server does not serve cannot be checked; keep the dependent.
            tracing::debug!(owner = %owner.name, kind = %owner.kind, "owner kind not served");
            return Ok(OwnerState::Solid);
        };
        let api: Api<DynamicObject> = if served.namespaced {
            let Some(ns) = node.namespace.as_deref() else {
                // A cluster-scoped object cannot be owned by a namespaced one.
                return Ok(OwnerState::Dangling);
            };
            Api::namespaced_with(self.client.clone(), ns, &served.resource)
        } else {
            Api::all_with(self.client.clone(), &served.resource)
        };
        let found = api.get_opt(&owner.name).await.map_err(api_err(format!(
            "looking up owner {} {} of {}",
            owner.kind,
            owner.name,
            node.describe()
        )))?;
        Ok(match found {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                let deleting_dependents = o.metadata.deletion_timestamp.is_some()
                    && o.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                if deleting_dependents { OwnerState::Waiting } else { OwnerState::Solid }
            }
            _ => {
                self.graph().mark_absent(&owner.uid);
                OwnerState::Dangling
            }
        })
    }

    async fn process(&self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        if node.deleting && node.has_finalizer(ORPHAN) {
            return self.orphan_dependents(&node).await;
        }
        if node.deleting_dependents() {
            return self.process_deleting_dependents(&node).await;
        }
        // Being deleted is a one-way trip; its dependents are handled once it is gone.
        if node.deleting || node.owners.is_empty() {
            return Ok(());
        }
        let mut states = Vec::with_capacity(node.owners.len());
        for owner in &node.owners {
            let known = {
                let graph = self.graph();
                if graph.is_absent(&owner.uid) {
                    Some(OwnerState::Dangling)
                } else {
                    graph
                        .get(&owner.uid)
                        .map(|o| if o.deleting_dependents() { OwnerState::Waiting } else { OwnerState::Solid })
                }
            };
            let state = match known {
                Some(s) => s,
                None => self.owner_state_live(&node, owner).await?,
            };
            states.push((owner.uid.clone(), state));
        }
        let dependents = self.graph().dependents_of(&node.uid);
        match decide(&node, &states, !dependents.is_empty()) {
            Decision::Keep => Ok(()),
            Decision::RemoveReferences(uids) => self.remove_references(&node, &uids).await,
            Decision::Delete(policy) => {
                if policy == Propagation::Foreground {
                    // Unblock dependents that themselves wait on this object, to break cycles.
                    for dep in dependents.iter().filter(|d| d.deleting_dependents()) {
                        self.unblock_reference(dep, &node.uid).await?;
                    }
                }
                self.delete(&node, policy).await
            }
        }
    }

    async fn delete(&self, node: &Node, policy: Propagation) -> Result<(), Error> {
        tracing::info!(object = %node.describe(), ?policy, "deleting object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: node.resource_version.clone(),
            }),
            ..Default::default()
        };
        match self.api_for(node).delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if meta::is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("deleting {}", node.describe()))(e)),
        }
    }

    /// Applies a JSON patch whose `test` operations pin exactly the entries it changes, so a
    /// concurrent change elsewhere in the object does not make it fail (and one to the same
    /// entries does).
    async fn json_patch(&self, node: &Node, ops: Vec<serde_json::Value>, what: &str) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch = match serde_json::from_value(serde_json::Value::Array(ops)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%e, "building a JSON patch failed");
                return Ok(());
            }
        };
        match self.api_for(node).patch(&node.name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => Ok(()),
            Err(e) if meta::is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("{what} of {}", node.describe()))(e)),
        }
    }

    async fn remove_references(&self, node: &Node, uids: &[String]) -> Result<(), Error> {
        let ops = remove_reference_ops(node, uids);
        self.json_patch(node, ops, "removing owner references").await
    }

    async fn unblock_reference(&self, node: &Node, owner_uid: &str) -> Result<(), Error> {
        let mut ops = Vec::new();
        for (i, r) in node.owners.iter().enumerate().filter(|(_, r)| r.uid == owner_uid) {
            ops.push(
                serde_json::json!({"op": "test", "path": format!("/metadata/ownerReferences/{i}/uid"), "value": r.uid}),
            );
            ops.push(serde_json::json!({"op": "add", "path": format!("/metadata/ownerReferences/{i}/blockOwnerDeletion"), "value": false}));
        }
        self.json_patch(node, ops, "unblocking owner reference").await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let ops = remove_finalizer_ops(node, finalizer);
        self.json_patch(node, ops, "removing finalizer").await
    }

    async fn orphan_dependents(&self, owner: &Node) -> Result<(), Error> {
        let dependents = self.graph().dependents_of(&owner.uid);
        for dep in dependents {
            self.remove_references(&dep, std::slice::from_ref(&owner.uid)).await?;
        }
        self.remove_finalizer(owner, ORPHAN).await
    }

    async fn process_deleting_dependents(&self, owner: &Node) -> Result<(), Error> {
        let dependents = self.graph().dependents_of(&owner.uid);
        if blocking_dependents(&owner.uid, &dependents).is_empty() {
            return self.remove_finalizer(owner, FOREGROUND).await;
        }
        for dep in dependents.iter().filter(|d| !d.deleting_dependents()) {
            self.queue.add(&dep.uid);
        }
        Ok(())
    }
}

/// Runs the garbage collector until the future is dropped.
pub async fn run(client: Client) {
    let collector = Arc::new(Collector {
        client: client.clone(),
        graph: Mutex::new(Graph::default()),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        kinds: Mutex::new(HashMap::new()),
    });
    let mut watches: HashMap<String, JoinHandle<()>> = HashMap::new();
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut workers_started = false;
    let mut discovery_failures = 0u32;
    loop {
        match discovery::discover(client.clone()).await {
            Ok(served) => {
                discovery_failures = 0;
                {
                    let mut kinds = collector.kinds.lock().unwrap_or_else(|e| e.into_inner());
                    kinds.clear();
                    for s in &served {
                        kinds.insert((s.resource.group.clone(), s.resource.kind.clone()), s.clone());
                    }
                }
                let wanted: HashMap<String, Served> =
                    served.into_iter().filter(|s| s.collectable() && !s.is_event()).map(|s| (s.key(), s)).collect();
                watches.retain(|key, handle| {
                    if wanted.contains_key(key) {
                        return true;
                    }
                    handle.abort();
                    let work = collector.graph().drop_resource(key);
                    collector.enqueue(work);
                    false
                });
                let mut started = Vec::new();
                for (key, s) in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) = watches.entry(key.clone()) {
                        started.push(key);
                        slot.insert(tokio::spawn(watch_resource(collector.clone(), s, synced_tx.clone())));
                    }
                }
                if !workers_started {
                    wait_for_initial_sync(&mut synced_rx, started.into_iter().collect()).await;
                    for _ in 0..WORKERS {
                        tokio::spawn(worker(collector.clone()));
                    }
                    workers_started = true;
                }
                tokio::time::sleep(REDISCOVERY_INTERVAL).await;
            }
            Err(err) => {
                discovery_failures += 1;
                let delay = Duration::from_secs(u64::from(discovery_failures.min(30)));
                tracing::warn!(%err, retry_in = ?delay, "garbage collector: discovery failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits until every initial watch has listed its objects (so owners are known before their
/// dependents are judged), or a timeout passes.
async fn wait_for_initial_sync(
    synced: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    mut pending: HashSet<String>,
) {
    let deadline = tokio::time::Instant::now() + INITIAL_SYNC_TIMEOUT;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, synced.recv()).await {
            Ok(Some(key)) => {
                pending.remove(&key);
            }
            Ok(None) | Err(_) => {
                tracing::warn!(unsynced = ?pending, "garbage collector starting before every watch listed");
                return;
            }
        }
    }
}

async fn watch_resource(collector: Arc<Collector>, served: Served, synced: tokio::sync::mpsc::UnboundedSender<String>) {
    let key = served.key();
    let api: Api<DynamicObject> = Api::all_with(collector.client.clone(), &served.resource);
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let work = match event {
            Ok(watcher::Event::Init) => {
                collector.graph().relist_start(&key);
                Vec::new()
            }
            Ok(watcher::Event::InitApply(obj)) | Ok(watcher::Event::Apply(obj)) => {
                match Node::from_object(&key, &served.resource, &obj) {
                    Some(node) => collector.graph().upsert(node),
                    None => Vec::new(),
                }
            }
            Ok(watcher::Event::InitDone) => {
                let _ = synced.send(key.clone());
                collector.graph().relist_done(&key)
            }
            Ok(watcher::Event::Delete(obj)) => match obj.metadata.uid.as_deref() {
                Some(uid) => collector.graph().remove(uid),
                None => Vec::new(),
            },
            Err(err) => {
                tracing::debug!(resource = %key, %err, "garbage collector watch failed, retrying");
                Vec::new()
            }
        };
        collector.enqueue(work);
    }
}

async fn worker(collector: Arc<Collector>) {
    loop {
        let uid = collector.queue.next().await;
        match collector.process(&uid).await {
            Ok(()) => collector.backoff.reset(&uid),
            Err(err) => {
                let delay = collector.backoff.next_delay(&uid);
                tracing::info!(%err, retry_in = ?delay, "garbage collection step failed");
                collector.queue.add_after(&uid, delay);
            }
        }
        collector.queue.done(&uid);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn api() -> ApiResource {
        ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            plural: "replicasets".into(),
        }
    }

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: "replicasets.apps".into(),
            api: api(),
            namespace: Some("default".into()),
            name: format!("n-{uid}"),
            uid: uid.into(),
            resource_version: Some("1".into()),
            owners,
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn a_new_dependent_is_checked_and_indexed_under_its_owner() {
        let mut g = Graph::default();
        assert!(g.upsert(node("owner", vec![])).is_empty());
        assert_eq!(g.upsert(node("dep", vec![owner_ref("owner", true)])), vec!["dep".to_string()]);
        assert_eq!(g.dependents_of("owner").len(), 1);
        // An unchanged update needs no work.
        assert!(g.upsert(node("dep", vec![owner_ref("owner", true)])).is_empty());
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents_and_remembers_it_is_gone() {
        let mut g = Graph::default();
        g.upsert(node("owner", vec![]));
        g.upsert(node("dep", vec![owner_ref("owner", true)]));
        assert_eq!(g.remove("owner"), vec!["dep".to_string()]);
        assert!(g.is_absent("owner"));
    }

    #[test]
    fn foreground_owner_queues_itself_and_dependents_and_is_requeued_when_one_goes() {
        let mut g = Graph::default();
        g.upsert(node("dep", vec![owner_ref("owner", true)]));
        let mut owner = node("owner", vec![]);
        owner.deleting = true;
        owner.finalizers = vec![FOREGROUND.into()];
        let work = g.upsert(owner);
        assert!(work.contains(&"owner".to_string()) && work.contains(&"dep".to_string()));
        assert_eq!(g.remove("dep"), vec!["owner".to_string()]);
    }

    #[test]
    fn relist_forgets_objects_deleted_while_disconnected() {
        let mut g = Graph::default();
        g.upsert(node("owner", vec![]));
        g.upsert(node("gone", vec![]));
        g.upsert(node("dep", vec![owner_ref("gone", true)]));
        g.relist_start("replicasets.apps");
        g.upsert(node("owner", vec![]));
        g.upsert(node("dep", vec![owner_ref("gone", true)]));
        let work = g.relist_done("replicasets.apps");
        assert_eq!(work, vec!["dep".to_string()]);
        assert!(g.get("gone").is_none());
    }

    #[test]
    fn decisions_follow_owner_states() {
        let dep = node("dep", vec![owner_ref("a", true), owner_ref("b", true)]);
        let solid = |u: &str| (u.to_string(), OwnerState::Solid);
        let dangling = |u: &str| (u.to_string(), OwnerState::Dangling);
        let waiting = |u: &str| (u.to_string(), OwnerState::Waiting);
        assert_eq!(decide(&dep, &[solid("a"), solid("b")], false), Decision::Keep);
        assert_eq!(decide(&dep, &[solid("a"), dangling("b")], false), Decision::RemoveReferences(vec!["b".into()]));
        assert_eq!(decide(&dep, &[dangling("a"), dangling("b")], false), Decision::Delete(Propagation::Background));
        assert_eq!(decide(&dep, &[waiting("a"), dangling("b")], true), Decision::Delete(Propagation::Foreground));
        assert_eq!(decide(&dep, &[waiting("a")], false), Decision::Delete(Propagation::Background));
        let mut orphaning = dep.clone();
        orphaning.finalizers = vec![ORPHAN.into()];
        assert_eq!(decide(&orphaning, &[dangling("a")], false), Decision::Delete(Propagation::Orphan));
        assert_eq!(decide(&node("x", vec![]), &[], false), Decision::Keep);
    }

    #[test]
    fn patches_remove_exactly_the_named_entries() {
        let mut n = node("dep", vec![owner_ref("a", true), owner_ref("b", true), owner_ref("c", false)]);
        n.finalizers = vec!["x".into(), ORPHAN.into()];
        let mut doc = serde_json::json!({"metadata": {
            "ownerReferences": n.owners.clone(),
            "finalizers": n.finalizers.clone(),
        }});
        let mut ops = remove_reference_ops(&n, &["a".to_string(), "c".to_string()]);
        ops.extend(remove_finalizer_ops(&n, ORPHAN));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        let refs = doc["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["uid"], "b");
        assert_eq!(doc["metadata"]["finalizers"], serde_json::json!(["x"]));
        // A reference that moved makes the patch fail instead of removing the wrong entry.
        let mut moved =
            serde_json::json!({"metadata": {"ownerReferences": [owner_ref("b", true), owner_ref("a", true)]}});
        let ops =
            remove_reference_ops(&node("dep", vec![owner_ref("a", true), owner_ref("b", true)]), &["a".to_string()]);
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        assert!(json_patch::patch(&mut moved, &patch).is_err());
    }

    #[test]
    fn only_blocking_dependents_hold_a_foreground_owner() {
        let deps = vec![node("d1", vec![owner_ref("o", false)]), node("d2", vec![owner_ref("o", true)])];
        let blocking = blocking_dependents("o", &deps);
        assert_eq!(blocking.len(), 1);
        assert_eq!(blocking[0].uid, "d2");
        assert!(blocking_dependents("o", &deps[..1]).is_empty());
    }
}
