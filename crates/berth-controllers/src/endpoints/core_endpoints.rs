//! The core/v1 Endpoints a Service's selector implies (upstream `pkg/controller/endpoint`):
//! ready pods under `addresses`, the rest under `notReadyAddresses`, repacked into the
//! canonical subset layout so that equal content compares equal, and capped at 1000 addresses.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};

use super::pods;

/// Endpoints hold at most this many addresses; the rest are dropped and the object annotated.
pub const MAX_CAPACITY: usize = 1000;
/// Annotation set on Endpoints whose addresses were truncated to [`MAX_CAPACITY`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Annotation upstream sets with the time of the last pod change; this controller does not
/// track it and removes a stale one.
pub const LAST_CHANGE_TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Label marking the Endpoints of a headless Service.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The subsets for `service` from the pods its selector picks (upstream `syncService`).
pub fn desired_subsets(service: &Service, selected_pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish = pods::publish_not_ready(service);
    let service_ports = pods::service_ports(service);
    let mut subsets = Vec::new();
    for pod in selected_pods {
        if !pods::should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(address) = pod_address(service, pod) else { continue };
        let ready = publish || pods::is_ready(pod);
        if service_ports.is_empty() {
            // Only a headless Service may have no ports.
            if pods::cluster_ip(service) == "None" {
                subsets.push(subset(address, None, ready));
            }
            continue;
        }
        for sp in service_ports {
            let Some(port) = pods::find_port(pod, sp) else { continue };
            let endpoint_port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol: Some(pods::port_protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            };
            subsets.push(subset(address.clone(), Some(endpoint_port), ready));
        }
    }
    repack(subsets)
}

fn subset(address: EndpointAddress, port: Option<EndpointPort>, ready: bool) -> EndpointSubset {
    let (addresses, not_ready) = if ready { (Some(vec![address]), None) } else { (None, Some(vec![address])) };
    EndpointSubset { addresses, not_ready_addresses: not_ready, ports: port.map(|p| vec![p]) }
}

/// The pod's address of the Service's IP family (upstream `podToEndpointAddressForService`).
fn pod_address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let families = service.spec.as_ref().and_then(|s| s.ip_families.as_ref());
    let want_v6 = match families.and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if pods::is_service_ip_set(service) => pods::is_ipv6(pods::cluster_ip(service)),
        // Headless without families: go by the pod's primary IP.
        None => pods::pod_ips(pod).first().is_some_and(|ip| pods::is_ipv6(ip)),
    };
    let ip = pods::pod_ips(pod).into_iter().find(|ip| pods::is_ipv6(ip) == want_v6)?;
    Some(EndpointAddress {
        ip,
        node_name: Some(pods::node_name(pod).to_string()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        hostname: pods::hostname_for(pod, service),
    })
}

/// Identity of an address across subsets: IP and target uid.
type AddressKey = (String, String);
/// A port as a sortable value; port -1 stands for "no ports" (headless without ports).
type PortKey = (Option<String>, i32, Option<String>, Option<String>);

fn address_key(address: &EndpointAddress) -> AddressKey {
    (address.ip.clone(), address.target_ref.as_ref().and_then(|t| t.uid.clone()).unwrap_or_default())
}

fn port_key(port: &EndpointPort) -> PortKey {
    (port.name.clone(), port.port, port.protocol.clone(), port.app_protocol.clone())
}

