//! The `Node` object: this machine's capacity, addresses, identity and readiness.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::config::NodeConfig;

/// Kubelet version reported in `nodeInfo` (the API level Berth implements).
pub const KUBELET_VERSION: &str = "v1.32.0-berth";

/// What this node offers to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Capacity {
    /// Measured from the machine, with the configuration's overrides.
    pub fn detect(config: &NodeConfig) -> Capacity {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim();
                    kib.parse::<i64>().ok().map(|k| k * 1024)
                })
            })
            .unwrap_or(0);
        Capacity {
            cpu_millis: config.capacity.cpu_millis.unwrap_or(cpus * 1000),
            memory_bytes: config.capacity.memory_bytes.unwrap_or(memory),
            // Upstream's default maximum.
            pods: config.capacity.pods.unwrap_or(110),
        }
    }

    pub fn quantities(&self) -> BTreeMap<String, Quantity> {
        let cpu = if self.cpu_millis % 1000 == 0 {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        };
        let memory = if self.memory_bytes % 1024 == 0 {
            format!("{}Ki", self.memory_bytes / 1024)
        } else {
            self.memory_bytes.to_string()
        };
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu)),
            ("memory".to_owned(), Quantity(memory)),
            ("pods".to_owned(), Quantity(self.pods.to_string())),
        ])
    }
}

/// The address other machines reach this one on: the source address of the default route,
/// else loopback.
pub fn detect_host_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
        // Connecting a UDP socket sends nothing; it only picks a route and a source address.
        socket.connect("192.0.2.1:9")?;
        socket.local_addr()
    });
    match probe {
        Ok(address) if !address.ip().is_unspecified() => address.ip(),
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| line.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| "Linux".to_owned())
}

pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Labels every node carries upstream.
pub fn labels(node_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), node_name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), architecture().to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), architecture().to_owned()),
        ("node-role.kubernetes.io/control-plane".to_owned(), String::new()),
    ])
}

/// The node's status as of `now`; `ready_since` keeps the Ready transition time stable.
pub fn status(
    config: &NodeConfig,
    capacity: &Capacity,
    host_ip: IpAddr,
    runc_version: &str,
    ready_since: Timestamp,
    now: Timestamp,
) -> NodeStatus {
    let time = |ts: Timestamp| Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts));
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(time(now)),
        last_transition_time: Some(time(ready_since)),
    };
    let machine_id = read_trimmed("/etc/machine-id");
    NodeStatus {
        capacity: Some(capacity.quantities()),
        allocatable: Some(capacity.quantities()),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".to_owned(), address: host_ip.to_string() },
            NodeAddress { type_: "Hostname".to_owned(), address: config.node_name.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: architecture().to_owned(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("{}://{runc_version}", config.runtime),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: machine_id.clone(),
            operating_system: "linux".to_owned(),
            os_image: os_image(),
            system_uuid: machine_id,
        }),
        ..Default::default()
    }
}

/// The whole `Node` object as first registered.
pub fn node_object(config: &NodeConfig, status: NodeStatus) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels(&config.node_name)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(config.network.pod_cidr.to_string()),
            pod_cidrs: Some(vec![config.network.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(status),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn capacity_quantities() {
        let capacity = Capacity { cpu_millis: 2000, memory_bytes: 24 * 1024 * 1024 * 1024, pods: 110 };
        let q = capacity.quantities();
        assert_eq!(q["cpu"].0, "2");
        assert_eq!(q["memory"].0, "25165824Ki");
        assert_eq!(q["pods"].0, "110");
        let odd = Capacity { cpu_millis: 1500, memory_bytes: 1000, pods: 1 }.quantities();
        assert_eq!((odd["cpu"].0.as_str(), odd["memory"].0.as_str()), ("1500m", "1000"));
    }

    #[test]
    fn status_reports_ready_with_node_info() {
        let config = NodeConfig::new("/tmp/x");
        let capacity = Capacity { cpu_millis: 2000, memory_bytes: 1 << 30, pods: 110 };
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        let status = status(&config, &capacity, IpAddr::from([10, 0, 0, 2]), "1.1.5", now, now);
        let ready = status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.addresses.as_ref().unwrap()[0].address, "10.0.0.2");
        assert_eq!(status.node_info.as_ref().unwrap().operating_system, "linux");
        assert_eq!(status.allocatable, status.capacity);
    }
}
