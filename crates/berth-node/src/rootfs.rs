//! The built-in `host` image: the machine's own `/usr`, `/bin`, `/sbin`, `/lib*` and `/etc`,
//! bind-mounted read-only into a per-container root that holds its own `/tmp`, `/var`, `/run`
//! and `/root`. `/var` starts as a copy of the host's directory skeleton (no files), so
//! programs find the directories their packages expect (`/var/log/nginx`, `/var/lib/nginx`).

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

    /// Builds a fresh container root in `rootfs` (which must not exist yet or be empty).
    pub fn prepare_rootfs(&self, rootfs: &Path) -> Result<(), RootfsError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| RootfsError { path, source }
        };
        std::fs::create_dir_all(rootfs).map_err(err(rootfs))?;
        for entry in &self.top_level {
            match entry {
                TopLevel::Symlink { name, target } => {
                    let link = rootfs.join(name);
                    std::os::unix::fs::symlink(target, &link).map_err(err(&link))?;
                }
                TopLevel::BindReadOnly { name } => {
                    let dir = rootfs.join(name);
                    std::fs::create_dir(&dir).map_err(err(&dir))?;
                }
            }
        }
        for (name, mode) in [("tmp", 0o1777), ("run", 0o755), ("run/lock", 0o1777), ("root", 0o700), ("home", 0o755)] {
            let dir = rootfs.join(name);
            std::fs::create_dir_all(&dir).map_err(err(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(err(&dir))?;
        }
        let var = rootfs.join("var");
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
        let rootfs = data_dir.path().join("rootfs");
        image.prepare_rootfs(&rootfs).unwrap();

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
