//! The StatefulSet controller's rules as pure functions (upstream
//! `pkg/controller/statefulset/stateful_set_utils.go` and the decisions of
//! `stateful_set_control.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::history::{self, CONTROLLER_REVISION_HASH};
use crate::util::meta;
use crate::util::pods;

/// The label naming a pod's identity, so a Service can select exactly one pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `spec.replicas` (defaults to 1 like the API).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// The first ordinal (`spec.ordinals.start`, 0 by default).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0).max(0)
}

/// Whether the set's ordinals cover `ordinal`.
pub fn in_range(set: &StatefulSet, ordinal: i32) -> bool {
    let start = start_ordinal(set);
    ordinal >= start && ordinal < start + replicas(set)
}

/// OrderedReady pods are created, updated and deleted one at a time; Parallel ones are not.
pub fn is_monotonic(set: &StatefulSet) -> bool {
    set.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel")
}

/// `spec.minReadySeconds`.
pub fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// The update strategy type (RollingUpdate by default).
pub fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// The rolling update partition, when the strategy sets one.
pub fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0))
}

/// `spec.revisionHistoryLimit` (10 by default).
pub fn revision_history_limit(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10)
}

/// The set a pod name belongs to and its ordinal: `web-2` is ("web", 2).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

/// The ordinal of a pod of `set`, if its name says it is one.
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let (parent, ordinal) = parent_and_ordinal(meta::name(&pod.metadata))?;
    (parent == meta::name(&set.metadata)).then_some(ordinal)
}

/// `<set>-<ordinal>`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", meta::name(&set.metadata))
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}", pod_name(set, ordinal))
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn pod_revision(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH)).map(String::as_str).unwrap_or("")
}

/// Running, ready and not terminating (upstream `isHealthy`).
pub fn is_healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Phase Running and condition Ready.
pub fn running_and_ready(pod: &Pod) -> bool {
    pods::phase(pod) == "Running" && pods::is_ready(pod)
}

/// Running and available for `minReadySeconds`.
pub fn running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    pods::phase(pod) == "Running" && pods::is_available(pod, min_ready_seconds, now)
}

/// Succeeded or Failed: the pod must be replaced.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(pods::phase(pod), "Succeeded" | "Failed")
}