/// Rewrites subsets into the canonical layout (upstream `RepackSubsets`): one subset per
/// distinct set of addresses, each with every port those addresses share; an address not ready
/// on any port is not ready on it. Addresses sort by IP then uid, ports and subsets in a fixed
/// order (upstream sorts the last two by hash; any fixed order serves the same purpose).
pub fn repack(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    const NO_PORTS: PortKey = (None, -1, None, None);
    let mut addresses: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    let mut ports: BTreeMap<PortKey, EndpointPort> = BTreeMap::new();
    let mut ready_by_port: BTreeMap<PortKey, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for subset in subsets {
        let subset_ports: Vec<PortKey> = match subset.ports.as_deref() {
            None | Some([]) => vec![NO_PORTS],
            Some(list) => list
                .iter()
                .map(|p| {
                    ports.entry(port_key(p)).or_insert_with(|| p.clone());
                    port_key(p)
                })
                .collect(),
        };
        let listed = subset
            .addresses
            .into_iter()
            .flatten()
            .map(|a| (a, true))
            .chain(subset.not_ready_addresses.into_iter().flatten().map(|a| (a, false)));
        for (address, ready) in listed {
            let key = address_key(&address);
            addresses.entry(key.clone()).or_insert(address);
            for port in &subset_ports {
                let state = ready_by_port.entry(port.clone()).or_default().entry(key.clone()).or_insert(ready);
                // Not ready on a port trumps ready.
                *state = *state && ready;
            }
        }
    }
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, BTreeSet<PortKey>> = BTreeMap::new();
    for (port, members) in ready_by_port {
        let group = groups.entry(members.into_iter().collect()).or_default();
        if port != NO_PORTS {
            group.insert(port);
        }
    }
    groups
        .into_iter()
        .map(|(members, port_keys)| {
            let pick = |want: bool| -> Option<Vec<EndpointAddress>> {
                let list: Vec<EndpointAddress> =
                    members.iter().filter(|(_, r)| *r == want).filter_map(|(k, _)| addresses.get(k).cloned()).collect();
                (!list.is_empty()).then_some(list)
            };
            let port_list: Vec<EndpointPort> = port_keys.iter().filter_map(|k| ports.get(k).cloned()).collect();
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!port_list.is_empty()).then_some(port_list),
            }
        })
        .collect()
}

