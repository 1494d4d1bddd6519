//! Pod networking: a Linux bridge on the host holding the pod CIDR's gateway address, and per
//! pod a network namespace (pinned as [`crate::namespaces`] says) joined to the bridge by a
//! veth pair.
//! The host's bridge and rules are set up once with `ip` and `iptables`; a pod's namespace and
//! interfaces are made in-process over netlink (rtnetlink), as they are on every pod start.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::command::{self, CommandError};
use crate::config::NetworkConfig;
use crate::namespaces::{self, LEGACY_NETNS_DIR, NamespaceError, PodNamespacePaths};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("setting up pod network: {0}")]
    Command(#[from] CommandError),
    #[error("setting up pod network: {0}")]
    Io(#[from] std::io::Error),
    #[error("setting up pod network: {0}")]
    Namespace(#[from] NamespaceError),
    #[error("setting up pod network: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("setting up pod network: no interface {0}")]
    Missing(String),
}

/// The pod's side of its veth pair.
const POD_INTERFACE: &str = "eth0";

const IP: &str = "ip";
const IPTABLES: &str = "iptables";
const RULE_COMMENT: &str = "berth pod network";

/// The host side of a pod's network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetworkInfo {
    pub ip: Ipv4Addr,
    /// Only for pods made by versions before the pin namespace: their network namespace's
    /// name under [`LEGACY_NETNS_DIR`], pinned on the host's mount table.
    #[serde(rename = "netns", default, skip_serializing_if = "Option::is_none")]
    pub legacy_netns: Option<String>,
    pub host_veth: String,
}

impl PodNetworkInfo {
    /// The network of pod `pod_uid` made by this version: `ip`, its namespace pinned in the
    /// pin namespace, its veth named after the UID.
    pub fn for_pod(pod_uid: &str, ip: Ipv4Addr) -> PodNetworkInfo {
        PodNetworkInfo { ip, legacy_netns: None, host_veth: host_veth_name(pod_uid) }
    }

    /// Where a version before the pin namespace pinned the network namespace, if it made
    /// this pod's.
    pub fn legacy_netns_path(&self) -> Option<PathBuf> {
        self.legacy_netns.as_ref().map(|name| Path::new(LEGACY_NETNS_DIR).join(name))
    }
}

/// Where versions before the pin namespace pinned pod `pod_uid`'s network namespace.
pub fn legacy_netns_path(pod_uid: &str) -> PathBuf {
    Path::new(LEGACY_NETNS_DIR).join(format!("berth-{pod_uid}"))
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

/// A netlink connection in the host's network namespace, for pods' host-side interfaces.
/// Requests on one connection run concurrently (matched by sequence number).
#[derive(Clone)]
pub struct HostNetlink(rtnetlink::Handle);

impl HostNetlink {
    /// Opens the connection; call from the runtime, on a thread in the host's namespaces.
    pub fn connect() -> Result<HostNetlink, NetworkError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(HostNetlink(handle))
    }
}

/// The index of interface `name`, `None` if there is none.
async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -ENODEV => Ok(None),
        Err(error) => Err(NetworkError::Netlink { context: format!("looking up interface {name}"), source: error }),
    }
}

async fn required_index(handle: &rtnetlink::Handle, name: &str) -> Result<u32, NetworkError> {
    link_index(handle, name).await?.ok_or_else(|| NetworkError::Missing(name.to_owned()))
}

const ENODEV: i32 = 19;

fn netlink(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let context = context.into();
    move |source| NetworkError::Netlink { context, source }
}

/// Creates the pod's network namespace with `lo` up and `eth0` addressed in the pod CIDR,
/// default route through the bridge, plus its UTS and IPC namespaces, all three pinned on
/// `namespaces` (see [`crate::namespaces`]). Idempotent: what an earlier try left is replaced.
/// Everything is done over netlink from this process; no tool is run. `namespaces_made` is
/// called once the three namespaces are pinned, before the network in them is configured
/// (a container may join them from then on). On error the veth is removed; the caller
/// unpins the namespaces (as it does for every sandbox it tears down).
pub async fn attach_pod(
    config: &NetworkConfig,
    host: &HostNetlink,
    pod_uid: &str,
    ip: Ipv4Addr,
    namespaces: PodNamespacePaths,
    namespaces_made: impl FnOnce(),
) -> Result<PodNetworkInfo, NetworkError> {
    let info = PodNetworkInfo::for_pod(pod_uid, ip);
    // A veth of an earlier try (the name is the pod's) would make creating this one fail.
    if Path::new("/sys/class/net").join(&info.host_veth).exists() {
        detach_pod(host, &info).await;
    }
    let result = match namespaces::create(namespaces).await {
        Ok(pod) => {
            tokio::spawn(pod.connection);
            namespaces_made();
            configure(config, host, &pod.handle, &pod.netns, &info).await
        }
        Err(error) => Err(error.into()),
    };
    if result.is_err() {
        detach_pod(host, &info).await;
    }
    result.map(|()| info)
}

