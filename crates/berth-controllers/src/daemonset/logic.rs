//! The DaemonSet controller's rules as pure functions (upstream `pkg/controller/daemon`:
//! `NodeShouldRunDaemonPod`, `podsShouldBeOnNode`, `rollingUpdate` and `updateDaemonSetStatus`,
//! and `pkg/controller/daemon/util`).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::deployment::util::scaled_value;
use crate::history::CONTROLLER_REVISION_HASH;
use crate::util::meta;
use crate::util::pods;

/// The deprecated label upstream still sets on daemon pods.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// `spec.minReadySeconds`.
pub fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// The update strategy type (RollingUpdate by default).
pub fn strategy_type(ds: &DaemonSet) -> &str {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// `spec.revisionHistoryLimit` (10 by default).
pub fn revision_history_limit(ds: &DaemonSet) -> i32 {
    ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10)
}

/// The hash a pod was made from.
pub fn pod_hash(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH)).map(String::as_str).unwrap_or("")
}

/// Whether the pod runs the template with `hash` (upstream `IsPodUpdated`, by hash).
pub fn is_updated(pod: &Pod, hash: &str) -> bool {
    !hash.is_empty() && pod_hash(pod) == hash
}

/// The tolerations every daemon pod gets (upstream `AddOrUpdateDaemonPodTolerations`), so
/// daemons keep running on nodes that are not ready, under pressure or cordoned.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.to_string()),
        operator: Some("Exists".to_string()),
        effect: Some(effect.to_string()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            key == taint.key && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if req.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs.iter().all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then(|| meta::name(&node.metadata));
            requirement_matches(r, value)
        })
}

/// Whether the template's nodeSelector and required node affinity admit `node`.
fn fits_node(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok =
        spec.and_then(|s| s.node_selector.as_ref()).is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// (should run, should continue running) a daemon pod on `node` (upstream
/// `NodeShouldRunDaemonPod`): the node must fit the template, and its NoSchedule taints must be
/// tolerated to start a pod, its NoExecute taints to keep one.
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    if let Some(wanted) = spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
        && wanted != meta::name(&node.metadata)
    {
        return (false, false);
    }
    if !fits_node(ds, node) {
        return (false, false);
    }
    let mut tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec.and_then(|s| s.host_network).unwrap_or(false)));
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|taint| taint.effect == effect && !tolerations.iter().any(|t| tolerates(t, taint)))
    };
    if untolerated("NoExecute") {
        return (false, false);
    }
    (!untolerated("NoSchedule"), true)
}

/// The node a daemon pod is for: its `nodeName`, else the node its affinity pins it to
/// (upstream `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        (r.key == "metadata.name" && r.operator == "In" && values.len() == 1).then(|| values[0].clone())
    })
}

/// The daemon pod for `node` (upstream `GetPodFromTemplate` plus
/// `ReplaceDaemonSetPodNodeNameNodeAffinity` and the daemon tolerations).
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH.to_string(), hash.to_string());
    if let Some(generation) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.to_string(), generation.to_string());
    }
    let mut spec = template.spec.unwrap_or_default();
    let pin = NodeSelectorRequirement {
        key: "metadata.name".to_string(),
        operator: "In".to_string(),
        values: Some(vec![node.to_string()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector { node_selector_terms: Vec::new() });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![pin.clone()]);
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(spec.host_network.unwrap_or(false)) {
        tolerations.retain(|existing| !(existing.key == t.key && existing.effect == t.effect));
        tolerations.push(t);
    }
    let ds_name = meta::name(&ds.metadata);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{ds_name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![meta::controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// What a sync should do: nodes that need a pod, and pods to delete (by name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes to create a daemon pod on.
    pub create_on: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
}

fn by_creation(a: &&Pod, b: &&Pod) -> std::cmp::Ordering {
    let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b)).then_with(|| meta::name(&a.metadata).cmp(meta::name(&b.metadata)))
}

/// Pods and nodes to fix so each eligible node runs exactly one daemon pod (upstream
/// `podsShouldBeOnNode`): failed and succeeded pods are deleted, extra pods deleted keeping the
/// oldest (with surge, the oldest updated and the oldest old one), pods on nodes that no longer
/// qualify deleted.
pub fn manage(ds: &DaemonSet, nodes: &[&Node], by_node: &HashMap<String, Vec<&Pod>>, hash: &str) -> Plan {
    let mut plan = Plan::default();
    let surge = max_surge_configured(ds);
    for node in nodes {
        let name = meta::name(&node.metadata);
        let (run, keep) = should_run(ds, node);
        let pods = by_node.get(name).cloned().unwrap_or_default();
        if keep {
            let mut running: Vec<&Pod> = Vec::new();
            for pod in pods {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if matches!(pods::phase(pod), "Failed" | "Succeeded") {
                    plan.delete.push(meta::name(&pod.metadata).to_string());
                    continue;
                }
                running.push(pod);
            }
            if running.is_empty() {
                if run {
                    plan.create_on.push(name.to_string());
                }
            } else if running.len() > 1 {
                running.sort_by(by_creation);
                if surge {
                    let (updated, old): (Vec<&Pod>, Vec<&Pod>) = running.iter().partition(|p| is_updated(p, hash));
                    for group in [updated, old] {
                        plan.delete.extend(group.iter().skip(1).map(|p| meta::name(&p.metadata).to_string()));
                    }
                } else {
                    plan.delete.extend(running.iter().skip(1).map(|p| meta::name(&p.metadata).to_string()));
                }
            }
        } else {
            plan.delete.extend(
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| meta::name(&p.metadata).to_string()),
            );
        }
    }
    plan
}

