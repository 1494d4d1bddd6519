//! Shared set-up for the root-only tests: an isolated node configuration (its own bridge,
//! pod CIDR, cgroup parent and data dir) and small helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use berth_node::oci_runtime::{OciCli, RuntimeKind};
use berth_node::{NetworkConfig, NodeConfig};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why this machine cannot run the real thing, if it cannot. Also turns on logging
/// (`BERTH_LOG`, default `warn`).
pub fn skip_reason() -> Option<String> {
    let filter = std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    if rustix::process::geteuid().as_raw() != 0 {
        return Some("needs root".to_owned());
    }
    for tool in ["runc", "ip", "python3"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

macro_rules! skip_unless_capable {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}
pub(crate) use skip_unless_capable;

pub struct TestNode {
    pub config: NodeConfig,
    pub data_dir: tempfile::TempDir,
}

/// Leaves the machine as it was, also when a test fails half-way: containers, network
/// namespaces, the bridge and its iptables rules, cgroups.
impl Drop for TestNode {
    fn drop(&mut self) {
        for kind in [RuntimeKind::Runc, RuntimeKind::Libcontainer] {
            let cli = OciCli::new(&self.config, kind);
            let listed = cli.std_command().args(["list", "-q"]).output().map(|o| o.stdout).unwrap_or_default();
            for id in String::from_utf8_lossy(&listed).lines() {
                let _ = cli.std_command().args(["delete", "--force", id]).output();
            }
        }
        // Removing a pin's file unpins its namespace in the pin namespace; a pod's veth goes
        // with its network namespace.
        for uid in berth_node::layout::pod_uids(self.data_dir.path()) {
            for dir in berth_node::layout::sandbox_dirs(self.data_dir.path(), &uid) {
                for (_, pin) in berth_node::namespaces::PINNED {
                    let _ = std::fs::remove_file(dir.join(pin));
                }
            }
        }
        // Every mount below the data dir, deepest first: namespace pins, emptyDirs, container
        // roots, then the run tmpfs, so the directory can be deleted.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = std::fs::canonicalize(self.data_dir.path()).unwrap_or_else(|_| self.data_dir.path().to_owned());
        let mut points: Vec<std::path::PathBuf> = info
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(std::path::PathBuf::from)
            .filter(|point| point.starts_with(&root))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        for point in points {
            let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
        }
        let network = self.config.network.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(berth_node::network::remove_host(&network));
        });
        let _ = cleanup.join();
        berth_node::cgroups::CgroupMounts::detect().remove(&self.config.cgroup_parent);
    }
}

fn random_suffix() -> u32 {
    rand::random::<u32>()
}

/// A node configuration nobody else uses: bridge `bt<hex>`, a random /24 in 10.200-250.x.
pub fn test_node() -> TestNode {
    let data_dir = tempfile::tempdir().unwrap();
    let suffix = random_suffix();
    let mut config = NodeConfig::new(data_dir.path());
    config.network = NetworkConfig {
        bridge: format!("bt{:08x}", suffix),
        pod_cidr: format!("10.{}.{}.0/24", 200 + suffix % 50, (suffix >> 8) % 250).parse().unwrap(),
        masquerade: true,
    };
    config.cgroup_parent = format!("/berth-test-{:08x}", suffix);
    config.shim_program = PathBuf::from(env!("CARGO_BIN_EXE_berth-node-shim"));
    // Both runtimes keep one contract; BERTH_CONTAINER_RUNTIME picks the other one.
    if let Some(kind) = std::env::var("BERTH_CONTAINER_RUNTIME").ok().and_then(|k| k.parse().ok()) {
        config.runtime = kind;
    }
    TestNode { config, data_dir }
}

pub fn random_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

pub fn host_container(name: &str, command: &[&str]) -> Container {
    Container {
        name: name.to_owned(),
        image: Some("host".to_owned()),
        command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        ..Default::default()
    }
}

pub fn pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(random_uid()),
            ..Default::default()
        },
        spec: Some(PodSpec { containers, ..Default::default() }),
        ..Default::default()
    }
}

/// A plain HTTP/1.0 GET; returns the whole response.
pub async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// Retries `probe` until it yields `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Mount table lines that mention `needle`: the host's (this process's), and those of every
/// pin namespace on the machine (each seen through a `berth-pins` thread of a runtime).
pub fn mounts_mentioning(needle: &str) -> (usize, usize) {
    let count = |path: &std::path::Path| {
        std::fs::read_to_string(path).unwrap_or_default().lines().filter(|line| line.contains(needle)).count()
    };
    let host = count(std::path::Path::new("/proc/self/mountinfo"));
    let mut pinned = 0;
    let mut seen = std::collections::HashSet::new();
    for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for task in std::fs::read_dir(process.path().join("task")).into_iter().flatten().flatten() {
            let named_pins = std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "berth-pins");
            // Several runtimes may share one pin namespace: count each namespace once.
            let namespace = std::fs::read_link(task.path().join("ns/mnt")).ok();
            if named_pins && seen.insert(namespace) {
                pinned += count(&task.path().join("mountinfo"));
            }
        }
    }
    (host, pinned)
}
