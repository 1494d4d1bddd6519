//! Every built-in kind through stock kubectl: one object of each, its short name in
//! `kubectl api-resources`, and the columns `kubectl get -o wide` prints, which must be
//! upstream's (kubernetes `pkg/printers/internalversion/printers.go`, 1.32). Also every
//! kubectl minor from 1.27 to 1.33 doing a basic apply/get round.

use std::path::PathBuf;
use std::process::Command;

use berth_testkit::{Server, write_file};

/// One object of every built-in kind, in namespace `kinds` where namespaced.
const EVERY_KIND: &str = include_str!("fixtures/every_kind.yaml");

/// (resource, short names, `-o wide` header) for every built-in kind.
const KINDS: &[(&str, &str, &[&str])] = &[
    ("pods", "po", &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
    ("services", "svc", &["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]),
    ("endpoints", "ep", &["NAME", "ENDPOINTS", "AGE"]),
    ("configmaps", "cm", &["NAME", "DATA", "AGE"]),
    ("secrets", "", &["NAME", "TYPE", "DATA", "AGE"]),
    ("serviceaccounts", "sa", &["NAME", "SECRETS", "AGE"]),
    (
        "events",
        "ev",
        &["LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"],
    ),
    ("resourcequotas", "quota", &["NAME", "REQUEST", "LIMIT", "AGE"]),
    ("limitranges", "limits", &["NAME", "CREATED AT"]),
    (
        "persistentvolumeclaims",
        "pvc",
        &[
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
            "VOLUMEMODE",
        ],
    ),
    ("deployments", "deploy", &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]),
    ("replicasets", "rs", &["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]),
    ("statefulsets", "sts", &["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]),
    (
        "daemonsets",
        "ds",
        &[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
        ],
    ),
    ("jobs", "", &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]),
    (
        "cronjobs",
        "cj",
        &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
        ],
    ),
    ("ingresses", "ing", &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]),
    ("networkpolicies", "netpol", &["NAME", "POD-SELECTOR", "AGE"]),
    ("endpointslices", "", &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]),
    ("leases", "", &["NAME", "HOLDER", "AGE"]),
    ("roles", "", &["NAME", "CREATED AT"]),
    ("rolebindings", "", &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]),
    // Cluster-scoped.
    ("namespaces", "ns", &["NAME", "STATUS", "AGE"]),
    (
        "nodes",
        "no",
        &[
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
        ],
    ),
    (
        "persistentvolumes",
        "pv",
        &[
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE",
            "VOLUMEMODE",
        ],
    ),
    ("ingressclasses", "", &["NAME", "CONTROLLER", "PARAMETERS", "AGE"]),
    ("clusterroles", "", &["NAME", "CREATED AT"]),
    ("clusterrolebindings", "", &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]),
    ("customresourcedefinitions", "crd,crds", &["NAME", "CREATED AT"]),
];

fn wide_header(resource: &str) -> &'static [&'static str] {
    KINDS.iter().find(|(r, _, _)| *r == resource).map(|(_, _, h)| *h).unwrap_or_default()
}

/// A kubectl table's header cells: columns are at least three spaces apart, and a header
/// holds at most one space in a row ("NOMINATED NODE").
fn header_cells(table: &str) -> Vec<String> {
    let header = table.lines().next().unwrap_or_default();
    header.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

#[test]
fn every_kind_has_its_short_names_and_upstream_wide_columns() {
    let s = Server::api_only();
    let out = s.ok_stdin(&["apply", "-f", "-"], EVERY_KIND);
    assert_eq!(out.lines().filter(|l| l.ends_with(" created")).count(), 29, "{out}");

    let resources = s.ok(&["api-resources", "--no-headers"]);
    for (resource, short, _) in KINDS {
        let line = resources.lines().find(|l| l.split_whitespace().next() == Some(*resource));
        let line = line.unwrap_or_else(|| panic!("{resource} missing from api-resources:\n{resources}"));
        // Columns: NAME [SHORTNAMES] APIVERSION NAMESPACED KIND.
        let cells: Vec<&str> = line.split_whitespace().collect();
        let shorts = if cells.len() == 5 { cells[1] } else { "" };
        assert_eq!(shorts, *short, "short names of {resource}: {line}");
    }

    for (resource, _, header) in KINDS {
        let table = s.ok(&["get", resource, "-n", "kinds", "-o", "wide"]);
        assert_eq!(header_cells(&table), *header, "kubectl get {resource} -o wide:\n{table}");
        assert!(table.lines().count() >= 2, "no rows for {resource}:\n{table}");
        // Without -o wide, kubectl hides exactly the priority-1 columns.
        let narrow = header_cells(&s.ok(&["get", resource, "-n", "kinds"]));
        assert!(narrow.len() <= header.len() && narrow.iter().all(|c| header.contains(&c.as_str())), "{narrow:?}");
    }

    // A few rows, cell by cell, as upstream prints them.
    let row = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend(["-o", "wide", "--no-headers"]);
        s.ok(&full).split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
    };
    let rq = row(&["quota", "q", "-n", "kinds"]);
    assert_eq!(rq[1..3], ["pods: 1/10, requests.cpu: 0/2", "limits.memory: 0/1Gi"], "{rq:?}");
    assert_eq!(row(&["ep", "ep", "-n", "kinds"])[1], "10.1.2.3:80");
    assert_eq!(row(&["rolebinding", "rb", "-n", "kinds"]).get(1).map(String::as_str), Some("Role/r"));
    assert_eq!(row(&["cj", "cj", "-n", "kinds"])[1..6], ["*/5 * * * *", "<none>", "False", "0", "<none>"]);
    assert_eq!(row(&["ing", "ing", "-n", "kinds"])[1..3], ["ic", "a.example.com"]);
    let pv = row(&["pv", "pv1"]);
    assert_eq!(pv[1..5], ["1Gi", "RWO", "Retain", "Pending"], "{pv:?}");
}

