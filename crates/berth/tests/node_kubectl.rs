//! The node runtime's acceptance, through stock kubectl against a real `berth server` that
//! runs pods: replicas with their own IPs, memory limits and OOM kills, probes, volumes that
//! outlive pods, ConfigMap updates, surviving `kill -9` of the server, security contexts,
//! scheduling limits. Needs root and runc; each test is skipped with a message otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_testkit::{Server, can_run_pods, wait_for};
use serde_json::Value;

const NGINX: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: site
data:
  nginx.conf: |
    worker_processes 1;
    pid /tmp/nginx.pid;
    error_log /dev/stderr;
    events {}
    http {
      access_log /dev/stdout;
      client_body_temp_path /tmp/body;
      proxy_temp_path /tmp/proxy;
      fastcgi_temp_path /tmp/fastcgi;
      uwsgi_temp_path /tmp/uwsgi;
      scgi_temp_path /tmp/scgi;
      server {
        listen 80;
        root /site;
      }
    }
  index.html: "hello from berth\n"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: host
        command: [nginx, -g, "daemon off;"]
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        volumeMounts:
        - {name: site, mountPath: /site}
        - {name: site, mountPath: /etc/nginx/nginx.conf, subPath: nginx.conf}
      volumes:
      - name: site
        configMap: {name: site}
"#;

/// One HTTP/1.0 GET of `path` from `ip:port`, if anything answers.
fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn restarts(pod: &Value) -> i64 {
    container_status(pod)["restartCount"].as_i64().unwrap_or(0)
}

fn condition(pod: &Value, kind: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// Events about `name`, as `reason: message` lines.
fn events_of(s: &Server, name: &str) -> String {
    let events = s.json(&["get", "events", "--field-selector", &format!("involvedObject.name={name}")]);
    events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| format!("{}: {}\n", e["reason"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// A server that runs pods, with `manifest` applied; `None` (after a message) where pods
/// cannot run.
fn server_with(manifest: &str) -> Option<Server> {
    if !can_run_pods() {
        return None;
    }
    let s = Server::start(&[]);
    if !manifest.is_empty() {
        s.ok_stdin(&["apply", "-f", "-"], manifest);
    }
    Some(s)
}

fn wait_running(s: &Server, name: &str) -> Value {
    wait_for(&format!("pod {name} running"), Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", name]);
        (pod["status"]["phase"] == "Running" && container_status(&pod)["state"]["running"].is_object()).then_some(pod)
    })
}

#[test]
fn nginx_replicas_run_with_their_own_ips_and_serve() {
    if !can_run_pods() {
        return;
    }
    assert!(std::path::Path::new("/usr/sbin/nginx").exists(), "nginx is needed: run scripts/install-test-deps");
    let s = Server::start(&[]);
    s.ok_stdin(&["apply", "-f", "-"], NGINX);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let pods = s.json(&["get", "pods", "-l", "app=web"]);
    let items = pods["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let mut ips: Vec<String> = items.iter().filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "three distinct pod IPs: {ips:?}");
    for p in items {
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(condition(p, "Ready"), "True", "pod not Ready: {}", p["metadata"]["name"]);
    }
    let table = s.ok(&["get", "pods", "-l", "app=web"]);
    assert_eq!(table.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{table}");
    for ip in &ips {
        let resp = http_get(ip, 80, "/").unwrap_or_default();
        assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("hello from berth"), "{ip}: {resp}");
    }
    // nginx's access log reaches kubectl logs.
    let name = items[0]["metadata"]["name"].as_str().expect("name").to_owned();
    let ip = items[0]["status"]["podIP"].as_str().expect("ip").to_owned();
    let _ = http_get(&ip, 80, "/");
    let logs = wait_for("access log line", Duration::from_secs(20), || {
        let l = s.ok(&["logs", &name]);
        l.contains("GET / HTTP/1.0").then_some(l)
    });
    assert!(logs.contains("200"), "{logs}");

    let described = s.ok(&["describe", "pod", &name]);
    for needle in ["Scheduled", "Started", "Successfully assigned default/"] {
        assert!(described.contains(needle), "describe pod lacks {needle:?}:\n{described}");
    }
    assert!(described.lines().any(|l| l.starts_with("Status:") && l.contains("Running")), "{described}");

    // A deleted pod is replaced, and the Deployment gets back to 3 ready.
    s.ok(&["delete", "pod", &name, "--wait=true", "--timeout=60s"]);
    wait_for("replacement pod ready", Duration::from_secs(90), || {
        let d = s.json(&["get", "deploy", "web"]);
        let gone = !s.ok(&["get", "pods", "-o", "name"]).contains(&name);
        (d["status"]["readyReplicas"] == 3 && gone).then_some(())
    });
    s.ok(&["delete", "deploy", "web", "--wait=true", "--timeout=60s"]);
    wait_for("pods gone", Duration::from_secs(90), || {
        s.ok(&["get", "pods", "-o", "name"]).trim().is_empty().then_some(())
    });
}

#[test]
fn logs_of_a_finished_pod_and_its_exit_status() {
    let Some(s) = server_with("") else { return };
    s.ok(&[
        "run",
        "counter",
        "--image=host",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; done; exit 3",
    ]);
    let pod = wait_for("pod to finish", Duration::from_secs(60), || {
        let p = s.json(&["get", "pod", "counter"]);
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_owned();
        (phase == "Failed" || phase == "Succeeded").then_some(p)
    });
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(container_status(&pod)["state"]["terminated"]["exitCode"], 3);
    assert_eq!(s.ok(&["logs", "counter"]), "line 1\nline 2\nline 3\n");
    assert_eq!(s.ok(&["logs", "counter", "--tail=1"]), "line 3\n");
    let table = s.ok(&["get", "pod", "counter"]);
    assert!(table.contains("Error"), "{table}");
}

/// The container's program runs only once the pod's network is configured (the first start
/// creates the container while the network is being set up): a program that connects out at
/// its very first instruction reaches a listener on the host on its first attempt.
#[test]
fn a_program_that_connects_out_at_once_finds_the_network_ready() {
    let Some(s) = server_with("") else { return };
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a listener");
    let port = listener.local_addr().expect("its address").port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\nhello from host\n");
        }
    });
    // The host as the pod sees it: the bridge's address, the gateway of the pod range.
    let cidr = s.slot.as_ref().expect("a server with pods has a slot").pod_cidr();
    let gateway = format!("{}.1", cidr.rsplit_once('.').expect("a dotted range").0);
    let url = format!("http://{gateway}:{port}/");
    s.ok(&[
        "run",
        "caller",
        "--image=host",
        "--restart=Never",
        "--command",
        "--",
        "sh",
        "-c",
        &format!("wget -q -T 5 -O- {url} || exit 1"),
    ]);
    let pod = wait_for("the caller to finish", Duration::from_secs(60), || {
        let p = s.json(&["get", "pod", "caller"]);
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_owned();
        (phase == "Failed" || phase == "Succeeded").then_some(p)
    });
    let logs = s.ok(&["logs", "caller"]);
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}\nlogs: {logs}\nevents: {}", events_of(&s, "caller"));
    assert_eq!(restarts(&pod), 0, "{pod}");
    assert_eq!(logs, "hello from host\n");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "one request, on the first attempt");
}

