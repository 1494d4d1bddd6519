//! Where the node keeps what under its data dir (`<data-dir>/node`).
//!
//! What must outlive a reboot stays on disk: logs (`pods/<uid>/<container>/<attempt>.log`),
//! volumes (`pods/<uid>/_volumes`), containers' writable layers (`pods/<uid>/_layers`), the
//! image store and PersistentVolumes. The state of what runs now, which a reboot ends anyway,
//! lives under `run/`, a tmpfs Berth mounts on start (as container runtimes keep theirs under
//! `/run`): sandboxes (`run/pods/<uid>/_sandbox`), bundles and shim state
//! (`run/pods/<uid>/_containers/<name>-<attempt>`), the OCI runtimes' state (`run/oci`,
//! `run/runc`), IP allocations (`run/ipam`), the `host` image's skeleton (`run/host-root`) and
//! the anchor of the namespace pods' namespaces are pinned in (`run/pins`).
//! Starting a pod then creates almost no inodes on the disk's filesystem, which is slow at
//! that right after many deletions (ext4).
//!
//! The tmpfs outlives `berth server` (restarts and upgrades adopt the pods it describes) and
//! is gone after a reboot, as are the containers. Versions before this layout kept sandboxes
//! and bundles in `pods/<uid>/` and the OCI state in `oci/` and `runc/`; pods they started are
//! still found there (see [`legacy_pod_dir`]) until they are removed.

use std::path::{Path, PathBuf};

use crate::oci_runtime::RuntimeKind;

/// The run directory, relative to the node's data dir.
pub const RUN_DIR: &str = "run";
/// Size cap of the run tmpfs. Bundles and state files take a few tens of KiB per container;
/// the rest bounds what containers write to their termination message files (memory charged
/// to the writing container's cgroup). Containers' own roots are on disk ([`layer_dir`]).
pub const RUN_TMPFS_SIZE: &str = "256m";

const SANDBOX_DIR: &str = "_sandbox";
const CONTAINERS_DIR: &str = "_containers";
const LAYERS_DIR: &str = "_layers";
const SANDBOX_FILE: &str = "sandbox.json";

/// How the run directory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDir {
    /// A tmpfs this start mounted.
    Mounted,
    /// A tmpfs mounted by an earlier start (its pods are adopted).
    Adopted,
    /// A plain directory on the data dir's filesystem (no tmpfs could be mounted, or the
    /// directory already held state from such a start).
    Disk,
}

pub fn run_dir(node_dir: &Path) -> PathBuf {
    node_dir.join(RUN_DIR)
}

/// The disk directory of pod `uid`: logs, volumes, writable layers.
pub fn disk_pod_dir(node_dir: &Path, uid: &str) -> PathBuf {
    node_dir.join("pods").join(uid)
}

/// The run-time directory of pod `uid`: sandbox and containers.
pub fn run_pod_dir(node_dir: &Path, uid: &str) -> PathBuf {
    run_dir(node_dir).join("pods").join(uid)
}

/// Where versions before the run directory kept pod `uid`'s sandbox and containers (the same
/// directory as its logs).
pub fn legacy_pod_dir(node_dir: &Path, uid: &str) -> PathBuf {
    disk_pod_dir(node_dir, uid)
}

/// The sandbox directory of pod `uid`: the run directory's, unless the pod's sandbox was made
/// by an older version and is recorded only at the old place.
pub fn sandbox_dir(node_dir: &Path, uid: &str) -> PathBuf {
    let current = run_pod_dir(node_dir, uid).join(SANDBOX_DIR);
    let legacy = legacy_pod_dir(node_dir, uid).join(SANDBOX_DIR);
    if !current.join(SANDBOX_FILE).exists() && legacy.join(SANDBOX_FILE).exists() { legacy } else { current }
}

