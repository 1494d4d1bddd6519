//! The ReplicaSet controller's decisions, as pure functions of the ReplicaSet and its pods
//! (upstream `pkg/controller/replicaset/replica_set.go` and `replica_set_utils.go`).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::util::meta;
use crate::util::pods;
use crate::util::selector::Selector;
use crate::util::time;

/// At most this many pods are created or deleted in one sync (upstream `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// Creation starts with batches of this size and doubles after each fully successful batch.
pub const SLOW_START_INITIAL_BATCH: usize = 1;
/// Condition type set when pods cannot be created or deleted.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The replica count of a ReplicaSet (defaults to 1 like the API).
pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ReplicaSet's minReadySeconds.
pub fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// What to do about a pod when claiming pods for a ReplicaSet (upstream `PodControllerRefManager`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Owned and matching: it counts.
    Keep,
    /// An orphan that matches: take ownership.
    Adopt,
    /// Owned but no longer matching: drop the owner reference.
    Release,
    /// Someone else's, or not ours to take.
    Ignore,
}

/// Decides a pod's fate for the ReplicaSet with `rs_uid`.
pub fn claim(rs_uid: &str, rs_deleting: bool, selector: &Selector, pod: &Pod) -> Claim {
    let matches = selector.matches(pod.metadata.labels.as_ref());
    match meta::controller_of(&pod.metadata) {
        Some(owner) if owner.uid == rs_uid => {
            if matches {
                Claim::Keep
            } else if rs_deleting {
                // A ReplicaSet being deleted does not release; the garbage collector handles it.
                Claim::Ignore
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if rs_deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                Claim::Ignore
            } else {
                Claim::Adopt
            }
        }
    }
}

/// What a sync should do to the pod count.
#[derive(Debug, PartialEq)]
pub enum ReplicaAction<'a> {
    /// The count is right.
    Nothing,
    /// Create this many pods.
    Create(usize),
    /// Delete these pods.
    Delete(Vec<&'a Pod>),
}

/// Compares the live pods (plus creates still in flight) with the desired count
/// (upstream `manageReplicas`), capped at [`BURST_REPLICAS`] per sync.
pub fn manage_replicas<'a>(
    desired: i32,
    active: &[&'a Pod],
    pending_creates: usize,
    related: &[&Pod],
) -> ReplicaAction<'a> {
    let desired = usize::try_from(desired.max(0)).unwrap_or(0);
    let current = active.len() + pending_creates;
    if current < desired {
        ReplicaAction::Create((desired - current).min(BURST_REPLICAS))
    } else if current > desired {
        // In-flight creates cannot be deleted yet; only surplus among visible pods goes.
        let surplus = (current - desired).min(active.len()).min(BURST_REPLICAS);
        if surplus == 0 {
            ReplicaAction::Nothing
        } else {
            ReplicaAction::Delete(pods::pods_to_delete(active, related, surplus))
        }
    } else {
        ReplicaAction::Nothing
    }
}

/// Batch sizes for creating `count` pods: 1, 2, 4, ... (upstream `slowStartBatch`), so a
/// template that cannot be created fails fast instead of flooding the API server.
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = remaining.min(SLOW_START_INITIAL_BATCH);
    while size > 0 {
        batches.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    batches
}

/// The pod the ReplicaSet creates from its template (upstream `GetPodFromTemplate`).
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let rs_name = meta::name(&rs.metadata);
    // Pod names must be DNS subdomains; with no room for the random suffix use the bare name.
    let prefix = if rs_name.len() < 253 - 5 { format!("{rs_name}-") } else { rs_name.to_string() };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![meta::controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Why pods could not be managed, for the ReplicaFailure condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageError {
    /// The API error message.
    pub message: String,
}

/// The ReplicaSet status for the given owned active pods (upstream `calculateStatus`).
pub fn calculate_status(
    rs: &ReplicaSet,
    owned: &[&Pod],
    manage_error: Option<&ManageError>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = min_ready_seconds(rs);
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in owned {
        let labels = pod.metadata.labels.as_ref();
        if template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
            fully_labeled += 1;
        }
        if pods::is_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let replicas = i32::try_from(owned.len()).unwrap_or(i32::MAX);
    let has_failure = status.conditions.iter().flatten().any(|c| c.type_ == REPLICA_FAILURE);
    match manage_error {
        Some(err) if !has_failure => {
            let reason = if replicas < desired_replicas(rs) { "FailedCreate" } else { "FailedDelete" };
            status.conditions.get_or_insert_with(Vec::new).push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.to_string(),
                status: "True".to_string(),
                reason: Some(reason.to_string()),
                message: Some(err.message.clone()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_ != REPLICA_FAILURE);
            }
        }
        _ => {}
    }
    status.replicas = replicas;
    // Explicit zeros (not absent fields) so that a merge patch of this status clears old counts.
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.observed_generation = rs.metadata.generation;
    status
}

