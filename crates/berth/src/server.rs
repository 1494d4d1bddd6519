//! `berth server`: wires the store, the API server, the controllers and the node agent.

use std::sync::Arc;

use anyhow::Context;
use berth_store::{Durability, SqliteStore, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::{ServerArgs, default_data_dir};

/// Descriptor slots the server's table is given at start (a few per running pod).
const FD_TABLE_SLOTS: u64 = 4096;

/// Grows this process's file descriptor table to [`FD_TABLE_SLOTS`] while it has one thread.
/// The kernel grows the table as descriptors are opened, and once threads share it each growth
/// waits for an RCU grace period (traced: 12.8 ms, stalling the worker thread that opened the
/// descriptor during a pod start). Grown now, that never happens below the slots given. The
/// table costs 8 bytes a slot. Call before any other thread starts.
pub fn presize_fd_table() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    let Ok(highest) = i32::try_from(FD_TABLE_SLOTS.min(limit).saturating_sub(1)) else { return };
    if highest < 3 {
        return;
    }
    // A duplicate at the highest slot makes the kernel size the table for it; closing it
    // leaves the table as it is (tables never shrink).
    if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), highest) {
        drop(fd);
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("resolving {}", data_dir.display()))?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ];
    // Pods reach the API at the `kubernetes` Service's cluster IP.
    if let Ok(ranges) = berth_apiserver::ServiceRanges::parse(&args.service_cidr, &args.service_node_port_range) {
        names.push(ranges.kubernetes_ip().to_string());
    }
    let ip = args.listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let host = if ip.is_unspecified() { "127.0.0.1".to_owned() } else { ip.to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let server_address = format!("{host}:{}", args.listen.port());
    let url = format!("https://{server_address}");
    // Credentials and the kubeconfig are made while the store opens: on a first start both
    // wait on disk flushes, and neither needs the other.
    let credentials = {
        let (dir, url) = (data_dir.clone(), url.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let pki = berth_apiserver::pki::ensure(&dir, &names).context("creating credentials")?;
            let kubeconfig = berth_apiserver::pki::write_kubeconfig(&dir, &url, &pki)?;
            Ok((pki, kubeconfig))
        })
    };

    let defaults = StoreOptions::default();
    let options = StoreOptions {
        sync: if args.fast_commit { Durability::Normal } else { Durability::Full },
        history: args.store_history.unwrap_or(defaults.history),
        compact_interval: args
            .store_compaction_interval
            .map_or(defaults.compact_interval, std::time::Duration::from_secs),
        ..defaults
    };
    let db = data_dir.join("state.db");
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db, options))
        .await
        .context("opening the store")?
        .context("opening the store")?;
    let (pki, kubeconfig) = credentials.await.context("creating credentials")??;

    let node_dir = data_dir.join("node");
    let pod_cidr: berth_node::Ipv4Cidr =
        args.pod_cidr.parse().map_err(|e| anyhow::anyhow!("--pod-cidr {}: {e}", args.pod_cidr))?;
    let node_defaults = berth_node::NodeConfig::new(node_dir.clone());
    // Usage is sampled every few seconds; rates cover the last two intervals.
    let sampler = (!args.no_node).then(|| {
        Arc::new(berth_node::metrics::Sampler::new(
            berth_node::metrics::Reader::new(&node_dir, &node_defaults.cgroup_parent),
            3,
        ))
    });
    let sampling = sampler.clone().map(|s| tokio::spawn(s.run(std::time::Duration::from_secs(5))));
    let pod_io: Option<Arc<dyn berth_apiserver::PodIo>> = (!args.no_node).then(|| {
        Arc::new(crate::podio::NodeLogs {
            data_dir: node_dir.clone(),
            node_name: node_defaults.node_name.clone(),
            metrics: sampler.clone(),
        }) as _
    });
    let service_ranges = berth_apiserver::ServiceRanges::parse(&args.service_cidr, &args.service_node_port_range)
        .map_err(|e| anyhow::anyhow!("--service-cidr/--service-node-port-range: {e}"))?;
    let state = berth_apiserver::build_state(
        store,
        pki.admin_token.clone(),
        server_address.clone(),
        pod_io,
        service_ranges.clone(),
    )
    .await
    .context("starting the API")?;
    let listener = berth_apiserver::bind(args.listen).await?;

    let shutdown = CancellationToken::new();
    let config = berth_apiserver::ServerConfig {
        listen: args.listen,
        cert_pem: pki.server_cert_pem.clone(),
        key_pem: pki.server_key_pem.clone(),
        token: pki.admin_token.clone(),
        server_address,
    };
    let serve = {
        let shutdown = shutdown.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move { berth_apiserver::serve(listener, &config, state, shutdown).await })
    };
    // Controllers reach the API as any client would, with the kubeconfig's credentials and
    // through the same handlers; by default the request is handed to them in-process.
    let client_config = client_config(&kubeconfig).await?;
    let network = kube::Client::try_from(client_config.clone()).context("building the API client")?;
    let client = if args.api_transport == "https" {
        network
    } else {
        crate::in_process::client(&client_config, berth_apiserver::router(Arc::clone(&state)), network)
            .context("building the in-process API client")?
    };
    let machine_ip = berth_node::agent::node::detect_host_ip();
    // The router first: a taken port fails the start before anything else runs.
    let route_suffix = args.route_suffix.clone().unwrap_or_else(|| format!("{machine_ip}.nip.io"));
    let router_config = berth_router::RouterConfig {
        http: args.http_listen.0,
        https: args.https_listen.0,
        route_suffix,
        timeouts: berth_router::Timeouts::default(),
        address: Some(machine_ip),
        threads: args
            .router_threads
            .map_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get), usize::from),
    };
    let router = berth_router::start(client.clone(), router_config, shutdown.clone())
        .await
        .context("starting the HTTP router (--http-listen and --https-listen choose its ports; `off` turns one off)")?;
    let controllers = (!args.no_controllers).then(|| {
        let client = client.clone();
        // The `kubernetes` Service names the API server at the machine's address (as k3s's
        // does) unless it listens on one address of its own.
        let api_ip = if ip.is_unspecified() || ip.is_loopback() { machine_ip } else { ip };
        let api_endpoint = std::net::SocketAddr::new(api_ip, args.listen.port());
        tokio::spawn(async move {
            let publish = berth_controllers::endpoints::apiserver::publish(client.clone(), api_endpoint);
            tokio::select! {
                result = berth_controllers::run(client) => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "controllers stopped");
                    }
                }
                () = publish => {}
            }
        })
    });
    let node = (!args.no_node).then(|| {
        let client = client.clone();
        let mut config = berth_node::NodeConfig::new(node_dir.clone());
        config.drain = Some(berth_node::DrainHook(Arc::new(RouterDrain(router.clone()))));
        config.network.pod_cidr = pod_cidr;
        config.network.bridge = args.pod_bridge.clone();
        config.insecure_registries = args.insecure_registries.clone();
        config.log_rotation =
            berth_node::Rotation { max_bytes: args.container_log_max_size, max_files: args.container_log_max_files };
        config.capacity.pods = Some(args.max_pods);
        config.cgroup_favordynmods = args.cgroup_favordynmods;
        config.runtime = args.container_runtime.parse().unwrap_or_default();
        config.cluster_dns = (!args.no_dns).then(|| service_ranges.dns_ip());
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = berth_node::run_until(client, config, stop).await {
                tracing::error!(error = %e, "node agent stopped: pods on this machine will not run");
            }
        })
    });
    // Cluster DNS, on the kube-dns Service's address, runs with the node too. Its sockets are
    // bound here so the proxy knows whether port 53 must be sent to a free port instead.
    let dns_listen = std::net::SocketAddr::new(service_ranges.dns_ip().into(), 53);
    let dns_listeners = if args.no_node || args.no_dns {
        None
    } else {
        match berth_dns::Listeners::bind(dns_listen) {
            Ok(listeners) => Some(listeners),
            Err(e) => {
                tracing::error!(error = %e, "cluster DNS cannot listen: pods cannot resolve Service names");
                None
            }
        }
    };
    let mut served_here = Vec::new();
    if let Some(Ok((udp, tcp))) = dns_listeners.as_ref().map(berth_dns::Listeners::local_addrs) {
        for (protocol, bound) in [(berth_proxy::Protocol::Udp, udp), (berth_proxy::Protocol::Tcp, tcp)] {
            if bound != dns_listen {
                served_here.push(berth_proxy::ServedHere {
                    namespace: "kube-system".to_owned(),
                    name: "kube-dns".to_owned(),
                    protocol,
                    endpoint: bound,
                });
            }
        }
    }
    let dns = dns_listeners.map(|listeners| {
        let upstream = if args.upstream_dns.is_empty() {
            berth_dns::host_upstreams()
        } else {
            args.upstream_dns.iter().map(|ip| std::net::SocketAddr::new(*ip, 53)).collect()
        };
        let config = berth_dns::DnsConfig { listen: dns_listen, domain: "cluster.local".to_owned(), upstream };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = berth_dns::run(client, config, listeners).await {
                tracing::error!(error = %e, "cluster DNS stopped: pods cannot resolve Service names");
            }
        })
    });
    // Service traffic runs with the node: both program this machine's network.
    let proxy = (!args.no_node).then(|| {
        let node_ip = match berth_node::agent::node::detect_host_ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::LOCALHOST,
        };
        let mut config = berth_proxy::ProxyConfig::new(node_ip);
        config.service_interface = args.service_interface.clone();
        config.pod_cidr = pod_cidr.to_string();
        let api_ip = if ip.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { ip };
        config.served_here = served_here;
        config.served_here.push(berth_proxy::ServedHere {
            namespace: "default".to_owned(),
            name: "kubernetes".to_owned(),
            protocol: berth_proxy::Protocol::Tcp,
            endpoint: std::net::SocketAddr::new(api_ip, args.listen.port()),
        });
        config.mode = if args.proxy_mode == "userspace" {
            berth_proxy::ProxyMode::Userspace
        } else if berth_node::command::available(std::path::Path::new("iptables-restore")) {
            berth_proxy::ProxyMode::Kernel
        } else {
            tracing::warn!("iptables-restore not found: Service traffic goes through the user-space proxy");
            berth_proxy::ProxyMode::Userspace
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(e) = berth_proxy::run(client, config).await {
                tracing::error!(error = %e, "service proxy stopped: Services will not answer");
            }
        })
    });
    println!("berth: API serving at {url}; export KUBECONFIG={}", kubeconfig.display());

    wait_for_signal().await;
    tracing::info!("shutting down");
    if let Some(c) = controllers {
        c.abort();
    }
    if let Some(d) = dns {
        d.abort();
    }
    if let Some(s) = sampling {
        s.abort();
    }
    if let Some(p) = proxy {
        p.abort();
        // The rules and addresses are this instance's; pods keep running without them.
        if let Err(e) = berth_proxy::remove_rules(&args.service_interface).await {
            tracing::warn!(error = %e, "cannot remove service rules");
        }
        if let Err(e) = berth_proxy::remove_service_interface(&args.service_interface).await {
            tracing::warn!(error = %e, "cannot remove the service interface");
        }
    }
    shutdown.cancel();
    if let Some(n) = node {
        // The agent stops watching; running pods are left to their shims.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), n).await;
    }
    serve.await.context("server task")??;
    Ok(())
}

/// Terminating pods leave the router's pools before they are stopped.
struct RouterDrain(berth_router::RouterHandle);

impl berth_node::TrafficDrain for RouterDrain {
    fn drain(&self, ip: std::net::IpAddr, limit: std::time::Duration) -> futures::future::BoxFuture<'static, ()> {
        let handle = self.0.clone();
        Box::pin(async move { handle.wait_out_of_rotation(ip, limit).await })
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A network client of the server the kubeconfig names.
pub async fn api_client(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(client_config(kubeconfig).await?).context("building the API client")
}

pub(crate) async fn client_config(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).context("reading the kubeconfig")?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_descriptor_table_is_grown_at_start() {
        super::presize_fd_table();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let slots: u64 = status.lines().find_map(|l| l.strip_prefix("FDSize:")).unwrap().trim().parse().unwrap();
        assert!(slots >= super::FD_TABLE_SLOTS.min(limit), "FDSize {slots}");
    }
}
