//! The workload controllers' acceptance, through stock kubectl against a real `berth server`:
//! Deployment rollouts with history, undo and restart, progress deadlines, scaling, quotas and
//! limit ranges, Jobs, CronJobs, StatefulSets, DaemonSets, and a server restart mid-rollout.
//!
//! Where pods can run here (root and runc), every test runs its pods for real: `image: host`
//! with busybox shell commands, on a network slot of its own. Elsewhere each test drives pod
//! status as kwok does (a test-side stand-in kubelet reading the behaviour a pod template
//! names in an annotation), since these tests are about the controllers, not the node.
//! `limit_range_defaults_fill_deployment_pods` only needs admission, so it never runs pods.
//! `BERTH_TEST_KWOK=1` forces the stand-in kubelet even where pods could run.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use berth_testkit::{Server, can_run_pods, wait_for};
use serde_json::{Value, json};

/// The annotation naming what a pod does, for the stand-in kubelet (the real node ignores it
/// and runs the command, which does the same).
const BEHAVIOUR: &str = "berth.test/behaviour";

/// What a test pod does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Runs until stopped, ready at once.
    Serve,
    /// Runs until stopped, ready after three seconds.
    SlowReady,
    /// Runs, never ready.
    NeverReady,
    /// Exits 0 after a second.
    Succeed,
    /// Exits 1 at once.
    Fail,
}

impl Behaviour {
    fn name(self) -> &'static str {
        match self {
            Behaviour::Serve => "serve",
            Behaviour::SlowReady => "slow-ready",
            Behaviour::NeverReady => "never-ready",
            Behaviour::Succeed => "succeed",
            Behaviour::Fail => "fail",
        }
    }

    fn container(self, image_tag: &str) -> Value {
        // PID 1 ignores SIGTERM unless it traps it; the loop lets the trap run within a second.
        let serve = "trap 'exit 0' TERM; while true; do sleep 1; done";
        let mut c = json!({
            "name": "main",
            "image": "host",
            // A per-version environment variable stands for a new image: it changes the template.
            "env": [{"name": "VERSION", "value": image_tag}],
        });
        let (script, probe) = match self {
            Behaviour::Serve => (serve, None),
            Behaviour::SlowReady => {
                (serve, Some(json!({"exec": {"command": ["true"]}, "initialDelaySeconds": 3, "periodSeconds": 1})))
            }
            Behaviour::NeverReady => (serve, Some(json!({"exec": {"command": ["false"]}, "periodSeconds": 1}))),
            Behaviour::Succeed => ("sleep 1", None),
            Behaviour::Fail => ("exit 1", None),
        };
        c["command"] = json!(["/bin/sh", "-c", script]);
        if let Some(p) = probe {
            c["readinessProbe"] = p;
        }
        c
    }
}

/// A pod template labelled `app=<app>` doing `behaviour`, at version `tag`.
fn pod_template(app: &str, behaviour: Behaviour, tag: &str, restart: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}, "annotations": {BEHAVIOUR: behaviour.name()}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "containers": [behaviour.container(tag)],
        }
    })
}