/// The pod's cgroup directories left in any hierarchy (the node's default parent `/berth`).
fn pod_cgroups(uid: &str) -> Vec<std::path::PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    let mut found: Vec<std::path::PathBuf> = hierarchies
        .filter_map(Result::ok)
        .map(|h| h.path().join("berth").join(format!("pod{uid}")))
        .filter(|dir| dir.is_dir())
        .collect();
    let unified = std::path::Path::new("/sys/fs/cgroup/berth").join(format!("pod{uid}"));
    if unified.is_dir() {
        found.push(unified);
    }
    found
}

/// The OCI runtimes' state directories of the pod's containers (either runtime).
fn runtime_states(s: &Server, uid: &str) -> Vec<std::path::PathBuf> {
    ["node/run/oci", "node/run/runc"]
        .iter()
        .filter_map(|root| std::fs::read_dir(s.data_path(root)).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(uid))
        .map(|e| e.path())
        .collect()
}

/// PIDs of the processes in the pod's cgroups (its containers', not the shims').
fn pod_processes(uid: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let needle = format!("/pod{uid}");
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|text| text.contains(&needle)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A sandbox that fails after the pod's first container was created (the network is
/// configured while it is): the created container is deleted unstarted, nothing of it is
/// left, and the retry starts the pod. The failure comes from a debug-build hook (files in
/// `<data-dir>/debug/`, see `Runtime::debug_sandbox_hook`), which also holds the retry until
/// the test has looked.
#[test]
fn a_sandbox_failing_after_the_container_was_created_leaves_nothing_and_the_retry_starts() {
    let Some(s) = server_with("") else { return };
    let debug = s.data_path("node/debug");
    std::fs::create_dir_all(&debug).expect("debug hook dir");
    std::fs::write(debug.join("fail-sandbox"), "").expect("debug hook file");
    let token = "halfway-started-program";
    s.ok(&["run", "halfway", "--image=host", "--command", "--", "sh", "-c", &format!("echo {token}; exec sleep 3600")]);
    let uid = wait_for("the pod's uid", Duration::from_secs(30), || {
        s.json(&["get", "pod", "halfway"])["metadata"]["uid"].as_str().map(str::to_owned)
    });
    // The first container is created (its init waits in the pod's cgroup) while the sandbox,
    // held by the hook, is not made yet; its program has not started.
    wait_for("the container created", Duration::from_secs(60), || {
        let created = runtime_states(&s, &uid).iter().any(|dir| dir.join("state.json").exists());
        (created && !pod_processes(&uid).is_empty()).then_some(())
    });
    assert_eq!(processes_with(token), Vec::<String>::new(), "the program started before its network");
    let shim_pid = std::fs::read_to_string(s.data_path(&format!("node/run/pods/{uid}/_containers/halfway-0/shim.pid")))
        .expect("the shim's pid");
    std::fs::write(debug.join("fail-sandbox-now"), "").expect("debug hook file");
    let events = wait_for("FailedCreatePodSandBox", Duration::from_secs(60), || {
        let events = events_of(&s, "halfway");
        events.contains("FailedCreatePodSandBox").then_some(events)
    });
    assert!(events.contains("the sandbox fails as asked"), "{events}");
    // The worker reports the failure once the shim has deleted the container and exited; the
    // retry waits in the hook (before its namespaces, so before any create).
    assert!(!std::path::Path::new(&format!("/proc/{}", shim_pid.trim())).exists(), "the shim is left");
    assert_eq!(runtime_states(&s, &uid), Vec::<std::path::PathBuf>::new(), "the runtime keeps the container");
    assert_eq!(pod_processes(&uid), Vec::<String>::new(), "a container process is left");
    assert_eq!(processes_with(token), Vec::<String>::new(), "the program ran");
    assert_eq!(pod_cgroups(&uid), Vec::<std::path::PathBuf>::new(), "the pod's cgroup is left");

    // The retry starts the pod, once.
    std::fs::remove_file(debug.join("hold-sandbox")).expect("the hook held the retry");
    wait_running(&s, "halfway");
    let logs = wait_for("the program's output", Duration::from_secs(30), || {
        let logs = s.ok(&["logs", "halfway"]);
        (!logs.is_empty()).then_some(logs)
    });
    assert_eq!(logs, format!("{token}\n"));
    assert_eq!(restarts(&s.json(&["get", "pod", "halfway"])), 0);
    s.ok(&["delete", "pod", "halfway", "--wait=true", "--timeout=60s"]);
    assert_eq!(pod_cgroups(&uid), Vec::<std::path::PathBuf>::new(), "the pod's cgroup is left after deletion");
}

const INIT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: first
    image: host
    command: [sh, -c, "echo one > /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: host
    command: [sh, -c, "echo two >> /work/order"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: reader
    image: host
    command: [sh, -c, "cat /work/order; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: writer
    image: host
    command: [sh, -c, "echo three >> /work/order; exec sleep 3600"]
    volumeMounts: [{name: work, mountPath: /work}]
  volumes:
  - {name: work, emptyDir: {}}
"#;

#[test]
fn init_containers_run_in_order_before_every_container() {
    let Some(s) = server_with(INIT) else { return };
    let pod = wait_for("both containers ready", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", "staged"]);
        let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        (statuses.len() == 2 && statuses.iter().all(|c| c["ready"] == true)).then_some(pod)
    });
    let inits = pod["status"]["initContainerStatuses"].as_array().cloned().unwrap_or_default();
    assert_eq!(inits.len(), 2, "{pod}");
    for init in &inits {
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    }
    // The reader saw both init containers' lines, in order, before the writer could add one.
    let logs = wait_for("the reader's output", Duration::from_secs(20), || {
        let logs = s.ok(&["logs", "staged", "-c", "reader"]);
        (!logs.is_empty()).then_some(logs)
    });
    assert!(logs.starts_with("one\ntwo\n"), "{logs}");
    assert!(s.ok(&["get", "pod", "staged"]).contains("2/2"));
    s.ok(&["delete", "pod", "staged", "--wait=true", "--timeout=60s"]);
}

const HOG: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  containers:
  - name: hog
    image: host
    command: [python3, -c, "import sys; print('allocating', flush=True); b = bytearray(256 * 1024 * 1024); print('survived')"]
    resources:
      limits: {memory: 64Mi}
"#;

#[test]
fn memory_hog_is_oom_killed_and_backs_off_longer_each_time() {
    let Some(s) = server_with(HOG) else { return };
    // The first restart comes after 10 s of back-off, the next one waits 20 s.
    let pod = wait_for("a second OOM kill and a 20 s back-off", Duration::from_secs(120), || {
        let pod = s.json(&["get", "pod", "hog"]);
        let waiting = container_status(&pod)["state"]["waiting"]["message"].as_str().unwrap_or("").to_owned();
        (restarts(&pod) >= 1 && waiting.contains("back-off 20s")).then_some(pod)
    });
    let status = container_status(&pod);
    assert_eq!(status["state"]["waiting"]["reason"], "CrashLoopBackOff", "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "OOMKilled", "{status}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 137, "{status}");

    let described = s.ok(&["describe", "pod", "hog"]);
    let lines: Vec<&str> = described.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("Last State:") && l.ends_with("Terminated"))
        .unwrap_or_else(|| panic!("no Last State: Terminated in\n{described}"));
    let field = |name: &str| lines[at..].iter().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("");
    assert_eq!(field("Reason:"), "OOMKilled", "{described}");
    assert_eq!(field("Exit Code:"), "137", "{described}");
    let events = events_of(&s, "hog");
    assert!(events.contains("BackOff: Back-off restarting failed container hog"), "{events}");
    // The output of the killed attempt is still there.
    assert!(s.ok(&["logs", "hog", "--previous"]).contains("allocating"));
}

const PROBED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: lively
spec:
  containers:
  - name: web
    image: host
    # `;`, not `&&`: a trailing `&` would put the whole `&&` list, mkdir included, in the
    # background, racing httpd's start.
    command: [sh, -c, "mkdir -p /tmp/www; echo ok > /tmp/www/healthz; echo serving; (sleep 5; rm /tmp/www/healthz) & exec busybox httpd -f -p 8080 -h /tmp/www"]
    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
      initialDelaySeconds: 2
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata:
  name: unready
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
      periodSeconds: 1
"#;

#[test]
fn failing_liveness_restarts_and_failing_readiness_unreadies() {
    let Some(s) = server_with(PROBED) else { return };
    let pod = wait_for("a liveness restart", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", "lively"]);
        (restarts(&pod) >= 1).then_some(pod)
    });
    assert_eq!(container_status(&pod)["lastState"]["terminated"]["reason"], "Error", "{pod}");
    let events = wait_for("Unhealthy and Killing events", Duration::from_secs(30), || {
        let e = events_of(&s, "lively");
        (e.contains("Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 404")
            && e.contains("Killing: Container web failed liveness probe, will be restarted"))
        .then_some(e)
    });
    assert!(!events.contains("Readiness"), "{events}");
    let table = s.ok(&["get", "pod", "lively"]);
    let row = table.lines().nth(1).unwrap_or("");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert!(columns.get(3).is_some_and(|r| r.parse::<i64>().is_ok_and(|n| n >= 1)), "RESTARTS column: {table}");
    // The restarted container's predecessor printed its line.
    assert!(s.ok(&["logs", "lively", "--previous"]).contains("serving"));

    let unready = wait_for("readiness failures", Duration::from_secs(60), || {
        let pod = s.json(&["get", "pod", "unready"]);
        let failing = events_of(&s, "unready").contains("Unhealthy: Readiness probe failed");
        (pod["status"]["phase"] == "Running" && failing).then_some(pod)
    });
    assert_eq!(condition(&unready, "Ready"), "False", "{unready}");
    assert_eq!(condition(&unready, "ContainersReady"), "False", "{unready}");
    assert_eq!(container_status(&unready)["ready"], false);
    assert!(container_status(&unready)["state"]["running"].is_object(), "{unready}");
    let table = s.ok(&["get", "pod", "unready"]);
    assert!(table.lines().any(|l| l.contains("0/1") && l.contains("Running")), "{table}");
    // Once the probe passes, the pod turns Ready without a restart.
    s.ok(&["exec", "unready", "--", "touch", "/tmp/ready"]);
    let ready = wait_for("pod ready", Duration::from_secs(30), || {
        let pod = s.json(&["get", "pod", "unready"]);
        (condition(&pod, "Ready") == "True").then_some(pod)
    });
    assert_eq!(restarts(&ready), 0);
}

const PVC_APP: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: keeper
spec:
  replicas: 1
  selector:
    matchLabels: {app: keeper}
  template:
    metadata:
      labels: {app: keeper}
    spec:
      containers:
      - name: app
        image: host
        command: [sh, -c, "echo started by $HOSTNAME >> /data/journal; exec sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
"#;

fn keeper_pod(s: &Server, not: &str) -> String {
    wait_for("a running keeper pod", Duration::from_secs(90), || {
        let pods = s.json(&["get", "pods", "-l", "app=keeper"]);
        pods["items"].as_array()?.iter().find_map(|p| {
            let name = p["metadata"]["name"].as_str()?;
            let running = p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null();
            (name != not && running).then(|| name.to_owned())
        })
    })
}

#[test]
fn pvc_data_survives_the_pod_being_replaced() {
    let Some(s) = server_with(PVC_APP) else { return };
    let first = keeper_pod(&s, "");
    let claim = s.json(&["get", "pvc", "data"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    s.ok(&["exec", &first, "--", "sh", "-c", "echo precious > /data/file"]);
    s.ok(&["delete", "pod", &first, "--wait=true", "--timeout=60s"]);
    let second = keeper_pod(&s, &first);
    assert_ne!(first, second);
    assert_eq!(s.ok(&["exec", &second, "--", "cat", "/data/file"]), "precious\n");
    let journal = wait_for("the new pod's journal line", Duration::from_secs(30), || {
        let j = s.ok(&["exec", &second, "--", "cat", "/data/journal"]);
        j.contains(&second).then_some(j)
    });
    assert!(journal.contains(&format!("started by {first}")), "{journal}");
}

const WATCHED_CONFIG: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: first
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
  volumes:
  - name: settings
    configMap: {name: settings}
"#;

#[test]
fn configmap_update_reaches_the_running_pod_within_a_minute() {
    let Some(s) = server_with(WATCHED_CONFIG) else { return };
    wait_running(&s, "reader");
    assert_eq!(s.ok(&["exec", "reader", "--", "cat", "/etc/settings/mode"]), "first");
    s.ok(&["patch", "configmap", "settings", "-p", r#"{"data":{"mode":"second"}}"#]);
    // Upstream's bound is the sync period plus the cache's TTL; a minute here, with margin
    // for a loaded machine.
    wait_for("the updated file", Duration::from_secs(75), || {
        (s.ok(&["exec", "reader", "--", "cat", "/etc/settings/mode"]) == "second").then_some(())
    });
    let pod = s.json(&["get", "pod", "reader"]);
    assert_eq!(restarts(&pod), 0, "an update must not restart the container");
}

const SURVIVORS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: survivor
spec:
  replicas: 2
  selector:
    matchLabels: {app: survivor}
  template:
    metadata:
      labels: {app: survivor}
    spec:
      containers:
      - name: web
        image: host
        # Fails once (the emptyDir remembers), so restart counts are worth comparing.
        command: [sh, -c, "mkdir -p /tmp/www-survivor-token && echo alive > /tmp/www-survivor-token/index.html; if [ ! -e /scratch/once ]; then touch /scratch/once; echo first-run > /dev/termination-log; echo first-log; exit 1; fi; exec busybox httpd -f -p 80 -h /tmp/www-survivor-token"]
        readinessProbe:
          tcpSocket: {port: 80}
          periodSeconds: 1
        volumeMounts:
        - {name: scratch, mountPath: /scratch}
      volumes:
      - name: scratch
        emptyDir: {}
"#;

/// Processes on this machine whose command line contains `token`, as `pid: cmdline`, leaving
/// out those whose parent matches too: busybox httpd forks a copy of itself per connection
/// (probes, the test's own requests), and such a copy is not a second server.
fn processes_with(token: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let matching: BTreeMap<String, (String, String)> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let parent = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().to_owned();
            text.contains(token).then(|| (e.file_name().to_string_lossy().into_owned(), (parent, text)))
        })
        .collect();
    matching
        .iter()
        .filter(|(_, (parent, _))| !matching.contains_key(parent))
        .map(|(pid, (_, text))| format!("{pid}: {text}"))
        .collect()
}

/// name -> (uid, ip, restarts) of the survivor pods.
fn survivors(s: &Server) -> BTreeMap<String, (String, String, i64)> {
    let pods = s.json(&["get", "pods", "-l", "app=survivor"]);
    pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            let field = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (field(&p["metadata"]["name"]), (field(&p["metadata"]["uid"]), field(&p["status"]["podIP"]), restarts(p)))
        })
        .collect()
}

#[test]
fn pods_outlive_kill_9_of_the_server_and_are_adopted() {
    let Some(mut s) = server_with("") else { return };
    // The port makes the servers' command lines this test's own.
    let token = format!("/tmp/www-survivor-{}", s.port);
    s.ok_stdin(&["apply", "-f", "-"], &SURVIVORS.replace("/tmp/www-survivor-token", &token));
    s.ok(&["rollout", "status", "deploy/survivor", "--timeout=120s"]);
    let before = survivors(&s);
    assert_eq!(before.len(), 2);
    assert!(before.values().all(|(_, ip, restarts)| !ip.is_empty() && *restarts == 1), "{before:?}");
    let servers = processes_with(&format!("-h {token}"));
    assert_eq!(servers.len(), 2, "{servers:?}");

    // The pods' run-time state (bundles) is on the node's run tmpfs, logs stay on disk.
    let run_dir = s.data_dir.join("node/run");
    assert_eq!(mounts_at(&run_dir), ["tmpfs"], "the run directory is one tmpfs");
    for (uid, _, _) in before.values() {
        let bundle = run_dir.join(format!("pods/{uid}/_containers/web-1/config.json"));
        assert!(bundle.is_file(), "{} missing", bundle.display());
        assert!(!s.data_dir.join(format!("node/pods/{uid}/_containers")).exists(), "no bundle on disk");
        assert!(s.data_dir.join(format!("node/pods/{uid}/web/0.log")).is_file(), "logs stay on disk");
    }

    s.kill9();
    for (name, (_, ip, _)) in &before {
        let answer = http_get(ip, 80, "/").unwrap_or_default();
        assert!(answer.contains("alive"), "{name} stopped serving without the server: {answer}");
    }
    s.spawn();
    // A pod created after the restart runs only once the agent has its initial list, so
    // when it runs, adoption is done.
    s.ok(&["run", "after", "--image=host", "--command", "--", "sleep", "3600"]);
    wait_running(&s, "after");
    assert_eq!(mounts_at(&run_dir), ["tmpfs"], "the restarted server adopted the tmpfs, not mounted another");
    let after = survivors(&s);
    assert_eq!(before, after, "same pods, UIDs, IPs and restart counts");
    for name in before.keys() {
        let pod = s.json(&["get", "pod", name]);
        assert_eq!(condition(&pod, "Ready"), "True", "{pod}");
        // The first attempt's termination message (run state) and log (disk) are still found.
        let last = &container_status(&pod)["lastState"]["terminated"];
        assert_eq!(last["message"].as_str().map(str::trim), Some("first-run"), "{pod}");
        assert_eq!(s.ok(&["logs", name, "--previous"]).trim(), "first-log");
    }
    for (_, ip, _) in before.values() {
        assert!(http_get(ip, 80, "/").unwrap_or_default().contains("alive"));
    }
    let servers = processes_with(&format!("-h {token}"));
    assert_eq!(servers.len(), 2, "a container started twice: {servers:#?}");
    // One shim per running container: two survivors and the new pod.
    let shims = processes_with(&format!("{}/node/run/pods/", s.data_dir.display()));
    assert_eq!(shims.len(), 3, "shims of this server: {shims:#?}");
    let name = before.keys().next().expect("a survivor");
    assert_eq!(s.ok(&["exec", name, "--", "cat", "/scratch/once"]), "");
}

/// After a reboot the run tmpfs is empty and no container runs, but logs remain: the pod
/// starts again with its restart count continued and its earlier log kept.
#[test]
fn after_a_reboot_pods_start_again_and_keep_their_logs() {
    let Some(mut s) = server_with(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: rebooted
spec:
  containers:
  - name: app
    image: host
    command: [sh, -c, "echo started; exec sleep 3600"]
"#,
    ) else {
        return;
    };
    wait_running(&s, "rebooted");
    wait_for("the first log line", Duration::from_secs(30), || {
        s.ok(&["logs", "rebooted"]).contains("started").then_some(())
    });
    s.kill9();
    s.reboot_pods();
    assert!(mounts_at(&s.data_dir.join("node/run")).is_empty(), "the run tmpfs is gone");
    s.spawn();
    let pod = wait_for("the pod to run again", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", "rebooted"]);
        (restarts(&pod) >= 1 && container_status(&pod)["state"]["running"].is_object()).then_some(pod)
    });
    assert_eq!(mounts_at(&s.data_dir.join("node/run")), ["tmpfs"], "a new run tmpfs");
    assert_eq!(restarts(&pod), 1, "{pod}");
    assert_eq!(s.ok(&["logs", "rebooted", "--previous"]).trim(), "started");
    wait_for("the new attempt's log", Duration::from_secs(30), || {
        (s.ok(&["logs", "rebooted"]).trim() == "started").then_some(())
    });
}

/// File system types of the mounts exactly at `dir`, from this process's mount table.
fn mounts_at(dir: &std::path::Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            (std::path::Path::new(point) == dir).then(|| fields.get(separator + 1).map(|t| (*t).to_owned()))?
        })
        .collect()
}

