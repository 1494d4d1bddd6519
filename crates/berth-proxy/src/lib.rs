//! Berth's service proxy: Kubernetes Service (L4) traffic, in process.
//!
//! Every ClusterIP is put on a dummy interface (`berth-svc`) so the host and the pods reach it,
//! and the proxy listens on each `ClusterIP:port` (TCP, and UDP per client flow), on
//! `0.0.0.0:nodePort` for NodePort and LoadBalancer Services, and on `nodeIP:port` for
//! LoadBalancer Services, whose status then shows the node IP as k3s's ServiceLB does. Each new
//! connection goes to one ready endpoint from the Service's EndpointSlices, round-robin or
//! pinned by client IP (`sessionAffinity: ClientIP`). See docs/networking.md for the design.
//!
//! Reconfiguration swaps an immutable routing table ([`arc_swap`]) that listeners read once per
//! new connection, so established connections are never touched by it.

mod forward;
mod interface;
pub mod kernel;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use berth_watch::watch;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::Notify;

use forward::{AbortOnDrop, DataPathSettings};
pub use interface::InterfaceError;
use interface::ServiceInterface;
use kernel::{FrontendKind, Kernel, KernelRoute};
pub use kernel::{KernelError, remove_rules};
pub use table::Protocol;
use table::{Backend, BackendState, Frontend, LoadBalancerStatus, RouteTable, ServicePortKey};

/// Which data path carries Service traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables NAT rules (see [`kernel`]); Service ports whose endpoints the kernel cannot
    /// reach (the API server on loopback) stay in user space. Their ClusterIP listeners bind a
    /// free port and a rule sends the Service port there: a wildcard listener on the same port
    /// (the HTTP router's `*:443` and the `kubernetes` Service's 443) would make binding the
    /// Service port itself fail.
    Kernel,
    /// Every frontend is a listener in this process.
    Userspace,
}

/// Whether `frontend` is on a ClusterIP (not a NodePort or a LoadBalancer address).
fn is_cluster_ip(desired: &table::Desired, frontend: &Frontend) -> bool {
    matches!(frontend.addr.ip(), std::net::IpAddr::V4(v4) if desired.cluster_ips.contains(&v4))
}

/// The interface name Berth uses for ClusterIPs by default.
pub const DEFAULT_SERVICE_INTERFACE: &str = "berth-svc";

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The machine's primary address: LoadBalancer Services are served on it and report it as
    /// their external IP.
    pub node_ip: Ipv4Addr,
    /// Whether to keep every ClusterIP on the service interface (needs CAP_NET_ADMIN). Without
    /// it, listeners still bind ClusterIPs (freebind), but only traffic routed to this host by
    /// other means reaches them.
    pub manage_service_interface: bool,
    /// The dummy interface holding the ClusterIPs.
    pub service_interface: String,
    /// How long to wait for one endpoint to accept a connection before trying the next.
    pub connect_timeout: Duration,
    /// A UDP flow quiet this long in both directions is forgotten.
    pub udp_idle_timeout: Duration,
    /// How often to re-check everything even without changes (retries failed binds, interface
    /// drift and status writes; expires affinity pins).
    pub resync_interval: Duration,
    /// Kernel rules or user-space listeners.
    pub mode: ProxyMode,
    /// The pods' address range: connections from outside it are masqueraded (kernel mode).
    pub pod_cidr: String,
    /// Service ports this process answers itself instead of pods: the `kubernetes` Service
    /// (the API server's own address) and cluster DNS when it had to bind a free port.
    pub served_here: Vec<ServedHere>,
}

/// A Service port whose one endpoint is a socket of this process, whatever its
/// EndpointSlices say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedHere {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Which of its ports: the protocol (`kube-dns` has a UDP and a TCP port 53).
    pub protocol: Protocol,
    /// Where that port leads.
    pub endpoint: SocketAddr,
}

