//! Service traffic end to end: a real `berth server` (no node agent; its controllers keep
//! Endpoints and EndpointSlices), the proxy running in this process against it, and loopback
//! servers standing
//! in for pods (127.0.0.2 and 127.0.0.3). Pods are moved to Running/Ready through the status
//! API, as kwok does.
//!
//! The proxy tests need root (a dummy interface, a network namespace); without it they print
//! why and pass without checking anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use berth_proxy::{ProxyConfig, remove_service_interface};
use common::*;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const LOOPBACK_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LOOPBACK_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj).await.expect("create")
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    create(&api, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).await;
}

async fn node(client: &Client, name: &str, zone: &str) {
    let api: Api<Node> = Api::all(client.clone());
    create(
        &api,
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}}),
    )
    .await;
}

/// A pod on `node-a` labelled `app=<app>` whose container port `web` is `port`.
async fn pod(api: &Api<Pod>, name: &str, app: &str, port: u16) {
    create(
        api,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": {"app": app}},
               "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "host",
                        "ports": [{"name": "web", "containerPort": port}]}]}}),
    )
    .await;
}

/// What a kubelet reports: Running at `ip`, Ready or not.
async fn set_pod_status(api: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let ready = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": ready}, {"type": "ContainersReady", "status": ready}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("pod status");
}

async fn slices_of(client: &Client, ns: &str, service: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

/// One endpoint as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeenEndpoint {
    address: String,
    port: i32,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: String,
    zone: String,
    pod: String,
}

fn flatten(slices: &[EndpointSlice]) -> Vec<SeenEndpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let port = slice.ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port).unwrap_or(0);
        for e in &slice.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            out.push(SeenEndpoint {
                address: e.addresses.join(","),
                port,
                ready: c.ready.unwrap_or(false),
                serving: c.serving.unwrap_or(false),
                terminating: c.terminating.unwrap_or(false),
                node: e.node_name.clone().unwrap_or_default(),
                zone: e.zone.clone().unwrap_or_default(),
                pod: e.target_ref.as_ref().and_then(|t| t.name.clone()).unwrap_or_default(),
            });
        }
    }
    out.sort();
    out
}

fn endpoint(address: &str, port: i32, (ready, serving, terminating): (bool, bool, bool), pod: &str) -> SeenEndpoint {
    SeenEndpoint {
        address: address.into(),
        port,
        ready,
        serving,
        terminating,
        node: "node-a".into(),
        zone: "zone-1".into(),
        pod: pod.into(),
    }
}

/// Endpoints as `(ready?, ip, port)` triples.
fn endpoints_content(e: &Endpoints) -> BTreeSet<(bool, String, i32)> {
    let mut out = BTreeSet::new();
    for s in e.subsets.iter().flatten() {
        for p in s.ports.iter().flatten() {
            for a in s.addresses.iter().flatten() {
                out.insert((true, a.ip.clone(), p.port));
            }
            for a in s.not_ready_addresses.iter().flatten() {
                out.insert((false, a.ip.clone(), p.port));
            }
        }
    }
    out
}

