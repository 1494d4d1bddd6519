//! Defaults the API server fills in on create and update, as upstream's
//! `pkg/apis/*/v1/defaults.go` and the `+default` markers of v1.32 do, plus the create-time
//! parts of upstream's registry strategies (`prepare_for_create`).
//!
//! Explicit `null`s are treated as absent and dropped, as decoding into Go structs does.

mod pod;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::registry::{GroupVersionKind, Registry};
use crate::validation::json::{list_at, str_at};
use crate::validation::parse_quantity;

/// Fills upstream defaults into `obj` (a full object of kind `gvk`) in place. Kinds Berth has
/// no rules for (custom resources) are left untouched.
pub fn apply(gvk: &GroupVersionKind, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        // Free-form JSON lives in these; only their metadata is cleaned.
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            strip_nulls_at(obj, "metadata");
            crd(obj);
        }
        ("apps", "ControllerRevision") => strip_nulls_at(obj, "metadata"),
        (group, kind) => {
            if !is_builtin(group, kind) {
                return;
            }
            strip_nulls(obj);
            builtin(group, kind, obj);
        }
    }
}

fn is_builtin(group: &str, kind: &str) -> bool {
    static BUILTINS: LazyLock<Registry> = LazyLock::new(Registry::with_builtins);
    BUILTINS.iter().any(|r| r.gvk.group == group && r.gvk.kind == kind)
}

fn builtin(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = child(obj, "spec") {
                pod::pod_only(spec);
                pod::pod_spec(spec);
            }
        }
        ("", "Service") => service(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Secret") => {
            merge_string_data(obj);
            default_str(obj, "type", "Opaque");
        }
        ("", "Endpoints") => {
            for subset in list_mut(obj, "subsets") {
                for port in list_mut(subset, "ports") {
                    default_str(port, "protocol", "TCP");
                }
            }
        }
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "PersistentVolume") => pv(obj),
        ("", "Node") => node(obj),
        ("", "LimitRange") => limit_range(obj),
        ("", "ResourceQuota") => {
            for ptr in ["/spec/hard", "/status/hard", "/status/used"] {
                if let Some(list) = obj.pointer_mut(ptr) {
                    resource_list(list);
                }
            }
        }
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = child(obj, "spec") {
                default_val(spec, "replicas", json!(1));
                template(spec, "template");
            }
        }
        ("apps", "StatefulSet") => stateful_set(obj),
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(obj),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(params) = obj.pointer_mut("/spec/parameters").filter(|p| p.is_object()) {
                default_val(params, "scope", json!("Cluster"));
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for port in list_mut(obj, "ports") {
                default_val(port, "name", json!(""));
                default_val(port, "protocol", json!("TCP"));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => role_binding(obj),
        _ => {}
    }
}

/// Create-time changes upstream's registry strategies make (`PrepareForCreate`, and the
/// Job selector generated in its `Validate`): run after [`apply`] and after `metadata.uid`
/// is assigned. Namespaces get the `kubernetes` finalizer here rather than in [`apply`]
/// because the namespace controller removes it during deletion.
pub fn prepare_for_create(gvk: &GroupVersionKind, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Namespace") => {
            if let Some(spec) = child(obj, "spec") {
                match spec.get_mut("finalizers").and_then(Value::as_array_mut) {
                    Some(finalizers) => {
                        if !finalizers.iter().any(|f| f.as_str() == Some("kubernetes")) {
                            finalizers.push(json!("kubernetes"));
                        }
                    }
                    None => set(spec, "finalizers", json!(["kubernetes"])),
                }
            }
            set(obj, "status", json!({"phase": "Active"}));
        }
        ("", "Pod") => {
            let qos = pod::qos_class(obj);
            set(obj, "status", json!({"phase": "Pending", "qosClass": qos}));
        }
        ("", "Service") => set(obj, "status", json!({"loadBalancer": {}})),
        ("", "PersistentVolumeClaim") => set(obj, "status", json!({"phase": "Pending"})),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "CronJob")
        | ("networking.k8s.io", "Ingress") => {
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
        }
        ("batch", "Job") => {
            if let Some(map) = obj.as_object_mut() {
                map.remove("status");
            }
            generate_job_selector(obj);
        }
        _ => {}
    }
}

