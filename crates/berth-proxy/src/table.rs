//! What the proxy should serve, computed from Services and EndpointSlices alone (no IO): the
//! addresses to listen on, the ready endpoints behind each Service port, the ClusterIPs to put
//! on the service interface and the LoadBalancer statuses to report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (three hours, as upstream).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

/// A transport protocol the proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP: each connection is relayed to one endpoint.
    Tcp,
    /// UDP: each client address becomes a flow relayed to one endpoint.
    Udp,
}

impl Protocol {
    fn parse(protocol: Option<&str>) -> Option<Protocol> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            // SCTP is not proxied.
            _ => None,
        }
    }
}

/// An address the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address and port.
    pub addr: SocketAddr,
}

/// One port of one Service: what a frontend forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name ("" for a lone unnamed port).
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
}

/// The endpoints of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Ready endpoints, sorted and without duplicates.
    pub endpoints: Vec<SocketAddr>,
    /// How long a client IP stays pinned to its endpoint, for `sessionAffinity: ClientIP`.
    pub affinity: Option<Duration>,
}

/// A LoadBalancer status the proxy wants a Service to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerStatus {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The ingress IPs to publish (empty: pending, or not a LoadBalancer any more).
    pub ingress_ips: Vec<String>,
    /// The resourceVersion of the Service this was computed from.
    pub seen_version: Option<String>,
}

/// Everything the proxy should be doing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Where to listen and which Service port each frontend serves.
    pub routes: BTreeMap<Frontend, ServicePortKey>,
    /// The endpoints of every routed Service port.
    pub backends: BTreeMap<ServicePortKey, BackendSpec>,
    /// The ClusterIPs to put on the service interface.
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    /// LoadBalancer statuses that differ from what the Services show.
    pub status_updates: Vec<LoadBalancerStatus>,
    /// Frontends two Services asked for; the older Service keeps it.
    pub conflicts: Vec<(Frontend, ServicePortKey)>,
    /// LoadBalancer frontends another program on the machine already listens on.
    pub held: Vec<(Frontend, ServicePortKey)>,
}

fn spec(service: &Service) -> Option<&k8s_openapi::api::core::v1::ServiceSpec> {
    service.spec.as_ref()
}

fn service_type(service: &Service) -> &str {
    spec(service).and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP")
}

/// The Service's IPv4 ClusterIPs (none for headless or ExternalName Services).
pub fn cluster_ips(service: &Service) -> Vec<Ipv4Addr> {
    let Some(spec) = spec(service) else { return Vec::new() };
    if service_type(service) == "ExternalName" {
        return Vec::new();
    }
    let listed: Vec<&String> = match spec.cluster_ips.as_ref().filter(|l| !l.is_empty()) {
        Some(list) => list.iter().collect(),
        None => spec.cluster_ip.iter().collect(),
    };
    listed.into_iter().filter_map(|ip| ip.parse::<Ipv4Addr>().ok()).collect()
}

/// Whether this proxy acts as the Service's load balancer: type LoadBalancer and no
/// `loadBalancerClass` asking for another implementation (as k3s's ServiceLB decides).
fn is_our_load_balancer(service: &Service) -> bool {
    service_type(service) == "LoadBalancer" && spec(service).and_then(|s| s.load_balancer_class.as_ref()).is_none()
}

fn current_ingress_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn affinity(service: &Service) -> Option<Duration> {
    let spec = spec(service)?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    Some(seconds.map(Duration::from_secs).unwrap_or(DEFAULT_AFFINITY_TIMEOUT))
}

/// The ready endpoints of one Service port, from the Service's slices: endpoints whose
/// `ready` condition is not false (unset means ready), on the slice port with the same name
/// and protocol. Not-ready endpoints, terminating ones included, get no new connections.
fn ready_endpoints(port: &ServicePort, protocol: Protocol, slices: &[&EndpointSlice]) -> Vec<SocketAddr> {
    let port_name = port.name.as_deref().unwrap_or("");
    let mut endpoints = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(number) = target.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else { continue };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<Ipv4Addr>() {
                    endpoints.insert(SocketAddr::new(IpAddr::V4(ip), number));
                }
            }
        }
    }
    endpoints.into_iter().collect()
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Computes what to serve. Services claim frontends oldest first, so a newer Service asking
/// for a port an older one holds (a LoadBalancer port on the node IP) does not take it.
pub fn desired(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], node_ip: Ipv4Addr) -> Desired {
    desired_with(services, slices, node_ip, &|_| false)
}

