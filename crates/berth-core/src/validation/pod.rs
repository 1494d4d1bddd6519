//! PodSpec, container, volume and resource validation (`pkg/apis/core/validation`), and the
//! Pod update rule that keeps most of a Pod's spec immutable.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::json::{has, list_at, map_at, str_at};
use super::meta::{annotations, labels};
use super::names::{
    dns1123_label, dns1123_subdomain, env_var_name, go_value, not_found, port_name, port_num, qualified_name,
};
use super::{Errors, child, parse_quantity};
use crate::status::FieldError;

const CONTAINER_KINDS: [(&str, bool); 2] = [("initContainers", true), ("containers", false)];

/// `ValidatePodTemplateSpec` at `path` (`spec.template`).
pub(crate) fn template(tpl: &Value, path: &str, errs: &mut Errors) {
    let meta = tpl.get("metadata").unwrap_or(&Value::Null);
    labels(meta.get("labels"), &format!("{path}.metadata.labels"), errs);
    annotations(meta.get("annotations"), &format!("{path}.metadata.annotations"), errs);
    let spec = tpl.get("spec").unwrap_or(&Value::Null);
    pod_spec(spec, &child(path, "spec"), errs);
}

/// `ValidatePodSpec` at `path` (`spec` or `spec.template.spec`).
pub(crate) fn pod_spec(spec: &Value, path: &str, errs: &mut Errors) {
    let volumes = volumes(spec, path, errs);

    if list_at(spec, "/containers").is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (list, init) in CONTAINER_KINDS {
        for (i, c) in list_at(spec, &format!("/{list}")).iter().enumerate() {
            let cpath = format!("{path}.{list}[{i}]");
            container(c, &cpath, init, &volumes, errs);
            let name = str_at(c, "/name");
            if !name.is_empty() && !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(child(&cpath, "name"), &Value::from(name)));
            }
        }
    }
    host_port_conflicts(spec, path, errs);

    match str_at(spec, "/restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(child(path, "restartPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            child(path, "restartPolicy"),
            &Value::from(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    match str_at(spec, "/dnsPolicy") {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(child(path, "dnsPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            child(path, "dnsPolicy"),
            &Value::from(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    labels(spec.get("nodeSelector"), &child(path, "nodeSelector"), errs);
    for field in ["serviceAccountName"] {
        let v = str_at(spec, &format!("/{field}"));
        if !v.is_empty() {
            for msg in dns1123_subdomain(v) {
                errs.push(FieldError::invalid(child(path, field), &Value::from(v), &msg));
            }
        }
    }
    for field in ["hostname", "subdomain"] {
        let v = str_at(spec, &format!("/{field}"));
        if !v.is_empty() {
            for msg in dns1123_label(v) {
                errs.push(FieldError::invalid(child(path, field), &Value::from(v), &msg));
            }
        }
    }
    if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&ads)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            &Value::from(ads),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    tolerations(spec, path, errs);
}

fn container(c: &Value, path: &str, init: bool, volumes: &BTreeSet<String>, errs: &mut Errors) {
    let name = str_at(c, "/name");
    if name.is_empty() {
        errs.push(FieldError::required(child(path, "name"), ""));
    } else {
        for msg in dns1123_label(name) {
            errs.push(FieldError::invalid(child(path, "name"), &Value::from(name), &msg));
        }
    }
    if str_at(c, "/image").is_empty() {
        errs.push(FieldError::required(child(path, "image"), ""));
    }
    match str_at(c, "/terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(child(path, "terminationMessagePolicy"), "")),
        other => errs.push(FieldError::not_supported(
            child(path, "terminationMessagePolicy"),
            &Value::from(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    match str_at(c, "/imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(child(path, "imagePullPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            child(path, "imagePullPolicy"),
            &Value::from(other),
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    let restartable = match c.get("restartPolicy").and_then(Value::as_str) {
        None => false,
        Some("Always") if init => true,
        Some(other) if init => {
            errs.push(FieldError::not_supported(child(path, "restartPolicy"), &Value::from(other), &["Always"]));
            false
        }
        Some(_) => {
            errs.push(FieldError::forbidden(child(path, "restartPolicy"), "may not be set for non-init containers"));
            false
        }
    };
    ports(c, path, errs);
    env(c, path, errs);
    volume_mounts(c, path, volumes, errs);
    resources(c.get("resources"), &child(path, "resources"), errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.get(probe).filter(|p| p.is_object()) else { continue };
        let ppath = child(path, probe);
        if init && !restartable {
            errs.push(FieldError::forbidden(&ppath, "may not be set for init containers without restartPolicy=Always"));
            continue;
        }
        if init && probe == "readinessProbe" {
            errs.push(FieldError::forbidden(&ppath, "may not be set for init containers"));
            continue;
        }
        probe_fields(p, &ppath, probe != "readinessProbe", errs);
    }
    if let Some(lifecycle) = c.get("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get(hook).filter(|h| h.is_object()) {
                handler(h, &format!("{path}.lifecycle.{hook}"), true, errs);
            }
        }
    }
}

fn ports(c: &Value, path: &str, errs: &mut Errors) {
    let mut names = BTreeSet::new();
    for (i, p) in list_at(c, "/ports").iter().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        let name = str_at(p, "/name");
        if !name.is_empty() {
            for msg in port_name(name) {
                errs.push(FieldError::invalid(child(&ppath, "name"), &Value::from(name), &msg));
            }
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(child(&ppath, "name"), &Value::from(name)));
            }
        }
        match p.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errs.push(FieldError::required(child(&ppath, "containerPort"), "")),
            Some(n) => {
                for msg in port_num(n) {
                    errs.push(FieldError::invalid(child(&ppath, "containerPort"), &Value::from(n), &msg));
                }
            }
        }
        if let Some(n) = p.get("hostPort").and_then(Value::as_i64).filter(|n| *n != 0) {
            for msg in port_num(n) {
                errs.push(FieldError::invalid(child(&ppath, "hostPort"), &Value::from(n), &msg));
            }
        }
        protocol(p, &ppath, errs);
    }
}

/// A port's `protocol`: required (it is defaulted) and one of SCTP, TCP, UDP.
pub(crate) fn protocol(p: &Value, path: &str, errs: &mut Errors) {
    match str_at(p, "/protocol") {
        "TCP" | "UDP" | "SCTP" => {}
        "" => errs.push(FieldError::required(child(path, "protocol"), "")),
        other => {
            errs.push(FieldError::not_supported(child(path, "protocol"), &Value::from(other), &["SCTP", "TCP", "UDP"]))
        }
    }
}

fn env(c: &Value, path: &str, errs: &mut Errors) {
    for (i, e) in list_at(c, "/env").iter().enumerate() {
        let epath = format!("{path}.env[{i}]");
        let name = str_at(e, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&epath, "name"), ""));
        } else {
            for msg in env_var_name(name) {
                errs.push(FieldError::invalid(child(&epath, "name"), &Value::from(name), &msg));
            }
        }
        let Some(from) = e.get("valueFrom").filter(|v| v.is_object()) else { continue };
        let fpath = child(&epath, "valueFrom");
        let sources = ["fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef"];
        let set: Vec<&str> = sources.iter().copied().filter(|s| has(from, &format!("/{s}"))).collect();
        if set.len() > 1 {
            errs.push(FieldError::invalid(
                &fpath,
                &Value::from(""),
                "may not have more than one field specified at a time",
            ));
        }
        if !str_at(e, "/value").is_empty() && !set.is_empty() {
            errs.push(FieldError::invalid(&fpath, &Value::from(""), "may not be specified when `value` is not empty"));
        }
        for key_ref in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = from.get(key_ref).filter(|r| r.is_object()) {
                let rpath = child(&fpath, key_ref);
                let key = str_at(r, "/key");
                if key.is_empty() {
                    errs.push(FieldError::required(child(&rpath, "key"), ""));
                } else {
                    for msg in super::names::config_map_key(key) {
                        errs.push(FieldError::invalid(child(&rpath, "key"), &Value::from(key), &msg));
                    }
                }
                if str_at(r, "/name").is_empty() {
                    errs.push(FieldError::required(child(&rpath, "name"), ""));
                }
            }
        }
        if let Some(r) = from.get("fieldRef").filter(|r| r.is_object())
            && str_at(r, "/fieldPath").is_empty()
        {
            errs.push(FieldError::required(format!("{fpath}.fieldRef.fieldPath"), ""));
        }
    }
}

