//! The node agent loop: registers the `Node`, watches pods, binds unscheduled pods that fit
//! (the scheduler's job on a one-node cluster), admits and runs the pods bound here through
//! one worker each, and removes what is left on the machine of pods that no longer exist.

pub mod backoff;
pub mod degraded;
pub mod events;
pub mod node;
pub mod probe;
pub mod provisioner;
mod pull;
pub mod scheduler;
pub mod status;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use crate::config::NodeConfig;
use crate::runtime::{Runtime, RuntimeError};
use events::{EventSink, Source};
use node::Capacity;
use scheduler::Usage;
use worker::{Shared, WorkerHandle};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("registering node {name}: {source}")]
    Register {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the pod watch ended")]
    WatchEnded,
}

/// How often the node's status (its heartbeat) is written.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often unschedulable pods are tried again, besides after every pod change.
const SCHEDULE_RETRY: Duration = Duration::from_secs(2);
/// Grace period for containers of pods that vanished while Berth was not running.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// Runs the node agent until an unrecoverable error.
pub async fn run(client: kube::Client, config: NodeConfig) -> Result<(), AgentError> {
    run_until(client, config, std::future::pending()).await
}

/// Runs the node agent until `shutdown` completes. Pods keep running after it returns.
pub async fn run_until(
    client: kube::Client,
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let missing = crate::preflight::missing(&config);
    if !missing.is_empty() {
        let lacking = missing.join("; ");
        for item in &missing {
            tracing::error!("this machine cannot isolate pods, missing {item}");
        }
        tracing::error!(
            "the node runs no pods: it is NotReady with the taint {}:NoSchedule until this is fixed",
            degraded::ISOLATION_TAINT
        );
        let capacity = Capacity::detect(&config);
        let host_ip = config.host_ip.unwrap_or_else(node::detect_host_ip);
        let runc_version = runc_version(&config).await;
        let started = Timestamp::now();
        let node = NodeReport { capacity, host_ip, runc_version, started, missing: Some(lacking.clone()) };
        register_node(&client, &config, &node).await?;
        let heartbeat = tokio::spawn(heartbeat(client.clone(), config.clone(), node));
        let result = degraded::refuse_pods(client, &config.node_name, &lacking, shutdown).await;
        heartbeat.abort();
        return result;
    }
    let runtime = Arc::new(Runtime::new(config.clone()).await?);
    let config = runtime.config().clone();
    let capacity = Capacity::detect(&config);
    let host_ip = config.host_ip.unwrap_or_else(node::detect_host_ip);
    let runc_version = runc_version(&config).await;
    let started = Timestamp::now();
    let node = NodeReport { capacity, host_ip, runc_version, started, missing: None };
    register_node(&client, &config, &node).await?;
    let heartbeat = tokio::spawn(heartbeat(client.clone(), config.clone(), node));

    let events = EventSink::spawn(client.clone(), &config.node_name);
    let shared = Arc::new(Shared {
        client: client.clone(),
        runtime,
        node_name: config.node_name.clone(),
        host_ip: host_ip.to_string(),
        capacity,
        events,
        drain: config.drain.clone(),
    });
    let mut agent = Agent {
        labels: node::labels(&config.node_name),
        shared,
        workers: HashMap::new(),
        assumed: HashMap::new(),
        unschedulable: HashMap::new(),
        store: None,
        done: None,
    };
    let provisioner = tokio::spawn(provisioner::run(client.clone(), config.data_dir.clone()));
    let result = agent.watch(client, shutdown).await;
    provisioner.abort();
    heartbeat.abort();
    result
}

async fn runc_version(config: &NodeConfig) -> String {
    if config.runtime == crate::oci_runtime::RuntimeKind::Libcontainer {
        return crate::oci_runtime::LIBCONTAINER_VERSION.to_owned();
    }
    let output = crate::command::run(&config.runc, &["--version"], None).await.unwrap_or_default();
    output.lines().next().and_then(|line| line.strip_prefix("runc version ")).unwrap_or("unknown").trim().to_owned()
}