/// [`desired`], where `held` tells which LoadBalancer frontends another program already
/// listens on: such a Service stays pending rather than take the port's traffic.
pub fn desired_with(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    node_ip: Ipv4Addr,
    held: &dyn Fn(&Frontend) -> bool,
) -> Desired {
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("");
        if let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME)) {
            slices_by_service.entry((ns, service.as_str())).or_default().push(slice);
        }
    }

    let mut ordered: Vec<&Arc<Service>> = services.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |s: &Service| {
            (s.metadata.creation_timestamp.as_ref().map(|t| t.0), s.metadata.namespace.clone(), s.metadata.name.clone())
        };
        key(a).cmp(&key(b))
    });

    let mut out = Desired::default();
    for service in ordered {
        let ns = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let ips = cluster_ips(service);
        let svc_type = service_type(service);
        let load_balancer = is_our_load_balancer(service);
        let mut lb_complete = true;
        let external_ips: Vec<Ipv4Addr> = spec(service)
            .and_then(|s| s.external_ips.as_ref())
            .map(|l| l.iter().filter_map(|ip| ip.parse().ok()).collect())
            .unwrap_or_default();
        let service_slices = slices_by_service.get(&(ns.as_str(), name.as_str())).map(Vec::as_slice).unwrap_or(&[]);

        // Headless and ExternalName Services have no virtual IP and get no proxy.
        if !ips.is_empty() {
            out.cluster_ips.extend(ips.iter().copied());
            for port in spec(service).and_then(|s| s.ports.as_ref()).into_iter().flatten() {
                let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
                let Some(number) = port_number(port.port) else { continue };
                let key = ServicePortKey {
                    namespace: ns.clone(),
                    name: name.clone(),
                    port_name: port.name.clone().unwrap_or_default(),
                    protocol,
                };
                let mut frontends: Vec<(Frontend, bool)> = ips
                    .iter()
                    .chain(external_ips.iter())
                    .map(|ip| (Frontend { protocol, addr: SocketAddr::new(IpAddr::V4(*ip), number) }, false))
                    .collect();
                if matches!(svc_type, "NodePort" | "LoadBalancer")
                    && let Some(node_port) = port.node_port.and_then(port_number)
                {
                    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node_port);
                    frontends.push((Frontend { protocol, addr: any }, false));
                }
                if load_balancer {
                    let on_node = SocketAddr::new(IpAddr::V4(node_ip), number);
                    frontends.push((Frontend { protocol, addr: on_node }, true));
                }
                for (frontend, is_lb) in frontends {
                    if is_lb && !out.routes.contains_key(&frontend) && held(&frontend) {
                        out.held.push((frontend, key.clone()));
                        lb_complete = false;
                        continue;
                    }
                    if let Some(holder) = out.routes.get(&frontend) {
                        if *holder != key {
                            out.conflicts.push((frontend, key.clone()));
                            lb_complete &= !is_lb;
                        }
                        continue;
                    }
                    out.routes.insert(frontend, key.clone());
                }
                out.backends.insert(
                    key,
                    BackendSpec {
                        endpoints: ready_endpoints(port, protocol, service_slices),
                        affinity: affinity(service),
                    },
                );
            }
        }

        // A LoadBalancer with a class belongs to another implementation: never touch it.
        if spec(service).is_some_and(|s| s.load_balancer_class.is_none()) {
            let current = current_ingress_ips(service);
            let want = if load_balancer {
                // Pending until every port on the node address is this Service's.
                if !ips.is_empty() && lb_complete { vec![node_ip.to_string()] } else { Vec::new() }
            } else if current == [node_ip.to_string()] {
                // No longer a LoadBalancer: withdraw the address this proxy published.
                Vec::new()
            } else {
                current.clone()
            };
            if want != current {
                out.status_updates.push(LoadBalancerStatus {
                    namespace: ns,
                    name,
                    ingress_ips: want,
                    seen_version: service.metadata.resource_version.clone(),
                });
            }
        }
    }
    out
}