/// `kubectl.1.NN` from PATH, or next to the `kubectl` on PATH (where the version
/// dispatcher keeps them).
fn kubectl_minor(minor: u32) -> Option<PathBuf> {
    let name = format!("kubectl.1.{minor}");
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join(&name).is_file() {
            return Some(dir.join(&name));
        }
        if let Ok(real) = std::fs::canonicalize(dir.join("kubectl"))
            && let Some(candidate) = real.parent().map(|d| d.join(&name))
            && candidate.is_file()
        {
            return Some(candidate);
        }
    }
    None
}

#[test]
fn kubectl_1_27_to_1_33_apply_get_and_reject() {
    let found: Vec<(u32, PathBuf)> = (27..=33).filter_map(|m| kubectl_minor(m).map(|p| (m, p))).collect();
    if found.is_empty() {
        eprintln!("skipping: no kubectl.1.NN binaries on PATH");
        return;
    }
    let s = Server::api_only();
    let dir = tempfile::tempdir().expect("tmp");
    for (minor, kubectl) in found {
        let cache = dir.path().join(format!("cache-{minor}"));
        let run = |args: &[&str], file: Option<&PathBuf>| {
            let mut cmd = Command::new(&kubectl);
            cmd.args(args).env("KUBECONFIG", s.kubeconfig()).env("KUBECACHEDIR", &cache);
            if let Some(f) = file {
                cmd.args(["-f", f.to_str().expect("path")]);
            }
            cmd.output().expect("run kubectl")
        };
        let ok = |args: &[&str], file: Option<&PathBuf>| {
            let out = run(args, file);
            assert!(out.status.success(), "kubectl 1.{minor} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let app = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web{minor}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web{minor}}}}}\n  template:\n    metadata: {{labels: {{app: web{minor}}}}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n        env: [{{name: A, value: '1'}}, {{name: B, value: '2'}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: conf{minor}}}\ndata: {{k: v}}\n"
        );
        let f = write_file(dir.path(), &format!("app{minor}.yaml"), &app);
        let out = ok(&["apply"], Some(&f));
        assert!(out.contains(&format!("deployment.apps/web{minor} created")), "1.{minor}: {out}");
        let out = ok(&["apply"], Some(&f));
        assert!(out.contains(&format!("configmap/conf{minor} unchanged")), "1.{minor}: {out}");
        let edited = app.replace(", {name: B, value: '2'}", "").replace("replicas: 2", "replicas: 3");
        let f2 = write_file(dir.path(), &format!("app{minor}-2.yaml"), &edited);
        let out = ok(&["apply"], Some(&f2));
        assert!(out.contains(&format!("deployment.apps/web{minor} configured")), "1.{minor}: {out}");
        let d: serde_json::Value =
            serde_json::from_str(&ok(&["get", "deploy", &format!("web{minor}"), "-o", "json"], None)).expect("json");
        assert_eq!(d["spec"]["replicas"], 3, "1.{minor}");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"],
            serde_json::json!([{"name": "A", "value": "1"}])
        );
        let wide = ok(&["get", "deploy", &format!("web{minor}"), "-o", "wide"], None);
        assert_eq!(header_cells(&wide), wide_header("deployments"), "1.{minor}:\n{wide}");
        ok(&["create", "configmap", &format!("lit{minor}"), "--from-literal=a=b"], None);
        // Strict validation holds for every client version: nothing is stored.
        let bad = write_file(
            dir.path(),
            &format!("bad{minor}.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bad{minor}}}\nbogus: 1\n"),
        );
        let out = run(&["apply"], Some(&bad));
        assert!(!out.status.success(), "1.{minor} stored an unknown field");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field \"bogus\""), "1.{minor}");
        ok(&["delete", "deploy", &format!("web{minor}")], None);
    }
    let names = s.ok(&["get", "cm", "-o", "name"]);
    for minor in 27..=33 {
        if kubectl_minor(minor).is_some() {
            assert!(names.contains(&format!("configmap/lit{minor}")), "{names}");
            assert!(!names.contains(&format!("configmap/bad{minor}")), "{names}");
        }
    }
}
