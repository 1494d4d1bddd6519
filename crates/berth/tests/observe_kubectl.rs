//! Observing pods with stock kubectl: `kubectl logs` (follow, previous, tail, since,
//! timestamps, limit, containers, workloads, rotation), `kubectl top` (metrics.k8s.io) and
//! the Prometheus endpoint. Needs root and runc; skipped with a message otherwise.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use berth_testkit::{Server, can_run_pods, wait_for};

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  containers:
  - name: main
    image: host
    command: [sh, -c, "echo started; while true; do if [ -f /tmp/say ]; then cat /tmp/say; rm /tmp/say; fi; sleep 0.1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: counter
spec:
  containers:
  - name: main
    image: host
    command: [sh, -c, "for i in $(seq 1 20); do echo n$i; done; echo to-stderr >&2; exec sleep 3600"]
  - name: side
    image: host
    command: [sh, -c, "echo from-the-sidecar; exec sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  containers:
  - name: main
    image: host
    command: [sh, -c, "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo attempt-$n; exit 1"]
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - {name: data, emptyDir: {}}
---
apiVersion: v1
kind: Pod
metadata:
  name: chatty
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: host
    command: [sh, -c, "i=0; while [ $i -lt 400 ]; do echo chatty-line-$i-padding-padding-padding; i=$((i+1)); done"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: host
        command: [sh, -c, "echo hello-from-the-deployment; exec sleep 3600"]
"#;

fn phase(s: &Server, pod: &str) -> String {
    s.json(&["get", "pod", pod])["status"]["phase"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn kubectl_logs_follows_filters_and_rotates() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&["--container-log-max-size", "4096", "--container-log-max-files", "3"]);
    s.ok_stdin(&["apply", "-f", "-"], PODS);
    for pod in ["talker", "counter"] {
        wait_for(&format!("{pod} running"), Duration::from_secs(90), || (phase(&s, pod) == "Running").then_some(()));
    }

    // -f streams lines as they are written: each line appears while kubectl keeps running.
    let mut follow = s
        .kubectl_cmd(&["logs", "-f", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no {what} from kubectl logs -f"))
    };
    assert_eq!(next_line("first line"), "started");
    for word in ["first-said", "second-said"] {
        s.ok(&["exec", "talker", "--", "sh", "-c", &format!("echo {word} > /tmp/say.new && mv /tmp/say.new /tmp/say")]);
        assert_eq!(next_line(word), word);
        assert!(follow.try_wait().expect("try_wait").is_none(), "kubectl logs -f ended early");
    }
    let _ = follow.kill();
    let _ = follow.wait();

    // kubectl attach shows the container's output from now on, as it is written.
    let mut attach = s
        .kubectl_cmd(&["attach", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let stdout = attach.stdout.take().expect("stdout");
    let (tx, attached) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Say things until one arrives (attach connects asynchronously).
    let heard = wait_for("output through kubectl attach", Duration::from_secs(30), || {
        s.ok(&["exec", "talker", "--", "sh", "-c", "echo attached-said > /tmp/say.new && mv /tmp/say.new /tmp/say"]);
        attached.recv_timeout(Duration::from_secs(2)).ok()
    });
    assert_eq!(heard, "attached-said");
    let _ = attach.kill();
    let _ = attach.wait();
    let refused = s.fails(&["attach", "-i", "talker"]);
    assert!(refused.contains("stdin"), "{refused}");

    // --tail, --timestamps, --since, --since-time, --limit-bytes, -c, --all-containers.
    wait_for("counter's output", Duration::from_secs(30), || {
        s.ok(&["logs", "counter", "-c", "main"]).contains("to-stderr").then_some(())
    });
    assert_eq!(s.ok(&["logs", "counter", "-c", "main", "--tail=3"]), "n19\nn20\nto-stderr\n");
    let stamped = s.ok(&["logs", "counter", "-c", "main", "--tail=1", "--timestamps"]);
    let (stamp, text) = stamped.trim_end().split_once(' ').expect("timestamp and text");
    assert_eq!(text, "to-stderr");
    assert!(stamp.len() >= 20 && stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
    assert!(s.ok(&["logs", "counter", "-c", "main", "--since=1h"]).starts_with("n1\nn2\n"));
    assert_eq!(s.ok(&["logs", "counter", "-c", "main", "--since-time=2099-01-01T00:00:00Z"]), "");
    wait_for("--since=1s to leave out old lines", Duration::from_secs(10), || {
        s.ok(&["logs", "counter", "-c", "main", "--since=1s"]).is_empty().then_some(())
    });
    assert_eq!(s.ok(&["logs", "counter", "-c", "main", "--limit-bytes=5"]), "n1\nn2");
    assert_eq!(s.ok(&["logs", "counter", "-c", "side"]), "from-the-sidecar\n");
    let all = s.ok(&["logs", "counter", "--all-containers"]);
    assert!(all.contains("n20\n") && all.contains("from-the-sidecar\n"), "{all}");

    // logs of a workload pick one of its pods.
    wait_for("deployment logs", Duration::from_secs(90), || {
        let out = s.kubectl(&["logs", "deploy/web"]);
        String::from_utf8_lossy(&out.stdout).contains("hello-from-the-deployment").then_some(())
    });

    // --previous shows the output of the attempt before the current one.
    let restarts = wait_for("crasher restarted", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", "crasher"]);
        pod["status"]["containerStatuses"][0]["restartCount"].as_u64().filter(|n| *n >= 1)
    });
    let previous = s.ok(&["logs", "crasher", "--previous"]);
    let last = previous.lines().last().unwrap_or_default();
    let n: u64 = last.strip_prefix("attempt-").and_then(|n| n.parse().ok()).expect(&previous);
    assert!(n >= restarts, "previous attempt printed {previous:?} with restartCount {restarts}");

    // Rotation: a log bigger than --container-log-max-size is kept in at most 3 files, the
    // newest lines readable, the oldest gone.
    wait_for("chatty done", Duration::from_secs(90), || (phase(&s, "chatty") == "Succeeded").then_some(()));
    let uid = s.json(&["get", "pod", "chatty"])["metadata"]["uid"].as_str().expect("uid").to_owned();
    let dir = s.data_path(&format!("node/pods/{uid}/main"));
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&"0.log".to_owned()) && files.len() == 3, "{files:?}");
    for f in &files {
        assert!(std::fs::metadata(dir.join(f)).expect("size").len() <= 4096, "{f} too big");
    }
    let logs = s.ok(&["logs", "chatty"]);
    assert!(logs.ends_with("chatty-line-399-padding-padding-padding\n"), "{logs}");
    assert!(!logs.contains("chatty-line-0-"), "the oldest file should be gone");
    assert_eq!(s.ok(&["logs", "chatty", "--tail=1"]), "chatty-line-399-padding-padding-padding\n");
    // A finished container's log is not followed forever.
    let done = s.kubectl_cmd(&["logs", "-f", "chatty", "--tail=1"]).output().expect("kubectl logs -f");
    assert_eq!(String::from_utf8_lossy(&done.stdout), "chatty-line-399-padding-padding-padding\n");
}

const BUSY: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: busy
  labels: {app: busy}
spec:
  containers:
  - name: spin
    image: host
    command: [sh, -c, "while :; do :; done"]
    resources:
      limits: {cpu: 200m, memory: 64Mi}
---
apiVersion: v1
kind: Pod
metadata:
  name: idle
spec:
  containers:
  - name: sleep
    image: host
    command: [sleep, "3600"]
"#;

/// Parses `kubectl top pods` rows: name, millicores, MiB.
fn top_rows(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let cpu = cols.get(1)?.strip_suffix('m')?.parse().ok()?;
            let mem = cols.get(2)?.strip_suffix("Mi")?.parse().ok()?;
            Some((cols[0].to_owned(), cpu, mem))
        })
        .collect()
}

#[test]
fn kubectl_top_and_prometheus_metrics() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    // The metrics API is discoverable, as kubectl top requires.
    let groups = s.ok(&["api-versions"]);
    assert!(groups.contains("metrics.k8s.io/v1beta1"), "{groups}");
    s.ok_stdin(&["apply", "-f", "-"], BUSY);
    for pod in ["busy", "idle"] {
        wait_for(&format!("{pod} running"), Duration::from_secs(90), || (phase(&s, pod) == "Running").then_some(()));
    }

    // Each pod shows CPU and memory; the busy loop runs near its 200m limit (a small limit, so
    // that a loaded machine still gives the loop all of it).
    let rows = wait_for("kubectl top pods with the busy loop near its limit", Duration::from_secs(90), || {
        let out = s.kubectl(&["top", "pods"]);
        let rows = top_rows(&String::from_utf8_lossy(&out.stdout));
        let busy = rows.iter().find(|r| r.0 == "busy")?;
        (rows.iter().any(|r| r.0 == "idle") && busy.1 >= 150).then_some(rows)
    });
    let busy = rows.iter().find(|r| r.0 == "busy").expect("busy row");
    assert!(busy.1 <= 260, "a 200m limit lets the loop use at most about 200m, got {}m", busy.1);
    let idle = rows.iter().find(|r| r.0 == "idle").expect("idle row");
    assert!(idle.1 < 100, "sleep uses almost no CPU, got {}m", idle.1);
    assert!(idle.2 < 64, "sleep uses little memory, got {}Mi", idle.2);

    // Per container, by label, and a single pod.
    let containers = s.ok(&["top", "pod", "busy", "--containers"]);
    assert!(containers.contains("spin"), "{containers}");
    let selected = s.ok(&["top", "pods", "-l", "app=busy"]);
    assert!(selected.contains("busy") && !selected.contains("idle"), "{selected}");
    let metrics: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy"]))
            .expect("PodMetrics JSON");
    assert_eq!(metrics["kind"], "PodMetrics");
    assert_eq!(metrics["metadata"]["labels"]["app"], "busy");
    let missing = s.fails(&["top", "pod", "nope"]);
    assert!(missing.contains("not found"), "{missing}");

    // kubectl top node: the one node with CPU and memory in use.
    let node = s.ok(&["top", "node"]);
    let row: Vec<&str> = node.lines().nth(1).expect("a node row").split_whitespace().collect();
    assert!(row.len() >= 5 && row[1].ends_with('m') && row[3].ends_with("Mi"), "{node}");

    // /metrics with the bearer token: cAdvisor's names and the API server's own counters.
    let kubeconfig = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token:"))
        .map(|t| t.trim().trim_matches('"').to_owned())
        .expect("token in kubeconfig");
    let url = format!("https://127.0.0.1:{}/metrics", s.port);
    let curl = |auth: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}", &url]);
        if auth {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        String::from_utf8_lossy(&cmd.output().expect("curl").stdout).into_owned()
    };
    assert!(curl(false).ends_with("\n401"), "/metrics needs the token");
    let text = wait_for("busy's series in /metrics", Duration::from_secs(30), || {
        let text = curl(true);
        text.contains("container_cpu_usage_seconds_total{container=\"spin\"").then_some(text)
    });
    assert!(text.ends_with("\n200"));
    for series in [
        "container_memory_working_set_bytes{container=\"spin\"",
        "container_network_receive_bytes_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"busy\"}",
        "container_fs_usage_bytes{",
        "apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\"",
        "machine_cpu_cores ",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert_eq!(text.matches("# EOF").count(), 1, "one OpenMetrics document");
    let working_set: f64 = text
        .lines()
        .find(|l| l.starts_with("container_memory_working_set_bytes{container=\"spin\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("spin's working set");
    assert!(working_set > 0.0, "the shell's memory is counted");
}
