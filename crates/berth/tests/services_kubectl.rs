//! Services end to end: stock kubectl against a real `berth server` that runs pods (Debian's
//! busybox, python3 and redis from the `host` image), Service traffic through the kernel
//! rules the server programs, and cluster DNS. Tests that run pods need root and runc and
//! skip with a message otherwise; each server holds its own network slot.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use berth_testkit::{Server, can_run_pods, free_port, wait_for};

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: host
        command: [sh, -c, "mkdir -p /tmp/w && hostname > /tmp/w/index.html && exec busybox httpd -f -p 8080 -h /tmp/w"]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
"#;

const CLIENT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: main
    image: host
    command: [sleep, "3600"]
"#;

/// `curl` from the host; the body, if anything answered with success.
fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "--max-time", "3", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `curl` run inside pod `pod`.
fn curl_in(s: &Server, pod: &str, url: &str) -> Option<String> {
    let out = s.kubectl(&["exec", pod, "--", "curl", "-sfk", "--max-time", "3", url]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cluster_ip(s: &Server, svc: &str) -> String {
    s.ok(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"])
}

fn node_ip(s: &Server) -> String {
    s.ok(&["get", "nodes", "-o", "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}"])
}

/// Waits until the Service's EndpointSlices list `n` ready endpoints.
fn wait_ready_endpoints(s: &Server, svc: &str, n: usize) {
    wait_for(&format!("{n} ready endpoints of {svc}"), Duration::from_secs(120), || {
        let label = format!("kubernetes.io/service-name={svc}");
        let slices = s.json(&["get", "endpointslices", "-l", &label]);
        let ready = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] != false)
            .count();
        (ready == n).then_some(())
    });
}

fn wait_running(s: &Server, pod: &str) {
    wait_for(&format!("pod {pod} running"), Duration::from_secs(120), || {
        (s.json(&["get", "pod", pod])["status"]["phase"] == "Running").then_some(())
    });
}

fn pod_ip(s: &Server, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
}

fn web_pods(s: &Server) -> Vec<String> {
    let pods = s.json(&["get", "pods", "-l", "app=web"]);
    pods["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Collects the distinct answers of `fetch` until `want` differ (each a web pod's hostname).
fn wait_distinct(what: &str, want: usize, mut fetch: impl FnMut() -> Option<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    wait_for(what, Duration::from_secs(60), || {
        if let Some(body) = fetch() {
            assert!(body.starts_with("web-"), "unexpected answer {body:?}");
            seen.insert(body);
        }
        (seen.len() >= want).then(|| seen.iter().cloned().collect())
    })
}

#[test]
fn services_answer_on_cluster_ip_node_port_and_load_balancer() {
    if !can_run_pods() {
        return;
    }
    // A wildcard listener on the `kubernetes` Service's port, as Berth's own HTTPS router
    // holds by default: the Service must still lead to the API server. (If another program
    // holds it already, that is the same situation.)
    let _wildcard_443 = std::net::TcpListener::bind("0.0.0.0:443").ok();
    let s = Server::start(&[]);
    let (node_port, _) = s.slot.as_ref().expect("slot").node_ports();
    let lb_port = free_port();
    s.ok_stdin(&["apply", "-f", "-"], WEB);
    s.ok_stdin(&["apply", "-f", "-"], CLIENT);
    let services = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http, nodePort: {node_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-lb}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: {lb_port}, targetPort: 8080}}]
"#
    );
    s.ok_stdin(&["apply", "-f", "-"], &services);
    wait_ready_endpoints(&s, "web", 2);
    wait_running(&s, "client");

    // ClusterIP from the host: spread over both pods (a named targetPort, resolved per pod).
    let ip = cluster_ip(&s, "web");
    let seen = wait_distinct("both pods through the ClusterIP from the host", 2, || curl(&format!("http://{ip}/")));
    let mut pods = web_pods(&s);
    pods.sort();
    assert_eq!(seen, pods);

    // From another pod, and from a backend to its own Service (hairpin).
    wait_distinct("both pods through the ClusterIP from a pod", 2, || curl_in(&s, "client", &format!("http://{ip}/")));
    for _ in 0..6 {
        let body = curl_in(&s, &pods[0], &format!("http://{ip}/")).expect("a backend reaches its own Service");
        assert!(pods.contains(&body), "{body}");
    }

    // NodePort on the host's address.
    let node = node_ip(&s);
    wait_distinct("the NodePort", 1, || curl(&format!("http://{node}:{node_port}/")));
    // And on 127.0.0.1, as kube-proxy serves NodePorts.
    wait_distinct("the NodePort on 127.0.0.1", 1, || curl(&format!("http://127.0.0.1:{node_port}/")));

    // LoadBalancer: the machine's address as EXTERNAL-IP, answering there.
    wait_for("the LoadBalancer's external IP", Duration::from_secs(30), || {
        let table = s.ok(&["get", "svc", "web-lb"]);
        table.lines().nth(1).is_some_and(|row| row.split_whitespace().nth(3) == Some(node.as_str())).then_some(())
    });
    wait_distinct("the LoadBalancer address", 1, || curl(&format!("http://{node}:{lb_port}/")));

    // The `kubernetes` Service leads pods to the API server.
    let api = cluster_ip(&s, "kubernetes");
    let slot_range = s.slot.as_ref().expect("slot").service_cidr();
    assert_eq!(api, slot_range.replace(".0/24", ".1"), "the first address of the slot's range");
    let version = wait_for("the API through the kubernetes Service", Duration::from_secs(30), || {
        curl_in(&s, "client", &format!("https://{api}/version"))
    });
    assert!(version.contains("gitVersion"), "{version}");
    let from_host =
        Command::new("curl").args(["-sfk", "--max-time", "3"]).arg(format!("https://{api}/version")).output();
    let from_host = from_host.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    assert!(from_host.contains("gitVersion"), "the API through the kubernetes Service from the host: {from_host}");

    // Deleting the Service stops its traffic.
    s.ok(&["delete", "svc", "web"]);
    wait_for("the ClusterIP to stop answering", Duration::from_secs(30), || {
        curl(&format!("http://{ip}/")).is_none().then_some(())
    });
}