async fn configure(
    config: &NetworkConfig,
    host: &HostNetlink,
    pod: &rtnetlink::Handle,
    netns: &OwnedFd,
    info: &PodNetworkInfo,
) -> Result<(), NetworkError> {
    let host = &host.0;
    let bridge = required_index(host, &config.bridge).await?;
    // `ip link add VETH numtxqueues 1 numrxqueues 1 master BRIDGE up type veth peer name eth0
    // numtxqueues 1 numrxqueues 1 netns NETNS`. One queue each way, on both ends: a veth is
    // otherwise allocated with a queue per CPU and then cut down to one in use, and that cut
    // waits for an RCU grace period, holding the RTNL lock, once per end (traced: 2 waits per
    // pod start, every other pod's network set-up blocked meanwhile). Pods lose nothing: the
    // kernel uses one queue of a veth unless told otherwise (`ethtool -L`).
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(POD_INTERFACE)
        .setns_by_fd(netns.as_raw_fd())
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(info.host_veth.clone())
        .controller(bridge)
        .up()
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link().add(veth).execute().await.map_err(netlink(format!("creating veth {}", info.host_veth)))?;
    // Hairpin: a pod reaching itself through a Service address goes out and back this port.
    // Set through sysfs, not netlink: netlink needs the veth's index, and looking it up
    // (RTM_GETLINK) makes the kernel first settle the new veth's link state, which waits for
    // an RCU grace period while holding the RTNL lock every other pod's set-up needs (traced:
    // once per pod, up to 7.9 ms on a busy machine). The sysfs write takes no such detour.
    // Where sysfs cannot be written (mounted read-only, as in some containers), netlink it is.
    let hairpin = Path::new("/sys/class/net").join(&info.host_veth).join("brport/hairpin_mode");
    if let Err(error) = tokio::fs::write(&hairpin, b"1").await {
        tracing::debug!(path = %hairpin.display(), %error, "hairpin through sysfs failed; using netlink");
        let veth_index = required_index(host, &info.host_veth).await?;
        host.link()
            .set_port(LinkBridgePort::new(veth_index).hairpin(true).build())
            .execute()
            .await
            .map_err(netlink(format!("turning hairpin on for {}", info.host_veth)))?;
    }

    // Inside the pod: lo up, eth0 addressed and up, default route through the bridge.
    pod.link()
        .set(LinkUnspec::new_with_name("lo").up().build())
        .execute()
        .await
        .map_err(netlink("bringing lo up in the pod"))?;
    let eth0 = required_index(pod, POD_INTERFACE).await?;
    pod.address()
        .add(eth0, info.ip.into(), config.pod_cidr.prefix)
        .execute()
        .await
        .map_err(netlink(format!("adding {} to the pod's eth0", info.ip)))?;
    pod.link()
        .set(LinkUnspec::new_with_index(eth0).up().build())
        .execute()
        .await
        .map_err(netlink("bringing the pod's eth0 up"))?;
    let route =
        RouteMessageBuilder::<Ipv4Addr>::new().gateway(config.pod_cidr.gateway()).output_interface(eth0).build();
    pod.route().add(route).execute().await.map_err(netlink("adding the pod's default route"))?;
    Ok(())
}

/// Removes the pod's veth (its peer in the pod goes with it); the caller unpins the
/// namespaces. Best effort: what is already gone is fine.
pub async fn detach_pod(host: &HostNetlink, info: &PodNetworkInfo) {
    // Deleting the veth from the host side removes its peer in the pod.
    match link_index(&host.0, &info.host_veth).await {
        Ok(Some(index)) => {
            if let Err(error) = host.0.link().del(index).execute().await {
                tracing::warn!(%error, veth = %info.host_veth, "cannot delete pod veth");
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, veth = %info.host_veth, "cannot look up pod veth"),
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

    #[test]
    fn a_sandbox_record_says_whether_its_network_namespace_is_on_the_hosts_mount_table() {
        // Written by a version before the pin namespace.
        let old: PodNetworkInfo =
            serde_json::from_str(r#"{"ip":"10.244.0.7","netns":"berth-u1","host_veth":"bv1"}"#).unwrap();
        assert_eq!(old.legacy_netns_path(), Some(PathBuf::from("/run/netns/berth-u1")));
        let new = PodNetworkInfo { ip: Ipv4Addr::new(10, 244, 0, 8), legacy_netns: None, host_veth: "bv2".to_owned() };
        let written = serde_json::to_string(&new).unwrap();
        assert!(!written.contains("netns"), "{written}");
        assert_eq!(serde_json::from_str::<PodNetworkInfo>(&written).unwrap(), new);
    }
}
