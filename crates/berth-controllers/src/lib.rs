//! Controllers: level-triggered reconcilers that watch and write only through the public
//! Kubernetes API with kube-rs, so they behave the same against `berth server` or any cluster.
//!
//! [`run`] starts them all: the ReplicaSet and Deployment controllers, the garbage collector and
//! the namespace controller.

pub mod expectations;
pub mod replicaset;
pub mod runtime;
pub mod util;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::{Api, Client};

use util::informer::Informer;

/// Why the controllers stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A controller loop ended, which only happens when its watch queue closes.
    #[error("controller {0} stopped")]
    Stopped(&'static str),
}

/// Runs every controller until one of them stops (which is an error) or the future is dropped.
pub async fn run(client: Client) -> Result<(), Error> {
    let mut pods = Informer::new(Api::<Pod>::all(client.clone()));
    let mut replica_sets = Informer::new(Api::<ReplicaSet>::all(client.clone()));
    let mut quotas = Informer::new(Api::<ResourceQuota>::all(client.clone()));

    let replicaset = replicaset::controller(client.clone(), &mut pods, &mut replica_sets, &mut quotas);

    tokio::select! {
        _ = pods.run() => Err(Error::Stopped("pod informer")),
        _ = replica_sets.run() => Err(Error::Stopped("replicaset informer")),
        _ = quotas.run() => Err(Error::Stopped("resourcequota informer")),
        _ = replicaset => Err(Error::Stopped("replicaset")),
    }
}
