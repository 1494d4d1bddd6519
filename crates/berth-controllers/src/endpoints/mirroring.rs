//! The EndpointSliceMirroring controller's reconciler (upstream
//! `pkg/controller/endpointslicemirroring`): the core/v1 Endpoints a user writes for a Service
//! without a selector are mirrored into EndpointSlices, which is what the service proxy reads.
//! One slice per subset port set and address type, at most 1000 addresses per subset.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::slices::{self, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, Plan};

/// Value of the managed-by label on mirrored slices.
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Label on Endpoints that must not be mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Annotation of Endpoints used as leader-election locks, which are never mirrored.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Upstream's default `--mirroring-max-endpoints-per-subset`.
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Whether these Endpoints may be mirrored at all (the Service check is separate).
pub fn should_mirror(endpoints: &Endpoints) -> bool {
    let skip =
        endpoints.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SKIP_MIRROR)).map(String::as_str) == Some("true");
    let leader = endpoints.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
    !skip && !leader
}

fn address_to_endpoint(address: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip: std::net::IpAddr = address.ip.parse().ok()?;
    let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Default::default()
    };
    Some((endpoint, address_type))
}

/// The labels and annotations a mirrored slice carries: the Endpoints' own, plus service-name
/// and managed-by, minus the trigger-time and last-applied annotations.
fn slice_meta(endpoints: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_SERVICE_NAME.into(), endpoints.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    let mut annotations = endpoints.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(TRIGGER_TIME_ANNOTATION);
    annotations.remove(LAST_APPLIED_ANNOTATION);
    (labels, annotations)
}