/// Both places a sandbox of pod `uid` may be, current first.
pub fn sandbox_dirs(node_dir: &Path, uid: &str) -> [PathBuf; 2] {
    [run_pod_dir(node_dir, uid).join(SANDBOX_DIR), legacy_pod_dir(node_dir, uid).join(SANDBOX_DIR)]
}

/// Where new container attempts of pod `uid` keep their bundles.
pub fn containers_dir(node_dir: &Path, uid: &str) -> PathBuf {
    run_pod_dir(node_dir, uid).join(CONTAINERS_DIR)
}

/// Both places container attempts of pod `uid` may be, current first.
pub fn containers_dirs(node_dir: &Path, uid: &str) -> [PathBuf; 2] {
    [containers_dir(node_dir, uid), legacy_pod_dir(node_dir, uid).join(CONTAINERS_DIR)]
}

/// The state directory of a new container attempt.
pub fn container_dir(node_dir: &Path, uid: &str, name: &str, attempt: u32) -> PathBuf {
    containers_dir(node_dir, uid).join(format!("{name}-{attempt}"))
}

/// The on-disk home of an attempt's writable layer (`upper`, `work`; versions before the
/// `host` image's overlay kept an `image: host` container's whole `rootfs` here): what a
/// container writes to its root filesystem is disk, not memory, as with any runtime's snapshots.
pub fn layer_dir(node_dir: &Path, uid: &str, name: &str, attempt: u32) -> PathBuf {
    disk_pod_dir(node_dir, uid).join(LAYERS_DIR).join(format!("{name}-{attempt}"))
}

/// Where the runtime of `kind` keeps its containers' state.
pub fn state_root(node_dir: &Path, kind: RuntimeKind) -> PathBuf {
    run_dir(node_dir).join(kind_dir(kind))
}

/// Where the runtime of `kind` kept its state before the run directory.
pub fn legacy_state_root(node_dir: &Path, kind: RuntimeKind) -> PathBuf {
    node_dir.join(kind_dir(kind))
}

fn kind_dir(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Runc => "runc",
        RuntimeKind::Libcontainer => "oci",
    }
}

/// The OCI state root of the container whose state directory is `state_dir`: containers
/// started before the run directory keep theirs at the old place.
pub fn state_root_for(node_dir: &Path, kind: RuntimeKind, state_dir: &Path) -> PathBuf {
    if state_dir.starts_with(node_dir.join("pods")) {
        legacy_state_root(node_dir, kind)
    } else {
        state_root(node_dir, kind)
    }
}

/// Where the `host` image's read-only skeletons are (one per host layout, see
/// [`crate::rootfs::HostImage::skeleton`]): the lower directory of `image: host` roots.
pub fn host_skeletons_dir(node_dir: &Path) -> PathBuf {
    run_dir(node_dir).join("host-root")
}

/// Where the pin namespace is anchored (see [`crate::namespaces`]).
pub fn pin_anchor(node_dir: &Path) -> PathBuf {
    run_dir(node_dir).join("pins")
}

pub fn ipam_dir(node_dir: &Path) -> PathBuf {
    run_dir(node_dir).join("ipam")
}

/// Where IP allocations were kept before the run directory.
pub fn legacy_ipam_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("network").join("ipam")
}

