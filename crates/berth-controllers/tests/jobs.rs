#![allow(clippy::unwrap_used)]
//! End-to-end: the Job and CronJob controllers against a real `berth server`, with pods driven to
//! Succeeded or Failed by a kwok-style stand-in kubelet.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Server, wait_for};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

const NS: &str = "default";

fn start_controllers(client: &Client) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = berth_controllers::run(client).await {
            panic!("controllers stopped: {e}");
        }
    })
}

fn job_json(name: &str, image: &str, spec: serde_json::Value) -> Job {
    let mut full = serde_json::json!({
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": image}]}}
    });
    if let (Some(s), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": full
    }))
    .unwrap()
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Runs every new pod to completion: image "fail" ends Failed, image "hold" keeps Running, any
/// other Succeeded. Also records the most pods ever non-terminal at once.
fn spawn_job_kubelet(client: Client) -> (Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let api: Api<Pod> = Api::namespaced(client, NS);
    let max_active = Arc::new(Mutex::new(0usize));
    let out = max_active.clone();
    let handle = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Delete(p)) => {
                    pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                    continue;
                }
                _ => continue,
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            pods.insert(name.clone(), pod.clone());
            let active = pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed"))
                .count();
            {
                let mut m = out.lock().unwrap();
                *m = (*m).max(active);
            }
            if !phase(&pod).is_empty() && phase(&pod) != "Pending" || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let (phase, exit) = match image(&pod).as_str() {
                "fail" => ("Failed", 1),
                "hold" => ("Running", -1),
                _ => ("Succeeded", 0),
            };
            let state = if exit < 0 {
                serde_json::json!({"running": {"startedAt": now}})
            } else {
                serde_json::json!({"terminated": {"exitCode": exit, "startedAt": now, "finishedAt": now}})
            };
            let patch = serde_json::json!({"status": {
                "phase": phase,
                "startTime": now,
                "containerStatuses": [{"name": "work", "image": image(&pod), "imageID": "", "ready": false,
                                       "restartCount": 0, "state": state}],
            }});
            // The pod may be gone already; the next event will tell.
            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    });
    (max_active, handle)
}

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

async fn events_for(client: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

async fn job_pods(client: &Client, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await.unwrap().items
}

/// completions 3, parallelism 2: three pods succeed, never more than two run at once, the Job
/// reports Complete with SuccessCriteriaMet, and the pods carry the Job's labels and owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_completions_with_bounded_parallelism() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let (max_active, _kubelet) = spawn_job_kubelet(client.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let spec = serde_json::json!({"completions": 3, "parallelism": 2});
    let created = jobs.create(&PostParams::default(), &job_json("batch", "ok", spec)).await.unwrap();

    let done = wait_for("job batch to complete", || {
        let jobs = jobs.clone();
        async move { jobs.get("batch").await.ok().filter(|j| condition(j, "Complete").is_some()) }
    })
    .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(status.active, None);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(condition(&done, "SuccessCriteriaMet").map(|c| c.0).as_deref(), Some("CompletionsReached"));
    assert!(*max_active.lock().unwrap() <= 2, "at most parallelism pods run at once");

    let pods = job_pods(&client, "batch").await;
    assert_eq!(pods.len(), 3, "exactly completions pods were created");
    let uid = created.metadata.uid.clone().unwrap();
    for pod in &pods {
        assert!(pod.metadata.name.as_deref().unwrap().starts_with("batch-"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
        assert_eq!(labels.get("job-name").map(String::as_str), Some("batch"));
        let owner = pod.metadata.owner_references.as_ref().unwrap().first().unwrap();
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Job", uid.as_str(), Some(true)));
    }
    let events = wait_for("Completed event", || {
        let client = client.clone();
        async move {
            Some(events_for(&client, "batch").await)
                .filter(|e| e.iter().any(|e| e.reason.as_deref() == Some("Completed")))
        }
    })
    .await;
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("SuccessfulCreate")));
}

/// A Job whose pods always fail: with backoffLimit 1 it creates a second pod after the back-off,
/// then fails with BackoffLimitExceeded and creates no more pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_stops_after_backoff_limit() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_job_kubelet(client.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let spec = serde_json::json!({"backoffLimit": 1});
    jobs.create(&PostParams::default(), &job_json("doomed", "fail", spec)).await.unwrap();

    let failed = wait_for("job doomed to fail", || {
        let jobs = jobs.clone();
        async move { jobs.get("doomed").await.ok().filter(|j| condition(j, "Failed").is_some()) }
    })
    .await;
    let (reason, message) = condition(&failed, "Failed").unwrap();
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(2));
    assert!(condition(&failed, "Complete").is_none());
    let pods = job_pods(&client, "doomed").await;
    assert_eq!(pods.len(), 2, "backoffLimit 1 allows one retry");
    assert!(pods.iter().all(|p| phase(p) == "Failed"));
    wait_for("BackoffLimitExceeded event", || {
        let client = client.clone();
        async move {
            let events = events_for(&client, "doomed").await;
            events.iter().any(|e| e.reason.as_deref() == Some("BackoffLimitExceeded")).then_some(())
        }
    })
    .await;
}

