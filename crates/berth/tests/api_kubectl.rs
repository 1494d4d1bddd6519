//! The control plane as stock kubectl sees it: discovery, apply, get, patch, watch,
//! errors. Each test starts its own `berth server` with only the API running.

use std::time::Duration;

use berth_testkit::{Server, wait_for, write_file};
use serde_json::Value;

const APP: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        ports:
        - containerPort: 80
        volumeMounts:
        - {name: conf, mountPath: /etc/nginx/conf.d}
      - name: sidecar
        image: busybox:1.36
        command: [sleep, "3600"]
      volumes:
      - name: conf
        configMap: {name: web-conf}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-conf
  namespace: demo
data:
  default.conf: "server { listen 80; }"
"#;

#[test]
fn discovery_version_and_health() {
    let s = Server::api_only();
    let v = s.ok(&["version", "-o", "json"]);
    let v: Value = serde_json::from_str(&v).expect("json");
    assert_eq!(v["serverVersion"]["minor"], "32");
    assert_eq!(s.ok(&["get", "--raw", "/readyz"]), "ok");
    let resources = s.ok(&["api-resources"]);
    for (name, short) in [
        ("pods", "po"),
        ("services", "svc"),
        ("deployments", "deploy"),
        ("replicasets", "rs"),
        ("namespaces", "ns"),
        ("configmaps", "cm"),
        ("persistentvolumeclaims", "pvc"),
        ("cronjobs", "cj"),
        ("ingresses", "ing"),
        ("customresourcedefinitions", "crd"),
    ] {
        let line = resources.lines().find(|l| l.split_whitespace().next() == Some(name));
        let line = line.unwrap_or_else(|| panic!("{name} missing from api-resources:\n{resources}"));
        assert!(line.split_whitespace().any(|w| w.split(',').any(|s| s == short)), "{name} lacks short name {short}");
    }
    for name in [
        "endpoints",
        "events",
        "secrets",
        "serviceaccounts",
        "nodes",
        "resourcequotas",
        "limitranges",
        "persistentvolumes",
        "statefulsets",
        "daemonsets",
        "jobs",
        "ingressclasses",
        "networkpolicies",
        "endpointslices",
        "leases",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
    ] {
        assert!(resources.lines().any(|l| l.split_whitespace().next() == Some(name)), "{name} missing");
    }
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{n} missing: {ns}");
    }
    // Everything but health needs the token.
    let out = std::process::Command::new("kubectl")
        .args(["get", "ns", "--token", "wrong"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBECACHEDIR", &s.cache_dir)
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthorized"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn apply_create_unchanged_configured_and_strategic_merge() {
    let s = Server::api_only();
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_file(dir.path(), "app.yaml", APP);
    let f = f.to_str().expect("path");
    let out = s.ok(&["apply", "-f", f]);
    for kind in ["namespace/demo", "deployment.apps/web", "service/web", "configmap/web-conf"] {
        assert!(out.contains(&format!("{kind} created")), "{out}");
    }
    let out = s.ok(&["apply", "-f", f]);
    for kind in ["namespace/demo", "deployment.apps/web", "service/web", "configmap/web-conf"] {
        assert!(out.contains(&format!("{kind} unchanged")), "{out}");
    }
    // Edit: replicas, an env var removed, a container port changed, a container added.
    let edited = APP
        .replace("replicas: 2", "replicas: 3")
        .replace("        - {name: B, value: \"2\"}\n", "")
        .replace("containerPort: 80", "containerPort: 8080")
        .replace(
            "      volumes:",
            "      - name: logger\n        image: busybox:1.36\n        command: [sh, -c, \"tail -f /dev/null\"]\n      volumes:",
        );
    let f2 = write_file(dir.path(), "app2.yaml", &edited);
    let out = s.ok(&["apply", "-f", f2.to_str().expect("path")]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let d = s.json(&["get", "-n", "demo", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    let containers = d["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["nginx", "sidecar", "logger"]);
    assert_eq!(containers[0]["env"], serde_json::json!([{"name": "A", "value": "1"}]));
    assert_eq!(containers[0]["ports"], serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}]));
    assert_eq!(containers[0]["volumeMounts"][0]["mountPath"], "/etc/nginx/conf.d");
    assert_eq!(d["metadata"]["generation"], 2);
    // Defaults were filled as upstream does.
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
    let svc = s.json(&["get", "-n", "demo", "svc", "web"]);
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
    assert!(svc["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.starts_with("10.")), "{svc}");

    let out = s.ok(&["apply", "--server-side", "-f", f2.to_str().expect("path")]);
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let ss = edited.replace("replicas: 3", "replicas: 4");
    let f3 = write_file(dir.path(), "app3.yaml", &ss);
    s.ok(&["apply", "--server-side", "--force-conflicts", "-f", f3.to_str().expect("path")]);
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 4);
    // Server-side apply creates what is missing.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-new\n  namespace: demo\ndata:\n  k: v\n";
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], cm);
    assert_eq!(s.json(&["get", "-n", "demo", "cm", "ssa-new"])["data"]["k"], "v");
}

#[test]
fn get_outputs_selectors_and_columns() {
    let s = Server::api_only();
    s.ok_stdin(&["apply", "-f", "-"], APP);
    let wide = s.ok(&["get", "deploy,svc,cm", "-n", "demo", "-o", "wide"]);
    let header = |prefix: &str| wide.lines().find(|l| l.starts_with(prefix)).map(str::to_owned).unwrap_or_default();
    let d = header("NAME                  READY");
    for col in ["READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"] {
        assert!(d.contains(col), "deployment columns: {wide}");
    }
    assert!(
        wide.contains("nginx,sidecar") && wide.contains("nginx:1.25,busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    assert!(
        wide.lines().any(|l| l.contains("TYPE")
            && l.contains("CLUSTER-IP")
            && l.contains("EXTERNAL-IP")
            && l.contains("PORT(S)")),
        "{wide}"
    );
    assert!(wide.contains("ClusterIP") && wide.contains("80/TCP"), "{wide}");
    assert!(
        wide.lines().any(|l| l.contains("configmap/web-conf") && l.split_whitespace().nth(1) == Some("1")),
        "{wide}"
    );

    let yaml = s.ok(&["get", "-n", "demo", "deploy", "web", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment") && yaml.contains("resourceVersion:"), "{yaml}");
    let jp = s.ok(&["get", "-n", "demo", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert_eq!(jp, "nginx sidecar");

    let cms = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: demo\n  labels: {tier: front, env: prod}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: demo\n  labels: {tier: back, env: prod}\n";
    s.ok_stdin(&["apply", "-f", "-"], cms);
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get", "cm", "-n", "demo", "-o", "name"];
        full.extend_from_slice(args);
        let mut v: Vec<String> = s.ok(&full).lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-l", "tier=front"]), ["configmap/a"]);
    assert_eq!(names(&["-l", "env=prod,tier!=front"]), ["configmap/b"]);
    assert_eq!(names(&["-l", "tier in (front,back)"]), ["configmap/a", "configmap/b"]);
    assert_eq!(names(&["-l", "!tier"]), ["configmap/web-conf"]);
    assert_eq!(names(&["--field-selector", "metadata.name=b"]), ["configmap/b"]);
    let bad = s.fails(&["get", "cm", "-n", "demo", "--field-selector", "spec.bogus=1"]);
    assert!(bad.contains("field label not supported"), "{bad}");

    let all = s.ok(&["get", "all", "-n", "demo"]);
    assert!(all.contains("service/web") && all.contains("deployment.apps/web"), "{all}");

    // Paging with limit/continue returns every item once.
    let raw = s.ok(&["get", "--raw", "/api/v1/namespaces/demo/configmaps?limit=1"]);
    let page: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let cont = page["metadata"]["continue"].as_str().expect("continue token");
    let raw = s.ok(&["get", "--raw", &format!("/api/v1/namespaces/demo/configmaps?limit=10&continue={cont}")]);
    let rest: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2));
}

#[test]
fn watch_sees_changes_from_another_kubectl() {
    let s = Server::api_only();
    let (mut watcher, rx) = s.kubectl_lines(&["get", "pods", "-w"]);
    // The watch may start after the first pods exist: keep creating until one is printed.
    let mut created = 0;
    let line = wait_for("watch to print a pod another kubectl created", Duration::from_secs(30), || {
        s.ok(&["run", &format!("p{created}"), "--image=busybox", "--restart=Never"]);
        created += 1;
        rx.recv_timeout(Duration::from_millis(500)).ok().filter(|l| l.starts_with('p'))
    });
    // Printed as a table row: NAME READY STATUS RESTARTS AGE.
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells.get(1..3), Some(&["0/1", "Pending"][..]), "{line}");
    // A later change shows up too.
    s.ok(&["label", "pod", "p0", "changed=yes"]);
    let changed = wait_for("the label change", Duration::from_secs(10), || {
        rx.recv_timeout(Duration::from_millis(500)).ok().filter(|l| l.starts_with("p0 "))
    });
    assert!(changed.contains("Pending"), "{changed}");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn scale_label_annotate_edit_and_patch() {
    let s = Server::api_only();
    s.ok_stdin(&["apply", "-f", "-"], APP);
    s.ok(&["scale", "-n", "demo", "deploy/web", "--replicas=5"]);
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 5);
    let scale = s.ok(&["get", "--raw", "/apis/apps/v1/namespaces/demo/deployments/web/scale"]);
    let scale: Value = serde_json::from_str(&scale).expect("json");
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some(5)));
    assert_eq!(scale["status"]["selector"], "app=web");
    s.ok(&["label", "-n", "demo", "deploy", "web", "tier=front"]);
    s.ok(&["annotate", "-n", "demo", "deploy", "web", "owner=team-a"]);
    let d = s.json(&["get", "-n", "demo", "deploy", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    s.ok(&["label", "-n", "demo", "deploy", "web", "tier-"]);
    assert!(s.json(&["get", "-n", "demo", "deploy", "web"])["metadata"]["labels"].get("tier").is_none());

    let dir = tempfile::tempdir().expect("tmp");
    let editor = write_file(dir.path(), "editor.sh", "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 7/' \"$1\"\n");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = s.kubectl_cmd(&["edit", "-n", "demo", "deploy", "web"]).env("EDITOR", &editor).output().expect("edit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 7);

    s.ok(&[
        "patch",
        "-n",
        "demo",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 4);
    s.ok(&["patch", "-n", "demo", "deploy", "web", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 3);
    s.ok(&[
        "patch",
        "-n",
        "demo",
        "deploy",
        "web",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}}}"#,
    ]);
    let d = s.json(&["get", "-n", "demo", "deploy", "web"]);
    let images: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("c")
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    assert_eq!(images, ["nginx:1.25", "busybox:1.37"]);
    // Generation moves with the spec only.
    let gen_before = d["metadata"]["generation"].as_i64().expect("generation");
    s.ok(&["annotate", "-n", "demo", "deploy", "web", "x=y"]);
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["metadata"]["generation"].as_i64(), Some(gen_before));
    // A JSON patch that fails its test operation changes nothing.
    let err = s.fails(&[
        "patch",
        "-n",
        "demo",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99},{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert!(!err.is_empty());
    assert_eq!(s.json(&["get", "-n", "demo", "deploy", "web"])["spec"]["replicas"], 3);
}

#[test]
fn replace_with_stale_resource_version_conflicts() {
    let s = Server::api_only();
    s.ok(&["create", "configmap", "c", "--from-literal=a=1"]);
    let mut cm = s.json(&["get", "cm", "c"]);
    s.ok(&["label", "cm", "c", "bump=1"]);
    cm["data"]["a"] = Value::from("2");
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_file(dir.path(), "cm.json", &cm.to_string());
    let err = s.fails(&["replace", "-f", f.to_str().expect("path")]);
    assert!(err.contains("Conflict") && err.contains("the object has been modified"), "{err}");
    assert_eq!(s.json(&["get", "cm", "c"])["data"]["a"], "1");
}

#[test]
fn dry_run_stores_nothing() {
    let s = Server::api_only();
    let out = s.ok(&["create", "configmap", "dry", "--from-literal=a=1", "--dry-run=server", "-o", "json"]);
    let obj: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(obj["metadata"]["name"], "dry");
    let err = s.fails(&["get", "cm", "dry"]);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn bad_input_is_rejected_clearly_and_stores_nothing() {
    let s = Server::api_only();
    let dir = tempfile::tempdir().expect("tmp");
    let cases: &[(&str, &str, &[&str])] = &[
        ("malformed-yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n", &["yaml"]),
        (
            "malformed-json",
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"j\"",
            &["json", "yaml", "error"],
        ),
        (
            "wrong-version",
            "apiVersion: v9\nkind: ConfigMap\nmetadata:\n  name: wv\n",
            &["no matches for kind \"ConfigMap\" in version \"v9\""],
        ),
        ("unknown-kind", "apiVersion: v1\nkind: Bogus\nmetadata:\n  name: uk\n", &["no matches for kind \"Bogus\""]),
        (
            "bad-name",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
            &["Invalid value: \"Bad_Name\"", "RFC 1123"],
        ),
        (
            "missing-selector",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nosel\nspec:\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers:\n      - {name: c, image: busybox}\n",
            &["spec.selector", "Required value"],
        ),
        (
            "missing-image",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimg\nspec:\n  containers:\n  - name: c\n",
            &["spec.containers[0].image", "Required value"],
        ),
        (
            "unknown-field",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: uf\nbogusField: 1\n",
            &["unknown field \"bogusField\""],
        ),
        (
            "wrong-type",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: wt\nspec:\n  replicas: \"three\"\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
            &["replicas"],
        ),
        (
            "negative-replicas",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: neg\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
            &["spec.replicas", "greater than or equal to 0"],
        ),
        (
            "kind-in-wrong-group",
            "apiVersion: apps/v1\nkind: ConfigMap\nmetadata:\n  name: wg\n",
            &["no matches for kind \"ConfigMap\" in version \"apps/v1\""],
        ),
        ("no-kind", "apiVersion: v1\nmetadata:\n  name: nk\n", &["kind not set"]),
        (
            "bad-namespace-name",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: Bad.NS\n",
            &["metadata.name: Invalid value: \"Bad.NS\"", "RFC 1123 label"],
        ),
        (
            "name-too-long",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a234567890123456789012345678901234567890123456789012345678901234\nspec:\n  ports: [{port: 80}]\n",
            &["must be no more than 63 characters"],
        ),
        (
            "bad-label-key",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bl\n  labels: {\"bad key!\": v}\n",
            &["metadata.labels: Invalid value: \"bad key!\""],
        ),
        (
            "nested-unknown-field",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nu\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: busybox, imagee: x}]\n",
            &["unknown field \"spec.template.spec.containers[0].imagee\""],
        ),
        (
            "selector-mismatch",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: sm\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec:\n      containers: [{name: c, image: busybox}]\n",
            &["`selector` does not match template `labels`"],
        ),
    ];
    for (name, body, needles) in cases {
        let f = write_file(dir.path(), &format!("{name}.yaml"), body);
        let f = f.to_str().expect("path");
        // Both the declarative and the imperative path refuse it.
        for verb in ["apply", "create"] {
            let err = s.fails(&[verb, "-f", f]);
            assert!(
                needles.iter().any(|n| err.contains(n)),
                "{name} ({verb}): error does not name the problem ({needles:?}):\n{err}"
            );
        }
    }
    // A missing name is refused by the server, naming the field.
    let out = s.kubectl_stdin(&["create", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metadata.name: Required value"), "{err}");
    // Nothing was stored by any of them.
    let cms = s.ok(&["get", "cm", "-o", "name"]);
    assert!(cms.trim().is_empty(), "configmaps were stored: {cms}");
    let deps = s.ok(&["get", "deploy,pods,svc", "-o", "name"]);
    assert_eq!(deps.trim(), "service/kubernetes", "objects were stored: {deps}");
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    assert_eq!(ns.lines().count(), 4, "a namespace was stored: {ns}");

    // A body over the size limit is refused with 413, not buffered without bound.
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let f = write_file(dir.path(), "big.json", &big);
    let err = s.fails(&["create", "-f", f.to_str().expect("path")]);
    assert!(err.contains("too large") || err.contains("RequestEntityTooLarge"), "{err}");
    assert!(s.fails(&["get", "cm", "big"]).contains("NotFound"));

    // A resourceVersion that is not a number: on watch, list, get, replace and apply.
    for path in [
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
        "/api/v1/namespaces/default/configmaps?resourceVersion=abc",
        "/api/v1/namespaces/default/configmaps/kept?resourceVersion=1x",
    ] {
        let err = s.fails(&["get", "--raw", path]);
        assert!(err.contains("invalid resource version"), "{path}: {err}");
    }
    s.ok(&["create", "configmap", "kept", "--from-literal=a=1"]);
    let stale =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  resourceVersion: \"abc\"\ndata: {a: \"2\"}\n";
    let f = write_file(dir.path(), "rv.yaml", stale);
    for verb in ["replace", "apply"] {
        let err = s.fails(&[verb, "-f", f.to_str().expect("path")]);
        assert!(err.contains("invalid resource version \"abc\""), "{verb}: {err}");
    }
    assert_eq!(s.json(&["get", "cm", "kept"])["data"]["a"], "1");
    // Hostile names in the URL never reach the store.
    let err = s.fails(&["get", "--raw", "/api/v1/namespaces/default/configmaps/..%2F..%2Fetc"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

#[test]
fn custom_resources_are_served_from_their_definitions() {
    let s = Server::api_only();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;
    s.ok_stdin(&["apply", "-f", "-"], crd);
    s.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"]);
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 1\n";
    assert!(s.ok_stdin(&["apply", "-f", "-"], w).contains("widget.example.com/w1 created"));
    assert!(s.ok_stdin(&["apply", "-f", "-"], &w.replace("size: 1", "size: 2")).contains("configured"));
    assert_eq!(s.json(&["get", "wd", "w1"])["spec"]["size"], 2);
    s.ok(&["patch", "widget", "w1", "--type=merge", "-p", r#"{"spec":{"color":"red"}}"#]);
    let obj = s.json(&["get", "widgets", "w1"]);
    assert_eq!((obj["spec"]["size"].as_i64(), obj["spec"]["color"].as_str()), (Some(2), Some("red")));
    assert_eq!(obj["metadata"]["generation"], 3);
    // Deleting the definition removes its objects and its API.
    s.ok(&["delete", "crd", "widgets.example.com"]);
    let err = s.fails(&["get", "--raw", "/apis/example.com/v1/namespaces/default/widgets"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
}

#[test]
fn kubectl_create_generators_send_protobuf_and_are_stored_right() {
    let s = Server::api_only();
    s.ok(&["create", "namespace", "gen"]);
    s.ok(&["create", "-n", "gen", "configmap", "cm", "--from-literal=a=1", "--from-literal=b=2"]);
    s.ok(&["create", "-n", "gen", "secret", "generic", "sec", "--from-literal=password=hunter2"]);
    s.ok(&["create", "-n", "gen", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=80"]);
    s.ok(&["create", "-n", "gen", "job", "once", "--image=busybox", "--", "echo", "hi"]);
    s.ok(&["create", "-n", "gen", "cronjob", "tick", "--image=busybox", "--schedule=*/1 * * * *", "--", "date"]);
    s.ok(&["create", "-n", "gen", "service", "clusterip", "svc", "--tcp=80:8080"]);
    s.ok(&["create", "-n", "gen", "serviceaccount", "robot"]);

    assert_eq!(s.json(&["get", "ns", "gen"])["status"]["phase"], "Active");
    let cm = s.json(&["get", "-n", "gen", "cm", "cm"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "2"}));
    let sec = s.json(&["get", "-n", "gen", "secret", "sec"]);
    assert_eq!((sec["type"].as_str(), sec["data"]["password"].as_str()), (Some("Opaque"), Some("aHVudGVyMg==")));
    let d = s.json(&["get", "-n", "gen", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let j = s.json(&["get", "-n", "gen", "job", "once"]);
    assert_eq!(j["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let cj = s.json(&["get", "-n", "gen", "cronjob", "tick"]);
    assert_eq!(cj["spec"]["schedule"], "*/1 * * * *");
    let svc = s.json(&["get", "-n", "gen", "svc", "svc"]);
    assert_eq!(
        (svc["spec"]["ports"][0]["port"].as_i64(), svc["spec"]["ports"][0]["targetPort"].as_i64()),
        (Some(80), Some(8080))
    );
    assert!(s.json(&["get", "-n", "gen", "sa", "robot"])["metadata"]["uid"].is_string());
}