async fn wait_endpoints(api: &Api<Endpoints>, name: &str, want: BTreeSet<(bool, String, i32)>) -> Endpoints {
    eprintln!("waiting for endpoints {name} to be {want:?}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let current = api.get_opt(name).await.ok().flatten();
        if let Some(e) = current.as_ref().filter(|e| endpoints_content(e) == want) {
            return e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "endpoints {name}: want {want:?}, have {current:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_slices(client: &Client, ns: &str, service: &str, mut want: Vec<SeenEndpoint>) -> Vec<EndpointSlice> {
    want.sort();
    eprintln!("waiting for slices of {service} to hold {want:?}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let slices = slices_of(client, ns, service).await;
        if flatten(&slices) == want {
            return slices;
        }
        assert!(tokio::time::Instant::now() < deadline, "slices of {service}: want {want:?}, have {slices:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a Service's slices to be just the empty placeholder.
async fn wait_placeholder(client: &Client, ns: &str, service: &str) -> EndpointSlice {
    wait_for(&format!("{service} to have only its placeholder slice"), move || async move {
        let mut slices = slices_of(client, ns, service).await;
        (slices.len() == 1 && slices[0].endpoints.is_empty()).then(|| slices.remove(0))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_controllers_follow_pod_readiness_and_selectors() {
    init_logging();
    let server = Server::start().await;
    let client = server.client.clone();
    let ns = "shop";
    namespace(&client, ns).await;
    node(&client, "node-a", "zone-1").await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), ns);

    let web = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}),
    )
    .await;

    // No pods yet: one empty placeholder slice and empty Endpoints.
    let placeholder = wait_placeholder(&client, ns, "web").await;
    let slice = &placeholder;
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"), "service labels are mirrored");
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", web.metadata.uid.as_deref().unwrap(), Some(true))
    );
    let empty = wait_endpoints(&endpoints_api, "web", BTreeSet::new()).await;
    assert_eq!(empty.metadata.labels.unwrap().get("team").map(String::as_str), Some("a"));

    // p1 ready, p2 not; the named target port resolves per pod.
    pod(&pods, "p1", "web", 8080).await;
    pod(&pods, "p2", "web", 9090).await;
    set_pod_status(&pods, "p1", "10.88.0.11", true).await;
    set_pod_status(&pods, "p2", "10.88.0.12", false).await;
    let slices = wait_slices(
        &client,
        ns,
        "web",
        vec![
            endpoint("10.88.0.11", 8080, (true, true, false), "p1"),
            endpoint("10.88.0.12", 9090, (false, false, false), "p2"),
        ],
    )
    .await;
    assert_eq!(slices.len(), 2, "pods resolving the named port differently get separate slices");
    let port = &slices[0].ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.protocol.as_deref()), (Some("http"), Some("TCP")));
    let eps = wait_endpoints(
        &endpoints_api,
        "web",
        BTreeSet::from([(true, "10.88.0.11".into(), 8080), (false, "10.88.0.12".into(), 9090)]),
    )
    .await;
    let address = &eps.subsets.as_ref().unwrap().iter().find_map(|s| s.addresses.clone()).unwrap()[0];
    assert_eq!(address.node_name.as_deref(), Some("node-a"));
    assert_eq!(address.target_ref.as_ref().unwrap().name.as_deref(), Some("p1"));

    // p2 becomes ready.
    set_pod_status(&pods, "p2", "10.88.0.12", true).await;
    wait_endpoints(
        &endpoints_api,
        "web",
        BTreeSet::from([(true, "10.88.0.11".into(), 8080), (true, "10.88.0.12".into(), 9090)]),
    )
    .await;

    // p1 is being deleted (a finalizer holds it, as a kubelet's grace period would): it stays
    // in the slice as serving but not ready, and leaves the Endpoints.
    let hold = json!({"metadata": {"finalizers": ["test.berth.dev/hold"]}});
    pods.patch("p1", &PatchParams::default(), &Patch::Merge(&hold)).await.unwrap();
    // Grace period 0: no kubelet runs here to finish a graceful deletion.
    pods.delete("p1", &DeleteParams::default().grace_period(0)).await.unwrap();
    wait_slices(
        &client,
        ns,
        "web",
        vec![
            endpoint("10.88.0.11", 8080, (false, true, true), "p1"),
            endpoint("10.88.0.12", 9090, (true, true, false), "p2"),
        ],
    )
    .await;
    wait_endpoints(&endpoints_api, "web", BTreeSet::from([(true, "10.88.0.12".into(), 9090)])).await;
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch("p1", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    wait_slices(&client, ns, "web", vec![endpoint("10.88.0.12", 9090, (true, true, false), "p2")]).await;

    // publishNotReadyAddresses lists not-ready pods as ready.
    create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "all"},
               "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": true,
                        "ports": [{"name": "http", "port": 80, "targetPort": 7000}]}}),
    )
    .await;
    set_pod_status(&pods, "p2", "10.88.0.12", false).await;
    wait_endpoints(&endpoints_api, "all", BTreeSet::from([(true, "10.88.0.12".into(), 7000)])).await;
    wait_slices(&client, ns, "all", vec![endpoint("10.88.0.12", 7000, (true, false, false), "p2")]).await;

    // A Service without a selector is left to its user.
    create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
               "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    // Relabelling p2 takes it out of both selector Services; once that shows, the controller
    // has seen the selector-less Service too.
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    pods.patch("p2", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    wait_endpoints(&endpoints_api, "all", BTreeSet::new()).await;
    wait_placeholder(&client, ns, "web").await;
    assert!(slices_of(&client, ns, "manual").await.is_empty());
    assert!(endpoints_api.get_opt("manual").await.unwrap().is_none());

    // Endpoints its user writes are mirrored into a slice (what the proxy reads).
    create(
        &endpoints_api,
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
               "subsets": [{"addresses": [{"ip": "192.168.5.5"}], "notReadyAddresses": [{"ip": "192.168.5.6"}],
                            "ports": [{"port": 5432}]}]}),
    )
    .await;
    let mirrored = wait_for("hand-written endpoints to be mirrored", || {
        let client = client.clone();
        async move {
            let slices = slices_of(&client, ns, "manual").await;
            let ready: BTreeMap<String, bool> = slices
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false)))
                .collect();
            let want = BTreeMap::from([("192.168.5.5".to_string(), true), ("192.168.5.6".to_string(), false)]);
            (ready == want).then_some(slices)
        }
    })
    .await;
    let labels = mirrored[0].metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslicemirroring-controller.k8s.io")
    );
    assert_eq!(mirrored[0].ports.as_ref().unwrap()[0].port, Some(5432));

    // Deleting the Service removes its Endpoints (the controller) and slices (the garbage
    // collector, through the owner reference).
    services.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for("endpoints of the deleted service to go", || {
        let api = endpoints_api.clone();
        async move { api.get_opt("web").await.ok().and_then(|e| e.is_none().then_some(())) }
    })
    .await;
    wait_for("slices of the deleted service to go", || {
        let client = client.clone();
        async move { slices_of(&client, ns, "web").await.is_empty().then_some(()) }
    })
    .await;
}

