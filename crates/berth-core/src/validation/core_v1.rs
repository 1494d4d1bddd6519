//! Core `v1` kinds other than Pod (`pkg/apis/core/validation`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::json::{has, list_at, map_at, str_at};
use super::meta::{label_selector, labels};
use super::names::{
    config_map_key, dns1123_label, dns1123_subdomain, go_string_slice, invalid_shown, ip, port_num, qualified_name,
    too_long,
};
use super::pod::{port_num_or_name, protocol, quantity_value};
use super::{Errors, child};
use crate::status::FieldError;

const MAX_SECRET_SIZE: usize = 1024 * 1024;

// ---- Service -------------------------------------------------------------------------------

fn headless(spec: &Value) -> bool {
    list_at(spec, "/clusterIPs").first().and_then(Value::as_str) == Some("None") || str_at(spec, "/clusterIP") == "None"
}

/// `core.ServicePort` as `%#v` prints the (protocol, port) key of a duplicate.
fn go_service_port_key(proto: &str, port: i64) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{proto:?}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
    )
}

pub(crate) fn service(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let kind = str_at(spec, "/type");
    let is_headless = headless(spec);
    let ports = list_at(spec, "/ports");
    if ports.is_empty() && !is_headless && kind != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match kind {
        "LoadBalancer" | "NodePort" if is_headless => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &Value::from("None"),
            &format!("may not be set to 'None' for {kind} services"),
        )),
        "ExternalName" => {
            if !list_at(spec, "/clusterIPs").is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !list_at(spec, "/ipFamilies").is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if has(spec, "/ipFamilyPolicy") {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            let cname = str_at(spec, "/externalName").trim_end_matches('.');
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                for msg in dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid("spec.externalName", &Value::from(cname), &msg));
                }
            }
        }
        _ => {}
    }

    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = str_at(p, "/name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(child(&path, "name"), ""));
        } else if !name.is_empty() {
            for msg in dns1123_label(name) {
                errs.push(FieldError::invalid(child(&path, "name"), &Value::from(name), &msg));
            }
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(child(&path, "name"), &Value::from(name)));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        for msg in port_num(port) {
            errs.push(FieldError::invalid(child(&path, "port"), &Value::from(port), &msg));
        }
        protocol(p, &path, errs);
        port_num_or_name(p.get("targetPort"), &child(&path, "targetPort"), errs);
        if let Some(app) = p.get("appProtocol").and_then(Value::as_str) {
            for msg in qualified_name(app) {
                errs.push(FieldError::invalid(child(&path, "appProtocol"), &Value::from(app), &msg));
            }
        }
    }
    labels(spec.get("selector"), "spec.selector", errs);

    match str_at(spec, "/sessionAffinity") {
        "" => errs.push(FieldError::required("spec.sessionAffinity", "")),
        "None" => {
            if has(spec, "/sessionAffinityConfig") {
                errs.push(FieldError::forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        "ClientIP" => {
            if let Some(t) = spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_i64)
                && !(1..=86400).contains(&t)
            {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    &Value::from(t),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        other => {
            errs.push(FieldError::not_supported("spec.sessionAffinity", &Value::from(other), &["ClientIP", "None"]))
        }
    }

    cluster_ips(spec, errs);
    for (i, addr) in list_at(spec, "/externalIPs").iter().enumerate() {
        let a = addr.as_str().unwrap_or_default();
        for msg in ip(a) {
            errs.push(FieldError::invalid(format!("spec.externalIPs[{i}]"), &Value::from(a), &msg));
        }
    }
    match kind {
        "" => errs.push(FieldError::required("spec.type", "")),
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort" => {}
        other => errs.push(FieldError::not_supported(
            "spec.type",
            &Value::from(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    let mut seen_ports = BTreeSet::new();
    let mut seen_node_ports = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let node_port = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        let proto = str_at(p, "/protocol");
        if node_port != 0 {
            if kind == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
            if !seen_node_ports.insert((proto.to_owned(), node_port)) {
                errs.push(FieldError::duplicate(format!("spec.ports[{i}].nodePort"), &Value::from(node_port)));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !seen_ports.insert((proto.to_owned(), port)) {
            errs.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("spec.ports[{i}]"),
                message: format!("Duplicate value: {}", go_service_port_key(proto, port)),
            });
        }
    }
    for (field, allowed) in
        [("externalTrafficPolicy", ["Cluster", "Local"]), ("internalTrafficPolicy", ["Cluster", "Local"])]
    {
        if let Some(v) = spec.get(field).and_then(Value::as_str) {
            if !allowed.contains(&v) {
                errs.push(FieldError::not_supported(format!("spec.{field}"), &Value::from(v), &allowed));
            } else if field == "externalTrafficPolicy"
                && kind != "NodePort"
                && kind != "LoadBalancer"
                && list_at(spec, "/externalIPs").is_empty()
            {
                errs.push(FieldError::invalid(
                    "spec.externalTrafficPolicy",
                    &Value::from(v),
                    "may only be set for externally-accessible services",
                ));
            }
        }
    }

    if let Some(old) = old {
        service_update(spec, old.get("spec").unwrap_or(&Value::Null), errs);
    }
}

/// `ValidateServiceClusterIPsRelatedFields` (single-stack cluster).
fn cluster_ips(spec: &Value, errs: &mut Errors) {
    let ips = list_at(spec, "/clusterIPs");
    let cluster_ip = str_at(spec, "/clusterIP");
    if !cluster_ip.is_empty() && ips.first().and_then(Value::as_str) != Some(cluster_ip) {
        errs.push(invalid_shown(
            "spec.clusterIPs",
            &go_string_slice(spec.get("clusterIPs")),
            "first value must match `clusterIP`",
        ));
    }
    for (i, addr) in ips.iter().enumerate() {
        let a = addr.as_str().unwrap_or_default();
        if a == "None" {
            if i > 0 || ips.len() > 1 {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    &Value::from(a),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        for msg in ip(a) {
            errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), &Value::from(a), &msg));
        }
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").and_then(Value::as_str)
        && !["SingleStack", "PreferDualStack", "RequireDualStack"].contains(&policy)
    {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            &Value::from(policy),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    for (i, family) in list_at(spec, "/ipFamilies").iter().enumerate() {
        let f = family.as_str().unwrap_or_default();
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(format!("spec.ipFamilies[{i}]"), &Value::from(f), &["IPv4", "IPv6"]));
        }
    }
}

/// `validateUpgradeDowngradeClusterIPs`: allocated cluster IPs cannot change.
fn service_update(spec: &Value, old_spec: &Value, errs: &mut Errors) {
    if str_at(spec, "/type") == "ExternalName" || str_at(old_spec, "/type") == "ExternalName" {
        return;
    }
    if headless(spec) && headless(old_spec) {
        return;
    }
    let new_ips = list_at(spec, "/clusterIPs");
    let old_ips = list_at(old_spec, "/clusterIPs");
    let changed = old_ips.iter().zip(new_ips).any(|(o, n)| o != n);
    if changed {
        errs.push(invalid_shown(
            "spec.clusterIPs[0]",
            &go_string_slice(spec.get("clusterIPs")),
            "may not change once set",
        ));
    }
}

// ---- ConfigMap / Secret ------------------------------------------------------------------

fn immutable_data(obj: &Value, old: &Value, fields: &[&str], errs: &mut Errors) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
    }
    for field in fields {
        if obj.get(*field) != old.get(*field) {
            errs.push(FieldError::forbidden(*field, "field is immutable when `immutable` is set"));
        }
    }
}

pub(crate) fn config_map(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let data = map_at(obj, "/data");
    let binary = map_at(obj, "/binaryData");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        total += value.as_str().map_or(0, str::len);
        for msg in config_map_key(key) {
            errs.push(FieldError::invalid(format!("data[{key}]"), &Value::from(key.as_str()), &msg));
        }
        if binary.is_some_and(|b| b.contains_key(key)) {
            errs.push(FieldError::invalid(
                format!("data[{key}]"),
                &Value::from(key.as_str()),
                "duplicate of key present in binaryData",
            ));
        }
    }
    for (key, value) in binary.into_iter().flatten() {
        base64_value(value, &format!("binaryData[{key}]"), errs);
        total += value.as_str().map_or(0, |s| s.len() * 3 / 4);
        for msg in config_map_key(key) {
            errs.push(FieldError::invalid(format!("binaryData[{key}]"), &Value::from(key.as_str()), &msg));
        }
        if data.is_some_and(|d| d.contains_key(key)) {
            errs.push(FieldError::invalid(
                format!("binaryData[{key}]"),
                &Value::from(key.as_str()),
                "duplicate of key present in data",
            ));
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("", MAX_SECRET_SIZE));
    }
    if let Some(old) = old {
        immutable_data(obj, old, &["data", "binaryData"], errs);
    }
}

pub(crate) fn secret(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let data = map_at(obj, "/data");
    let mut total = 0;
    for (key, value) in data.into_iter().flatten() {
        base64_value(value, &format!("data[{key}]"), errs);
        total += value.as_str().map_or(0, |s| s.len() * 3 / 4);
        for msg in config_map_key(key) {
            errs.push(FieldError::invalid(format!("data[{key}]"), &Value::from(key.as_str()), &msg));
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    let has_key = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let non_empty = |k: &str| data.and_then(|d| d.get(k)).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    match str_at(obj, "/type") {
        "kubernetes.io/service-account-token"
            if str_at(obj, "/metadata/annotations/kubernetes.io~1service-account.name").is_empty() =>
        {
            errs.push(FieldError::required("metadata.annotations[kubernetes.io/service-account.name]", ""));
        }
        "kubernetes.io/dockercfg" if !has_key(".dockercfg") => errs.push(FieldError::required("data[.dockercfg]", "")),
        "kubernetes.io/dockerconfigjson" if !has_key(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]", ""))
        }
        "kubernetes.io/basic-auth" if !has_key("username") && !has_key("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""))
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has_key(key) {
                    errs.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let (new_type, old_type) = (str_at(obj, "/type"), str_at(old, "/type"));
        if new_type != old_type {
            errs.push(FieldError::invalid("type", &Value::from(new_type), "field is immutable"));
        }
        immutable_data(obj, old, &["data"], errs);
    }
}

/// A safety net for bodies that skipped decoding: `[]byte` values must be base64.
fn base64_value(value: &Value, path: &str, errs: &mut Errors) {
    if let Some(Err(e)) = value.as_str().map(super::decode::go_base64) {
        errs.push(invalid_shown(path, "\"<secret contents redacted>\"", &e.message));
    }
}

// ---- Namespace, Event ------------------------------------------------------------------------

pub(crate) fn namespace(obj: &Value, errs: &mut Errors) {
    for f in list_at(obj, "/spec/finalizers") {
        let name = f.as_str().unwrap_or_default();
        let msgs = qualified_name(name);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(FieldError::invalid("spec.finalizers", &Value::from(name), &msg));
            }
        } else if !name.contains('/') && name != "kubernetes" {
            errs.push(FieldError::invalid(
                "spec.finalizers",
                &Value::from(name),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

pub(crate) fn event(obj: &Value, errs: &mut Errors) {
    let namespace = str_at(obj, "/metadata/namespace");
    let involved = str_at(obj, "/involvedObject/namespace");
    if !has(obj, "/eventTime") {
        let mismatch =
            if involved.is_empty() { !namespace.is_empty() && namespace != "default" } else { namespace != involved };
        if mismatch {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                &Value::from(involved),
                "does not match event.namespace",
            ));
        }
    }
}

// ---- storage -------------------------------------------------------------------------------

const ACCESS_MODES: [&str; 4] = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// `ValidatePersistentVolumeClaimSpec` at `path`.
pub(crate) fn pvc_spec(spec: &Value, path: &str, errs: &mut Errors) {
    let modes = list_at(spec, "/accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(child(path, "accessModes"), "at least 1 access mode is required"));
    }
    if let Some(sel) = spec.get("selector").filter(|s| s.is_object()) {
        label_selector(sel, &child(path, "selector"), errs);
    }
    for mode in modes {
        let m = mode.as_str().unwrap_or_default();
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(child(path, "accessModes"), &Value::from(m), &ACCESS_MODES));
        }
    }
    let storage_path = format!("{path}.resources[storage]");
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => errs.push(FieldError::required(storage_path, "")),
        Some(v) => {
            if let Some(q) = quantity_value("storage", v, &storage_path, errs)
                && !q.is_negative()
                && q.is_zero()
            {
                errs.push(FieldError::invalid(&storage_path, &Value::from(q.canonical()), "must be greater than zero"));
            }
        }
    }
    if let Some(class) = spec.get("storageClassName").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        for msg in dns1123_subdomain(class) {
            errs.push(FieldError::invalid(child(path, "storageClassName"), &Value::from(class), &msg));
        }
    }
    if let Some(mode) = spec.get("volumeMode").and_then(Value::as_str)
        && mode != "Block"
        && mode != "Filesystem"
    {
        errs.push(FieldError::not_supported(child(path, "volumeMode"), &Value::from(mode), &["Block", "Filesystem"]));
    }
}

pub(crate) fn pvc(obj: &Value, old: Option<&Value>, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    pvc_spec(spec, "spec", errs);
    let Some(old) = old else { return };
    let old_spec = old.get("spec").unwrap_or(&Value::Null);
    let mut new_clone = spec.clone();
    let mut old_clone = old_spec.clone();
    // The volume name may be set once, when the claim is bound.
    if str_at(old_spec, "/volumeName").is_empty()
        && let (Some(o), Some(v)) = (old_clone.as_object_mut(), spec.get("volumeName"))
    {
        o.insert("volumeName".to_owned(), v.clone());
    }
    let bound = str_at(obj, "/status/phase") == "Bound";
    if bound
        && let (Some(requests), Some(old_storage)) = (
            new_clone.pointer_mut("/resources/requests").and_then(Value::as_object_mut),
            old_spec.pointer("/resources/requests/storage"),
        )
    {
        requests.insert("storage".to_owned(), old_storage.clone());
    }
    if new_clone != old_clone {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests for bound claims",
        ));
    }
    let size = |v: &Value| {
        v.pointer("/resources/requests/storage")
            .and_then(|q| q.as_str().map(str::to_owned).or_else(|| q.as_i64().map(|n| n.to_string())))
            .and_then(|s| super::parse_quantity(&s).ok())
    };
    if let (Some(n), Some(o)) = (size(spec), size(old_spec))
        && n.cmp_value(&o) == std::cmp::Ordering::Less
    {
        errs.push(FieldError::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than previous value",
        ));
    }
}

