//! Pod networking: a Linux bridge on the host holding the pod CIDR's gateway address, and per
//! pod a network namespace (`/run/netns/berth-<uid>`) joined to the bridge by a veth pair.
//! Everything is done by `ip` (iproute2) in child processes, batched so one pod costs three
//! process starts; see docs/node.md for why.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::command::{self, CommandError};
use crate::config::NetworkConfig;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("setting up pod network: {0}")]
    Command(#[from] CommandError),
    #[error("setting up pod network: {0}")]
    Io(#[from] std::io::Error),
}

const IP: &str = "ip";
const IPTABLES: &str = "iptables";
const RULE_COMMENT: &str = "berth pod network";

/// The host side of a pod's network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetworkInfo {
    pub ip: Ipv4Addr,
    /// Name under `/run/netns`.
    pub netns: String,
    pub host_veth: String,
}

impl PodNetworkInfo {
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// Name of a pod's network namespace.
pub fn netns_name(pod_uid: &str) -> String {
    format!("berth-{pod_uid}")
}

/// Host-side veth name: interface names are limited to 15 bytes, so a hash of the UID.
pub fn host_veth_name(pod_uid: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pod_uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("bv{:012x}", hash & 0xffff_ffff_ffff)
}

/// Creates the bridge with the gateway address, enables forwarding and installs the iptables
/// rules (forwarding through the bridge, masquerade out of the pod CIDR). Idempotent.
pub async fn setup_host(config: &NetworkConfig) -> Result<(), NetworkError> {
    let bridge = config.bridge.as_str();
    let cidr = config.pod_cidr;
    if !Path::new("/sys/class/net").join(bridge).exists() {
        match command::run(IP, &["link", "add", bridge, "type", "bridge"], None).await {
            Ok(_) => {}
            // Another caller created it meanwhile.
            Err(error) if error.stderr().contains("File exists") => {}
            Err(error) => return Err(error.into()),
        }
    }
    let gateway = format!("{}/{}", cidr.gateway(), cidr.prefix);
    command::run(IP, &["addr", "replace", gateway.as_str(), "dev", bridge], None).await?;
    command::run(IP, &["link", "set", bridge, "up"], None).await?;
    // Pods reach destinations beyond the host only if the host forwards.
    if config.masquerade {
        tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await?;
    }

    if !command::available(Path::new(IPTABLES)) {
        tracing::warn!("iptables not found: pods can reach each other and the host, but not beyond it");
        return Ok(());
    }
    for rule in iptables_rules(config) {
        if command::run(IPTABLES, &rule.args("-C"), None).await.is_err()
            && let Err(error) = command::run(IPTABLES, &rule.args("-A"), None).await
        {
            tracing::warn!(%error, "cannot install iptables rule; pods may not reach outside the host");
        }
    }
    Ok(())
}

/// Removes the bridge and the iptables rules [`setup_host`] installed (pods must be gone).
pub async fn remove_host(config: &NetworkConfig) {
    if command::available(Path::new(IPTABLES)) {
        for rule in iptables_rules(config) {
            // -D removes one copy; repeat while the rule is there.
            while command::run(IPTABLES, &rule.args("-C"), None).await.is_ok() {
                if command::run(IPTABLES, &rule.args("-D"), None).await.is_err() {
                    break;
                }
            }
        }
    }
    if Path::new("/sys/class/net").join(&config.bridge).exists()
        && let Err(error) = command::run(IP, &["link", "del", config.bridge.as_str()], None).await
    {
        tracing::warn!(%error, bridge = %config.bridge, "cannot delete the pod bridge");
    }
}

struct IptablesRule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl IptablesRule {
    fn args(&self, action: &str) -> Vec<String> {
        let mut args: Vec<String> = ["-w", "-t", self.table, action, self.chain].map(str::to_owned).to_vec();
        args.extend(self.spec.iter().cloned());
        args.extend(["-m", "comment", "--comment", RULE_COMMENT].map(str::to_owned));
        args
    }
}

fn iptables_rules(config: &NetworkConfig) -> Vec<IptablesRule> {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let bridge = config.bridge.as_str();
    let cidr = config.pod_cidr.to_string();
    // With br_netfilter loaded, bridged pod-to-pod traffic crosses FORWARD: let it through
    // even when the policy there is DROP (as Docker sets it).
    let mut rules = vec![
        IptablesRule { table: "filter", chain: "FORWARD", spec: owned(&["-i", bridge, "-j", "ACCEPT"]) },
        IptablesRule { table: "filter", chain: "FORWARD", spec: owned(&["-o", bridge, "-j", "ACCEPT"]) },
    ];
    if config.masquerade {
        rules.push(IptablesRule {
            table: "nat",
            chain: "POSTROUTING",
            spec: owned(&["-s", &cidr, "!", "-d", &cidr, "-j", "MASQUERADE"]),
        });
    }
    rules
}

/// Creates the pod's network namespace with `lo` up and `eth0` addressed in the pod CIDR,
/// default route through the bridge. Idempotent: an existing namespace is rebuilt.
pub async fn attach_pod(config: &NetworkConfig, pod_uid: &str, ip: Ipv4Addr) -> Result<PodNetworkInfo, NetworkError> {
    let info = PodNetworkInfo { ip, netns: netns_name(pod_uid), host_veth: host_veth_name(pod_uid) };
    if info.netns_path().exists() {
        detach_pod(&info).await;
    }
    command::run(IP, &["netns", "add", info.netns.as_str()], None).await?;
    let result = configure(config, &info).await;
    if result.is_err() {
        detach_pod(&info).await;
    }
    result.map(|()| info)
}

async fn configure(config: &NetworkConfig, info: &PodNetworkInfo) -> Result<(), NetworkError> {
    let host_side = format!(
        "link add {veth} type veth peer name eth0 netns {netns}\n\
         link set {veth} master {bridge}\n\
         link set {veth} type bridge_slave hairpin on\n\
         link set {veth} up\n",
        veth = info.host_veth,
        netns = info.netns,
        bridge = config.bridge,
    );
    command::run(IP, &["-batch", "-"], Some(&host_side)).await?;
    let pod_side = format!(
        "link set lo up\n\
         addr add {ip}/{prefix} dev eth0\n\
         link set eth0 up\n\
         route add default via {gateway} dev eth0\n",
        ip = info.ip,
        prefix = config.pod_cidr.prefix,
        gateway = config.pod_cidr.gateway(),
    );
    command::run(IP, &["-n", info.netns.as_str(), "-batch", "-"], Some(&pod_side)).await?;
    Ok(())
}

/// Removes the pod's namespace and veth. Best effort: what is already gone is fine.
pub async fn detach_pod(info: &PodNetworkInfo) {
    // Deleting the veth from the host side removes its peer in the pod.
    if Path::new("/sys/class/net").join(&info.host_veth).exists()
        && let Err(error) = command::run(IP, &["link", "del", info.host_veth.as_str()], None).await
    {
        tracing::warn!(%error, veth = %info.host_veth, "cannot delete pod veth");
    }
    if info.netns_path().exists()
        && let Err(error) = command::run(IP, &["netns", "del", info.netns.as_str()], None).await
    {
        tracing::warn!(%error, netns = %info.netns, "cannot delete pod network namespace");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_the_kernel_limit_and_differ() {
        let a = host_veth_name("0b6f5a2e-1c9d-4e7b-8a1f-3c2d1e0f9a8b");
        let b = host_veth_name("0b6f5a2e-1c9d-4e7b-8a1f-3c2d1e0f9a8c");
        assert!(a.len() <= 15, "{a}");
        assert_ne!(a, b);
        assert_eq!(a, host_veth_name("0b6f5a2e-1c9d-4e7b-8a1f-3c2d1e0f9a8b"));
    }
}
