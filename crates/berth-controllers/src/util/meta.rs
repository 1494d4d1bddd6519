//! Owner references and object keys.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The owner reference marked `controller: true`, if any (upstream `metav1.GetControllerOf`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to `owner` that blocks the owner's foreground deletion, as the
/// workload controllers set on what they create (upstream `metav1.NewControllerRef`).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `namespace/name` of an object, for logs and in-memory maps.
pub fn key(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

/// The object's name, "" when unset.
pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// The object's namespace, "" when unset.
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("")
}

/// The object's uid, "" when unset.
pub fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

/// Whether a Kubernetes API error has the given HTTP status code.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    is_status(err, 404)
}

/// 409 with reason AlreadyExists.
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// 409 Conflict (stale resourceVersion).
pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
}

/// Whether a create failed because its namespace is being deleted (upstream
/// `HasStatusCause(err, NamespaceTerminatingCause)`).
pub fn is_namespace_terminating(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => {
            let by_cause =
                s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"));
            by_cause || (s.code == 403 && s.message.contains("because it is being terminated"))
        }
        _ => false,
    }
}

/// The human-readable message of an API error (the Status message), as upstream's `err.Error()`.
pub fn error_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    #[test]
    fn controller_ref_points_at_owner_and_blocks_deletion() {
        let rs = ReplicaSet {
            metadata: ObjectMeta { name: Some("web-abc".into()), uid: Some("u1".into()), ..Default::default() },
            ..Default::default()
        };
        let r = controller_ref(&rs);
        assert_eq!((r.api_version.as_str(), r.kind.as_str(), r.name.as_str()), ("apps/v1", "ReplicaSet", "web-abc"));
        assert_eq!((r.controller, r.block_owner_deletion), (Some(true), Some(true)));
        let pod_meta = ObjectMeta { owner_references: Some(vec![r]), ..Default::default() };
        assert!(is_controlled_by(&pod_meta, "u1"));
        assert!(!is_controlled_by(&pod_meta, "u2"));
    }
}