const PV_SOURCES: &[&str] = &[
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "hostPath",
    "glusterfs",
    "nfs",
    "rbd",
    "iscsi",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

pub(crate) fn pv(obj: &Value, errs: &mut Errors) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let modes = list_at(spec, "/accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required("spec.accessModes", ""));
    }
    for mode in modes {
        let m = mode.as_str().unwrap_or_default();
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported("spec.accessModes", &Value::from(m), &ACCESS_MODES));
        }
    }
    let capacity = map_at(spec, "/capacity");
    if capacity.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required("spec.capacity", ""));
    }
    if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        errs.push(FieldError::not_supported(
            "spec.capacity",
            spec.get("capacity").unwrap_or(&Value::Null),
            &["storage"],
        ));
    }
    for (name, value) in capacity.into_iter().flatten() {
        let path = format!("spec.capacity[{name}]");
        if let Some(q) = quantity_value(name, value, &path, errs)
            && !q.is_negative()
            && q.is_zero()
        {
            errs.push(FieldError::invalid(&path, &Value::from(q.canonical()), "must be greater than zero"));
        }
    }
    if let Some(policy) = spec.get("persistentVolumeReclaimPolicy").and_then(Value::as_str).filter(|p| !p.is_empty())
        && !["Delete", "Recycle", "Retain"].contains(&policy)
    {
        errs.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            &Value::from(policy),
            &["Delete", "Recycle", "Retain"],
        ));
    }
    let sources: Vec<&&str> = PV_SOURCES.iter().filter(|s| has(spec, &format!("/{s}"))).collect();
    match sources.len() {
        0 => errs.push(FieldError::required("spec", "must specify a volume type")),
        1 => {}
        _ => {
            errs.push(FieldError::forbidden(format!("spec.{}", sources[1]), "may not specify more than 1 volume type"))
        }
    }
    if let Some(host_path) = spec.get("hostPath").filter(|h| h.is_object()) {
        let p = str_at(host_path, "/path");
        if p.is_empty() {
            errs.push(FieldError::required("spec.hostPath.path", ""));
        } else if p.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid("spec.hostPath.path", &Value::from(p), "must not contain '..'"));
        }
    }
    if let Some(local) = spec.get("local").filter(|l| l.is_object())
        && str_at(local, "/path").is_empty()
    {
        errs.push(FieldError::required("spec.local.path", ""));
    }
}

