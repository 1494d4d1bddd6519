//! The EndpointSlice controller's reconciler (upstream `k8s.io/endpointslice` `Reconciler`):
//! from a Service, the pods its selector picks and the slices it already has, decide which
//! `discovery.k8s.io/v1` EndpointSlices to create, update and delete.
//!
//! Pods are grouped by the ports they resolve to (named target ports may differ per pod), at
//! most [`MAX_ENDPOINTS_PER_SLICE`] endpoints go in one slice, existing slices are updated in
//! place rather than churned, and a Service with no endpoints keeps one empty placeholder slice.
//! Topology hints and the trigger-time annotation are not produced.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::pods;

/// Value of the managed-by label on the slices this controller owns.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Label naming the Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Label marking the endpoints of a headless Service.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The node label an endpoint's zone comes from.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// What a sync must write.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Replacements for existing slices (carrying the resourceVersion they replace).
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
    /// Pods left out because their node is unknown; the sync is retried for them.
    pub pods_on_missing_nodes: Vec<String>,
}

/// A node as the reconciler sees it: `None` when the node does not exist, else its zone.
pub type NodeZone = Option<Option<String>>;

/// Plans the slices of `service` (which must have a selector) from `selected_pods` and the
/// slices that carry its service-name and managed-by labels (`existing`, none being deleted).
pub fn plan(
    service: &Service,
    selected_pods: &[&Pod],
    node_zone: &dyn Fn(&str) -> NodeZone,
    existing: &[EndpointSlice],
) -> Plan {
    let mut plan = Plan::default();
    let supported = address_types(service);
    let mut by_type: BTreeMap<&str, Vec<&EndpointSlice>> = BTreeMap::new();
    // Slices of an address type the Service no longer has.
    let mut unsupported = Vec::new();
    for slice in existing {
        if supported.contains(&slice.address_type.as_str()) {
            by_type.entry(slice.address_type.as_str()).or_default().push(slice);
        } else {
            unsupported.push(slice.clone());
        }
    }
    for address_type in &supported {
        let slices = by_type.remove(address_type).unwrap_or_default();
        let (create, update, delete) =
            reconcile_address_type(service, selected_pods, node_zone, &slices, address_type, &mut plan);
        let (create, update, delete) = finalize(service, create, update, delete);
        plan.create.extend(create);
        plan.update.extend(update);
        plan.delete.extend(delete);
    }
    plan.delete.extend(unsupported);
    plan.pods_on_missing_nodes.sort();
    plan.pods_on_missing_nodes.dedup();
    plan
}

/// The address types the Service's IP families ask for (upstream `getAddressTypesForService`).
fn address_types(service: &Service) -> Vec<&'static str> {
    let mut types = BTreeSet::new();
    for family in service.spec.as_ref().and_then(|s| s.ip_families.as_ref()).into_iter().flatten() {
        match family.as_str() {
            "IPv4" => types.insert("IPv4"),
            "IPv6" => types.insert("IPv6"),
            _ => false,
        };
    }
    if types.is_empty() {
        let ip = pods::cluster_ip(service);
        if pods::is_service_ip_set(service) {
            types.insert(if pods::is_ipv6(ip) { "IPv6" } else { "IPv4" });
        } else {
            // Headless without families (an old API server): assume both.
            types.insert("IPv4");
            types.insert("IPv6");
        }
    }
    types.into_iter().collect()
}

