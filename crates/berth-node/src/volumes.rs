//! Pod volumes on the host, under `<pod-dir>/_volumes/<kind>/<name>`: emptyDir (a directory,
//! or a tmpfs for `medium: Memory`), hostPath, and configMap/secret written with kubelet's
//! atomic layout (`..data` symlink to a timestamped directory, top-level symlinks through it)
//! so a later update swaps every file of the volume at once, also inside running containers.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret, Volume,
};

use crate::spec::PodInputs;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : configmap \"{name}\" not found")]
    ConfigMapNotFound { volume: String, name: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : secret \"{name}\" not found")]
    SecretNotFound { volume: String, name: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {kind} references non-existent config key: {key}")]
    MissingKey { volume: String, kind: &'static str, key: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : invalid path {path:?}")]
    InvalidPath { volume: String, path: String },
    #[error(
        "MountVolume.SetUp failed for volume \"{volume}\" : hostPath type check failed: {path} is not a {expected}"
    )]
    HostPathType { volume: String, path: String, expected: &'static str },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : persistentvolumeclaim \"{claim}\" is not bound")]
    ClaimNotBound { volume: String, claim: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : unsupported downward API field {field:?}")]
    UnsupportedField { volume: String, field: String },
    #[error(
        "volume \"{volume}\" has an unsupported type ({kind}); supported: emptyDir, hostPath, configMap, secret, \
         persistentVolumeClaim, downwardAPI, projected"
    )]
    Unsupported { volume: String, kind: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A volume ready to be bind-mounted into the pod's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub host_path: PathBuf,
    /// configMap and secret volumes are always mounted read-only.
    pub force_read_only: bool,
}

pub type PreparedVolumes = BTreeMap<String, PreparedVolume>;

/// Where volume `name` of kind `kind` lives for a pod.
pub fn volume_dir(volumes_dir: &Path, kind: &str, name: &str) -> PathBuf {
    volumes_dir.join(kind).join(name)
}

/// Sets up every volume of the pod (idempotent: configMap/secret contents are refreshed).
pub fn prepare(pod: &Pod, volumes_dir: &Path, inputs: &PodInputs) -> Result<PreparedVolumes, VolumeError> {
    let mut prepared = PreparedVolumes::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        prepared.insert(volume.name.clone(), prepare_one(pod, volume, volumes_dir, inputs)?);
    }
    Ok(prepared)
}

fn io_error(volume: &str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let volume = volume.to_owned();
    let path = path.to_owned();
    move |source| VolumeError::Io { volume, path, source }
}