/// A server of the previous data-dir layout (sandboxes, bundles and OCI state on disk, in
/// `pods/<uid>/` and `oci/`) is replaced in place by this one while its pods run: they are
/// adopted where they are, keep their addresses, and are removed from both places. Needs
/// `BERTH_PREVIOUS_BINARY`, a `berth` built before the run directory (main before it).
#[test]
fn pods_of_the_previous_layout_are_adopted_after_an_upgrade() {
    let Some(previous) = std::env::var_os("BERTH_PREVIOUS_BINARY").map(std::path::PathBuf::from) else {
        eprintln!("skipped: set BERTH_PREVIOUS_BINARY to a berth binary of the previous layout");
        return;
    };
    if !can_run_pods() {
        return;
    }
    let mut s = Server::start_with(previous, &[]);
    let token = format!("/tmp/www-survivor-{}", s.port);
    s.ok_stdin(&["apply", "-f", "-"], &SURVIVORS.replace("/tmp/www-survivor-token", &token));
    s.ok(&["rollout", "status", "deploy/survivor", "--timeout=120s"]);
    let before = survivors(&s);
    assert_eq!(before.len(), 2);
    let node = s.data_dir.join("node");
    for (uid, _, _) in before.values() {
        assert!(node.join(format!("pods/{uid}/_containers/web-1/config.json")).is_file(), "previous layout");
    }
    assert!(!node.join("run").exists(), "the previous binary has no run directory");

    s.kill9();
    s.set_binary(berth_testkit::berth_binary());
    s.spawn();
    s.ok(&["run", "after", "--image=host", "--command", "--", "sleep", "3600"]);
    let fresh = wait_running(&s, "after");
    assert_eq!(mounts_at(&node.join("run")), ["tmpfs"]);
    let after = survivors(&s);
    assert_eq!(before, after, "same pods, UIDs, IPs and restart counts");
    let fresh_ip = fresh["status"]["podIP"].as_str().unwrap_or_default();
    assert!(before.values().all(|(_, ip, _)| ip != fresh_ip), "an old pod's address was handed out again");
    let servers = processes_with(&format!("-h {token}"));
    assert_eq!(servers.len(), 2, "a container started twice: {servers:#?}");
    for name in before.keys() {
        let pod = s.json(&["get", "pod", name]);
        assert_eq!(condition(&pod, "Ready"), "True", "{pod}");
        assert_eq!(s.ok(&["logs", name, "--previous"]).trim(), "first-log");
        // exec reaches a container whose OCI state is at the old place.
        assert_eq!(s.ok(&["exec", name, "--", "cat", "/scratch/once"]), "");
    }

    // A container of the old layout that dies is restarted by the new server (in the new place).
    let (name, (uid, _, _)) = before.iter().next().expect("a survivor");
    let server = processes_with(&format!("-h {token}"))
        .into_iter()
        .filter_map(|line| line.split(':').next().map(str::to_owned))
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(uid.as_str())))
        .expect("the pod's server process");
    assert!(std::process::Command::new("kill").args(["-KILL", &server]).status().expect("kill").success());
    wait_for("the old container restarted", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", name]);
        (restarts(&pod) == 2 && condition(&pod, "Ready") == "True").then_some(())
    });
    assert!(node.join(format!("run/pods/{uid}/_containers/web-2/config.json")).is_file());

    // Deleting the pods removes both places.
    s.ok(&["delete", "deploy", "survivor", "--wait=true", "--timeout=60s"]);
    wait_for("survivor pods gone", Duration::from_secs(60), || survivors(&s).is_empty().then_some(()));
    for (uid, _, _) in before.values() {
        wait_for("pod directories removed", Duration::from_secs(30), || {
            let gone = !node.join(format!("pods/{uid}")).exists() && !node.join(format!("run/pods/{uid}")).exists();
            gone.then_some(())
        });
    }
    assert!(processes_with(&format!("-h {token}")).is_empty(), "old containers stopped");
}

