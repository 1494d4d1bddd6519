//! The Deployment controller's rules as pure functions over typed objects (upstream
//! `pkg/controller/deployment/util/deployment_util.go` and the sorting helpers of
//! `controller_utils.go`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetCondition};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::util::semantic;
use crate::util::time;

/// Revision of a ReplicaSet in its Deployment's rollout sequence (and the Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet served, when rollbacks reused it.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge when the ReplicaSet was last scaled (for proportional scaling).
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Label that keeps the ReplicaSets of one Deployment from selecting each other's pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// kubectl's client-side apply record; never copied to ReplicaSets.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The extensions/v1beta1 rollback request; never copied.
pub const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Longest revision-history annotation kept, in characters.
pub const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Condition types and reasons.
pub mod reason {
    /// Condition type: the rollout is making progress.
    pub const PROGRESSING: &str = "Progressing";
    /// Condition type: enough replicas are available.
    pub const AVAILABLE: &str = "Available";
    /// Condition type: pods could not be created or deleted.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// A ReplicaSet was scaled as part of the rollout.
    pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
    /// The new ReplicaSet could not be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// The new ReplicaSet was created.
    pub const NEW_REPLICA_SET: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout finished.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// The Deployment is paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// The Deployment was resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// At least replicas - maxUnavailable are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Fewer than replicas - maxUnavailable are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// Invalid rolling-update parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// maxSurge or maxUnavailable is neither an integer nor a percentage.
    #[error("invalid value for IntOrString: invalid type: string is not a percentage: {0:?}")]
    NotAPercentage(String),
    /// The strategy type is unknown.
    #[error("deployment type {0} isn't supported")]
    UnsupportedStrategy(String),
}

// ---- spec accessors with the API's defaults --------------------------------------------------

/// spec.replicas (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ReplicaSet's spec.replicas (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Sets a ReplicaSet's spec.replicas.
pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

/// The ReplicaSet's status.replicas.
pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// The ReplicaSet's status.availableReplicas.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The ReplicaSet's status.readyReplicas.
pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

/// spec.minReadySeconds.
pub fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// spec.paused.
pub fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// spec.strategy.type (default RollingUpdate).
pub fn strategy_type(d: &Deployment) -> &str {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
}

/// Whether the strategy is RollingUpdate.
pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == "RollingUpdate"
}

/// spec.progressDeadlineSeconds, unless "no deadline" (unset on old objects or MaxInt32).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    // The API defaults the deadline to 600 s; a missing field means the server did not default it.
    let v = d.spec.as_ref().map(|s| s.progress_deadline_seconds.unwrap_or(600))?;
    (v != i32::MAX).then_some(v)
}

/// spec.revisionHistoryLimit (default 10), unless "keep everything" (MaxInt32).
pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    let v = d.spec.as_ref().map(|s| s.revision_history_limit.unwrap_or(10))?;
    (v != i32::MAX).then_some(v)
}

/// The Deployment's pod template.
pub fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

// ---- maxSurge / maxUnavailable ---------------------------------------------------------------

fn default_quarter() -> IntOrString {
    IntOrString::String("25%".to_string())
}

/// Resolves an int-or-percent against `total`, rounding percentages up or down
/// (upstream `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i32 =
                s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| Error::NotAPercentage(s.clone()))?;
            let exact = f64::from(pct) * f64::from(total) / 100.0;
            let v = if round_up { exact.ceil() } else { exact.floor() };
            Ok(v as i32)
        }
    }
}

/// (maxSurge, maxUnavailable) for `desired` replicas: surge rounds up, unavailable rounds down,
/// and if both come to zero unavailable becomes 1 (upstream `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), Error> {
    let quarter = default_quarter();
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)?;
    if surge == 0 && unavailable == 0 {
        // Surge might be impossible (quota), so allow one unavailable pod rather than stalling.
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    // Validation rejects malformed values; treat them as zero rather than failing the sync.
    resolve_fenceposts(ru.and_then(|r| r.max_surge.as_ref()), ru.and_then(|r| r.max_unavailable.as_ref()), replicas(d))
        .unwrap_or((0, 1))
}

/// The surge a rolling Deployment may use (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    fenceposts(d).0
}

/// How many pods a rolling Deployment may have unavailable (0 for Recreate or 0 replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

// ---- revisions and annotations --------------------------------------------------------------

fn annotation<'a>(annotations: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    annotations.and_then(|a| a.get(key)).map(String::as_str)
}

