//! The HTTP router end to end: Routes with generated URLs, blue/green by Service selector,
//! Ingress hosts, paths and TLS, weighted and sticky backends, and zero-error rolling
//! updates under load. Tests that run pods need root and skip with a message otherwise.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use berth_testkit::{Server, can_run_pods, free_port, wait_for};

/// An nginx Deployment (Debian's nginx, `image: host`) serving `page` from a ConfigMap and
/// naming the pod that answered in `X-Served-By`.
fn nginx_app(name: &str, labels: &str, replicas: u32, page: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-site
data:
  nginx.conf: |
    worker_processes 1;
    pid /tmp/nginx.pid;
    error_log /dev/stderr;
    events {{}}
    http {{
      access_log off;
      client_body_temp_path /tmp/body;
      proxy_temp_path /tmp/proxy;
      fastcgi_temp_path /tmp/fastcgi;
      uwsgi_temp_path /tmp/uwsgi;
      scgi_temp_path /tmp/scgi;
      server {{
        listen 80;
        root /site;
        add_header X-Served-By $hostname always;
        add_header X-Saw-Forwarded "$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host" always;
      }}
    }}
  index.html: "{page}\n"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {labels}
  template:
    metadata:
      labels: {labels}
    spec:
      containers:
      - name: nginx
        image: host
        command: [nginx, -c, /site/nginx.conf, -g, "daemon off;"]
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet: {{path: /, port: 80}}
          periodSeconds: 1
        volumeMounts:
        - {{name: site, mountPath: /site}}
      volumes:
      - name: site
        configMap: {{name: {name}-site}}
"#
    )
}

fn service(name: &str, selector: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {selector}\n  ports:\n  - port: 80\n    targetPort: 80\n"
    )
}

/// One HTTP/1.1 response, read to the end.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` with `Host: host` to the router on 127.0.0.1:port, with extra header lines.
fn get(port: u16, host: &str, path: &str, extra: &str) -> Option<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // nginx answers small pages with Content-Length; the router's pages too.
    Some(Reply { status, head: head.to_owned(), body: body.to_owned() })
}

fn router_server(http: u16) -> Server {
    Server::start(&["--http-listen", &format!("127.0.0.1:{http}"), "--route-suffix", "test.invalid"])
}

fn route(name: &str, spec: &str) -> String {
    format!("apiVersion: berth.dev/v1\nkind: Route\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// Waits until the Route's URL is in its status and returns `status.hosts`.
fn route_hosts(s: &Server, name: &str) -> Vec<String> {
    wait_for("Route status", Duration::from_secs(30), || {
        let r = s.json(&["get", "route", name]);
        r["status"]["url"].as_str()?;
        let hosts: Vec<String> =
            r["status"]["hosts"].as_array()?.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect();
        (!hosts.is_empty()).then_some(hosts)
    })
}

fn pod_ips(s: &Server, selector: &str) -> Vec<String> {
    let pods = s.json(&["get", "pods", "-l", selector]);
    let mut ips: Vec<String> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
        .collect();
    ips.sort();
    ips
}

/// The ready addresses of the Service's EndpointSlices.
fn slice_ips(s: &Server, svc: &str) -> Vec<String> {
    let slices = s.json(&["get", "endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")]);
    let mut ips: Vec<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] != false)
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    ips.sort();
    ips
}