fn prepare_one(
    pod: &Pod,
    volume: &Volume,
    volumes_dir: &Path,
    inputs: &PodInputs,
) -> Result<PreparedVolume, VolumeError> {
    let name = volume.name.as_str();
    if let Some(empty_dir) = &volume.empty_dir {
        let dir = volume_dir(volumes_dir, "empty-dir", name);
        std::fs::create_dir_all(&dir).map_err(io_error(name, &dir))?;
        // Any container user may write there, as kubelet sets it up.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io_error(name, &dir))?;
        if empty_dir.medium.as_deref() == Some("Memory") && !is_mount_point(&dir) {
            let size = empty_dir.size_limit.as_ref().and_then(crate::resources::units);
            let options = match size {
                Some(bytes) => format!("mode=0777,size={bytes}"),
                None => "mode=0777".to_owned(),
            };
            let options = std::ffi::CString::new(options).map_err(|e| VolumeError::Io {
                volume: name.to_owned(),
                path: dir.clone(),
                source: std::io::Error::other(e),
            })?;
            let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
            rustix::mount::mount("tmpfs", &dir, "tmpfs", flags, Some(options.as_c_str())).map_err(|errno| {
                VolumeError::Io { volume: name.to_owned(), path: dir.clone(), source: errno.into() }
            })?;
        }
        return Ok(PreparedVolume { host_path: dir, force_read_only: false });
    }
    if let Some(host_path) = &volume.host_path {
        let path = PathBuf::from(&host_path.path);
        check_host_path(name, &path, host_path.type_.as_deref().unwrap_or(""))?;
        return Ok(PreparedVolume { host_path: path, force_read_only: false });
    }
    if let Some(source) = &volume.persistent_volume_claim {
        let Some(path) = inputs.claims.get(&source.claim_name) else {
            return Err(VolumeError::ClaimNotBound { volume: name.to_owned(), claim: source.claim_name.clone() });
        };
        std::fs::create_dir_all(path).map_err(io_error(name, path))?;
        return Ok(PreparedVolume { host_path: path.clone(), force_read_only: source.read_only.unwrap_or(false) });
    }
    if let Some(source) = &volume.downward_api {
        let dir = volume_dir(volumes_dir, "downward-api", name);
        let default_mode = source.default_mode.map_or(0o644, |m| (m as u32) & 0o777);
        let files = downward_api_files(name, pod, source.items.iter().flatten(), default_mode)?;
        write_atomic(&dir, &files).map_err(io_error(name, &dir))?;
        return Ok(PreparedVolume { host_path: dir, force_read_only: true });
    }
    if let Some(source) = &volume.projected {
        let dir = volume_dir(volumes_dir, "projected", name);
        let files = projected_files(name, pod, source, inputs)?;
        write_atomic(&dir, &files).map_err(io_error(name, &dir))?;
        return Ok(PreparedVolume { host_path: dir, force_read_only: true });
    }
    if let Some(source) = &volume.config_map {
        let dir = volume_dir(volumes_dir, "configmap", name);
        let optional = source.optional.unwrap_or(false);
        let files = match inputs.config_maps.get(&source.name) {
            Some(map) => {
                let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                for (key, value) in map.data.iter().flatten() {
                    all.insert(key.clone(), value.clone().into_bytes());
                }
                for (key, value) in map.binary_data.iter().flatten() {
                    all.insert(key.clone(), value.0.clone());
                }
                project(name, "configmap", &all, source.items.as_deref(), source.default_mode, optional)?
            }
            None if optional => BTreeMap::new(),
            None => return Err(VolumeError::ConfigMapNotFound { volume: name.to_owned(), name: source.name.clone() }),
        };
        write_atomic(&dir, &files).map_err(io_error(name, &dir))?;
        return Ok(PreparedVolume { host_path: dir, force_read_only: true });
    }
    if let Some(source) = &volume.secret {
        let dir = volume_dir(volumes_dir, "secret", name);
        let secret_name = source.secret_name.clone().unwrap_or_default();
        let optional = source.optional.unwrap_or(false);
        let files = match inputs.secrets.get(&secret_name) {
            Some(secret) => {
                let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                for (key, value) in secret.string_data.iter().flatten() {
                    all.insert(key.clone(), value.clone().into_bytes());
                }
                for (key, value) in secret.data.iter().flatten() {
                    all.insert(key.clone(), value.0.clone());
                }
                project(name, "secret", &all, source.items.as_deref(), source.default_mode, optional)?
            }
            None if optional => BTreeMap::new(),
            None => return Err(VolumeError::SecretNotFound { volume: name.to_owned(), name: secret_name }),
        };
        write_atomic(&dir, &files).map_err(io_error(name, &dir))?;
        return Ok(PreparedVolume { host_path: dir, force_read_only: true });
    }
    Err(VolumeError::Unsupported { volume: name.to_owned(), kind: volume_kind(volume) })
}

type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

fn config_map_data(map: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, value) in map.data.iter().flatten() {
        all.insert(key.clone(), value.clone().into_bytes());
    }
    for (key, value) in map.binary_data.iter().flatten() {
        all.insert(key.clone(), value.0.clone());
    }
    all
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (key, value) in secret.string_data.iter().flatten() {
        all.insert(key.clone(), value.clone().into_bytes());
    }
    for (key, value) in secret.data.iter().flatten() {
        all.insert(key.clone(), value.0.clone());
    }
    all
}