fn deployment(name: &str, replicas: u32, behaviour: Behaviour, tag: &str, extra_spec: Value) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, behaviour, tag, "Always"),
        }
    });
    if let (Some(spec), Some(extra)) = (d["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    d
}

/// A server whose pods run for real when this machine can run pods, else one whose pods a
/// stand-in kubelet moves through their lives.
struct Cluster {
    s: Server,
    real: bool,
    kwok: Option<Kwok>,
}

impl Cluster {
    fn start() -> Cluster {
        if std::env::var_os("BERTH_TEST_KWOK").is_none() && can_run_pods() {
            Cluster { s: Server::start(&[]), real: true, kwok: None }
        } else {
            eprintln!("driving pod status kwok-style instead");
            let s = Server::start(&["--no-node"]);
            let kwok = Kwok::start(&s);
            Cluster { s, real: false, kwok: Some(kwok) }
        }
    }

    fn apply(&self, obj: &Value) -> String {
        self.s.ok_stdin(&["apply", "-f", "-"], &obj.to_string())
    }

    /// The live (not terminating) pods matching `selector`.
    fn pods(&self, selector: &str) -> Vec<Value> {
        let list = self.s.json(&["get", "pods", "-l", selector]);
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    /// Restarts the server process on the same data dir and port (and the stand-in kubelet).
    fn restart(&mut self) {
        self.s.stop();
        self.s.spawn();
        if let Some(k) = &mut self.kwok {
            k.reconnect(&self.s);
        }
    }
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn version(pod: &Value) -> String {
    pod["spec"]["containers"][0]["env"][0]["value"].as_str().unwrap_or_default().to_owned()
}

const LONG: Duration = Duration::from_secs(120);

// ---- the stand-in kubelet ----------------------------------------------------------------------

/// Moves pods through their lives by writing pod status through the API, as kwok does: used
/// only where pods cannot run for real.
struct Kwok {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kwok {
    fn start(s: &Server) -> Kwok {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kubeconfig = s.kubeconfig();
        let cache = s.cache_dir.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || kwok_loop(&kubeconfig, &cache, &flag));
        Kwok { stop, thread: Some(thread) }
    }

    fn reconnect(&mut self, s: &Server) {
        self.halt();
        *self = Kwok::start(s);
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Kwok {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls pods with kubectl and patches the status each one's behaviour calls for.
fn kwok_loop(kubeconfig: &std::path::Path, cache: &std::path::Path, stop: &std::sync::atomic::AtomicBool) {
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", cache)
            .output()
    };
    let mut first_seen: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(out) = kubectl(&["get", "pods", "-A", "-o", "json"]) else { continue };
        let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else { continue };
        for pod in list["items"].as_array().into_iter().flatten() {
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            let seen = *first_seen.entry(uid).or_insert_with(std::time::Instant::now);
            let behaviour = pod["metadata"]["annotations"][BEHAVIOUR].as_str().unwrap_or("serve");
            let phase = pod["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed") {
                continue;
            }
            let now = berth_now();
            let cond = |t: &str, s: bool| json!({"type": t, "status": if s { "True" } else { "False" }, "lastTransitionTime": now});
            let running = |is_ready: bool| {
                json!({"status": {"phase": "Running", "startTime": now,
                    "conditions": [cond("PodScheduled", true), cond("Initialized", true),
                                   cond("ContainersReady", is_ready), cond("Ready", is_ready)]}})
            };
            let finished = |code: i32| {
                json!({"status": {"phase": if code == 0 { "Succeeded" } else { "Failed" }, "startTime": now,
                    "containerStatuses": [{"name": "main", "image": "host", "imageID": "", "ready": false,
                        "restartCount": 0, "state": {"terminated": {"exitCode": code, "finishedAt": now,
                        "reason": if code == 0 { "Completed" } else { "Error" }}}}]}})
            };
            let age = seen.elapsed();
            let patch = match behaviour {
                "serve" if !ready(pod) => running(true),
                "slow-ready" if !ready(pod) => running(age > Duration::from_secs(3)),
                "never-ready" if phase != "Running" => running(false),
                "succeed" if age > Duration::from_secs(1) => finished(0),
                "succeed" if phase != "Running" => running(false),
                "fail" => finished(1),
                _ => continue,
            };
            if behaviour == "slow-ready" && phase == "Running" && !ready(&patch) {
                continue;
            }
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = name(pod);
            let _ = kubectl(&[
                "patch",
                "pod",
                &name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ]);
        }
    }
}

fn berth_now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

// ---- Deployments ------------------------------------------------------------------------------

/// Rollout with maxUnavailable 0 / maxSurge 1 watched from outside, `rollout status`, `history`
/// with change-causes, `undo` reusing the first ReplicaSet as revision 3, and `restart`.
#[test]
fn deployment_rollout_history_undo_restart() {
    let c = Cluster::start();
    let s = &c.s;
    let strategy =
        json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    let mut d = deployment("web", 3, Behaviour::Serve, "v1", strategy.clone());
    d["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "release v1"});
    c.apply(&d);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let first_rs = s.json(&["get", "rs", "-l", "app=web"])["items"][0].clone();
    let first_rs_name = name(&first_rs);

    // Watch pods from outside while the template changes.
    let mut watch = s
        .kubectl_cmd(&["get", "pods", "-l", "app=web", "-w", "-o", "json", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("watch stdout");
    let (listed_tx, listed_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || watch_bounds(stdout, listed_tx));
    listed_rx.recv_timeout(LONG).expect("the watch listed the three pods");
    let mut d2 = deployment("web", 3, Behaviour::Serve, "v2", strategy);
    d2["metadata"]["annotations"] = json!({"kubernetes.io/change-cause": "release v2"});
    c.apply(&d2);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let _ = watch.kill();
    let _ = watch.wait();
    let (min_available, max_live, events) = reader.join().expect("watch reader");
    assert!(events > 3, "the watch saw the rollout ({events} events)");
    assert!(min_available >= 3, "available pods dropped to {min_available} during the rollout");
    assert!(max_live <= 4, "{max_live} pods existed at once during the rollout");
    assert_eq!(s.json(&["get", "rs", "-l", "app=web"])["items"].as_array().map(Vec::len), Some(2));

    let history = s.ok(&["rollout", "history", "deploy/web"]);
    let rows: Vec<Vec<&str>> = history.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["1", "release", "v1"]), "{history}");
    assert!(rows.contains(&vec!["2", "release", "v2"]), "{history}");

    s.ok(&["rollout", "undo", "deploy/web"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let rs = s.json(&["get", "rs", first_rs_name.as_str()]);
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    assert_eq!(rs["spec"]["replicas"], 3, "the first ReplicaSet is the live one again");
    assert_eq!(s.json(&["get", "rs", "-l", "app=web"])["items"].as_array().map(Vec::len), Some(2));
    let pods = c.pods("app=web");
    assert!(pods.iter().all(|p| version(p) == "v1"), "undo brought v1 back");

    let before: HashSet<String> = pods.iter().map(name).collect();
    s.ok(&["rollout", "restart", "deploy/web"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let after = wait_for("restarted pods only", LONG, || {
        let pods = c.pods("app=web");
        (pods.len() == 3 && pods.iter().all(|p| !before.contains(&name(p)))).then_some(pods)
    });
    assert!(after.iter().all(ready));
    assert!(s.ok(&["rollout", "history", "deploy/web"]).contains("\n4 "), "restart is revision 4");
}

/// Reads `kubectl get -w -o json --output-watch-events` and returns (fewest ready live pods,
/// most live pods, events seen) over the watch.
fn watch_bounds(stdout: std::process::ChildStdout, listed: std::sync::mpsc::Sender<()>) -> (usize, usize, usize) {
    let mut pods: BTreeMap<String, Value> = BTreeMap::new();
    let (mut min_available, mut max_live, mut events) = (usize::MAX, 0, 0);
    let stream = serde_json::Deserializer::from_reader(std::io::BufReader::new(stdout)).into_iter::<Value>();
    for event in stream.map_while(Result::ok) {
        let obj = &event["object"];
        let key = name(obj);
        match event["type"].as_str() {
            Some("DELETED") => {
                pods.remove(&key);
            }
            Some(_) => {
                pods.insert(key, obj.clone());
            }
            None => continue,
        }
        events += 1;
        let live: Vec<&Value> = pods.values().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        // Counted once the initial three are listed.
        if events == 3 {
            let _ = listed.send(());
        }
        if events >= 3 {
            min_available = min_available.min(live.iter().filter(|p| ready(p)).count());
            max_live = max_live.max(live.len());
        }
    }
    (min_available, max_live, events)
}

/// New pods that never become ready: Progressing=False with ProgressDeadlineExceeded, and
/// `kubectl rollout status` fails saying so.
#[test]
fn progress_deadline_exceeded_fails_rollout_status() {
    let c = Cluster::start();
    let s = &c.s;
    c.apply(&deployment("stuck", 2, Behaviour::NeverReady, "v1", json!({"progressDeadlineSeconds": 3})));
    let cond = wait_for("ProgressDeadlineExceeded", LONG, || {
        let d = s.json(&["get", "deploy", "stuck"]);
        d["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
            .filter(|c| c["reason"] == "ProgressDeadlineExceeded")
            .cloned()
    });
    assert_eq!(cond["status"], "False");
    assert!(cond["message"].as_str().unwrap_or_default().contains("has timed out progressing"), "{cond}");
    let out = s.kubectl(&["rollout", "status", "deploy/stuck", "--timeout=60s"]);
    assert!(!out.status.success(), "rollout status succeeded on a stuck deployment");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deployment \"stuck\" exceeded its progress deadline"), "{err}");
}

/// `kubectl scale` up to 10 and down to 2 converges; a pod deleted by hand is replaced.
#[test]
fn scale_up_down_and_replace_deleted_pod() {
    let c = Cluster::start();
    let s = &c.s;
    c.apply(&deployment("web", 2, Behaviour::Serve, "v1", json!({})));
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    s.ok(&["scale", "deploy/web", "--replicas=10"]);
    wait_for("10 ready pods", LONG, || {
        let pods = c.pods("app=web");
        (pods.len() == 10 && pods.iter().all(ready)).then_some(())
    });
    s.ok(&["scale", "deploy/web", "--replicas=2"]);
    wait_for("2 pods", LONG, || (c.pods("app=web").len() == 2).then_some(()));
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let victim = name(&c.pods("app=web")[0]);
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    let pods = wait_for("a replacement pod", LONG, || {
        let pods = c.pods("app=web");
        (pods.len() == 2 && pods.iter().all(|p| name(p) != victim && ready(p))).then_some(pods)
    });
    assert_eq!(pods.len(), 2);
    // It stays at two.
    let d = s.json(&["get", "deploy", "web"]);
    assert_eq!(d["status"]["replicas"], 2, "{}", d["status"]);
}

// ---- quotas and limits ------------------------------------------------------------------------

/// A `pods: 4` quota holds a 6-replica Deployment at 4 pods with the quota error in the
/// ReplicaSet's events; `kubectl edit quota` to 10 lets it reach 6 without touching it.
#[test]
fn quota_holds_deployment_until_edited() {
    let c = Cluster::start();
    let s = &c.s;
    s.ok(&["create", "namespace", "q"]);
    s.ok_stdin(
        &["apply", "-n", "q", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods-max"},
                "spec": {"hard": {"pods": "4"}}})
        .to_string(),
    );
    s.ok_stdin(&["apply", "-n", "q", "-f", "-"], &deployment("big", 6, Behaviour::Serve, "v1", json!({})).to_string());
    let count = || s.ok(&["get", "pods", "-n", "q", "-o", "name"]).lines().filter(|l| !l.is_empty()).count();
    wait_for("4 pods", LONG, || (count() == 4).then_some(()));
    let rs = s.ok(&["get", "rs", "-n", "q", "-o", "jsonpath={.items[0].metadata.name}"]);
    let described = wait_for("the quota error in the ReplicaSet's events", LONG, || {
        let d = s.ok(&["describe", "rs", "-n", "q", &rs]);
        d.contains("exceeded quota").then_some(d)
    });
    assert!(
        described.contains("exceeded quota: pods-max, requested: pods=1, used: pods=4, limited: pods=4"),
        "{described}"
    );
    assert_eq!(count(), 4, "the quota holds");

    let dir = tempfile::tempdir().expect("tmp");
    let editor = berth_testkit::write_file(
        dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i '/^spec:/,/^status:/s/pods: \"4\"/pods: \"10\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = s.kubectl_cmd(&["edit", "-n", "q", "quota", "pods-max"]).env("EDITOR", &editor).output().expect("edit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.ok(&["get", "quota", "-n", "q", "pods-max", "-o", "jsonpath={.spec.hard.pods}"]), "10");
    s.ok(&["rollout", "status", "-n", "q", "deploy/big", "--timeout=120s"]);
    assert_eq!(count(), 6);
    let d = s.json(&["get", "deploy", "-n", "q", "big"]);
    assert_eq!(d["metadata"]["generation"], 1, "the Deployment itself was not touched");
}

/// A LimitRange's defaults are filled into the pods a Deployment creates.
#[test]
fn limit_range_defaults_fill_deployment_pods() {
    // Admission alone decides this: no pods need to run.
    let s = Server::start(&["--no-node"]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
                "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"},
                                      "defaultRequest": {"cpu": "100m", "memory": "64Mi"}}]}})
        .to_string(),
    );
    s.ok_stdin(&["apply", "-f", "-"], &deployment("web", 2, Behaviour::Serve, "v1", json!({})).to_string());
    let pods = wait_for("2 pods", LONG, || {
        let list = s.json(&["get", "pods", "-l", "app=web"]);
        list["items"].as_array().filter(|i| i.len() == 2).cloned()
    });
    for p in pods {
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!((r["limits"]["cpu"].as_str(), r["limits"]["memory"].as_str()), (Some("500m"), Some("128Mi")));
        assert_eq!((r["requests"]["cpu"].as_str(), r["requests"]["memory"].as_str()), (Some("100m"), Some("64Mi")));
    }
}

// ---- Jobs and CronJobs ------------------------------------------------------------------------

fn job(name: &str, behaviour: Behaviour, spec: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": pod_template(name, behaviour, "v1", "Never")}
    });
    if let (Some(s), Some(extra)) = (j["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    j
}

fn condition(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_ && c["status"] == "True").cloned()
}

/// `completions: 3, parallelism: 2` completes with never more than two pods at once; a Job whose
/// pod always fails stops after `backoffLimit` with `Failed`/`BackoffLimitExceeded`.
#[test]
fn jobs_complete_and_fail_after_backoff_limit() {
    let c = Cluster::start();
    let s = &c.s;
    c.apply(&job("batch", Behaviour::Succeed, json!({"completions": 3, "parallelism": 2})));
    c.apply(&job("broken", Behaviour::Fail, json!({"backoffLimit": 1})));
    let mut most_active = 0;
    let done = wait_for("batch to complete", LONG, || {
        let j = s.json(&["get", "job", "batch"]);
        most_active = most_active.max(j["status"]["active"].as_u64().unwrap_or(0));
        condition(&j, "Complete").map(|_| j)
    });
    assert_eq!(done["status"]["succeeded"], 3);
    assert!(most_active <= 2, "{most_active} pods ran at once");
    s.ok(&["wait", "--for=condition=complete", "job/batch", "--timeout=10s"]);

    let failed = wait_for("broken to fail", LONG, || condition(&s.json(&["get", "job", "broken"]), "Failed"));
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    let j = s.json(&["get", "job", "broken"]);
    assert_eq!(j["status"]["failed"], 2, "one try and one retry");
    assert!(condition(&j, "Complete").is_none());
}

fn cron_job(name: &str, behaviour: Behaviour, spec: Value) -> Value {
    let mut cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": "*/1 * * * *",
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": pod_template(name, behaviour, "v1", "Never")}}
        }
    });
    if let (Some(s), Some(extra)) = (cj["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    cj
}

fn jobs_of(s: &Server, cron: &str) -> Vec<Value> {
    let list = s.json(&["get", "jobs"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|j| j["metadata"]["ownerReferences"].as_array().is_some_and(|o| o.iter().any(|r| r["name"] == cron)))
        .collect()
}

/// `*/1 * * * *` creates a Job within 70 s; with Forbid a still-running Job blocks the next run;
/// history limits prune finished Jobs.
#[test]
fn cronjob_schedules_forbids_and_prunes() {
    let c = Cluster::start();
    let s = &c.s;
    c.apply(&cron_job("forbid", Behaviour::Serve, json!({"concurrencyPolicy": "Forbid"})));
    c.apply(&cron_job("quick", Behaviour::Succeed, json!({"successfulJobsHistoryLimit": 1})));
    let started = std::time::Instant::now();
    let first = wait_for("the first scheduled Job", Duration::from_secs(70), || jobs_of(s, "forbid").pop());
    assert!(started.elapsed() <= Duration::from_secs(70));
    let first_quick = wait_for("quick's first Job to finish", Duration::from_secs(90), || {
        jobs_of(s, "quick").into_iter().find(|j| condition(j, "Complete").is_some())
    });
    // The next minute: quick runs again and its first Job is pruned; forbid's Job still runs, so
    // forbid starts nothing.
    wait_for("quick's second Job, and the first pruned", Duration::from_secs(90), || {
        let jobs = jobs_of(s, "quick");
        let names: Vec<String> = jobs.iter().map(name).collect();
        (jobs.len() == 1 && names[0] != name(&first_quick) && condition(&jobs[0], "Complete").is_some()).then_some(())
    });
    let cj = s.json(&["get", "cronjob", "forbid"]);
    let forbid_jobs = jobs_of(s, "forbid");
    assert_eq!(forbid_jobs.len(), 1, "Forbid started another Job while one ran");
    assert_eq!(name(&forbid_jobs[0]), name(&first));
    assert_eq!(cj["status"]["active"].as_array().map(Vec::len), Some(1));
    let last = cj["status"]["lastScheduleTime"].as_str().unwrap_or_default().to_owned();
    assert!(!last.is_empty());
}

// ---- StatefulSets and DaemonSets --------------------------------------------------------------

fn stateful_set(tag: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": format!("release {tag}")}},
        "spec": {
            "replicas": 3, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template("web", Behaviour::Serve, tag, "Always"),
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}]
        }
    })
}