const RESTRICTED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: restricted
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 1000
  containers:
  - name: app
    image: host
    command: [sh, -c, "id -u; id -g; touch /written && echo root-writable; touch /tmp/x && echo tmp-writable; true"]
    securityContext:
      readOnlyRootFilesystem: true
"#;

#[test]
fn run_as_user_and_read_only_root_filesystem() {
    let Some(s) = server_with(RESTRICTED) else { return };
    wait_for("pod to finish", Duration::from_secs(60), || {
        let p = s.json(&["get", "pod", "restricted"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    let logs = s.ok(&["logs", "restricted"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.first(), Some(&"1000"), "{logs}");
    // With no runAsGroup, the group is the user's primary one (0 when /etc/passwd lacks it).
    assert!(lines.get(1).is_some_and(|g| g.parse::<u32>().is_ok()), "{logs}");
    assert!(logs.contains("Read-only file system"), "{logs}");
    assert!(!logs.contains("root-writable") && !logs.contains("tmp-writable"), "{logs}");
}

/// A plain HTTP server on the host that answers 200 to anything and keeps each request's
/// head: probes and hooks with `host: 127.0.0.1` are made by the node, so they land here.
struct Recorder {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().expect("lock").push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            }
        });
        Recorder { port, requests }
    }

    fn saw(&self, request_line: &str) -> Option<String> {
        self.requests.lock().expect("lock").iter().find(|r| r.starts_with(request_line)).cloned()
    }
}

const GRPC_HEALTH: &str = r#"
import concurrent.futures, grpc
def check(request, context):
    service = request[2:].decode() if request else ""
    return b"\x08\x02" if service == "down" else b"\x08\x01"
handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
    "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=bytes, response_serializer=bytes)})
server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("0.0.0.0:50051")
server.start()
print("serving", flush=True)
server.wait_for_termination()
"#;

#[test]
fn https_header_grpc_and_startup_probes() {
    if !can_run_pods() {
        return;
    }
    let grpc = std::process::Command::new("/usr/bin/python3").args(["-c", "import grpc"]).status();
    assert!(grpc.is_ok_and(|s| s.success()), "python3-grpcio is needed: run scripts/install-test-deps");
    let s = Server::start(&[]);
    let recorder = Recorder::start();
    // HTTPS without verification (the API server's own self-signed /healthz), and headers.
    let https = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: secure
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    readinessProbe:
      httpGet: {{scheme: HTTPS, host: 127.0.0.1, port: {api}, path: /healthz}}
      periodSeconds: 1
    livenessProbe:
      httpGet:
        host: 127.0.0.1
        port: {recorder}
        path: /alive
        httpHeaders: [{{name: X-Probe, value: berth}}]
      periodSeconds: 1
"#,
        api = s.port,
        recorder = recorder.port
    );
    s.ok_stdin(&["apply", "-f", "-"], &https);
    let mut grpc_pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "grpc"},
        "spec": {"containers": [{
            "name": "app", "image": "host", "command": ["python3", "-c", GRPC_HEALTH],
            "readinessProbe": {"grpc": {"port": 50051}, "periodSeconds": 1},
            "livenessProbe": {"grpc": {"port": 50051, "service": "down"}, "periodSeconds": 1, "failureThreshold": 1000},
        }]},
    });
    s.ok_stdin(&["apply", "-f", "-"], &grpc_pod.to_string());
    let slow = r#"apiVersion: v1
