#![allow(clippy::unwrap_used)]
//! End-to-end: the controllers against a real `berth server`, with pod status driven by a
//! kwok-style stand-in kubelet.

mod common;

use std::collections::BTreeMap;

use common::{Server, spawn_kubelet, spawn_pod_monitor, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

const NS: &str = "default";

fn start_controllers(client: &Client) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = berth_controllers::run(client).await {
            panic!("controllers stopped: {e}");
        }
    })
}

fn deployment_json(name: &str, replicas: i32, image: &str, extra_spec: serde_json::Value) -> Deployment {
    let mut spec = serde_json::json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"kubernetes.io/change-cause": format!("deploy {image}")}},
        "spec": spec
    }))
    .expect("valid deployment")
}

fn annotation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

async fn owned_replica_sets(client: &Client, d: &Deployment) -> Vec<ReplicaSet> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let list = api.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true)))
        .collect()
}

/// `kubectl rollout status` semantics: the current generation is fully rolled out and available.
fn rolled_out(d: &Deployment) -> bool {
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else { return false };
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) >= spec_replicas
        && s.replicas.unwrap_or(0) == s.updated_replicas.unwrap_or(0)
        && s.available_replicas.unwrap_or(0) >= s.updated_replicas.unwrap_or(0)
}

async fn wait_rolled_out(client: &Client, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    wait_for(&format!("deployment {name} to roll out"), || {
        let api = api.clone();
        async move { api.get(name).await.ok().filter(rolled_out) }
    })
    .await
}

async fn live_pods(client: &Client, label: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(label))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Rollout with maxSurge 1 / maxUnavailable 0, history, rollback reusing the first ReplicaSet as
/// revision 3, scaling, replacement of a deleted pod, and garbage collection of dependents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollout_rollback_scale_and_gc() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);

    deployments
        .create(&PostParams::default(), &deployment_json("web", 3, "nginx:1", serde_json::json!({})))
        .await
        .unwrap();
    let d = wait_rolled_out(&client, "web").await;
    assert_eq!(annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref(), Some("1"));
    let rss = owned_replica_sets(&client, &d).await;
    assert_eq!(rss.len(), 1, "one ReplicaSet after the first rollout");
    let first_rs = rss[0].clone();
    let hash = first_rs.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash")).cloned().unwrap();
    assert_eq!(first_rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
    assert_eq!(
        first_rs.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap().get("pod-template-hash"),
        Some(&hash)
    );
    assert_eq!(annotation(&first_rs.metadata, "kubernetes.io/change-cause").as_deref(), Some("deploy nginx:1"));
    let pods = live_pods(&client, "app=web").await;
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p.metadata.labels.as_ref().unwrap().get("pod-template-hash"), Some(&hash));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller, owner.block_owner_deletion),
            ("ReplicaSet", Some(true), Some(true))
        );
        assert!(p.metadata.name.as_ref().unwrap().starts_with(&format!("web-{hash}-")));
    }
    let available = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Available")
        .cloned()
        .unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_deref()), ("True", Some("MinimumReplicasAvailable")));

    // Rolling update: never fewer than 3 ready pods, never more than 4.
    let (bounds, monitor) = spawn_pod_monitor(client.clone(), NS);
    wait_for("the pod monitor to list", || {
        let b = bounds.clone();
        async move { (b.lock().unwrap().samples > 0).then_some(()) }
    })
    .await;
    let update = serde_json::json!({
        "metadata": {"annotations": {"kubernetes.io/change-cause": "deploy nginx:2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}
    });
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&update)).await.unwrap();
    let d = wait_rolled_out(&client, "web").await;
    monitor.abort();
    let b = bounds.lock().unwrap().clone();
    assert!(b.min_ready >= 3, "ready pods dropped to {} during the rollout", b.min_ready);
    assert!(b.max_total <= 4, "{} pods existed at once during the rollout", b.max_total);
    assert_eq!(b.max_total, 4, "the rollout used its surge pod");
    assert_eq!(annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref(), Some("2"));
    let progressing = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));

    // History: revisions 1 and 2 with their change-cause.
    let rss = owned_replica_sets(&client, &d).await;
    let mut history: BTreeMap<String, String> = rss
        .iter()
        .map(|rs| {
            (
                annotation(&rs.metadata, "deployment.kubernetes.io/revision").unwrap_or_default(),
                annotation(&rs.metadata, "kubernetes.io/change-cause").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(history.remove("1").as_deref(), Some("deploy nginx:1"));
    assert_eq!(history.remove("2").as_deref(), Some("deploy nginx:2"));
    let old_rs = rss.iter().find(|rs| rs.metadata.uid == first_rs.metadata.uid).expect("first ReplicaSet kept");
    assert_eq!(old_rs.spec.as_ref().unwrap().replicas, Some(0));

    // `kubectl rollout undo`: JSON patch of the template and annotations from revision 1.
    let mut template = serde_json::to_value(first_rs.spec.as_ref().unwrap().template.as_ref().unwrap()).unwrap();
    template["metadata"]["labels"].as_object_mut().unwrap().remove("pod-template-hash");
    let mut annotations = d.metadata.annotations.clone().unwrap_or_default();
    annotations.insert("kubernetes.io/change-cause".into(), "deploy nginx:1".into());
    let undo = serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    let undo: json_patch::Patch = serde_json::from_value(undo).unwrap();
    deployments.patch("web", &PatchParams::default(), &Patch::<()>::Json(undo)).await.unwrap();
    let d = wait_for("the rollback to finish as revision 3", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("web").await.ok()?;
            (rolled_out(&d) && annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref() == Some("3"))
                .then_some(d)
        }
    })
    .await;
    let rss = owned_replica_sets(&client, &d).await;
    assert_eq!(rss.len(), 2, "the rollback reused a ReplicaSet instead of creating one");
    let reused = rss.iter().find(|rs| rs.metadata.uid == first_rs.metadata.uid).unwrap();
    assert_eq!(annotation(&reused.metadata, "deployment.kubernetes.io/revision").as_deref(), Some("3"));
    assert_eq!(annotation(&reused.metadata, "deployment.kubernetes.io/revision-history").as_deref(), Some("1"));
    assert_eq!(reused.spec.as_ref().unwrap().replicas, Some(3));

    // Scale up and down.
    for replicas in [5usize, 2] {
        let scale = serde_json::json!({"spec": {"replicas": replicas}});
        deployments.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
        wait_for(&format!("{replicas} pods"), || {
            let client = client.clone();
            async move { (live_pods(&client, "app=web").await.len() == replicas).then_some(()) }
        })
        .await;
        wait_rolled_out(&client, "web").await;
    }

    // A pod deleted by hand is replaced.
    let victim = live_pods(&client, "app=web").await[0].metadata.name.clone().unwrap();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods_api.delete(&victim, &DeleteParams::default()).await.unwrap();
    wait_for("the deleted pod to be replaced", || {
        let client = client.clone();
        let victim = victim.clone();
        async move {
            let pods = live_pods(&client, "app=web").await;
            (pods.len() == 2 && pods.iter().all(|p| p.metadata.name.as_deref() != Some(victim.as_str()))).then_some(())
        }
    })
    .await;

    // Events as kubectl describe shows them.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let messages: Vec<String> = wait_for("scaling events", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            let msgs: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
                .filter_map(|e| e.message)
                .collect();
            (!msgs.is_empty()).then_some(msgs)
        }
    })
    .await;
    let first_up = format!("Scaled up replica set web-{hash} from 0 to 3");
    assert!(messages.contains(&first_up), "no {first_up:?} in {messages:?}");

    // Background deletion of the Deployment collects its ReplicaSets and pods.
    deployments.delete("web", &DeleteParams::background()).await.unwrap();
    wait_for("ReplicaSets and pods to be garbage collected", || {
        let client = client.clone();
        async move {
            let rs: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
            let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
            let rs_left = rs.list(&ListParams::default().labels("app=web")).await.ok()?.items.len();
            let pods_left = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items.len();
            (rs_left == 0 && pods_left == 0).then_some(())
        }
    })
    .await;
    drop(server);
}

