//! The Job controller: runs a Job's pods to completion (upstream `pkg/controller/job`).
//!
//! It creates pods from the template up to `parallelism` until `completions` pods have succeeded
//! (Indexed Jobs: one success per index), waits an exponential back-off after failed pods, fails
//! the Job past `backoffLimit` or `activeDeadlineSeconds`, honours `suspend`, and deletes finished
//! Jobs after `ttlSecondsAfterFinished` (upstream's separate TTL-after-finished controller).

pub mod logic;

use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::expectations::Expectations;
use crate::runtime::{self, Outcome};
use crate::util::events::{EventType, Recorder};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::pods;
use crate::util::semantic;
use crate::util::time;
use logic::{Counts, Params};

/// Errors of one Job sync.
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
    /// Some pods could not be created or deleted (events say why).
    #[error("{0}")]
    ManagePods(String),
}

/// Shared state of the Job controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Registers the controller's watches on the informers and returns its run loop.
pub fn controller(
    client: Client,
    job_informer: &mut Informer<Job>,
    pod_informer: &mut Informer<Pod>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<Job>();
    let job_store = job_informer.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pod_informer.store(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client, "job-controller"),
    });
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        job_informer.on_event(move |event| match event {
            watcher::Event::Apply(job) | watcher::Event::InitApply(job) => queue.enqueue_object(job),
            watcher::Event::Delete(job) => ctx.expectations.forget(&meta::key(&job.metadata)),
            watcher::Event::Init | watcher::Event::InitDone => {}
        });
    }
    {
        let queue = queue.clone();
        let ctx = ctx.clone();
        let job_store = job_store.clone();
        pod_informer.on_event(move |event| {
            if let Some(pod) = ctx.expectations.observe_event(event) {
                queue.enqueue_controller_of(&pod.metadata);
            } else if let watcher::Event::InitDone = event {
                // After a relist, deletions may have been missed: look at everything again.
                queue.enqueue_all(&job_store, None);
            }
        });
    }
    let pods = ctx.pods.clone();
    let ready = async move {
        let _ = pods.wait_until_ready().await;
    };
    runtime::run("job", ready, job_store, receiver, ctx, reconcile)
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Outcome::done());
    }
    let now = time::now();
    if logic::is_finished(&job) {
        return expire_finished(&ctx, &job, now).await;
    }
    let key = meta::key(&job.metadata);
    let ns = meta::namespace(&job.metadata).to_string();
    let uid = meta::uid(&job.metadata).to_string();
    let owned: Vec<Arc<Pod>> =
        ctx.pods.state_filter(|p| meta::namespace(&p.metadata) == ns && meta::is_controlled_by(&p.metadata, &uid));
    let pending = ctx.expectations.pending(&key, owned.iter().map(|p| meta::uid(&p.metadata)));
    let owned_refs: Vec<&Pod> =
        owned.iter().map(|p| p.as_ref()).filter(|p| !pending.deletes.contains(meta::uid(&p.metadata))).collect();
    let counts = Counts::of(&owned_refs);
    let params = Params::of(&job);

    let mut status = job.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.take().unwrap_or_default();
    let was_suspended = logic::true_condition(job.status.as_ref(), "Suspended").is_some();
    if !params.suspend && (status.start_time.is_none() || was_suspended) {
        // The active deadline counts from the (latest) start, as upstream resets it on resume.
        status.start_time = Some(Time(now));
    }
    let start = status.start_time.as_ref().map(|t| t.0);
    let pending_creates = i32::try_from(pending.creates).unwrap_or(i32::MAX);
    let mut active = i32::try_from(counts.active.len()).unwrap_or(i32::MAX).saturating_add(pending_creates);
    let mut outcome = Outcome::done();
    let mut manage_error = None;

    if let Some(failure) = logic::failure(&params, &counts, start, now) {
        manage_error = delete_pods(&ctx, &job, &key, &counts.active).await;
        active = 0;
        for type_ in ["FailureTarget", "Failed"] {
            logic::set_condition(&mut conditions, type_, "True", failure.reason(), failure.message(), now);
        }
        ctx.recorder.record(job.as_ref(), EventType::Warning, failure.reason(), failure.message().to_string());
    } else if logic::succeeded(&params, &counts) {
        // Extra pods still running once the completions are reached are no longer needed.
        manage_error = delete_pods(&ctx, &job, &key, &counts.active).await;
        active = 0;
        let message = "Reached expected number of succeeded pods";
        for type_ in ["SuccessCriteriaMet", "Complete"] {
            logic::set_condition(&mut conditions, type_, "True", "CompletionsReached", message, now);
        }
        status.completion_time = Some(Time(now));
        ctx.recorder.record(job.as_ref(), EventType::Normal, "Completed", "Job completed".into());
    } else {
        if params.suspend && !was_suspended {
            logic::set_condition(&mut conditions, "Suspended", "True", "JobSuspended", "Job suspended", now);
            ctx.recorder.record(job.as_ref(), EventType::Normal, "Suspended", "Job suspended".into());
        } else if !params.suspend && was_suspended {
            logic::set_condition(&mut conditions, "Suspended", "False", "JobResumed", "Job resumed", now);
            ctx.recorder.record(job.as_ref(), EventType::Normal, "Resumed", "Job resumed".into());
        }
        let want = logic::want_active(&params, &counts, active);
        if active > want && pending_creates == 0 {
            let excess = usize::try_from(active - want).unwrap_or(0);
            let victims = pods::pods_to_delete(&counts.active, &[], excess);
            manage_error = delete_pods(&ctx, &job, &key, &victims).await;
            active -= i32::try_from(victims.len()).unwrap_or(0);
        } else if active < want {
            let wait = logic::backoff_remaining(&counts, now);
            if wait.is_zero() {
                let (created, err) = create_pods(&ctx, &job, &key, &params, &counts, want - active).await;
                active += created;
                manage_error = err;
            } else {
                outcome = outcome.merge(Outcome::after(wait));
            }
        }
        if let (Some(deadline), Some(start), false) = (params.active_deadline_seconds, start, params.suspend) {
            outcome = outcome.merge(Outcome::after(time::until(now, time::add_seconds(start, deadline))));
        }
    }

    let mut new_status = logic::counted_status(&job, &params, &counts, active);
    new_status.start_time = status.start_time.clone();
    new_status.completion_time = status.completion_time.clone();
    new_status.conditions = (!conditions.is_empty()).then_some(conditions);
    if !semantic::status_equal(&Some(&new_status), &job.status.as_ref()) {
        let mut updated = (*job).clone();
        updated.status = Some(new_status);
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match api.replace_status(meta::name(&job.metadata), &PostParams::default(), &updated).await {
            Ok(written) if logic::is_finished(&written) => outcome = outcome.merge(ttl_outcome(&written, now)),
            Ok(_) => {}
            Err(e) if meta::is_not_found(&e) => return Ok(Outcome::done()),
            Err(e) => return Err(api_err(format!("updating status of job {key}"))(e)),
        }
    }
    if let Some(message) = manage_error {
        return Err(Error::ManagePods(message));
    }
    Ok(outcome)
}