fn reconcile_address_type(
    service: &Service,
    selected_pods: &[&Pod],
    node_zone: &dyn Fn(&str) -> NodeZone,
    existing: &[&EndpointSlice],
    address_type: &str,
    plan: &mut Plan,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut create = Vec::new();
    let mut update = Vec::new();
    let mut delete = Vec::new();

    let mut existing_by_ports: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            existing_by_ports
                .entry(port_map_key(slice.ports.as_deref().unwrap_or(&[])))
                .or_default()
                .push((*slice).clone());
        } else {
            delete.push((*slice).clone());
        }
    }

    let mut desired: BTreeMap<String, (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    for pod in selected_pods {
        if !pods::should_be_in_endpoints(pod, true) {
            continue;
        }
        let mut ports = endpoint_ports(service, pod);
        let key = port_map_key(&ports);
        ports.sort_by_key(port_sort_key);
        let entry = desired.entry(key).or_insert_with(|| (ports, EndpointSet::default()));
        let zone = match node_zone(pods::node_name(pod)) {
            Some(zone) => zone,
            None => {
                // The pod names a node that does not exist: leave it out (and retry) unless
                // the user asked for every address to be published.
                if !pods::publish_not_ready(service) {
                    plan.pods_on_missing_nodes.push(pod.metadata.name.clone().unwrap_or_default());
                    continue;
                }
                None
            }
        };
        let endpoint = pod_to_endpoint(pod, zone, service, address_type);
        if !endpoint.addresses.is_empty() {
            entry.1.insert(endpoint);
        }
    }

    for (key, (ports, endpoints)) in desired.iter() {
        let slices = existing_by_ports.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let (c, u, d) = reconcile_port_mapping(service, slices, endpoints.clone(), ports, address_type);
        create.extend(c);
        update.extend(u);
        delete.extend(d);
    }
    for (key, slices) in existing_by_ports {
        if !desired.contains_key(&key) {
            delete.extend(slices);
        }
    }

    // A Service with no endpoints still gets one (empty) slice.
    if existing.len() == delete.len() && create.is_empty() {
        let placeholder = new_endpoint_slice(service, Vec::new(), address_type);
        if delete.len() == 1 && same_placeholder(&delete[0], &placeholder) {
            delete.clear();
        } else {
            create.push(placeholder);
        }
    }
    (create, update, delete)
}

/// Turns creates into updates of slices about to be deleted, then keeps creates only while
/// the Service is not being deleted (upstream `finalize`, before the API calls).
fn finalize(
    service: &Service,
    mut create: Vec<EndpointSlice>,
    mut update: Vec<EndpointSlice>,
    mut delete: Vec<EndpointSlice>,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut i = 0;
    while i < delete.len() {
        let Some(last) = create.last() else { break };
        if delete[i].address_type == last.address_type && owned_by(&delete[i], service) {
            let replaced = delete.remove(i);
            if let Some(mut slice) = create.pop() {
                slice.metadata.name = replaced.metadata.name;
                slice.metadata.resource_version = replaced.metadata.resource_version;
                update.push(slice);
            }
        } else {
            i += 1;
        }
    }
    if service.metadata.deletion_timestamp.is_some() {
        // Creating slices for a Service being deleted would race the garbage collector.
        create.clear();
    }
    (create, update, delete)
}

/// Compares the endpoints in a port group's existing slices with the desired ones (upstream
/// `reconcileByPortMapping`): keep and refresh what is still desired, fill changed slices
/// first, then a nearly full unchanged slice, then new slices.
fn reconcile_port_mapping(
    service: &Service,
    existing: &[EndpointSlice],
    mut desired: EndpointSet,
    ports: &[EndpointPort],
    address_type: &str,
) -> (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>) {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();

    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut endpoint_changed = false;
        for endpoint in &slice.endpoints {
            if let Some(wanted) = desired.take(endpoint) {
                if !equal_beyond_hash(&wanted, endpoint) {
                    endpoint_changed = true;
                }
                kept.push(wanted);
            }
        }
        let (labels, labels_changed) = slice_labels(slice.metadata.labels.as_ref(), service);
        if endpoint_changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, slice.clone());
            } else {
                let mut copy = slice.clone();
                copy.endpoints = kept;
                copy.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, copy);
            }
        } else if labels_changed {
            let mut copy = slice.clone();
            copy.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, copy);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, slice.clone());
        }
    }

    // Fill the slices being updated anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut names: Vec<&String> = to_update.iter().collect();
        names.sort_by_key(|n| std::cmp::Reverse(by_name.get(*n).map_or(0, |s| s.endpoints.len())));
        for name in names {
            if let Some(slice) = by_name.get_mut(name) {
                while slice.endpoints.len() < MAX_ENDPOINTS_PER_SLICE {
                    let Some(endpoint) = desired.pop() else { break };
                    slice.endpoints.push(endpoint);
                }
            }
        }
    }

    let mut create = Vec::new();
    while !desired.is_empty() {
        let mut target = None;
        if desired.len() < MAX_ENDPOINTS_PER_SLICE && !unchanged.is_empty() {
            target = slice_to_fill(unchanged.iter().filter_map(|n| by_name.get(n)), desired.len()).cloned();
        }
        let mut slice = target.unwrap_or_else(|| new_endpoint_slice(service, ports.to_vec(), address_type));
        while slice.endpoints.len() < MAX_ENDPOINTS_PER_SLICE {
            let Some(endpoint) = desired.pop() else { break };
            slice.endpoints.push(endpoint);
        }
        match slice.metadata.name.clone() {
            Some(name) => {
                unchanged.remove(&name);
                to_update.insert(name.clone());
                by_name.insert(name, slice);
            }
            None => create.push(slice),
        }
    }

    let update = to_update.iter().filter_map(|n| by_name.get(n).cloned()).collect();
    let delete = to_delete.iter().filter_map(|n| by_name.get(n).cloned()).collect();
    (create, update, delete)
}