/// A Deployment whose pods never become ready reports ProgressDeadlineExceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rollout_exceeds_progress_deadline() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &["broken:1"]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = deployment_json("stuck", 2, "broken:1", serde_json::json!({"progressDeadlineSeconds": 2}));
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let cond = wait_for("Progressing=False ProgressDeadlineExceeded", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("stuck").await.ok()?;
            d.status?.conditions?.into_iter().find(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        }
    })
    .await;
    assert!(cond.message.unwrap().contains("has timed out progressing."));
    let d = deployments.get("stuck").await.unwrap();
    let available = d.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.reason.as_deref(), Some("MinimumReplicasUnavailable"));
}

/// Recreate scales the old ReplicaSet to zero before the new one gets pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_overlaps_old_and_new_pods() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = deployment_json("batch", 2, "app:1", serde_json::json!({"strategy": {"type": "Recreate"}}));
    deployments.create(&PostParams::default(), &d).await.unwrap();
    wait_rolled_out(&client, "batch").await;
    let (bounds, monitor) = spawn_pod_monitor(client.clone(), NS);
    let update =
        serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "app:2"}]}}}});
    deployments.patch("batch", &PatchParams::default(), &Patch::Strategic(&update)).await.unwrap();
    wait_for("the recreate rollout", || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("batch").await.ok()?;
            (rolled_out(&d) && annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref() == Some("2"))
                .then_some(())
        }
    })
    .await;
    monitor.abort();
    let b = bounds.lock().unwrap().clone();
    assert!(b.max_total <= 2, "old and new pods overlapped: {} at once", b.max_total);
    assert_eq!(b.min_ready, 0, "Recreate takes every old pod down first");
}

