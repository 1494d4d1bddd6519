//! PodSpec, container, probe and volume defaults (`SetDefaults_PodSpec`, `SetDefaults_Pod`,
//! `SetDefaults_Container`, `SetDefaults_Probe`, the volume source defaulters and the
//! `+default` markers of `k8s.io/api/core/v1`), and the Pod QoS class.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{
    canonical_quantity, child, default_nonzero, default_str, default_val, existing, list_mut, resource_list, set,
};
use crate::validation::json::{list_at, map_at, str_at};
use crate::validation::{Quantity, parse_quantity};

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Defaults that apply to a Pod's spec but not to pod templates (`SetDefaults_Pod`).
pub(super) fn pod_only(spec: &mut Value) {
    for list in ["containers", "initContainers"] {
        for c in list_mut(spec, list) {
            // Requests default to limits, for a Pod only.
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object).cloned() else { continue };
            if limits.is_empty() {
                continue;
            }
            if let Some(resources) = child(c, "resources")
                && let Some(requests) = child(resources, "requests").and_then(Value::as_object_mut)
            {
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
    default_val(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for list in ["containers", "initContainers"] {
            for c in list_mut(spec, list) {
                for port in list_mut(c, "ports") {
                    if let Some(container_port) = port.get("containerPort").cloned() {
                        let host_port_unset = port.get("hostPort").is_none_or(|h| h.is_null() || h.as_i64() == Some(0));
                        if host_port_unset {
                            set(port, "hostPort", container_port);
                        }
                    }
                }
            }
        }
    }
}

/// `SetDefaults_PodSpec` and everything nested in a PodSpec.
pub(super) fn pod_spec(spec: &mut Value) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_val(spec, "securityContext", json!({}));
    default_val(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    for volume in list_mut(spec, "volumes") {
        pod_volume(volume);
    }
    for list in CONTAINER_LISTS {
        for c in list_mut(spec, list) {
            container(c);
        }
    }
    if let Some(overhead) = spec.get_mut("overhead") {
        resource_list(overhead);
    }
}

fn container(c: &mut Value) {
    if c.get("imagePullPolicy").and_then(Value::as_str).is_none_or(str::is_empty) {
        let policy =
            if image_tag(str_at(c, "/image")).as_deref() == Some("latest") { "Always" } else { "IfNotPresent" };
        set(c, "imagePullPolicy", json!(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    for port in list_mut(c, "ports") {
        default_str(port, "protocol", "TCP");
    }
    for env in list_mut(c, "env") {
        if let Some(field_ref) = env.pointer_mut("/valueFrom/fieldRef").filter(|f| f.is_object()) {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
    if let Some(resources) = child(c, "resources") {
        for key in ["limits", "requests"] {
            if let Some(list) = resources.get_mut(key) {
                resource_list(list);
            }
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing(c, key) {
            default_nonzero(probe, "timeoutSeconds", 1);
            default_nonzero(probe, "periodSeconds", 10);
            default_nonzero(probe, "successThreshold", 1);
            default_nonzero(probe, "failureThreshold", 3);
            handler(probe);
        }
    }
    if let Some(lifecycle) = existing(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(h) = existing(lifecycle, key) {
                handler(h);
            }
        }
    }
}

/// Defaults inside a probe or lifecycle handler.
fn handler(h: &mut Value) {
    if let Some(http) = existing(h, "httpGet") {
        default_str(http, "path", "/");
        default_str(http, "scheme", "HTTP");
    }
    if let Some(grpc) = existing(h, "grpc") {
        default_val(grpc, "service", json!(""));
    }
}

fn pod_volume(volume: &mut Value) {
    let has_source = volume.as_object().is_some_and(|m| m.keys().any(|k| k != "name"));
    if !has_source {
        set(volume, "emptyDir", json!({}));
    }
    volume_source_defaults(volume);
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing(volume, key) {
            default_val(source, "defaultMode", json!(420));
        }
    }
    if let Some(downward) = existing(volume, "downwardAPI") {
        field_refs(downward);
    }
    if let Some(projected) = existing(volume, "projected") {
        for source in list_mut(projected, "sources") {
            if let Some(downward) = existing(source, "downwardAPI") {
                field_refs(downward);
            }
            if let Some(token) = existing(source, "serviceAccountToken") {
                default_val(token, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(size) = volume.pointer_mut("/emptyDir/sizeLimit") {
        canonical_quantity(size, false);
    }
    if let Some(claim_spec) = volume.pointer_mut("/ephemeral/volumeClaimTemplate/spec").filter(|s| s.is_object()) {
        super::pvc_spec(claim_spec);
    }
}

fn field_refs(downward: &mut Value) {
    for item in list_mut(downward, "items") {
        if let Some(field_ref) = existing(item, "fieldRef") {
            default_str(field_ref, "apiVersion", "v1");
        }
    }
}

/// Defaults of volume sources shared by pod volumes and PersistentVolumes.
pub(super) fn volume_source_defaults(source: &mut Value) {
    if let Some(host_path) = existing(source, "hostPath") {
        default_val(host_path, "type", json!(""));
    }
    if let Some(iscsi) = existing(source, "iscsi") {
        default_str(iscsi, "iscsiInterface", "default");
    }
    if let Some(rbd) = existing(source, "rbd") {
        default_str(rbd, "pool", "rbd");
        default_str(rbd, "user", "admin");
        default_str(rbd, "keyring", "/etc/ceph/keyring");
    }
    if let Some(azure) = existing(source, "azureDisk") {
        default_val(azure, "cachingMode", json!("ReadWrite"));
        default_val(azure, "fsType", json!("ext4"));
        default_val(azure, "readOnly", json!(false));
        default_val(azure, "kind", json!("Shared"));
    }
    if let Some(scale_io) = existing(source, "scaleIO") {
        default_str(scale_io, "storageMode", "ThinProvisioned");
        default_str(scale_io, "fsType", "xfs");
    }
}

/// The tag `parsers.ParseImageName` finds: `latest` when there is neither tag nor digest,
/// `None` for references that do not parse.
pub(crate) fn image_tag(image: &str) -> Option<String> {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':')?;
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if !valid_repository(name) {
        return None;
    }
    match tag {
        Some(t) => {
            let valid = !t.is_empty()
                && t.len() <= 128
                && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            valid.then(|| t.to_owned())
        }
        None if digest.is_some() => Some(String::new()),
        None => Some("latest".to_owned()),
    }
}

/// A docker repository name: an optional registry host then lower-case path components.
fn valid_repository(name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_domain = parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        if host.is_empty()
            || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
        {
            return false;
        }
        parts.remove(0);
    }
    parts.iter().all(|component| {
        let bytes = component.as_bytes();
        !bytes.is_empty()
            && bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && component.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    })
}

/// `qos.GetPodQOS`: BestEffort, Burstable or Guaranteed from CPU and memory requests/limits.
pub(super) fn qos_class(pod: &Value) -> &'static str {
    let mut requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let positive = |v: &Value| {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        parse_quantity(&text).ok().filter(|q| !q.is_negative() && !q.is_zero())
    };
    let add = |into: &mut BTreeMap<String, Quantity>, name: &str, q: Quantity| {
        let sum = match into.get(name) {
            Some(existing) => existing.add(&q).unwrap_or(q),
            None => q,
        };
        into.insert(name.to_owned(), sum);
    };
    let containers = list_at(pod, "/spec/containers").iter().chain(list_at(pod, "/spec/initContainers"));
    for c in containers {
        let compute = |m: Option<&Map<String, Value>>| -> Vec<(String, Quantity)> {
            m.into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() == "cpu" || k.as_str() == "memory")
                .filter_map(|(k, v)| positive(v).map(|q| (k.clone(), q)))
                .collect()
        };
        for (name, q) in compute(map_at(c, "/resources/requests")) {
            add(&mut requests, &name, q);
        }
        let found = compute(map_at(c, "/resources/limits"));
        if !(found.iter().any(|(k, _)| k == "cpu") && found.iter().any(|(k, _)| k == "memory")) {
            guaranteed = false;
        }
        for (name, q) in found {
            add(&mut limits, &name, q);
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        guaranteed = requests.iter().all(|(name, req)| limits.get(name).is_some_and(|lim| lim == req));
    }
    if guaranteed && requests.len() == limits.len() { "Guaranteed" } else { "Burstable" }
}