fn check_item_path(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    let relative = PathBuf::from(path);
    let safe =
        !path.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_))) && !path.starts_with("..");
    if safe { Ok(relative) } else { Err(VolumeError::InvalidPath { volume: volume.to_owned(), path: path.to_owned() }) }
}

/// Files of a downwardAPI volume or projection: pod fields and container resources.
fn downward_api_files<'a>(
    volume: &str,
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: u32,
) -> Result<Files, VolumeError> {
    let mut files = Files::new();
    for item in items {
        let path = check_item_path(volume, &item.path)?;
        let value = if let Some(field) = &item.field_ref {
            downward_field(pod, &field.field_path).ok_or_else(|| VolumeError::UnsupportedField {
                volume: volume.to_owned(),
                field: field.field_path.clone(),
            })?
        } else if let Some(resource) = &item.resource_field_ref {
            let container = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
                .find(|c| Some(c.name.as_str()) == resource.container_name.as_deref());
            let Some(container) = container else {
                return Err(VolumeError::UnsupportedField {
                    volume: volume.to_owned(),
                    field: resource.resource.clone(),
                });
            };
            crate::spec::resource_field_value(container, &resource.resource, resource.divisor.as_ref()).map_err(
                |_| VolumeError::UnsupportedField { volume: volume.to_owned(), field: resource.resource.clone() },
            )?
        } else {
            String::new()
        };
        let mode = item.mode.map_or(default_mode, |m| (m as u32) & 0o777);
        files.insert(path, (value.into_bytes(), mode));
    }
    Ok(files)
}

/// The pod fields a downwardAPI volume can show; labels and annotations as upstream
/// formats them: one `key="value"` line each, sorted, values quoted.
fn downward_field(pod: &Pod, path: &str) -> Option<String> {
    let all = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(key, value)| format!("{key}={}", serde_json::Value::String(value.clone())))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let meta = &pod.metadata;
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(all(meta.labels.as_ref())),
        "metadata.annotations" => Some(all(meta.annotations.as_ref())),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    }
}

/// Files of a projected volume: configMap, secret and downwardAPI sources in one directory.
fn projected_files(
    volume: &str,
    pod: &Pod,
    source: &ProjectedVolumeSource,
    inputs: &PodInputs,
) -> Result<Files, VolumeError> {
    let default_mode = source.default_mode;
    let mut files = Files::new();
    for projection in source.sources.iter().flatten() {
        if let Some(map_source) = &projection.config_map {
            let optional = map_source.optional.unwrap_or(false);
            match inputs.config_maps.get(&map_source.name) {
                Some(map) => files.extend(project(
                    volume,
                    "configmap",
                    &config_map_data(map),
                    map_source.items.as_deref(),
                    default_mode,
                    optional,
                )?),
                None if optional => {}
                None => {
                    return Err(VolumeError::ConfigMapNotFound {
                        volume: volume.to_owned(),
                        name: map_source.name.clone(),
                    });
                }
            }
        }
        if let Some(secret_source) = &projection.secret {
            let optional = secret_source.optional.unwrap_or(false);
            match inputs.secrets.get(&secret_source.name) {
                Some(secret) => files.extend(project(
                    volume,
                    "secret",
                    &secret_data(secret),
                    secret_source.items.as_deref(),
                    default_mode,
                    optional,
                )?),
                None if optional => {}
                None => {
                    return Err(VolumeError::SecretNotFound {
                        volume: volume.to_owned(),
                        name: secret_source.name.clone(),
                    });
                }
            }
        }
        if let Some(downward) = &projection.downward_api {
            let mode = default_mode.map_or(0o644, |m| (m as u32) & 0o777);
            files.extend(downward_api_files(volume, pod, downward.items.iter().flatten(), mode)?);
        }
        if projection.service_account_token.is_some() {
            // No token issuer yet: the rest of the volume is still useful.
            tracing::warn!(volume, pod = ?pod.metadata.name, "serviceAccountToken projections are not supported; skipped");
        }
    }
    Ok(files)
}

fn volume_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|value| value.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()))
        .unwrap_or_else(|| "none".to_owned())
}

