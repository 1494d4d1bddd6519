//! The cluster's names, computed from Services and EndpointSlices alone (no IO), following the
//! Kubernetes DNS specification: `<svc>.<ns>.svc.<domain>` (ClusterIP, or the ready endpoints
//! of a headless Service), `<hostname>.<svc>.<ns>.svc.<domain>` for endpoints with a hostname
//! (StatefulSet pods), SRV `_<port>._<proto>.<svc>.<ns>.svc.<domain>` for named ports, and a
//! CNAME for ExternalName Services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// What one name holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A records.
    pub a: BTreeSet<Ipv4Addr>,
    /// A CNAME target (ExternalName).
    pub cname: Option<String>,
    /// SRV records: (port, target).
    pub srv: BTreeSet<(u16, String)>,
}

/// Every cluster name, lower case, without the trailing dot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Names with records.
    pub names: HashMap<String, Entry>,
    /// Names that exist because something lies below them (`ns.svc.cluster.local`).
    pub parents: BTreeSet<String>,
}

/// The answer to a query about a name.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name is in the cluster domain and exists (its entry may lack the asked type).
    Found(Option<&'a Entry>),
    /// The name is in the cluster domain and does not exist.
    NxDomain,
    /// Not a cluster name: ask upstream.
    NotOurs,
}

impl Zone {
    /// Looks `name` up (any case, with or without the trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name != self.domain && !name.ends_with(&format!(".{}", self.domain)) {
            return Lookup::NotOurs;
        }
        if let Some(entry) = self.names.get(&name) {
            return Lookup::Found(Some(entry));
        }
        if self.parents.contains(&name) || name == self.domain {
            return Lookup::Found(None);
        }
        Lookup::NxDomain
    }

    fn add(&mut self, name: String) -> &mut Entry {
        let mut parent = name.as_str();
        while let Some((_, rest)) = parent.split_once('.') {
            if rest.len() < self.domain.len() {
                break;
            }
            self.parents.insert(rest.to_owned());
            parent = rest;
        }
        self.names.entry(name).or_default()
    }
}

fn ready_endpoints<'a>(slices: &[&'a EndpointSlice]) -> Vec<(Ipv4Addr, Option<&'a str>)> {
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        for endpoint in &slice.endpoints {
            // Upstream serves endpoints that are ready (publishNotReadyAddresses makes them so).
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse() {
                    out.push((ip, endpoint.hostname.as_deref().filter(|h| !h.is_empty())));
                }
            }
        }
    }
    out
}

/// Builds the zone of `domain` from the cluster's Services and EndpointSlices.
pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Zone {
    let mut zone = Zone { domain: domain.to_ascii_lowercase(), ..Zone::default() };
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) {
            by_service.entry((ns, svc.clone())).or_default().push(slice);
        }
    }
    for service in services {
        let (Some(ns), Some(name), Some(spec)) =
            (service.metadata.namespace.as_deref(), service.metadata.name.as_deref(), service.spec.as_ref())
        else {
            continue;
        };
        let fqdn = format!("{name}.{ns}.svc.{}", zone.domain).to_ascii_lowercase();
        zone.parents.insert(format!("{ns}.svc.{}", zone.domain));
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                zone.add(fqdn).cname = Some(target.trim_end_matches('.').to_ascii_lowercase());
            }
            continue;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let key = (ns.to_owned(), name.to_owned());
        let endpoints = by_service.get(&key).map(|s| ready_endpoints(s)).unwrap_or_default();
        let entry = zone.add(fqdn.clone());
        if headless {
            entry.a.extend(endpoints.iter().map(|(ip, _)| *ip));
        } else if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            entry.a.insert(ip);
        }
        if headless {
            for (ip, hostname) in &endpoints {
                if let Some(hostname) = hostname {
                    zone.add(format!("{}.{fqdn}", hostname.to_ascii_lowercase())).a.insert(*ip);
                }
            }
        }
        for port in spec.ports.iter().flatten() {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else { continue };
            let proto = port.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let srv_name = format!("_{}._{proto}.{fqdn}", port_name.to_ascii_lowercase());
            let Ok(number) = u16::try_from(port.port) else { continue };
            if headless {
                // One SRV per endpoint, at the endpoint's own name, on the Service port (the
                // slice's port number would need the per-slice port table; the service port is
                // what upstream's headless SRV carries when target ports match).
                let targets: Vec<String> = endpoints
                    .iter()
                    .map(|(ip, hostname)| match hostname {
                        Some(h) => format!("{}.{fqdn}", h.to_ascii_lowercase()),
                        None => format!("{}.{fqdn}", ip.to_string().replace('.', "-")),
                    })
                    .collect();
                for (target, (ip, _)) in targets.iter().zip(&endpoints) {
                    zone.add(target.clone()).a.insert(*ip);
                }
                let entry = zone.add(srv_name);
                entry.srv.extend(targets.into_iter().map(|t| (number, t)));
            } else {
                zone.add(srv_name).srv.insert((number, fqdn.clone()));
            }
        }
    }
    zone
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn services_headless_hostnames_srv_and_external_names() {
        let services = vec![
            svc(json!({"metadata": {"name": "redis", "namespace": "app"},
                "spec": {"clusterIP": "10.96.0.40", "ports": [{"name": "redis", "port": 6379}]}})),
            svc(json!({"metadata": {"name": "web", "namespace": "app"},
                "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "app"},
                "spec": {"type": "ExternalName", "externalName": "example.org."}})),
        ];
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "app", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.88.0.5"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["10.88.0.6"], "hostname": "web-1", "conditions": {"ready": false}},
                {"addresses": ["10.88.0.7"], "conditions": {}}
            ]
        }))
        .unwrap();
        let zone = build("cluster.local", &services, &[Arc::new(slice)]);
        let a = |name: &str| match zone.lookup(name) {
            Lookup::Found(Some(e)) => e.a.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(a("Redis.app.svc.cluster.local."), vec!["10.96.0.40"]);
        assert_eq!(a("web.app.svc.cluster.local"), vec!["10.88.0.5", "10.88.0.7"]);
        assert_eq!(a("web-0.web.app.svc.cluster.local"), vec!["10.88.0.5"]);
        assert_eq!(zone.lookup("web-1.web.app.svc.cluster.local"), Lookup::NxDomain);
        assert_eq!(zone.lookup("nope.app.svc.cluster.local"), Lookup::NxDomain);
        assert_eq!(zone.lookup("app.svc.cluster.local"), Lookup::Found(None));
        assert_eq!(zone.lookup("example.org"), Lookup::NotOurs);
        let Lookup::Found(Some(srv)) = zone.lookup("_redis._tcp.redis.app.svc.cluster.local") else { panic!() };
        assert!(srv.srv.contains(&(6379, "redis.app.svc.cluster.local".to_owned())));
        let Lookup::Found(Some(ext)) = zone.lookup("ext.app.svc.cluster.local") else { panic!() };
        assert_eq!(ext.cname.as_deref(), Some("example.org"));
    }
}