impl ProxyConfig {
    /// Defaults for a node whose primary address is `node_ip`, managing `berth-svc`.
    pub fn new(node_ip: Ipv4Addr) -> Self {
        ProxyConfig {
            node_ip,
            manage_service_interface: true,
            service_interface: DEFAULT_SERVICE_INTERFACE.to_string(),
            connect_timeout: Duration::from_secs(5),
            // Linux conntrack keeps an unreplied UDP entry 30 s.
            udp_idle_timeout: Duration::from_secs(30),
            resync_interval: Duration::from_secs(10),
            mode: ProxyMode::Userspace,
            pod_cidr: "10.88.0.0/16".to_owned(),
            served_here: Vec::new(),
        }
    }
}

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service interface could not be set up.
    #[error("service interface: {0}")]
    Interface(#[from] InterfaceError),
    /// A watch ended, which only happens when its stream closes.
    #[error("service proxy: {0} stopped")]
    Stopped(&'static str),
}

/// Deletes the service interface called `name` and every ClusterIP on it (at shutdown, or to
/// clean up after tests). Nothing happens if it does not exist.
pub async fn remove_service_interface(name: &str) -> Result<(), Error> {
    Ok(ServiceInterface::new(name)?.remove().await?)
}

/// Runs the proxy until a watch stops (an error) or the future is dropped. Dropping it closes
/// every listener but leaves the service interface and its addresses in place (see
/// [`remove_service_interface`]); established connections end with the runtime.
pub async fn run(client: Client, config: ProxyConfig) -> Result<(), Error> {
    let interface = if config.manage_service_interface {
        let interface = ServiceInterface::new(&config.service_interface)?;
        interface.ensure().await?;
        Some(interface)
    } else {
        None
    };
    let kernel = (config.mode == ProxyMode::Kernel).then(|| Kernel::new(&config.service_interface, &config.pod_cidr));
    let changed = Arc::new(Notify::new());
    let (services, services_watch) = watch(Api::<Service>::all(client.clone()), changed.clone());
    let (slices, slices_watch) = watch(Api::<EndpointSlice>::all(client.clone()), changed.clone());

    let reconciler = async move {
        // Acting on half-filled caches would drop Services that only look missing.
        let _ = futures::join!(services.wait_until_ready(), slices.wait_until_ready());
        let mut proxy = Proxy::new(client, config, interface, kernel);
        tracing::info!(node_ip = %proxy.config.node_ip, "service proxy started");
        loop {
            proxy.reconcile(&services.state(), &slices.state()).await;
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(proxy.config.resync_interval) => {}
            }
        }
    };

    tokio::select! {
        _ = services_watch => Err(Error::Stopped("service watch")),
        _ = slices_watch => Err(Error::Stopped("endpointslice watch")),
        () = reconciler => Err(Error::Stopped("reconciler")),
    }
}

/// The proxy's state; owned by the one reconcile task, so nothing in it is locked.
struct Proxy {
    client: Client,
    config: ProxyConfig,
    interface: Option<ServiceInterface>,
    table: Arc<ArcSwap<RouteTable>>,
    settings: Arc<DataPathSettings>,
    /// Open listeners, with the address each is bound to (not the frontend's own when the
    /// kernel redirects the frontend there).
    listeners: HashMap<Frontend, (AbortOnDrop, SocketAddr)>,
    /// Frontends whose bind failed, with the error last logged (to log each new error once).
    bind_failures: HashMap<Frontend, String>,
    backend_states: HashMap<ServicePortKey, Arc<BackendState>>,
    /// The last interface error logged, to log each new one once.
    interface_error: Option<String>,
    /// LoadBalancer statuses written, with the resourceVersion the write produced, so a watch
    /// cache that has not caught up yet does not cause the same write again.
    written_statuses: HashMap<(String, String), (Vec<String>, Option<String>)>,
    /// The kernel data path (kernel mode), the endpoints its UDP ports had, the last error.
    kernel: Option<Kernel>,
    udp_endpoints: BTreeMap<Frontend, Vec<SocketAddr>>,
    kernel_error: Option<String>,
    /// LoadBalancer frontends reported as held by another listener.
    reported_held: HashSet<(Frontend, ServicePortKey)>,
}

impl Proxy {
    fn new(client: Client, config: ProxyConfig, interface: Option<ServiceInterface>, kernel: Option<Kernel>) -> Self {
        let settings = Arc::new(DataPathSettings {
            connect_timeout: config.connect_timeout,
            udp_idle_timeout: config.udp_idle_timeout,
        });
        Proxy {
            client,
            config,
            interface,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            settings,
            listeners: HashMap::new(),
            bind_failures: HashMap::new(),
            backend_states: HashMap::new(),
            interface_error: None,
            written_statuses: HashMap::new(),
            kernel,
            udp_endpoints: BTreeMap::new(),
            kernel_error: None,
            reported_held: HashSet::new(),
        }
    }

