//! The `berth` command: the one binary users run.

mod image;
mod in_process;
mod podio;
mod server;
mod up;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "A self-hosted application platform that speaks the Kubernetes API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server, controllers, node agent) in the foreground.
    Server(ServerArgs),
    /// Work with the node's local images (import, pull, ls, rm, prune).
    Image(image::ImageArgs),
    /// Start the server, deploy the example app in examples/hello, and print its URL.
    Up {
        #[command(flatten)]
        server: ServerArgs,
        /// How long the example may take to answer before `up` gives up.
        #[arg(long, default_value = "120")]
        timeout_seconds: u64,
    },
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where Berth keeps its state [default: $XDG_DATA_HOME/berth or ~/.local/share/berth]
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the Kubernetes API listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Do not run the built-in controllers (for testing them separately).
    #[arg(long)]
    no_controllers: bool,
    /// Do not run the node agent: pods are stored but never run.
    #[arg(long)]
    no_node: bool,
    /// Address range pods get their IPs from (the bridge holds the first address). Not
    /// podman's default 10.88.0.0/16: both on one machine would take each other's packets.
    #[arg(long, default_value = "10.244.0.0/16")]
    pod_cidr: String,
    /// Name of the Linux bridge pods are attached to.
    #[arg(long, default_value = "berth0")]
    pod_bridge: String,
    /// Address range Services get cluster IPs from (the first is the `kubernetes` Service's,
    /// the tenth the cluster DNS's).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Port range NodePort and LoadBalancer Services get node ports from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Name of the dummy interface that holds the cluster IPs (also names this server's
    /// iptables chains, so servers with different interfaces do not collide).
    #[arg(long, default_value = "berth-svc")]
    service_interface: String,
    /// Resolvers cluster DNS forwards other names to (repeat or comma-separate) [default:
    /// the nameservers of /etc/resolv.conf, a loopback stub replaced by what it forwards to].
    #[arg(long, value_delimiter = ',')]
    upstream_dns: Vec<std::net::IpAddr>,
    /// Do not serve cluster DNS; pods get the host's resolvers.
    #[arg(long)]
    no_dns: bool,
    /// How Service traffic reaches endpoints: `iptables` (kernel NAT rules) or `userspace`
    /// (a proxy in this process).
    #[arg(long, default_value = "iptables", value_parser = ["iptables", "userspace"])]
    proxy_mode: String,
    /// What creates containers: `libcontainer` (youki's library, in each container's shim; no
    /// runtime process per start) or `runc` (the runc binary from PATH). Either is driven
    /// through runc's command-line contract; each container remembers which created it.
    #[arg(long, default_value = "libcontainer", value_parser = ["libcontainer", "runc"])]
    container_runtime: String,
    /// Turn on the kernel's `favordynmods` on the cgroup v2 hierarchy, so moving a new
    /// container into its cgroup never waits for an RCU grace period (up to tens of
    /// milliseconds, holding up every other cgroup change meanwhile). Machine-wide, and recent
    /// kernels keep it until reboot; with `false` Berth keeps moves fast by warming instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cgroup_favordynmods: bool,
    /// Most pods the node runs at once (its allocatable `pods`; upstream's default is 110).
    #[arg(long, default_value_t = 110, value_parser = clap::value_parser!(i64).range(1..))]
    max_pods: i64,
    /// Commit writes with synchronous=NORMAL: faster, but a power loss may lose the last writes.
    #[arg(long)]
    fast_commit: bool,
    /// Revisions of history the store keeps behind the current one (default 10,000); a watch
    /// from an older revision gets 410 Expired. Hidden: for tests that need compaction soon.
    #[arg(long, env = "BERTH_STORE_HISTORY", hide = true, value_parser = clap::value_parser!(i64).range(0..))]
    store_history: Option<i64>,
    /// Seconds between the store's compaction rounds (default 30; 0 turns the timer off).
    /// Hidden, as `--store-history`.
    #[arg(long, env = "BERTH_STORE_COMPACTION_INTERVAL", hide = true)]
    store_compaction_interval: Option<u64>,
    /// Pull from this registry (`host:port`) over plain HTTP; may be repeated.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Size in bytes at which a container's log file is rotated (kubelet's containerLogMaxSize).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    container_log_max_size: u64,
    /// Log files kept per container, the live one included (kubelet's containerLogMaxFiles).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    container_log_max_files: u32,
    /// Where the HTTP router serves plain HTTP (`ADDR:PORT`, `:PORT`, or `off`).
    #[arg(long, default_value = ":80", value_parser = parse_listen)]
    http_listen: Listen,
    /// Where the HTTP router serves HTTPS (`ADDR:PORT`, `:PORT`, or `off`).
    #[arg(long, default_value = ":443", value_parser = parse_listen)]
    https_listen: Listen,
    /// Domain under which Routes get generated hosts [default: <machine-ip>.nip.io].
    #[arg(long)]
    route_suffix: Option<String>,
    /// Threads serving the HTTP router's connections, each with its own event loop, apart from
    /// the API server's runtime [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    router_threads: Option<u16>,
    /// How the controllers, the node agent and the other parts of this server reach its API:
    /// `in-process` (handed to the API's handlers, no TLS, TCP or HTTP framing) or `https`
    /// (over loopback, as an external client). Hidden: for benchmarks and tests.
    #[arg(long, hide = true, default_value = "in-process", value_parser = ["in-process", "https"])]
    api_transport: String,
}

/// A listener address, or none (`off`).
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_owned() };
    full.parse().map(|a| Listen(Some(a))).map_err(|e| format!("{s:?} is not ADDR:PORT, :PORT or off: {e}"))
}

fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/berth")
}

fn main() -> anyhow::Result<()> {
    // Container shims are this same binary re-executed; they never reach the CLI.
    berth_node::shim::run_if_requested();
    // So is libcontainer's OCI runtime command line (`runc`'s verbs).
    berth_node::oci_runtime::run_if_requested();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            server::presize_fd_table();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(server::run(args))
        }
        Command::Image(args) => image::run(args),
        Command::Up { server, timeout_seconds } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(up::run(server, std::time::Duration::from_secs(timeout_seconds)))
        }
    }
}
