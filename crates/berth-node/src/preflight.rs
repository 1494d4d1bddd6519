//! What this machine lacks to run pods isolated: checked before the node agent runs anything,
//! so Berth never runs a workload without the isolation its spec asks for (see
//! `agent::degraded` for what the node does instead).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::command;
use crate::config::{Ipv4Cidr, NodeConfig};

/// Cgroup controllers pods' limits and accounting need.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// One sentence per missing piece, saying what to do about it; empty when pods can run.
pub fn missing(config: &NodeConfig) -> Vec<String> {
    let mut missing = Vec::new();
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        missing.push(format!("root: berth server runs as uid {euid}, and namespaces, cgroups and mounts need root"));
    }
    for (program, package) in [(config.runc.as_path(), "runc"), (Path::new("ip"), "iproute2")] {
        // libcontainer is built in; runc is needed only when chosen.
        let needed = package != "runc" || config.runtime == crate::oci_runtime::RuntimeKind::Runc;
        if needed && !command::available(program) {
            missing.push(format!("{}: not found, install the Debian package {package}", program.display()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let enabled = controllers(&mountinfo, |v2| std::fs::read_to_string(v2.join("cgroup.controllers")).ok());
    for controller in CONTROLLERS {
        if !enabled.contains(controller) {
            missing.push(format!(
                "cgroup controller {controller:?}: not mounted (v1) nor enabled (v2), so pod limits cannot be enforced"
            ));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !has_overlayfs(&filesystems, Path::new("/lib/modules").join(release.trim()).as_path()) {
        missing.push("overlayfs: the kernel has no overlay filesystem (load the module: modprobe overlay)".to_owned());
    }
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let network = &config.network;
    for (interface, route) in competing_routes(&routes, network.pod_cidr, &network.bridge) {
        missing.push(format!(
            "a free pod range: {} overlaps the route to {route} on interface {interface} (another program's \
             network, such as podman's or docker's); start berth server with --pod-cidr set to a free range",
            network.pod_cidr
        ));
    }
    missing
}

/// Routes of `/proc/net/route` (the host's main table) to all or part of `cidr` through an
/// interface other than `bridge`: as specific as the bridge's own route or more, they win
/// (or tie) for those addresses, and pods there become unreachable. Wider routes (a default
/// route, a VPN's halves, a LAN's 10.0.0.0/8) lose to the bridge's and do no harm.
fn competing_routes(proc_net_route: &str, cidr: Ipv4Cidr, bridge: &str) -> Vec<(String, Ipv4Cidr)> {
    // The kernel prints addresses as the native-endian value of their network-order bytes.
    let address = |hex: &str| u32::from_str_radix(hex, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    let mut found = Vec::new();
    for line in proc_net_route.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(interface), Some(destination), Some(mask)) = (fields.first(), fields.get(1), fields.get(7)) else {
            continue;
        };
        let (Some(destination), Some(mask)) = (address(destination), address(mask)) else { continue };
        let prefix = u32::from(mask).count_ones() as u8;
        if *interface == bridge || prefix == 0 {
            continue;
        }
        let route = Ipv4Cidr { address: destination, prefix };
        if prefix >= cidr.prefix
            && cidr.contains(destination)
            && !found.iter().any(|(i, r)| i == interface && *r == route)
        {
            found.push(((*interface).to_owned(), route));
        }
    }
    found
}

/// Controllers available on v1 hierarchies (mount options) and the v2 one (its root's
/// `cgroup.controllers`, read through `v2_controllers`).
fn controllers(mountinfo: &str, v2_controllers: impl Fn(&Path) -> Option<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let mount_point = before.split_whitespace().nth(4);
        let tail: Vec<&str> = after.split_whitespace().collect();
        match (tail.first().copied(), mount_point) {
            (Some("cgroup"), _) => {
                let options = tail.get(2).copied().unwrap_or("");
                found.extend(options.split(',').filter(|o| CONTROLLERS.contains(o)).map(str::to_owned));
            }
            (Some("cgroup2"), Some(mount_point)) => {
                let listed = v2_controllers(Path::new(mount_point)).unwrap_or_default();
                found.extend(listed.split_whitespace().map(str::to_owned));
            }
            _ => {}
        }
    }
    found
}

/// Overlayfs is registered, or its module is there for the kernel to load on first mount.
fn has_overlayfs(proc_filesystems: &str, modules: &Path) -> bool {
    proc_filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay"))
        || ["overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz"]
            .iter()
            .any(|name| modules.join("kernel/fs/overlayfs").join(name).exists())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:17 - cgroup cgroup rw,pids
";

    #[test]
    fn controllers_on_v1_hybrid_and_v2() {
        let found = controllers(HYBRID, |_| Some(String::new()));
        assert!(CONTROLLERS.iter().all(|c| found.contains(*c)), "{found:?}");
        let v2 = "31 23 0:27 / /sys/fs/cgroup rw shared:10 - cgroup2 cgroup2 rw\n";
        let found = controllers(v2, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory\n".to_owned())
        });
        assert!(found.contains("memory") && found.contains("cpu") && !found.contains("pids"));
    }

    #[test]
    fn pod_range_taken_by_another_interface() {
        // 10.88.0.0/16 on cni-podman0 (podman's default network), 192.0.2.0/24 on eth0, a
        // default route, and the pod range on Berth's own bridge.
        let routes = format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             cni-podman0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n\
             berth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
            hex([10, 88, 0, 0]),
            hex([255, 255, 0, 0]),
            hex([192, 0, 2, 0]),
            hex([255, 255, 255, 0]),
            hex([10, 244, 0, 0]),
            hex([255, 255, 0, 0]),
        );
        let ours: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(competing_routes(&routes, ours, "berth0").is_empty());
        let podman: Ipv4Cidr = "10.88.0.0/16".parse().unwrap();
        let found = competing_routes(&routes, podman, "berth0");
        assert_eq!(found, vec![("cni-podman0".to_owned(), "10.88.0.0/16".parse().unwrap())]);
        let wide: Ipv4Cidr = "192.0.0.0/8".parse().unwrap();
        assert_eq!(found_interfaces(&competing_routes(&routes, wide, "berth0")), ["eth0"]);
        // The pods' /24 inside podman's /16 is more specific: the bridge's route wins.
        let inside: Ipv4Cidr = "10.88.7.0/24".parse().unwrap();
        assert!(competing_routes(&routes, inside, "berth0").is_empty());
        // Another server's bridge with the same range is someone else's too.
        assert_eq!(found_interfaces(&competing_routes(&routes, ours, "bts3")), ["berth0"]);
    }

    fn hex(octets: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(octets))
    }

    fn found_interfaces(found: &[(String, Ipv4Cidr)]) -> Vec<&str> {
        found.iter().map(|(i, _)| i.as_str()).collect()
    }

    #[test]
    fn overlayfs_from_proc_or_modules() {
        let none = Path::new("/nonexistent");
        assert!(has_overlayfs("nodev\tsysfs\n\text4\nnodev\toverlay\n", none));
        assert!(!has_overlayfs("nodev\tsysfs\n\text4\n", none));
    }
}