#[test]
fn routes_get_urls_printed_by_kubectl_and_honest_error_pages() {
    // No pods needed: a Service without endpoints.
    let http = free_port();
    let s = Server::start(&[
        "--no-node",
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--route-suffix",
        "10.1.2.3.nip.io",
    ]);
    s.ok_stdin(&["apply", "-f", "-"], &service("shop", "{app: shop}"));
    s.ok_stdin(&["apply", "-f", "-"], &route("shop", "  to: {name: shop}\n"));
    s.ok_stdin(&["apply", "-f", "-"], &route("brand", "  host: www.example.test\n  to: {name: shop}\n"));
    let hosts = route_hosts(&s, "shop");
    assert_eq!(hosts, ["shop-default.10.1.2.3.nip.io", "shop-default.localhost"]);
    assert_eq!(route_hosts(&s, "brand"), ["www.example.test"]);
    let table = s.ok(&["get", "routes"]);
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "HOST", "URL", "SERVICES", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains(&format!("http://shop-default.10.1.2.3.nip.io:{http}")), "{table}");
    assert!(table.contains(&format!("http://www.example.test:{http}")), "{table}");
    let wide = s.ok(&["get", "routes", "-o", "wide"]);
    assert!(wide.contains(&format!("http://shop-default.localhost:{http}")), "{wide}");

    // A route whose Service has no ready endpoints: 503 naming it.
    let r = wait_for("503 from the router", Duration::from_secs(20), || {
        get(http, "shop-default.localhost", "/", "").filter(|r| r.status == 503)
    });
    assert!(r.body.contains("default/shop"), "{}", r.body);
    // No route: 404 that names nothing.
    let r = get(http, "nobody.example.test", "/", "").expect("answer");
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("shop") && !r.body.contains("default"), "{}", r.body);

    // The IngressClass is there and default.
    let class = s.json(&["get", "ingressclass", "berth"]);
    assert_eq!(class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "true");
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 that answers every request with `name` and
/// counts the requests it got.
fn counting_upstream(name: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else { return };
                let mut lines = BufReader::new(conn).lines();
                while let Some(Ok(line)) = lines.next() {
                    // The end of a request's head (the router sends these GETs without a body).
                    if line.is_empty() {
                        count.fetch_add(1, Ordering::SeqCst);
                        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
                        if out.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, served)
}

/// One request on an open keep-alive connection to the router; the body.
fn get_on(conn: &mut BufReader<TcpStream>, host: &str) -> String {
    write!(conn.get_mut(), "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("send");
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("response head");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().expect("Content-Length");
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).expect("response body");
    String::from_utf8_lossy(&body).into_owned()
}

fn manual_slice(service: &str, name: &str, port: u16) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
    )
}

#[test]
fn keep_alive_client_leaves_a_removed_endpoint() {
    // No pods needed: a Service without selector and hand-written EndpointSlices.
    let (port_a, _) = counting_upstream("a");
    let (port_b, served_b) = counting_upstream("b");
    let http = free_port();
    let s = Server::start(&["--no-node", "--http-listen", &format!("127.0.0.1:{http}")]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: keep\nspec:\n  ports:\n  - port: 80\n",
    );
    s.ok_stdin(&["apply", "-f", "-"], &manual_slice("keep", "keep-a", port_a));
    s.ok_stdin(&["apply", "-f", "-"], &manual_slice("keep", "keep-b", port_b));
    s.ok_stdin(&["apply", "-f", "-"], &route("keep", "  to: {name: keep}\n"));
    let host = "keep-default.localhost";

    // One client connection whose requests went to both endpoints (so it holds an upstream
    // connection to each).
    let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", http)).expect("connect"));
    conn.get_mut().set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    wait_for("both endpoints routed", Duration::from_secs(30), || {
        let bodies: Vec<String> = (0..4).filter_map(|_| get(http, host, "/", "")).map(|r| r.body).collect();
        (bodies.iter().any(|b| b == "a") && bodies.iter().any(|b| b == "b")).then_some(())
    });
    let mut seen: Vec<String> = (0..6).map(|_| get_on(&mut conn, host)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"], "requests on one connection spread over both endpoints");

    s.ok(&["delete", "endpointslice", "keep-b"]);
    wait_for("the router to drop endpoint b", Duration::from_secs(20), || {
        (0..6).all(|_| get(http, host, "/", "").is_some_and(|r| r.body == "a")).then_some(())
    });
    let before = served_b.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(get_on(&mut conn, host), "a", "the kept connection's next requests go to the remaining endpoint");
    }
    assert_eq!(served_b.load(Ordering::SeqCst), before, "the removed endpoint got no request");
}