/// Per Service port state that outlives table rebuilds: the round-robin position and the
/// client IP pins of session affinity.
#[derive(Debug, Default)]
pub struct BackendState {
    next: AtomicUsize,
    pins: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl BackendState {
    /// Forgets pins older than `timeout`.
    pub fn prune(&self, timeout: Duration) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        pins.retain(|_, (_, last)| last.elapsed() < timeout);
    }
}

/// The endpoints of a Service port as the data path sees them.
#[derive(Debug)]
pub struct Backend {
    /// The Service port, for logs.
    pub key: ServicePortKey,
    /// Ready endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Client IP affinity timeout, if any.
    pub affinity: Option<Duration>,
    /// Shared round-robin and affinity state.
    pub state: Arc<BackendState>,
}

impl Backend {
    /// Picks the endpoint for a new connection or flow from `client`, skipping `tried`:
    /// the client's pinned endpoint under session affinity, otherwise the next in round-robin
    /// order. `None` when no endpoint is left.
    pub fn pick(&self, client: IpAddr, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let candidates: Vec<SocketAddr> = self.endpoints.iter().filter(|e| !tried.contains(e)).copied().collect();
        if candidates.is_empty() {
            return None;
        }
        let Some(timeout) = self.affinity else {
            let i = self.state.next.fetch_add(1, Ordering::Relaxed);
            return candidates.get(i % candidates.len()).copied();
        };
        let mut pins = self.state.pins.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some((endpoint, last)) = pins.get_mut(&client)
            && now.duration_since(*last) < timeout
            && candidates.contains(endpoint)
        {
            // The timeout runs from the client's last new connection, as upstream's.
            *last = now;
            return Some(*endpoint);
        }
        let i = self.state.next.fetch_add(1, Ordering::Relaxed);
        let endpoint = candidates.get(i % candidates.len()).copied()?;
        pins.insert(client, (endpoint, now));
        Some(endpoint)
    }

    /// Whether `endpoint` is still one of the ready endpoints.
    pub fn contains(&self, endpoint: SocketAddr) -> bool {
        self.endpoints.contains(&endpoint)
    }
}