kind: Pod
metadata:
  name: never-started
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    startupProbe:
      exec: {command: [cat, /tmp/started]}
      periodSeconds: 1
      failureThreshold: 3
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
"#;
    s.ok_stdin(&["apply", "-f", "-"], slow);

    wait_for("HTTPS readiness", Duration::from_secs(60), || {
        (condition(&s.json(&["get", "pod", "secure"]), "Ready") == "True").then_some(())
    });
    let head = wait_for("a liveness request", Duration::from_secs(30), || recorder.saw("GET /alive HTTP/1.1"));
    assert!(head.contains("X-Probe: berth\r\n") && head.contains("User-Agent: kube-probe/"), "{head}");
    assert_eq!(restarts(&s.json(&["get", "pod", "secure"])), 0);

    wait_for("gRPC readiness", Duration::from_secs(60), || {
        (condition(&s.json(&["get", "pod", "grpc"]), "Ready") == "True").then_some(())
    });
    wait_for("a NOT_SERVING liveness answer", Duration::from_secs(30), || {
        events_of(&s, "grpc")
            .contains(r#"Unhealthy: Liveness probe failed: service unhealthy (responded with "NOT_SERVING")"#)
            .then_some(())
    });
    grpc_pod["metadata"]["name"] = "grpc-elsewhere".into();
    grpc_pod["spec"]["containers"][0]["command"] = serde_json::json!(["sleep", "3600"]);
    grpc_pod["spec"]["containers"][0]["livenessProbe"] = Value::Null;
    s.ok_stdin(&["apply", "-f", "-"], &grpc_pod.to_string());
    wait_for("a failed gRPC connection", Duration::from_secs(60), || {
        let e = events_of(&s, "grpc-elsewhere");
        e.contains("Unhealthy: Readiness probe failed: timeout: failed to connect service").then_some(())
    });

    // Not started: not ready either, whatever the readiness probe says; then restarted.
    let pod = s.json(&["get", "pod", "never-started"]);
    if restarts(&pod) == 0 && container_status(&pod)["state"]["running"].is_object() {
        assert_eq!(container_status(&pod)["started"], false, "{pod}");
        assert_eq!(condition(&pod, "Ready"), "False", "{pod}");
    }
    wait_for("a startup probe restart", Duration::from_secs(60), || {
        (restarts(&s.json(&["get", "pod", "never-started"])) >= 1).then_some(())
    });
    let events = events_of(&s, "never-started");
    assert!(
        events.contains("Unhealthy: Startup probe failed: cat: /tmp/started: No such file or directory"),
        "{events}"
    );
    assert!(events.contains("Killing: Container app failed startup probe, will be restarted"), "{events}");
}