fn volume_mounts(c: &Value, path: &str, volumes: &BTreeSet<String>, errs: &mut Errors) {
    let mut mount_paths = BTreeSet::new();
    for (i, m) in list_at(c, "/volumeMounts").iter().enumerate() {
        let mpath = format!("{path}.volumeMounts[{i}]");
        let name = str_at(m, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&mpath, "name"), ""));
        } else if !volumes.contains(name) {
            errs.push(not_found(child(&mpath, "name"), &Value::from(name)));
        }
        let mount_path = str_at(m, "/mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&mpath, "mountPath"), ""));
        } else if !mount_paths.insert(mount_path.to_owned()) {
            errs.push(FieldError::invalid(child(&mpath, "mountPath"), &Value::from(mount_path), "must be unique"));
        }
        let sub_path = str_at(m, "/subPath");
        if sub_path.starts_with('/') {
            errs.push(FieldError::invalid(child(&mpath, "subPath"), &Value::from(sub_path), "must be a relative path"));
        } else if sub_path.split('/').any(|part| part == "..") {
            errs.push(FieldError::invalid(child(&mpath, "subPath"), &Value::from(sub_path), "must not contain '..'"));
        }
    }
}

/// Probe fields and handler; `single_success` for liveness and startup probes.
fn probe_fields(p: &Value, path: &str, single_success: bool, errs: &mut Errors) {
    handler(p, path, false, errs);
    for field in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        if let Some(n) = p.get(field).and_then(Value::as_i64).filter(|n| *n < 0) {
            errs.push(FieldError::invalid(child(path, field), &Value::from(n), "must be greater than or equal to 0"));
        }
    }
    if let Some(n) = p.get("terminationGracePeriodSeconds").and_then(Value::as_i64).filter(|n| *n <= 0) {
        errs.push(FieldError::invalid(
            child(path, "terminationGracePeriodSeconds"),
            &Value::from(n),
            "must be greater than 0",
        ));
    }
    if single_success && let Some(n) = p.get("successThreshold").and_then(Value::as_i64).filter(|n| *n != 1) {
        errs.push(FieldError::invalid(child(path, "successThreshold"), &Value::from(n), "must be 1"));
    }
}