/// The ReplicaSet's revision: 0 when unset, an error when unparsable.
pub fn revision(rs: &ReplicaSet) -> Result<i64, std::num::ParseIntError> {
    match annotation(rs.metadata.annotations.as_ref(), REVISION) {
        None => Ok(0),
        Some(v) => v.parse(),
    }
}

/// The highest revision among `rss` (unparsable ones skipped).
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter().filter_map(|rs| revision(rs).ok()).max().unwrap_or(0).max(0)
}

/// The desired-replicas annotation of a ReplicaSet.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs.metadata.annotations.as_ref(), DESIRED_REPLICAS).and_then(|v| v.parse().ok())
}

fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs.metadata.annotations.as_ref(), MAX_REPLICAS).and_then(|v| v.parse().ok())
}

fn skip_copy(key: &str) -> bool {
    matches!(key, LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | DEPRECATED_ROLLBACK_TO)
}

/// Copies the Deployment's annotations (such as kubernetes.io/change-cause) to the ReplicaSet,
/// except the controller's own and kubectl's apply record. True if anything changed.
pub fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Sets desired-replicas and max-replicas. True if anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired.to_string()), (MAX_REPLICAS, max.to_string())] {
        if a.get(key) != Some(&value) {
            a.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Whether desired-replicas or max-replicas differ from the given values.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.as_ref();
    annotation(a, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(a, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// Brings the new ReplicaSet's annotations up to date: the Deployment's annotations, a revision
/// raised to `new_revision` (recording the previous one in revision-history, which is what a
/// rollback to an old ReplicaSet looks like) and, for a ReplicaSet about to be created, the
/// replica annotations (upstream `SetNewReplicaSetAnnotations`). True if anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.to_string(), old);
            } else {
                let mut entries: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < entries.len() {
                    total -= entries[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    entries = entries.split_off(start);
                    entries.push(&old);
                    annotations.insert(REVISION_HISTORY.to_string(), entries.join(","));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// Sets the Deployment's revision annotation. True if it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let a = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if a.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    a.insert(REVISION.to_string(), revision.to_string());
    true
}

// ---- finding the new and old ReplicaSets ------------------------------------------------------

/// Whether two pod templates are semantically equal ignoring the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        t
    };
    semantic::equal(&strip(a), &strip(b))
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or("")
}

/// Oldest first, name as tie-breaker (upstream `ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a).cmp(&created(b)).then_with(|| name(a).cmp(name(b)))
}

/// Lowest revision first, creation order as tie-breaker (upstream `ReplicaSetsByRevision`).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    match (revision(a), revision(b)) {
        (Ok(ra), Ok(rb)) if ra != rb => ra.cmp(&rb),
        _ => by_creation(a, b),
    }
}

/// Largest first; among equals newer first (upstream `ReplicaSetsBySizeNewer`).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(b, a))
}

/// Largest first; among equals older first (upstream `ReplicaSetsBySizeOlder`).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| by_creation(a, b))
}

/// Index of the ReplicaSet whose template matches the Deployment's; the oldest if several do.
pub fn find_new_rs(d: &Deployment, rss: &[ReplicaSet]) -> Option<usize> {
    let template = template(d);
    let mut order: Vec<usize> = (0..rss.len()).collect();
    order.sort_by(|&a, &b| by_creation(&rss[a], &rss[b]));
    order.into_iter().find(|&i| equal_ignore_hash(&rs_template(&rss[i]), &template))
}

/// Indices of every ReplicaSet except the new one.
pub fn find_old_rss(d: &Deployment, rss: &[ReplicaSet]) -> Vec<usize> {
    let new = find_new_rs(d, rss);
    (0..rss.len()).filter(|&i| Some(i) != new).collect()
}

/// The only active ReplicaSet, or the newest when none is active; None when several are active
/// and need proportional scaling (upstream `FindActiveOrLatest`).
pub fn find_active_or_latest(rss: &[ReplicaSet], new: Option<usize>, old: &[usize]) -> Option<usize> {
    if new.is_none() && old.is_empty() {
        return None;
    }
    let mut olds = old.to_vec();
    olds.sort_by(|&a, &b| by_creation(&rss[b], &rss[a]));
    let mut all = olds.clone();
    all.extend(new);
    let active: Vec<usize> = all.into_iter().filter(|&i| rs_replicas(&rss[i]) > 0).collect();
    match active.len() {
        0 => new.or_else(|| olds.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

// ---- replica arithmetic ----------------------------------------------------------------------

/// Sum of spec.replicas.
pub fn replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_replicas).sum()
}

/// Sum of status.replicas.
pub fn actual_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_status_replicas).sum()
}