#[test]
fn blue_green_by_service_selector() {
    if !can_run_pods() {
        return;
    }
    let http = free_port();
    let s = router_server(http);
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("blue", "{app: webserver, version: blue}", 3, "blue"));
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("green", "{app: webserver, version: green}", 3, "green"));
    s.ok_stdin(&["apply", "-f", "-"], &service("webserver", "{app: webserver}"));
    s.ok_stdin(&["apply", "-f", "-"], &route("webserver", "  to: {name: webserver}\n"));
    s.ok(&["rollout", "status", "deploy/blue", "--timeout=120s"]);
    s.ok(&["rollout", "status", "deploy/green", "--timeout=120s"]);
    let hosts = route_hosts(&s, "webserver");
    let host = hosts.iter().find(|h| h.ends_with(".localhost")).expect("a .localhost host").clone();
    assert_eq!(host, "webserver-default.localhost");
    let all = pod_ips(&s, "app=webserver");
    assert_eq!(all.len(), 6);
    wait_for("all six pods in the Service", Duration::from_secs(30), || {
        (slice_ips(&s, "webserver") == all).then_some(())
    });

    let colours = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                let r = get(http, &host, "/", "").expect("router answers");
                assert_eq!(r.status, 200, "{}", r.body);
                r.body.trim().to_owned()
            })
            .collect()
    };
    // The router may learn of the last endpoints a moment after kubectl does.
    wait_for("both colours", Duration::from_secs(10), || {
        let seen = colours(30);
        (seen.iter().any(|c| c == "blue") && seen.iter().any(|c| c == "green")).then_some(())
    });
    let seen = colours(30);
    assert!(seen.iter().any(|c| c == "blue") && seen.iter().any(|c| c == "green"), "{seen:?}");

    for colour in ["blue", "green"] {
        let patch = format!(r#"{{"spec":{{"selector":{{"app":"webserver","version":"{colour}"}}}}}}"#);
        s.ok(&["patch", "svc", "webserver", "-p", &patch]);
        let wanted = pod_ips(&s, &format!("version={colour}"));
        wait_for("EndpointSlice follows the selector", Duration::from_secs(20), || {
            (slice_ips(&s, "webserver") == wanted).then_some(())
        });
        let seen = colours(30);
        assert!(seen.iter().all(|c| c == colour), "after selecting {colour}: {seen:?}");
    }

    s.ok(&["delete", "deploy", "green", "--wait=false"]);
    let r = wait_for("503 once green is gone", Duration::from_secs(60), || {
        get(http, &host, "/", "").filter(|r| r.status == 503)
    });
    assert!(r.body.contains("default/webserver"), "503 names the Service: {}", r.body);
}

#[test]
fn ingress_hosts_paths_and_tls() {
    if !can_run_pods() {
        return;
    }
    let http = free_port();
    let https = free_port();
    let s = Server::start(&[
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--https-listen",
        &format!("127.0.0.1:{https}"),
    ]);
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("web", "{app: web}", 1, "web"));
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("api", "{app: api}", 1, "api"));
    s.ok_stdin(&["apply", "-f", "-"], &service("web", "{app: web}"));
    s.ok_stdin(&["apply", "-f", "-"], &service("api", "{app: api}"));

    // A certificate for secure.example.test, made here.
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = berth_testkit::self_signed_cert(dir.path(), "secure.example.test");
    s.ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "--cert",
        crt.to_str().expect("utf-8 path"),
        "--key",
        key.to_str().expect("utf-8 path"),
    ]);

    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: site
spec:
  tls:
  - hosts: [secure.example.test]
    secretName: secure-tls
  rules:
  - host: one.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: two.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /index.html, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
  - host: secure.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;
    s.ok_stdin(&["apply", "-f", "-"], ingress);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    s.ok(&["rollout", "status", "deploy/api", "--timeout=120s"]);

    // Which Deployment's pod answered (nginx answers 404 for files it lacks, as upstream would).
    let who = |host: &str, path: &str| {
        get(http, host, path, "")
            .and_then(|r| r.header("x-served-by"))
            .and_then(|p| p.split('-').next().map(str::to_owned))
    };
    wait_for("both backends routed", Duration::from_secs(30), || {
        (who("one.example.test", "/").as_deref() == Some("web")
            && who("two.example.test", "/").as_deref() == Some("api"))
        .then_some(())
    });
    assert_eq!(get(http, "one.example.test", "/", "").map(|r| r.body.trim().to_owned()).as_deref(), Some("web"));
    // /api is a path-element prefix of /api/v1; not of /apix.
    assert_eq!(who("one.example.test", "/api").as_deref(), Some("api"));
    assert_eq!(who("one.example.test", "/api/v1").as_deref(), Some("api"));
    assert_eq!(who("one.example.test", "/apix").as_deref(), Some("web"));
    assert_eq!(who("two.example.test", "/index.html").as_deref(), Some("web"), "Exact beats Prefix /");
    assert_eq!(who("two.example.test", "/index.htm").as_deref(), Some("api"));
    assert_eq!(who("TWO.example.test:80", "/").as_deref(), Some("api"), "hosts compare without case and port");
    assert_eq!(get(http, "three.example.test", "/", "").map(|r| r.status), Some(404));

    // The upstream sees who asked, how, and for which host.
    let r = get(http, "one.example.test:8080", "/", "").expect("answer");
    assert_eq!(r.header("x-saw-forwarded").as_deref(), Some("127.0.0.1|http|one.example.test:8080"));

    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&crt)
        .args(["--resolve", &format!("secure.example.test:{https}:127.0.0.1")])
        .args(["-w", "\n%{http_version}", &format!("https://secure.example.test:{https}/")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl over TLS with the Secret's CA: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["web", "2"],
        "served over HTTP/2 with the Secret's certificate"
    );
}