/// Subsets in a comparable form: no target resourceVersions, empty lists as absent.
fn normalized(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let clean = |list: &Option<Vec<EndpointAddress>>| -> Option<Vec<EndpointAddress>> {
        let list: Vec<EndpointAddress> = list
            .iter()
            .flatten()
            .cloned()
            .map(|mut a| {
                if let Some(t) = a.target_ref.as_mut() {
                    t.resource_version = None;
                }
                a
            })
            .collect();
        (!list.is_empty()).then_some(list)
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: clean(&s.addresses),
            not_ready_addresses: clean(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

/// Whether two subset lists are equal ignoring target resourceVersions.
pub fn subsets_equal(a: &[EndpointSubset], b: &[EndpointSubset]) -> bool {
    normalized(a) == normalized(b)
}

fn address_count(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| {
        (r + s.addresses.as_ref().map_or(0, Vec::len), n + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
    })
}

/// Whether the over-capacity annotation agrees with the subsets (upstream
/// `capacityAnnotationSetCorrectly`): never right when over capacity, since they must be cut.
pub fn capacity_annotation_correct(endpoints: &Endpoints) -> bool {
    let (ready, not_ready) = address_count(endpoints.subsets.as_deref().unwrap_or(&[]));
    if ready + not_ready > MAX_CAPACITY {
        return false;
    }
    !endpoints.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION))
}

/// Cuts the subsets down to [`MAX_CAPACITY`] addresses, keeping ready ones first and spreading
/// the cut over subsets in proportion (upstream `truncateEndpoints`). Returns whether it cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let (total_ready, total_not_ready) = address_count(subsets);
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (budget, total) =
        if truncate_ready { (MAX_CAPACITY, total_ready) } else { (MAX_CAPACITY - total_ready, total_not_ready) };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        let in_subset = if truncate_ready {
            subset.addresses.as_ref().map_or(0, Vec::len)
        } else {
            subset.not_ready_addresses.as_ref().map_or(0, Vec::len)
        };
        // Round each share up; the last subsets get what is left.
        let share = (in_subset * budget).div_ceil(total.max(1)).min(left);
        if truncate_ready {
            if let Some(list) = subset.addresses.as_mut() {
                list.truncate(share);
            }
            subset.not_ready_addresses = None;
            left -= subset.addresses.as_ref().map_or(0, Vec::len);
        } else {
            if let Some(list) = subset.not_ready_addresses.as_mut() {
                list.truncate(share);
            }
            left -= subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn service(ports: Vec<ServicePort>, cluster_ip: &str, publish: bool) -> Service {
        Service {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("ns".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                cluster_ip: Some(cluster_ip.into()),
                ip_families: Some(vec!["IPv4".into()]),
                ports: Some(ports),
                publish_not_ready_addresses: Some(publish),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(target),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, web_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("web".into()),
                        container_port: web_port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True".into() } else { "False".into() },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_per_port_set() {
        let svc = service(
            vec![port("http", 80, IntOrString::String("web".into())), port("admin", 81, IntOrString::Int(9000))],
            "10.96.0.5",
            false,
        );
        let (a, b, c) =
            (pod("a", "10.88.0.3", true, 8080), pod("b", "10.88.0.2", false, 8080), pod("c", "10.88.0.4", true, 8080));
        let subsets = desired_subsets(&svc, &[&a, &b, &c]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.88.0.3", "10.88.0.4"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.88.0.2"]);
        let ports: Vec<(Option<&str>, i32)> =
            subsets[0].ports.iter().flatten().map(|p| (p.name.as_deref(), p.port)).collect();
        assert_eq!(ports, vec![(Some("admin"), 9000), (Some("http"), 8080)]);
        let addr = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("n1"));
        assert_eq!(addr.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        // Deterministic: the same input gives the same layout.
        assert!(subsets_equal(&subsets, &desired_subsets(&svc, &[&c, &b, &a])));
    }

    #[test]
    fn pods_resolving_named_ports_differently_get_separate_subsets() {
        let svc = service(vec![port("http", 80, IntOrString::String("web".into()))], "10.96.0.5", false);
        let (a, b) = (pod("a", "10.88.0.2", true, 8080), pod("b", "10.88.0.3", true, 9090));
        let subsets = desired_subsets(&svc, &[&a, &b]);
        assert_eq!(subsets.len(), 2);
        let mut pairs: Vec<(Vec<&str>, i32)> =
            subsets.iter().map(|s| (ips(&s.addresses), s.ports.as_ref().unwrap()[0].port)).collect();
        pairs.sort();
        assert_eq!(pairs, vec![(vec!["10.88.0.2"], 8080), (vec!["10.88.0.3"], 9090)]);
    }

    #[test]
    fn terminating_pods_are_dropped_unless_published_and_headless_portless_is_kept() {
        let mut a = pod("a", "10.88.0.2", true, 8080);
        a.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let b = pod("b", "10.88.0.3", false, 8080);
        let svc = service(vec![port("http", 80, IntOrString::Int(8080))], "10.96.0.5", false);
        let s = desired_subsets(&svc, &[&a, &b]);
        assert_eq!((ips(&s[0].addresses), ips(&s[0].not_ready_addresses)), (vec![], vec!["10.88.0.3"]));
        let published = service(vec![port("http", 80, IntOrString::Int(8080))], "10.96.0.5", true);
        let s = desired_subsets(&published, &[&a, &b]);
        assert_eq!(ips(&s[0].addresses), vec!["10.88.0.2", "10.88.0.3"]);
        let headless = service(Vec::new(), "None", false);
        let s = desired_subsets(&headless, &[&b, &pod("c", "10.88.0.9", true, 1)]);
        assert_eq!(s.len(), 1);
        assert_eq!((ips(&s[0].addresses), ips(&s[0].not_ready_addresses)), (vec!["10.88.0.9"], vec!["10.88.0.3"]));
        assert_eq!(s[0].ports, None);
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let address = |i: usize| EndpointAddress { ip: format!("10.0.{}.{}", i / 256, i % 256), ..Default::default() };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..900).map(address).collect()),
            not_ready_addresses: Some((900..1200).map(address).collect()),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(address_count(&subsets), (900, 100));
        let mut under = vec![EndpointSubset { addresses: Some((0..10).map(address).collect()), ..Default::default() }];
        assert!(!truncate(&mut under));
    }
}
