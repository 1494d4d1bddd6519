//! What the endpoints controllers read from Pods and Services, as upstream's
//! `k8s.io/endpointslice/util` and `podutil` define it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The Service's selector, or `None` when it selects nothing by selector (the controllers leave
/// such Services alone). An empty selector counts as none: upstream never sees one, since Go
/// drops empty maps when it serialises.
pub fn service_selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether the Service is of type ExternalName (no endpoints at all).
pub fn is_external_name(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

/// `spec.clusterIP`, "" when unset.
pub fn cluster_ip(service: &Service) -> &str {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("")
}

/// Whether the Service has a virtual IP (not headless, not unset).
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = cluster_ip(service);
    ip != "None" && !ip.is_empty()
}

/// `spec.publishNotReadyAddresses`.
pub fn publish_not_ready(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// The Service's ports.
pub fn service_ports(service: &Service) -> &[ServicePort] {
    service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[])
}

/// Whether every selector label is on the pod.
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Succeeded or Failed: the pod's containers will never run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's IPs in `status.podIPs` order, falling back to `status.podIP`.
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else { return Vec::new() };
    let listed: Vec<String> =
        status.pod_ips.iter().flatten().map(|p| p.ip.clone()).filter(|ip| !ip.is_empty()).collect();
    if !listed.is_empty() {
        return listed;
    }
    status.pod_ip.iter().filter(|ip| !ip.is_empty()).cloned().collect()
}

/// Whether a pod belongs in Endpoints or EndpointSlices at all (upstream
/// `ShouldPodBeInEndpoints`): not terminal, has an IP, and not terminating unless
/// `include_terminating`.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// Whether the endpoint gets the pod's hostname: the pod asked for `hostname` and
/// `subdomain` equal to this Service's name (upstream `ShouldSetHostname`).
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace
}

/// The pod's `spec.hostname`, when it should be published.
pub fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    should_set_hostname(pod, service).then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone())).flatten()
}

/// The pod's `spec.nodeName`, "" when unscheduled.
pub fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// A service port's protocol, TCP when unset.
pub fn port_protocol(port: &ServicePort) -> &str {
    port.protocol.as_deref().unwrap_or("TCP")
}

/// The container port a service port targets on this pod (upstream `FindPort`): a number is
/// used as is, a name is looked up among the pod's container ports of the same protocol, then
/// among its sidecar (restartable init) containers' ports. `None` when a name is not found.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match port.target_port.as_ref() {
        // The API server defaults targetPort to port; be as lenient for unset.
        None => return Some(port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = port_protocol(port);
    let spec = pod.spec.as_ref()?;
    let in_containers = spec.containers.iter().flat_map(|c| c.ports.iter().flatten());
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .flat_map(|c| c.ports.iter().flatten());
    in_containers
        .chain(sidecars)
        .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| p.container_port)
}

/// Whether an IP string is IPv6 (anything unparsable counts as IPv4, as upstream's sloppy parse).
pub fn is_ipv6(ip: &str) -> bool {
    matches!(ip.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
}

/// An IP in its canonical text form (upstream re-stringifies addresses it publishes).
pub fn canonical_ip(ip: &str) -> String {
    ip.parse::<IpAddr>().map(|a| a.to_string()).unwrap_or_else(|_| ip.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};

    fn pod_with_ports(ports: Vec<ContainerPort>, sidecar_ports: Vec<ContainerPort>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container { name: "app".into(), ports: Some(ports), ..Default::default() }],
                init_containers: Some(vec![Container {
                    name: "side".into(),
                    restart_policy: Some("Always".into()),
                    ports: Some(sidecar_ports),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn named(name: &str, port: i32, protocol: &str) -> ContainerPort {
        ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let pod = pod_with_ports(
            vec![named("http", 8080, "TCP"), named("dns", 53, "UDP")],
            vec![named("metrics", 9090, "TCP")],
        );
        let svc_port = |target: IntOrString, protocol: &str| ServicePort {
            port: 80,
            target_port: Some(target),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        assert_eq!(find_port(&pod, &svc_port(IntOrString::String("http".into()), "TCP")), Some(8080));
        assert_eq!(find_port(&pod, &svc_port(IntOrString::String("http".into()), "UDP")), None);
        assert_eq!(find_port(&pod, &svc_port(IntOrString::String("dns".into()), "UDP")), Some(53));
        assert_eq!(find_port(&pod, &svc_port(IntOrString::String("metrics".into()), "TCP")), Some(9090));
        assert_eq!(find_port(&pod, &svc_port(IntOrString::Int(7000), "TCP")), Some(7000));
        assert_eq!(find_port(&pod, &svc_port(IntOrString::String("nope".into()), "TCP")), None);
    }

    #[test]
    fn terminal_ipless_and_terminating_pods_are_excluded() {
        let mut pod = Pod {
            status: Some(PodStatus {
                pod_ip: Some("10.88.0.5".into()),
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(should_be_in_endpoints(&pod, false));
        assert_eq!(pod_ips(&pod), vec!["10.88.0.5".to_string()]);
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!should_be_in_endpoints(&pod, false));
        assert!(should_be_in_endpoints(&pod, true));
        pod.metadata.deletion_timestamp = None;
        pod.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_be_in_endpoints(&pod, true));
        pod.status.as_mut().unwrap().phase = Some("Pending".into());
        pod.status.as_mut().unwrap().pod_ip = None;
        assert!(!should_be_in_endpoints(&pod, true));
    }
}
