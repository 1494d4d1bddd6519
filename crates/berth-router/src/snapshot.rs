//! The router's configuration at one moment: which host and path go to which pool of ready
//! endpoints. Built from watched objects by pure functions (no IO), swapped in atomically, and
//! read by every request without locks.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use k8s_openapi::api::{
    core::v1::Service,
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressBackend, IngressClass},
};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::route;

/// The IngressClass this router serves.
pub const CLASS_NAME: &str = "berth";
/// The controller name in that IngressClass.
pub const CONTROLLER: &str = "berth.dev/router";

/// How a rule's path is compared with the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    /// Element-wise prefix on `/`-separated segments (also used for ImplementationSpecific).
    Prefix,
}

/// One path rule of one host.
#[derive(Debug)]
pub struct Rule {
    pub path: String,
    pub kind: PathKind,
    pub backend: Arc<Backend>,
}

impl Rule {
    pub fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => prefix_matches(&self.path, path),
        }
    }
}

/// Upstream's Prefix rule: the rule's segments are a prefix of the request's segments, so
/// `/foo` matches `/foo`, `/foo/` and `/foo/bar` but not `/foobar`.
pub fn prefix_matches(rule: &str, path: &str) -> bool {
    let mut wanted = rule.split('/').filter(|s| !s.is_empty());
    let mut got = path.split('/').filter(|s| !s.is_empty());
    loop {
        match (wanted.next(), got.next()) {
            (None, _) => return true,
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// A set of Services one rule sends traffic to, with their weights.
#[derive(Debug)]
pub struct Backend {
    pub services: Vec<Pool>,
    /// The cookie pinning a client to one endpoint, when sessions are sticky.
    pub sticky_cookie: Option<String>,
    /// One cycle of smooth weighted round-robin over `services` (indexes), so that any run of
    /// `schedule.len()` requests splits exactly by weight.
    schedule: Vec<usize>,
    turn: AtomicUsize,
}

fn authority_of(endpoint: SocketAddr) -> http::uri::Authority {
    http::uri::Authority::try_from(endpoint.to_string())
        .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"))
}

/// Smooth weighted round-robin (each turn the pool furthest behind its share goes next).
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let Some((best, _)) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i))) else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

/// The ready endpoints of one Service port.
#[derive(Debug)]
pub struct Pool {
    /// `namespace/name` of the Service, shown in 503 pages and logs.
    pub service: String,
    pub weight: u32,
    pub endpoints: Vec<SocketAddr>,
    /// `endpoints` as URI authorities, in the same order.
    authorities: Vec<http::uri::Authority>,
    /// The Service port speaks HTTP/2 without TLS (`appProtocol: kubernetes.io/h2c` or `grpc`).
    pub h2c: bool,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(service: String, weight: u32, endpoints: Vec<SocketAddr>, h2c: bool) -> Self {
        let authorities = endpoints.iter().map(|e| authority_of(*e)).collect();
        Pool { service, weight, endpoints, authorities, h2c, next: AtomicUsize::new(0) }
    }

    /// `endpoint` (one of this pool's) as a URI authority.
    pub fn authority(&self, endpoint: SocketAddr) -> http::uri::Authority {
        self.endpoints
            .iter()
            .position(|e| *e == endpoint)
            .and_then(|i| self.authorities.get(i).cloned())
            .unwrap_or_else(|| authority_of(endpoint))
    }

    /// The next endpoint in round-robin order, skipping `avoid`.
    pub fn pick(&self, avoid: &[SocketAddr]) -> Option<SocketAddr> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| self.endpoints[(start + i) % n]).find(|e| !avoid.contains(e))
    }
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Choice<'a> {
    pub endpoint: SocketAddr,
    pub pool: &'a Pool,
}

impl Choice<'_> {
    /// The endpoint as a URI authority, made once per snapshot rather than per request.
    pub fn authority(&self) -> http::uri::Authority {
        self.pool.authority(self.endpoint)
    }
}

impl Backend {
    pub fn new(services: Vec<Pool>, sticky_cookie: Option<String>) -> Self {
        let schedule = if services.len() > 1 {
            smooth_schedule(&services.iter().map(|p| p.weight).collect::<Vec<_>>())
        } else {
            vec![]
        };
        Backend { services, sticky_cookie, schedule, turn: AtomicUsize::new(0) }
    }

