//! `berth image import`: docker-archive (`docker save`) and OCI-layout tarballs.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::store::{ImageRecord, ImageStore, ProgressFn, hex_of};
use crate::{ImageError, layer, reference};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One entry of a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An image found in an archive, before it is stored.
struct Found {
    names: Vec<String>,
    config_path: PathBuf,
    manifest: Option<(String, Vec<u8>)>,
    layer_paths: Vec<PathBuf>,
}

impl ImageStore {
    /// Imports every image of the tarball at `path` (optionally gzip- or zstd-compressed).
    /// `name` renames the image (the archive must then hold exactly one).
    pub fn import(
        &self,
        path: &Path,
        name: Option<&str>,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let file = File::open(path).map_err(ImageError::io(format!("opening {}", path.display())))?;
        let temp = self.temp_dir("import")?;
        let mut outer = tar::Archive::new(layer::decompressed(file)?);
        outer.set_preserve_ownerships(false);
        outer.unpack(&temp.0).map_err(ImageError::io(format!("unpacking {}", path.display())))?;
        let dir = &temp.0;
        let found = if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
            oci_layout(dir)?
        } else if dir.join("manifest.json").is_file() {
            docker_archive(dir)?
        } else {
            return Err(ImageError::UnknownArchive { path: path.to_owned() });
        };
        if name.is_some() && found.len() != 1 {
            return Err(ImageError::BadArchive(format!("--name needs one image, the archive has {}", found.len())));
        }
        let mut records = Vec::new();
        for image in found {
            let names = match name {
                Some(name) => vec![name.to_owned()],
                None => image.names.clone(),
            };
            let config_bytes = std::fs::read(&image.config_path)
                .map_err(ImageError::io(format!("reading {}", image.config_path.display())))?;
            if names.is_empty() {
                return Err(ImageError::Unnamed(format!("sha256:{}", hex_short(&config_bytes))));
            }
            let names = names.iter().map(|n| reference::normalize(n)).collect::<Result<Vec<_>, _>>()?;
            let config = ImageConfiguration::from_reader(config_bytes.as_slice())
                .map_err(|e| ImageError::BadArchive(format!("image config: {e}")))?;
            let diff_ids = config.rootfs().diff_ids().clone();
            if diff_ids.len() != image.layer_paths.len() {
                return Err(ImageError::BadArchive(format!(
                    "the config lists {} layers, the manifest {}",
                    diff_ids.len(),
                    image.layer_paths.len()
                )));
            }
            let total = diff_ids.len();
            for (index, (diff_id, layer_path)) in diff_ids.iter().zip(&image.layer_paths).enumerate() {
                if !self.layer_needed(diff_id, diff_id.clone(), (index, total), progress)? {
                    continue;
                }
                let file =
                    File::open(layer_path).map_err(ImageError::io(format!("opening {}", layer_path.display())))?;
                self.add_layer(diff_id, file)?;
            }
            let id = self.put_blob(&config_bytes)?;
            let manifest_digest = match &image.manifest {
                Some((digest, bytes)) => {
                    self.put_blob(bytes)?;
                    Some(digest.clone())
                }
                None => None,
            };
            for name in names {
                let record = ImageRecord {
                    name,
                    id: id.clone(),
                    manifest_digest: manifest_digest.clone(),
                    layers: diff_ids.clone(),
                    size: 0,
                    created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                };
                records.push(self.add_image(record)?);
            }
        }
        Ok(records)
    }
}

fn hex_short(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `relative` inside `dir`, refusing names that climb out.
fn inside(dir: &Path, relative: &str) -> Result<PathBuf, ImageError> {
    let path = Path::new(relative);
    if !path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ImageError::BadArchive(format!("path {relative:?} leaves the archive")));
    }
    Ok(dir.join(path))
}

fn blob_in(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join("blobs/sha256").join(hex_of(digest)?))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(ImageError::json(path.display().to_string()))
}

fn docker_archive(dir: &Path) -> Result<Vec<Found>, ImageError> {
    let manifests: Vec<DockerManifest> = read_json(&dir.join("manifest.json"))?;
    manifests
        .into_iter()
        .map(|manifest| {
            Ok(Found {
                names: manifest.repo_tags.unwrap_or_default(),
                config_path: inside(dir, &manifest.config)?,
                manifest: None,
                layer_paths: manifest.layers.iter().map(|l| inside(dir, l)).collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

fn oci_layout(dir: &Path) -> Result<Vec<Found>, ImageError> {
    let index = ImageIndex::from_file(dir.join("index.json"))
        .map_err(|e| ImageError::BadArchive(format!("index.json: {e}")))?;
    let mut found = Vec::new();
    for descriptor in index.manifests() {
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let name = annotations.get(CONTAINERD_NAME).or_else(|| annotations.get(OCI_REF_NAME)).cloned();
        let mut digest = descriptor.digest().to_string();
        if *descriptor.media_type() == MediaType::ImageIndex {
            // A multi-platform image: take this machine's platform, or the first one.
            let nested = ImageIndex::from_file(blob_in(dir, &digest)?)
                .map_err(|e| ImageError::BadArchive(format!("nested index {digest}: {e}")))?;
            let pick = nested
                .manifests()
                .iter()
                .find(|m| {
                    m.platform()
                        .as_ref()
                        .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == this_arch())
                })
                .or_else(|| nested.manifests().first())
                .ok_or_else(|| ImageError::BadArchive(format!("index {digest} lists no manifests")))?;
            digest = pick.digest().to_string();
        }
        let manifest_path = blob_in(dir, &digest)?;
        let manifest_bytes =
            std::fs::read(&manifest_path).map_err(ImageError::io(format!("reading manifest {digest}")))?;
        let manifest = ImageManifest::from_reader(manifest_bytes.as_slice())
            .map_err(|e| ImageError::BadArchive(format!("manifest {digest}: {e}")))?;
        for layer in manifest.layers() {
            check_layer_type(layer.media_type())?;
        }
        found.push(Found {
            names: name.into_iter().collect(),
            config_path: blob_in(dir, manifest.config().digest().as_ref())?,
            manifest: Some((digest, manifest_bytes)),
            layer_paths: manifest
                .layers()
                .iter()
                .map(|l| blob_in(dir, l.digest().as_ref()))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(found)
}

/// Layers must be tarballs (plain, gzip or zstd; OCI or Docker media types).
pub(crate) fn check_layer_type(media_type: &MediaType) -> Result<(), ImageError> {
    let text = media_type.to_string();
    let ok = matches!(
        media_type,
        MediaType::ImageLayer
            | MediaType::ImageLayerGzip
            | MediaType::ImageLayerZstd
            | MediaType::ImageLayerNonDistributable
            | MediaType::ImageLayerNonDistributableGzip
            | MediaType::ImageLayerNonDistributableZstd
    ) || text.starts_with("application/vnd.docker.image.rootfs.");
    if ok { Ok(()) } else { Err(ImageError::UnsupportedMediaType(text)) }
}

/// This machine's architecture in OCI's words.
fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