/// Runs the proxy; if it ever stops, the panic message says why.
fn spawn_proxy(client: &Client, interface: &str) -> tokio::task::JoinHandle<()> {
    let (client, config) = (client.clone(), proxy_config(interface));
    tokio::spawn(async move {
        let result = berth_proxy::run(client, config).await;
        panic!("service proxy stopped: {result:?}");
    })
}

fn cluster_ip(service: &Service) -> Ipv4Addr {
    service.spec.as_ref().unwrap().cluster_ip.as_deref().unwrap().parse().unwrap()
}

fn node_port(service: &Service) -> u16 {
    service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port.unwrap() as u16
}

fn proxy_config(interface: &str) -> ProxyConfig {
    let mut config = ProxyConfig::new(Ipv4Addr::LOCALHOST);
    config.service_interface = interface.to_string();
    config.resync_interval = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    config
}

/// A manual EndpointSlice for `service` listing `ready` addresses on `port`.
fn manual_slice(
    service: &str,
    port_name: &str,
    protocol: &str,
    port: u16,
    ready: &[(Ipv4Addr, bool)],
) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> =
        ready.iter().map(|(ip, r)| json!({"addresses": [ip.to_string()], "conditions": {"ready": r}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-manual"), "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": port_name, "port": port, "protocol": protocol}],
           "endpoints": endpoints})
}

