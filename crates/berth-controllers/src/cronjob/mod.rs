//! The CronJob controller: creates Jobs on a cron schedule (upstream `pkg/controller/cronjob`).
//!
//! Each sync tracks the CronJob's Jobs in `status.active`, records `lastSuccessfulTime`, decides
//! whether a scheduled time is due ([`logic::decide`]) under the concurrency policy and starting
//! deadline, creates the Job named after the scheduled minute, prunes finished Jobs beyond the
//! history limits and asks to be called again at the next scheduled time.

pub mod logic;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::tz::TimeZone;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::job::logic as job_logic;
use crate::runtime::{self, Outcome};
use crate::util::events::{EventType, Recorder};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::semantic;
use crate::util::time;
use logic::{Decision, State};
use schedule::Schedule;

/// Errors of one CronJob sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

// Upstream requeues 100 ms after the next scheduled time so the sync sees it as due.
const NEXT_SCHEDULE_SLACK: Duration = Duration::from_millis(100);

/// Shared state of the CronJob controller.
pub struct Context {
    client: Client,
    jobs: Store<Job>,
    recorder: Recorder,
}

/// Registers the controller's watches on the informers and returns its run loop.
pub fn controller(
    client: Client,
    cron_job_informer: &mut Informer<CronJob>,
    job_informer: &mut Informer<Job>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<CronJob>();
    let store = cron_job_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs: job_informer.store(),
        recorder: Recorder::new(client, "cronjob-controller"),
    });
    {
        let queue = queue.clone();
        cron_job_informer.on_event(move |event| {
            if let watcher::Event::Apply(cj) | watcher::Event::InitApply(cj) = event {
                queue.enqueue_object(cj);
            }
        });
    }
    job_informer.on_event(move |event| {
        if let Some(job) = crate::util::informer::event_object(event) {
            queue.enqueue_controller_of(&job.metadata);
        }
    });
    let jobs = ctx.jobs.clone();
    let ready = async move {
        let _ = jobs.wait_until_ready().await;
    };
    runtime::run("cronjob", ready, store, receiver, ctx, reconcile)
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn finished_condition(job: &Job) -> Option<&'static str> {
    if job_logic::true_condition(job.status.as_ref(), "Complete").is_some() {
        Some("Complete")
    } else if job_logic::true_condition(job.status.as_ref(), "Failed").is_some() {
        Some("Failed")
    } else {
        None
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    let ns = meta::namespace(&cj.metadata).to_string();
    let key = meta::key(&cj.metadata);
    let uid = meta::uid(&cj.metadata).to_string();
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<Arc<Job>> =
        ctx.jobs.state_filter(|j| meta::namespace(&j.metadata) == ns && meta::is_controlled_by(&j.metadata, &uid));
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active = status.active.take().unwrap_or_default();

    // Bookkeeping: finished Jobs leave the active list, unfinished ones of ours join it.
    for job in &owned {
        let in_active = active.iter().any(|r| r.uid == job.metadata.uid);
        match finished_condition(job) {
            Some(cond) => {
                if in_active {
                    active.retain(|r| r.uid != job.metadata.uid);
                    let name = meta::name(&job.metadata);
                    let message = format!("Saw completed job: {name}, condition: {cond}");
                    ctx.recorder.record(cj.as_ref(), EventType::Normal, "SawCompletedJob", message);
                }
                if cond == "Complete"
                    && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
                    && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
            None if !in_active => active.push(job_ref(job)),
            None => {}
        }
    }
    // Active entries the cache does not show: ask the API before dropping them (just created?).
    let mut kept = Vec::new();
    for r in active {
        let cached = owned.iter().any(|j| j.metadata.uid == r.uid);
        let name = r.name.clone().unwrap_or_default();
        if cached {
            kept.push(r);
            continue;
        }
        match job_api.get_opt(&name).await {
            Ok(Some(j)) if j.metadata.uid == r.uid && finished_condition(&j).is_none() => kept.push(r),
            Ok(_) => {
                let message = format!("Active job went missing: {name}");
                ctx.recorder.record(cj.as_ref(), EventType::Warning, "MissingJob", message);
            }
            Err(e) => return Err(api_err(format!("checking job {ns}/{name}"))(e)),
        }
    }
    let mut active = kept;

    let mut outcome = Outcome::done();
    let spec = cj.spec.clone().unwrap_or_default();
    if cj.metadata.deletion_timestamp.is_none() && !spec.suspend.unwrap_or(false) {
        let tz = match spec.time_zone.as_deref() {
            None => Some(TimeZone::system()),
            Some(name) => TimeZone::get(name).ok(),
        };
        match (tz, Schedule::parse(&spec.schedule)) {
            (None, _) => {
                let message = format!("invalid timeZone: {:?}", spec.time_zone.as_deref().unwrap_or(""));
                ctx.recorder.record(cj.as_ref(), EventType::Warning, "UnknownTimeZone", message);
            }
            (_, Err(e)) => {
                let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                ctx.recorder.record(cj.as_ref(), EventType::Warning, "UnparseableSchedule", message);
            }
            (Some(tz), Ok(schedule)) => {
                let now = time::now();
                run_schedule(&ctx, &cj, &job_api, &schedule, &tz, &mut status, &mut active, now).await?;
                if let Some(next) = schedule.next(now, &tz) {
                    outcome = Outcome::after(time::until(now, next) + NEXT_SCHEDULE_SLACK);
                }
            }
        }
    }

    prune_history(&ctx, &cj, &job_api, &owned, &active).await;

    status.active = (!active.is_empty()).then_some(active);
    if !semantic::status_equal(&Some(&status), &cj.status.as_ref()) {
        let mut updated = (*cj).clone();
        updated.status = Some(status);
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        match api.replace_status(meta::name(&cj.metadata), &PostParams::default(), &updated).await {
            Ok(_) => {}
            Err(e) if meta::is_not_found(&e) => return Ok(Outcome::done()),
            Err(e) => return Err(api_err(format!("updating status of cron job {key}"))(e)),
        }
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn run_schedule(
    ctx: &Context,
    cj: &CronJob,
    job_api: &Api<Job>,
    schedule: &Schedule,
    tz: &TimeZone,
    status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    active: &mut Vec<ObjectReference>,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<(), Error> {
    let spec = cj.spec.clone().unwrap_or_default();
    let active_names: Vec<String> = active.iter().filter_map(|r| r.name.clone()).collect();
    let state = State {
        name: meta::name(&cj.metadata),
        created: cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now),
        last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
        starting_deadline_seconds: spec.starting_deadline_seconds,
        concurrency_policy: spec.concurrency_policy.as_deref().unwrap_or("Allow"),
        active: &active_names,
    };
    let (decision, missed) = logic::decide(schedule, tz, &state, now);
    if missed > logic::MAX_MISSED_REPORTED {
        let message = format!(
            "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        );
        ctx.recorder.record(cj, EventType::Warning, "TooManyMissedTimes", message);
    }
    let (scheduled, replace) = match decision {
        Decision::Wait | Decision::AlreadyStarted(_) => return Ok(()),
        Decision::TooLate(t) => {
            let message = format!("Missed scheduled time to start a job: {}", logic::rfc3339_in(t, tz));
            ctx.recorder.record(cj, EventType::Warning, "MissSchedule", message);
            return Ok(());
        }
        Decision::Forbidden(_) => {
            let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
            ctx.recorder.record(cj, EventType::Normal, "JobAlreadyActive", message.to_string());
            return Ok(());
        }
        Decision::Run { scheduled, replace } => (scheduled, replace),
    };
    if replace {
        for r in std::mem::take(active) {
            let name = r.name.clone().unwrap_or_default();
            let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
            match job_api.delete(&name, &params).await {
                Ok(_) => ctx.recorder.record(cj, EventType::Normal, "SuccessfulDelete", format!("Deleted job {name}")),
                Err(e) if meta::is_not_found(&e) => {}
                Err(e) => {
                    active.push(r);
                    let message = format!("Error deleting job {name}: {}", meta::error_message(&e));
                    ctx.recorder.record(cj, EventType::Warning, "FailedDelete", message);
                    return Err(api_err(format!("deleting job {name} to replace it"))(e));
                }
            }
        }
    }
    let template = logic::job_from_template(cj, scheduled, tz);
    let name = template.metadata.name.clone().unwrap_or_default();
    match job_api.create(&PostParams::default(), &template).await {
        Ok(job) => {
            ctx.recorder.record(cj, EventType::Normal, "SuccessfulCreate", format!("Created job {name}"));
            active.push(job_ref(&job));
        }
        // Created by an earlier sync whose status write was lost: it is this run's Job.
        Err(e) if meta::is_already_exists(&e) => {
            if let Ok(Some(job)) = job_api.get_opt(&name).await
                && meta::is_controlled_by(&job.metadata, meta::uid(&cj.metadata))
                && finished_condition(&job).is_none()
                && !active.iter().any(|r| r.uid == job.metadata.uid)
            {
                active.push(job_ref(&job));
            }
        }
        Err(e) => {
            let message = format!("Error creating job: {}", meta::error_message(&e));
            ctx.recorder.record(cj, EventType::Warning, "FailedCreate", message);
            return Err(api_err(format!("creating job {name}"))(e));
        }
    }
    status.last_schedule_time = Some(Time(scheduled));
    Ok(())
}

/// Deletes finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit.
async fn prune_history(
    ctx: &Context,
    cj: &CronJob,
    job_api: &Api<Job>,
    owned: &[Arc<Job>],
    active: &[ObjectReference],
) {
    let spec = cj.spec.as_ref();
    let finished: Vec<(&Job, bool)> = owned
        .iter()
        .filter(|j| !active.iter().any(|r| r.uid == j.metadata.uid) && j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| finished_condition(j).map(|c| (j.as_ref(), c == "Complete")))
        .collect();
    let victims = logic::jobs_to_prune(
        &finished,
        spec.and_then(|s| s.successful_jobs_history_limit),
        spec.and_then(|s| s.failed_jobs_history_limit),
    );
    for job in victims {
        let name = meta::name(&job.metadata);
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match job_api.delete(name, &params).await {
            Ok(_) => ctx.recorder.record(cj, EventType::Normal, "SuccessfulDelete", format!("Deleted job {name}")),
            Err(e) if meta::is_not_found(&e) => {}
            Err(e) => {
                let message = format!("Error deleting job {name}: {}", meta::error_message(&e));
                ctx.recorder.record(cj, EventType::Warning, "FailedDelete", message);
            }
        }
    }
}
