//! The namespace controller: empties a terminating namespace through the API, then removes the
//! `kubernetes` finalizer via `/finalize` so the server can delete it (upstream
//! `pkg/controller/namespace/deletion/namespaced_resources_deleter.go`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::verbs;
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::runtime::{self, Outcome};
use crate::util::discovery::{self, Served};
use crate::util::informer::Informer;
use crate::util::meta;
use crate::util::semantic;
use crate::util::time;

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";
const DISCOVERY_TTL: Duration = Duration::from_secs(30);
/// How soon to look again while content is still going away.
const RECHECK: Duration = Duration::from_secs(2);

/// Errors of one namespace sync.
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

/// Shared state of the namespace controller.
pub struct Context {
    client: Client,
    discovery: Mutex<Option<(Instant, Vec<Served>)>>,
}

impl Context {
    async fn namespaced_resources(&self) -> Result<Vec<Served>, kube::Error> {
        let mut cache = self.discovery.lock().await;
        if let Some((at, served)) = cache.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(served.clone());
        }
        let served: Vec<Served> = discovery::discover(self.client.clone())
            .await?
            .into_iter()
            .filter(|s| s.namespaced && s.supports(verbs::LIST) && s.supports(verbs::DELETE))
            .collect();
        *cache = Some((Instant::now(), served.clone()));
        Ok(served)
    }
}

/// Registers the controller's watch and returns its run loop.
pub fn controller(
    client: Client,
    namespace_informer: &mut Informer<Namespace>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (queue, receiver) = runtime::queue::<Namespace>();
    namespace_informer.on_event(move |event| {
        if let kube::runtime::watcher::Event::Apply(ns) | kube::runtime::watcher::Event::InitApply(ns) = event
            && ns.metadata.deletion_timestamp.is_some()
        {
            queue.enqueue_object(ns);
        }
    });
    let ctx = Arc::new(Context { client, discovery: Mutex::new(None) });
    runtime::run("namespace", async {}, namespace_informer.store(), receiver, ctx, reconcile)
}

/// What deleting the content of a namespace found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContentReport {
    /// Resources that could not be listed or deleted, with the error.
    pub failures: Vec<String>,
    /// Objects still present per resource (`plural.group`).
    pub remaining: BTreeMap<String, usize>,
    /// Objects still present per finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

/// Whether the namespace's `kubernetes` finalizer should be removed now.
pub fn ready_to_finalize(report: &ContentReport) -> bool {
    report.failures.is_empty() && report.remaining.is_empty()
}

fn condition(
    type_: &str,
    failed: bool,
    fail_reason: &str,
    ok_reason: &str,
    message: String,
    now: &Time,
) -> NamespaceCondition {
    NamespaceCondition {
        type_: type_.to_string(),
        status: if failed { "True" } else { "False" }.to_string(),
        reason: Some(if failed { fail_reason } else { ok_reason }.to_string()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    }
}

/// The deletion conditions upstream reports on a terminating namespace.
pub fn deletion_conditions(
    report: &ContentReport,
    discovery_error: Option<&str>,
    now: &Time,
) -> Vec<NamespaceCondition> {
    let discovery_msg = discovery_error
        .map(|e| format!("Discovery failed for some groups: {e}"))
        .unwrap_or_else(|| "All resources successfully discovered".to_string());
    let content_msg = if report.failures.is_empty() {
        "All content successfully deleted, may be waiting on finalization".to_string()
    } else {
        format!(
            "Failed to delete all resource types, {} remaining: {}",
            report.failures.len(),
            report.failures.join(", ")
        )
    };
    let remaining_msg = if report.remaining.is_empty() {
        "All content successfully removed".to_string()
    } else {
        let parts: Vec<String> = report
            .remaining
            .iter()
            .map(|(r, n)| format!("{} has {n} resource instances", group_qualified(r)))
            .collect();
        format!("Some resources are remaining: {}", parts.join(", "))
    };
    let finalizers_msg = if report.finalizers.is_empty() {
        "All content-preserving finalizers finished".to_string()
    } else {
        let parts: Vec<String> =
            report.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        format!("Some content in the namespace has finalizers remaining: {}", parts.join(", "))
    };
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            discovery_error.is_some(),
            "DiscoveryFailed",
            "ResourcesDiscovered",
            discovery_msg,
            now,
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "GroupVersionParsingFailed",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
            now,
        ),
        condition(
            "NamespaceDeletionContentFailure",
            !report.failures.is_empty(),
            "ContentDeletionFailed",
            "ContentDeleted",
            content_msg,
            now,
        ),
        condition(
            "NamespaceContentRemaining",
            !report.remaining.is_empty(),
            "SomeResourcesRemain",
            "ContentRemoved",
            remaining_msg,
            now,
        ),
        condition(
            "NamespaceFinalizersRemaining",
            !report.finalizers.is_empty(),
            "SomeFinalizersRemain",
            "ContentHasNoFinalizers",
            finalizers_msg,
            now,
        ),
    ]
}