#[test]
fn weighted_and_sticky_routes() {
    if !can_run_pods() {
        return;
    }
    let http = free_port();
    let s = router_server(http);
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("stable", "{app: stable}", 2, "stable"));
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("canary", "{app: canary}", 1, "canary"));
    s.ok_stdin(&["apply", "-f", "-"], &service("stable", "{app: stable}"));
    s.ok_stdin(&["apply", "-f", "-"], &service("canary", "{app: canary}"));
    s.ok_stdin(
        &["apply", "-f", "-"],
        &route("shop", "  to: {name: stable, weight: 90}\n  alternateBackends:\n  - {name: canary, weight: 10}\n"),
    );
    s.ok_stdin(&["apply", "-f", "-"], &route("sticky", "  to: {name: stable}\n  stickySessions: true\n"));
    s.ok(&["rollout", "status", "deploy/stable", "--timeout=120s"]);
    s.ok(&["rollout", "status", "deploy/canary", "--timeout=120s"]);
    route_hosts(&s, "shop");
    route_hosts(&s, "sticky");
    let stable = pod_ips(&s, "app=stable");
    wait_for("endpoints", Duration::from_secs(30), || {
        (slice_ips(&s, "stable") == stable && slice_ips(&s, "canary").len() == 1).then_some(())
    });
    wait_for("both Services routed", Duration::from_secs(10), || {
        let seen: Vec<String> =
            (0..20).filter_map(|_| get(http, "shop-default.localhost", "/", "")).map(|r| r.body).collect();
        (seen.iter().any(|b| b.contains("canary")) && seen.iter().any(|b| b.contains("stable"))).then_some(())
    });

    let mut canary = 0;
    for _ in 0..1000 {
        let r = get(http, "shop-default.localhost", "/", "").expect("answer");
        assert_eq!(r.status, 200);
        if r.body.trim() == "canary" {
            canary += 1;
        }
    }
    assert!((80..=100).contains(&canary), "90/10 split gave {canary} of 1000 to the canary");

    // Sticky: the first answer sets a cookie; with it every answer comes from the same pod.
    let first = get(http, "sticky-default.localhost", "/", "").expect("answer");
    let cookie = first.header("set-cookie").expect("a sticky cookie");
    let pair = cookie.split(';').next().unwrap_or_default().to_owned();
    assert!(!pair.contains("10.180."), "the cookie hides the pod address: {pair}");
    let pinned = first.header("x-served-by").expect("X-Served-By");
    for _ in 0..20 {
        let r = get(http, "sticky-default.localhost", "/", &format!("Cookie: {pair}\r\n")).expect("answer");
        assert_eq!(r.header("x-served-by").as_deref(), Some(pinned.as_str()));
    }
    let mut unpinned: Vec<String> = (0..10)
        .filter_map(|_| get(http, "sticky-default.localhost", "/", "").and_then(|r| r.header("x-served-by")))
        .collect();
    unpinned.sort();
    unpinned.dedup();
    assert_eq!(unpinned.len(), 2, "without the cookie both pods answer: {unpinned:?}");
}