#[test]
fn affinity_udp_manual_endpoints_and_unready_addresses() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    s.ok_stdin(&["apply", "-f", "-"], WEB);
    let extra = r#"apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: echo
  labels: {app: echo}
spec:
  containers:
  - name: main
    image: host
    command:
    - python3
    - -c
    - |
      import socket
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
      s.bind(("", 9000))
      while True:
          data, peer = s.recvfrom(512)
          s.sendto(b"echo:" + data, peer)
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: 53, targetPort: 9000, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata:
  name: unready
  labels: {app: unready}
spec:
  containers:
  - name: main
    image: host
    command: [sh, -c, "mkdir -p /tmp/w && echo unready > /tmp/w/index.html && exec busybox httpd -f -p 8080 -h /tmp/w"]
    readinessProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: unready-published}
spec:
  selector: {app: unready}
  publishNotReadyAddresses: true
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: unready-hidden}
spec:
  selector: {app: unready}
  ports: [{port: 80, targetPort: 8080}]
"#;
    s.ok_stdin(&["apply", "-f", "-"], extra);
    wait_ready_endpoints(&s, "sticky", 2);

    // Session affinity: one client address keeps its pod.
    let ip = cluster_ip(&s, "sticky");
    let first = wait_for("the sticky Service", Duration::from_secs(30), || curl(&format!("http://{ip}/")));
    for _ in 0..12 {
        assert_eq!(curl(&format!("http://{ip}/")).as_deref(), Some(first.as_str()), "affinity kept");
    }

    // A Service without selector, with Endpoints written by hand (mirrored into a slice).
    let target = web_pods(&s).into_iter().find(|p| *p != first).expect("a second pod");
    let target_ip = pod_ip(&s, &target);
    let manual = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: manual}}
spec:
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: manual}}
subsets:
- addresses: [{{ip: "{target_ip}"}}]
  ports: [{{port: 8080}}]