/// `validateHandler`: exactly one action.
fn handler(h: &Value, path: &str, lifecycle: bool, errs: &mut Errors) {
    let kinds: &[&str] =
        if lifecycle { &["exec", "httpGet", "tcpSocket", "sleep"] } else { &["exec", "httpGet", "tcpSocket", "grpc"] };
    let mut count = 0;
    for kind in kinds {
        let Some(action) = h.get(*kind).filter(|a| a.is_object()) else { continue };
        let apath = child(path, kind);
        if count > 0 {
            errs.push(FieldError::forbidden(&apath, "may not specify more than 1 handler type"));
            continue;
        }
        count += 1;
        match *kind {
            "exec" if list_at(action, "/command").is_empty() => {
                errs.push(FieldError::required(child(&apath, "command"), ""));
            }
            "httpGet" => {
                if str_at(action, "/path").is_empty() {
                    errs.push(FieldError::required(child(&apath, "path"), ""));
                }
                port_num_or_name(action.get("port"), &child(&apath, "port"), errs);
                match str_at(action, "/scheme") {
                    "HTTP" | "HTTPS" => {}
                    other => errs.push(FieldError::not_supported(
                        child(&apath, "scheme"),
                        &Value::from(other),
                        &["HTTP", "HTTPS"],
                    )),
                }
            }
            "tcpSocket" => port_num_or_name(action.get("port"), &child(&apath, "port"), errs),
            "grpc" => {
                let n = action.get("port").and_then(Value::as_i64).unwrap_or(0);
                for msg in port_num(n) {
                    errs.push(FieldError::invalid(child(&apath, "port"), &Value::from(n), &msg));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// `ValidatePortNumOrName` for an int-or-string port.
pub(crate) fn port_num_or_name(port: Option<&Value>, path: &str, errs: &mut Errors) {
    match port {
        Some(Value::String(s)) => {
            for msg in port_name(s) {
                errs.push(FieldError::invalid(path, &Value::from(s.as_str()), &msg));
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            for msg in port_num(n) {
                errs.push(FieldError::invalid(path, &Value::from(n), &msg));
            }
        }
        _ => {
            for msg in port_num(0) {
                errs.push(FieldError::invalid(path, &Value::from(0), &msg));
            }
        }
    }
}

fn host_port_conflicts(spec: &Value, path: &str, errs: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, c) in list_at(spec, "/containers").iter().enumerate() {
        for (j, p) in list_at(c, "/ports").iter().enumerate() {
            let host_port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            let key = format!("{}/{host_port}/{}", str_at(p, "/hostIP"), str_at(p, "/protocol"));
            if !seen.insert(key) {
                errs.push(FieldError::duplicate(
                    format!("{path}.containers[{i}].ports[{j}].hostPort"),
                    &Value::from(format!("{host_port}/{}", str_at(p, "/protocol"))),
                ));
            }
        }
    }
}

fn tolerations(spec: &Value, path: &str, errs: &mut Errors) {
    for (i, t) in list_at(spec, "/tolerations").iter().enumerate() {
        let tpath = format!("{path}.tolerations[{i}]");
        let key = str_at(t, "/key");
        if !key.is_empty() {
            for msg in qualified_name(key) {
                errs.push(FieldError::invalid(child(&tpath, "key"), &Value::from(key), &msg));
            }
        }
        match str_at(t, "/operator") {
            "" | "Equal" => {}
            "Exists" => {
                if !str_at(t, "/value").is_empty() {
                    errs.push(FieldError::invalid(
                        child(&tpath, "operator"),
                        &Value::from(str_at(t, "/value")),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                child(&tpath, "operator"),
                &Value::from(other),
                &["Equal", "Exists"],
            )),
        }
        match str_at(t, "/effect") {
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(
                child(&tpath, "effect"),
                &Value::from(other),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            )),
        }
    }
}

// ---- volumes ----------------------------------------------------------------------------

// In the order upstream's `validateVolumeSource` checks them: the second one set is reported.
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// `ValidateVolumes`; returns the volume names for mount checks.
fn volumes(spec: &Value, path: &str, errs: &mut Errors) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in list_at(spec, "/volumes").iter().enumerate() {
        let vpath = format!("{path}.volumes[{i}]");
        volume_source(v, &vpath, errs);
        let name = str_at(v, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&vpath, "name"), ""));
        } else {
            for msg in dns1123_label(name) {
                errs.push(FieldError::invalid(child(&vpath, "name"), &Value::from(name), &msg));
            }
        }
        if !names.insert(name.to_owned()) {
            errs.push(FieldError::duplicate(child(&vpath, "name"), &Value::from(name)));
        }
    }
    names
}

fn volume_source(v: &Value, path: &str, errs: &mut Errors) {
    let mut count = 0;
    for source in VOLUME_SOURCES {
        if !has(v, &format!("/{source}")) {
            continue;
        }
        if count > 0 {
            errs.push(FieldError::forbidden(child(path, source), "may not specify more than 1 volume type"));
            continue;
        }
        count += 1;
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
    let required = [
        ("hostPath", "path"),
        ("secret", "secretName"),
        ("persistentVolumeClaim", "claimName"),
        ("nfs", "server"),
        ("nfs", "path"),
    ];
    for (source, field) in required {
        if let Some(s) = v.get(source).filter(|s| s.is_object())
            && str_at(s, &format!("/{field}")).is_empty()
        {
            errs.push(FieldError::required(format!("{path}.{source}.{field}"), ""));
        }
    }
    if let Some(host_path) = v.get("hostPath").filter(|s| s.is_object()) {
        let kind = str_at(host_path, "/type");
        const TYPES: [&str; 8] =
            ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
        if !TYPES.contains(&kind) {
            errs.push(FieldError::not_supported(format!("{path}.hostPath.type"), &Value::from(kind), &TYPES));
        }
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        let Some(s) = v.get(source).filter(|s| s.is_object()) else { continue };
        if let Some(mode) = s.get("defaultMode").and_then(Value::as_i64)
            && !(0..=0o777).contains(&mode)
        {
            errs.push(FieldError::invalid(
                format!("{path}.{source}.defaultMode"),
                &Value::from(mode),
                "must be a number between 0 and 0777 (octal), both inclusive",
            ));
        }
        for (i, item) in list_at(s, "/items").iter().enumerate() {
            let ipath = format!("{path}.{source}.items[{i}]");
            if source != "downwardAPI" && str_at(item, "/key").is_empty() {
                errs.push(FieldError::required(child(&ipath, "key"), ""));
            }
            let item_path = str_at(item, "/path");
            if item_path.is_empty() {
                errs.push(FieldError::required(child(&ipath, "path"), ""));
            } else if item_path.starts_with('/') {
                errs.push(FieldError::invalid(
                    child(&ipath, "path"),
                    &Value::from(item_path),
                    "must be a relative path",
                ));
            } else if item_path.split('/').any(|p| p == "..") {
                errs.push(FieldError::invalid(child(&ipath, "path"), &Value::from(item_path), "must not contain '..'"));
            }
        }
    }
    if let Some(size) = v.pointer("/emptyDir/sizeLimit") {
        quantity_value("", size, &format!("{path}.emptyDir.sizeLimit"), errs);
    }
}

// ---- resources ------------------------------------------------------------------------

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// `IsNativeResource`: unprefixed, or in the `kubernetes.io` domain.
fn is_native(name: &str) -> bool {
    match name.split_once('/') {
        None => true,
        Some((domain, _)) => domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"),
    }
}

fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.") && qualified_name(&format!("requests.{name}")).is_empty()
}

fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !is_hugepages(name)
}

const INTEGER_RESOURCES: [&str; 9] = [
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

fn is_integer_resource(name: &str) -> bool {
    INTEGER_RESOURCES.contains(&name) || name.starts_with("count/") || is_extended(name)
}

/// Checks one quantity: it parses, is not negative and, for integer resources, is whole.
/// Returns the parsed quantity for further comparisons.
pub(crate) fn quantity_value(resource: &str, value: &Value, path: &str, errs: &mut Errors) -> Option<super::Quantity> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            errs.push(FieldError::invalid(path, other, "must be a quantity"));
            return None;
        }
    };
    let q = match parse_quantity(&text) {
        Ok(q) => q,
        Err(e) => {
            errs.push(FieldError::invalid(path, &Value::from(text), &e.to_string()));
            return None;
        }
    };
    if q.is_negative() {
        errs.push(FieldError::invalid(path, &Value::from(q.canonical()), "must be greater than or equal to 0"));
    }
    if is_integer_resource(resource) && q.milli_value() % 1000 != 0 {
        errs.push(FieldError::invalid(path, &Value::from(q.canonical()), "must be an integer"));
    }
    Some(q)
}