/// What the node reports about itself on every heartbeat.
struct NodeReport {
    capacity: Capacity,
    host_ip: IpAddr,
    runc_version: String,
    started: Timestamp,
    /// What this machine lacks to isolate pods, if anything (the node then runs none).
    missing: Option<String>,
}

impl NodeReport {
    fn status(&self, config: &NodeConfig) -> k8s_openapi::api::core::v1::NodeStatus {
        let mut status =
            node::status(config, &self.capacity, self.host_ip, &self.runc_version, self.started, Timestamp::now());
        if let Some(missing) = &self.missing {
            degraded::not_ready(&mut status, missing);
        }
        status
    }
}

async fn register_node(client: &kube::Client, config: &NodeConfig, report: &NodeReport) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = config.node_name.clone();
    let host_ip = report.host_ip;
    let fail = |source| AgentError::Register { name: name.clone(), source };
    let status = report.status(config);
    let taints = report.missing.as_ref().map(|_| vec![degraded::taint()]);
    match nodes.get_opt(&name).await.map_err(fail)? {
        None => {
            let mut object = node::node_object(config, status.clone());
            if let Some(spec) = object.spec.as_mut() {
                spec.taints.clone_from(&taints);
            }
            nodes.create(&PostParams::default(), &object).await.map_err(fail)?;
        }
        Some(_) => {
            // The taint goes once the machine can isolate pods again (null removes it).
            let metadata = serde_json::json!({
                "metadata": { "labels": node::labels(&name) },
                "spec": {
                    "podCIDR": config.network.pod_cidr.to_string(),
                    "podCIDRs": [config.network.pod_cidr.to_string()],
                    "taints": taints,
                },
            });
            nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&metadata)).await.map_err(fail)?;
        }
    }
    let patch = serde_json::json!({ "status": status });
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(fail)?;
    tracing::info!(node = %name, %host_ip, "node registered");
    Ok(())
}