    /// The next choice in weighted round-robin order; a Service without ready endpoints
    /// gives its turn to the others by weight.
    pub fn next(&self) -> Option<Choice<'_>> {
        if let [only] = self.services.as_slice() {
            return (only.weight > 0).then(|| only.pick(&[])).flatten().map(|endpoint| Choice { endpoint, pool: only });
        }
        if !self.schedule.is_empty() {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            let pool = &self.services[self.schedule[turn % self.schedule.len()]];
            if let Some(endpoint) = pool.pick(&[]) {
                return Some(Choice { endpoint, pool });
            }
        }
        self.choose(rand::random(), &[])
    }

    /// Services with a positive weight, for error pages.
    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().filter(|p| p.weight > 0).map(|p| p.service.as_str()).collect()
    }

    /// Picks a Service by weight and an endpoint in it; `roll` is uniform in `0..u32::MAX`.
    /// A Service without ready endpoints gives its share to the others.
    pub fn choose(&self, roll: u32, avoid: &[SocketAddr]) -> Option<Choice<'_>> {
        let live: Vec<&Pool> =
            self.services.iter().filter(|p| p.weight > 0 && p.endpoints.iter().any(|e| !avoid.contains(e))).collect();
        let total: u64 = live.iter().map(|p| u64::from(p.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut point = u64::from(roll) * total / (u64::from(u32::MAX) + 1);
        for pool in live {
            if point < u64::from(pool.weight) {
                return pool.pick(avoid).map(|endpoint| Choice { endpoint, pool });
            }
            point -= u64::from(pool.weight);
        }
        None
    }

    /// The endpoint a sticky cookie names, if it is still in rotation.
    pub fn pinned(&self, token: &str) -> Option<Choice<'_>> {
        self.services.iter().filter(|p| p.weight > 0).find_map(|pool| {
            pool.endpoints.iter().find(|e| endpoint_token(e) == token).map(|&endpoint| Choice { endpoint, pool })
        })
    }
}

/// An opaque cookie value for an endpoint: its address is never shown to clients.
pub fn endpoint_token(endpoint: &SocketAddr) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(endpoint.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// Everything the router knows, swapped as one value.
#[derive(Default)]
pub struct Snapshot {
    exact: HashMap<String, Vec<Rule>>,
    /// `*.example.com` rules, keyed by `example.com`.
    wildcard: HashMap<String, Vec<Rule>>,
    any_host: Vec<Rule>,
    default_backend: Option<Arc<Backend>>,
    certs: HashMap<String, Arc<CertifiedKey>>,
    /// Every address some EndpointSlice lists as ready, whether routed or not.
    pub ready_ips: HashSet<IpAddr>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("hosts", &self.exact.keys().collect::<Vec<_>>())
            .field("wildcards", &self.wildcard.keys().collect::<Vec<_>>())
            .field("any_host", &self.any_host.len())
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// [`normalize_host`] without a copy for the usual host (lower case, no port, no final dot).
fn normalized(host: &str) -> std::borrow::Cow<'_, str> {
    let plain = host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if plain && !host.ends_with('.') {
        std::borrow::Cow::Borrowed(host)
    } else {
        std::borrow::Cow::Owned(normalize_host(host))
    }
}

/// Lower-cases a Host header and strips its port.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h).to_owned()
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

impl Snapshot {
    /// The backend for a request, by upstream's rules: the host's own rules (exact host, then
    /// wildcard), then rules without host, then the default backend.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = normalized(host);
        let by_host = self.exact.get(host.as_ref()).and_then(|rules| first_match(rules, path));
        let by_wildcard = || {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent).and_then(|rules| first_match(rules, path))
        };
        by_host.or_else(by_wildcard).or_else(|| first_match(&self.any_host, path)).or(self.default_backend.as_ref())
    }

    /// The certificate for a TLS server name, exact or wildcard.
    pub fn cert(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        if let Some(c) = self.certs.get(&name) {
            return Some(Arc::clone(c));
        }
        let (_, parent) = name.split_once('.')?;
        self.certs.get(&format!("*.{parent}")).cloned()
    }

    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.exact.keys()
    }
}

fn first_match<'a>(rules: &'a [Rule], path: &str) -> Option<&'a Arc<Backend>> {
    rules.iter().find(|r| r.matches(path)).map(|r| &r.backend)
}

/// Longest path first; for the same path Exact before Prefix.
fn sort_rules(rules: &mut [Rule]) {
    rules.sort_by(|a, b| {
        let len = |r: &Rule| r.path.trim_end_matches('/').len();
        len(b).cmp(&len(a)).then_with(|| (a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
    });
}

/// The watched objects a snapshot is built from.
#[derive(Default)]
pub struct Inputs<'a> {
    pub ingresses: Vec<&'a Ingress>,
    pub classes: Vec<&'a IngressClass>,
    pub services: Vec<&'a Service>,
    pub slices: Vec<&'a EndpointSlice>,
    /// TLS certificates by `namespace/secret`.
    pub certs: HashMap<String, Arc<CertifiedKey>>,
    pub routes: Vec<&'a Value>,
    pub route_hosts: route::HostNaming,
}

/// Which Ingresses this router serves: class `berth`, or no class while `berth` is the default.
pub fn ours(ingress: &Ingress, classes: &[&IngressClass]) -> bool {
    let annotated = ingress.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/ingress.class")).cloned();
    let class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.clone()).or(annotated);
    match class {
        Some(name) => classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name.as_str())
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
        }),
        None => classes.iter().any(|c| {
            c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
        }),
    }
}

struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

/// A Service port as a backend names it.
#[derive(Debug, Clone)]
pub enum PortRef {
    Number(i32),
    Name(String),
    /// The Service's first port.
    First,
}

impl<'a> Resolver<'a> {
    fn new(inputs: &Inputs<'a>) -> Self {
        let mut services = HashMap::new();
        for s in &inputs.services {
            if let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref()) {
                services.insert((ns, name), *s);
            }
        }
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in &inputs.slices {
            let owner = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.as_deref(), owner) {
                slices.entry((ns, svc.as_str())).or_default().push(*s);
            }
        }
        Resolver { services, slices }
    }

    /// The ready endpoints of a Service port.
    fn pool(&self, ns: &str, name: &str, port: &PortRef, weight: u32) -> Pool {
        let display = format!("{ns}/{name}");
        let Some(svc) = self.services.get(&(ns, name)) else { return Pool::new(display, weight, Vec::new(), false) };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).cloned().unwrap_or_default();
        let found = match port {
            PortRef::Number(n) => ports.iter().find(|p| p.port == *n),
            PortRef::Name(n) => ports.iter().find(|p| p.name.as_deref() == Some(n.as_str())),
            PortRef::First => ports.first(),
        };
        let Some(sp) = found else { return Pool::new(display, weight, Vec::new(), false) };
        let h2c = matches!(sp.app_protocol.as_deref(), Some("kubernetes.io/h2c" | "grpc" | "h2c"));
        let port_name = sp.name.clone().unwrap_or_default();
        let mut endpoints = Vec::new();
        for slice in self.slices.get(&(ns, name)).into_iter().flatten() {
            let Some(target) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            let Ok(target) = u16::try_from(target) else { continue };
            for ep in &slice.endpoints {
                if !endpoint_ready(ep) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        endpoints.push(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        Pool::new(display, weight, endpoints, h2c)
    }
}

/// Upstream: a missing `ready` condition means ready.
fn endpoint_ready(ep: &k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
}

fn ingress_backend(r: &Resolver<'_>, ns: &str, b: &IngressBackend) -> Option<Arc<Backend>> {
    let svc = b.service.as_ref()?;
    let port = match svc.port.as_ref() {
        Some(p) if p.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            PortRef::Name(p.name.clone().unwrap_or_default())
        }
        Some(p) if p.number.is_some() => PortRef::Number(p.number.unwrap_or_default()),
        _ => PortRef::First,
    };
    Some(Arc::new(Backend::new(vec![r.pool(ns, &svc.name, &port, 1)], None)))
}

/// Builds a snapshot from the watched objects.
pub fn build(inputs: &Inputs<'_>) -> Snapshot {
    let r = Resolver::new(inputs);
    let mut snap = Snapshot::default();
    for slice in &inputs.slices {
        for ep in slice.endpoints.iter().filter(|e| endpoint_ready(e)) {
            snap.ready_ips.extend(ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
        }
    }
    // Oldest first, so that when two objects claim the same host and path the older wins.
    let mut ingresses: Vec<&Ingress> = inputs.ingresses.iter().copied().filter(|i| ours(i, &inputs.classes)).collect();
    ingresses.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), &b.metadata.name))
    });
    let mut seen: HashSet<(String, String, bool)> = HashSet::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let Some(spec) = &ing.spec else { continue };
        if snap.default_backend.is_none()
            && let Some(b) = &spec.default_backend
        {
            snap.default_backend = ingress_backend(&r, ns, b);
        }
        for tls in spec.tls.iter().flatten() {
            let Some(secret) = &tls.secret_name else { continue };
            let Some(cert) = inputs.certs.get(&format!("{ns}/{secret}")) else { continue };
            for host in tls.hosts.iter().flatten() {
                snap.certs.entry(host.to_ascii_lowercase()).or_insert_with(|| Arc::clone(cert));
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let kind = if p.path_type == "Exact" { PathKind::Exact } else { PathKind::Prefix };
                let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
                if !seen.insert((host.clone(), path.clone(), kind == PathKind::Exact)) {
                    continue;
                }
                let Some(backend) = ingress_backend(&r, ns, &p.backend) else { continue };
                snap.insert(&host, Rule { path, kind, backend });
            }
        }
    }
    for route in &inputs.routes {
        let Some(spec) = route::RouteSpec::parse(route) else { continue };
        let ns = route.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
        let name = route.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let services = spec.backends.iter().map(|(svc, weight)| r.pool(ns, svc, &spec.port, *weight)).collect();
        let sticky_cookie = spec.sticky.then(|| format!("berth_{}", &endpoint_token_str(&format!("{ns}/{name}"))));
        let backend = Arc::new(Backend::new(services, sticky_cookie));
        let path = spec.path.clone();
        for host in inputs.route_hosts.hosts(name, ns, spec.host.as_deref()) {
            if !seen.insert((host.clone(), path.clone(), false)) {
                continue;
            }
            snap.insert(&host, Rule { path: path.clone(), kind: PathKind::Prefix, backend: Arc::clone(&backend) });
        }
    }
    for rules in snap.exact.values_mut().chain(snap.wildcard.values_mut()) {
        sort_rules(rules);
    }
    sort_rules(&mut snap.any_host);
    snap
}