/// When ready pods are waiting out minReadySeconds, how long until the next one becomes
/// available (upstream re-queues after minReadySeconds; the exact instant is tighter).
pub fn requeue_for_availability(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> Option<Duration> {
    let min_ready = min_ready_seconds(rs);
    owned
        .iter()
        .filter(|p| pods::is_ready(p) && !pods::is_available(p, min_ready, now))
        .filter_map(|p| pods::becomes_available_at(p, min_ready))
        .map(|at| time::until(now, at) + Duration::from_secs(1))
        .min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::util::pods::tests::{pod, ts};
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: None,
                selector: LabelSelector { match_labels: Some(labels(&[("app", "web")])), ..Default::default() },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                        annotations: Some(labels(&[("note", "x")])),
                        ..Default::default()
                    }),
                    spec: Some(Default::default()),
                }),
            }),
            status: None,
        }
    }

    fn owned_by(mut p: Pod, uid: &str) -> Pod {
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "x".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        p
    }

    fn with_labels(mut p: Pod, l: &[(&str, &str)]) -> Pod {
        p.metadata.labels = Some(labels(l));
        p
    }

    #[test]
    fn claims_adopt_orphans_release_mismatches_and_ignore_others() {
        let sel = Selector::from_label_selector(&rs(1).spec.unwrap().selector).unwrap();
        let orphan = with_labels(pod("o", "", "Pending", None, 0), &[("app", "web")]);
        assert_eq!(claim("rs-uid", false, &sel, &orphan), Claim::Adopt);
        assert_eq!(claim("rs-uid", true, &sel, &orphan), Claim::Ignore);
        let stranger = with_labels(pod("s", "", "Pending", None, 0), &[("app", "db")]);
        assert_eq!(claim("rs-uid", false, &sel, &stranger), Claim::Ignore);
        let mine = owned_by(with_labels(pod("m", "", "Pending", None, 0), &[("app", "web")]), "rs-uid");
        assert_eq!(claim("rs-uid", false, &sel, &mine), Claim::Keep);
        let relabeled = owned_by(with_labels(pod("r", "", "Pending", None, 0), &[("app", "other")]), "rs-uid");
        assert_eq!(claim("rs-uid", false, &sel, &relabeled), Claim::Release);
        let theirs = owned_by(with_labels(pod("t", "", "Pending", None, 0), &[("app", "web")]), "other-uid");
        assert_eq!(claim("rs-uid", false, &sel, &theirs), Claim::Ignore);
    }

    #[test]
    fn creates_the_shortfall_counting_in_flight_creates() {
        let a = pod("a", "", "Pending", None, 0);
        assert_eq!(manage_replicas(3, &[&a], 0, &[]), ReplicaAction::Create(2));
        assert_eq!(manage_replicas(3, &[&a], 2, &[]), ReplicaAction::Nothing);
        assert_eq!(manage_replicas(2000, &[], 0, &[]), ReplicaAction::Create(BURST_REPLICAS));
    }

    #[test]
    fn deletes_the_surplus_least_valuable_first() {
        let ready = pod("ready", "n1", "Running", Some(0), 0);
        let pending = pod("pending", "", "Pending", None, 5);
        let running = pod("running", "n1", "Running", None, 3);
        let active = [&ready, &pending, &running];
        match manage_replicas(1, &active, 0, &active) {
            ReplicaAction::Delete(pods) => {
                let names: Vec<_> = pods.iter().map(|p| meta::name(&p.metadata)).collect();
                assert_eq!(names, ["pending", "running"]);
            }
            other => panic!("expected deletes, got {other:?}"),
        }
        // Surplus only from in-flight creates: nothing visible to delete yet.
        assert_eq!(manage_replicas(1, &[&ready], 1, &[]), ReplicaAction::Delete(vec![&ready]));
        assert_eq!(manage_replicas(0, &[], 2, &[]), ReplicaAction::Nothing);
    }

    #[test]
    fn slow_start_doubles_batches() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(7), [1, 2, 4]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500).iter().sum::<usize>(), 500);
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_ref() {
        let p = pod_from_template(&rs(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.labels, Some(labels(&[("app", "web"), ("tier", "front")])));
        assert_eq!(p.metadata.annotations, Some(labels(&[("note", "x")])));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("ReplicaSet", "rs-uid"));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert!(p.metadata.name.is_none());
    }

    #[test]
    fn status_counts_labeled_ready_and_available_pods() {
        let mut set = rs(3);
        set.spec.as_mut().unwrap().min_ready_seconds = Some(10);
        let full = [("app", "web"), ("tier", "front")];
        let a = with_labels(pod("a", "n", "Running", Some(0), 0), &full);
        let b = with_labels(pod("b", "n", "Running", Some(95), 0), &full);
        let c = with_labels(pod("c", "n", "Pending", None, 0), &[("app", "web")]);
        let owned = [&a, &b, &c];
        let status = calculate_status(&set, &owned, None, ts(100));
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(requeue_for_availability(&set, &owned, ts(100)), Some(Duration::from_secs(6)));
    }

    #[test]
    fn replica_failure_is_set_on_error_and_cleared_after() {
        let set = rs(3);
        let err = ManageError { message: "exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1".into() };
        let status = calculate_status(&set, &[], Some(&err), ts(0));
        let cond = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(cond.type_, REPLICA_FAILURE);
        assert_eq!(cond.reason.as_deref(), Some("FailedCreate"));
        assert_eq!(cond.message.as_deref(), Some(err.message.as_str()));
        let mut failed = set.clone();
        failed.status = Some(status);
        // An existing failure is kept as is while errors continue...
        let again = calculate_status(&failed, &[], Some(&ManageError { message: "other".into() }), ts(5));
        assert_eq!(again.conditions.as_ref().unwrap()[0].message.as_deref(), Some(err.message.as_str()));
        // ...and removed once a sync succeeds.
        let cleared = calculate_status(&failed, &[], None, ts(10));
        assert!(cleared.conditions.unwrap_or_default().is_empty());
    }
}