/// What every listener reads on each new connection; swapped whole on every change.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The backend behind each frontend.
    pub routes: HashMap<Frontend, Arc<Backend>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus as LbStatus, ServiceSpec, ServiceStatus,
        SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn service(name: &str, svc_type: &str, cluster_ip: &str, ports: Vec<ServicePort>, age: i64) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 - age).unwrap())),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(svc_type.into()),
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: Some(vec![cluster_ip.into()]),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, node_port: Option<i32>, protocol: &str) -> ServicePort {
        ServicePort { name: Some(name.into()), port, node_port, protocol: Some(protocol.into()), ..Default::default() }
    }

    fn slice(service: &str, port_name: &str, port: i32, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                namespace: Some("default".into()),
                labels: Some([(LABEL_SERVICE_NAME.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some(port_name.into()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    fn sa(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

    #[test]
    fn cluster_ip_node_port_and_load_balancer_frontends() {
        let web = service("web", "LoadBalancer", "10.96.0.20", vec![port("http", 80, Some(30080), "TCP")], 10);
        let dns = service("dns", "ClusterIP", "10.96.0.53", vec![port("dns", 53, None, "UDP")], 5);
        let headless = service("db", "ClusterIP", "None", vec![port("pg", 5432, None, "TCP")], 5);
        let slices = vec![
            Arc::new(slice(
                "web",
                "http",
                8080,
                &[("10.88.0.3", Some(true)), ("10.88.0.2", None), ("10.88.0.4", Some(false))],
            )),
            Arc::new(slice("db", "pg", 5432, &[("10.88.0.9", Some(true))])),
        ];
        let d = desired(&[Arc::new(web), Arc::new(dns), Arc::new(headless)], &slices, NODE);
        let tcp = |addr| Frontend { protocol: Protocol::Tcp, addr };
        let web_key = d.routes.get(&tcp(sa("10.96.0.20", 80))).unwrap().clone();
        assert_eq!(d.routes.get(&tcp(sa("0.0.0.0", 30080))), Some(&web_key));
        assert_eq!(d.routes.get(&tcp(sa("192.168.1.10", 80))), Some(&web_key));
        assert!(d.routes.contains_key(&Frontend { protocol: Protocol::Udp, addr: sa("10.96.0.53", 53) }));
        assert_eq!(d.routes.len(), 4, "the headless Service gets no frontend");
        assert_eq!(d.cluster_ips, BTreeSet::from(["10.96.0.20".parse().unwrap(), "10.96.0.53".parse().unwrap()]));
        assert_eq!(d.backends[&web_key].endpoints, vec![sa("10.88.0.2", 8080), sa("10.88.0.3", 8080)]);
        assert_eq!(
            d.status_updates,
            vec![LoadBalancerStatus {
                namespace: "default".into(),
                name: "web".into(),
                ingress_ips: vec!["192.168.1.10".into()],
                seen_version: None,
            }]
        );
    }

    #[test]
    fn older_service_keeps_a_contended_load_balancer_port() {
        let old = service("old", "LoadBalancer", "10.96.0.2", vec![port("http", 80, Some(30001), "TCP")], 100);
        let new = service("new", "LoadBalancer", "10.96.0.3", vec![port("http", 80, Some(30002), "TCP")], 1);
        let d = desired(&[Arc::new(new), Arc::new(old)], &[], NODE);
        let holder = &d.routes[&Frontend { protocol: Protocol::Tcp, addr: sa("192.168.1.10", 80) }];
        assert_eq!(holder.name, "old");
        assert_eq!(d.conflicts.len(), 1);
        let names: Vec<(&str, usize)> =
            d.status_updates.iter().map(|s| (s.name.as_str(), s.ingress_ips.len())).collect();
        assert_eq!(names, vec![("old", 1)], "the newer Service stays pending");
    }

    #[test]
    fn published_address_is_withdrawn_when_no_longer_a_load_balancer() {
        let mut svc = service("web", "ClusterIP", "10.96.0.2", vec![port("http", 80, None, "TCP")], 1);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LbStatus {
                ingress: Some(vec![LoadBalancerIngress { ip: Some(NODE.to_string()), ..Default::default() }]),
            }),
            ..Default::default()
        });
        let d = desired(&[Arc::new(svc.clone())], &[], NODE);
        assert_eq!(d.status_updates[0].ingress_ips, Vec::<String>::new());
        // Already right: nothing to write.
        svc.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
        assert!(desired(&[Arc::new(svc)], &[], NODE).status_updates.is_empty());
    }

    #[test]
    fn round_robin_and_client_ip_affinity() {
        let endpoints = vec![sa("10.88.0.2", 80), sa("10.88.0.3", 80)];
        let key = ServicePortKey {
            namespace: "d".into(),
            name: "w".into(),
            port_name: String::new(),
            protocol: Protocol::Tcp,
        };
        let rr = Backend { key: key.clone(), endpoints: endpoints.clone(), affinity: None, state: Arc::default() };
        let client: IpAddr = "10.88.0.50".parse().unwrap();
        let picks: BTreeSet<SocketAddr> = (0..4).filter_map(|_| rr.pick(client, &[])).collect();
        assert_eq!(picks.len(), 2);
        assert_eq!(rr.pick(client, &[endpoints[0], endpoints[1]]), None);

        let sticky = Backend {
            key,
            endpoints: endpoints.clone(),
            affinity: Some(Duration::from_secs(60)),
            state: Arc::default(),
        };
        let first = sticky.pick(client, &[]).unwrap();
        assert!((0..5).all(|_| sticky.pick(client, &[]) == Some(first)));
        let other: IpAddr = "10.88.0.51".parse().unwrap();
        assert_ne!(sticky.pick(other, &[]), Some(first), "a second client gets the next endpoint");
        // A failed pinned endpoint is skipped and the client re-pinned.
        let second = sticky.pick(client, &[first]).unwrap();
        assert_ne!(second, first);
        assert_eq!(sticky.pick(client, &[]), Some(second));
    }

    #[test]
    fn affinity_timeout_defaults_to_three_hours() {
        let mut svc = service("w", "ClusterIP", "10.96.0.2", vec![], 1);
        assert_eq!(affinity(&svc), None);
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        assert_eq!(affinity(&svc), Some(DEFAULT_AFFINITY_TIMEOUT));
        svc.spec.as_mut().unwrap().session_affinity_config =
            Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(30) }) });
        assert_eq!(affinity(&svc), Some(Duration::from_secs(30)));
    }
}