    async fn reconcile(&mut self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        let kernel_mode = self.kernel.is_some();
        let held = |f: &Frontend| kernel_mode && kernel::held_by_listener(f);
        let mut desired = table::desired_with(services, slices, self.config.node_ip, &held);
        for (frontend, loser) in &desired.conflicts {
            tracing::debug!(frontend = %frontend.addr, service = %format!("{}/{}", loser.namespace, loser.name), "address already taken by an older service");
        }
        self.report_held(&desired.held).await;
        for here in &self.config.served_here {
            for (key, spec) in desired.backends.iter_mut() {
                if key.namespace == here.namespace && key.name == here.name && key.protocol == here.protocol {
                    spec.endpoints = vec![here.endpoint];
                }
            }
        }
        // Frontends served by listeners here: all of them in user-space mode, else those
        // whose endpoints the kernel cannot DNAT to.
        let userspace: BTreeSet<Frontend> = desired
            .routes
            .iter()
            .filter(|(_, key)| {
                !kernel_mode
                    || desired
                        .backends
                        .get(*key)
                        .is_some_and(|b| b.endpoints.iter().any(|e| !kernel::reachable_by_dnat(e)))
            })
            .map(|(f, _)| *f)
            .collect();

        // 1. The routing table first, so a listener opened below finds its backend at once.
        self.backend_states.retain(|key, _| desired.backends.contains_key(key));
        let mut backends: HashMap<&ServicePortKey, Arc<Backend>> = HashMap::new();
        for (key, spec) in &desired.backends {
            let state = self.backend_states.entry(key.clone()).or_default().clone();
            if let Some(timeout) = spec.affinity {
                state.prune(timeout);
            }
            backends.insert(
                key,
                Arc::new(Backend {
                    key: key.clone(),
                    endpoints: spec.endpoints.clone(),
                    affinity: spec.affinity,
                    state,
                }),
            );
        }
        let routes = desired
            .routes
            .iter()
            .filter_map(|(frontend, key)| backends.get(key).map(|b| (*frontend, b.clone())))
            .collect();
        self.table.store(Arc::new(RouteTable { routes }));

        // 2. Listeners: close what is no longer routed (its connections live on), open the rest.
        self.listeners.retain(|frontend, _| {
            let keep = userspace.contains(frontend);
            if !keep {
                tracing::info!(frontend = %frontend.addr, protocol = ?frontend.protocol, "closed listener");
            }
            keep
        });
        self.bind_failures.retain(|frontend, _| userspace.contains(frontend));
        for frontend in &userspace {
            if self.listeners.contains_key(frontend) {
                continue;
            }
            let redirected = kernel_mode && is_cluster_ip(&desired, frontend);
            let bind = if redirected { SocketAddr::new(frontend.addr.ip(), 0) } else { frontend.addr };
            match forward::listen(*frontend, bind, self.table.clone(), self.settings.clone()) {
                Ok(listener) => {
                    tracing::info!(frontend = %frontend.addr, protocol = ?frontend.protocol, bound = %listener.1, "listening");
                    self.bind_failures.remove(frontend);
                    self.listeners.insert(*frontend, listener);
                }
                Err(err) => {
                    let text = err.to_string();
                    if self.bind_failures.get(frontend) != Some(&text) {
                        tracing::warn!(frontend = %frontend.addr, protocol = ?frontend.protocol, error = %text, "cannot listen; will retry");
                    }
                    self.bind_failures.insert(*frontend, text);
                }
            }
        }

        // 2b. Kernel rules for the rest.
        if self.kernel.is_some() {
            self.sync_kernel(&desired, &userspace).await;
        }

        // 3. The ClusterIPs on the service interface.
        if let Some(interface) = &self.interface {
            match interface.sync(&desired.cluster_ips).await {
                Ok((added, removed)) => {
                    if !added.is_empty() || !removed.is_empty() {
                        tracing::info!(interface = interface.name(), ?added, ?removed, "updated service addresses");
                    }
                    self.interface_error = None;
                }
                Err(err) => {
                    let text = err.to_string();
                    if self.interface_error.as_ref() != Some(&text) {
                        tracing::warn!(interface = interface.name(), error = %text, "cannot update service addresses; will retry");
                    }
                    self.interface_error = Some(text);
                }
            }
        }

        // 4. LoadBalancer statuses.
        self.written_statuses
            .retain(|(ns, name), _| desired.status_updates.iter().any(|s| s.namespace == *ns && s.name == *name));
        for status in &desired.status_updates {
            let key = (status.namespace.clone(), status.name.clone());
            if let Some((ingress, written)) = self.written_statuses.get(&key)
                && *ingress == status.ingress_ips
                && is_older(status.seen_version.as_deref(), written.as_deref())
            {
                continue;
            }
            if let Some(version) = self.write_status(status).await {
                self.written_statuses.insert(key, (status.ingress_ips.clone(), Some(version)));
            }
        }
    }