/// Sum of status.availableReplicas.
pub fn available_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_available).sum()
}

/// How many replicas the new ReplicaSet should have now (upstream `NewRSNewReplicas`): for a
/// rolling update, as many as maxSurge allows without exceeding spec.replicas; for Recreate, all.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> Result<i32, Error> {
    match strategy_type(d) {
        "RollingUpdate" => {
            let desired = replicas(d);
            let surge = max_surge(d);
            let current = replica_count(all.iter().copied());
            let max_total = desired + surge;
            let new_replicas = rs_replicas(new_rs);
            if current >= max_total {
                return Ok(new_replicas);
            }
            let scale_up = (max_total - current).min(desired - new_replicas);
            Ok(new_replicas + scale_up)
        }
        "Recreate" => Ok(replicas(d)),
        other => Err(Error::UnsupportedStrategy(other.to_string())),
    }
}

/// Whether the new ReplicaSet holds every desired replica, all available.
pub fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let desired = replicas(d);
    desired_replicas_annotation(rs) == Some(desired) && rs_replicas(rs) == desired && rs_available(rs) == desired
}

/// The share of `to_add` this ReplicaSet gets when scaling proportionally (upstream `GetProportion`).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
}

fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated =
        max_replicas_annotation(rs).unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let new_size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    new_size.round() as i32 - rs_replicas(rs)
}

/// New sizes for proportional scaling of the active ReplicaSets (`active` indices into `rss`),
/// upstream `scale`'s rolling-update branch. Returns (index, new size, "up"/"down"/"").
pub fn proportional_sizes(d: &Deployment, rss: &[ReplicaSet], active: &[usize]) -> Vec<(usize, i32, &'static str)> {
    let mut order = active.to_vec();
    let total = replica_count(order.iter().map(|&i| &rss[i]));
    let allowed = if replicas(d) > 0 { replicas(d) + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    let operation = match to_add.cmp(&0) {
        Ordering::Greater => {
            order.sort_by(|&a, &b| by_size_newer(&rss[a], &rss[b]));
            "up"
        }
        Ordering::Less => {
            order.sort_by(|&a, &b| by_size_older(&rss[a], &rss[b]));
            "down"
        }
        Ordering::Equal => "",
    };
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::with_capacity(order.len());
    for &i in &order {
        let rs = &rss[i];
        if to_add != 0 {
            let p = proportion(rs, d, to_add, added);
            sizes.push((i, rs_replicas(rs) + p));
            added += p;
        } else {
            sizes.push((i, rs_replicas(rs)));
        }
    }
    // Leftovers (from rounding) go to the largest ReplicaSet.
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes.into_iter().map(|(i, n)| (i, n, operation)).collect()
}

// ---- hashing -------------------------------------------------------------------------------

const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Maps each byte to a character that cannot form words (upstream `rand.SafeEncodeString`).
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()] as char).collect()
}

/// The pod-template-hash: FNV-1a (32 bit) over the template's canonical JSON, then the collision
/// count as upstream `controller.ComputeHash` appends it. Stable for a given template, though not
/// bit-identical to upstream, which hashes Go's in-memory representation.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(&semantic::normalized(template)).unwrap_or_default());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        feed(&bytes);
    }
    safe_encode(&hash.to_string())
}

// ---- conditions and status ---------------------------------------------------------------------

/// A new condition stamped now.
pub fn new_condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of the given type.
pub fn get_condition<'a>(status: Option<&'a DeploymentStatus>, type_: &str) -> Option<&'a DeploymentCondition> {
    status?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Sets a condition unless one with the same status and reason exists; keeps the transition time
/// when only the reason changes (upstream `SetDeploymentCondition`).
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(Some(status), &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status.conditions.get_or_insert_with(Vec::new).push(condition);
}

/// Removes the condition of the given type.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// A ReplicaSet's ReplicaFailure condition as a Deployment condition.
pub fn rs_condition_to_deployment(c: &ReplicaSetCondition) -> DeploymentCondition {
    DeploymentCondition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_update_time: c.last_transition_time.clone(),
        last_transition_time: c.last_transition_time.clone(),
    }
}

fn status_i32(s: Option<&DeploymentStatus>, f: impl Fn(&DeploymentStatus) -> Option<i32>) -> i32 {
    s.and_then(f).unwrap_or(0)
}