/// Upstream prints core resources as `pods.` (resource, dot, empty group).
fn group_qualified(key: &str) -> String {
    if key.contains('.') { key.to_string() } else { format!("{key}.") }
}

/// Keeps the transition time of conditions whose status did not change.
fn merge_conditions(old: Option<&Vec<NamespaceCondition>>, new: Vec<NamespaceCondition>) -> Vec<NamespaceCondition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.into_iter().flatten().find(|p| p.type_ == c.type_ && p.status == c.status) {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

async fn delete_content(ctx: &Context, ns: &str, resources: &[Served]) -> ContentReport {
    let mut report = ContentReport::default();
    for served in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &served.resource);
        let listed = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) if meta::is_not_found(&e) || meta::is_status(&e, 405) => continue,
            Err(e) => {
                report.failures.push(format!("{}: {}", served.key(), meta::error_message(&e)));
                continue;
            }
        };
        if listed.is_empty() {
            continue;
        }
        for obj in &listed {
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(name) = obj.metadata.name.as_deref() else { continue };
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if meta::is_not_found(&e) => {}
                Err(e) => {
                    report.failures.push(format!("{}: {}", served.key(), meta::error_message(&e)));
                    break;
                }
            }
        }
        // Look again: finalizers and graceful deletion can keep objects around.
        match api.list(&ListParams::default()).await {
            Ok(list) if list.items.is_empty() => {}
            Ok(list) => {
                report.remaining.insert(served.key(), list.items.len());
                for obj in &list.items {
                    for f in obj.metadata.finalizers.iter().flatten() {
                        *report.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
            Err(e) => report.failures.push(format!("{}: {}", served.key(), meta::error_message(&e))),
        }
    }
    report
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Outcome, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Outcome::done());
    }
    let finalizers: Vec<String> = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Outcome::done());
    }
    let name = meta::name(&ns.metadata).to_string();
    let api: Api<Namespace> = Api::all(ctx.client.clone());

    let (resources, discovery_error) = match ctx.namespaced_resources().await {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(meta::error_message(&e))),
    };
    let report = delete_content(&ctx, &name, &resources).await;

    let now = time::now_time();
    let old_conditions = ns.status.as_ref().and_then(|s| s.conditions.as_ref());
    let conditions = merge_conditions(old_conditions, deletion_conditions(&report, discovery_error.as_deref(), &now));
    let mut latest = (*ns).clone();
    if !semantic::status_equal(&Some(&conditions), &old_conditions) {
        let patch = serde_json::json!({ "status": { "conditions": conditions } });
        // Conditions are informational; a failure to write them must not block deletion.
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(updated) => latest = updated,
            Err(e) => tracing::debug!(namespace = %name, err = %e, "could not update namespace conditions"),
        }
    }

    if discovery_error.is_some() || !ready_to_finalize(&report) {
        return Ok(Outcome::after(RECHECK));
    }
    let mut finalized = latest;
    finalized.spec.get_or_insert_with(Default::default).finalizers =
        Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    finalized.status = None;
    match api.replace_subresource("finalize", &name, &PostParams::default(), &finalized).await {
        Ok(_) => Ok(Outcome::done()),
        Err(e) if meta::is_not_found(&e) => Ok(Outcome::done()),
        Err(e) => Err(api_err(format!("finalizing namespace {name}"))(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finalizes_only_when_everything_is_gone() {
        let mut report = ContentReport::default();
        assert!(ready_to_finalize(&report));
        report.remaining.insert("pods".into(), 2);
        assert!(!ready_to_finalize(&report));
        let failed = ContentReport { failures: vec!["pods: boom".into()], ..Default::default() };
        assert!(!ready_to_finalize(&failed));
    }

    #[test]
    fn conditions_describe_what_remains_like_upstream() {
        let now = time::now_time();
        let report = ContentReport {
            failures: vec![],
            remaining: [("pods".to_string(), 2), ("replicasets.apps".to_string(), 1)].into_iter().collect(),
            finalizers: [("example.com/keep".to_string(), 1)].into_iter().collect(),
        };
        let conds = deletion_conditions(&report, None, &now);
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap();
        let remaining = get("NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: pods. has 2 resource instances, replicasets.apps has 1 resource instances"
            )
        );
        let fins = get("NamespaceFinalizersRemaining");
        assert_eq!(
            fins.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances")
        );
        let discovery = get("NamespaceDeletionDiscoveryFailure");
        assert_eq!((discovery.status.as_str(), discovery.reason.as_deref()), ("False", Some("ResourcesDiscovered")));
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap());
        let old = deletion_conditions(&ContentReport::default(), None, &earlier);
        let now = time::now_time();
        let new = merge_conditions(Some(&old), deletion_conditions(&ContentReport::default(), None, &now));
        assert!(new.iter().all(|c| c.last_transition_time == Some(earlier.clone())));
    }
}