fn rolling(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    ds.spec.as_ref()?.update_strategy.as_ref()?.rolling_update.as_ref()
}

fn max_surge_configured(ds: &DaemonSet) -> bool {
    strategy_type(ds) == "RollingUpdate"
        && rolling(ds).and_then(|r| r.max_surge.as_ref()).is_some_and(|s| match s {
            IntOrString::Int(n) => *n > 0,
            IntOrString::String(p) => p.trim_end_matches('%').parse::<i32>().is_ok_and(|n| n > 0),
        })
}

/// (maxSurge, maxUnavailable) against the number of nodes that should run the daemon, rounding
/// up; never both zero (upstream `updatedDesiredNodeCounts`).
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let r = rolling(ds);
    let surge = r.and_then(|r| r.max_surge.as_ref()).and_then(|v| scaled_value(v, desired, true).ok()).unwrap_or(0);
    let unavailable =
        r.and_then(|r| r.max_unavailable.as_ref()).map_or(Ok(1), |v| scaled_value(v, desired, true)).unwrap_or(1);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// The new and old live pod on a node; `None` when there are several of either (the manage step
/// sorts that out first) (upstream `findUpdatedPodsOnNode`).
fn updated_and_old<'a>(pods: &[&'a Pod], hash: &str) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if is_updated(pod, hash) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*pod);
    }
    Some((new, old))
}

/// The rolling update step (upstream `rollingUpdate`): without surge, delete old pods while at
/// most maxUnavailable nodes lack an available pod (old unavailable pods go at once); with
/// surge, start the new pod beside the old one and delete the old one once the new one is
/// available.
pub fn rolling_update(
    ds: &DaemonSet,
    nodes: &[&Node],
    by_node: &HashMap<String, Vec<&Pod>>,
    hash: &str,
    now: Timestamp,
) -> Plan {
    let min_ready = min_ready_seconds(ds);
    let eligible: Vec<&str> = nodes.iter().filter(|n| should_run(ds, n).0).map(|n| meta::name(&n.metadata)).collect();
    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
    let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired);
    let empty = Vec::new();
    let mut plan = Plan::default();
    let mut node_names: Vec<&str> = by_node.keys().map(String::as_str).collect();
    node_names.sort_unstable();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for node in &node_names {
            let pods = by_node.get(*node).unwrap_or(&empty);
            let Some((new, old)) = updated_and_old(pods, hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !pods::is_available(new, min_ready, now) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !pods::is_available(old, min_ready, now) {
                        replace_now.push(meta::name(&old.metadata).to_string());
                    } else if unavailable < max_unavailable {
                        candidates.push(meta::name(&old.metadata).to_string());
                    }
                }
            }
        }
        let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0).min(candidates.len());
        plan.delete = replace_now;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    let mut surging = 0;
    for node in &node_names {
        let pods = by_node.get(*node).unwrap_or(&empty);
        let Some((new, old)) = updated_and_old(pods, hash) else { continue };
        let Some(old) = old else { continue };
        match new {
            None => {
                let eligible_here = eligible.contains(node);
                if !pods::is_available(old, min_ready, now) {
                    if eligible_here {
                        plan.create_on.push(node.to_string());
                    }
                } else if surging < max_surge && eligible_here {
                    surging += 1;
                    plan.create_on.push(node.to_string());
                }
            }
            Some(new) => {
                if pods::is_available(new, min_ready, now) {
                    plan.delete.push(meta::name(&old.metadata).to_string());
                } else {
                    surging += 1;
                }
            }
        }
    }
    plan
}

