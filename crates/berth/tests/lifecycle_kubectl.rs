//! Deletion semantics and events through kubectl, with the built-in controllers running
//! (no node agent: pods stay Pending, which is all these tests need).

use std::time::Duration;

use berth_testkit::{Server, wait_for};

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - {{name: c, image: busybox}}\n"
    )
}

fn count(s: &Server, args: &[&str]) -> usize {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend(["-o", "name"]);
    s.ok(&full).lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn namespace_deletion_removes_everything_in_it() {
    let s = Server::start(&["--no-node"]);
    s.ok(&["create", "namespace", "demo"]);
    s.ok_stdin(&["apply", "-n", "demo", "-f", "-"], &deployment("web", 2));
    s.ok(&["create", "-n", "demo", "configmap", "conf", "--from-literal=a=b"]);
    wait_for("pods of web", Duration::from_secs(30), || (count(&s, &["pods", "-n", "demo"]) == 2).then_some(()));
    s.ok(&["delete", "ns", "demo", "--timeout=60s"]);
    let err = s.fails(&["get", "ns", "demo"]);
    assert!(err.contains("NotFound"), "{err}");
    for kind in ["deploy", "rs", "pods", "cm"] {
        assert_eq!(count(&s, &[kind, "-n", "demo"]), 0, "{kind} left behind");
    }
}

#[test]
fn cascading_deletion_background_foreground_orphan() {
    let s = Server::start(&["--no-node"]);
    for name in ["bg", "fg", "or"] {
        s.ok_stdin(&["apply", "-f", "-"], &deployment(name, 2));
    }
    wait_for("all pods", Duration::from_secs(30), || (count(&s, &["pods"]) == 6).then_some(()));

    s.ok(&["delete", "deploy", "bg", "--cascade=background"]);
    wait_for("background dependents gone", Duration::from_secs(30), || {
        (count(&s, &["rs,pods", "-l", "app=bg"]) == 0).then_some(())
    });

    s.ok(&["delete", "deploy", "fg", "--cascade=foreground", "--timeout=60s"]);
    // Foreground: the owner is gone only after its dependents.
    assert_eq!(count(&s, &["rs,pods", "-l", "app=fg"]), 0, "foreground left dependents");

    s.ok(&["delete", "deploy", "or", "--cascade=orphan"]);
    let rs = s.json(&["get", "rs", "-l", "app=or"]);
    let items = rs["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "orphaned replicaset kept");
    assert!(
        items[0]["metadata"].get("ownerReferences").is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
        "owner reference stripped"
    );
    assert_eq!(count(&s, &["pods", "-l", "app=or"]), 2, "orphaned pods kept");
}

#[test]
fn describe_shows_controller_events() {
    let s = Server::start(&["--no-node"]);
    s.ok_stdin(&["apply", "-f", "-"], &deployment("web", 2));
    let out = wait_for("ScalingReplicaSet event", Duration::from_secs(30), || {
        let d = s.ok(&["describe", "deploy", "web"]);
        d.contains("ScalingReplicaSet").then_some(d)
    });
    assert!(out.contains("Scaled up replica set web-"), "{out}");
    let rs_name = s.ok(&["get", "rs", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let rs = wait_for("SuccessfulCreate event", Duration::from_secs(30), || {
        let d = s.ok(&["describe", "rs", &rs_name]);
        d.contains("SuccessfulCreate").then_some(d)
    });
    assert!(rs.contains("Created pod: web-"), "{rs}");
    let pod = s.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let events = s.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={rs_name}")]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    let d = s.ok(&["describe", "pod", &pod]);
    assert!(d.contains("Controlled By:  ReplicaSet/"), "{d}");
}

#[test]
fn resource_quota_limits_pods_until_raised() {
    let s = Server::start(&["--no-node"]);
    s.ok(&["create", "namespace", "q"]);
    s.ok_stdin(
        &["apply", "-n", "q", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: pods-max\nspec:\n  hard:\n    pods: \"4\"\n",
    );
    s.ok_stdin(&["apply", "-n", "q", "-f", "-"], &deployment("big", 6));
    wait_for("4 pods", Duration::from_secs(30), || (count(&s, &["pods", "-n", "q"]) == 4).then_some(()));
    let rs = s.ok(&["get", "rs", "-n", "q", "-o", "jsonpath={.items[0].metadata.name}"]);
    let described = wait_for("quota error in the replicaset's events", Duration::from_secs(30), || {
        let d = s.ok(&["describe", "rs", "-n", "q", &rs]);
        d.contains("exceeded quota").then_some(d)
    });
    assert!(
        described.contains("exceeded quota: pods-max, requested: pods=1, used: pods=4, limited: pods=4"),
        "{described}"
    );
    let used = wait_for("quota status", Duration::from_secs(30), || {
        let q = s.json(&["get", "quota", "-n", "q", "pods-max"]);
        (q["status"]["used"]["pods"] == "4").then_some(q)
    });
    assert_eq!(used["status"]["hard"]["pods"], "4");
    // Still 4 after a while: the quota holds.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&s, &["pods", "-n", "q"]), 4);

    let dir = tempfile::tempdir().expect("tmp");
    let editor =
        berth_testkit::write_file(dir.path(), "editor.sh", "#!/bin/sh\nsed -i 's/pods: \"4\"/pods: \"10\"/' \"$1\"\n");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = s.kubectl_cmd(&["edit", "-n", "q", "quota", "pods-max"]).env("EDITOR", &editor).output().expect("edit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("6 pods after raising the quota", Duration::from_secs(60), || {
        (count(&s, &["pods", "-n", "q"]) == 6).then_some(())
    });
}

#[test]
fn limit_range_defaults_fill_new_pods() {
    let s = Server::start(&["--no-node", "--no-controllers"]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: defaults\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 100m, memory: 64Mi}\n    max: {memory: 1Gi}\n",
    );
    s.ok(&["run", "p", "--image=busybox", "--restart=Never"]);
    let pod = s.json(&["get", "pod", "p"]);
    let r = &pod["spec"]["containers"][0]["resources"];
    assert_eq!((r["limits"]["cpu"].as_str(), r["limits"]["memory"].as_str()), (Some("500m"), Some("128Mi")), "{r}");
    assert_eq!((r["requests"]["cpu"].as_str(), r["requests"]["memory"].as_str()), (Some("100m"), Some("64Mi")), "{r}");
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    let err = s.fails(&[
        "run",
        "too-big",
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        r#"{"spec":{"containers":[{"name":"too-big","image":"busybox","resources":{"limits":{"memory":"2Gi"}}}]}}"#,
    ]);
    assert!(err.contains("maximum memory usage per Container is 1Gi, but limit is 2Gi"), "{err}");
}