// ---- quotas and limits ---------------------------------------------------------------------

pub(crate) fn resource_quota(obj: &Value, errs: &mut Errors) {
    for (section, ptr) in
        [("spec.hard", "/spec/hard"), ("status.hard", "/status/hard"), ("status.used", "/status/used")]
    {
        for (name, value) in map_at(obj, ptr).into_iter().flatten() {
            let path = format!("{section}[{name}]");
            for msg in qualified_name(name) {
                errs.push(FieldError::invalid(&path, &Value::from(name.as_str()), &msg));
            }
            quantity_value(name, value, &path, errs);
        }
    }
    let scopes =
        ["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"];
    for scope in list_at(obj, "/spec/scopes") {
        let s = scope.as_str().unwrap_or_default();
        if !scopes.contains(&s) {
            errs.push(FieldError::invalid("spec.scopes", &Value::from(s), "unsupported scope"));
        }
    }
}

pub(crate) fn limit_range(obj: &Value, errs: &mut Errors) {
    for (i, item) in list_at(obj, "/spec/limits").iter().enumerate() {
        let path = format!("spec.limits[{i}]");
        let kind = str_at(item, "/type");
        if !["Container", "Pod", "PersistentVolumeClaim"].contains(&kind) {
            errs.push(FieldError::not_supported(
                child(&path, "type"),
                &Value::from(kind),
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        let mut parsed = std::collections::BTreeMap::new();
        for section in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
            for (name, value) in map_at(item, &format!("/{section}")).into_iter().flatten() {
                let p = format!("{path}.{section}[{name}]");
                if let Some(q) = quantity_value(name, value, &p, errs) {
                    parsed.insert((section, name.as_str()), q);
                }
            }
        }
        for ((section, name), q) in &parsed {
            if *section != "min" {
                continue;
            }
            if let Some(max) = parsed.get(&("max", *name))
                && q.cmp_value(max) == std::cmp::Ordering::Greater
            {
                errs.push(FieldError::invalid(
                    format!("{path}.min[{name}]"),
                    &Value::from(q.canonical()),
                    &format!("min value {} is greater than max value {}", q.canonical(), max.canonical()),
                ));
            }
        }
    }
}

// ---- Endpoints -----------------------------------------------------------------------------

pub(crate) fn endpoints(obj: &Value, errs: &mut Errors) {
    for (i, subset) in list_at(obj, "/subsets").iter().enumerate() {
        let path = format!("subsets[{i}]");
        for list in ["addresses", "notReadyAddresses"] {
            for (j, addr) in list_at(subset, &format!("/{list}")).iter().enumerate() {
                let a = str_at(addr, "/ip");
                for msg in ip(a) {
                    errs.push(FieldError::invalid(format!("{path}.{list}[{j}].ip"), &Value::from(a), &msg));
                }
            }
        }
        let ports = list_at(subset, "/ports");
        for (j, p) in ports.iter().enumerate() {
            let ppath = format!("{path}.ports[{j}]");
            let name = str_at(p, "/name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&ppath, "name"), ""));
            } else if !name.is_empty() {
                for msg in dns1123_label(name) {
                    errs.push(FieldError::invalid(child(&ppath, "name"), &Value::from(name), &msg));
                }
            }
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            for msg in port_num(port) {
                errs.push(FieldError::invalid(child(&ppath, "port"), &Value::from(port), &msg));
            }
            protocol(p, &ppath, errs);
        }
    }
}
