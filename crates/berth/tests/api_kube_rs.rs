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

/// History is bounded: once compaction passes a revision, a watch from it gets a 410 `Status`
/// with reason `Expired` (upstream's "too old resource version"), kube-rs's watcher recovers
/// by listing again, and live watches (`kubectl get -w`) are not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_expired_and_watchers_relist() {
    // A short history and a compaction round every second, so that compaction happens soon.
    let s =
        Server::start(&["--no-controllers", "--no-node", "--store-history", "20", "--store-compaction-interval", "1"]);
    let client = client(&s).await;
    s.ok(&["create", "namespace", "quiet"]);
    let quiet: Api<ConfigMap> = Api::namespaced(client.clone(), "quiet");
    let first = quiet.create(&PostParams::default(), &cm("first", "1")).await.expect("create first");
    let first_rv = first.metadata.resource_version.expect("rv");

    // kube-rs's watcher on the quiet namespace. Without bookmarks it resumes from the list's
    // revision, which the churn below makes too old; the server ends each watch after 2 s.
    let config = kube::runtime::watcher::Config { bookmarks: false, ..Default::default() }.timeout(2);
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = events.clone();
    let watcher = kube::runtime::watcher(quiet.clone(), config);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher);
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(kube::runtime::watcher::Event::Init) => "init".to_owned(),
                Ok(kube::runtime::watcher::Event::InitDone) => "init-done".to_owned(),
                Ok(kube::runtime::watcher::Event::InitApply(o)) => {
                    format!("listed {}", o.metadata.name.unwrap_or_default())
                }
                Ok(kube::runtime::watcher::Event::Apply(o)) => {
                    format!("applied {}", o.metadata.name.unwrap_or_default())
                }
                Ok(kube::runtime::watcher::Event::Delete(o)) => {
                    format!("deleted {}", o.metadata.name.unwrap_or_default())
                }
                Err(kube::runtime::watcher::Error::WatchError(status)) => format!("error {}", status.code),
                Err(e) => format!("other error {e}"),
            };
            seen.lock().expect("lock").push(ev);
        }
    });
    let count = |what: &str| events.lock().expect("lock").iter().filter(|e| *e == what).count();
    berth_testkit::wait_for_async("the watcher's first list", Duration::from_secs(30), || async {
        (count("init-done") == 1).then_some(())
    })
    .await;

    // `kubectl get -w`, started now, watches from the list it makes at the current revision.
    let mut kubectl = s
        .kubectl_cmd(&["get", "configmaps", "-n", "quiet", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = kubectl.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listed = rx.recv_timeout(Duration::from_secs(30)).expect("kubectl lists first");
    assert_eq!(listed, "configmap/first");

    // Writes elsewhere move the revision on until compaction has passed the watcher's
    // revision: its next watch gets 410 and it lists again.
    let churn: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    churn.create(&PostParams::default(), &cm("churn", "0")).await.expect("create churn");
    let mut n = 0;
    berth_testkit::wait_for_async("the watcher to get 410 and list again", Duration::from_secs(120), || {
        let churn = churn.clone();
        n += 1;
        let round = n;
        let relisted = count("error 410") >= 1 && count("init-done") >= 2;
        async move {
            if relisted {
                return Some(());
            }
            for i in 0..10 {
                let patch = Patch::Merge(json!({"data": {"v": format!("{round}-{i}")}}));
                churn.patch("churn", &PatchParams::default(), &patch).await.expect("update churn");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        }
    })
    .await;
    {
        let events = events.lock().expect("lock");
        let expired = events.iter().position(|e| e == "error 410").expect("410");
        assert_eq!(
            events.get(expired + 1..expired + 4),
            Some(&["init".to_owned(), "listed first".to_owned(), "init-done".to_owned()][..]),
            "{events:?}"
        );
    }

    // The wire: a watch from the first object's revision, long compacted, is one ERROR event
    // carrying a 410 Expired Status.
    let raw =
        s.ok(&["get", "--raw", &format!("/api/v1/namespaces/quiet/configmaps?watch=true&resourceVersion={first_rv}")]);
    let event: serde_json::Value = serde_json::from_str(raw.trim()).expect("one watch event");
    assert_eq!(event["type"], "ERROR", "{raw}");
    let status = &event["object"];
    assert_eq!((status["kind"].as_str(), status["status"].as_str()), (Some("Status"), Some("Failure")), "{raw}");
    assert_eq!((status["code"].as_i64(), status["reason"].as_str()), (Some(410), Some("Expired")), "{raw}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("too old resource version: {first_rv} (")), "{message}");
    // kube-rs sees the same as a watch error, not a failed request.
    let mut stream = quiet.watch(&WatchParams::default().timeout(5), &first_rv).await.expect("watch").boxed();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await.expect("in time").expect("event") {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // A change after all this reaches the re-listed watcher and the running `kubectl get -w`.
    quiet.create(&PostParams::default(), &cm("after", "2")).await.expect("create after");
    berth_testkit::wait_for_async("the watcher to see 'after'", Duration::from_secs(30), || async {
        (count("applied after") == 1).then_some(())
    })
    .await;
    let line = berth_testkit::wait_for("kubectl get -w to print 'after'", Duration::from_secs(30), || {
        rx.recv_timeout(Duration::from_millis(500)).ok().filter(|l| l == "configmap/after")
    });
    assert_eq!(line, "configmap/after");
    let _ = kubectl.kill();
    let _ = kubectl.wait();
    task.abort();
}