/// Greetings of `n` new connections.
async fn greetings(addr: SocketAddr, n: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(who(addr).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_serves_cluster_ips_node_ports_load_balancers_and_udp() {
    if !is_root() {
        eprintln!("skipping: the service proxy test needs root (dummy interface)");
        return;
    }
    let _serial = NETWORK.lock().await;
    init_logging();
    let server = Server::start().await;
    let client = server.client.clone();
    let interface = unique_name("bsv");
    let _cleanup = LinkGuard(interface.clone());
    let tcp = TcpIdentity::start(&[LOOPBACK_A, LOOPBACK_B]).await;
    let udp = UdpIdentity::start(&[LOOPBACK_A, LOOPBACK_B]).await;
    let lb_port = free_port();

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let both = [(LOOPBACK_A, true), (LOOPBACK_B, true)];
    let echo = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
               "spec": {"type": "LoadBalancer", "ports": [{"name": "tcp", "port": lb_port, "targetPort": tcp.port}]}}),
    )
    .await;
    create(&slices, manual_slice("echo", "tcp", "TCP", tcp.port, &both)).await;
    let sticky = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
               "spec": {"sessionAffinity": "ClientIP", "ports": [{"name": "tcp", "port": 80}]}}),
    )
    .await;
    create(&slices, manual_slice("sticky", "tcp", "TCP", tcp.port, &both)).await;
    let dns = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
               "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await;
    create(&slices, manual_slice("dns", "dns", "UDP", udp.port, &both)).await;
    let empty = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
               "spec": {"ports": [{"name": "tcp", "port": 80}]}}),
    )
    .await;
    create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless"},
               "spec": {"clusterIP": "None", "ports": [{"name": "tcp", "port": 80}]}}),
    )
    .await;

    let proxy = spawn_proxy(&client, &interface);
    let echo_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&echo)), lb_port);

    // ClusterIP: new connections are spread over both endpoints.
    wait_for("the echo ClusterIP to answer", move || who(echo_addr)).await;
    let seen: BTreeSet<String> = greetings(echo_addr, 10).await.into_iter().flatten().collect();
    assert_eq!(seen, BTreeSet::from(["127.0.0.2".to_string(), "127.0.0.3".to_string()]));

    // Every ClusterIP is on the interface; the headless Service has none.
    let on_interface: BTreeSet<Ipv4Addr> = interface_addresses(&interface).into_iter().collect();
    for svc in [&echo, &sticky, &dns, &empty] {
        assert!(on_interface.contains(&cluster_ip(svc)), "{:?} missing from {on_interface:?}", svc.metadata.name);
    }

    // Session affinity pins this client to one endpoint.
    let sticky_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&sticky)), 80);
    let pinned: BTreeSet<Option<String>> = greetings(sticky_addr, 8).await.into_iter().collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    assert!(pinned.iter().all(Option::is_some));

    // UDP: each client flow goes to one endpoint, flows are spread.
    let dns_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&dns)), 53);
    wait_for("the UDP ClusterIP to answer", move || who_udp(dns_addr, "q")).await;
    let mut udp_seen = BTreeSet::new();
    for i in 0..6 {
        let reply = who_udp(dns_addr, &format!("q{i}")).await.expect("udp reply");
        let (from, payload) = reply.split_once(':').unwrap();
        assert_eq!(payload, format!("q{i}"));
        udp_seen.insert(from.to_string());
    }
    assert_eq!(udp_seen.len(), 2, "{udp_seen:?}");

    // NodePort answers on the host's addresses.
    let node_port_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port(&echo));
    wait_for("the NodePort to answer", move || who(node_port_addr)).await;

    // LoadBalancer: the node IP is published and served.
    wait_for("the load balancer ingress IP", || {
        let services = services.clone();
        async move {
            let svc = services.get("echo").await.ok()?;
            let ingress = svc.status?.load_balancer?.ingress?;
            (ingress.first()?.ip.as_deref() == Some("127.0.0.1")).then_some(())
        }
    })
    .await;
    let lb_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), lb_port);
    wait_for("the load balancer address to answer", move || who(lb_addr)).await;

    // No ready endpoint: connections are refused.
    let empty_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&empty)), 80);
    assert_eq!(who(empty_addr).await, None);

    // Readiness removed from one endpoint: new connections avoid it, an established one to it
    // carries on.
    let mut established = Conn::open(echo_addr).await.expect("connection");
    let kept = established.greeting.parse::<Ipv4Addr>().unwrap();
    let other = if kept == LOOPBACK_A { LOOPBACK_B } else { LOOPBACK_A };
    let update = manual_slice("echo", "tcp", "TCP", tcp.port, &[(kept, false), (other, true)]);
    slices.patch("echo-manual", &PatchParams::default(), &Patch::Merge(&update)).await.unwrap();
    wait_for("new connections to avoid the unready endpoint", move || async move {
        // Round-robin over two endpoints would alternate: six in a row means one is left.
        let run = greetings(echo_addr, 6).await;
        run.iter().all(|g| g.as_deref() == Some(other.to_string().as_str())).then_some(())
    })
    .await;
    assert_eq!(established.echo("still here").await.as_deref(), Some("still here"));

    // Service deleted: its address leaves the interface and its listeners close.
    services.delete("echo", &DeleteParams::default()).await.unwrap();
    let echo_ip = cluster_ip(&echo);
    wait_for("the echo ClusterIP to leave the interface", || {
        let gone = !interface_addresses(&interface).contains(&echo_ip);
        async move { gone.then_some(()) }
    })
    .await;
    wait_for("the NodePort and load balancer listeners to close", move || async move {
        (who(node_port_addr).await.is_none() && who(lb_addr).await.is_none()).then_some(())
    })
    .await;

    assert!(!proxy.is_finished(), "proxy stopped");
    proxy.abort();
    remove_service_interface(&interface).await.unwrap();
    assert!(interface_addresses(&interface).is_empty());
    assert!(!std::path::Path::new("/sys/class/net").join(&interface).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_behind_a_selector_are_served_and_drained_through_the_controllers() {
    if !is_root() {
        eprintln!("skipping: the service proxy test needs root (dummy interface, network namespace)");
        return;
    }
    let _serial = NETWORK.lock().await;
    init_logging();
    let server = Server::start().await;
    let client = server.client.clone();
    let interface = unique_name("bsv");
    let _cleanup = LinkGuard(interface.clone());
    let tcp = TcpIdentity::start(&[LOOPBACK_A, LOOPBACK_B]).await;

    let proxy = spawn_proxy(&client, &interface);
    node(&client, "node-a", "zone-1").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let web = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}),
    )
    .await;
    // The "pods" run on loopback addresses: their IPs are where the identity servers listen.
    pod(&pods, "pa", "web", tcp.port).await;
    pod(&pods, "pb", "web", tcp.port).await;
    set_pod_status(&pods, "pa", "127.0.0.2", true).await;
    set_pod_status(&pods, "pb", "127.0.0.3", true).await;

    let web_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&web)), 80);
    wait_for("both pods to answer on the ClusterIP", move || async move {
        let seen: BTreeSet<String> = greetings(web_addr, 4).await.into_iter().flatten().collect();
        (seen.len() == 2).then_some(())
    })
    .await;

    // A pod (a network namespace routed through the host) reaches the ClusterIP too.
    let pod_ns = PodNamespace::create(77);
    let pod_ref = &pod_ns;
    let from_pod = wait_for("a pod namespace to reach the ClusterIP", move || pod_ref.fetch(web_addr)).await;
    assert!(from_pod == "127.0.0.2" || from_pod == "127.0.0.3", "{from_pod}");

    // The pod holding an established connection goes unready: the controller updates the
    // slice, the proxy stops sending it new connections, the connection survives.
    let mut established = Conn::open(web_addr).await.expect("connection");
    let (unready_pod, unready_ip, ready_ip) = if established.greeting == "127.0.0.2" {
        ("pa", "127.0.0.2", "127.0.0.3")
    } else {
        ("pb", "127.0.0.3", "127.0.0.2")
    };
    set_pod_status(&pods, unready_pod, unready_ip, false).await;
    wait_for("new connections to reach only the ready pod", move || async move {
        let run = greetings(web_addr, 6).await;
        run.iter().all(|g| g.as_deref() == Some(ready_ip)).then_some(())
    })
    .await;
    assert_eq!(established.echo("hello").await.as_deref(), Some("hello"));
    let from_pod = wait_for("the pod namespace to reach the ready pod", move || async move {
        pod_ref.fetch(web_addr).await.filter(|g| g == ready_ip)
    })
    .await;
    assert_eq!(from_pod, ready_ip);

    let slices = slices_of(&client, "default", "web").await;
    let ready: BTreeMap<String, bool> = flatten(&slices).into_iter().map(|e| (e.address, e.ready)).collect();
    assert_eq!(ready, BTreeMap::from([(unready_ip.to_string(), false), (ready_ip.to_string(), true)]));

    // A selector-less Service with hand-written core/v1 Endpoints is served too (mirrored).
    let legacy = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "legacy"},
               "spec": {"ports": [{"name": "tcp", "port": 80}]}}),
    )
    .await;
    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    create(
        &endpoints_api,
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy"},
               "subsets": [{"addresses": [{"ip": "127.0.0.3"}], "ports": [{"name": "tcp", "port": tcp.port}]}]}),
    )
    .await;
    let legacy_addr = SocketAddr::new(IpAddr::V4(cluster_ip(&legacy)), 80);
    let answer = wait_for("the legacy Service to answer", move || who(legacy_addr)).await;
    assert_eq!(answer, "127.0.0.3");

    assert!(!proxy.is_finished());
    proxy.abort();
    drop(pod_ns);
    remove_service_interface(&interface).await.unwrap();
}
