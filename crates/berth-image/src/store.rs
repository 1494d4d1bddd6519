//! The store on disk: blobs, unpacked layers and the index of names.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{self, ImageDefaults, UserSpec};
use crate::{ImageError, layer, reference};

/// One named image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The config blob's digest (`sha256:...`): the image ID.
    pub id: String,
    /// The manifest's digest when the image came from a registry or an OCI layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Layer diff_ids, bottom first.
    pub layers: Vec<String>,
    /// Bytes of the unpacked layers, as first unpacked.
    pub size: u64,
    /// When the image was stored (RFC 3339).
    pub created: String,
}

impl ImageRecord {
    /// The `imageID` Kubernetes shows: `name@digest` for pulled images, the ID otherwise.
    pub fn image_id(&self) -> String {
        match &self.manifest_digest {
            Some(digest) => {
                let repo =
                    self.name.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(&*self.name, |r| r.0);
                format!("{repo}@{digest}")
            }
            None => self.id.clone(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: Vec<ImageRecord>,
}

/// An image ready to run: its record, process defaults and layer directories.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub record: ImageRecord,
    pub defaults: ImageDefaults,
    /// Unpacked layers, topmost first (the order overlayfs `lowerdir` wants).
    pub layer_dirs: Vec<PathBuf>,
}

impl ResolvedImage {
    /// The image's `User`, resolved through its own `/etc/passwd`; `None` if it sets none.
    pub fn user(&self) -> Option<UserSpec> {
        let user = self.defaults.user.as_deref()?;
        config::resolve_user(user, &self.layer_dirs)
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub images: Vec<String>,
    pub layers: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Progress of an import or pull, for a CLI to show.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Layer `index` of `total` is being fetched/unpacked.
    Layer { index: usize, total: usize, digest: String },
    /// The layer was already in the store.
    LayerPresent { index: usize, total: usize, digest: String },
    /// `bytes` more of the current layer arrived.
    Bytes(u64),
}

pub(crate) type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// The local image store rooted at one directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

pub(crate) fn hex_of(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(hex)
    } else {
        Err(ImageError::BadArchive(format!("unsupported digest {digest:?} (only sha256 is)")))
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers", "tmp"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).map_err(ImageError::io(format!("creating {}", path.display())))?;
        }
        Ok(ImageStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the unpacked layer with `diff_id`.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(hex_of(diff_id)?))
    }

    /// Whether layer `index` of `total` (`diff_id`, shown as `digest`) still has to be fetched
    /// or unpacked; reports it either way.
    pub(crate) fn layer_needed(
        &self,
        diff_id: &str,
        digest: String,
        (index, total): (usize, usize),
        progress: Option<ProgressFn<'_>>,
    ) -> Result<bool, ImageError> {
        let present = self.layer_dir(diff_id)?.is_dir();
        if let Some(report) = progress {
            report(if present {
                Progress::LayerPresent { index, total, digest }
            } else {
                Progress::Layer { index, total, digest }
            });
        }
        Ok(!present)
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    /// Holds the store's lock until dropped.
    fn lock(&self) -> Result<File, ImageError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(format!("opening {}", path.display())))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ImageError::io("locking the image store")(e.into()))?;
        Ok(file)
    }

    fn read_index(&self) -> Result<Index, ImageError> {
        let path = self.root.join("images.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(ImageError::json(path.display().to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(error) => Err(ImageError::io(format!("reading {}", path.display()))(error)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(ImageError::json("the image index"))?;
        write_atomic(&self.root.join("images.json"), &bytes, &self.root.join("tmp"))
    }

    /// Every stored image, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut images = self.read_index()?.images;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// The image called `name` (normalised first), or whose ID starts with `name`.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let index = self.read_index()?;
        Ok(find(&index, name).map(|i| index.images[i].clone()))
    }

    /// The image called `name` with everything needed to run it.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage, ImageError> {
        let record = self.get(name)?.ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
        let config = self.read_config(&record.id)?;
        let mut layer_dirs = Vec::new();
        for diff_id in record.layers.iter().rev() {
            let dir = self.layer_dir(diff_id)?;
            if !dir.is_dir() {
                return Err(ImageError::BadArchive(format!("layer {diff_id} of {} is missing", record.name)));
            }
            layer_dirs.push(dir);
        }
        Ok(ResolvedImage { defaults: ImageDefaults::from_config(&config), record, layer_dirs })
    }

    pub(crate) fn read_config(&self, id: &str) -> Result<ImageConfiguration, ImageError> {
        let path = self.blob_path(id)?;
        let file = File::open(&path).map_err(ImageError::io(format!("opening {}", path.display())))?;
        ImageConfiguration::from_reader(file).map_err(|e| ImageError::BadArchive(format!("image config {id}: {e}")))
    }

    /// Stores `bytes` as a blob; returns its digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            write_atomic(&path, bytes, &self.root.join("tmp"))?;
        }
        Ok(digest)
    }

    /// A fresh directory under `tmp/`, removed when the guard drops.
    pub(crate) fn temp_dir(&self, label: &str) -> Result<TempDir, ImageError> {
        let path = self.root.join("tmp").join(format!("{label}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&path).map_err(ImageError::io(format!("creating {}", path.display())))?;
        Ok(TempDir(path))
    }

    /// Unpacks the layer `diff_id` from `reader` unless it is already stored. The content is
    /// checked against `diff_id` before the layer becomes visible.
    pub(crate) fn add_layer(&self, diff_id: &str, reader: impl Read) -> Result<(), ImageError> {
        let dest = self.layer_dir(diff_id)?;
        if dest.is_dir() {
            return Ok(());
        }
        let temp = self.temp_dir("layer")?;
        let actual = layer::unpack(reader, &temp.0)?;
        if actual != diff_id {
            return Err(ImageError::DigestMismatch { expected: diff_id.to_owned(), actual });
        }
        let size = dir_size(&temp.0);
        match std::fs::rename(&temp.0, &dest) {
            Ok(()) => {
                std::mem::forget(temp);
                tracing::debug!(%diff_id, size, "layer unpacked");
                Ok(())
            }
            // Someone else unpacked the same layer meanwhile.
            Err(_) if dest.is_dir() => Ok(()),
            Err(error) => Err(ImageError::io(format!("moving layer to {}", dest.display()))(error)),
        }
    }

    /// Records `record` (replacing an image of the same name).
    pub(crate) fn add_image(&self, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        record.size =
            record.layers.iter().filter_map(|diff_id| self.layer_dir(diff_id).ok()).map(|dir| dir_size(&dir)).sum();
        let mut index = self.read_index()?;
        index.images.retain(|image| image.name != record.name);
        index.images.push(record.clone());
        self.write_index(&index)?;
        Ok(record)
    }

    /// Forgets the image `name` and removes the layers and blobs nothing else uses.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let removed = {
            let _lock = self.lock()?;
            let mut index = self.read_index()?;
            let position = find(&index, name).ok_or_else(|| ImageError::NotFound(name.to_owned()))?;
            let removed = index.images.remove(position);
            self.write_index(&index)?;
            removed
        };
        self.gc(None)?;
        Ok(removed)
    }

    /// Removes unreferenced layers and blobs. With `keep`, images whose name is not in it are
    /// removed first (the node passes the images its containers use).
    pub fn gc(&self, keep: Option<&HashSet<String>>) -> Result<GcReport, ImageError> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        let mut index = self.read_index()?;
        if let Some(keep) = keep {
            let (kept, dropped): (Vec<_>, Vec<_>) =
                index.images.into_iter().partition(|image| keep.contains(&image.name));
            report.images = dropped.into_iter().map(|image| image.name).collect();
            index.images = kept;
            self.write_index(&index)?;
        }
        let mut layers: BTreeSet<String> = BTreeSet::new();
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        for image in &index.images {
            for diff_id in &image.layers {
                layers.insert(hex_of(diff_id)?.to_owned());
            }
            blobs.insert(hex_of(&image.id)?.to_owned());
            if let Some(digest) = &image.manifest_digest {
                blobs.insert(hex_of(digest)?.to_owned());
            }
        }
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for entry in std::fs::read_dir(self.root.join("layers")).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // A layer under a running container's overlay stays until that container is gone.
            if layers.contains(&name) || mounted.contains(&*path.to_string_lossy()) {
                continue;
            }
            report.bytes += dir_size(&path);
            std::fs::remove_dir_all(&path).map_err(ImageError::io(format!("removing {}", path.display())))?;
            report.layers += 1;
        }
        for entry in std::fs::read_dir(self.root.join("blobs/sha256")).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if blobs.contains(&name) {
                continue;
            }
            report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(entry.path()).map_err(ImageError::io("removing a blob"))?;
            report.blobs += 1;
        }
        Ok(report)
    }
}

fn find(index: &Index, name: &str) -> Option<usize> {
    if let Ok(normalized) = reference::normalize(name)
        && let Some(i) = index.images.iter().position(|image| image.name == normalized)
    {
        return Some(i);
    }
    let id = name.strip_prefix("sha256:").unwrap_or(name);
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let matches: Vec<usize> = index
        .images
        .iter()
        .enumerate()
        .filter(|(_, image)| image.id.strip_prefix("sha256:").unwrap_or(&image.id).starts_with(id))
        .map(|(i, _)| i)
        .collect();
    (matches.len() == 1).then(|| matches[0])
}

/// Removes its directory when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_atomic(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<(), ImageError> {
    let temp = tmp_dir.join(format!("write-{:016x}", rand::random::<u64>()));
    std::fs::write(&temp, bytes).map_err(ImageError::io(format!("writing {}", temp.display())))?;
    std::fs::rename(&temp, path).map_err(ImageError::io(format!("writing {}", path.display())))
}

/// Bytes in regular files below `dir` (hard links counted once per name; good enough here).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}