/// Update-time changes of upstream's registry strategies (`PrepareForUpdate`), run before
/// [`apply`] with the stored object: a Namespace's finalizers and status only change through
/// their subresources, and a Service keeps its allocated cluster IPs and node ports when the
/// new body leaves them out (as `kubectl replace` bodies do).
pub fn prepare_for_update(gvk: &GroupVersionKind, obj: &mut Value, old: &Value) {
    if !obj.is_object() {
        return;
    }
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Namespace") => {
            if let Some(spec) = child(obj, "spec") {
                match old.pointer("/spec/finalizers") {
                    Some(f) => set(spec, "finalizers", f.clone()),
                    None => {
                        if let Some(map) = spec.as_object_mut() {
                            map.remove("finalizers");
                        }
                    }
                }
            }
            match old.get("status") {
                Some(status) => set(obj, "status", status.clone()),
                None => {
                    if let Some(map) = obj.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        ("", "Service") => keep_service_allocations(obj, old),
        _ => {}
    }
}

/// `patchAllocatedValues` of the service REST storage.
fn keep_service_allocations(obj: &mut Value, old: &Value) {
    let Some(old_spec) = old.get("spec") else { return };
    let Some(spec) = child(obj, "spec") else { return };
    let needs_cluster_ip = |s: &Value| str_at(s, "/type") != "ExternalName";
    if needs_cluster_ip(old_spec) && needs_cluster_ip(spec) && str_at(spec, "/clusterIP").is_empty() {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old_spec.get(key)
                && spec.get(key).is_none_or(|n| n.is_null() || n.as_array().is_some_and(Vec::is_empty))
            {
                set(spec, key, v.clone());
            }
        }
    }
    let node_ports = |s: &Value| matches!(str_at(s, "/type"), "NodePort" | "LoadBalancer");
    if node_ports(old_spec) && node_ports(spec) {
        let protocol = |p: &Value| match str_at(p, "/protocol") {
            "" => "TCP".to_owned(),
            other => other.to_owned(),
        };
        let old_ports = list_at(old_spec, "/ports");
        for port in list_mut(spec, "ports") {
            if port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| o.get("port") == port.get("port") && protocol(o) == protocol(port));
            if let Some(node_port) = same.and_then(|o| o.get("nodePort")).cloned() {
                set(port, "nodePort", node_port);
            }
        }
    }
}