/// Files of a configMap/secret volume: every key, or only `items` with their paths and modes.
fn project(
    volume: &str,
    kind: &'static str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<BTreeMap<PathBuf, (Vec<u8>, u32)>, VolumeError> {
    let default_mode = default_mode.map_or(0o644, |m| (m as u32) & 0o777);
    let mut files = BTreeMap::new();
    match items {
        None | Some([]) => {
            for (key, bytes) in data {
                files.insert(PathBuf::from(key), (bytes.clone(), default_mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(bytes) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingKey { volume: volume.to_owned(), kind, key: item.key.clone() });
                };
                let path = PathBuf::from(&item.path);
                let safe = !item.path.is_empty()
                    && path.components().all(|c| matches!(c, Component::Normal(_)))
                    && !item.path.starts_with("..");
                if !safe {
                    return Err(VolumeError::InvalidPath { volume: volume.to_owned(), path: item.path.clone() });
                }
                let mode = item.mode.map_or(default_mode, |m| (m as u32) & 0o777);
                files.insert(path, (bytes.clone(), mode));
            }
        }
    }
    Ok(files)
}

const DATA_LINK: &str = "..data";

/// Writes `files` into `dir` with kubelet's atomic layout; a no-op when nothing changed.
pub fn write_atomic(dir: &Path, files: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let current = std::fs::read_link(dir.join(DATA_LINK)).ok();
    if let Some(current) = &current
        && same_contents(&dir.join(current), files)
    {
        return Ok(());
    }
    let stamp = format!("..{}", k8s_openapi::jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f"));
    let data_dir = dir.join(&stamp);
    std::fs::create_dir(&data_dir)?;
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))?;
    for (path, (bytes, mode)) in files {
        let target = data_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
    }
    let temporary_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary_link);
    std::os::unix::fs::symlink(&stamp, &temporary_link)?;
    std::fs::rename(&temporary_link, dir.join(DATA_LINK))?;

    let wanted: BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != DATA_LINK && name != stamp {
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if !wanted.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn same_contents(data_dir: &Path, files: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> bool {
    let mut existing = Vec::new();
    collect_files(data_dir, Path::new(""), &mut existing);
    existing.len() == files.len()
        && files.iter().all(|(path, (bytes, mode))| {
            let target = data_dir.join(path);
            std::fs::read(&target).is_ok_and(|current| current == *bytes)
                && std::fs::metadata(&target).is_ok_and(|m| m.permissions().mode() & 0o777 == *mode)
        })
}

fn collect_files(dir: &Path, relative: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let rel = relative.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_files(&entry.path(), &rel, out);
        } else {
            out.push(rel);
        }
    }
}

fn check_host_path(volume: &str, path: &Path, kind: &str) -> Result<(), VolumeError> {
    let mismatch =
        |expected| VolumeError::HostPathType { volume: volume.to_owned(), path: path.display().to_string(), expected };
    let meta = std::fs::metadata(path);
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(path).map_err(io_error(volume, path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io_error(volume, path))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_dir()) { Ok(()) } else { Err(mismatch("directory")) }
        }
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(mismatch("directory"))
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io_error(volume, path))?;
                }
                std::fs::File::create(path).map_err(io_error(volume, path))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io_error(volume, path))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_file()) { Ok(()) } else { Err(mismatch("file")) }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                Err(mismatch("file"))
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                Err(mismatch("socket"))
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                Err(mismatch("character device"))
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                Err(mismatch("block device"))
            }
        }
        _ => Err(mismatch("known hostPath type")),
    }
}

/// Whether something is mounted on `path` (its device differs from its parent's).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Some(parent)) = (std::fs::metadata(path), path.parent()) else { return false };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != meta.dev())
}

