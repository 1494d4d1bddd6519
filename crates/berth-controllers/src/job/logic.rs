//! The Job controller's decisions as pure functions of the Job, its pods and the time (upstream
//! `pkg/controller/job`): how many pods to run, when a Job has succeeded or failed, the
//! exponential back-off between failed pods, and the status to report.
//!
//! Pods are counted as the pre-finalizer ("legacy") tracking did: from the terminated pods that
//! still exist, so `uncountedTerminatedPods` is never used.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::util::meta;
use crate::util::pods;
use crate::util::time;

/// Annotation (and label) carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Label naming the Job on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Label carrying the Job's uid on its pods.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

/// First delay after a failed pod; it doubles with each further failure in a row.
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay between failed pods.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// The Job's spec values with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Pods to run at once.
    pub parallelism: i32,
    /// Successful pods needed; `None` means "until one succeeds and the rest finish".
    pub completions: Option<i32>,
    /// Failed pods (or container restarts) tolerated.
    pub backoff_limit: i32,
    /// How long the Job may run.
    pub active_deadline_seconds: Option<i64>,
    /// Whether it is suspended.
    pub suspend: bool,
    /// Indexed completion mode.
    pub indexed: bool,
    /// Whether the pods' restartPolicy is Never (otherwise OnFailure: restarts count as failures).
    pub restart_never: bool,
}

impl Params {
    /// Reads the spec, applying the defaults the API server would.
    pub fn of(job: &Job) -> Params {
        let spec = job.spec.as_ref();
        let restart = spec.and_then(|s| s.template.spec.as_ref()).and_then(|p| p.restart_policy.as_deref());
        Params {
            parallelism: spec.and_then(|s| s.parallelism).unwrap_or(1).max(0),
            completions: spec.and_then(|s| s.completions),
            backoff_limit: spec.and_then(|s| s.backoff_limit).unwrap_or(6),
            active_deadline_seconds: spec.and_then(|s| s.active_deadline_seconds),
            suspend: spec.and_then(|s| s.suspend).unwrap_or(false),
            indexed: spec.and_then(|s| s.completion_mode.as_deref()) == Some("Indexed"),
            restart_never: restart.is_none_or(|r| r == "Never"),
        }
    }
}

/// The condition of `type_` with status True, if any.
pub fn true_condition<'a>(status: Option<&'a JobStatus>, type_: &str) -> Option<&'a JobCondition> {
    status?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has a Complete or Failed condition (upstream `IsJobFinished`).
pub fn is_finished(job: &Job) -> bool {
    finished_at(job).is_some() || true_condition(job.status.as_ref(), "Failed").is_some()
}

/// When the Job finished: its completionTime, else the finishing condition's transition time.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref();
    let cond = true_condition(status, "Complete").or_else(|| true_condition(status, "Failed"))?;
    Some(
        status
            .and_then(|s| s.completion_time.as_ref())
            .or(cond.last_transition_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(time::now),
    )
}

/// When a finished Job with `ttlSecondsAfterFinished` should be deleted.
pub fn ttl_expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    Some(time::add_seconds(finished_at(job)?, i64::from(ttl)))
}

/// The completion index of an Indexed Job's pod.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX_ANNOTATION)?.parse().ok()
}

/// When a terminated pod finished (upstream `getFinishedTime`): the latest container finish,
/// else the Ready condition turning False, else its deletion or creation time.
pub fn pod_finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let from_containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    from_containers
        .or_else(|| {
            pods::ready_condition(pod)
                .filter(|c| c.status == "False")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
        })
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The Job's pods sorted by state.
#[derive(Debug, Default)]
pub struct Counts<'a> {
    /// Running or pending pods not being deleted.
    pub active: Vec<&'a Pod>,
    /// Succeeded pods.
    pub succeeded: Vec<&'a Pod>,
    /// Failed pods.
    pub failed: Vec<&'a Pod>,
}