/// The Deployment status computed from its ReplicaSets, carrying over conditions and setting
/// Available (upstream `calculateStatus`).
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available = available_replica_count(all.iter().copied());
    let total = replica_count(all.iter().copied());
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all.iter().copied())),
        updated_replicas: Some(new_rs.map(rs_status_replicas).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        conditions: d.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let condition = if available >= replicas(d) - max_unavailable(d) {
        new_condition(
            reason::AVAILABLE,
            "True",
            reason::MIN_AVAILABLE,
            "Deployment has minimum availability.".to_string(),
            now,
        )
    } else {
        new_condition(
            reason::AVAILABLE,
            "False",
            reason::MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.".to_string(),
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

/// Every desired replica is updated and available, no old ones remain, and the status describes
/// the current generation.
pub fn deployment_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let desired = replicas(d);
    status_i32(status, |s| s.updated_replicas) == desired
        && status_i32(status, |s| s.replicas) == desired
        && status_i32(status, |s| s.available_replicas) == desired
        && status.and_then(|s| s.observed_generation).unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status: more updated, ready or
/// available pods, or fewer old ones.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.as_ref();
    let old_old = status_i32(old, |s| s.replicas) - status_i32(old, |s| s.updated_replicas);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > status_i32(old, |s| s.updated_replicas)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > status_i32(old, |s| s.ready_replicas)
        || new.available_replicas.unwrap_or(0) > status_i32(old, |s| s.available_replicas)
}

/// Whether the last progress is older than progressDeadlineSeconds (upstream `DeploymentTimedOut`).
pub fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(Some(new), reason::PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => match condition.last_update_time.as_ref() {
            Some(from) => time::add_seconds(from.0, i64::from(deadline)) < now,
            None => false,
        },
    }
}

/// The status a rollout step should leave: counters, Available, Progressing (complete, progressing
/// or timed out) and ReplicaFailure copied from the ReplicaSets (upstream `syncRolloutStatus`).
pub fn rollout_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new_rs, d, now);
    let has_deadline = progress_deadline(d).is_some();
    if !has_deadline {
        remove_condition(&mut status, reason::PROGRESSING);
    }
    let current = get_condition(d.status.as_ref(), reason::PROGRESSING);
    let is_complete = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
    if has_deadline && !is_complete {
        let dname = d.metadata.name.as_deref().unwrap_or("");
        let subject = |verb: &str| match new_rs {
            Some(rs) => format!("ReplicaSet \"{}\" {verb}", name(rs)),
            None => format!("Deployment \"{dname}\" {verb}"),
        };
        if deployment_complete(d, Some(&status)) {
            let c = new_condition(
                reason::PROGRESSING,
                "True",
                reason::NEW_RS_AVAILABLE,
                subject("has successfully progressed."),
                now,
            );
            set_condition(&mut status, c);
        } else if deployment_progressing(d, &status) {
            let mut c = new_condition(
                reason::PROGRESSING,
                "True",
                reason::REPLICA_SET_UPDATED,
                subject("is progressing."),
                now,
            );
            // Same reason but a fresh lastUpdateTime: progress resets the deadline.
            if let Some(current) = current {
                if current.status == "True" {
                    c.last_transition_time = current.last_transition_time.clone();
                }
                remove_condition(&mut status, reason::PROGRESSING);
            }
            set_condition(&mut status, c);
        } else if deployment_timed_out(d, &status, now) {
            let c = new_condition(
                reason::PROGRESSING,
                "False",
                reason::TIMED_OUT,
                subject("has timed out progressing."),
                now,
            );
            set_condition(&mut status, c);
        }
    }
    match replica_failure(all, new_rs) {
        Some(c) => set_condition(&mut status, c),
        None => remove_condition(&mut status, reason::REPLICA_FAILURE),
    }
    status
}

fn replica_failure(all: &[&ReplicaSet], new_rs: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure_of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == reason::REPLICA_FAILURE))
            .map(rs_condition_to_deployment)
    };
    new_rs.and_then(failure_of).or_else(|| all.iter().find_map(|rs| failure_of(rs)))
}

/// When an unfinished rollout should be checked against its deadline again, if ever
/// (upstream `requeueStuckDeployment`).
pub fn progress_check_after(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<std::time::Duration> {
    let deadline = progress_deadline(d)?;
    let current = get_condition(d.status.as_ref(), reason::PROGRESSING)?;
    if deployment_complete(d, Some(new)) || current.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let from = current.last_update_time.as_ref()?.0;
    let after = time::until(now, time::add_seconds(from, i64::from(deadline)));
    // A second of slack so the check lands after the deadline, not just before it.
    Some(after + std::time::Duration::from_secs(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "util_tests.rs"]
pub(crate) mod tests;
