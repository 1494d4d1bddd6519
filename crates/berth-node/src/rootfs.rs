//! The built-in `host` image: the machine's own `/usr`, `/bin`, `/sbin`, `/lib*` and `/etc`,
//! bind-mounted read-only into a per-container root that holds its own `/tmp`, `/var`, `/run`
//! and `/root`. `/var` starts as a copy of the host's directory skeleton (no files), so
//! programs find the directories their packages expect (`/var/log/nginx`, `/var/lib/nginx`).
//!
//! That root is an overlay, mounted as an image's is ([`crate::images::mount_rootfs`]): one
//! read-only skeleton on the run tmpfs, built once per host layout ([`HostImage::skeleton`]),
//! under a per-attempt upper directory on disk that takes the container's writes.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::oci::Mount;

/// The image name that selects the host's own filesystem.
pub const HOST_IMAGE: &str = "host";

#[derive(Debug, thiserror::Error)]
#[error("preparing container root {path}: {source}")]
pub struct RootfsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Where a container mount lands, and whether it is a directory (or a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountTarget {
    pub destination: String,
    pub is_dir: bool,
}

/// How a top-level host directory appears in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopLevel {
    /// Merged-/usr systems: `/bin -> usr/bin` is recreated as the same symlink.
    Symlink {
        name: String,
        target: PathBuf,
    },
    BindReadOnly {
        name: String,
    },
}

#[derive(Debug, Clone)]
struct SkeletonEntry {
    relative: PathBuf,
    kind: SkeletonKind,
}

#[derive(Debug, Clone)]
enum SkeletonKind {
    Dir { mode: u32, uid: u32, gid: u32 },
    Symlink(PathBuf),
}

/// What the `host` image is made of, read once from the machine.
#[derive(Debug, Clone)]
pub struct HostImage {
    top_level: Vec<TopLevel>,
    var_skeleton: Vec<SkeletonEntry>,
}

const SHARED_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];
/// Deep enough for `/var/lib/<package>/<dir>`; bounded so a huge `/var` costs little.
const SKELETON_DEPTH: usize = 3;
const SKELETON_MAX_ENTRIES: usize = 4000;
/// The container's own top-level directories (parents first) and their modes.
const OWN_DIRS: &[(&str, u32)] =
    &[("tmp", 0o1777), ("run", 0o755), ("run/lock", 0o1777), ("root", 0o700), ("home", 0o755)];