/// UIDs of every pod with a directory in either place, sorted, each once.
pub fn pod_uids(node_dir: &Path) -> Vec<String> {
    let mut uids: Vec<String> = [node_dir.join("pods"), run_dir(node_dir).join("pods")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .collect();
    uids.sort();
    uids.dedup();
    uids
}

/// The state directories of every container attempt of pod `uid`, in both places.
pub fn container_state_dirs(node_dir: &Path, uid: &str) -> Vec<PathBuf> {
    containers_dirs(node_dir, uid)
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .map(|entry| entry.path())
        .collect()
}

/// Makes the run directory a tmpfs (mode 0700, nosuid, nodev) unless one is mounted there
/// already; falls back to a plain directory, and says so, where no tmpfs can be mounted.
/// A plain directory that already holds state (from such a start) is kept as it is: a tmpfs
/// over it would hide the pods it describes.
pub fn prepare_run_dir(node_dir: &Path) -> std::io::Result<RunDir> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = run_dir(node_dir);
    if let Err(error) = std::fs::DirBuilder::new().mode(0o700).create(&dir)
        && error.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(error);
    }
    if crate::volumes::is_mount_point(&dir) {
        tracing::debug!(dir = %dir.display(), "run directory already mounted: adopting its pods");
        return Ok(RunDir::Adopted);
    }
    if std::fs::read_dir(&dir)?.next().is_some() {
        tracing::warn!(
            dir = %dir.display(),
            "run directory holds state on disk from a start without tmpfs; keeping it there"
        );
        return Ok(RunDir::Disk);
    }
    let data = std::ffi::CString::new(format!("size={RUN_TMPFS_SIZE},mode=0700")).map_err(std::io::Error::other)?;
    let flags = rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV;
    match rustix::mount::mount("tmpfs", &dir, "tmpfs", flags, Some(data.as_c_str())) {
        Ok(()) => Ok(RunDir::Mounted),
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                %error,
                "cannot mount a tmpfs for the node's run-time state; keeping it on disk"
            );
            Ok(RunDir::Disk)
        }
    }
}

/// Copies IP allocations recorded at the old place (by a version before the run directory)
/// into `ipam_dir`, then removes the old directory, so pods still running from that version
/// keep their addresses.
pub fn migrate_ipam(node_dir: &Path) -> std::io::Result<usize> {
    let legacy = legacy_ipam_dir(node_dir);
    let current = ipam_dir(node_dir);
    let Ok(entries) = std::fs::read_dir(&legacy) else { return Ok(0) };
    std::fs::create_dir_all(&current)?;
    let mut moved = 0;
    for entry in entries.flatten() {
        let target = current.join(entry.file_name());
        if !target.exists() {
            std::fs::copy(entry.path(), &target)?;
            moved += 1;
        }
    }
    std::fs::remove_dir_all(&legacy)?;
    Ok(moved)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn legacy_sandboxes_and_state_roots_are_found_at_the_old_place() {
        let node = tempfile::tempdir().unwrap();
        let node_dir = node.path();
        assert_eq!(sandbox_dir(node_dir, "u1"), node_dir.join("run/pods/u1/_sandbox"));
        let legacy = node_dir.join("pods/u1/_sandbox");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join(SANDBOX_FILE), b"{}").unwrap();
        assert_eq!(sandbox_dir(node_dir, "u1"), legacy);

        let old = node_dir.join("pods/u1/_containers/app-0");
        let new = container_dir(node_dir, "u1", "app", 0);
        assert_eq!(state_root_for(node_dir, RuntimeKind::Runc, &old), node_dir.join("runc"));
        assert_eq!(state_root_for(node_dir, RuntimeKind::Libcontainer, &new), node_dir.join("run/oci"));
        std::fs::create_dir_all(node_dir.join("run/pods/u2")).unwrap();
        assert_eq!(pod_uids(node_dir), ["u1", "u2"]);
    }

    #[test]
    fn ipam_allocations_move_to_the_run_directory() {
        let node = tempfile::tempdir().unwrap();
        let node_dir = node.path();
        assert_eq!(migrate_ipam(node_dir).unwrap(), 0);
        std::fs::create_dir_all(legacy_ipam_dir(node_dir)).unwrap();
        std::fs::write(legacy_ipam_dir(node_dir).join("10.0.0.2"), b"uid-a").unwrap();
        assert_eq!(migrate_ipam(node_dir).unwrap(), 1);
        assert_eq!(std::fs::read(ipam_dir(node_dir).join("10.0.0.2")).unwrap(), b"uid-a");
        assert!(!legacy_ipam_dir(node_dir).exists());
    }
}
