//! Where the cgroup hierarchies are mounted, so Berth can find a container's OOM counter and
//! remove the per-pod cgroup directories runc leaves behind. runc itself creates the
//! container cgroups and applies the limits (v1 and v2 alike).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMounts {
    /// Mount points of every v1 hierarchy and of the v2 hierarchy (if any).
    pub hierarchies: Vec<PathBuf>,
    /// v1 `memory` controller mount, if the memory controller is on v1.
    pub memory_v1: Option<PathBuf>,
    /// v2 mount point, if `memory` is enabled there (pure v2 machines).
    pub memory_v2: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> CgroupMounts {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&text, |v2| {
            std::fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        })
    }

    fn parse(mountinfo: &str, v2_has_memory: impl Fn(&Path) -> bool) -> CgroupMounts {
        let mut mounts = CgroupMounts { hierarchies: Vec::new(), memory_v1: None, memory_v2: None };
        for (mount_point, fstype, options) in Self::cgroup_mounts(mountinfo) {
            if fstype == "cgroup" && options.split(',').any(|o| o == "memory") {
                mounts.memory_v1 = Some(mount_point.clone());
            }
            if fstype == "cgroup2" && v2_has_memory(&mount_point) {
                mounts.memory_v2 = Some(mount_point.clone());
            }
            mounts.hierarchies.push(mount_point);
        }
        mounts
    }

    /// The cgroup mounts in a mountinfo text: mount point, `cgroup` or `cgroup2`, and the
    /// super-block options (which name a v1 hierarchy's controllers).
    pub fn cgroup_mounts(mountinfo: &str) -> Vec<(PathBuf, &'static str, String)> {
        let mut found = Vec::new();
        for line in mountinfo.lines() {
            // "<id> <parent> <dev> <root> <mountpoint> <opts> [optional…] - <fstype> <source> <superopts>"
            let Some((before, after)) = line.split_once(" - ") else { continue };
            let fields: Vec<&str> = before.split_whitespace().collect();
            let tail: Vec<&str> = after.split_whitespace().collect();
            let (Some(mount_point), Some(fstype)) = (fields.get(4), tail.first()) else { continue };
            let fstype = match *fstype {
                "cgroup" => "cgroup",
                "cgroup2" => "cgroup2",
                _ => continue,
            };
            found.push((PathBuf::from(mount_point), fstype, tail.get(2).copied().unwrap_or("").to_owned()));
        }
        found
    }

    /// The file whose `oom_kill` line counts OOM kills in cgroup `path` (as in cgroupsPath).
    pub fn oom_counter(&self, path: &str) -> Option<PathBuf> {
        let relative = path.trim_start_matches('/');
        if let Some(v1) = &self.memory_v1 {
            return Some(v1.join(relative).join("memory.oom_control"));
        }
        self.memory_v2.as_ref().map(|v2| v2.join(relative).join("memory.events"))
    }

    /// Removes cgroup `path` (which must have no processes or children left) everywhere.
    pub fn remove(&self, path: &str) {
        let relative = path.trim_start_matches('/');
        for hierarchy in &self.hierarchies {
            let dir = hierarchy.join(relative);
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

/// Cgroup directories are removed leaves first with rmdir (their files cannot be unlinked).
fn remove_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    if let Err(error) = std::fs::remove_dir(dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove cgroup");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu
";

    #[test]
    fn hybrid_layout_uses_v1_memory() {
        let mounts = CgroupMounts::parse(HYBRID, |_| false);
        assert_eq!(mounts.memory_v1.as_deref(), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(mounts.hierarchies.len(), 3);
        assert_eq!(
            mounts.oom_counter("/berth/podx/web"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/berth/podx/web/memory.oom_control"))
        );
    }

    #[test]
    fn unified_layout_uses_memory_events() {
        let v2 = "31 23 0:27 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        let mounts = CgroupMounts::parse(v2, |_| true);
        assert_eq!(mounts.oom_counter("/berth/p/c"), Some(PathBuf::from("/sys/fs/cgroup/berth/p/c/memory.events")));
    }
}
