//! API semantics a user reaches through stock kubectl that the other suites do not:
//! generateName, deletecollection, finalizers, the status and scale subresources, field
//! selectors of pods and events, watch bookmarks and timeouts, and a clean SIGTERM restart.

use std::time::Duration;

use berth_testkit::{Server, wait_for};
use serde_json::Value;

fn sts_and_rs() -> &'static str {
    "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec:\n  selector: {matchLabels: {app: rs}}\n  template:\n    metadata: {labels: {app: rs}}\n    spec:\n      containers: [{name: c, image: busybox}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: sts}\nspec:\n  serviceName: sts\n  selector: {matchLabels: {app: sts}}\n  template:\n    metadata: {labels: {app: sts}}\n    spec:\n      containers: [{name: c, image: busybox}]\n"
}

#[test]
fn generate_name_and_delete_collection() {
    let s = Server::api_only();
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\n  labels: {batch: one}\n";
    let mut names = Vec::new();
    for _ in 0..3 {
        let out = s.ok_stdin(&["create", "-f", "-", "-o", "name"], template);
        names.push(out.trim().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("configmap/gen-") && n.len() == "configmap/gen-".len() + 5),
        "{names:?}"
    );
    s.ok(&["create", "configmap", "keep", "--from-literal=a=b"]);

    // DELETE on the collection (deletecollection) with a label selector removes only the matches.
    s.ok(&["delete", "--raw", "/api/v1/namespaces/default/configmaps?labelSelector=batch%3Done"]);
    let left = s.ok(&["get", "cm", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/keep", "{left}");
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let s = Server::api_only();
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\ndata: {a: b}\n",
    );
    s.ok(&["delete", "cm", "held", "--wait=false"]);
    let cm = s.json(&["get", "cm", "held"]);
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    // A terminating object takes no new finalizers, but may lose them.
    let err = s.fails(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
    ]);
    assert!(err.contains("Forbidden") || err.contains("no new finalizers"), "{err}");
    s.ok(&["patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let err = s.fails(&["get", "cm", "held"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn status_and_spec_are_written_separately() {
    let s = Server::api_only();
    s.ok(&["create", "deployment", "d", "--image=busybox"]);
    // Through /status only status changes.
    s.ok(&[
        "patch",
        "deploy",
        "d",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":9},"status":{"replicas":7,"observedGeneration":1}}"#,
    ]);
    let d = s.json(&["get", "deploy", "d"]);
    assert_eq!((d["spec"]["replicas"].as_i64(), d["status"]["replicas"].as_i64()), (Some(1), Some(7)), "{d}");
    assert_eq!(d["metadata"]["generation"], 1);
    // Through the main resource only spec (and metadata) changes, and generation moves.
    s.ok(&["patch", "deploy", "d", "--type=merge", "-p", r#"{"spec":{"replicas":2},"status":{"replicas":1}}"#]);
    let d = s.json(&["get", "deploy", "d"]);
    assert_eq!((d["spec"]["replicas"].as_i64(), d["status"]["replicas"].as_i64()), (Some(2), Some(7)), "{d}");
    assert_eq!(d["metadata"]["generation"], 2);
    let st = s.json(&["get", "deploy", "d", "--subresource=status"]);
    assert_eq!(st["status"]["replicas"], 7);
}

#[test]
fn scale_subresource_of_replicasets_and_statefulsets() {
    let s = Server::api_only();
    s.ok_stdin(&["apply", "-f", "-"], sts_and_rs());
    s.ok(&["scale", "rs/rs", "--replicas=3"]);
    s.ok(&["scale", "sts/sts", "--replicas=4"]);
    assert_eq!(s.json(&["get", "rs", "rs"])["spec"]["replicas"], 3);
    assert_eq!(s.json(&["get", "sts", "sts"])["spec"]["replicas"], 4);
    for (path, replicas, selector) in [
        ("/apis/apps/v1/namespaces/default/replicasets/rs/scale", 3, "app=rs"),
        ("/apis/apps/v1/namespaces/default/statefulsets/sts/scale", 4, "app=sts"),
    ] {
        let scale: Value = serde_json::from_str(&s.ok(&["get", "--raw", path])).expect("json");
        assert_eq!((scale["apiVersion"].as_str(), scale["kind"].as_str()), (Some("autoscaling/v1"), Some("Scale")));
        assert_eq!(scale["spec"]["replicas"], replicas, "{scale}");
        assert_eq!(scale["status"]["selector"], selector, "{scale}");
    }
    // A precondition on the current size (kubectl scale --current-replicas) is honoured.
    let err = s.fails(&["scale", "sts/sts", "--current-replicas=2", "--replicas=1"]);
    assert!(err.contains("Expected replicas to be 2, was 4"), "{err}");
    assert_eq!(s.json(&["get", "sts", "sts"])["spec"]["replicas"], 4);
    // DaemonSets have no scale subresource.
    assert!(s.fails(&["scale", "ds/none", "--replicas=1"]).contains("not"));
}

#[test]
fn field_selectors_of_pods_and_events() {
    let s = Server::api_only();
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: on-n1}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: unbound}\nspec:\n  containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Event\nmetadata: {name: e1}\ninvolvedObject: {kind: Pod, name: on-n1, namespace: default}\nreason: Tested\nmessage: one\ntype: Normal\n---\napiVersion: v1\nkind: Event\nmetadata: {name: e2}\ninvolvedObject: {kind: Pod, name: unbound, namespace: default}\nreason: Tested\nmessage: two\ntype: Warning\n";
    s.ok_stdin(&["apply", "-f", "-"], pods);
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend(["-o", "name"]);
        let mut v: Vec<String> = s.ok(&full).lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["pods", "--field-selector", "spec.nodeName=n1"]), ["pod/on-n1"]);
    assert_eq!(names(&["pods", "--field-selector", "spec.nodeName="]), ["pod/unbound"]);
    assert_eq!(names(&["pods", "--field-selector", "status.phase=Pending"]), ["pod/on-n1", "pod/unbound"]);
    assert!(names(&["pods", "--field-selector", "status.phase!=Pending"]).is_empty());
    assert_eq!(
        names(&["events", "--field-selector", "involvedObject.kind=Pod,involvedObject.name=unbound"]),
        ["event/e2"]
    );
    assert_eq!(names(&["events", "--field-selector", "type=Warning"]), ["event/e2"]);
    let err = s.fails(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(err.contains("field label not supported: spec.bogus"), "{err}");
}

#[test]
fn watch_from_a_revision_with_bookmarks_ends_at_its_timeout() {
    let s = Server::api_only();
    s.ok(&["create", "configmap", "w", "--from-literal=a=1"]);
    let rv = s.json(&["get", "cm", "w"])["metadata"]["resourceVersion"].as_str().expect("rv").to_owned();
    s.ok(&["label", "cm", "w", "step=two"]);
    // From the creation's revision: exactly the later change, then a bookmark before the
    // server closes the watch at timeoutSeconds (kubectl returns once the stream ends).
    let out = s.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"),
    ]);
    let events: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("event")).collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"MODIFIED"), "{out}");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["step"], "two");
    assert!(types.contains(&"BOOKMARK"), "no bookmark before the timeout: {out}");
    let bookmark = events.iter().find(|e| e["type"] == "BOOKMARK").expect("bookmark");
    assert!(bookmark["object"]["metadata"]["resourceVersion"].as_str().is_some_and(|r| r.parse::<u64>().is_ok()));
    // From "0": the current state as ADDED events first.
    let out =
        s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1"]);
    let first: Value = serde_json::from_str(out.lines().next().expect("an event")).expect("event");
    assert_eq!((first["type"].as_str(), first["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("w")));
}

#[test]
fn sigterm_stops_cleanly_and_a_restart_finds_everything() {
    let mut s = Server::api_only();
    s.ok(&["create", "namespace", "kept"]);
    s.ok(&["create", "-n", "kept", "configmap", "c", "--from-literal=a=1"]);
    let before = s.json(&["get", "-n", "kept", "cm", "c"]);
    assert!(s.stop(), "server did not exit cleanly on SIGTERM");
    s.spawn();
    let after = wait_for("the API after restart", Duration::from_secs(20), || {
        let out = s.kubectl(&["get", "-n", "kept", "cm", "c", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).expect("json"))
    });
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);
    // Revisions keep growing across the restart.
    s.ok(&["label", "-n", "kept", "cm", "c", "x=y"]);
    let rv = |v: &Value| v["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse::<u64>().ok()).expect("rv");
    assert!(rv(&s.json(&["get", "-n", "kept", "cm", "c"])) > rv(&before));
    // Health needs no credentials.
    for path in ["/healthz", "/livez", "/readyz"] {
        let out = std::process::Command::new("curl")
            .args(["-sk", &format!("https://127.0.0.1:{}{path}", s.port)])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok", "{path}");
    }
}

#[test]
fn concurrent_patches_without_resource_version_all_commit() {
    // Patches without a resourceVersion are unconditional: writers racing on one object are
    // retried on the newer object, never answered 409 and never lost.
    let s = Server::api_only();
    s.ok(&["create", "configmap", "hot", "--from-literal=seed=0"]);
    for i in 0..10 {
        // Eight kubectl processes at once per round, each its own key.
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let patch = format!(r#"{{"data":{{"w{writer}-{i}":"v"}}}}"#);
                s.kubectl_cmd(&["patch", "cm", "hot", "--type=merge", "-p", &patch])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("kubectl patch")
            })
            .collect();
        for writer in writers {
            let out = writer.wait_with_output().expect("kubectl patch");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let cm = s.json(&["get", "cm", "hot"]);
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 81, "every patch is in the object: {cm}");
}
