//! Pods for real: a Deployment's replicas run as isolated containers with their own IPs,
//! serve traffic, write logs, and are replaced when deleted. Needs root (namespaces,
//! cgroups, runc); skipped with a message otherwise.

use std::time::Duration;

use berth_testkit::{Server, can_run_pods, wait_for};

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
        command: [nginx, -c, /site/nginx.conf, -g, "daemon off;"]
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        volumeMounts:
        - {name: site, mountPath: /site}
      volumes:
      - name: site
        configMap: {name: site}
"#;

fn http_get(ip: &str, port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
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
        let ready = p["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "pod not Ready: {}", p["metadata"]["name"]);
    }
    let table = s.ok(&["get", "pods", "-l", "app=web"]);
    assert_eq!(table.lines().filter(|l| l.contains("1/1") && l.contains("Running")).count(), 3, "{table}");
    for ip in &ips {
        let resp = http_get(ip, 80).unwrap_or_default();
        assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("hello from berth"), "{ip}: {resp}");
    }
    // nginx's access log reaches kubectl logs.
    let name = items[0]["metadata"]["name"].as_str().expect("name").to_owned();
    let ip = items[0]["status"]["podIP"].as_str().expect("ip").to_owned();
    let _ = http_get(&ip, 80);
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
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
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
    let phase = wait_for("pod to finish", Duration::from_secs(60), || {
        let p = s.json(&["get", "pod", "counter"]);
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_owned();
        (phase == "Failed" || phase == "Succeeded").then_some(p)
    });
    assert_eq!(phase["status"]["phase"], "Failed");
    assert_eq!(phase["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    assert_eq!(s.ok(&["logs", "counter"]), "line 1\nline 2\nline 3\n");
    assert_eq!(s.ok(&["logs", "counter", "--tail=1"]), "line 3\n");
    let table = s.ok(&["get", "pod", "counter"]);
    assert!(table.contains("Error"), "{table}");
}