    async fn sync_kernel(&mut self, desired: &table::Desired, userspace: &BTreeSet<Frontend>) {
        let Some(kernel) = self.kernel.as_mut() else { return };
        let mut routes: Vec<KernelRoute> = desired
            .routes
            .iter()
            .filter(|(f, _)| !userspace.contains(*f))
            .map(|(frontend, key)| {
                let kind = if frontend.addr.ip().is_unspecified() {
                    FrontendKind::NodePort
                } else if is_cluster_ip(desired, frontend) {
                    FrontendKind::ClusterIp
                } else {
                    FrontendKind::External
                };
                KernelRoute { frontend: *frontend, kind, key: key.clone() }
            })
            .collect();
        // User-space ClusterIP listeners bound elsewhere: a rule with the listener as the one
        // endpoint of a Service port of its own (":" is not allowed in port names).
        // The backends are copied only when there is such a listener (usually just one).
        let mut backends = std::borrow::Cow::Borrowed(&desired.backends);
        for (frontend, key) in desired.routes.iter().filter(|(f, _)| userspace.contains(*f)) {
            let Some((_, bound)) = self.listeners.get(frontend).filter(|(_, bound)| *bound != frontend.addr) else {
                continue;
            };
            let key = ServicePortKey { port_name: format!("{}:listener", key.port_name), ..key.clone() };
            backends.to_mut().insert(key.clone(), table::BackendSpec { endpoints: vec![*bound], affinity: None });
            routes.push(KernelRoute { frontend: *frontend, kind: FrontendKind::ClusterIp, key });
        }
        match kernel.apply(&routes, &backends).await {
            Ok(changed) => {
                if changed {
                    tracing::info!(frontends = routes.len(), "updated service rules");
                }
                self.kernel_error = None;
            }
            Err(err) => {
                let text = err.to_string();
                if self.kernel_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot update service rules; will retry");
                }
                self.kernel_error = Some(text);
                return;
            }
        }
        // UDP flows keep their translation in conntrack: drop the ones the change made wrong.
        let mut now: BTreeMap<Frontend, Vec<SocketAddr>> = BTreeMap::new();
        for route in routes.iter().filter(|r| r.frontend.protocol == Protocol::Udp) {
            let endpoints = backends.get(&route.key).map(|b| b.endpoints.clone()).unwrap_or_default();
            let before = self.udp_endpoints.get(&route.frontend);
            let gone: Vec<SocketAddr> =
                before.into_iter().flatten().filter(|e| !endpoints.contains(e)).copied().collect();
            let was_empty = before.is_none_or(Vec::is_empty) && !endpoints.is_empty();
            if !gone.is_empty() || was_empty {
                kernel.flush_udp(&route.frontend, &gone, was_empty).await;
            }
            now.insert(route.frontend, endpoints);
        }
        self.udp_endpoints = now;
    }

    /// Tells, once per Service port and address, that a LoadBalancer waits for a port another
    /// program holds: a log line and a Warning Event on the Service.
    async fn report_held(&mut self, held: &[(Frontend, ServicePortKey)]) {
        let current: HashSet<(Frontend, ServicePortKey)> = held.iter().cloned().collect();
        self.reported_held.retain(|h| current.contains(h));
        for (frontend, key) in held {
            if !self.reported_held.insert((*frontend, key.clone())) {
                continue;
            }
            let message = format!(
                "cannot expose {}/{} on {} ({:?}): another program on this machine listens there; the load balancer stays pending",
                key.namespace, key.name, frontend.addr, frontend.protocol
            );
            tracing::warn!("{message}");
            let now = chrono_now();
            let event = serde_json::json!({
                "metadata": {"generateName": format!("{}.", key.name), "namespace": key.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": key.namespace, "name": key.name},
                "reason": "PortInUse",
                "message": message,
                "type": "Warning",
                "source": {"component": "berth-service-proxy"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            });
            let Ok(event) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(event) else { continue };
            let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &key.namespace);
            if let Err(err) = api.create(&kube::api::PostParams::default(), &event).await {
                tracing::debug!(%err, "cannot record event");
            }
        }
    }

    /// Writes one LoadBalancer status; returns the Service's new resourceVersion.
    async fn write_status(&self, status: &LoadBalancerStatus) -> Option<String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &status.namespace);
        let ingress = if status.ingress_ips.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Array(
                status.ingress_ips.iter().map(|ip| serde_json::json!({"ip": ip, "ipMode": "VIP"})).collect(),
            )
        };
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let service = format!("{}/{}", status.namespace, status.name);
        match api.patch_status(&status.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => {
                tracing::info!(%service, ingress = ?status.ingress_ips, "updated load balancer status");
                updated.metadata.resource_version
            }
            Err(err) => {
                // The next watch event or resync tries again.
                tracing::info!(%service, %err, "cannot update load balancer status");
                None
            }
        }
    }
}

/// Now, in the RFC 3339 form with second precision that Kubernetes timestamps use.
fn chrono_now() -> String {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::from_second(Timestamp::now().as_second()).map(|t| t.to_string()).unwrap_or_default()
}

/// Whether resourceVersion `seen` is older than `written` (both as the numbers Berth and etcd
/// use; anything unparsable counts as not older, so the write is simply repeated).
fn is_older(seen: Option<&str>, written: Option<&str>) -> bool {
    match (seen.and_then(|s| s.parse::<u64>().ok()), written.and_then(|w| w.parse::<u64>().ok())) {
        (Some(seen), Some(written)) => seen < written,
        _ => false,
    }
}