/// `stringData` is write-only: the v1 conversion merges it into `data`, overriding.
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else { return };
    let Some(entries) = string_data.as_object() else { return };
    if entries.is_empty() {
        return;
    }
    if let Some(data) = child(obj, "data").and_then(Value::as_object_mut) {
        for (key, value) in entries {
            let text = value.as_str().unwrap_or_default();
            data.insert(key.clone(), json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

// ---- helpers -------------------------------------------------------------------------

/// Removes every `null` member, recursively.
pub(crate) fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn strip_nulls_at(obj: &mut Value, key: &str) {
    if let Some(v) = obj.get_mut(key) {
        strip_nulls(v);
    }
}

fn absent(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).is_none_or(Value::is_null)
}

fn set(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

/// Sets `key` when absent (a Go pointer field left nil).
fn default_val(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut()
        && absent(map, key)
    {
        map.insert(key.to_owned(), value);
    }
}

/// Sets `key` when absent or `""` (a Go string field left empty).
fn default_str(obj: &mut Value, key: &str, value: &str) {
    if let Some(map) = obj.as_object_mut()
        && (absent(map, key) || map.get(key).and_then(Value::as_str) == Some(""))
    {
        map.insert(key.to_owned(), json!(value));
    }
}

/// Sets `key` when absent or 0 (a Go integer field left zero).
fn default_nonzero(obj: &mut Value, key: &str, value: i64) {
    if let Some(map) = obj.as_object_mut()
        && (absent(map, key) || map.get(key).and_then(Value::as_i64) == Some(0))
    {
        map.insert(key.to_owned(), json!(value));
    }
}

/// The object at `key`, created empty when absent; `None` if it is not an object.
fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = obj.as_object_mut()?;
    if absent(map, key) {
        map.insert(key.to_owned(), json!({}));
    }
    map.get_mut(key).filter(|v| v.is_object())
}

/// The object at `key` if present.
fn existing<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.get_mut(key).filter(|v| v.is_object())
}

/// The array at `key`, or nothing to iterate.
fn list_mut<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

/// Writes a `ResourceList`'s quantities back in canonical form, rounded up to milli units
/// (`SetDefaults_ResourceList` plus Go's `Quantity` encoding). Unparseable values are left
/// for validation to report.
pub(crate) fn resource_list(list: &mut Value) {
    let Some(map) = list.as_object_mut() else { return };
    for value in map.values_mut() {
        canonical_quantity(value, true);
    }
}

/// Rewrites one quantity in canonical form (numbers become strings, as upstream encodes them).
pub(crate) fn canonical_quantity(value: &mut Value, round_to_milli: bool) {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if let Ok(q) = parse_quantity(&text) {
        let q = if round_to_milli { q.round_up_milli() } else { q };
        *value = json!(q.canonical());
    }
}

// ---- core ------------------------------------------------------------------------------

/// `SetDefaults_Service` plus the IP family fields the service REST storage fills once a
/// cluster IP is known.
fn service(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    default_str(spec, "sessionAffinity", "None");
    match str_at(spec, "/sessionAffinity") {
        "None" => {
            if let Some(map) = spec.as_object_mut() {
                map.remove("sessionAffinityConfig");
            }
        }
        "ClientIP" if spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").is_none_or(Value::is_null) => {
            set(spec, "sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 10800}}));
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for port in list_mut(spec, "ports") {
        default_str(port, "protocol", "TCP");
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if target_unset && let Some(p) = port.get("port").cloned() {
            set(port, "targetPort", p);
        }
    }
    let kind = str_at(spec, "/type").to_owned();
    let externally_accessible = kind == "LoadBalancer"
        || kind == "NodePort"
        || (kind == "ClusterIP" && !list_at(spec, "/externalIPs").is_empty());
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_val(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default_val(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    let cluster_ip = str_at(spec, "/clusterIP").to_owned();
    if kind != "ExternalName" && !cluster_ip.is_empty() {
        if list_at(spec, "/clusterIPs").is_empty() {
            set(spec, "clusterIPs", json!([cluster_ip]));
        }
        let headless_selectorless =
            cluster_ip == "None" && spec.get("selector").is_none_or(|s| s.as_object().is_none_or(Map::is_empty));
        let policy = if headless_selectorless { "RequireDualStack" } else { "SingleStack" };
        default_val(spec, "ipFamilyPolicy", json!(policy));
        if list_at(spec, "/ipFamilies").is_empty() {
            set(spec, "ipFamilies", json!(["IPv4"]));
        }
    }
    if kind == "LoadBalancer" {
        for ingress in
            obj.pointer_mut("/status/loadBalancer/ingress").and_then(Value::as_array_mut).into_iter().flatten()
        {
            if !str_at(ingress, "/ip").is_empty() {
                default_val(ingress, "ipMode", json!("VIP"));
            }
        }
    }
}

fn namespace(obj: &mut Value) {
    let name = str_at(obj, "/metadata/name").to_owned();
    if !name.is_empty()
        && let Some(meta) = child(obj, "metadata")
        && let Some(labels) = child(meta, "labels")
    {
        set(labels, "kubernetes.io/metadata.name", json!(name));
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Active");
    }
}

/// PersistentVolumeClaimSpec defaults, shared with claim templates.
fn pvc_spec(spec: &mut Value) {
    default_val(spec, "volumeMode", json!("Filesystem"));
    for key in ["limits", "requests"] {
        if let Some(list) = spec.pointer_mut(&format!("/resources/{key}")) {
            resource_list(list);
        }
    }
}

fn pvc(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        pvc_spec(spec);
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Pending");
        for key in ["capacity", "allocatedResources"] {
            if let Some(list) = status.get_mut(key) {
                resource_list(list);
            }
        }
    }
}

fn pv(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_val(spec, "volumeMode", json!("Filesystem"));
        if let Some(capacity) = spec.get_mut("capacity") {
            resource_list(capacity);
        }
        pod::volume_source_defaults(spec);
    }
    if let Some(status) = child(obj, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn node(obj: &mut Value) {
    let Some(status) = existing(obj, "status") else { return };
    if let Some(capacity) = status.get_mut("capacity") {
        resource_list(capacity);
    }
    if let Some(allocatable) = status.get_mut("allocatable") {
        resource_list(allocatable);
    }
    if status.get("allocatable").is_none()
        && let Some(capacity) = status.get("capacity").cloned()
    {
        set(status, "allocatable", capacity);
    }
}

fn limit_range(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else { return };
    for item in list_mut(spec, "limits") {
        for key in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
            if let Some(list) = item.get_mut(key) {
                resource_list(list);
            }
        }
        if str_at(item, "/type") != "Container" {
            continue;
        }
        let fill = |item: &mut Value, target: &str, source: &str| {
            let Some(from) = item.get(source).and_then(Value::as_object).cloned() else { return };
            if let Some(into) = child(item, target).and_then(Value::as_object_mut) {
                for (k, v) in from {
                    into.entry(k).or_insert(v);
                }
            }
        };
        fill(item, "default", "max");
        fill(item, "defaultRequest", "default");
        fill(item, "defaultRequest", "min");
        // Go omits the empty maps created above.
        for key in ["default", "defaultRequest"] {
            if item.get(key).and_then(Value::as_object).is_some_and(Map::is_empty)
                && let Some(map) = item.as_object_mut()
            {
                map.remove(key);
            }
        }
    }
}

// ---- apps / batch --------------------------------------------------------------------

/// PodTemplateSpec defaults: PodSpec defaults only (not the Pod-only ones).
fn template(spec: &mut Value, key: &str) {
    if let Some(tpl) = child(spec, key)
        && let Some(pod_spec) = child(tpl, "spec")
    {
        pod::pod_spec(pod_spec);
    }
}

fn deployment(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    default_val(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_at(strategy, "/type") == "RollingUpdate"
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            default_val(rolling, "maxUnavailable", json!("25%"));
            default_val(rolling, "maxSurge", json!("25%"));
        }
    }
    default_val(spec, "revisionHistoryLimit", json!(10));
    default_val(spec, "progressDeadlineSeconds", json!(600));
    template(spec, "template");
}

fn stateful_set(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child(spec, "updateStrategy") {
        if strategy.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
            set(strategy, "type", json!("RollingUpdate"));
            default_val(strategy, "rollingUpdate", json!({}));
        }
        if str_at(strategy, "/type") == "RollingUpdate"
            && let Some(rolling) = existing(strategy, "rollingUpdate")
        {
            default_val(rolling, "partition", json!(0));
        }
    }
    if let Some(retention) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(retention, "whenDeleted", "Retain");
        default_str(retention, "whenScaled", "Retain");
    }
    default_val(spec, "replicas", json!(1));
    default_val(spec, "revisionHistoryLimit", json!(10));
    template(spec, "template");
    for claim in list_mut(spec, "volumeClaimTemplates") {
        if let Some(claim_spec) = child(claim, "spec") {
            pvc_spec(claim_spec);
        }
        if let Some(status) = child(claim, "status") {
            default_str(status, "phase", "Pending");
        }
    }
}

fn daemon_set(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    if let Some(strategy) = child(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_at(strategy, "/type") == "RollingUpdate"
            && let Some(rolling) = child(strategy, "rollingUpdate")
        {
            default_val(rolling, "maxUnavailable", json!(1));
            default_val(rolling, "maxSurge", json!(0));
        }
    }
    default_val(spec, "revisionHistoryLimit", json!(10));
    template(spec, "template");
}

fn job(obj: &mut Value) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let Some(spec) = child(obj, "spec") else { return };
    let has = |spec: &Value, key: &str| spec.get(key).is_some_and(|v| !v.is_null());
    if !has(spec, "completions") && !has(spec, "parallelism") {
        set(spec, "completions", json!(1));
        set(spec, "parallelism", json!(1));
    }
    default_val(spec, "parallelism", json!(1));
    let backoff = if has(spec, "backoffLimitPerIndex") { i64::from(i32::MAX) } else { 6 };
    default_val(spec, "backoffLimit", json!(backoff));
    default_val(spec, "completionMode", json!("NonIndexed"));
    default_val(spec, "suspend", json!(false));
    let mut has_failure_policy = false;
    if let Some(policy) = existing(spec, "podFailurePolicy") {
        has_failure_policy = true;
        for rule in list_mut(policy, "rules") {
            for pattern in list_mut(rule, "onPodConditions") {
                default_str(pattern, "status", "True");
            }
        }
    }
    default_val(spec, "podReplacementPolicy", json!(if has_failure_policy { "Failed" } else { "TerminatingOrFailed" }));
    template(spec, "template");
    if let Some(labels) = template_labels.filter(|l| l.is_object())
        && let Some(meta) = child(obj, "metadata")
        && meta.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty)
    {
        set(meta, "labels", labels);
    }
}

