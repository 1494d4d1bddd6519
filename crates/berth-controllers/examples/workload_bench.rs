//! Load driver for `bench/workloads/run.sh`: one phase of the workload benchmarks against a
//! running `berth server`, with pod status driven as kwok does (every new pod is marked Running
//! and Ready through the status subresource as soon as the watch shows it).
//!
//! ```text
//! workload_bench <kubeconfig> scale <replicas>     # Deployment 0 -> replicas
//! workload_bench <kubeconfig> rollout <replicas>   # change the template, maxSurge 25%
//! ```
//!
//! Prints one JSON line with the phase's timings and the requests the driver itself sent, so
//! the script can subtract them from the server's request counters.

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use serde_json::json;

const NS: &str = "bench";
const NAME: &str = "web";

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The driver's own API traffic: all requests, and the writes among them.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    writes: AtomicU64,
}

impl Counts {
    fn read(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kubeconfig), Some(phase)) = (args.get(1), args.get(2)) else {
        return Err("usage: workload_bench <kubeconfig> scale|rollout <replicas>".into());
    };
    let replicas: i32 = args.get(3).map(|r| r.parse()).transpose()?.unwrap_or(1000);
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig)?, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let requests = Arc::new(Counts::default());
    match phase.as_str() {
        "scale" => scale(client, replicas, requests).await,
        "rollout" => rollout(client, replicas, requests).await,
        other => Err(format!("unknown phase {other}").into()),
    }
}

fn template(version: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": NAME}},
        "spec": {"containers": [{"name": "main", "image": "host", "env": [{"name": "VERSION", "value": version}]}]}
    })
}

/// Marks every pod of the namespace Running and Ready as soon as it appears, like kwok.
fn spawn_kubelet(client: Client, requests: Arc<Counts>) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, NS);
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let patcher = {
            let api = api.clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                tokio_stream_from(rx)
                    .for_each_concurrent(32, |name| {
                        let api = api.clone();
                        let requests = requests.clone();
                        async move {
                            let now = k8s_openapi::jiff::Timestamp::now();
                            let now = k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
                            let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                            let patch = json!({"status": {"phase": "Running", "startTime": now,
                                "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")]}});
                            requests.write();
                            // A pod deleted meanwhile needs nothing.
                            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                        }
                    })
                    .await;
            })
        };
        let mut done: HashSet<String> = HashSet::new();
        requests.read();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_none() && !is_ready(&pod) && done.insert(uid) {
                    let _ = tx.send(pod.metadata.name.clone().unwrap_or_default());
                }
            }
        }
        patcher.abort();
    })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn complete(d: &Deployment, replicas: i32) -> bool {
    let Some(s) = d.status.as_ref() else { return false };
    s.observed_generation >= d.metadata.generation
        && s.replicas == Some(replicas)
        && s.updated_replicas == Some(replicas)
        && s.ready_replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
}

/// Watches the Deployment until `done` holds for it.
async fn wait_deployment(client: &Client, done: impl Fn(&Deployment) -> bool) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let stream = watcher(api, watcher::Config::default().fields(&format!("metadata.name={NAME}"))).default_backoff();
    futures::pin_mut!(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next()).await.map_err(|_| "timed out")?;
        match event {
            Some(Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d))) if done(&d) => return Ok(()),
            Some(_) => {}
            None => return Err("deployment watch ended".into()),
        }
    }
}

/// Deployment 0 -> `replicas`: time until every pod object exists, and until all are counted
/// ready by the Deployment.
async fn scale(client: Client, replicas: i32, requests: Arc<Counts>) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    requests.write();
    let _ = namespaces.create(&PostParams::default(), &serde_json::from_value(ns)?).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": NAME}}, "template": template("v1"),
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}
    });
    requests.write();
    deployments.create(&PostParams::default(), &serde_json::from_value(d)?).await?;
    wait_deployment(&client, |d| d.status.as_ref().is_some_and(|s| s.observed_generation >= d.metadata.generation))
        .await?;
    let kubelet = spawn_kubelet(client.clone(), requests.clone());

    // Count pod objects as they appear.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let (exist_tx, exist_rx) = tokio::sync::oneshot::channel::<Instant>();
    let counter = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut tx = Some(exist_tx);
        let stream = watcher(pods, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = event {
                seen.insert(p.metadata.uid.unwrap_or_default());
                if seen.len() >= usize::try_from(replicas).unwrap_or(0)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(Instant::now());
                }
            }
        }
    });
    let start = Instant::now();
    requests.write();
    deployments
        .patch_scale(NAME, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": replicas}})))
        .await?;
    wait_deployment(&client, |d| complete(d, replicas)).await?;
    let ready = start.elapsed();
    let exist = exist_rx.await.map(|t| t.duration_since(start)).unwrap_or(ready);
    counter.abort();
    kubelet.abort();
    let out = json!({
        "phase": "scale", "replicas": replicas,
        "pods_exist_seconds": exist.as_secs_f64(), "all_ready_seconds": ready.as_secs_f64(),
        "driver_requests": requests.requests.load(Ordering::Relaxed),
        "status_writes": requests.writes.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}

/// A template change on `replicas` ready pods with maxSurge 25%: total time, the scaling steps
/// the controller took, and the pods it created.
async fn rollout(client: Client, replicas: i32, requests: Arc<Counts>) -> Result<()> {
    let kubelet = spawn_kubelet(client.clone(), requests.clone());
    // Every ReplicaSet scale change is one step of the rollout.
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let steps = Arc::new(AtomicU64::new(0));
    let steps_seen = steps.clone();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher_task = tokio::spawn(async move {
        let mut sizes: BTreeMap<String, i32> = BTreeMap::new();
        let mut listed = Some(listed_tx);
        let stream = watcher(rs_api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                    let size = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    let previous = sizes.insert(rs.metadata.uid.clone().unwrap_or_default(), size);
                    if listed.is_none() && previous != Some(size) {
                        steps_seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    listed_rx.await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let before: HashSet<String> =
        pods.list(&Default::default()).await?.items.into_iter().filter_map(|p| p.metadata.uid).collect();
    requests.read();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    requests.write();
    deployments
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"template": template("v2")}})))
        .await?;
    wait_deployment(&client, |d| complete(d, replicas)).await?;
    let elapsed = start.elapsed();
    let after: Vec<Pod> = pods.list(&Default::default()).await?.items;
    requests.read();
    let created = after.iter().filter(|p| p.metadata.uid.as_ref().is_some_and(|u| !before.contains(u))).count();
    watcher_task.abort();
    kubelet.abort();
    let steps = steps.load(Ordering::Relaxed);
    let out = json!({
        "phase": "rollout", "replicas": replicas, "seconds": elapsed.as_secs_f64(),
        "scaling_steps": steps,
        "seconds_per_step": if steps > 0 { elapsed.as_secs_f64() / steps as f64 } else { 0.0 },
        "pods_created": created,
        "driver_requests": requests.requests.load(Ordering::Relaxed),
        "status_writes": requests.writes.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}