fn rfc3339_seconds(v: &Value) -> i64 {
    v.as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok()).map_or(0, |t| t.as_second())
}

/// web-0, web-1, web-2 created in order, each after the previous one is ready, with a claim
/// each; deleting web-1 recreates the same name; `rollout status`, `history` and `undo` work.
#[test]
fn statefulset_ordered_pods_claims_and_rollout() {
    let c = Cluster::start();
    let s = &c.s;
    c.apply(&stateful_set("v1"));
    s.ok(&["rollout", "status", "sts/web", "--timeout=120s"]);
    let pods = c.pods("app=web");
    let by_name: BTreeMap<String, &Value> = pods.iter().map(|p| (name(p), p)).collect();
    assert_eq!(by_name.keys().cloned().collect::<Vec<_>>(), ["web-0", "web-1", "web-2"]);
    // Each pod was created no earlier than the previous one became ready.
    for (prev, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let ready_at = by_name[prev]["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| rfc3339_seconds(&c["lastTransitionTime"]))
            .unwrap_or(i64::MAX);
        let created = rfc3339_seconds(&by_name[next]["metadata"]["creationTimestamp"]);
        assert!(created >= ready_at, "{next} created at {created}, before {prev} was ready at {ready_at}");
    }
    let claims: BTreeSet<String> = s
        .ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"].map(String::from).into());
    if c.real {
        wait_for("claims bound", LONG, || {
            let phases = s.ok(&["get", "pvc", "-o", "jsonpath={.items[*].status.phase}"]);
            (phases.split_whitespace().filter(|p| *p == "Bound").count() == 3).then_some(())
        });
    }

    let uid = s.ok(&["get", "pod", "web-1", "-o", "jsonpath={.metadata.uid}"]);
    s.ok(&["delete", "pod", "web-1"]);
    wait_for("web-1 recreated", LONG, || {
        let p = s.kubectl(&["get", "pod", "web-1", "-o", "json"]);
        let p: Value = serde_json::from_slice(&p.stdout).ok()?;
        (p["metadata"]["uid"].as_str() != Some(uid.as_str()) && ready(&p)).then_some(())
    });

    c.apply(&stateful_set("v2"));
    s.ok(&["rollout", "status", "sts/web", "--timeout=120s"]);
    assert!(c.pods("app=web").iter().all(|p| version(p) == "v2"));
    let history = s.ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains("release v1") && history.contains("release v2"), "{history}");
    s.ok(&["rollout", "undo", "sts/web"]);
    s.ok(&["rollout", "status", "sts/web", "--timeout=120s"]);
    wait_for("v1 back on every pod", LONG, || {
        let pods = c.pods("app=web");
        (pods.len() == 3 && pods.iter().all(|p| version(p) == "v1" && ready(p))).then_some(())
    });
    let revisions = s.ok(&["get", "controllerrevisions", "-o", "jsonpath={.items[*].revision}"]);
    let mut numbers: Vec<i64> = revisions.split_whitespace().filter_map(|r| r.parse().ok()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [2, 3], "the first revision was reused as revision 3");
}