async fn heartbeat(client: kube::Client, config: NodeConfig, report: NodeReport) {
    let nodes: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let status = report.status(&config);
        let patch = serde_json::json!({ "status": status });
        if let Err(error) = nodes.patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            tracing::warn!(%error, "node heartbeat failed");
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

struct Agent {
    shared: Arc<Shared>,
    labels: BTreeMap<String, String>,
    workers: HashMap<String, WorkerHandle>,
    /// Pods bound by us whose binding the watch has not shown yet.
    assumed: HashMap<String, Arc<Pod>>,
    /// Last unschedulable message reported per pod, so it is reported once.
    unschedulable: HashMap<String, String>,
    store: Option<Store<Pod>>,
    /// Where workers send the UID of a pod they cleaned up after (set by `watch`).
    done: Option<mpsc::UnboundedSender<String>>,
}

impl Agent {
    async fn watch(&mut self, client: kube::Client, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let (reader, writer) = reflector::store::<Pod>();
        self.store = Some(reader);
        let pods: Api<Pod> = Api::all(client);
        let stream = reflector::reflector(writer, watcher(pods, watcher::Config::default())).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut shutdown = std::pin::pin!(shutdown);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        self.done = Some(done_tx);
        let mut retry = tokio::time::interval(SCHEDULE_RETRY);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("node agent stopping; pods keep running");
                    self.workers.clear();
                    return Ok(());
                }
                event = stream.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        self.on_pod(Arc::new(pod)).await;
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => self.on_deleted(&uid_of(&pod)),
                    Some(Ok(watcher::Event::Init)) => {}
                    Some(Ok(watcher::Event::InitDone)) => {
                        self.after_relist().await;
                        self.schedule().await;
                    }
                    Some(Err(error)) => tracing::warn!(%error, "pod watch error; retrying"),
                    None => return Err(AgentError::WatchEnded),
                },
                Some(uid) = done_rx.recv() => {
                    self.workers.remove(&uid);
                }
                _ = retry.tick() => self.schedule().await,
            }
        }
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.store.as_ref().map(|s| s.state()).unwrap_or_default()
    }

    async fn on_pod(&mut self, pod: Arc<Pod>) {
        let uid = uid_of(&pod);
        match node_of(&pod) {
            Some(node) if node == self.shared.node_name => {
                self.assumed.remove(&uid);
                self.unschedulable.remove(&uid);
                if let Some(worker) = self.workers.get(&uid) {
                    let _ = worker.updates.send(Some(pod));
                    return;
                }
                self.start_worker(pod).await;
            }
            Some(_) => {}
            None => self.schedule().await,
        }
    }

    /// Starts the worker of a pod bound here, or of one rejected by admission.
    async fn start_worker(&mut self, pod: Arc<Pod>) {
        let Some(done) = self.done.clone() else { return };
        let uid = uid_of(&pod);
        let known_here =
            self.shared.runtime.sandbox(&uid).is_some() || !self.shared.runtime.containers(&uid).await.is_empty();
        let rejected = if known_here || is_terminal(&pod) { None } else { self.admission(&pod) };
        if let Some((reason, message)) = &rejected {
            tracing::info!(pod = ?pod.metadata.name, %reason, "pod rejected by admission");
            self.shared.events.warning(&pod.object_ref(&()), reason, message.clone());
        }
        tracing::debug!(target: "berth_node::runtime", pod = ?pod.metadata.name, "pod worker started");
        let handle = worker::spawn(self.shared.clone(), pod, rejected, done);
        self.workers.insert(uid, handle);
    }

    fn on_deleted(&mut self, uid: &str) {
        self.assumed.remove(uid);
        self.unschedulable.remove(uid);
        if let Some(worker) = self.workers.get(uid) {
            let _ = worker.updates.send(None);
        }
    }

    /// What the pods admitted here (other than `except`) request.
    fn usage(&self, except: &str) -> Usage {
        let mut used = Usage::default();
        for pod in self.pods() {
            let uid = uid_of(&pod);
            let here = node_of(&pod) == Some(self.shared.node_name.as_str());
            if here && uid != except && !is_terminal(&pod) && self.workers.contains_key(&uid) {
                used.add(&pod);
            }
        }
        for (uid, pod) in &self.assumed {
            if uid != except {
                used.add(pod);
            }
        }
        used
    }

    fn admission(&self, pod: &Pod) -> Option<(String, String)> {
        scheduler::admission_rejection(pod, &self.usage(&uid_of(pod)), &self.shared.capacity)
    }

    /// After a (re)list: workers of pods gone meanwhile stop, and pods left on the machine
    /// by pods that no longer exist are removed.
    async fn after_relist(&mut self) {
        let pods = self.pods();
        let live: HashMap<String, Arc<Pod>> = pods.iter().map(|p| (uid_of(p), p.clone())).collect();
        for (uid, worker) in &self.workers {
            if !live.contains_key(uid) {
                let _ = worker.updates.send(None);
            }
        }
        for uid in self.shared.runtime.pod_uids() {
            let ours = live.get(&uid).is_some_and(|p| node_of(p) == Some(self.shared.node_name.as_str()));
            if ours || self.workers.contains_key(&uid) {
                continue;
            }
            tracing::info!(%uid, "removing a pod that no longer exists");
            let runtime = self.shared.runtime.clone();
            tokio::spawn(async move {
                let handles = runtime.containers(&uid).await;
                let stops = handles.iter().map(|h| runtime.stop_container(h, ORPHAN_GRACE));
                futures::future::join_all(stops).await;
                if let Err(error) = runtime.remove_pod(&uid).await {
                    tracing::warn!(%uid, %error, "cannot remove orphaned pod");
                }
            });
        }
    }

    /// Binds every unscheduled pod that fits, in priority then age order.
    async fn schedule(&mut self) {
        let pods = self.pods();
        self.assumed.retain(|uid, _| pods.iter().any(|p| uid_of(p) == *uid && node_of(p).is_none()));
        let mut pending: Vec<Arc<Pod>> = pods
            .into_iter()
            .filter(|p| node_of(p).is_none() && p.metadata.deletion_timestamp.is_none() && !is_terminal(p))
            .filter(|p| {
                let scheduler = p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref());
                scheduler.is_none_or(|name| name == "default-scheduler" || name.is_empty())
            })
            .filter(|p| !self.assumed.contains_key(&uid_of(p)))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by_key(|p| {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
            (std::cmp::Reverse(priority), created)
        });
        let mut used = self.usage("");
        // Pods about to start here: their containers' moves into cgroups come after the
        // bindings are stored (see `Runtime::warm_cgroup_moves`).
        let _warm = self.shared.runtime.warm_cgroup_moves();
        for pod in pending {
            match scheduler::fits(&pod, &used, &self.shared.capacity, &self.labels) {
                Ok(()) => {
                    if self.bind(&pod).await {
                        used.add(&pod);
                        let uid = uid_of(&pod);
                        // The binding is stored: the pod's worker starts now rather than
                        // when the watch shows it bound (it gets that version as an update).
                        let mut bound = (*pod).clone();
                        if let Some(spec) = bound.spec.as_mut() {
                            spec.node_name = Some(self.shared.node_name.clone());
                        }
                        self.assumed.insert(uid.clone(), pod);
                        if !self.workers.contains_key(&uid) {
                            self.start_worker(Arc::new(bound)).await;
                        }
                    }
                }
                Err(reasons) => self.report_unschedulable(&pod, scheduler::unschedulable_message(&reasons)).await,
            }
        }
    }

    async fn bind(&self, pod: &Pod) -> bool {
        let (Some(name), Some(namespace)) = (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()) else {
            return false;
        };
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(self.shared.node_name.clone()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), namespace);
        let params = PostParams::default();
        let created = api.create_subresource::<Binding, serde_json::Value>("binding", name, &params, &binding);
        match created.await {
            Ok(_) => {
                tracing::debug!(target: "berth_node::runtime", pod = %name, "pod bound");
                self.shared.events.send(
                    Source::Scheduler,
                    &pod.object_ref(&()),
                    false,
                    "Scheduled",
                    format!("Successfully assigned {namespace}/{name} to {}", self.shared.node_name),
                );
                true
            }
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot bind pod");
                false
            }
        }
    }

    async fn report_unschedulable(&mut self, pod: &Pod, message: String) {
        let uid = uid_of(pod);
        if self.unschedulable.get(&uid) == Some(&message) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        match mark_unschedulable(&self.shared.client, &self.shared.events, pod, &message).await {
            Ok(()) => {
                self.unschedulable.insert(uid, message);
            }
            Err(error) => tracing::warn!(pod = %name, %error, "cannot report unschedulable pod"),
        }
    }
}

/// The scheduler's verdict on a pod that fits nowhere: a `FailedScheduling` event and
/// `PodScheduled=False`.
async fn mark_unschedulable(
    client: &kube::Client,
    events: &EventSink,
    pod: &Pod,
    message: &str,
) -> Result<(), kube::Error> {
    let (Some(name), Some(namespace)) = (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()) else {
        return Ok(());
    };
    events.send(Source::Scheduler, &pod.object_ref(&()), true, "FailedScheduling", message.to_owned());
    let condition = PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "False".to_owned(),
        reason: Some("Unschedulable".to_owned()),
        message: Some(message.to_owned()),
        last_transition_time: Some(Time(
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()),
        )),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": { "phase": "Pending", "conditions": [condition] } });
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}