impl<'a> Counts<'a> {
    /// Sorts `owned` (the Job's pods).
    pub fn of(owned: &[&'a Pod]) -> Counts<'a> {
        let mut c = Counts::default();
        for pod in owned {
            match pods::phase(pod) {
                "Succeeded" => c.succeeded.push(pod),
                "Failed" => c.failed.push(pod),
                _ if pod.metadata.deletion_timestamp.is_none() => c.active.push(pod),
                _ => {}
            }
        }
        c
    }

    /// Failures counted against backoffLimit: failed pods, plus container restarts of active pods
    /// when the pods restart in place (restartPolicy OnFailure).
    pub fn failures(&self, params: &Params) -> i64 {
        let mut n = self.failed.len() as i64;
        if !params.restart_never {
            for pod in &self.active {
                let restarts: i32 = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|c| c.restart_count)
                    .sum();
                n += i64::from(restarts);
            }
        }
        n
    }

    /// Distinct succeeded completion indexes below `completions` (Indexed Jobs).
    pub fn succeeded_indexes(&self, completions: i32) -> BTreeSet<i32> {
        self.succeeded.iter().filter_map(|p| pod_index(p)).filter(|i| (0..completions).contains(i)).collect()
    }

    /// How many completions are done: distinct indexes for Indexed Jobs, succeeded pods otherwise.
    pub fn completed(&self, params: &Params) -> i32 {
        match (params.indexed, params.completions) {
            (true, Some(c)) => i32::try_from(self.succeeded_indexes(c).len()).unwrap_or(i32::MAX),
            _ => i32::try_from(self.succeeded.len()).unwrap_or(i32::MAX),
        }
    }
}

/// Why a Job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// More failures than backoffLimit.
    BackoffLimitExceeded,
    /// Ran longer than activeDeadlineSeconds.
    DeadlineExceeded,
}

impl FailureReason {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            FailureReason::BackoffLimitExceeded => "BackoffLimitExceeded",
            FailureReason::DeadlineExceeded => "DeadlineExceeded",
        }
    }

    /// The condition and event message upstream writes.
    pub fn message(self) -> &'static str {
        match self {
            FailureReason::BackoffLimitExceeded => "Job has reached the specified backoff limit",
            FailureReason::DeadlineExceeded => "Job was active longer than specified deadline",
        }
    }
}

/// Whether the Job has failed, checked in upstream's order (backoff limit, then deadline).
pub fn failure(
    params: &Params,
    counts: &Counts<'_>,
    start: Option<Timestamp>,
    now: Timestamp,
) -> Option<FailureReason> {
    if counts.failures(params) > i64::from(params.backoff_limit) {
        return Some(FailureReason::BackoffLimitExceeded);
    }
    if let (Some(deadline), Some(start), false) = (params.active_deadline_seconds, start, params.suspend)
        && time::add_seconds(start, deadline) <= now
    {
        return Some(FailureReason::DeadlineExceeded);
    }
    None
}

/// Whether the Job's success criteria are met (upstream: completions reached, or with no
/// completions set, some pod succeeded and none is still running).
pub fn succeeded(params: &Params, counts: &Counts<'_>) -> bool {
    match params.completions {
        Some(c) => counts.completed(params) >= c,
        None => !counts.succeeded.is_empty() && counts.active.is_empty(),
    }
}

/// How many pods should be running now (upstream `wantActive` in `manageJob`).
pub fn want_active(params: &Params, counts: &Counts<'_>, active: i32) -> i32 {
    if params.suspend {
        return 0;
    }
    match params.completions {
        // Work-queue style: once one pod succeeds, let the others finish but start none.
        None if !counts.succeeded.is_empty() => active,
        None => params.parallelism,
        Some(c) => (c - counts.completed(params)).clamp(0, params.parallelism),
    }
}