/// ttlSecondsAfterFinished 0 deletes the Job once it completes; an Indexed Job gives each pod
/// its completion index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_completes_and_ttl_deletes_it() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_job_kubelet(client.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let spec = serde_json::json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"});
    jobs.create(&PostParams::default(), &job_json("indexed", "ok", spec)).await.unwrap();
    let done = wait_for("indexed job to complete", || {
        let jobs = jobs.clone();
        async move { jobs.get("indexed").await.ok().filter(|j| condition(j, "Complete").is_some()) }
    })
    .await;
    assert_eq!(done.status.as_ref().unwrap().completed_indexes.as_deref(), Some("0-2"));
    let mut indexes: Vec<String> = job_pods(&client, "indexed")
        .await
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);

    let spec = serde_json::json!({"ttlSecondsAfterFinished": 0});
    jobs.create(&PostParams::default(), &job_json("shortlived", "ok", spec)).await.unwrap();
    wait_for("finished job shortlived to be deleted", || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("shortlived").await.ok().flatten().is_none().then_some(()) }
    })
    .await;
}

fn cron_job_json(name: &str, schedule: &str, spec: serde_json::Value) -> CronJob {
    let mut full = serde_json::json!({
        "schedule": schedule,
        "jobTemplate": {
            "metadata": {"labels": {"app": name}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "ok"}]}}}
        }
    });
    if let (Some(s), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": full
    }))
    .unwrap()
}

fn owned_by(job: &Job, uid: &str) -> bool {
    job.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
}

/// `*/1 * * * *` creates a Job named `<cronjob>-<minutes since epoch>` with the scheduled-time
/// annotation within 70 s; once it completes the CronJob records lastSuccessfulTime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_job_every_minute_creates_a_job() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_job_kubelet(client.clone());
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let cj = cron_jobs
        .create(&PostParams::default(), &cron_job_json("tick", "*/1 * * * *", serde_json::json!({"timeZone": "UTC"})))
        .await
        .unwrap();
    let uid = cj.metadata.uid.clone().unwrap();

    // The acceptance bound: a Job within 70 s of creating the CronJob.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(70);
    let job = loop {
        let list = jobs.list(&ListParams::default()).await.unwrap().items;
        if let Some(j) = list.into_iter().find(|j| owned_by(j, &uid)) {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Job within 70 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let annotations = job.metadata.annotations.clone().unwrap();
    let scheduled: k8s_openapi::jiff::Timestamp =
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"].parse().unwrap();
    assert_eq!(scheduled.as_second() % 60, 0, "scheduled on a whole minute");
    let expected_name = format!("tick-{}", scheduled.as_second() / 60);
    assert_eq!(job.metadata.name.as_deref(), Some(expected_name.as_str()));
    assert_eq!(job.metadata.labels.as_ref().unwrap().get("app").map(String::as_str), Some("tick"));

    let cj = wait_for("cron job tick to record a successful run", || {
        let cron_jobs = cron_jobs.clone();
        async move {
            cron_jobs
                .get("tick")
                .await
                .ok()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.last_successful_time.is_some()))
        }
    })
    .await;
    let status = cj.status.unwrap();
    assert!(status.last_schedule_time.unwrap().0 >= scheduled);
    wait_for("SuccessfulCreate event on the cron job", || {
        let client = client.clone();
        async move {
            let events = events_for(&client, "tick").await;
            events.iter().any(|e| e.reason.as_deref() == Some("SuccessfulCreate")).then_some(())
        }
    })
    .await;
}

/// successfulJobsHistoryLimit 1 / failedJobsHistoryLimit 1: of three completed and two failed
/// Jobs of a (suspended) CronJob only the newest of each remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_job_history_limits_prune_finished_jobs() {
    let server = Server::start().await;
    let client = server.client.clone();
    let _controllers = start_controllers(&client);
    let _kubelet = spawn_job_kubelet(client.clone());
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let spec = serde_json::json!({"suspend": true, "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1});
    let cj = cron_jobs.create(&PostParams::default(), &cron_job_json("nightly", "@daily", spec)).await.unwrap();
    let uid = cj.metadata.uid.clone().unwrap();
    let owner = serde_json::json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": uid,
                                    "controller": true, "blockOwnerDeletion": true}]);
    for (name, image) in
        [("nightly-1", "ok"), ("nightly-2", "ok"), ("nightly-3", "fail"), ("nightly-4", "fail"), ("nightly-5", "ok")]
    {
        let mut job = job_json(name, image, serde_json::json!({"backoffLimit": 0}));
        job.metadata.owner_references = Some(serde_json::from_value(owner.clone()).unwrap());
        jobs.create(&PostParams::default(), &job).await.unwrap();
        // Each finishes before the next starts, so their ages are ordered.
        wait_for(&format!("job {name} to finish"), || {
            let jobs = jobs.clone();
            async move {
                jobs.get(name)
                    .await
                    .ok()
                    .filter(|j| condition(j, "Complete").is_some() || condition(j, "Failed").is_some())
            }
        })
        .await;
    }
    let remaining = wait_for("history to be pruned to one success and one failure", || {
        let jobs = jobs.clone();
        let uid = uid.clone();
        async move {
            let mut names: Vec<String> = jobs
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|j| owned_by(j, &uid) && j.metadata.deletion_timestamp.is_none())
                .filter_map(|j| j.metadata.name)
                .collect();
            names.sort();
            (names.len() == 2).then_some(names)
        }
    })
    .await;
    assert_eq!(remaining, ["nightly-4", "nightly-5"]);
    let cj = cron_jobs.get("nightly").await.unwrap();
    assert!(cj.status.and_then(|s| s.last_schedule_time).is_none(), "a suspended cron job schedules nothing");
}
