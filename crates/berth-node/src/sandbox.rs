//! The pod sandbox: what the containers of one pod share. A network namespace with the pod's
//! IP, UTS and IPC namespaces kept alive by bind mounts (no pause process), and the
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` every container of the pod sees.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::network::PodNetworkInfo;

/// Persisted as `_sandbox/sandbox.json` in the pod's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub network: PodNetworkInfo,
    /// RFC 3339.
    pub created_at: String,
}

impl Sandbox {
    pub fn ip(&self) -> Ipv4Addr {
        self.network.ip
    }
}

/// Kubernetes limits hostnames to 63 characters and drops trailing `-`/`.` after cutting.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_else(|| "pod".to_owned());
    if name.len() <= 63 {
        return name;
    }
    name[..63].trim_end_matches(['-', '.']).to_owned()
}

/// The pod's `/etc/hosts`, in kubelet's layout.
pub fn hosts_file(pod: &Pod, ip: Ipv4Addr, hostname: &str, cluster_domain: &str) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let spec = pod.spec.as_ref();
    match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(subdomain) => {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
            text.push_str(&format!("{ip}\t{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}\t{hostname}\n"));
        }
        None => text.push_str(&format!("{ip}\t{hostname}\n")),
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    if let Some(aliases) = aliases {
        text.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.clone().unwrap_or_default().join("\t");
            text.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    text
}

/// The pod's `/etc/resolv.conf`: the host's (minus loopback nameservers, which would point
/// into the pod's own namespace), or only `dnsConfig` with `dnsPolicy: None`; `dnsConfig`
/// entries are added in both cases.
pub fn resolv_conf(pod: &Pod, host_resolv_conf: &str) -> String {
    resolv_conf_with(pod, host_resolv_conf, None)
}

/// As [`resolv_conf`], with the cluster DNS (address and cluster domain) that pods with
/// `dnsPolicy: ClusterFirst` (the default; `ClusterFirstWithHostNet` for host-network pods)
/// use, as kubelet writes it: that nameserver only, the namespace's search path before the
/// host's, `ndots:5`.
pub fn resolv_conf_with(pod: &Pod, host_resolv_conf: &str, cluster: Option<(Ipv4Addr, &str)>) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let policy_none = policy == "None";
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster_first = (policy == "ClusterFirst" && !host_network) || policy == "ClusterFirstWithHostNet";
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    if let (true, Some((dns, domain))) = (cluster_first, cluster) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        nameservers.push(dns.to_string());
        searches.extend([format!("{namespace}.svc.{domain}"), format!("svc.{domain}"), domain.to_owned()]);
        options.push("ndots:5".to_owned());
        // The host's search domains follow; its nameservers do not.
        for line in host_resolv_conf.lines() {
            let mut words = line.split_whitespace();
            if matches!(words.next(), Some("search") | Some("domain")) {
                searches.extend(words.map(str::to_owned));
            }
        }
    } else if !policy_none {
        for line in host_resolv_conf.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(server) = words.next() {
                        let loopback = server.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                        if !loopback {
                            nameservers.push(server.to_owned());
                        }
                    }
                }
                Some("search") | Some("domain") => searches.extend(words.map(str::to_owned)),
                Some("options") => options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
    }
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        nameservers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            if let Some(name) = &option.name {
                options.push(match &option.value {
                    Some(value) => format!("{name}:{value}"),
                    None => name.clone(),
                });
            }
        }
    }
    dedup(&mut nameservers);
    dedup(&mut searches);
    dedup(&mut options);
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in nameservers.iter().take(3) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    text
}

fn dedup(items: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    items.retain(|item| seen.insert(item.clone()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some("web-0".into()), namespace: Some("shop".into()), ..Default::default() },
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let plain = hosts_file(&pod(PodSpec::default()), Ipv4Addr::new(10, 88, 0, 9), "web-0", "cluster.local");
        assert!(plain.ends_with("10.88.0.9\tweb-0\n"), "{plain}");
        assert!(plain.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        let with_subdomain = hosts_file(
            &pod(PodSpec {
                subdomain: Some("db".into()),
                host_aliases: Some(vec![HostAlias {
                    ip: "1.2.3.4".into(),
                    hostnames: Some(vec!["a".into(), "b".into()]),
                }]),
                ..Default::default()
            }),
            Ipv4Addr::new(10, 88, 0, 9),
            "web-0",
            "cluster.local",
        );
        assert!(with_subdomain.contains("10.88.0.9\tweb-0.db.shop.svc.cluster.local\tweb-0\n"));
        assert!(with_subdomain.ends_with("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_and_merges_dns_config() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0\n";
        let conf = resolv_conf(&pod(PodSpec::default()), host);
        assert_eq!(conf, "search corp.example\nnameserver 10.0.0.2\noptions edns0\n");
        let custom = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["1.1.1.1".into()]),
                searches: Some(vec!["x.local".into()]),
                options: None,
            }),
            ..Default::default()
        });
        assert_eq!(resolv_conf(&custom, host), "search x.local\nnameserver 1.1.1.1\n");
    }

    #[test]
    fn long_hostnames_are_cut() {
        let long = "a".repeat(62) + "-b";
        let mut p = pod(PodSpec::default());
        p.metadata.name = Some(long);
        assert_eq!(pod_hostname(&p), "a".repeat(62));
    }
}