/// How long to wait before creating pods again after failures (upstream's pod failure back-off:
/// 10 s doubling per failure since the last success, capped at six minutes), or zero.
pub fn backoff_remaining(counts: &Counts<'_>, now: Timestamp) -> Duration {
    let last_success = counts.succeeded.iter().filter_map(|p| pod_finished_at(p)).max();
    let failures: Vec<Timestamp> = counts
        .failed
        .iter()
        .filter_map(|p| pod_finished_at(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last_failure) = failures.iter().max().copied() else {
        return Duration::ZERO;
    };
    let exponent = u32::try_from(failures.len().saturating_sub(1)).unwrap_or(u32::MAX).min(16);
    let delay = POD_FAILURE_BACKOFF.saturating_mul(1u32 << exponent).min(MAX_POD_FAILURE_BACKOFF);
    let ready_at = time::add_seconds(last_failure, i64::try_from(delay.as_secs()).unwrap_or(i64::MAX));
    time::until(now, ready_at)
}

/// Completion indexes to give new pods of an Indexed Job: the lowest ones neither succeeded nor
/// held by an active pod.
pub fn missing_indexes(counts: &Counts<'_>, completions: i32, count: usize) -> Vec<i32> {
    let succeeded = counts.succeeded_indexes(completions);
    let running: BTreeSet<i32> = counts.active.iter().filter_map(|p| pod_index(p)).collect();
    (0..completions).filter(|i| !succeeded.contains(i) && !running.contains(i)).take(count).collect()
}

/// `0-2,4,6-7` notation of a set of indexes (status.completedIndexes).
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last { first.to_string() } else { format!("{first}-{last}") });
    }
    parts.join(",")
}

