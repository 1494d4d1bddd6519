//! Pod ownership for controllers that name or place their own pods (StatefulSet, DaemonSet):
//! keep the pods they control, adopt matching orphans, release owned pods that no longer match
//! (upstream `PodControllerRefManager.ClaimPods`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Resource};

use super::meta;
use super::selector::Selector;

/// An API request of a claim failed.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ClaimError {
    /// What was being done.
    pub action: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// The pods among `candidates` that `owner` controls afterwards, terminating and finished ones
/// included. Orphans are adopted only when they match `selector`, are not being deleted and
/// pass `adoptable`; an owner being deleted neither adopts nor releases.
pub async fn claim_pods<K: Resource<DynamicType = ()>>(
    api: &Api<Pod>,
    owner: &K,
    selector: &Selector,
    candidates: Vec<Arc<Pod>>,
    adoptable: impl Fn(&Pod) -> bool,
) -> Result<Vec<Pod>, ClaimError> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for pod in candidates {
        let matches = selector.matches(pod.metadata.labels.as_ref());
        let mut changed = (*pod).clone();
        let action = match meta::controller_of(&pod.metadata) {
            Some(o) if o.uid == uid && (matches || deleting) => {
                owned.push(changed);
                continue;
            }
            Some(o) if o.uid == uid => {
                if let Some(refs) = changed.metadata.owner_references.as_mut() {
                    refs.retain(|r| r.uid != uid);
                }
                "releasing"
            }
            None if !deleting && matches && pod.metadata.deletion_timestamp.is_none() && adoptable(&pod) => {
                changed.metadata.owner_references.get_or_insert_with(Vec::new).push(meta::controller_ref(owner));
                "adopting"
            }
            _ => continue,
        };
        match api.replace(meta::name(&pod.metadata), &PostParams::default(), &changed).await {
            Ok(p) if action == "adopting" => owned.push(p),
            Ok(_) => {}
            Err(e) if meta::is_not_found(&e) => {}
            Err(source) => {
                return Err(ClaimError { action: format!("{action} pod {}", meta::key(&pod.metadata)), source });
            }
        }
    }
    Ok(owned)
}