#[test]
fn lifecycle_hooks_and_termination_messages() {
    let Some(s) = server_with("") else { return };
    let recorder = Recorder::start();
    let pods = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo from-hook > /tmp/hook"]}}
      preStop:
        httpGet: {{host: 127.0.0.1, port: {port}, path: /prestop}}
---
apiVersion: v1
kind: Pod
metadata:
  name: announced
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        httpGet: {{host: 127.0.0.1, port: {port}, path: /poststart}}
---
apiVersion: v1
kind: Pod
metadata:
  name: bad-hook
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        exec: {{command: ["false"]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: farewell
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: host
    command: [sh, -c, "echo goodbye > /dev/termination-log; exit 2"]
---
apiVersion: v1
kind: Pod
metadata:
  name: last-words
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: host
    command: [sh, -c, "echo something broke; exit 1"]
    terminationMessagePolicy: FallbackToLogsOnError
"#,
        port = recorder.port
    );
    s.ok_stdin(&["apply", "-f", "-"], &pods);

    // Running is reported only after the postStart hook completed.
    wait_running(&s, "hooked");
    assert_eq!(s.ok(&["exec", "hooked", "--", "cat", "/tmp/hook"]), "from-hook\n");
    wait_running(&s, "announced");
    assert!(recorder.saw("GET /poststart HTTP/1.1").is_some());

    wait_for("a failed postStart hook", Duration::from_secs(60), || {
        let pod = s.json(&["get", "pod", "bad-hook"]);
        (restarts(&pod) >= 1 && events_of(&s, "bad-hook").contains("FailedPostStartHook: PostStartHook failed"))
            .then_some(())
    });

    let terminated = |name: &str| {
        wait_for(&format!("{name} to end"), Duration::from_secs(60), || {
            let pod = s.json(&["get", "pod", name]);
            let t = container_status(&pod)["state"]["terminated"].clone();
            t.is_object().then_some(t)
        })
    };
    let farewell = terminated("farewell");
    assert_eq!((farewell["exitCode"].as_i64(), farewell["message"].as_str()), (Some(2), Some("goodbye\n")));
    let last_words = terminated("last-words");
    assert_eq!(last_words["message"], "something broke\n", "{last_words}");

    s.ok(&["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    assert!(recorder.saw("GET /prestop HTTP/1.1").is_some(), "the preStop hook ran before the pod went");
}

#[test]
fn max_pods_and_allocatable_leave_pods_pending_with_failed_scheduling() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&["--max-pods", "2"]);
    let node = wait_for("the node registered", Duration::from_secs(30), || {
        let nodes = s.json(&["get", "nodes"]);
        nodes["items"].as_array().is_some_and(|items| !items.is_empty()).then_some(nodes)
    });
    assert_eq!(node["items"][0]["status"]["allocatable"]["pods"], "2", "{node}");
    for name in ["one", "two", "three"] {
        s.ok(&["run", name, "--image=host", "--command", "--", "sleep", "3600"]);
    }
    let pending = wait_for("the third pod refused", Duration::from_secs(60), || {
        let pods = s.json(&["get", "pods"]);
        let items = pods["items"].as_array()?.clone();
        let scheduled = items.iter().filter(|p| condition(p, "PodScheduled") == "True").count();
        let refused: Vec<Value> = items.into_iter().filter(|p| condition(p, "PodScheduled") == "False").collect();
        (scheduled == 2 && refused.len() == 1).then(|| refused[0].clone())
    });
    let name = pending["metadata"]["name"].as_str().expect("name").to_owned();
    assert_eq!(pending["status"]["phase"], "Pending");
    let events = events_of(&s, &name);
    assert!(events.contains("FailedScheduling: 0/1 nodes are available: 1 Too many pods."), "{events}");
    let described = s.ok(&["describe", "pod", &name]);
    assert!(described.contains("FailedScheduling"), "{described}");

    // Room again: the pending pod is bound and runs.
    let running = ["one", "two", "three"].into_iter().find(|n| *n != name).expect("another pod");
    s.ok(&["delete", "pod", running, "--wait=true", "--timeout=60s"]);
    wait_running(&s, &name);

    // More CPU than the node has: pending with the scheduler's reason.
    s.ok(&["delete", "pod", "--all", "--wait=true", "--timeout=60s"]);
    let greedy = r#"apiVersion: v1
kind: Pod
metadata:
  name: greedy
spec:
  containers:
  - name: app
    image: host
    command: [sleep, "3600"]
    resources:
      requests: {cpu: "500", memory: 1Mi}
"#;
    s.ok_stdin(&["apply", "-f", "-"], greedy);
    wait_for("Insufficient cpu", Duration::from_secs(30), || {
        events_of(&s, "greedy").contains("FailedScheduling: 0/1 nodes are available: 1 Insufficient cpu.").then_some(())
    });
    // Bound by its author past the scheduler: kubelet admission rejects it.
    let node_name = node["items"][0]["metadata"]["name"].as_str().expect("node name");
    let bound =
        greedy.replace("name: greedy", "name: bound").replace("spec:\n", &format!("spec:\n  nodeName: {node_name}\n"));
    s.ok_stdin(&["apply", "-f", "-"], &bound);
    let rejected = wait_for("admission rejection", Duration::from_secs(30), || {
        let pod = s.json(&["get", "pod", "bound"]);
        (pod["status"]["phase"] == "Failed").then_some(pod)
    });
    assert_eq!(rejected["status"]["reason"], "OutOfcpu", "{rejected}");
}

#[test]
fn without_root_the_node_says_what_is_missing_and_runs_nothing() {
    if !berth_testkit::is_root() {
        eprintln!("skipping: needs root to start a server as another user");
        return;
    }
    // The same binary, as user nobody: a real machine where isolation is unavailable.
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let data = tmp.path().join("data");
    let port = berth_testkit::free_port();
    let stderr_path = tmp.path().join("stderr");
    /// Kills the server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(berth_testkit::berth_binary())
        .args(["server", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Ports under 1024 need root; the router is not what this test is about.
        .args(["--http-listen", "off", "--https-listen", "off"])
        .env("BERTH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start berth server as nobody");
    let _server = Kill(server);
    let kubeconfig = data.join("kubeconfig");
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", tmp.path().join("cache"))
            .output()
            .expect("kubectl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let node = wait_for("the node registered", Duration::from_secs(60), || {
        let (ok, out) = kubectl(&["get", "nodes", "-o", "json"]);
        let nodes: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        nodes["items"].as_array().and_then(|items| items.first().cloned())
    });
    let taints = node["spec"]["taints"].to_string();
    assert!(taints.contains("node.berth.dev/isolation-unavailable") && taints.contains("NoSchedule"), "{taints}");
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("Ready condition");
    assert_eq!(ready["status"], "False", "{ready}");
    assert!(ready["message"].as_str().unwrap_or("").contains("root"), "{ready}");
    let logged = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(logged.contains("cannot isolate pods, missing root: berth server runs as uid 65534"), "{logged}");

    assert!(kubectl(&["run", "web", "--image=host", "--command", "--", "sleep", "3600"]).0);
    let events = wait_for("FailedScheduling", Duration::from_secs(30), || {
        let (_, out) = kubectl(&["get", "events", "--field-selector", "involvedObject.name=web", "-o", "json"]);
        out.contains("FailedScheduling").then_some(out)
    });
    assert!(events.contains("untolerated taint {node.berth.dev/isolation-unavailable: }"), "{events}");
    let (_, pod) = kubectl(&["get", "pod", "web", "-o", "json"]);
    let pod: Value = serde_json::from_str(&pod).expect("pod");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
}

/// Another program's network on the pod range (podman's default bridge is the common case):
/// the node says which interface holds it and runs nothing, rather than starting pods that
/// nobody can reach.
#[test]
fn a_pod_range_routed_elsewhere_keeps_the_node_not_ready() {
    if !can_run_pods() {
        eprintln!("skipping: needs root, runc and cgroups");
        return;
    }
    let mut server = Server::start(&[]);
    let slot = server.slot.as_ref().expect("a server that runs pods has a slot");
    let (index, gateway) = (slot.index, slot.pod_cidr().replace(".0/", ".1/"));
    assert!(server.stop(), "the server stops cleanly");

    /// Deletes the other program's bridge however the test ends.
    struct Link(String);
    impl Drop for Link {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let other = Link(format!("bxo{index}"));
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip").args(args).status().expect("ip");
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["link", "add", &other.0, "type", "bridge"]);
    ip(&["addr", "add", &gateway, "dev", &other.0]);
    ip(&["link", "set", &other.0, "up"]);

    server.spawn();
    let ready = wait_for("the node to say its pod range is taken", Duration::from_secs(60), || {
        let node = server.json(&["get", "nodes", "-o", "json"]);
        let ready = node["items"][0]["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())?;
        ready["message"].as_str().is_some_and(|m| m.contains(other.0.as_str())).then_some(ready)
    });
    assert_eq!(ready["status"], "False", "{ready}");
    assert!(ready["message"].as_str().unwrap_or("").contains("--pod-cidr"), "{ready}");
    let taints = server.json(&["get", "nodes", "-o", "json"])["items"][0]["spec"]["taints"].to_string();
    assert!(taints.contains("node.berth.dev/isolation-unavailable"), "{taints}");
}