/// Foreground deletion removes dependents before the owner; orphan deletion keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_and_orphan_deletion() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    deployments
        .create(&PostParams::default(), &deployment_json("fg", 2, "app:1", serde_json::json!({})))
        .await
        .unwrap();
    wait_rolled_out(&client, "fg").await;
    deployments.delete("fg", &DeleteParams::foreground()).await.unwrap();
    wait_for("the foreground deletion to finish", || {
        let (deployments, replica_sets, pods) = (deployments.clone(), replica_sets.clone(), pods.clone());
        async move {
            let gone = deployments.get_opt("fg").await.ok()?.is_none();
            let rs_left = replica_sets.list(&ListParams::default().labels("app=fg")).await.ok()?.items.len();
            let pods_left = pods.list(&ListParams::default().labels("app=fg")).await.ok()?.items.len();
            (gone && rs_left == 0 && pods_left == 0).then_some(())
        }
    })
    .await;

    deployments
        .create(&PostParams::default(), &deployment_json("orph", 2, "app:1", serde_json::json!({})))
        .await
        .unwrap();
    wait_rolled_out(&client, "orph").await;
    let rs_name = replica_sets.list(&ListParams::default().labels("app=orph")).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    deployments.delete("orph", &DeleteParams::orphan()).await.unwrap();
    let rs = wait_for("the ReplicaSet to be orphaned", || {
        let (deployments, replica_sets, rs_name) = (deployments.clone(), replica_sets.clone(), rs_name.clone());
        async move {
            let gone = deployments.get_opt("orph").await.ok()?.is_none();
            let rs = replica_sets.get(&rs_name).await.ok()?;
            (gone && rs.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty())).then_some(rs)
        }
    })
    .await;
    assert_eq!(rs.spec.unwrap().replicas, Some(2));
    assert_eq!(live_pods(&client, "app=orph").await.len(), 2, "orphaned ReplicaSet keeps its pods");
}

/// A ReplicaSet adopts a matching orphan pod instead of creating one, and releases a pod whose
/// labels stop matching (then replaces it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_and_releases_pods() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let orphan: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stray", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "adopter"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "adopt"}},
            "template": {"metadata": {"labels": {"app": "adopt"}}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}}
        }
    }))
    .unwrap();
    let rs = replica_sets.create(&PostParams::default(), &rs).await.unwrap();
    let rs_uid = rs.metadata.uid.clone().unwrap();
    wait_for("the stray pod to be adopted", || {
        let (pods, rs_uid) = (pods.clone(), rs_uid.clone());
        async move {
            let p = pods.get("stray").await.ok()?;
            p.metadata.owner_references?.iter().any(|r| r.uid == rs_uid && r.controller == Some(true)).then_some(())
        }
    })
    .await;
    let rs = wait_for("the ReplicaSet status", || {
        let replica_sets = replica_sets.clone();
        async move {
            let rs = replica_sets.get("adopter").await.ok()?;
            (rs.status.as_ref()?.observed_generation == rs.metadata.generation && rs.status.as_ref()?.replicas == 1)
                .then_some(rs)
        }
    })
    .await;
    assert_eq!(rs.status.unwrap().fully_labeled_replicas, Some(1));
    assert_eq!(live_pods(&client, "app=adopt").await.len(), 1, "no extra pod was created");

    let relabel = serde_json::json!({"metadata": {"labels": {"app": "elsewhere"}}});
    pods.patch("stray", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    wait_for("the relabeled pod to be released and replaced", || {
        let (client, pods) = (client.clone(), pods.clone());
        async move {
            let stray = pods.get("stray").await.ok()?;
            let released = stray.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty());
            (released && live_pods(&client, "app=adopt").await.len() == 1).then_some(())
        }
    })
    .await;
}

/// Deleting a namespace empties it through the API and finalizes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_content_then_namespace() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "doomed");
    deployments
        .create(&PostParams::default(), &deployment_json("app", 2, "app:1", serde_json::json!({})))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    wait_for("pods in the namespace", || {
        let pods = pods.clone();
        async move { (pods.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(()) }
    })
    .await;
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    wait_for("the namespace to be deleted", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("doomed").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(pods.list(&ListParams::default()).await.map(|l| l.items.is_empty()).unwrap_or(true));
}

/// Scaling a ReplicaSet to many replicas at once creates exactly that many pods: creates still
/// on their way through the watch are counted, so a lagging cache never causes duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_creates_no_duplicate_pods() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let (bounds, monitor) = spawn_pod_monitor(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    deployments
        .create(&PostParams::default(), &deployment_json("many", 150, "app:1", serde_json::json!({})))
        .await
        .unwrap();
    let d = wait_rolled_out(&client, "many").await;
    assert_eq!(d.status.unwrap().ready_replicas, Some(150));
    assert_eq!(live_pods(&client, "app=many").await.len(), 150);
    monitor.abort();
    let b = bounds.lock().unwrap().clone();
    assert_eq!(b.max_total, 150, "more pods than replicas existed at some point");
}