fn container_resource_name(name: &str, path: &str, errs: &mut Errors) {
    let msgs = qualified_name(name);
    if !msgs.is_empty() {
        for msg in msgs {
            errs.push(FieldError::invalid(path, &Value::from(name), &msg));
        }
        return;
    }
    if !name.contains('/') {
        if !(matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(name)) {
            errs.push(FieldError::invalid(path, &Value::from(name), "must be a standard resource for containers"));
        }
    } else if !is_native(name) && !is_extended(name) {
        errs.push(FieldError::invalid(path, &Value::from(name), "doesn't have a resource type"));
    }
}

/// `ValidateResourceRequirements` for a container's `resources`.
pub(crate) fn resources(res: Option<&Value>, path: &str, errs: &mut Errors) {
    let Some(res) = res.filter(|r| r.is_object()) else { return };
    let empty = Map::new();
    let limits = map_at(res, "/limits").unwrap_or(&empty);
    let requests = map_at(res, "/requests").unwrap_or(&empty);
    let lim_path = child(path, "limits");
    let req_path = child(path, "requests");
    let mut parsed_limits = Vec::new();
    for (name, value) in limits {
        let p = format!("{lim_path}[{name}]");
        container_resource_name(name, &p, errs);
        if let Some(q) = quantity_value(name, value, &p, errs) {
            parsed_limits.push((name.as_str(), q));
        }
    }
    for (name, value) in requests {
        let p = format!("{req_path}[{name}]");
        container_resource_name(name, &p, errs);
        let Some(q) = quantity_value(name, value, &p, errs) else { continue };
        match parsed_limits.iter().find(|(n, _)| *n == name) {
            Some((_, limit)) => {
                let ord = q.cmp_value(limit);
                if ord != std::cmp::Ordering::Equal && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &Value::from(q.canonical()),
                        &format!("must be equal to {name} limit of {}", limit.canonical()),
                    ));
                } else if ord == std::cmp::Ordering::Greater {
                    errs.push(FieldError::invalid(
                        &req_path,
                        &Value::from(q.canonical()),
                        &format!("must be less than or equal to {name} limit of {}", limit.canonical()),
                    ));
                }
            }
            None if !overcommit_allowed(name) && !limits.contains_key(name) => {
                errs.push(FieldError::required(&lim_path, "Limit must be set for non overcommitable resources"));
            }
            None => {}
        }
    }
}

