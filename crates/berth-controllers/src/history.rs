//! ControllerRevisions: the template history of StatefulSets and DaemonSets (upstream
//! `pkg/controller/history`). A revision stores the strategic merge patch that puts its pod
//! template back (`{"spec":{"template":{..., "$patch":"replace"}}}`), which is exactly what
//! `kubectl rollout undo` applies, and its `revision` number orders the history.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::Resource;
use kube::runtime::reflector::Store;
use serde_json::Value;

use crate::deployment::util::safe_encode;
use crate::util::meta;
use crate::util::semantic;

/// Label on revisions (the hash) and on pods (StatefulSet: the revision name; DaemonSet: the hash).
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";

/// The patch a revision stores for `template` (upstream `getPatch` of both controllers).
pub fn template_patch(template: Option<&PodTemplateSpec>) -> Value {
    let mut template = template.map(semantic::normalized).unwrap_or_else(|| Value::Object(Default::default()));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".to_string(), Value::String("replace".to_string()));
    }
    serde_json::json!({ "spec": { "template": template } })
}

/// The data of a revision as JSON ("" data reads as null).
pub fn data(rev: &ControllerRevision) -> &Value {
    rev.data.as_ref().map(|d| &d.0).unwrap_or(&Value::Null)
}

/// FNV-1 (32 bit) over the revision's serialised data, then the collision count in decimal, as
/// upstream `HashControllerRevision` does, encoded with the safe alphabet.
pub fn hash_data(data: &Value, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = hash.wrapping_mul(0x0100_0193);
            hash ^= u32::from(*b);
        }
    };
    feed(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(count.to_string().as_bytes());
    }
    safe_encode(&hash.to_string())
}

/// `<parent>-<hash>`, the parent's name cut so the whole stays a valid name (upstream
/// `ControllerRevisionName`).
pub fn revision_name(parent: &str, hash: &str) -> String {
    let prefix: String = parent.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// A new revision of `parent` with `data`, labelled with the template's labels and the hash.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    parent: &K,
    template_labels: Option<&BTreeMap<String, String>>,
    data: Value,
    revision: i64,
    hash: &str,
) -> ControllerRevision {
    let mut labels = template_labels.cloned().unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.to_string(), hash.to_string());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(parent.meta().name.as_deref().unwrap_or(""), hash)),
            namespace: parent.meta().namespace.clone(),
            labels: Some(labels),
            annotations: parent.meta().annotations.clone().filter(|a| !a.is_empty()),
            owner_references: Some(vec![meta::controller_ref(parent)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// The revisions controlled by the object with `owner_uid` in `namespace`, oldest first.
pub fn owned_revisions(store: &Store<ControllerRevision>, namespace: &str, owner_uid: &str) -> Vec<ControllerRevision> {
    let mut revs: Vec<ControllerRevision> = store
        .state_filter(|r| meta::namespace(&r.metadata) == namespace && meta::is_controlled_by(&r.metadata, owner_uid))
        .into_iter()
        .map(|r| (*r).clone())
        .collect();
    sort(&mut revs);
    revs
}

/// Sorts by revision number, then by creation time and name (upstream `SortControllerRevisions`).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let at = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                at(a).cmp(&at(b))
            })
            .then_with(|| meta::name(&a.metadata).cmp(meta::name(&b.metadata)))
    });
}

/// The highest revision number, 0 for none.
pub fn max_revision(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// Whether two revisions hold the same template (upstream `EqualRevision`).
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    semantic::equal(data(a), data(b))
}

/// Indices of the revisions whose data equals `data`, in history order.
pub fn find_equal(revs: &[ControllerRevision], data_value: &Value) -> Vec<usize> {
    revs.iter().enumerate().filter(|(_, r)| semantic::equal(data(r), data_value)).map(|(i, _)| i).collect()
}

/// The revisions to delete so that at most `limit` revisions not in `live` remain, oldest first
/// (upstream `truncateHistory` of both controllers).
pub fn to_truncate<'a>(
    revs: &'a [ControllerRevision],
    live: &std::collections::HashSet<String>,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let history: Vec<&ControllerRevision> = revs.iter().filter(|r| !live.contains(meta::name(&r.metadata))).collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if history.len() <= limit {
        return Vec::new();
    }
    history[..history.len() - limit].to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;

    fn rev(name: &str, revision: i64, image: &str) -> ControllerRevision {
        let template: PodTemplateSpec =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c", "image": image}]}}))
                .unwrap();
        ControllerRevision {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(RawExtension(template_patch(Some(&template)))),
            revision,
        }
    }

    #[test]
    fn patch_replaces_the_template() {
        let r = rev("a", 1, "nginx");
        assert_eq!(data(&r).pointer("/spec/template/$patch"), Some(&Value::from("replace")));
        assert_eq!(data(&r).pointer("/spec/template/spec/containers/0/image"), Some(&Value::from("nginx")));
    }

    #[test]
    fn hash_depends_on_data_and_collision_count() {
        let a = data(&rev("a", 1, "nginx")).clone();
        let b = data(&rev("b", 1, "redis")).clone();
        assert_eq!(hash_data(&a, None), hash_data(&a, None));
        assert_ne!(hash_data(&a, None), hash_data(&b, None));
        assert_ne!(hash_data(&a, None), hash_data(&a, Some(1)));
        assert_eq!(revision_name("web", "abc"), "web-abc");
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
    }

    #[test]
    fn new_revision_is_owned_and_labelled() {
        let set = StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let r = new_revision(&set, Some(&labels), Value::Null, 3, "h1");
        assert_eq!(r.metadata.name.as_deref(), Some("web-h1"));
        assert_eq!(r.metadata.labels.as_ref().unwrap()[CONTROLLER_REVISION_HASH], "h1");
        assert!(meta::is_controlled_by(&r.metadata, "u"));
        assert_eq!(r.revision, 3);
    }

    #[test]
    fn equal_revisions_and_truncation() {
        let revs = vec![rev("a", 1, "nginx"), rev("b", 2, "redis"), rev("c", 3, "nginx"), rev("d", 4, "busybox")];
        assert_eq!(find_equal(&revs, data(&revs[0])), [0, 2]);
        assert!(equal(&revs[0], &revs[2]));
        let live: std::collections::HashSet<String> = ["d".to_string()].into();
        let names: Vec<_> = to_truncate(&revs, &live, 1).iter().map(|r| meta::name(&r.metadata)).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(to_truncate(&revs, &live, 10).is_empty());
    }
}