/// The unchanged slice that comes closest to full when `count` endpoints are added, if any fits.
fn slice_to_fill<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, count: usize) -> Option<&'a EndpointSlice> {
    let mut closest_gap = MAX_ENDPOINTS_PER_SLICE;
    let mut closest = None;
    for slice in slices {
        let Some(gap) = MAX_ENDPOINTS_PER_SLICE.checked_sub(count + slice.endpoints.len()) else { continue };
        if gap < closest_gap {
            closest_gap = gap;
            closest = Some(slice);
            if gap == 0 {
                break;
            }
        }
    }
    closest
}

/// The endpoint ports a pod offers for the Service (upstream `getEndpointPorts`); ports whose
/// named target the pod lacks are left out.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let service_ports = pods::service_ports(service);
    if service_ports.is_empty() && pods::cluster_ip(service) == "None" {
        return Vec::new();
    }
    service_ports
        .iter()
        .filter_map(|sp| {
            let port = pods::find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(pods::port_protocol(sp).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The endpoint for a pod (upstream `podToEndpoint`).
pub fn pod_to_endpoint(pod: &Pod, zone: Option<String>, service: &Service, address_type: &str) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pods::is_terminating(pod);
    // Never "ready" while terminating, unless every address is to be published.
    let ready = pods::publish_not_ready(service) || (serving && !terminating);
    let want_v6 = address_type == "IPv6";
    let addresses =
        pods::pod_ips(pod).iter().filter(|ip| pods::is_ipv6(ip) == want_v6).map(|ip| pods::canonical_ip(ip)).collect();
    let node = pods::node_name(pod);
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        node_name: (!node.is_empty()).then(|| node.to_string()),
        zone,
        hostname: pods::hostname_for(pod, service),
        ..Default::default()
    }
}

/// A new, empty slice for the Service (upstream `newEndpointSlice`).
pub fn new_endpoint_slice(service: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let (labels, _) = slice_labels(None, service);
    let name = service.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![service_owner_ref(service)]),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// The controller reference a slice carries to its Service.
pub fn service_owner_ref(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let uid = service.metadata.uid.as_deref().unwrap_or("");
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.kind == "Service" && r.api_version == "v1")
}

fn is_reserved_label(key: &str) -> bool {
    key == LABEL_SERVICE_NAME || key == LABEL_MANAGED_BY || key == LABEL_HEADLESS
}

/// The labels a slice should carry (the Service's, minus reserved ones, plus service-name,
/// managed-by and the headless marker) and whether the Service's own labels differ from the
/// slice's (upstream `setEndpointSliceLabels`).
pub fn slice_labels(current: Option<&BTreeMap<String, String>>, service: &Service) -> (BTreeMap<String, String>, bool) {
    let slice_own: BTreeMap<&String, &String> =
        current.into_iter().flatten().filter(|(k, _)| !is_reserved_label(k)).collect();
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !is_reserved_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = slice_own.len() != labels.len() || slice_own.iter().any(|(k, v)| labels.get(*k) != Some(*v));
    if !pods::is_service_ip_set(service) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.into(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    (labels, changed)
}

/// Whether an existing slice is already the placeholder that would be created (compares what
/// upstream's `placeholderSliceCompare` does: namespace, labels, owners, and the empty body).
fn same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    let owners = |s: &EndpointSlice| s.metadata.owner_references.clone().unwrap_or_default();
    existing.metadata.namespace == placeholder.metadata.namespace
        && labels(existing) == labels(placeholder)
        && owners(existing) == owners(placeholder)
        && existing.address_type == placeholder.address_type
        && existing.endpoints.is_empty()
        && existing.ports.as_ref().is_none_or(|p| p.is_empty())
}

/// A canonical, order-independent key for a set of endpoint ports.
pub(super) fn port_map_key(ports: &[EndpointPort]) -> String {
    let mut parts: Vec<String> = ports.iter().map(|p| format!("{:?}", port_sort_key(p))).collect();
    parts.sort();
    parts.join("\n")
}