/// The pod template a revision stores (upstream applies the revision's patch to the set).
pub fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = history::data(rev).pointer("/spec/template")?.clone();
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The claims a pod of `set` at `ordinal` mounts, one per volumeClaimTemplate (upstream
/// `getPersistentVolumeClaims`): labelled with the set's selector labels.
pub fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else { return Vec::new() };
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|tpl| {
            let mut claim = tpl.clone();
            let tpl_name = meta::name(&tpl.metadata).to_string();
            claim.metadata = ObjectMeta {
                name: Some(claim_name(&tpl_name, set, ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: {
                    let mut labels = tpl.metadata.labels.clone().unwrap_or_default();
                    labels.extend(selector_labels.clone());
                    Some(labels).filter(|l| !l.is_empty())
                },
                annotations: tpl.metadata.annotations.clone(),
                ..Default::default()
            };
            claim.status = None;
            claim
        })
        .collect()
}

/// The pod of `set` at `ordinal` from `template`, labelled with `revision` (upstream
/// `newStatefulSetPod` and `setPodRevision`): a stable name, hostname and subdomain, and each
/// claim template's volume bound to the pod's own claim.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let tmeta = template.metadata.clone().unwrap_or_default();
    let name = pod_name(set, ordinal);
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.to_string(), name.clone());
    labels.insert(POD_INDEX_LABEL.to_string(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH.to_string(), revision.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(service) = set.spec.as_ref().and_then(|s| s.service_name.as_deref()).filter(|s| !s.is_empty()) {
        spec.subdomain = Some(service.to_string());
    }
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref());
    for tpl in templates.into_iter().flatten() {
        let tpl_name = meta::name(&tpl.metadata).to_string();
        let volume = Volume {
            name: tpl_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tpl_name, set, ordinal),
                read_only: None,
            }),
            ..Default::default()
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != tpl_name);
        volumes.push(volume);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![meta::controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether a missing pod at `ordinal` is made from the current revision rather than the update
/// revision (upstream `newVersionedStatefulSetPod`): below the partition, or, without a
/// rollingUpdate block, among the pods not yet updated.
pub fn uses_current_revision(set: &StatefulSet, ordinal: i32) -> bool {
    if strategy_type(set) != "RollingUpdate" {
        return false;
    }
    match partition(set) {
        Some(partition) => ordinal < partition,
        None => ordinal < set.status.as_ref().and_then(|s| s.current_replicas).unwrap_or(0),
    }
}

/// The status for the pods the set owns (upstream `computeReplicaStatus` and
/// `completeRollingUpdate`).
pub fn calculate_status(
    set: &StatefulSet,
    owned: &[&Pod],
    current_revision: &str,
    update_revision: &str,
    collision_count: i32,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = min_ready_seconds(set);
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(current_revision.to_string()),
        update_revision: Some(update_revision.to_string()),
        collision_count: Some(collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for pod in owned {
        status.replicas += 1;
        if running_and_ready(pod) {
            ready += 1;
            if running_and_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if pod.metadata.deletion_timestamp.is_none() {
            let revision = pod_revision(pod);
            if revision == current_revision {
                current += 1;
            }
            if revision == update_revision {
                updated += 1;
            }
        }
    }
    // Explicit zeros so a merge patch of the status clears old counts.
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(current);
    status.updated_replicas = Some(updated);
    if strategy_type(set) == "RollingUpdate" && updated == status.replicas && ready == status.replicas {
        status.current_replicas = Some(updated);
        status.current_revision = Some(update_revision.to_string());
    }
    status
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::util::pods::tests::{pod, ts};

    fn set(extra: serde_json::Value) -> StatefulSet {
        let mut v = serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "sts-uid", "generation": 2},
            "spec": {
                "replicas": 3,
                "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn labelled(mut p: Pod, revision: &str) -> Pod {
        p.metadata.labels = Some([(CONTROLLER_REVISION_HASH.to_string(), revision.to_string())].into());
        p
    }

    #[test]
    fn names_and_ordinals() {
        assert_eq!(parent_and_ordinal("web-12"), Some(("web", 12)));
        assert_eq!(parent_and_ordinal("my-web-0"), Some(("my-web", 0)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        let s = set(serde_json::json!({}));
        assert_eq!(claim_name("data", &s, 1), "data-web-1");
        assert!(in_range(&s, 2) && !in_range(&s, 3));
        let shifted = set(serde_json::json!({"ordinals": {"start": 5}}));
        assert!(in_range(&shifted, 5) && in_range(&shifted, 7) && !in_range(&shifted, 4));
    }

    #[test]
    fn pods_get_identity_revision_and_claims() {
        let s = set(serde_json::json!({}));
        let tpl = s.spec.as_ref().unwrap().template.clone();
        let p = new_pod(&s, &tpl, "web-abc", 1);
        assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-1");
        assert_eq!(labels[POD_INDEX_LABEL], "1");
        assert_eq!(labels["app"], "web");
        assert_eq!(pod_revision(&p), "web-abc");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-1"), Some("web")));
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(volume.persistent_volume_claim.as_ref().unwrap().claim_name, "data-web-1");
        assert!(meta::is_controlled_by(&p.metadata, "sts-uid"));
        let c = claims(&s, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].metadata.name.as_deref(), Some("data-web-1"));
        assert_eq!(c[0].metadata.labels.as_ref().unwrap()["app"], "web");
        assert!(c[0].metadata.owner_references.is_none());
    }

    #[test]
    fn partition_keeps_low_ordinals_on_the_current_revision() {
        let s =
            set(serde_json::json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}));
        assert!(uses_current_revision(&s, 1));
        assert!(!uses_current_revision(&s, 2));
        let on_delete = set(serde_json::json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(!uses_current_revision(&on_delete, 0));
        assert!(!is_monotonic(&set(serde_json::json!({"podManagementPolicy": "Parallel"}))));
        assert!(is_monotonic(&s));
    }

    #[test]
    fn status_counts_and_completes_the_rollout() {
        let s = set(serde_json::json!({}));
        let a = labelled(pod("web-0", "n", "Running", Some(0), 0), "new");
        let b = labelled(pod("web-1", "n", "Running", Some(0), 0), "old");
        let c = labelled(pod("web-2", "n", "Pending", None, 0), "new");
        let st = calculate_status(&s, &[&a, &b, &c], "old", "new", 0, ts(10));
        assert_eq!(st.replicas, 3);
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.current_replicas, Some(1));
        assert_eq!(st.updated_replicas, Some(2));
        assert_eq!(st.current_revision.as_deref(), Some("old"));
        assert_eq!(st.observed_generation, Some(2));
        let b2 = labelled(pod("web-1", "n", "Running", Some(0), 0), "new");
        let c2 = labelled(pod("web-2", "n", "Running", Some(0), 0), "new");
        let done = calculate_status(&s, &[&a, &b2, &c2], "old", "new", 0, ts(10));
        assert_eq!(done.current_revision.as_deref(), Some("new"));
        assert_eq!(done.current_replicas, Some(3));
    }

    #[test]
    fn revision_template_round_trips() {
        let s = set(serde_json::json!({}));
        let tpl = s.spec.as_ref().unwrap().template.clone();
        let rev = ControllerRevision {
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(history::template_patch(Some(&tpl)))),
            ..Default::default()
        };
        assert_eq!(revision_template(&rev), Some(tpl));
    }
}