/// The status for the nodes and the pods on them (upstream `updateDaemonSetStatus`).
pub fn calculate_status(
    ds: &DaemonSet,
    nodes: &[&Node],
    by_node: &HashMap<String, Vec<&Pod>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = min_ready_seconds(ds);
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
    for node in nodes {
        let (run, _) = should_run(ds, node);
        let mut pods = by_node.get(meta::name(&node.metadata)).cloned().unwrap_or_default();
        if run {
            desired += 1;
            if pods.is_empty() {
                continue;
            }
            current += 1;
            pods.sort_by(by_creation);
            let pod = pods[0];
            if pods::is_ready(pod) {
                ready += 1;
                if pods::is_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(pod, hash) {
                updated += 1;
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
    }
    DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_available: Some(available),
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_unavailable: Some(desired - available),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(updated),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::util::pods::tests::{pod, ts};

    fn ds(extra: serde_json::Value) -> DaemonSet {
        let mut v = serde_json::json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
            }
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}
        }))
        .unwrap()
    }

    fn on(mut p: Pod, node: &str, hash: &str) -> Pod {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.metadata.labels = Some([(CONTROLLER_REVISION_HASH.to_string(), hash.to_string())].into());
        p
    }

    #[test]
    fn eligibility_follows_selectors_and_taints() {
        let plain = node("a", serde_json::json!({"disk": "ssd"}), serde_json::json!([]));
        assert_eq!(should_run(&ds(serde_json::json!({})), &plain), (true, true));
        let mut picky = ds(serde_json::json!({}));
        picky.spec.as_mut().unwrap().template.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "hdd".to_string())].into());
        assert_eq!(should_run(&picky, &plain), (false, false));
        let no_schedule = node("b", serde_json::json!({}), serde_json::json!([{"key": "k", "effect": "NoSchedule"}]));
        assert_eq!(should_run(&ds(serde_json::json!({})), &no_schedule), (false, true));
        let no_exec = node("c", serde_json::json!({}), serde_json::json!([{"key": "k", "effect": "NoExecute"}]));
        assert_eq!(should_run(&ds(serde_json::json!({})), &no_exec), (false, false));
        let cordoned = node(
            "d",
            serde_json::json!({}),
            serde_json::json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert_eq!(should_run(&ds(serde_json::json!({})), &cordoned), (true, true));
    }

    #[test]
    fn new_pods_are_pinned_to_their_node() {
        let p = new_pod(&ds(serde_json::json!({})), "node-1", "h1");
        assert_eq!(target_node(&p).as_deref(), Some("node-1"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(pod_hash(&p), "h1");
        assert!(p.spec.unwrap().tolerations.unwrap().len() >= 6);
    }

    #[test]
    fn manage_creates_missing_and_deletes_extra_pods() {
        let d = ds(serde_json::json!({}));
        let (a, b) = (
            node("a", serde_json::json!({}), serde_json::json!([])),
            node("b", serde_json::json!({}), serde_json::json!([])),
        );
        let old = on(pod("agent-1", "", "Running", Some(0), 0), "a", "h");
        let newer = on(pod("agent-2", "", "Running", Some(0), 5), "a", "h");
        let by_node: HashMap<String, Vec<&Pod>> = [("a".to_string(), vec![&old, &newer])].into();
        let plan = manage(&d, &[&a, &b], &by_node, "h");
        assert_eq!(plan.create_on, ["b"]);
        assert_eq!(plan.delete, ["agent-2"]);
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let d = ds(serde_json::json!({}));
        let nodes: Vec<Node> =
            ["a", "b", "c"].iter().map(|n| node(n, serde_json::json!({}), serde_json::json!([]))).collect();
        let refs: Vec<&Node> = nodes.iter().collect();
        let pa = on(pod("pa", "", "Running", Some(0), 0), "a", "old");
        let pb = on(pod("pb", "", "Running", Some(0), 0), "b", "old");
        let pc = on(pod("pc", "", "Running", Some(0), 0), "c", "old");
        let by_node: HashMap<String, Vec<&Pod>> =
            [("a".to_string(), vec![&pa]), ("b".to_string(), vec![&pb]), ("c".to_string(), vec![&pc])].into();
        let plan = rolling_update(&d, &refs, &by_node, "new", ts(100));
        assert_eq!(plan.delete.len(), 1);
        // One node already lacks an available pod: nothing more goes.
        let fresh = on(pod("pa2", "", "Pending", None, 0), "a", "new");
        let by_node: HashMap<String, Vec<&Pod>> =
            [("a".to_string(), vec![&fresh]), ("b".to_string(), vec![&pb]), ("c".to_string(), vec![&pc])].into();
        assert!(rolling_update(&d, &refs, &by_node, "new", ts(100)).delete.is_empty());
        let status = calculate_status(&d, &refs, &by_node, "new", ts(100));
        assert_eq!((status.desired_number_scheduled, status.current_number_scheduled, status.number_ready), (3, 3, 2));
        assert_eq!(status.updated_number_scheduled, Some(1));
        assert_eq!(status.number_unavailable, Some(1));
    }

    #[test]
    fn surge_starts_new_pods_beside_old_ones() {
        let d = ds(serde_json::json!({"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}));
        let a = node("a", serde_json::json!({}), serde_json::json!([]));
        let old = on(pod("old", "", "Running", Some(0), 0), "a", "old");
        let by_node: HashMap<String, Vec<&Pod>> = [("a".to_string(), vec![&old])].into();
        assert_eq!(rolling_update(&d, &[&a], &by_node, "new", ts(100)).create_on, ["a"]);
        let new = on(pod("new", "", "Running", Some(0), 1), "a", "new");
        let by_node: HashMap<String, Vec<&Pod>> = [("a".to_string(), vec![&old, &new])].into();
        assert_eq!(rolling_update(&d, &[&a], &by_node, "new", ts(100)).delete, ["old"]);
    }
}