fn cron_job(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_val(spec, "suspend", json!(false));
    default_val(spec, "successfulJobsHistoryLimit", json!(3));
    default_val(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_template) = child(spec, "jobTemplate")
        && let Some(job_spec) = child(job_template, "spec")
    {
        template(job_spec, "template");
    }
}

/// `generateSelector` of the Job strategy: template labels and a selector on the job's uid.
fn generate_job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let name = str_at(obj, "/metadata/name").to_owned();
    let uid = str_at(obj, "/metadata/uid").to_owned();
    let Some(spec) = child(obj, "spec") else { return };
    if let Some(tpl) = child(spec, "template")
        && let Some(meta) = child(tpl, "metadata")
        && let Some(labels) = child(meta, "labels")
    {
        default_val(labels, "job-name", json!(name));
        default_val(labels, "batch.kubernetes.io/job-name", json!(name));
        default_val(labels, "controller-uid", json!(uid));
        default_val(labels, "batch.kubernetes.io/controller-uid", json!(uid));
    }
    if let Some(selector) = child(spec, "selector")
        && let Some(match_labels) = child(selector, "matchLabels")
    {
        default_val(match_labels, "batch.kubernetes.io/controller-uid", json!(uid));
    }
}

// ---- networking / rbac / apiextensions -------------------------------------------------