/// The pod the Job creates from its template, with the Job's labels, a controller reference and,
/// for Indexed Jobs, the completion index (annotation, label, hostname and JOB_COMPLETION_INDEX).
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let name = meta::name(&job.metadata);
    let uid = meta::uid(&job.metadata);
    let mut labels = tmeta.labels.unwrap_or_default();
    for (k, v) in [
        (JOB_NAME_LABEL, name),
        (LEGACY_JOB_NAME_LABEL, name),
        (CONTROLLER_UID_LABEL, uid),
        (LEGACY_CONTROLLER_UID_LABEL, uid),
    ] {
        labels.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut spec = template.spec;
    let prefix = match index {
        Some(i) => {
            annotations.insert(COMPLETION_INDEX_ANNOTATION.to_string(), i.to_string());
            labels.insert(COMPLETION_INDEX_ANNOTATION.to_string(), i.to_string());
            if let Some(spec) = spec.as_mut() {
                spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
                for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                    let env = c.env.get_or_insert_with(Vec::new);
                    if !env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                        env.push(EnvVar {
                            name: "JOB_COMPLETION_INDEX".into(),
                            value: Some(i.to_string()),
                            value_from: None,
                        });
                    }
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![meta::controller_ref(job)]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// Sets condition `type_` to True with `reason`/`message`, keeping the transition time when it was
/// already True with the same reason (upstream `ensureJobConditionStatus`).
pub fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
            return;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// Counters of the status computed from the pods.
pub fn counted_status(job: &Job, params: &Params, counts: &Counts<'_>, active: i32) -> JobStatus {
    let mut status = job.status.clone().unwrap_or_default();
    status.active = (active > 0).then_some(active);
    let ready = counts.active.iter().filter(|p| pods::is_ready(p)).count();
    status.ready = Some(i32::try_from(ready).unwrap_or(i32::MAX));
    let succeeded = i32::try_from(counts.succeeded.len()).unwrap_or(i32::MAX);
    let failed = i32::try_from(counts.failed.len()).unwrap_or(i32::MAX);
    status.succeeded = (succeeded > 0).then_some(succeeded);
    status.failed = (failed > 0).then_some(failed);
    if let (true, Some(c)) = (params.indexed, params.completions) {
        status.completed_indexes = Some(format_indexes(&counts.succeeded_indexes(c)));
    }
    status
}

/// Labels of the Job's pods keyed for tests and logs.
pub fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(phase: &str, finished: Option<&str>, index: Option<i32>) -> Pod {
        let mut p =
            Pod { status: Some(PodStatus { phase: Some(phase.into()), ..Default::default() }), ..Default::default() };
        p.metadata.creation_timestamp = finished.map(|f| Time(f.parse().unwrap()));
        if let Some(i) = index {
            p.metadata.annotations = Some([(COMPLETION_INDEX_ANNOTATION.to_string(), i.to_string())].into());
        }
        p
    }

    fn params(completions: Option<i32>, parallelism: i32) -> Params {
        Params {
            parallelism,
            completions,
            backoff_limit: 2,
            active_deadline_seconds: None,
            suspend: false,
            indexed: false,
            restart_never: true,
        }
    }

    #[test]
    fn want_active_respects_parallelism_and_remaining_completions() {
        let (s1, s2, r) = (pod("Succeeded", None, None), pod("Succeeded", None, None), pod("Running", None, None));
        let owned = [&s1, &s2, &r];
        let counts = Counts::of(&owned);
        assert_eq!(want_active(&params(Some(3), 2), &counts, 1), 1);
        assert_eq!(want_active(&params(Some(10), 2), &counts, 1), 2);
        assert_eq!(want_active(&params(None, 2), &counts, 1), 1, "no completions: start no more after a success");
        assert!(succeeded(&params(Some(2), 2), &counts));
        assert!(!succeeded(&params(None, 2), &counts), "no completions: wait for running pods");
    }

    #[test]
    fn failures_beyond_backoff_limit_fail_the_job_and_deadline_too() {
        let (f1, f2, f3) = (pod("Failed", None, None), pod("Failed", None, None), pod("Failed", None, None));
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let p = params(Some(1), 1);
        assert_eq!(failure(&p, &Counts::of(&[&f1, &f2]), None, now), None);
        assert_eq!(failure(&p, &Counts::of(&[&f1, &f2, &f3]), None, now), Some(FailureReason::BackoffLimitExceeded));
        let p = Params { active_deadline_seconds: Some(60), ..p };
        let start = "2024-01-01T00:08:00Z".parse().unwrap();
        assert_eq!(failure(&p, &Counts::of(&[]), Some(start), now), Some(FailureReason::DeadlineExceeded));
    }

    #[test]
    fn backoff_doubles_per_failure_since_the_last_success() {
        let now: Timestamp = "2024-01-01T00:00:15Z".parse().unwrap();
        let f1 = pod("Failed", Some("2024-01-01T00:00:00Z"), None);
        let f2 = pod("Failed", Some("2024-01-01T00:00:10Z"), None);
        // One failure at :00: 10 s back-off, over by :15.
        assert_eq!(backoff_remaining(&Counts::of(&[&f1]), now), Duration::ZERO);
        // Two failures, the last at :10: 20 s from :10, 15 s left.
        assert_eq!(backoff_remaining(&Counts::of(&[&f1, &f2]), now), Duration::from_secs(15));
        // A later success resets it.
        let s = pod("Succeeded", Some("2024-01-01T00:00:12Z"), None);
        assert_eq!(backoff_remaining(&Counts::of(&[&f1, &f2, &s]), now), Duration::ZERO);
    }

    #[test]
    fn indexed_jobs_fill_missing_indexes_and_format_completed_ones() {
        let (s0, s2, r1) =
            (pod("Succeeded", None, Some(0)), pod("Succeeded", None, Some(2)), pod("Running", None, Some(1)));
        let counts = Counts::of(&[&s0, &s2, &r1]);
        assert_eq!(missing_indexes(&counts, 6, 10), vec![3, 4, 5]);
        assert_eq!(format_indexes(&[0, 1, 2, 4, 6, 7].into()), "0-2,4,6-7");
        let p = Params { indexed: true, ..params(Some(3), 3) };
        assert_eq!(counts.completed(&p), 2);
        let mut job = Job::default();
        job.metadata.name = Some("pi".into());
        job.spec = Some(Default::default());
        job.spec.as_mut().unwrap().template.spec =
            Some(k8s_openapi::api::core::v1::PodSpec { containers: vec![Default::default()], ..Default::default() });
        let pod = pod_from_template(&job, Some(4));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-4-"));
        assert_eq!(pod_index(&pod), Some(4));
        assert_eq!(pod_labels(&pod).get(JOB_NAME_LABEL).map(String::as_str), Some("pi"));
        let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX" && e.value.as_deref() == Some("4")));
    }
}