type PortSortKey = (Option<String>, Option<i32>, Option<String>, Option<String>);

fn port_sort_key(p: &EndpointPort) -> PortSortKey {
    (p.name.clone(), p.port, p.protocol.clone(), p.app_protocol.clone())
}

/// What identifies an endpoint across syncs: its addresses, hostname and target pod (upstream
/// `hashEndpoint`), so condition or node changes update it in place.
pub(super) fn endpoint_identity(endpoint: &Endpoint) -> String {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    format!(
        "{}|{}|{}/{}",
        addresses.join(","),
        endpoint.hostname.as_deref().unwrap_or(""),
        target.and_then(|t| t.namespace.as_deref()).unwrap_or(""),
        target.and_then(|t| t.name.as_deref()).unwrap_or(""),
    )
}

/// Whether two endpoints with the same identity agree on everything else the controller sets
/// (upstream `EndpointsEqualBeyondHash`; the target's resourceVersion does not count).
pub(super) fn equal_beyond_hash(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    };
    a.node_name == b.node_name && a.zone == b.zone && conditions(a) == conditions(b) && target(a) == target(b)
}

/// Desired endpoints keyed by identity, taken out as they are placed.
#[derive(Debug, Clone, Default)]
struct EndpointSet(BTreeMap<String, Endpoint>);

impl EndpointSet {
    fn insert(&mut self, endpoint: Endpoint) {
        self.0.insert(endpoint_identity(&endpoint), endpoint);
    }

    /// Removes and returns the desired endpoint with the same identity as `existing`.
    fn take(&mut self, existing: &Endpoint) -> Option<Endpoint> {
        self.0.remove(&endpoint_identity(existing))
    }

