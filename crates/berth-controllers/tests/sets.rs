#![allow(clippy::unwrap_used)]
//! End-to-end: the StatefulSet and DaemonSet controllers against a real `berth server`, with pod
//! status driven by a kwok-style stand-in kubelet.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Server, spawn_kubelet, wait_for};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
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

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

async fn pods(client: &Client, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

async fn revisions(client: &Client, owner: &str) -> Vec<ControllerRevision> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), NS);
    let mut revs: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.metadata.owner_references.iter().flatten().any(|o| o.name == owner))
        .collect();
    revs.sort_by_key(|r| r.revision);
    revs
}

/// Records, for each pod name in the order pods first appear, whether every pod of a lower
/// ordinal was ready at that moment.
type Appearances = Arc<Mutex<Vec<(String, bool)>>>;

fn watch_appearances(client: Client) -> (Appearances, tokio::task::JoinHandle<()>) {
    let api: Api<Pod> = Api::namespaced(client, NS);
    let seen: Appearances = Arc::default();
    let out = seen.clone();
    let handle = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(Ok(event)) = stream.next().await {
            let pod = match event {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                watcher::Event::Delete(p) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or(""));
                    continue;
                }
                _ => continue,
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if !pods.contains_key(&name) {
                let ordinal: i32 = name.rsplit_once('-').and_then(|(_, o)| o.parse().ok()).unwrap_or(0);
                let lower_ready = (0..ordinal).all(|o| pods.get(&format!("web-{o}")).is_some_and(ready));
                out.lock().unwrap().push((name.clone(), lower_ready));
            }
            pods.insert(name, pod);
        }
    });
    (seen, handle)
}

/// OrderedReady creation with a claim per pod, replacement of a deleted pod under the same
/// name, a rolling update from the highest ordinal with ControllerRevisions, a rollback to the
/// first revision, and scale-down from the highest ordinal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_order_claims_update_and_scale() {
    let server = Server::start().await;
    let client = server.client.clone();
    let (appearances, watch) = watch_appearances(client.clone());
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let set: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "v1"}},
        "spec": {
            "replicas": 3, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": "img:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let done = |want_image: &'static str| {
        let sets = sets.clone();
        let client = client.clone();
        move || {
            let sets = sets.clone();
            let client = client.clone();
            async move {
                let s = sets.get("web").await.ok()?;
                let st = s.status.as_ref()?;
                let replicas = s.spec.as_ref()?.replicas.unwrap_or(1);
                let pods = pods(&client, "app=web").await;
                let all_new = pods.len() == usize::try_from(replicas).ok()?
                    && pods.iter().all(|p| image(p) == want_image && ready(p));
                (st.observed_generation >= s.metadata.generation
                    && st.ready_replicas == Some(replicas)
                    && st.updated_replicas == Some(replicas)
                    && st.current_revision == st.update_revision
                    && all_new)
                    .then_some(s)
            }
        }
    };
    let s = wait_for("web-0..2 to be ready", done("img:1")).await;
    let order = appearances.lock().unwrap().clone();
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1", "web-2"], "pods created in ordinal order");
    assert!(order.iter().all(|(_, lower_ready)| *lower_ready), "each pod waited for the lower ones: {order:?}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let mut claim_names: Vec<String> =
        claims.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|c| c.metadata.name).collect();
    claim_names.sort();
    assert_eq!(claim_names, ["data-web-0", "data-web-1", "data-web-2"]);
    let first_revision = s.status.as_ref().unwrap().current_revision.clone().unwrap();
    for p in pods(&client, "app=web").await {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get("controller-revision-hash"), Some(&first_revision));
        assert_eq!(labels.get("statefulset.kubernetes.io/pod-name"), p.metadata.name.as_ref());
        let claim = p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].persistent_volume_claim.clone().unwrap();
        assert_eq!(claim.claim_name, format!("data-{}", p.metadata.name.as_deref().unwrap()));
    }

    // A deleted pod comes back under the same name.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let old_uid = pod_api.get("web-1").await.unwrap().metadata.uid;
    pod_api.delete("web-1", &Default::default()).await.unwrap();
    wait_for("web-1 to be recreated", || {
        let pod_api = pod_api.clone();
        let old_uid = old_uid.clone();
        async move { pod_api.get("web-1").await.ok().filter(|p| p.metadata.uid != old_uid && ready(p)) }
    })
    .await;

    // Rolling update: replaced from web-2 down to web-0, a second revision.
    appearances.lock().unwrap().clear();
    let patch = serde_json::json!({
        "metadata": {"annotations": {"kubernetes.io/change-cause": "v2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img:2"}]}}}
    });
    sets.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let s = wait_for("the update to img:2", done("img:2")).await;
    let replaced: Vec<String> = appearances.lock().unwrap().iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(replaced, ["web-2", "web-1", "web-0"], "updated from the highest ordinal down");
    let revs = revisions(&client, "web").await;
    assert_eq!(revs.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        revs[1].metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/change-cause")).map(String::as_str),
        Some("v2")
    );
    assert_eq!(s.status.as_ref().unwrap().update_revision.as_deref(), revs[1].metadata.name.as_deref());

    // Rollback as `kubectl rollout undo` does it: the first revision's data as a strategic
    // merge patch; the first revision is reused as revision 3.
    let data = revs[0].data.as_ref().unwrap().0.clone();
    sets.patch("web", &PatchParams::default(), &Patch::Strategic(&data)).await.unwrap();
    wait_for("the rollback to img:1", done("img:1")).await;
    let revs = revisions(&client, "web").await;
    assert_eq!(revs.len(), 2, "the first revision was reused");
    assert_eq!(revs[1].metadata.name.as_deref(), Some(first_revision.as_str()));
    assert_eq!(revs[1].revision, 3);

    // Scale down: the highest ordinal goes first.
    sets.patch("web", &PatchParams::default(), &Patch::Merge(&serde_json::json!({"spec": {"replicas": 1}})))
        .await
        .unwrap();
    wait_for("scale down to web-0", || {
        let client = client.clone();
        async move {
            let names: Vec<String> =
                pods(&client, "app=web").await.into_iter().filter_map(|p| p.metadata.name).collect();
            (names == ["web-0"]).then_some(())
        }
    })
    .await;
    watch.abort();
}

