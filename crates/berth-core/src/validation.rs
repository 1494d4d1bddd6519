//! Per-kind validation, as upstream's `pkg/apis/*/validation` do where a user would notice,
//! and detection of fields unknown to a kind's schema (for `fieldValidation=Strict`).
//!
//! Call order on a write, as upstream's registry does: [`unknown_fields`] (the decode step:
//! its `Err` is a 400 `BadRequest` whatever `fieldValidation` says), then
//! [`crate::defaults::apply`], then on create [`crate::defaults::prepare_for_create`] once
//! `metadata.uid` is set, then [`validate`] (a non-empty result is a 422 `Invalid`).

mod apps;
mod batch;
mod core_v1;
mod decode;
pub(crate) mod json;
mod meta;
mod names;
mod other;
mod pod;
mod quantity;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::sync::LazyLock;

use serde_json::Value;

use crate::registry::{GroupVersionKind, Registry, Scope};
use crate::status::FieldError;

pub use batch::parse_cron;
pub use quantity::{Quantity, QuantityError, QuantityFormat, parse_quantity};

use meta::NameRule;

pub(crate) type Errors = Vec<FieldError>;

/// `parent.name`, or `name` at the top level.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

/// `ValidateNonnegativeField` for an optional integer member.
pub(crate) fn nonnegative(obj: &Value, key: &str, parent: &str, errs: &mut Errors) {
    if let Some(n) = obj.get(key).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(child(parent, key), &Value::from(n), "must be greater than or equal to 0"));
    }
}

fn builtin_scope(gvk: &GroupVersionKind) -> Option<Scope> {
    static BUILTINS: LazyLock<Registry> = LazyLock::new(Registry::with_builtins);
    BUILTINS.by_kind(gvk).map(|r| r.scope)
}

fn name_rule(gvk: &GroupVersionKind) -> NameRule {
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// Validates a whole object of kind `gvk`. `old` is the stored object on update.
pub fn validate(gvk: &GroupVersionKind, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let scope = builtin_scope(gvk);
    meta::object_meta(obj, scope.map(|s| s == Scope::Namespaced), name_rule(gvk), &mut errs);
    if let Some(old) = old {
        meta::object_meta_update(obj, old, &mut errs);
    }
    if scope.is_none() {
        return errs;
    }
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match (gvk.group.as_str(), gvk.kind.as_str()) {
        ("", "Pod") => {
            pod::pod_spec(spec, "spec", &mut errs);
            match old {
                None => pod::pod_create(obj, &mut errs),
                Some(old) => pod::pod_update(obj, old, &mut errs),
            }
        }
        ("", "Service") => core_v1::service(obj, old, &mut errs),
        ("", "ConfigMap") => core_v1::config_map(obj, old, &mut errs),
        ("", "Secret") => core_v1::secret(obj, old, &mut errs),
        ("", "Namespace") => core_v1::namespace(obj, &mut errs),
        ("", "Event") => core_v1::event(obj, &mut errs),
        ("", "PersistentVolumeClaim") => core_v1::pvc(obj, old, &mut errs),
        ("", "PersistentVolume") => core_v1::pv(obj, &mut errs),
        ("", "ResourceQuota") => core_v1::resource_quota(obj, &mut errs),
        ("", "LimitRange") => core_v1::limit_range(obj, &mut errs),
        ("", "Endpoints") => core_v1::endpoints(obj, &mut errs),
        ("apps", "Deployment") => apps::deployment(obj, old, &mut errs),
        ("apps", "ReplicaSet") => apps::replica_set(obj, old, &mut errs),
        ("apps", "StatefulSet") => apps::stateful_set(obj, old, &mut errs),
        ("apps", "DaemonSet") => apps::daemon_set(obj, old, &mut errs),
        ("apps", "ControllerRevision") => apps::controller_revision(obj, old, &mut errs),
        ("batch", "Job") => batch::job(obj, old, &mut errs),
        ("batch", "CronJob") => batch::cron_job(obj, old, &mut errs),
        ("networking.k8s.io", "Ingress") => other::ingress(obj, &mut errs),
        ("networking.k8s.io", "IngressClass") => other::ingress_class(obj, old, &mut errs),
        ("networking.k8s.io", "NetworkPolicy") => other::network_policy(obj, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => other::endpoint_slice(obj, old, &mut errs),
        ("coordination.k8s.io", "Lease") => other::lease(obj, &mut errs),
        ("rbac.authorization.k8s.io", "Role") => other::role(obj, true, &mut errs),
        ("rbac.authorization.k8s.io", "ClusterRole") => other::role(obj, false, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding") => other::role_binding(obj, old, true, &mut errs),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => other::role_binding(obj, old, false, &mut errs),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => other::crd(obj, old, &mut errs),
        _ => {}
    }
    errs
}

/// The body could not be decoded as the kind at all (a wrong type for a field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub message: String,
}

/// Paths (`spec.foo`, `spec.template.spec.containers[0].bar`) present in `obj` but not in
/// the schema of `gvk`. Unknown kinds (custom resources) have no unknown fields here.
///
/// `Err` when the body cannot be decoded as the kind at all: a wrong JSON type for a field
/// (`json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type
/// int32`), malformed base64 in Secret `data`, or a quantity that does not parse. Upstream
/// rejects those whatever `fieldValidation` is, so call this on every write.
pub fn unknown_fields(gvk: &GroupVersionKind, obj: &Value) -> Result<Vec<String>, DecodeError> {
    decode::unknown_fields(gvk, obj)
}