    fn pop(&mut self) -> Option<Endpoint> {
        self.0.pop_first().map(|(_, e)| e)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn service(publish_not_ready: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                cluster_ip: Some("10.96.0.10".into()),
                ip_families: Some(vec!["IPv4".into()]),
                publish_not_ready_addresses: Some(publish_not_ready),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::String("web".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, port: i32, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("web".into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn zone_a(name: &str) -> NodeZone {
        (name == "node1").then(|| Some("zone-a".to_string()))
    }

    fn created_as(mut slice: EndpointSlice, name: &str, rv: &str) -> EndpointSlice {
        slice.metadata.name = Some(name.into());
        slice.metadata.resource_version = Some(rv.into());
        slice
    }

    #[test]
    fn first_sync_creates_one_slice_grouped_by_resolved_ports() {
        let svc = service(false);
        let (a, b, c) =
            (pod("a", "10.88.0.2", 8080, true), pod("b", "10.88.0.3", 8080, false), pod("c", "10.88.0.4", 9090, true));
        let plan = plan(&svc, &[&a, &b, &c], &zone_a, &[]);
        assert!(plan.update.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.create.len(), 2, "pods resolving the named port differently get separate slices");
        let slice_8080 = plan.create.iter().find(|s| s.ports.as_ref().unwrap()[0].port == Some(8080)).unwrap();
        assert_eq!(slice_8080.address_type, "IPv4");
        assert_eq!(slice_8080.metadata.generate_name.as_deref(), Some("web-"));
        let labels = slice_8080.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some("web"));
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let owner = &slice_8080.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Service", "svc-uid", Some(true)));
        let port = &slice_8080.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.protocol.as_deref()), (Some("http"), Some("TCP")));
        let mut eps: Vec<_> =
            slice_8080.endpoints.iter().map(|e| (e.addresses[0].clone(), e.conditions.clone().unwrap())).collect();
        eps.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(eps[0].0, "10.88.0.2");
        assert_eq!((eps[0].1.ready, eps[0].1.serving, eps[0].1.terminating), (Some(true), Some(true), Some(false)));
        assert_eq!((eps[1].1.ready, eps[1].1.serving), (Some(false), Some(false)));
        let ep = &slice_8080.endpoints[0];
        assert_eq!(ep.node_name.as_deref(), Some("node1"));
        assert_eq!(ep.zone.as_deref(), Some("zone-a"));
        assert_eq!(ep.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
    }

    #[test]
    fn terminating_pods_stay_serving_but_not_ready_unless_published() {
        let mut a = pod("a", "10.88.0.2", 8080, true);
        a.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let c = plan(&service(false), &[&a], &zone_a, &[]).create[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(false), Some(true), Some(true)));
        let c = plan(&service(true), &[&a], &zone_a, &[]).create[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!((c.ready, c.serving, c.terminating), (Some(true), Some(true), Some(true)));
    }

    #[test]
    fn steady_state_is_a_no_op_and_changes_update_in_place() {
        let svc = service(false);
        let a = pod("a", "10.88.0.2", 8080, true);
        let b = pod("b", "10.88.0.3", 8080, true);
        let first = plan(&svc, &[&a, &b], &zone_a, &[]);
        let existing = vec![created_as(first.create[0].clone(), "web-abcde", "5")];
        let again = plan(&svc, &[&a, &b], &zone_a, &existing);
        assert_eq!(again, Plan::default());

        let b_unready = pod("b", "10.88.0.3", 8080, false);
        let changed = plan(&svc, &[&a, &b_unready], &zone_a, &existing);
        assert!(changed.create.is_empty() && changed.delete.is_empty());
        assert_eq!(changed.update.len(), 1);
        assert_eq!(changed.update[0].metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(changed.update[0].metadata.resource_version.as_deref(), Some("5"));
        let b_ep = changed.update[0].endpoints.iter().find(|e| e.addresses[0] == "10.88.0.3").unwrap();
        assert_eq!(b_ep.conditions.as_ref().unwrap().ready, Some(false));

        // The last pod going away leaves the placeholder: the slice is reused, not recreated.
        let emptied = plan(&svc, &[], &zone_a, &existing);
        assert!(emptied.create.is_empty() && emptied.delete.is_empty());
        assert_eq!(emptied.update.len(), 1);
        assert!(emptied.update[0].endpoints.is_empty());
        assert_eq!(emptied.update[0].ports.as_deref(), Some(&[][..]));
        let placeholder = vec![created_as(emptied.update[0].clone(), "web-abcde", "6")];
        assert_eq!(plan(&svc, &[], &zone_a, &placeholder), Plan::default());
    }

    #[test]
    fn pods_on_unknown_nodes_are_skipped_unless_published() {
        let mut a = pod("a", "10.88.0.2", 8080, true);
        a.spec.as_mut().unwrap().node_name = Some("ghost".into());
        let p = plan(&service(false), &[&a], &zone_a, &[]);
        assert_eq!(p.pods_on_missing_nodes, vec!["a".to_string()]);
        assert!(p.create[0].endpoints.is_empty(), "only the placeholder is created");
        let p = plan(&service(true), &[&a], &zone_a, &[]);
        assert!(p.pods_on_missing_nodes.is_empty());
        assert_eq!(p.create[0].endpoints.len(), 1);
        assert_eq!(p.create[0].endpoints[0].zone, None);
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints_and_foreign_slices_are_deleted() {
        let svc = service(false);
        let pods: Vec<Pod> = (0..150).map(|i| pod(&format!("p{i}"), &format!("10.88.1.{i}"), 8080, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut foreign = new_endpoint_slice(&svc, Vec::new(), "IPv4");
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "old-service".into();
        let foreign = created_as(foreign, "web-old", "3");
        let p = plan(&svc, &refs, &zone_a, &[foreign]);
        let mut sizes: Vec<usize> = p.create.iter().chain(p.update.iter()).map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100]);
        // A slice owned by another Service object of the same name is never reused.
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].metadata.name.as_deref(), Some("web-old"));
        assert!(p.update.is_empty());
    }

    #[test]
    fn headless_services_are_labelled_and_service_labels_are_mirrored() {
        let mut svc = service(false);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let a = pod("a", "10.88.0.2", 8080, true);
        let first = plan(&svc, &[&a], &zone_a, &[]);
        let labels = first.create[0].metadata.labels.clone().unwrap();
        assert_eq!(labels.get(LABEL_HEADLESS).map(String::as_str), Some(""));
        let existing = vec![created_as(first.create[0].clone(), "web-x", "2")];
        svc.metadata.labels.as_mut().unwrap().insert("tier".into(), "front".into());
        let relabelled = plan(&svc, &[&a], &zone_a, &existing);
        assert_eq!(relabelled.update.len(), 1);
        assert_eq!(
            relabelled.update[0].metadata.labels.as_ref().unwrap().get("tier").map(String::as_str),
            Some("front")
        );
    }
}