fn new_slice(endpoints: &Endpoints, ports: &[EndpointPort], address_type: &str, name: Option<String>) -> EndpointSlice {
    let (labels, annotations) = slice_meta(endpoints);
    let endpoints_name = endpoints.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| format!("{endpoints_name}-")),
            name,
            namespace: endpoints.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Endpoints".into(),
                name: endpoints_name,
                uid: endpoints.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: address_type.to_string(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

/// Desired endpoints of one (address type, port set) group.
struct Group {
    address_type: &'static str,
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<String, Endpoint>,
}

/// Plans the mirrored slices for `endpoints` given the slices already mirrored for it.
pub fn plan(endpoints: &Endpoints, existing: &[EndpointSlice]) -> Plan {
    let mut desired: BTreeMap<String, Group> = BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let port_key = slices::port_map_key(&ports);
        let listed = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(subset.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        let mut mirrored = 0;
        for (address, ready) in listed {
            if mirrored >= MAX_ENDPOINTS_PER_SUBSET {
                break;
            }
            // Invalid IPs are skipped (upstream records an event).
            let Some((endpoint, address_type)) = address_to_endpoint(address, ready) else { continue };
            mirrored += 1;
            let group = desired.entry(format!("{address_type}/{port_key}")).or_insert_with(|| Group {
                address_type,
                ports: ports.clone(),
                endpoints: BTreeMap::new(),
            });
            group.endpoints.insert(slices::endpoint_identity(&endpoint), endpoint);
        }
    }

    let mut existing_by_key: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        let key = format!("{}/{}", slice.address_type, slices::port_map_key(slice.ports.as_deref().unwrap_or(&[])));
        existing_by_key.entry(key).or_default().push(slice);
    }

    let (labels, annotations) = slice_meta(endpoints);
    let mut plan = Plan::default();
    for (key, group) in &desired {
        let current = existing_by_key.remove(key).unwrap_or_default();
        let Some((first, rest)) = current.split_first() else {
            let mut slice = new_slice(endpoints, &group.ports, group.address_type, None);
            slice.endpoints = group.endpoints.values().cloned().collect();
            plan.create.push(slice);
            continue;
        };
        plan.delete.extend(rest.iter().map(|s| (*s).clone()));
        let same_endpoints = first.endpoints.len() == group.endpoints.len()
            && first.endpoints.iter().all(|e| {
                group
                    .endpoints
                    .get(&slices::endpoint_identity(e))
                    .is_some_and(|want| slices::equal_beyond_hash(want, e))
            });
        let same_meta = first.metadata.labels.clone().unwrap_or_default() == labels
            && first.metadata.annotations.clone().unwrap_or_default() == annotations;
        if same_endpoints && same_meta {
            continue;
        }
        let mut slice = new_slice(endpoints, &group.ports, group.address_type, first.metadata.name.clone());
        slice.metadata.resource_version = first.metadata.resource_version.clone();
        slice.endpoints = group.endpoints.values().cloned().collect();
        plan.update.push(slice);
    }
    for slices in existing_by_key.into_values() {
        plan.delete.extend(slices.into_iter().cloned());
    }

    // Reuse slices about to be deleted instead of creating new ones.
    let mut i = 0;
    while i < plan.delete.len() {
        let Some(pos) = plan.create.iter().position(|c| c.address_type == plan.delete[i].address_type) else {
            i += 1;
            continue;
        };
        let recycled = plan.delete.remove(i);
        let mut slice = plan.create.remove(pos);
        slice.metadata.generate_name = None;
        slice.metadata.name = recycled.metadata.name;
        slice.metadata.resource_version = recycled.metadata.resource_version;
        plan.update.push(slice);
    }
    if endpoints.metadata.deletion_timestamp.is_some() {
        plan.create.clear();
    }
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointPort as CorePort, EndpointSubset};

    fn endpoints(ready: &[&str], not_ready: &[&str]) -> Endpoints {
        let addresses = |ips: &[&str]| {
            Some(ips.iter().map(|ip| EndpointAddress { ip: ip.to_string(), ..Default::default() }).collect())
        };
        Endpoints {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("ns".into()),
                uid: Some("ep-uid".into()),
                labels: Some([("team".to_string(), "data".to_string())].into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: addresses(ready),
                not_ready_addresses: addresses(not_ready),
                ports: Some(vec![CorePort {
                    name: Some("pg".into()),
                    port: 5432,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
        }
    }

    #[test]
    fn endpoints_are_mirrored_once_and_kept_in_step() {
        let ep = endpoints(&["192.168.1.20", "not-an-ip"], &["192.168.1.21"]);
        let first = plan(&ep, &[]);
        assert_eq!(first.create.len(), 1);
        let slice = &first.create[0];
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some(CONTROLLER_NAME));
        assert_eq!(labels.get(LABEL_SERVICE_NAME).map(String::as_str), Some("db"));
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        assert_eq!(slice.metadata.owner_references.as_ref().unwrap()[0].kind, "Endpoints");
        let ready: BTreeMap<&str, Option<bool>> =
            slice.endpoints.iter().map(|e| (e.addresses[0].as_str(), e.conditions.as_ref().unwrap().ready)).collect();
        assert_eq!(ready, BTreeMap::from([("192.168.1.20", Some(true)), ("192.168.1.21", Some(false))]));

        let mut existing = slice.clone();
        existing.metadata.name = Some("db-abcde".into());
        existing.metadata.resource_version = Some("4".into());
        assert_eq!(plan(&ep, std::slice::from_ref(&existing)), Plan::default());

        let changed = plan(&endpoints(&["192.168.1.20", "192.168.1.21"], &[]), std::slice::from_ref(&existing));
        assert!(changed.create.is_empty() && changed.delete.is_empty());
        assert_eq!(changed.update[0].metadata.name.as_deref(), Some("db-abcde"));
        assert!(changed.update[0].endpoints.iter().all(|e| e.conditions.as_ref().unwrap().ready == Some(true)));

        let emptied = plan(&endpoints(&[], &[]), std::slice::from_ref(&existing));
        assert_eq!(emptied.delete.len(), 1);
    }

    #[test]
    fn skip_mirror_and_leader_election_endpoints_are_not_mirrored() {
        let mut ep = endpoints(&["10.0.0.1"], &[]);
        assert!(should_mirror(&ep));
        ep.metadata.labels.as_mut().unwrap().insert(LABEL_SKIP_MIRROR.into(), "true".into());
        assert!(!should_mirror(&ep));
        let mut ep = endpoints(&["10.0.0.1"], &[]);
        ep.metadata.annotations = Some([(LEADER_ANNOTATION.to_string(), "{}".to_string())].into());
        assert!(!should_mirror(&ep));
    }
}