// ---- updates ----------------------------------------------------------------------------

const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate`'s spec rule: only images, activeDeadlineSeconds, added tolerations
/// and a few scheduling fields may change. Setting `nodeName` on an unscheduled Pod is let
/// through because Berth binds Pods by update rather than through a `binding` subresource.
pub(crate) fn pod_update(obj: &Value, old: &Value, errs: &mut Errors) {
    let (Some(new_spec), Some(old_spec)) = (obj.get("spec"), old.get("spec")) else { return };
    let mut munged = new_spec.clone();
    let Some(m) = munged.as_object_mut() else { return };
    // Start from the new spec and put back every field that may not change.
    for list in ["containers", "initContainers"] {
        if let (Some(Value::Array(new_list)), Some(old_list)) =
            (m.get_mut(list), old_spec.get(list).and_then(Value::as_array))
            && new_list.len() == old_list.len()
        {
            for (n, o) in new_list.iter_mut().zip(old_list) {
                if let (Some(n), Some(image)) = (n.as_object_mut(), o.get("image")) {
                    n.insert("image".to_owned(), image.clone());
                }
            }
        }
    }
    let mut restore = |key: &str, allowed: bool| {
        if allowed {
            match old_spec.get(key) {
                Some(v) => {
                    m.insert(key.to_owned(), v.clone());
                }
                None => {
                    m.remove(key);
                }
            }
        }
    };
    let old_ads = old_spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let new_ads = new_spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let ads_ok = match (old_ads, new_ads) {
        (_, None) => old_ads.is_none(),
        (None, Some(_)) => true,
        (Some(o), Some(n)) => n <= o,
    };
    restore("activeDeadlineSeconds", ads_ok);
    let old_tolerations = list_at(old_spec, "/tolerations");
    let new_tolerations = list_at(new_spec, "/tolerations");
    restore("tolerations", old_tolerations.iter().all(|t| new_tolerations.contains(t)));
    let old_grace = old_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    let new_grace = new_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    restore("terminationGracePeriodSeconds", old_grace.is_some_and(|g| g < 0) && new_grace == Some(1));
    restore("nodeName", str_at(old_spec, "/nodeName").is_empty());
    let old_gates = list_at(old_spec, "/schedulingGates");
    restore("schedulingGates", list_at(new_spec, "/schedulingGates").iter().all(|g| old_gates.contains(g)));

    if &munged != old_spec {
        let changed = changed_fields(old_spec, &munged);
        errs.push(FieldError::forbidden(
            "spec",
            &format!("pod updates may not change fields other than {POD_UPDATABLE}\n{}", changed.join("\n")),
        ));
    }
}

/// Top-level spec fields that differ, one `field: old -> new` line each.
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let keys: BTreeSet<&String> =
        old.as_object().into_iter().flatten().chain(new.as_object().into_iter().flatten()).map(|(k, _)| k).collect();
    keys.into_iter()
        .filter(|k| old.get(k.as_str()) != new.get(k.as_str()))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("<unset>".to_owned(), go_value);
            format!("  spec.{k}: {} -> {}", show(old.get(k.as_str())), show(new.get(k.as_str())))
        })
        .collect()
}

/// Fields that may not be set when creating a Pod.
pub(crate) fn pod_create(obj: &Value, errs: &mut Errors) {
    if !list_at(obj, "/spec/ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
    }
}