"#
    );
    s.ok_stdin(&["apply", "-f", "-"], &manual);
    let manual_ip = cluster_ip(&s, "manual");
    let body = wait_for("the manual Endpoints", Duration::from_secs(30), || curl(&format!("http://{manual_ip}/")));
    assert_eq!(body, target);

    // UDP.
    wait_ready_endpoints(&s, "echo", 1);
    let echo_ip = cluster_ip(&s, "echo");
    let socket = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let reply = wait_for("a UDP reply through the ClusterIP", Duration::from_secs(30), || {
        socket.send_to(b"ping", format!("{echo_ip}:53")).ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert_eq!(reply, "echo:ping");

    // publishNotReadyAddresses lets an unready pod serve; without it, it gets nothing.
    wait_running(&s, "unready");
    let published = cluster_ip(&s, "unready-published");
    let body = wait_for("the unready pod through publishNotReadyAddresses", Duration::from_secs(60), || {
        curl(&format!("http://{published}/"))
    });
    assert_eq!(body, "unready");
    let hidden = cluster_ip(&s, "unready-hidden");
    assert_eq!(curl(&format!("http://{hidden}/")), None, "a not-ready pod gets no traffic");
}

/// Allocation needs no pods: cluster IPs and node ports come from the server's ranges.
#[test]
fn cluster_ips_and_node_ports_come_from_the_configured_ranges() {
    let s = Server::start(&[
        "--no-node",
        "--no-controllers",
        "--service-cidr",
        "10.199.0.0/24",
        "--service-node-port-range",
        "31000-31009",
    ]);
    assert_eq!(cluster_ip(&s, "kubernetes"), "10.199.0.1");
    assert_eq!(
        s.ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]),
        "10.199.0.10"
    );

    s.ok(&["create", "service", "clusterip", "auto", "--tcp=80:8080"]);
    let auto = cluster_ip(&s, "auto");
    assert!(auto.starts_with("10.199.0."), "{auto}");

    s.ok(&["create", "service", "clusterip", "chosen", "--tcp=80", "--clusterip=10.199.0.77"]);
    assert_eq!(cluster_ip(&s, "chosen"), "10.199.0.77");
    let taken = s.fails(&["create", "service", "clusterip", "again", "--tcp=80", "--clusterip=10.199.0.77"]);
    assert!(taken.contains("Invalid") && taken.contains("provided IP is already allocated"), "{taken}");
    let outside = s.fails(&["create", "service", "clusterip", "outside", "--tcp=80", "--clusterip=10.96.0.50"]);
    assert!(outside.contains("not in the valid range") && outside.contains("10.199.0.0/24"), "{outside}");

    // Kept on update, released on delete.
    s.ok(&["label", "svc", "chosen", "tier=x"]);
    assert_eq!(cluster_ip(&s, "chosen"), "10.199.0.77");
    s.ok(&["delete", "svc", "chosen"]);
    s.ok(&["create", "service", "clusterip", "again", "--tcp=80", "--clusterip=10.199.0.77"]);

    s.ok(&["create", "service", "clusterip", "headless", "--clusterip=None"]);
    assert_eq!(cluster_ip(&s, "headless"), "None");

    s.ok(&["create", "service", "nodeport", "np", "--tcp=80", "--node-port=31005"]);
    let port = s.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert_eq!(port, "31005");
    let clash = s.fails(&["create", "service", "nodeport", "np2", "--tcp=80", "--node-port=31005"]);
    assert!(clash.contains("provided port is already allocated"), "{clash}");
    let range = s.fails(&["create", "service", "nodeport", "np3", "--tcp=80", "--node-port=30000"]);
    assert!(range.contains("31000-31009"), "{range}");
    // A type change to NodePort allocates from the range.
    s.ok(&["patch", "svc", "auto", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    let port: u16 = s.ok(&["get", "svc", "auto", "-o", "jsonpath={.spec.ports[0].nodePort}"]).parse().expect("port");
    assert!((31000..=31009).contains(&port), "{port}");
}

/// The `kubernetes` Service's Endpoints and EndpointSlice name the API server, as upstream's
/// API server writes them; no pods needed.
#[test]
fn the_kubernetes_service_has_endpoints_naming_the_api_server() {
    let s = Server::start(&["--no-node"]);
    // The server listens on loopback, so it advertises the machine's address (as k3s does).
    let machine = UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").and_then(|()| u.local_addr()))
        .map_or_else(|_| "127.0.0.1".to_owned(), |a| a.ip().to_string());
    let want = format!("{machine}:{}", s.port);
    wait_for("the kubernetes Endpoints", Duration::from_secs(30), || {
        let out = s.kubectl(&["get", "endpoints", "kubernetes", "--no-headers"]);
        (String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1) == Some(want.as_str())).then_some(())
    });
    let ep = s.json(&["get", "endpoints", "kubernetes"]);
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "https");
    assert_eq!(ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true");
    // One slice, the API server's own (the Endpoints are not mirrored into another).
    let slices = s.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes"]);
    let items = slices["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{slices}");
    assert_eq!(items[0]["metadata"]["name"], "kubernetes");
    assert_eq!(items[0]["endpoints"][0]["addresses"][0], machine.as_str());
    assert_eq!(items[0]["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(items[0]["ports"][0]["port"], s.port);
}

/// Runs `args` in pod `pod` of namespace `ns`; stdout if it succeeded.
fn exec_in(s: &Server, ns: &str, pod: &str, args: &[&str]) -> Option<String> {
    let mut full = vec!["exec", "-n", ns, pod, "--"];
    full.extend_from_slice(args);
    let out = s.kubectl(&full);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn pods_resolve_and_reach_redis_by_name_and_headless_pods_by_hostname() {
    if !can_run_pods() {
        return;
    }
    // Another program holding port 53 on the cluster DNS address when Berth starts (as a
    // resolver listening on `0.0.0.0:53` does, which tests cannot hold while other servers
    // run): cluster DNS must answer on a free port that the Service rules send port 53 to.
    let mut s = Server::start(&[]);
    let dns_ip = s.ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(s.stop(), "server stopped");
    let hold = |ty| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, ty, None).expect("socket");
        socket.set_freebind_v4(true).expect("freebind");
        let addr: std::net::SocketAddr = format!("{dns_ip}:53").parse().expect("address");
        socket.bind(&addr.into()).expect("hold port 53 on the cluster DNS address");
        if ty == socket2::Type::STREAM {
            socket.listen(16).expect("listen");
        }
        socket
    };
    let _held = (hold(socket2::Type::STREAM), hold(socket2::Type::DGRAM));
    s.spawn();
    let manifests = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: shop}
spec:
  replicas: 1
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
      - name: redis
        image: host
        command: [redis-server, --port, "6379", --save, "", --appendonly, "no", --protected-mode, "no", --dir, /tmp]
        ports: [{name: redis, containerPort: 6379}]
        readinessProbe:
          tcpSocket: {port: 6379}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: shop}
