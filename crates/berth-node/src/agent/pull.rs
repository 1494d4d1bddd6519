//! Getting a container's image onto the node before it starts, as kubelet's image manager
//! does: `imagePullPolicy`, `imagePullSecrets`, and the `Pulling`/`Pulled` events.

use std::time::Instant;

use berth_image::{HOST_IMAGE, PullOptions, auth};
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, Secret};
use kube::api::Api;

use super::worker::Shared;
use crate::runtime::RuntimeError;

/// The policy Kubernetes defaults to when the pod names none: `Always` for `:latest` or
/// untagged images, `IfNotPresent` otherwise.
fn pull_policy(container: &Container, image: &str) -> String {
    match container.image_pull_policy.as_deref() {
        Some(policy) if !policy.is_empty() => policy.to_owned(),
        _ if berth_image::reference::is_latest(image) => "Always".to_owned(),
        _ => "IfNotPresent".to_owned(),
    }
}

/// Credentials for the registry of `image` from the pod's `imagePullSecrets`.
async fn credentials(shared: &Shared, pod: &Pod, image: &str) -> Option<auth::Credentials> {
    let registry = berth_image::reference::parse(image).ok()?.resolve_registry().to_owned();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
    for reference in pod.spec.as_ref()?.image_pull_secrets.iter().flatten() {
        let secret = match secrets.get(&reference.name).await {
            Ok(secret) => secret,
            Err(error) => {
                // Upstream goes on without the missing secret.
                tracing::warn!(secret = %reference.name, %error, "cannot read image pull secret");
                continue;
            }
        };
        let data = secret.data.unwrap_or_default();
        let config = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg"));
        if let Some(found) = config.and_then(|bytes| auth::credentials_for(&bytes.0, &registry)) {
            return Some(found);
        }
    }
    None
}

/// Makes sure the image of `container` is on the node, pulling it if the policy says so.
pub async fn ensure_image(
    shared: &Shared,
    pod: &Pod,
    pod_ref: &ObjectReference,
    container: &Container,
) -> Result<(), RuntimeError> {
    let image = container.image.clone().unwrap_or_default();
    if image == HOST_IMAGE {
        shared.events.normal(pod_ref, "Pulled", format!("Container image \"{image}\" already present on machine"));
        return Ok(());
    }
    let store = shared.runtime.images().clone();
    let lookup = store.clone();
    let name = image.clone();
    let present = tokio::task::spawn_blocking(move || lookup.get(&name))
        .await
        .map_err(|e| RuntimeError::Shim(format!("looking up the image: {e}")))?
        .map_err(|source| RuntimeError::Image { image: image.clone(), source })?
        .is_some();
    let policy = pull_policy(container, &image);
    match policy.as_str() {
        "Never" if !present => {
            let error = RuntimeError::ImageNeverPull(image.clone());
            shared.events.warning(pod_ref, "ErrImageNeverPull", error.to_string());
            return Err(error);
        }
        "Never" | "IfNotPresent" if present => {
            shared.events.normal(pod_ref, "Pulled", format!("Container image \"{image}\" already present on machine"));
            return Ok(());
        }
        _ => {}
    }
    shared.events.normal(pod_ref, "Pulling", format!("Pulling image \"{image}\""));
    let options = PullOptions {
        credentials: credentials(shared, pod, &image).await,
        insecure_registries: shared.runtime.config().insecure_registries.clone(),
    };
    let started = Instant::now();
    match store.pull(&image, &options, None).await {
        Ok(record) => {
            let took = started.elapsed().as_secs_f64();
            shared.events.normal(
                pod_ref,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting). Image size: {} bytes.",
                    record.size
                ),
            );
            Ok(())
        }
        Err(error) => Err(RuntimeError::ImagePull { image, message: error.to_string() }),
    }
}
