//! The node on a machine that cannot isolate pods (not root, no cgroup controllers, no
//! overlayfs, no runc; see `crate::preflight`). It still registers, so `kubectl get nodes`
//! says what is wrong: `NotReady` with the reason, and a `NoSchedule` taint. It runs no pod:
//! unscheduled pods get `FailedScheduling`, pods bound here directly are rejected as `Failed`.

use std::collections::HashSet;
use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{NodeStatus, Pod, Taint};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::events::EventSink;
use super::{AgentError, is_terminal, mark_unschedulable, node_of, uid_of};

/// The taint a node that cannot isolate pods carries.
pub const ISOLATION_TAINT: &str = "node.berth.dev/isolation-unavailable";
/// `Ready=False` reason and pod rejection reason.
pub const REASON: &str = "IsolationUnavailable";

pub fn taint() -> Taint {
    Taint { key: ISOLATION_TAINT.to_owned(), effect: "NoSchedule".to_owned(), ..Taint::default() }
}

/// Turns the node's `Ready` condition to `False`, saying what is missing.
pub fn not_ready(status: &mut NodeStatus, missing: &str) {
    for condition in status.conditions.iter_mut().flatten() {
        if condition.type_ == "Ready" {
            condition.status = "False".to_owned();
            condition.reason = Some(REASON.to_owned());
            condition.message = Some(format!("this machine cannot isolate pods, missing {missing}"));
        }
    }
}

/// Whether `pod` tolerates [`ISOLATION_TAINT`] (upstream's matching rules).
pub fn tolerates(pod: &Pod) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.into_iter().flatten().any(|t| {
        let key = t.key.as_deref().unwrap_or("");
        let exists = t.operator.as_deref() == Some("Exists");
        let key_matches = key == ISOLATION_TAINT || (key.is_empty() && exists);
        let value_matches = exists || t.value.as_deref().unwrap_or("").is_empty();
        let effect_matches = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoSchedule");
        key_matches && value_matches && effect_matches
    })
}

/// The scheduler's message for a pod on a node that cannot isolate it.
pub fn unschedulable_message(pod: &Pod, missing: &str) -> String {
    if tolerates(pod) {
        // Tolerating the taint does not make running without isolation acceptable.
        format!("0/1 nodes are available: 1 node(s) cannot isolate pods (missing {missing}).")
    } else {
        format!("0/1 nodes are available: 1 node(s) had untolerated taint {{{ISOLATION_TAINT}: }}.")
    }
}

/// Watches pods until `shutdown`, refusing every one that would run here.
pub async fn refuse_pods(
    client: kube::Client,
    node_name: &str,
    missing: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let events = EventSink::spawn(client.clone(), node_name);
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = watcher(pods, watcher::Config::default()).default_backoff().applied_objects();
    let mut stream = std::pin::pin!(stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused: HashSet<String> = HashSet::new();
    loop {
        let pod = tokio::select! {
            () = &mut shutdown => return Ok(()),
            event = stream.next() => match event {
                Some(Ok(pod)) => pod,
                Some(Err(error)) => {
                    tracing::warn!(%error, "pod watch error; retrying");
                    continue;
                }
                None => return Err(AgentError::WatchEnded),
            },
        };
        let uid = uid_of(&pod);
        if refused.contains(&uid) || pod.metadata.deletion_timestamp.is_some() || is_terminal(&pod) {
            continue;
        }
        let done = match node_of(&pod) {
            None => mark_unschedulable(&client, &events, &pod, &unschedulable_message(&pod, missing)).await,
            Some(node) if node == node_name => reject(&client, &events, &pod, missing).await,
            Some(_) => continue,
        };
        match done {
            Ok(()) => {
                refused.insert(uid);
            }
            Err(error) => tracing::warn!(pod = ?pod.metadata.name, %error, "cannot report a refused pod"),
        }
    }
}

/// Kubelet's admission refusal for a pod bound here by its author.
async fn reject(client: &kube::Client, events: &EventSink, pod: &Pod, missing: &str) -> Result<(), kube::Error> {
    let (Some(name), Some(namespace)) = (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()) else {
        return Ok(());
    };
    let message = format!("Pod was rejected: this node cannot isolate pods, missing {missing}");
    events.warning(&pod.object_ref(&()), REASON, message.clone());
    let patch = serde_json::json!({ "status": { "phase": "Failed", "reason": REASON, "message": message } });
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn pod_tolerating(tolerations: Vec<Toleration>) -> Pod {
        Pod { spec: Some(PodSpec { tolerations: Some(tolerations), ..PodSpec::default() }), ..Pod::default() }
    }

    #[test]
    fn tolerations_match_as_upstream() {
        assert!(!tolerates(&Pod::default()));
        let exact =
            Toleration { key: Some(ISOLATION_TAINT.into()), effect: Some("NoSchedule".into()), ..Default::default() };
        assert!(tolerates(&pod_tolerating(vec![exact])));
        let everything = Toleration { operator: Some("Exists".into()), ..Default::default() };
        assert!(tolerates(&pod_tolerating(vec![everything])));
        let other_effect =
            Toleration { key: Some(ISOLATION_TAINT.into()), effect: Some("NoExecute".into()), ..Default::default() };
        assert!(!tolerates(&pod_tolerating(vec![other_effect])));
        let wrong_value =
            Toleration { key: Some(ISOLATION_TAINT.into()), value: Some("x".into()), ..Default::default() };
        assert!(!tolerates(&pod_tolerating(vec![wrong_value])));
    }

    #[test]
    fn messages_name_the_taint_or_what_is_missing() {
        let message = unschedulable_message(&Pod::default(), "root");
        assert_eq!(
            message,
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.berth.dev/isolation-unavailable: }."
        );
        let everything = Toleration { operator: Some("Exists".into()), ..Default::default() };
        assert!(unschedulable_message(&pod_tolerating(vec![everything]), "root").contains("missing root"));
    }
}
