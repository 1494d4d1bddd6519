//! The built-in `local-path` volume provisioner: binds each pending PersistentVolumeClaim of
//! class `local-path` (or of no class: Berth's default) to a new PersistentVolume backed by
//! the directory `<data-dir>/volumes/<pv-name>`, and once a claim is gone and no pod on this
//! node uses it any more, deletes the volume and its directory (reclaim policy `Delete`) or
//! marks it `Released` (`Retain`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

/// The storage class served by this provisioner.
pub const STORAGE_CLASS: &str = "local-path";
/// Marks the volumes this provisioner made (upstream's `pv.kubernetes.io/provisioned-by`).
pub const PROVISIONER: &str = "berth.dev/local-path";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Reconciles this often besides on every claim change.
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProvisionerError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `claim` asks for this provisioner's class; no class at all means the default, ours.
pub fn wants_local_path(claim: &PersistentVolumeClaim) -> bool {
    let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
    class.is_empty() || class == STORAGE_CLASS
}

/// Where the volume `pv_name` keeps its data.
pub fn volume_path(data_dir: &Path, pv_name: &str) -> PathBuf {
    data_dir.join("volumes").join(pv_name)
}

/// Runs until dropped: reconciles on every claim change and every few seconds.
pub async fn run(client: kube::Client, data_dir: PathBuf) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let changes = watcher(claims, watcher::Config::default());
    let mut changes = std::pin::pin!(changes);
    let mut tick = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            event = changes.next() => match event {
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "claim watch error; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        if let Err(error) = reconcile(&client, &data_dir).await {
            tracing::warn!(%error, "local-path provisioner");
        }
    }
}

/// One pass: provision pending claims, reclaim volumes whose claim is gone.
pub async fn reconcile(client: &kube::Client, data_dir: &Path) -> Result<(), ProvisionerError> {
    let claims_api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes_api: Api<PersistentVolume> = Api::all(client.clone());
    let claims = claims_api.list(&ListParams::default()).await?.items;
    let volumes = volumes_api.list(&ListParams::default()).await?.items;

    for claim in &claims {
        if claim.metadata.deletion_timestamp.is_some() || !wants_local_path(claim) {
            continue;
        }
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound {
            continue;
        }
        if let Err(error) = provision(client, data_dir, claim, &volumes).await {
            tracing::warn!(claim = ?claim.metadata.name, %error, "cannot provision a volume");
        }
    }

    let live_claims: HashSet<String> = claims.iter().filter_map(|c| c.metadata.uid.clone()).collect();
    let mut used: Option<HashSet<(String, String)>> = None;
    for volume in &volumes {
        let ours = volume.metadata.annotations.as_ref().and_then(|a| a.get(PROVISIONED_BY)).map(String::as_str)
            == Some(PROVISIONER);
        let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { continue };
        if !ours || claim_ref.uid.as_ref().is_some_and(|uid| live_claims.contains(uid)) {
            continue;
        }
        // The claim is gone; its data stays while a pod still mounts it.
        if used.is_none() {
            used = Some(claims_in_use(client).await?);
        }
        let key = (claim_ref.namespace.clone().unwrap_or_default(), claim_ref.name.clone().unwrap_or_default());
        if used.as_ref().is_some_and(|u| u.contains(&key)) {
            continue;
        }
        reclaim(client, data_dir, volume).await?;
    }
    Ok(())
}

/// (namespace, claim name) of every claim a pod that has not finished refers to.
async fn claims_in_use(client: &kube::Client) -> Result<HashSet<(String, String)>, ProvisionerError> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut used = HashSet::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let finished =
            matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"));
        if finished {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(source) = &volume.persistent_volume_claim {
                used.insert((namespace.clone(), source.claim_name.clone()));
            }
        }
    }
    Ok(used)
}

async fn provision(
    client: &kube::Client,
    data_dir: &Path,
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
) -> Result<(), ProvisionerError> {
    let (Some(name), Some(namespace), Some(uid)) =
        (claim.metadata.name.as_deref(), claim.metadata.namespace.as_deref(), claim.metadata.uid.as_deref())
    else {
        return Ok(());
    };
    let spec = claim.spec.clone().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let path = volume_path(data_dir, &pv_name);
    std::fs::create_dir_all(&path).map_err(|source| ProvisionerError::Io { path: path.clone(), source })?;
    // Any container user may write there, as upstream's local-path provisioner sets it up.
    let mode = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777);
    std::fs::set_permissions(&path, mode).map_err(|source| ProvisionerError::Io { path: path.clone(), source })?;

    let capacity: BTreeMap<_, _> = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| [("storage".to_owned(), q.clone())].into())
        .unwrap_or_default();
    let access_modes =
        spec.access_modes.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let volumes_api: Api<PersistentVolume> = Api::all(client.clone());
    if !volumes.iter().any(|v| v.metadata.name.as_deref() == Some(pv_name.as_str())) {
        let volume = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(pv_name.clone()),
                annotations: Some([(PROVISIONED_BY.to_owned(), PROVISIONER.to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(capacity.clone()),
                access_modes: Some(access_modes.clone()),
                host_path: Some(HostPathVolumeSource {
                    path: path.display().to_string(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some(namespace.to_owned()),
                    name: Some(name.to_owned()),
                    uid: Some(uid.to_owned()),
                    ..Default::default()
                }),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                storage_class_name: Some(STORAGE_CLASS.into()),
                volume_mode: spec.volume_mode.clone(),
                ..Default::default()
            }),
            status: None,
        };
        match volumes_api.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            Err(kube::Error::Api(response)) if response.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        tracing::info!(%namespace, claim = %name, volume = %pv_name, "provisioned a local-path volume");
    }
    let bound_status = serde_json::json!({ "status": { "phase": "Bound" } });
    volumes_api.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(&bound_status)).await?;

    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim_patch = serde_json::json!({
        "metadata": { "annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.kubernetes.io/storage-provisioner": PROVISIONER,
        } },
        "spec": { "volumeName": pv_name },
    });
    claims_api.patch(name, &PatchParams::default(), &Patch::Merge(&claim_patch)).await?;
    let status = serde_json::json!({
        "status": { "phase": "Bound", "accessModes": access_modes, "capacity": capacity },
    });
    claims_api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

async fn reclaim(client: &kube::Client, data_dir: &Path, volume: &PersistentVolume) -> Result<(), ProvisionerError> {
    let Some(pv_name) = volume.metadata.name.as_deref() else { return Ok(()) };
    let volumes_api: Api<PersistentVolume> = Api::all(client.clone());
    let policy = volume.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete");
    if policy != "Delete" {
        if volume.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
            let released = serde_json::json!({ "status": { "phase": "Released" } });
            volumes_api.patch_status(pv_name, &PatchParams::default(), &Patch::Merge(&released)).await?;
        }
        return Ok(());
    }
    let path = volume_path(data_dir, pv_name);
    match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ProvisionerError::Io { path, source }),
    }
    match volumes_api.delete(pv_name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(response)) if response.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    tracing::info!(volume = %pv_name, "deleted a local-path volume whose claim is gone");
    Ok(())
}
