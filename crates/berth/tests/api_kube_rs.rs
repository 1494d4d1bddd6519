//! The API through kube-rs, and the store's promise that acknowledged writes survive
//! `kill -9` of the server.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use berth_testkit::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

async fn client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        data: Some(BTreeMap::from([("v".to_owned(), value.to_owned())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_watches_patches_and_applies() {
    let s = Server::api_only();
    let client = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms.create(&PostParams::default(), &cm("one", "1")).await.expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");

    // Watch from the create's revision sees the next change.
    let mut stream = cms.watch(&WatchParams::default().timeout(20), &rv).await.expect("watch").boxed();
    cms.patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await.expect("merge patch");
    let ev =
        tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.expect("event in time").expect("ok");
    match ev {
        Some(WatchEvent::Modified(obj)) => {
            assert_eq!(obj.data.and_then(|d| d.get("v").cloned()).as_deref(), Some("2"));
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // Strategic merge patch and server-side apply through typed objects.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "a", "image": "busybox"}]}}}
    }))
    .expect("deployment");
    let applied =
        deploys.patch("web", &PatchParams::apply("berth-test"), &Patch::Apply(&d)).await.expect("apply creates");
    assert_eq!(applied.spec.as_ref().and_then(|s| s.replicas), Some(1));
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "nginx"}]}}}}),
            ),
        )
        .await
        .expect("strategic patch");
    let got = deploys.get("web").await.expect("get");
    let names: Vec<String> =
        got.spec.expect("spec").template.spec.expect("pod spec").containers.into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 2, "containers merged by name: {names:?}");
    assert!(names.contains(&"a".to_owned()) && names.contains(&"b".to_owned()));

    // Lists honour label selectors.
    let mut labelled = cm("two", "2");
    labelled.metadata.labels = Some(BTreeMap::from([("team".to_owned(), "a".to_owned())]));
    cms.create(&PostParams::default(), &labelled).await.expect("create labelled");
    let listed = cms.list(&ListParams::default().labels("team=a")).await.expect("list");
    let names: Vec<String> = listed.items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(names, ["two"]);

    // kube-runtime's watcher (list then watch, with bookmarks) sees objects appear.
    let watcher = kube::runtime::watcher(cms.clone(), kube::runtime::watcher::Config::default());
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watcher));
        while let Some(Ok(obj)) = s.next().await {
            if let Some(n) = obj.metadata.name {
                seen2.lock().expect("lock").push(n);
            }
        }
    });
    cms.create(&PostParams::default(), &cm("three", "3")).await.expect("create three");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.lock().expect("lock").contains(&"three".to_owned()) {
        assert!(tokio::time::Instant::now() < deadline, "watcher never saw 'three'");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9() {
    let mut s = Server::api_only();
    let client = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    // 8 concurrent writers creating up to 1,000 ConfigMaps between them.
    let mut writers = Vec::new();
    for w in 0..8 {
        let cms = cms.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..125 {
                let name = format!("c-{w}-{i}");
                match cms.create(&PostParams::default(), &cm(&name, "x")).await {
                    Ok(_) => acked.lock().expect("lock").push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill the server once a good part of the writes has been acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("lock").len() < 300 {
        assert!(tokio::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 300);

    s.spawn();
    let client = self::client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let present: std::collections::HashSet<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list after restart")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged creates lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    // The store still takes writes after the crash.
    cms.create(&PostParams::default(), &cm("after-crash", "y")).await.expect("write after restart");
}
