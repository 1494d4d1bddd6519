//! Lists served from the API server's watch cache: a list right after an acknowledged write
//! sees it, selectors match from the cached fields, `limit`/`continue` keep the first page's
//! revision across writes (and answer 410 with a fresh token once that revision is
//! compacted), and Tables print as they do from the stored objects.

use std::{collections::BTreeMap, process::Command, time::Duration};

use berth_testkit::{Server, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::Value;

async fn client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

fn cm(name: &str, labels: &[(&str, &str)], value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_owned(), value.to_owned())])),
        ..Default::default()
    }
}

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version.as_deref().and_then(|r| r.parse().ok()).expect("resourceVersion")
}

fn names(list: &kube::api::ObjectList<ConfigMap>) -> Vec<String> {
    list.items.iter().filter_map(|c| c.metadata.name.clone()).collect()
}

/// GET `path` with the admin token and `accept`; the status code and the JSON body.
fn raw(s: &Server, path: &str, accept: &str) -> (u16, Value) {
    let token = std::fs::read_to_string(s.data_path("pki/admin.token")).expect("token");
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-H", &format!("Accept: {accept}"), &format!("https://127.0.0.1:{}{path}", s.port)])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').expect("status code line");
    (code.parse().expect("status code"), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_right_after_an_acknowledged_write_sees_it() {
    let s = Server::api_only();
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    // The first list loads the cache; every write after it reaches the cache before its answer.
    assert!(cms.list(&ListParams::default()).await.expect("list").items.iter().all(|c| c.metadata.name.is_some()));
    // Writers on other connections race with the checks below.
    let other: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let noise = tokio::spawn(async move {
        for i in 0..200 {
            other.create(&PostParams::default(), &cm(&format!("noise-{i:03}"), &[], "n")).await.expect("noise");
        }
    });
    for i in 0..60 {
        let name = format!("c-{i:03}");
        let created =
            cms.create(&PostParams::default(), &cm(&name, &[("i", &i.to_string())], "1")).await.expect("create");
        let list = cms.list(&ListParams::default()).await.expect("list");
        assert!(names(&list).contains(&name), "{name} missing from the list right after its create");
        let list_rv: u64 = list.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).expect("list rv");
        assert!(list_rv >= rv(&created.metadata), "list revision older than the write");
        let mut changed = created.clone();
        changed.data = Some(BTreeMap::from([("v".to_owned(), "2".to_owned())]));
        cms.replace(&name, &PostParams::default(), &changed).await.expect("replace");
        let selected = cms.list(&ListParams::default().labels(&format!("i={i}"))).await.expect("list");
        assert_eq!(selected.items.len(), 1);
        assert_eq!(selected.items[0].data.as_ref().and_then(|d| d.get("v")).map(String::as_str), Some("2"));
        if i % 3 == 0 {
            cms.delete(&name, &DeleteParams::default()).await.expect("delete");
            let list = cms.list(&ListParams::default()).await.expect("list");
            assert!(!names(&list).contains(&name), "{name} still listed after its delete");
            assert!(matches!(cms.get(&name).await, Err(kube::Error::Api(e)) if e.code == 404));
        }
    }
    noise.await.expect("noise writer");
    let all = cms.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 200 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_match_from_the_cache() {
    let s = Server::api_only();
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    for (name, tier, env) in [("a", "web", "prod"), ("b", "web", "dev"), ("c", "db", "prod"), ("d", "cache", "")] {
        let labels: Vec<(&str, &str)> =
            [("tier", tier), ("env", env)].into_iter().filter(|(_, v)| !v.is_empty()).collect();
        cms.create(&PostParams::default(), &cm(name, &labels, "1")).await.expect("create");
    }
    let select = |labels: &'static str, fields: &'static str| {
        let cms = cms.clone();
        async move {
            let mut got = names(&cms.list(&ListParams::default().labels(labels).fields(fields)).await.expect("list"));
            got.sort();
            got
        }
    };
    assert_eq!(select("tier=web", "").await, ["a", "b"]);
    assert_eq!(select("tier in (web,db),env!=dev", "").await, ["a", "c"]);
    assert_eq!(select("!env", "").await, ["d"]);
    assert_eq!(select("env", "metadata.name!=a").await, ["b", "c"]);
    assert_eq!(select("", "metadata.name=c,metadata.namespace=default").await, ["c"]);
    assert!(select("", "metadata.namespace=other").await.is_empty());
    // A relabelled object matches by its new labels only.
    let mut d = cms.get("d").await.expect("get");
    d.metadata.labels = Some(BTreeMap::from([("tier".to_owned(), "web".to_owned())]));
    cms.replace("d", &PostParams::default(), &d).await.expect("replace");
    assert_eq!(select("tier=web", "").await, ["a", "b", "d"]);
    assert!(select("tier=cache", "").await.is_empty());
    // Limits count matching objects only.
    let page = cms.list(&ListParams::default().labels("tier=web").limit(2)).await.expect("list");
    assert_eq!(names(&page), ["a", "b"]);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = cms.list(&ListParams::default().labels("tier=web").limit(2).continue_token(&token)).await.expect("list");
    assert_eq!(names(&rest), ["d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_lists_the_first_page_revision_across_writes() {
    let s = Server::api_only();
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    for name in ["a", "b", "c", "d", "e"] {
        cms.create(&PostParams::default(), &cm(name, &[], "old")).await.expect("create");
    }
    let first = cms.list(&ListParams::default().limit(2)).await.expect("first page");
    assert_eq!(names(&first), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("continue token");
    // A page with no write in between comes from the cache, at the same revision.
    let unchanged = cms.list(&ListParams::default().limit(2).continue_token(&token)).await.expect("page");
    assert_eq!(names(&unchanged), ["c", "d"]);
    assert_eq!(unchanged.metadata.resource_version, first.metadata.resource_version);

    // Writes after the first page: the rest of the list still shows the first page's revision.
    cms.create(&PostParams::default(), &cm("bb", &[], "new")).await.expect("create");
    cms.delete("d", &DeleteParams::default()).await.expect("delete");
    let mut c = cms.get("c").await.expect("get");
    c.data = Some(BTreeMap::from([("v".to_owned(), "new".to_owned())]));
    cms.replace("c", &PostParams::default(), &c).await.expect("replace");
    let rest = cms.list(&ListParams::default().limit(10).continue_token(&token)).await.expect("rest");
    assert_eq!(names(&rest), ["c", "d", "e"]);
    assert_eq!(rest.items[0].data.as_ref().and_then(|d| d.get("v")).map(String::as_str), Some("old"));
    assert_eq!(rest.metadata.resource_version, first.metadata.resource_version);
    assert!(rest.metadata.continue_.as_deref().unwrap_or("").is_empty());
    // A new list sees the writes.
    let now = cms.list(&ListParams::default()).await.expect("list");
    assert_eq!(names(&now), ["a", "b", "bb", "c", "e"]);
    // An exact resourceVersion lists that revision too.
    let exact = ListParams::default()
        .at(first.metadata.resource_version.as_deref().expect("rv"))
        .matching(kube::api::VersionMatch::Exact);
    assert_eq!(names(&cms.list(&exact).await.expect("exact list")), ["a", "b", "c", "d", "e"]);
}

#[test]
fn a_continue_token_past_compaction_is_410_with_a_token_for_the_rest() {
    let s =
        Server::start(&["--no-controllers", "--no-node", "--store-history", "1", "--store-compaction-interval", "1"]);
    for name in ["a", "b", "c"] {
        s.ok(&["create", "configmap", name, "--from-literal=v=1"]);
    }
    let (code, first) = raw(&s, "/api/v1/namespaces/default/configmaps?limit=1", "application/json");
    assert_eq!(code, 200, "{first}");
    let token = first["metadata"]["continue"].as_str().expect("continue token").to_owned();
    // Writes move the compacted revision past the first page's.
    let expired = wait_for("the first page's revision to be compacted", Duration::from_secs(30), || {
        s.ok(&["label", "--overwrite", "cm", "a", &format!("n={}", std::process::id())]);
        s.ok(&["label", "cm", "a", "n-"]);
        let (code, body) = raw(&s, &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}"), "*/*");
        (code == 410).then_some(body)
    });
    assert_eq!(expired["reason"], "Expired", "{expired}");
    assert!(expired["message"].as_str().is_some_and(|m| m.contains("too old to display a consistent list")));
    let fresh = expired["metadata"]["continue"].as_str().expect("a token for the rest");
    let (code, rest) = raw(&s, &format!("/api/v1/namespaces/default/configmaps?continue={fresh}"), "*/*");
    assert_eq!(code, 200, "{rest}");
    let rest: Vec<&str> =
        rest["items"].as_array().expect("items").iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(rest, ["b", "c"]);
    // A resourceVersion the server has not reached is 504 Timeout, as upstream.
    let (code, body) = raw(&s, "/api/v1/namespaces/default/configmaps?resourceVersion=999999999", "*/*");
    assert_eq!((code, body["reason"].as_str()), (504, Some("Timeout")), "{body}");
}

#[test]
fn tables_from_the_cache_print_as_the_objects_do() {
    let s = Server::api_only();
    let objects = "apiVersion: v1\nkind: Pod\nmetadata: {name: on-n1, labels: {app: web}}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}, {name: d, image: nginx}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: unbound}\nspec:\n  containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: conf}\ndata: {a: '1', b: '2'}\n";
    s.ok_stdin(&["apply", "-f", "-"], objects);
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
    for path in [
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/default/services",
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces",
    ] {
        // Twice from the cache (the second from printed rows), once printed from the objects.
        let (_, cached) = raw(&s, path, table);
        let (_, again) = raw(&s, path, table);
        let (_, printed) = raw(&s, &format!("{path}?includeObject=Object"), table);
        let age = cached["columnDefinitions"].as_array().expect("columns").iter().position(|c| c["name"] == "Age");
        let cells = |t: &Value| -> Vec<Vec<Value>> {
            t["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| {
                    let mut cells = r["cells"].as_array().expect("cells").clone();
                    // Ages tick between requests; they are compared by form below.
                    if let Some(age) = age {
                        assert!(cells[age].as_str().is_some_and(|a| a.ends_with('s') || a.ends_with('m')), "{r}");
                        cells[age] = Value::Null;
                    }
                    cells
                })
                .collect()
        };
        assert!(!cells(&cached).is_empty(), "{path}: {cached}");
        assert_eq!(cells(&cached), cells(&printed), "{path}");
        assert_eq!(cells(&again), cells(&printed), "{path}");
        let row_meta = &again["rows"][0]["object"];
        assert_eq!(row_meta["kind"], "PartialObjectMetadata");
        assert!(row_meta["metadata"]["resourceVersion"].as_str().is_some_and(|r| !r.is_empty()));
    }
    // kubectl's own printing, default and wide.
    let out = s.ok(&["get", "pods"]);
    let header: Vec<&str> = out.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(out.lines().any(|l| l.split_whitespace().take(4).eq(["on-n1", "0/2", "Pending", "0"])), "{out}");
    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    );
    let row: Vec<&str> = wide.lines().find(|l| l.starts_with("on-n1")).expect("row").split_whitespace().collect();
    assert_eq!(row[5..], ["<none>", "n1", "<none>", "<none>"], "{wide}");
    // A label change shows in the next Table (rows are printed per object version).
    s.ok(&["label", "pod", "on-n1", "tier=front"]);
    let labelled = s.ok(&["get", "pods", "--show-labels"]);
    assert!(labelled.lines().any(|l| l.starts_with("on-n1") && l.contains("app=web,tier=front")), "{labelled}");
}