/// Runs wrk against the router for `seconds` while `during` runs; returns wrk's report.
fn under_load(http: u16, host: &str, seconds: u32, during: impl FnOnce()) -> String {
    let mut wrk = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{http}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (Debian package wrk) is needed");
    during();
    assert!(wrk.try_wait().expect("wrk status").is_none(), "wrk ended before the change finished");
    let out = wrk.wait_with_output().expect("wrk output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_clean(report: &str) {
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Non-2xx"), "non-2xx responses under load:\n{report}");
    assert!(!report.contains("Socket errors"), "socket errors under load:\n{report}");
}

#[test]
fn rolling_update_and_scale_down_under_load_lose_nothing() {
    if !can_run_pods() {
        return;
    }
    let http = free_port();
    let s = router_server(http);
    s.ok_stdin(&["apply", "-f", "-"], &nginx_app("roll", "{app: roll}", 3, "v1"));
    s.ok_stdin(&["apply", "-f", "-"], &service("roll", "{app: roll}"));
    s.ok_stdin(&["apply", "-f", "-"], &route("roll", "  to: {name: roll}\n"));
    s.ok(&["rollout", "status", "deploy/roll", "--timeout=120s"]);
    route_hosts(&s, "roll");
    let ips = pod_ips(&s, "app=roll");
    wait_for("endpoints", Duration::from_secs(30), || (slice_ips(&s, "roll") == ips).then_some(()));
    wait_for("routed", Duration::from_secs(10), || {
        get(http, "roll-default.localhost", "/", "").filter(|r| r.status == 200)
    });

    // A new pod template (only `image: host` exists offline, so the change is an env var)
    // rolled out with the default grace period while wrk keeps 16 connections busy.
    let report = under_load(http, "roll-default.localhost", 60, || {
        s.ok(&["set", "env", "deploy/roll", "RELEASE=2"]);
        s.ok(&["rollout", "status", "deploy/roll", "--timeout=55s"]);
        wait_for("old pods gone", Duration::from_secs(50), || {
            let pods = s.json(&["get", "pods", "-l", "app=roll"]);
            (pods["items"].as_array().map(Vec::len) == Some(3)).then_some(())
        });
    });
    assert_clean(&report);

    s.ok(&["scale", "deploy/roll", "--replicas=5"]);
    s.ok(&["rollout", "status", "deploy/roll", "--timeout=120s"]);
    wait_for("five endpoints", Duration::from_secs(30), || (slice_ips(&s, "roll").len() == 5).then_some(()));
    let report = under_load(http, "roll-default.localhost", 40, || {
        s.ok(&["scale", "deploy/roll", "--replicas=2"]);
        wait_for("three pods gone", Duration::from_secs(35), || {
            let pods = s.json(&["get", "pods", "-l", "app=roll"]);
            (pods["items"].as_array().map(Vec::len) == Some(2)).then_some(())
        });
    });
    assert_clean(&report);
}

#[test]
fn berth_up_on_a_fresh_data_dir_prints_a_url_that_answers() {
    if !can_run_pods() {
        return;
    }
    let http = free_port();
    let s = Server::start_command(
        berth_testkit::berth_binary(),
        "up",
        &["--http-listen", &format!("127.0.0.1:{http}"), "--https-listen", "off", "--route-suffix", "test.invalid"],
    );
    // README promises the URL within a minute on a fresh data dir.
    let line = s.next_line(Duration::from_secs(60)).expect("berth up printed the example's URL");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.contains(".localhost"))
        .unwrap_or_else(|| panic!("no local URL in {line:?}"))
        .to_owned();
    assert_eq!(url, format!("http://hello-default.localhost:{http}"));
    // `berth up` times itself from its start (a wall clock here would also count the wait for
    // a test network slot while other tests hold them all).
    let seconds: f64 = line
        .split_once("ready in ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    assert!(seconds < 60.0, "{line}");
    let kubeconfig_line = s.next_line(Duration::from_secs(5)).expect("kubeconfig line");
    assert!(kubeconfig_line.contains(&format!("KUBECONFIG={}", s.kubeconfig().display())), "{kubeconfig_line}");
    // curl resolves *.localhost to this machine itself.
    let out = Command::new("curl").args(["-sS", "--fail", &url]).output().expect("curl");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello from Berth"));
    assert_eq!(s.json(&["get", "deploy", "hello"])["status"]["readyReplicas"], 2);
}

/// A router port another program holds stops `berth server` at once, saying which address
/// and which flags move it, before any controller runs.
#[test]
fn a_taken_router_port_fails_the_start_with_the_flags_that_move_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(berth_testkit::berth_binary())
        .args(["server", "--no-node", "--no-controllers", "--listen", &api, "--https-listen", "off"])
        .args(["--http-listen", &addr, "--data-dir"])
        .arg(data.path())
        .env("BERTH_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start berth server");
    let status = wait_for("berth server to exit", Duration::from_secs(60), || child.try_wait().expect("wait"));
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(stderr.contains("--http-listen") && stderr.contains("Address already in use"), "{stderr}");
}