spec:
  selector: {app: redis}
  ports: [{name: redis, port: 6379, targetPort: redis}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers:
  - {name: main, image: host, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  containers:
  - {name: main, image: host, command: [sleep, "3600"]}
"#;
    s.ok_stdin(&["apply", "-f", "-"], manifests);
    wait_for("redis ready", Duration::from_secs(120), || {
        let slices = s.json(&["get", "endpointslices", "-n", "shop", "-l", "kubernetes.io/service-name=redis"]);
        (slices["items"][0]["endpoints"][0]["conditions"]["ready"] == true).then_some(())
    });
    wait_for("client running", Duration::from_secs(120), || {
        (s.json(&["get", "pod", "-n", "shop", "client"])["status"]["phase"] == "Running").then_some(())
    });

    // The pod's resolv.conf points at cluster DNS with the namespace's search path.
    let conf = exec_in(&s, "shop", "client", &["cat", "/etc/resolv.conf"]).expect("resolv.conf");
    assert!(conf.contains(&format!("nameserver {dns_ip}")), "{conf}");
    assert!(conf.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"), "{conf}");
    assert!(conf.contains("ndots:5"), "{conf}");

    // redis-cli reaches the Service by its short name and by its full name.
    let pong = wait_for("redis by the name redis", Duration::from_secs(30), || {
        exec_in(&s, "shop", "client", &["redis-cli", "-h", "redis", "ping"]).filter(|o| o == "PONG")
    });
    assert_eq!(pong, "PONG");
    let full = "redis.shop.svc.cluster.local";
    assert_eq!(
        exec_in(&s, "shop", "client", &["redis-cli", "-h", full, "set", "greeting", "hello"]).as_deref(),
        Some("OK")
    );
    assert_eq!(
        exec_in(&s, "shop", "client", &["redis-cli", "-h", "redis", "get", "greeting"]).as_deref(),
        Some("hello")
    );

    // Names as DNS answers them: the ClusterIP, the headless pod by hostname, SRV, NXDOMAIN.
    let redis_ip = s.ok(&["get", "svc", "-n", "shop", "redis", "-o", "jsonpath={.spec.clusterIP}"]);
    let dig = |args: &[&str]| exec_in(&s, "shop", "client", &[&["dig", "+short", "+search"], args].concat());
    assert_eq!(dig(&["redis.shop"]).as_deref(), Some(redis_ip.as_str()));
    let db_ip = wait_for("db-0 ready in its headless Service", Duration::from_secs(60), || {
        let ip = s.ok(&["get", "pod", "-n", "shop", "db-0", "-o", "jsonpath={.status.podIP}"]);
        (!ip.is_empty() && dig(&["db-0.db.shop.svc.cluster.local"]).as_deref() == Some(ip.as_str())).then_some(ip)
    });
    assert_eq!(dig(&["db"]).as_deref(), Some(db_ip.as_str()), "a headless Service answers with its pods");
    let srv = dig(&["-t", "SRV", "_redis._tcp.redis.shop.svc.cluster.local"]).expect("srv");
    assert_eq!(srv, "0 100 6379 redis.shop.svc.cluster.local.");
    let nx = exec_in(&s, "shop", "client", &["dig", "nope.shop.svc.cluster.local"]).expect("dig");
    assert!(nx.contains("NXDOMAIN"), "{nx}");
    // Over TCP too, from the pod and from the host.
    assert_eq!(dig(&["+tcp", "redis.shop"]).as_deref(), Some(redis_ip.as_str()));
    for transport in ["+notcp", "+tcp"] {
        let out = std::process::Command::new("dig")
            .args(["+short", "+time=2", "+tries=2", transport, &format!("@{dns_ip}"), "redis.shop.svc.cluster.local"])
            .output()
            .expect("dig on the host");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), redis_ip, "dig {transport} from the host");
    }
}