/// Unmounts tmpfs emptyDirs of a pod (before its directory is removed).
pub fn unmount_all(volumes_dir: &Path) {
    let empty_dirs = volumes_dir.join("empty-dir");
    for entry in std::fs::read_dir(&empty_dirs).into_iter().flatten().flatten() {
        let path = entry.path();
        if is_mount_point(&path)
            && let Err(error) = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH)
        {
            tracing::warn!(path = %path.display(), %error, "cannot unmount emptyDir");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapProjection, ConfigMapVolumeSource, HostPathVolumeSource, PodSpec};

    fn files(pairs: &[(&str, &str, u32)]) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        pairs.iter().map(|(p, c, m)| (PathBuf::from(p), (c.as_bytes().to_vec(), *m))).collect()
    }

    #[test]
    fn atomic_writer_swaps_contents_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        write_atomic(&vol, &files(&[("a.conf", "one", 0o644), ("sub/b.txt", "two", 0o600)])).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a.conf")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(vol.join("sub/b.txt")).unwrap(), "two");
        assert_eq!(std::fs::metadata(vol.join("sub/b.txt")).unwrap().permissions().mode() & 0o777, 0o600);
        let first = std::fs::read_link(vol.join("..data")).unwrap();

        // Same contents: nothing rewritten.
        write_atomic(&vol, &files(&[("a.conf", "one", 0o644), ("sub/b.txt", "two", 0o600)])).unwrap();
        assert_eq!(std::fs::read_link(vol.join("..data")).unwrap(), first);

        write_atomic(&vol, &files(&[("a.conf", "uno", 0o644)])).unwrap();
        assert_eq!(std::fs::read_to_string(vol.join("a.conf")).unwrap(), "uno");
        assert!(std::fs::symlink_metadata(vol.join("sub")).is_err());
        let names: Vec<String> =
            std::fs::read_dir(&vol).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("..") && *n != "..data").count(), 1, "{names:?}");
    }

    #[test]
    fn downward_api_projected_and_claim_volumes() {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::{
            Container, DownwardAPIProjection, DownwardAPIVolumeSource, ObjectFieldSelector,
            PersistentVolumeClaimVolumeSource, ResourceFieldSelector, ResourceRequirements, SecretProjection,
            ServiceAccountTokenProjection, VolumeProjection,
        };
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let dir = tempfile::tempdir().unwrap();
        let field = |path: &str, field_path: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector { field_path: field_path.into(), ..Default::default() }),
            ..Default::default()
        };
        let mut pod = pod(vec![
            Volume {
                name: "info".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![
                        field("name", "metadata.name"),
                        field("labels", "metadata.labels"),
                        field("tier", "metadata.labels['tier']"),
                        DownwardAPIVolumeFile {
                            path: "mem".into(),
                            resource_field_ref: Some(ResourceFieldSelector {
                                container_name: Some("app".into()),
                                resource: "limits.memory".into(),
                                divisor: Some(Quantity("1Mi".into())),
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "all".into(),
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o400),
                    sources: Some(vec![
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection { name: "site".into(), ..Default::default() }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            secret: Some(SecretProjection { name: "db".into(), ..Default::default() }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            downward_api: Some(DownwardAPIProjection {
                                items: Some(vec![field("ns", "metadata.namespace")]),
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                path: "token".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                }),
                ..Default::default()
            },
            Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    read_only: None,
                }),
                ..Default::default()
            },
        ]);
        pod.metadata.name = Some("web-0".into());
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.labels =
            Some([("app".to_owned(), "web".to_owned()), ("tier".to_owned(), "front".to_owned())].into());
        pod.spec.as_mut().unwrap().containers = vec![Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_owned(), Quantity("64Mi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let mut inputs = PodInputs::default();
        inputs.config_maps.insert(
            "site".into(),
            ConfigMap { data: Some([("index.html".to_owned(), "hi".to_owned())].into()), ..Default::default() },
        );
        inputs.secrets.insert(
            "db".into(),
            Secret {
                data: Some([("password".to_owned(), ByteString(b"s3cret".to_vec()))].into()),
                ..Default::default()
            },
        );

        // The claim is not bound yet.
        let error = prepare(&pod, dir.path(), &inputs).unwrap_err();
        assert!(matches!(error, VolumeError::ClaimNotBound { .. }), "{error}");

        let claim_dir = dir.path().join("pv-data");
        inputs.claims.insert("data".into(), claim_dir.clone());
        let prepared = prepare(&pod, dir.path(), &inputs).unwrap();
        assert_eq!(prepared["data"].host_path, claim_dir);
        assert!(!prepared["data"].force_read_only && claim_dir.is_dir());

        let info = &prepared["info"].host_path;
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap();
        assert_eq!(read(info.join("name")), "web-0");
        assert_eq!(read(info.join("labels")), "app=\"web\"\ntier=\"front\"");
        assert_eq!(read(info.join("tier")), "front");
        assert_eq!(read(info.join("mem")), "64");

        let all = &prepared["all"].host_path;
        assert!(prepared["all"].force_read_only);
        assert_eq!(read(all.join("index.html")), "hi");
        assert_eq!(read(all.join("password")), "s3cret");
        assert_eq!(read(all.join("ns")), "shop");
        assert_eq!(std::fs::metadata(all.join("password")).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(!all.join("token").exists(), "serviceAccountToken sources are skipped");

        // Labels change: the file follows on the next refresh.
        pod.metadata.labels.as_mut().unwrap().insert("tier".into(), "back".into());
        let prepared = prepare(&pod, dir.path(), &inputs).unwrap();
        assert_eq!(read(prepared["info"].host_path.join("tier")), "back");
    }

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod { spec: Some(PodSpec { volumes: Some(volumes), ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn config_map_items_modes_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = PodInputs::default();
        inputs.config_maps.insert(
            "site".into(),
            ConfigMap {
                data: Some(
                    [("index.html".to_owned(), "hi".to_owned()), ("nginx.conf".to_owned(), "x".to_owned())].into(),
                ),
                ..Default::default()
            },
        );
        let volume = |items: Option<Vec<KeyToPath>>, name: &str| Volume {
            name: "web".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                items,
                default_mode: Some(0o440),
                optional: None,
            }),
            ..Default::default()
        };
        let prepared = prepare(&pod(vec![volume(None, "site")]), dir.path(), &inputs).unwrap();
        let web = &prepared["web"];
        assert!(web.force_read_only);
        assert_eq!(std::fs::read_to_string(web.host_path.join("index.html")).unwrap(), "hi");
        assert_eq!(std::fs::metadata(web.host_path.join("index.html")).unwrap().permissions().mode() & 0o777, 0o440);

        let items = vec![KeyToPath { key: "nginx.conf".into(), path: "conf/site.conf".into(), mode: Some(0o600) }];
        let prepared = prepare(&pod(vec![volume(Some(items), "site")]), dir.path(), &inputs).unwrap();
        let conf = prepared["web"].host_path.join("conf/site.conf");
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "x");
        assert!(!prepared["web"].host_path.join("index.html").exists());

        let bad = vec![KeyToPath { key: "nope".into(), path: "p".into(), mode: None }];
        let error = prepare(&pod(vec![volume(Some(bad), "site")]), dir.path(), &inputs).unwrap_err();
        assert!(error.to_string().contains("non-existent config key: nope"), "{error}");
        let escape = vec![KeyToPath { key: "nginx.conf".into(), path: "../x".into(), mode: None }];
        assert!(matches!(
            prepare(&pod(vec![volume(Some(escape), "site")]), dir.path(), &inputs),
            Err(VolumeError::InvalidPath { .. })
        ));
        let error = prepare(&pod(vec![volume(None, "missing")]), dir.path(), &inputs).unwrap_err();
        assert_eq!(error.to_string(), "MountVolume.SetUp failed for volume \"web\" : configmap \"missing\" not found");
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("made/here");
        let volume = |path: &Path, kind: &str| Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource { path: path.display().to_string(), type_: Some(kind.into()) }),
            ..Default::default()
        };
        prepare(&pod(vec![volume(&target, "DirectoryOrCreate")]), dir.path(), &PodInputs::default()).unwrap();
        assert!(target.is_dir());
        let error = prepare(&pod(vec![volume(&target, "File")]), dir.path(), &PodInputs::default()).unwrap_err();
        assert!(error.to_string().contains("is not a file"), "{error}");
    }
}