/// One pod per eligible node, none on a node whose taint is not tolerated, a rolling update to a
/// new template with a second ControllerRevision, and status counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_one_pod_per_node_and_rolling_update() {
    let server = Server::start().await;
    let client = server.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, taints) in [
        ("node-a", serde_json::json!([])),
        ("node-b", serde_json::json!([])),
        ("node-c", serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])),
    ] {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"taints": taints}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_kubelet(client.clone(), NS, &[]);
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), NS);
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &ds).await.unwrap();
    let rolled_out = |want_image: &'static str| {
        let sets = sets.clone();
        let client = client.clone();
        move || {
            let sets = sets.clone();
            let client = client.clone();
            async move {
                let d = sets.get("agent").await.ok()?;
                let st = d.status.as_ref()?;
                let pods: Vec<Pod> = pods(&client, "app=agent")
                    .await
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                (st.observed_generation >= d.metadata.generation
                    && st.desired_number_scheduled == 2
                    && st.updated_number_scheduled == Some(2)
                    && st.number_available == Some(2)
                    && pods.len() == 2
                    && pods.iter().all(|p| image(p) == want_image))
                .then_some(pods)
            }
        }
    };
    let first = wait_for("a daemon pod on node-a and node-b", rolled_out("agent:1")).await;
    let mut targets: Vec<String> = first
        .iter()
        .map(|p| {
            let terms = &p.spec.as_ref().unwrap().affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
            let term =
                &terms.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms[0];
            term.match_fields.as_ref().unwrap()[0].values.as_ref().unwrap()[0].clone()
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["node-a", "node-b"], "one pod per untainted node");

    let patch =
        serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let second = wait_for("the daemon to roll to agent:2", rolled_out("agent:2")).await;
    assert!(second.iter().all(|p| first.iter().all(|f| f.metadata.uid != p.metadata.uid)));
    let revs = revisions(&client, "agent").await;
    assert_eq!(revs.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    let hash = revs[1].metadata.labels.as_ref().unwrap().get("controller-revision-hash").cloned().unwrap();
    assert_eq!(revs[1].metadata.name.as_deref(), Some(format!("agent-{hash}").as_str()));
    assert!(second.iter().all(|p| p.metadata.labels.as_ref().unwrap().get("controller-revision-hash") == Some(&hash)));
}
