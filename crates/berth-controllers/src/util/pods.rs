//! Pod predicates as upstream `podutil` and `controller_utils` define them.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::Timestamp;

use super::time;

/// Annotation that biases which pods a ReplicaSet deletes first (lower cost goes first).
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The pod's phase, "" when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// A pod counts toward a controller's replicas until it is terminal or being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let p = phase(pod);
    p != "Succeeded" && p != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition, if reported.
pub fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// Whether the Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready (the Ready condition's transition time), if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod).filter(|c| c.status == "True").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
}

/// Available = ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => time::add_seconds(since, i64::from(min_ready_seconds)) < now,
        None => false,
    }
}

/// When a ready-but-not-yet-available pod will become available, if it is in that state.
pub fn becomes_available_at(pod: &Pod, min_ready_seconds: i32) -> Option<Timestamp> {
    if min_ready_seconds <= 0 {
        return None;
    }
    ready_since(pod).map(|since| time::add_seconds(since, i64::from(min_ready_seconds)))
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn max_container_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST_ANNOTATION))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// "Later or unset first": an unset time sorts before any time, then newer before older.
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Orders two pods so that the one to delete first sorts first (upstream `ActivePodsWithRanks.Less`):
/// unscheduled before scheduled; Pending before Unknown before Running; not ready before ready; lower
/// deletion cost first; more co-located siblings (`rank`) first; ready more recently first; more
/// container restarts first; newer before older.
pub fn deletion_order(a: (&Pod, usize), b: (&Pod, usize)) -> Ordering {
    let (pa, rank_a) = a;
    let (pb, rank_b) = b;
    let (na, nb) = (node_name(pa), node_name(pb));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() { Ordering::Less } else { Ordering::Greater };
    }
    let by_phase = phase_ordinal(pa).cmp(&phase_ordinal(pb));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ra, rb) = (is_ready(pa), is_ready(pb));
    if ra != rb {
        return if ra { Ordering::Greater } else { Ordering::Less };
    }
    let by_cost = deletion_cost(pa).cmp(&deletion_cost(pb));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    if ra && rb {
        let by_ready = newer_first(ready_since(pa), ready_since(pb));
        if by_ready != Ordering::Equal {
            return by_ready;
        }
    }
    let by_restarts = max_container_restarts(pb).cmp(&max_container_restarts(pa));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    newer_first(
        pa.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pb.metadata.creation_timestamp.as_ref().map(|t| t.0),
    )
}

/// Picks `count` pods to delete from `pods`, least valuable first. `related` are the active pods
/// of the same owner family: a pod sharing its node with more of them is preferred for deletion.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], count: usize) -> Vec<&'a Pod> {
    if count >= pods.len() {
        return pods.to_vec();
    }
    let mut per_node: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for p in related {
        if is_active(p) {
            *per_node.entry(node_name(p)).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&'a Pod, usize)> = pods
        .iter()
        .map(|p| {
            let node = node_name(p);
            let rank = if node.is_empty() { 0 } else { per_node.get(node).copied().unwrap_or(0) };
            (*p, rank)
        })
        .collect();
    ranked.sort_by(|a, b| deletion_order(*a, *b));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    pub(crate) fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    pub(crate) fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: (!node.is_empty()).then(|| node.to_string()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn names(pods: Vec<&Pod>) -> Vec<String> {
        pods.into_iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn availability_honours_min_ready_seconds() {
        let p = pod("a", "n1", "Running", Some(0), 0);
        assert!(is_available(&p, 0, ts(0)));
        assert!(!is_available(&p, 10, ts(10)));
        assert!(is_available(&p, 10, ts(11)));
        assert_eq!(becomes_available_at(&p, 10), Some(ts(10)));
        let not_ready = pod("b", "n1", "Running", None, 0);
        assert!(!is_available(&not_ready, 0, ts(100)));
    }

    #[test]
    fn active_excludes_terminal_and_deleting() {
        assert!(is_active(&pod("a", "", "Pending", None, 0)));
        assert!(!is_active(&pod("a", "", "Succeeded", None, 0)));
        assert!(!is_active(&pod("a", "", "Failed", None, 0)));
        let mut deleting = pod("a", "", "Running", None, 0);
        deleting.metadata.deletion_timestamp = Some(Time(ts(1)));
        assert!(!is_active(&deleting));
    }

    #[test]
    fn least_valuable_pods_are_deleted_first() {
        let unscheduled = pod("unscheduled", "", "Pending", None, 0);
        let pending = pod("pending", "n1", "Pending", None, 0);
        let running_not_ready = pod("running-not-ready", "n1", "Running", None, 0);
        let ready_new = pod("ready-new", "n1", "Running", Some(50), 40);
        let ready_old = pod("ready-old", "n1", "Running", Some(10), 5);
        let all = [&ready_old, &ready_new, &running_not_ready, &pending, &unscheduled];
        assert_eq!(names(pods_to_delete(&all, &all, 4)), ["unscheduled", "pending", "running-not-ready", "ready-new"]);
        assert_eq!(names(pods_to_delete(&all, &all, 9)).len(), 5);
    }

    #[test]
    fn newer_pods_and_restarting_pods_go_first_among_equals() {
        let older = pod("older", "n1", "Pending", None, 0);
        let newer = pod("newer", "n1", "Pending", None, 10);
        let mut restarting = pod("restarting", "n1", "Pending", None, 0);
        restarting.status.as_mut().unwrap().container_statuses =
            Some(vec![ContainerStatus { restart_count: 3, ..Default::default() }]);
        let all = [&older, &newer, &restarting];
        assert_eq!(names(pods_to_delete(&all, &all, 2)), ["restarting", "newer"]);
    }

    #[test]
    fn doubled_up_pods_and_low_deletion_cost_go_first() {
        let a = pod("alone", "n1", "Running", Some(0), 0);
        let b = pod("crowded", "n2", "Running", Some(0), 0);
        let sibling = pod("sibling", "n2", "Running", Some(0), 0);
        assert_eq!(names(pods_to_delete(&[&a, &b], &[&a, &b, &sibling], 1)), ["crowded"]);
        let mut cheap = pod("cheap", "n1", "Running", Some(0), 0);
        cheap.metadata.annotations =
            Some([(POD_DELETION_COST_ANNOTATION.to_string(), "-5".to_string())].into_iter().collect());
        assert_eq!(names(pods_to_delete(&[&b, &cheap], &[&a, &b, &sibling, &cheap], 1)), ["cheap"]);
    }

    #[test]
    fn pods_without_status_are_not_ready() {
        let bare = Pod::default();
        assert!(!is_ready(&bare));
        assert_eq!(phase(&bare), "");
        let _ = PodStatus::default();
    }
}