/// A DaemonSet runs one pod on the node, rolls to a new template, and `rollout status`,
/// `history` and `undo` work for it.
#[test]
fn daemonset_one_pod_per_node_and_rollout() {
    let c = Cluster::start();
    let s = &c.s;
    if !c.real {
        // No node agent registers a Node here: stand one in.
        s.ok_stdin(
            &["apply", "-f", "-"],
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "stand-in",
                    "labels": {"kubernetes.io/hostname": "stand-in"}}})
            .to_string(),
        );
    }
    let ds = |tag: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "annotations": {"kubernetes.io/change-cause": format!("agent {tag}")}},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": pod_template("agent", Behaviour::Serve, tag, "Always")}
        })
    };
    c.apply(&ds("v1"));
    s.ok(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    let nodes = s.ok(&["get", "nodes", "-o", "name"]).lines().filter(|l| !l.is_empty()).count();
    let pods = c.pods("app=agent");
    assert_eq!(pods.len(), nodes, "one daemon pod per node");
    let status = s.json(&["get", "ds", "agent"])["status"].clone();
    assert_eq!(status["desiredNumberScheduled"], nodes);
    assert_eq!(status["numberReady"], nodes);
    c.apply(&ds("v2"));
    s.ok(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    wait_for("the v2 daemon pod", LONG, || {
        let pods = c.pods("app=agent");
        (pods.len() == nodes && pods.iter().all(|p| version(p) == "v2" && ready(p))).then_some(())
    });
    let history = s.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains("agent v1") && history.contains("agent v2"), "{history}");
    s.ok(&["rollout", "undo", "ds/agent"]);
    s.ok(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    wait_for("v1 back", LONG, || {
        let pods = c.pods("app=agent");
        (pods.len() == nodes && pods.iter().all(|p| version(p) == "v1" && ready(p))).then_some(())
    });
}

// ---- restart ----------------------------------------------------------------------------------

/// Restarting `berth server` in the middle of a rollout: the rollout finishes, with exactly the
/// desired pods of the new template and never a duplicate.
#[test]
fn rollout_survives_server_restart() {
    let mut c = Cluster::start();
    let strategy =
        json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    c.apply(&deployment("web", 4, Behaviour::SlowReady, "v1", strategy.clone()));
    c.s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    c.apply(&deployment("web", 4, Behaviour::SlowReady, "v2", strategy));
    let mut most = 0;
    wait_for("the rollout under way", LONG, || {
        let pods = c.pods("app=web");
        most = most.max(pods.len());
        let new = pods.iter().filter(|p| version(p) == "v2").count();
        let old = pods.iter().filter(|p| version(p) == "v1").count();
        (new >= 1 && old >= 1).then_some(())
    });
    c.restart();
    let done = wait_for("the rollout to finish after the restart", LONG, || {
        let pods = c.pods("app=web");
        most = most.max(pods.len());
        (pods.len() == 4 && pods.iter().all(|p| version(p) == "v2" && ready(p))).then_some(pods)
    });
    c.s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(most <= 5, "{most} pods at once: more than replicas + maxSurge");
    let names: HashSet<String> = done.iter().map(name).collect();
    assert_eq!(names.len(), 4);
    let all = c.s.json(&["get", "pods", "-l", "app=web"]);
    assert_eq!(
        all["items"].as_array().map(|i| i.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count()),
        Some(4),
        "no duplicate pods"
    );
    let rs = c.s.json(&["get", "rs", "-l", "app=web"]);
    let replicas: Vec<i64> =
        rs["items"].as_array().into_iter().flatten().filter_map(|r| r["spec"]["replicas"].as_i64()).collect();
    assert_eq!(replicas.iter().sum::<i64>(), 4, "{replicas:?}");
}
