//! What the node agent needs to know about the machine and where to keep its state.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

/// Configuration of the node agent and its container runtime.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Name of the `Node` object (the machine's hostname by default).
    pub node_name: String,
    /// Root of the node's state: pods, logs, volumes, IP allocations, runc state.
    pub data_dir: PathBuf,
    pub network: NetworkConfig,
    /// Which OCI runtime creates containers (`--container-runtime`).
    pub runtime: crate::oci_runtime::RuntimeKind,
    /// The runc binary, used when `runtime` is runc (and for containers runc created).
    pub runc: PathBuf,
    /// Cgroup under which every pod gets `pod<uid>/<container>`.
    pub cgroup_parent: String,
    /// Whether to turn on `favordynmods` on the cgroup v2 hierarchy (see
    /// [`crate::cgroups::favor_dynamic_modifications`]).
    pub cgroup_favordynmods: bool,
    /// Program started (with [`crate::shim::SHIM_ARG`] first) to watch over each container;
    /// in production the `berth` binary itself.
    pub shim_program: PathBuf,
    /// Overrides of what the node advertises; `None` means measured from the machine.
    pub capacity: CapacityOverrides,
    /// The node's `InternalIP` (and pods' `hostIP`); detected from the default route if unset.
    pub host_ip: Option<std::net::IpAddr>,
    /// Registries (`host:port`) pulled from over plain HTTP instead of HTTPS.
    pub insecure_registries: Vec<String>,
    /// Size-based rotation of container logs.
    pub log_rotation: crate::crilog::Rotation,
    /// Waited on before a terminating pod's containers get SIGTERM.
    pub drain: Option<DrainHook>,
    /// The cluster DNS address pods with `dnsPolicy: ClusterFirst` use; `None` gives them the
    /// host's resolvers.
    pub cluster_dns: Option<Ipv4Addr>,
}

/// Whatever routes traffic to pods (the HTTP router): a terminating pod leaves it first.
pub trait TrafficDrain: Send + Sync {
    /// Resolves once nothing routes new requests to `ip` any more, or after `limit`.
    fn drain(&self, ip: std::net::IpAddr, limit: std::time::Duration) -> futures::future::BoxFuture<'static, ()>;
}

#[derive(Clone)]
pub struct DrainHook(pub std::sync::Arc<dyn TrafficDrain>);

impl fmt::Debug for DrainHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrainHook")
    }
}

#[derive(Debug, Clone, Default)]
pub struct CapacityOverrides {
    pub cpu_millis: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub pods: Option<i64>,
}

/// Pod networking: every pod gets a veth on this bridge and an address in `pod_cidr`.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub bridge: String,
    /// The first usable address is the gateway, held by the bridge.
    pub pod_cidr: Ipv4Cidr,
    /// Masquerade traffic from pods to destinations outside the pod CIDR.
    pub masquerade: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "berth0".to_owned(),
            pod_cidr: Ipv4Cidr { address: Ipv4Addr::new(10, 88, 0, 0), prefix: 16 },
            masquerade: true,
        }
    }
}

impl NodeConfig {
    /// Defaults for this machine: hostname as node name, containers by libcontainer (`runc`
    /// from `PATH` if runc is chosen), the running executable as shim.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            node_name: host_name(),
            data_dir: data_dir.into(),
            network: NetworkConfig::default(),
            runtime: crate::oci_runtime::RuntimeKind::Libcontainer,
            runc: PathBuf::from("runc"),
            cgroup_parent: "/berth".to_owned(),
            cgroup_favordynmods: true,
            shim_program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            capacity: CapacityOverrides::default(),
            host_ip: None,
            insecure_registries: Vec::new(),
            log_rotation: crate::crilog::Rotation::default(),
            drain: None,
            cluster_dns: None,
        }
    }
}

/// The kernel's hostname, lower-cased so it is a valid object name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_ascii_lowercase())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// An IPv4 network in CIDR notation (`10.244.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}: expected a.b.c.d/n with n between 8 and 30")]
pub struct CidrError(pub String);

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !self.mask())
    }

    /// The first host address, given to the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    /// Addresses a pod may get: after the gateway, before the broadcast address.
    pub fn pod_range(&self) -> (u32, u32) {
        (u32::from(self.gateway()) + 1, u32::from(self.broadcast()) - 1)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError(s.to_owned());
        let (address, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        // Narrower than /30 leaves no room for a gateway and a pod.
        if !(8..=30).contains(&prefix) {
            return Err(invalid());
        }
        Ok(Ipv4Cidr { address, prefix })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidr_arithmetic() {
        let cidr: Ipv4Cidr = "10.88.3.7/16".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 88, 0, 0));
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert!(cidr.contains(Ipv4Addr::new(10, 88, 200, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 89, 0, 1)));
        assert_eq!(cidr.to_string(), "10.88.0.0/16");
        let (first, last) = cidr.pod_range();
        assert_eq!(Ipv4Addr::from(first), Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(Ipv4Addr::from(last), Ipv4Addr::new(10, 88, 255, 254));
    }

    #[test]
    fn cidr_rejects_garbage() {
        for bad in ["10.88.0.0", "10.88.0.0/31", "10.88.0.0/x", "300.1.1.1/16", "10.88.0.0/4"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }
}