fn endpoint_token_str(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..6])
}

impl Snapshot {
    fn insert(&mut self, host: &str, rule: Rule) {
        if host.is_empty() {
            self.any_host.push(rule);
        } else if let Some(parent) = host.strip_prefix("*.") {
            self.wildcard.entry(parent.to_owned()).or_default().push(rule);
        } else {
            self.exact.entry(host.to_owned()).or_default().push(rule);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prefix_matching_is_by_path_elements() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/foo", "/foo"));
        assert!(prefix_matches("/foo", "/foo/"));
        assert!(prefix_matches("/foo/", "/foo"));
        assert!(prefix_matches("/foo", "/foo/bar"));
        assert!(!prefix_matches("/foo", "/foobar"));
        assert!(!prefix_matches("/aaa/bb", "/aaa/bbb"));
    }

    #[test]
    fn hosts_lose_ports_and_case() {
        assert_eq!(normalize_host("Web.Example.com:8080"), "web.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("a.b."), "a.b");
    }

    fn backend(name: &str) -> Arc<Backend> {
        Arc::new(Backend::new(vec![Pool::new(name.into(), 1, vec![], false)], None))
    }

    #[test]
    fn longest_path_then_exact_wins_and_wildcards_cover_one_label() {
        let mut s = Snapshot::default();
        s.insert("a.com", Rule { path: "/".into(), kind: PathKind::Prefix, backend: backend("root") });
        s.insert("a.com", Rule { path: "/api".into(), kind: PathKind::Prefix, backend: backend("api") });
        s.insert("a.com", Rule { path: "/api".into(), kind: PathKind::Exact, backend: backend("exact") });
        s.insert("*.b.com", Rule { path: "/".into(), kind: PathKind::Prefix, backend: backend("wild") });
        for rules in s.exact.values_mut().chain(s.wildcard.values_mut()) {
            sort_rules(rules);
        }
        let name = |h: &str, p: &str| s.find(h, p).map(|b| b.services[0].service.clone());
        assert_eq!(name("a.com", "/api").as_deref(), Some("exact"));
        assert_eq!(name("a.com", "/api/v1").as_deref(), Some("api"));
        assert_eq!(name("a.com", "/apix").as_deref(), Some("root"));
        assert_eq!(name("x.b.com", "/").as_deref(), Some("wild"));
        assert_eq!(name("y.x.b.com", "/"), None);
        assert_eq!(name("other.com", "/"), None);
    }

    #[test]
    fn weights_split_traffic_and_empty_pools_give_way() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let backend = Backend::new(
            vec![Pool::new("ns/a".into(), 90, vec![a], false), Pool::new("ns/b".into(), 10, vec![b], false)],
            None,
        );
        let _warm_up = backend.next();
        let to_b = (0..1000u32).filter(|_| backend.next().unwrap().endpoint == b).count();
        assert_eq!(to_b, 100);
        let first_50 = (0..50u32).filter(|_| backend.next().unwrap().endpoint == b).count();
        assert!((4..=6).contains(&first_50), "{first_50}");
        let schedule = smooth_schedule(&[5, 1, 1]);
        assert_eq!(schedule, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(backend.choose(0, &[a]).unwrap().endpoint, b, "a failed endpoint is avoided");
        let empty = Backend::new(vec![Pool::new("ns/a".into(), 1, vec![], false)], None);
        assert!(empty.choose(7, &[]).is_none());
        assert_eq!(backend.pinned(&endpoint_token(&b)).unwrap().endpoint, b);
    }
}