impl HostImage {
    /// Reads the host's layout. `exclude` (the data dir) is left out of the `/var` skeleton.
    pub fn from_host(exclude: &Path) -> HostImage {
        let mut top_level = Vec::new();
        for name in SHARED_DIRS {
            let path = Path::new("/").join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&path) {
                        top_level.push(TopLevel::Symlink { name: (*name).to_owned(), target });
                    }
                }
                Ok(meta) if meta.is_dir() => top_level.push(TopLevel::BindReadOnly { name: (*name).to_owned() }),
                _ => {}
            }
        }
        let mut var_skeleton = Vec::new();
        collect_skeleton(Path::new("/var"), Path::new(""), 1, exclude, &mut var_skeleton);
        HostImage { top_level, var_skeleton }
    }

    /// The shared read-only lower directory of every `image: host` container's root, below
    /// `skeletons_dir` (on the node's run tmpfs), built on first use and kept: the top-level
    /// mount points and symlinks, `/tmp`, `/run`, `/root`, `/home` with their modes, and the
    /// `/var` skeleton. Each container's overlay root puts its own upper directory on it.
    ///
    /// It is named by a hash of its content, so a Berth restart with a changed host layout
    /// builds a new one beside it and never changes one that live overlays use. Directories of
    /// older layouts are left: finding whether a live overlay still uses one needs the kernel's
    /// mount table, they hold a few hundred empty directories, and a reboot clears the tmpfs.
    pub fn skeleton(&self, skeletons_dir: &Path) -> Result<PathBuf, RootfsError> {
        let dir = skeletons_dir.join(self.content_id());
        if dir.is_dir() {
            return Ok(dir);
        }
        // Built under another name and renamed, so a directory with the final name is whole.
        let partial = skeletons_dir.join(format!("{}.partial", self.content_id()));
        match std::fs::remove_dir_all(&partial) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(RootfsError { path: partial, source: error });
            }
            _ => {}
        }
        self.build_skeleton(&partial)?;
        if let Err(source) = std::fs::rename(&partial, &dir) {
            if !dir.is_dir() {
                return Err(RootfsError { path: dir, source });
            }
            // Another start built it meanwhile: that one is whole too.
            let _ = std::fs::remove_dir_all(&partial);
        }
        Ok(dir)
    }

    /// A name for what [`Self::build_skeleton`] makes: the first 16 hex digits of a SHA-256
    /// over a description of every entry (and a version of that description).
    fn content_id(&self) -> String {
        use sha2::Digest;
        use std::os::unix::ffi::OsStrExt;
        let mut hash = sha2::Sha256::new();
        hash.update(b"berth host skeleton 1\n");
        let mut line = |parts: &[&[u8]]| {
            for part in parts {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part);
            }
        };
        for entry in &self.top_level {
            match entry {
                TopLevel::Symlink { name, target } => line(&[b"L", name.as_bytes(), target.as_os_str().as_bytes()]),
                TopLevel::BindReadOnly { name } => line(&[b"B", name.as_bytes()]),
            }
        }
        for (name, mode) in OWN_DIRS {
            line(&[b"O", name.as_bytes(), &mode.to_le_bytes()]);
        }
        for entry in &self.var_skeleton {
            let relative = entry.relative.as_os_str().as_bytes();
            match &entry.kind {
                SkeletonKind::Dir { mode, uid, gid } => {
                    line(&[b"D", relative, &mode.to_le_bytes(), &uid.to_le_bytes(), &gid.to_le_bytes()]);
                }
                SkeletonKind::Symlink(target) => line(&[b"S", relative, target.as_os_str().as_bytes()]),
            }
        }
        hex::encode(&hash.finalize()[..8])
    }

    /// Builds the skeleton in `root` (which must not exist yet or be empty).
    fn build_skeleton(&self, root: &Path) -> Result<(), RootfsError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| RootfsError { path, source }
        };
        std::fs::create_dir_all(root).map_err(err(root))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).map_err(err(root))?;
        for entry in &self.top_level {
            match entry {
                TopLevel::Symlink { name, target } => {
                    let link = root.join(name);
                    std::os::unix::fs::symlink(target, &link).map_err(err(&link))?;
                }
                TopLevel::BindReadOnly { name } => {
                    let dir = root.join(name);
                    std::fs::create_dir(&dir).map_err(err(&dir))?;
                }
            }
        }
        for (name, mode) in OWN_DIRS {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).map_err(err(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(*mode)).map_err(err(&dir))?;
        }
        let var = root.join("var");
        std::fs::create_dir_all(&var).map_err(err(&var))?;
        for entry in &self.var_skeleton {
            let path = var.join(&entry.relative);
            match &entry.kind {
                SkeletonKind::Dir { mode, uid, gid } => {
                    std::fs::create_dir(&path).map_err(err(&path))?;
                    std::os::unix::fs::chown(&path, Some(*uid), Some(*gid)).map_err(err(&path))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(err(&path))?;
                }
                SkeletonKind::Symlink(target) => {
                    std::os::unix::fs::symlink(target, &path).map_err(err(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Read-only mounts of the shared host directories for a container whose other mounts land
    /// at `targets`. A target that does not exist on the host below a shared directory (a
    /// configMap at `/etc/site`) needs a mount point there, which a read-only bind of the host's
    /// directory cannot get. Such a directory becomes a read-only overlay instead: the host's
    /// directory under a per-container skeleton (`skeleton_dir/<name>`) holding just those
    /// mount points. The host's files stay read-only to the pod and the host is never written.
    pub fn mounts_for(&self, targets: &[MountTarget], skeleton_dir: &Path) -> Result<Vec<Mount>, RootfsError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| RootfsError { path, source }
        };
        let mut overlaid: BTreeSet<String> = BTreeSet::new();
        for target in targets {
            let Some(relative) = self.shared_relative_path(&target.destination) else { continue };
            let host_path = Path::new("/").join(&relative);
            if std::fs::symlink_metadata(&host_path).is_ok() {
                continue;
            }
            let mount_point = skeleton_dir.join(&relative);
            let parent = if target.is_dir { Some(mount_point.as_path()) } else { mount_point.parent() };
            if let Some(parent) = parent {
                std::fs::create_dir_all(parent).map_err(err(parent))?;
            }
            if !target.is_dir && std::fs::symlink_metadata(&mount_point).is_err() {
                std::fs::File::create(&mount_point).map_err(err(&mount_point))?;
            }
            if let Some(std::path::Component::Normal(name)) = relative.components().next() {
                overlaid.insert(name.to_string_lossy().into_owned());
            }
        }
        let mut mounts = Vec::new();
        for entry in &self.top_level {
            let TopLevel::BindReadOnly { name } = entry else { continue };
            let path = format!("/{name}");
            if !overlaid.contains(name) {
                mounts.push(Mount::new(&path, "bind", &path, &["rbind", "rprivate", "ro", "nosuid", "nodev"]));
                continue;
            }
            let upper = skeleton_dir.join(name);
            let upper_text = upper.display().to_string();
            // overlayfs splits its options on ',' and layers on ':'.
            if upper_text.contains([',', ':']) {
                return Err(RootfsError {
                    path: upper,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path unusable as an overlay layer"),
                });
            }
            let lower = format!("lowerdir={upper_text}:{path}");
            mounts.push(Mount::new(&path, "overlay", "overlay", &[lower.as_str(), "ro", "nosuid", "nodev"]));
        }
        Ok(mounts)
    }

    /// `destination` relative to `/` with the host's top-level symlinks (`/bin -> usr/bin`)
    /// resolved, when it lies below a shared directory; `None` otherwise.
    fn shared_relative_path(&self, destination: &str) -> Option<PathBuf> {
        let mut parts: Vec<PathBuf> = Vec::new();
        for component in Path::new(destination).components() {
            match component {
                std::path::Component::Normal(part) => parts.push(PathBuf::from(part)),
                std::path::Component::ParentDir => return None,
                _ => {}
            }
        }
        let first = parts.first()?.to_string_lossy().into_owned();
        let mut relative = PathBuf::new();
        let mut shared = false;
        for entry in &self.top_level {
            match entry {
                TopLevel::Symlink { name, target } if *name == first && target.is_relative() => {
                    relative.push(target);
                    shared = self
                        .top_level
                        .iter()
                        .any(|e| matches!(e, TopLevel::BindReadOnly { name } if target.starts_with(name)));
                }
                TopLevel::BindReadOnly { name } if *name == first => {
                    relative.push(name);
                    shared = true;
                }
                _ => {}
            }
        }
        if !shared || parts.len() < 2 {
            return None;
        }
        relative.extend(&parts[1..]);
        Some(relative)
    }

    /// Read-only bind mounts of the shared host directories, for the OCI spec.
    pub fn mounts(&self) -> Vec<Mount> {
        self.top_level
            .iter()
            .filter_map(|entry| match entry {
                TopLevel::BindReadOnly { name } => {
                    let path = format!("/{name}");
                    Some(Mount::new(&path, "bind", &path, &["rbind", "rprivate", "ro", "nosuid", "nodev"]))
                }
                TopLevel::Symlink { .. } => None,
            })
            .collect()
    }
}

fn collect_skeleton(host_dir: &Path, relative: &Path, depth: usize, exclude: &Path, out: &mut Vec<SkeletonEntry>) {
    let Ok(entries) = std::fs::read_dir(host_dir) else { return };
    let Ok(dir_meta) = std::fs::metadata(host_dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        if out.len() >= SKELETON_MAX_ENTRIES {
            return;
        }
        let host_path = entry.path();
        // Where Berth keeps its state is nobody's business inside a container.
        if host_path.starts_with(exclude) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&host_path) else { continue };
        let rel = relative.join(entry.file_name());
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(&host_path) {
                out.push(SkeletonEntry { relative: rel, kind: SkeletonKind::Symlink(target) });
            }
        } else if meta.is_dir() && meta.dev() == dir_meta.dev() {
            out.push(SkeletonEntry {
                relative: rel.clone(),
                kind: SkeletonKind::Dir { mode: meta.mode() & 0o7777, uid: meta.uid(), gid: meta.gid() },
            });
            if depth < SKELETON_DEPTH {
                collect_skeleton(&host_path, &rel, depth + 1, exclude, out);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_image_mirrors_the_host_layout() {
        let data_dir = tempfile::tempdir().unwrap();
        let image = HostImage::from_host(data_dir.path());
        let skeletons = data_dir.path().join("skeletons");
        let rootfs = image.skeleton(&skeletons).unwrap();
        // Built once: the same layout finds the same directory, whole (no partial one left).
        assert_eq!(image.skeleton(&skeletons).unwrap(), rootfs);
        assert_eq!(std::fs::read_dir(&skeletons).unwrap().count(), 1);
        // Another layout gets a directory of its own; the first one is not touched.
        let mut changed = image.clone();
        changed.var_skeleton.push(SkeletonEntry {
            relative: PathBuf::from("berth-test"),
            kind: SkeletonKind::Dir { mode: 0o755, uid: 0, gid: 0 },
        });
        let other = changed.skeleton(&skeletons).unwrap();
        assert_ne!(other, rootfs);
        assert!(other.join("var/berth-test").is_dir() && !rootfs.join("var/berth-test").exists());

        // /usr is always shared read-only; /bin is either a bind or the same symlink.
        assert!(image.mounts().iter().any(|m| m.destination == "/usr" && m.options.contains(&"ro".to_owned())));
        let host_bin = std::fs::symlink_metadata("/bin").unwrap();
        let pod_bin = std::fs::symlink_metadata(rootfs.join("bin")).unwrap();
        assert_eq!(host_bin.file_type().is_symlink(), pod_bin.file_type().is_symlink());
        let tmp_mode = std::fs::metadata(rootfs.join("tmp")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(tmp_mode, 0o1777);
        if Path::new("/var/log").is_dir() {
            assert!(rootfs.join("var/log").is_dir());
        }
        // No host file content is copied into /var.
        let files = walk_files(&rootfs.join("var"));
        assert!(files.is_empty(), "{files:?}");
    }

    #[test]
    fn missing_mount_points_under_shared_directories_use_an_overlay() {
        let data_dir = tempfile::tempdir().unwrap();
        let image = HostImage::from_host(data_dir.path());
        let skeleton = data_dir.path().join("mountpoints");
        let target = |destination: &str, is_dir: bool| MountTarget { destination: destination.to_owned(), is_dir };
        // Only existing host paths: plain read-only binds, no skeleton.
        let mounts = image.mounts_for(&[target("/etc/hosts", false)], &skeleton).unwrap();
        assert_eq!(mounts, image.mounts());
        assert!(!skeleton.exists());

        let targets = [target("/etc/berth-test-site", true), target("/etc/berth-test-app/app.conf", false)];
        let mounts = image.mounts_for(&targets, &skeleton).unwrap();
        let etc = mounts.iter().find(|m| m.destination == "/etc").unwrap();
        assert_eq!(etc.kind, "overlay");
        let lower = format!("lowerdir={}:/etc", skeleton.join("etc").display());
        assert_eq!(etc.options, vec![lower, "ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()]);
        assert!(skeleton.join("etc/berth-test-site").is_dir());
        assert!(skeleton.join("etc/berth-test-app/app.conf").is_file());
        // The other shared directories stay binds.
        let usr = mounts.iter().find(|m| m.destination == "/usr").unwrap();
        assert_eq!(usr.kind, "bind");
        // Nothing outside the shared directories is touched.
        image.mounts_for(&[target("/data/x", true)], &skeleton).unwrap();
        assert!(!skeleton.join("data").exists());
    }

    #[test]
    fn skeleton_skips_the_data_dir() {
        let image = HostImage::from_host(Path::new("/var/lib"));
        assert!(image.var_skeleton.iter().all(|e| !e.relative.starts_with("lib")));
    }

    fn walk_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                found.extend(walk_files(&entry.path()));
            } else if meta.is_file() {
                found.push(entry.path());
            }
        }
        found
    }
}