fn network_policy(obj: &mut Value) {
    let Some(spec) = child(obj, "spec") else { return };
    for direction in ["ingress", "egress"] {
        for rule in list_mut(spec, direction) {
            for port in list_mut(rule, "ports") {
                default_val(port, "protocol", json!("TCP"));
            }
        }
    }
    if list_at(spec, "/policyTypes").is_empty() {
        let mut types = vec![json!("Ingress")];
        if !list_at(spec, "/egress").is_empty() {
            types.push(json!("Egress"));
        }
        set(spec, "policyTypes", Value::Array(types));
    }
}

fn role_binding(obj: &mut Value) {
    if let Some(role_ref) = child(obj, "roleRef") {
        default_str(role_ref, "apiGroup", "rbac.authorization.k8s.io");
    }
    for subject in list_mut(obj, "subjects") {
        let group = match str_at(subject, "/kind") {
            "ServiceAccount" => "",
            "User" | "Group" => "rbac.authorization.k8s.io",
            _ => continue,
        };
        default_str(subject, "apiGroup", group);
    }
}

fn crd(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else { return };
    if let Some(names) = existing(spec, "names") {
        let kind = str_at(names, "/kind").to_owned();
        default_str(names, "singular", &kind.to_lowercase());
        if !kind.is_empty() {
            default_str(names, "listKind", &format!("{kind}List"));
        }
    }
    default_val(spec, "conversion", json!({"strategy": "None"}));
    if str_at(spec, "/conversion/strategy") == "Webhook"
        && let Some(service) = spec.pointer_mut("/conversion/webhook/clientConfig/service").filter(|s| s.is_object())
    {
        default_val(service, "port", json!(443));
    }
}