fn ttl_outcome(job: &Job, now: k8s_openapi::jiff::Timestamp) -> Outcome {
    match logic::ttl_expires_at(job) {
        Some(at) => Outcome::after(time::until(now, at)),
        None => Outcome::done(),
    }
}

/// Deletes a finished Job whose `ttlSecondsAfterFinished` has passed (with its pods, in the
/// foreground, as upstream's TTL controller does), or asks to be called back when it will have.
async fn expire_finished(ctx: &Context, job: &Job, now: k8s_openapi::jiff::Timestamp) -> Result<Outcome, Error> {
    let Some(at) = logic::ttl_expires_at(job) else {
        return Ok(Outcome::done());
    };
    if at > now {
        return Ok(Outcome::after(time::until(now, at)));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), meta::namespace(&job.metadata));
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions { uid: job.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(meta::name(&job.metadata), &params).await {
        Ok(_) => {
            tracing::info!(job = %meta::key(&job.metadata), "deleted finished job after its TTL");
            Ok(Outcome::done())
        }
        Err(e) if meta::is_not_found(&e) || meta::is_conflict(&e) => Ok(Outcome::done()),
        Err(e) => Err(api_err(format!("deleting expired job {}", meta::key(&job.metadata)))(e)),
    }
}

/// Creates `count` pods (slow start: 1, 2, 4, ... per batch, stopping at the first error) and
/// returns how many were created and the first error message.
async fn create_pods(
    ctx: &Context,
    job: &Job,
    key: &str,
    params: &Params,
    counts: &Counts<'_>,
    count: i32,
) -> (i32, Option<String>) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), meta::namespace(&job.metadata));
    let count = usize::try_from(count).unwrap_or(0);
    let mut templates: Vec<Pod> = match (params.indexed, params.completions) {
        (true, Some(c)) => logic::missing_indexes(counts, c, count)
            .into_iter()
            .map(|i| logic::pod_from_template(job, Some(i)))
            .collect(),
        _ => (0..count).map(|_| logic::pod_from_template(job, None)).collect(),
    };
    let params = PostParams::default();
    let mut created = 0;
    let mut batch = 1usize;
    while !templates.is_empty() {
        let rest = templates.split_off(batch.min(templates.len()));
        let results = join_all(templates.iter().map(|t| api.create(&params, t))).await;
        templates = rest;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(pod) => {
                    created += 1;
                    ctx.expectations.created(key, meta::uid(&pod.metadata));
                    ctx.recorder.record(
                        job,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", meta::name(&pod.metadata)),
                    );
                }
                Err(e) if meta::is_namespace_terminating(&e) => return (created, None),
                Err(e) => {
                    let message = meta::error_message(&e);
                    ctx.recorder.record(job, EventType::Warning, "FailedCreate", format!("Error creating: {message}"));
                    first_error.get_or_insert(message);
                }
            }
        }
        if first_error.is_some() {
            return (created, first_error);
        }
        batch = batch.saturating_mul(2);
    }
    (created, None)
}

async fn delete_pods(ctx: &Context, job: &Job, key: &str, victims: &[&Pod]) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), meta::namespace(&job.metadata));
    for pod in victims {
        ctx.expectations.deleting(key, meta::uid(&pod.metadata));
    }
    let results = join_all(victims.iter().map(|pod| {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        let api = api.clone();
        async move { (pod, api.delete(meta::name(&pod.metadata), &params).await) }
    }))
    .await;
    let mut first_error = None;
    for (pod, result) in results {
        let name = meta::name(&pod.metadata);
        match result {
            Ok(_) => ctx.recorder.record(job, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}")),
            Err(e) if meta::is_not_found(&e) => {}
            Err(e) => {
                ctx.expectations.delete_failed(meta::uid(&pod.metadata));
                let message = meta::error_message(&e);
                ctx.recorder.record(job, EventType::Warning, "FailedDelete", format!("Error deleting: {message}"));
                first_error.get_or_insert(message);
            }
        }
    }
    first_error
}
