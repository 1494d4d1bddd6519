//! Controllers: level-triggered reconcilers that watch and write only through the public
//! Kubernetes API with kube-rs, so they behave the same against `berth server` or any cluster.
//!
//! [`run`] starts them all: the ReplicaSet, Deployment, StatefulSet, DaemonSet, Job and CronJob
//! controllers, the
//! garbage collector, the namespace controller, and the EndpointSlice, Endpoints and mirroring
//! controllers. Each kind is watched once and the cache shared between controllers (the
//! endpoints controllers still keep watches of their own).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod runtime;
pub mod statefulset;
pub mod util;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota};
use kube::{Api, Client};

use util::informer::Informer;

/// Why the controllers stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A controller loop or watch ended, which only happens when its work queue closes.
    #[error("controller {0} stopped")]
    Stopped(&'static str),
}

/// Runs every controller until one of them stops (which is an error) or the future is dropped.
pub async fn run(client: Client) -> Result<(), Error> {
    let mut pods = Informer::new(Api::<Pod>::all(client.clone()));
    let mut replica_sets = Informer::new(Api::<ReplicaSet>::all(client.clone()));
    let mut deployments = Informer::new(Api::<Deployment>::all(client.clone()));
    let mut quotas = Informer::new(Api::<ResourceQuota>::all(client.clone()));
    let mut namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    let mut jobs = Informer::new(Api::<Job>::all(client.clone()));
    let mut cron_jobs = Informer::new(Api::<CronJob>::all(client.clone()));
    let mut stateful_sets = Informer::new(Api::<StatefulSet>::all(client.clone()));
    let mut daemon_sets = Informer::new(Api::<DaemonSet>::all(client.clone()));
    let mut revisions = Informer::new(Api::<ControllerRevision>::all(client.clone()));
    let mut nodes = Informer::new(Api::<Node>::all(client.clone()));

    let replicaset = replicaset::controller(client.clone(), &mut pods, &mut replica_sets, &mut quotas);
    let deployment = deployment::controller(client.clone(), &mut deployments, &mut replica_sets, &mut pods);
    let namespace = namespace::controller(client.clone(), &mut namespaces);
    let job = job::controller(client.clone(), &mut jobs, &mut pods);
    let cronjob = cronjob::controller(client.clone(), &mut cron_jobs, &mut jobs);
    let statefulset = statefulset::controller(client.clone(), &mut stateful_sets, &mut pods, &mut revisions);
    let daemonset = daemonset::controller(client.clone(), &mut daemon_sets, &mut pods, &mut nodes, &mut revisions);
    let garbage_collector = gc::run(client.clone());
    // The endpoints controllers keep their own watches (Services, Nodes, slices, Endpoints).
    let endpoints = endpoints::run(client);

    tokio::select! {
        _ = pods.run() => Err(Error::Stopped("pod watch")),
        _ = replica_sets.run() => Err(Error::Stopped("replicaset watch")),
        _ = deployments.run() => Err(Error::Stopped("deployment watch")),
        _ = quotas.run() => Err(Error::Stopped("resourcequota watch")),
        _ = namespaces.run() => Err(Error::Stopped("namespace watch")),
        _ = jobs.run() => Err(Error::Stopped("job watch")),
        _ = cron_jobs.run() => Err(Error::Stopped("cronjob watch")),
        _ = stateful_sets.run() => Err(Error::Stopped("statefulset watch")),
        _ = daemon_sets.run() => Err(Error::Stopped("daemonset watch")),
        _ = revisions.run() => Err(Error::Stopped("controllerrevision watch")),
        _ = nodes.run() => Err(Error::Stopped("node watch")),
        _ = replicaset => Err(Error::Stopped("replicaset")),
        _ = deployment => Err(Error::Stopped("deployment")),
        _ = namespace => Err(Error::Stopped("namespace")),
        _ = job => Err(Error::Stopped("job")),
        _ = cronjob => Err(Error::Stopped("cronjob")),
        _ = statefulset => Err(Error::Stopped("statefulset")),
        _ = daemonset => Err(Error::Stopped("daemonset")),
        _ = garbage_collector => Err(Error::Stopped("garbage collector")),
        _ = endpoints => Err(Error::Stopped("endpoints")),
    }
}
