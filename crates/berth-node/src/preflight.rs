//! What this machine lacks to run pods isolated: checked before the node agent runs anything,
//! so Berth never runs a workload without the isolation its spec asks for (see
//! `agent::degraded` for what the node does instead).

use std::collections::BTreeSet;
use std::path::Path;

use crate::command;
use crate::config::NodeConfig;

/// Cgroup controllers pods' limits and accounting need.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// One sentence per missing piece, saying what to do about it; empty when pods can run.
pub fn missing(config: &NodeConfig) -> Vec<String> {
    let mut missing = Vec::new();
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        missing.push(format!("root: berth server runs as uid {euid}, and namespaces, cgroups and mounts need root"));
    }
    for (program, package) in [(config.runc.as_path(), "runc"), (Path::new("ip"), "iproute2")] {
        // libcontainer is built in; runc is needed only when chosen.
        let needed = package != "runc" || config.runtime == crate::oci_runtime::RuntimeKind::Runc;
        if needed && !command::available(program) {
            missing.push(format!("{}: not found, install the Debian package {package}", program.display()));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let enabled = controllers(&mountinfo, |v2| std::fs::read_to_string(v2.join("cgroup.controllers")).ok());
    for controller in CONTROLLERS {
        if !enabled.contains(controller) {
            missing.push(format!(
                "cgroup controller {controller:?}: not mounted (v1) nor enabled (v2), so pod limits cannot be enforced"
            ));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !has_overlayfs(&filesystems, Path::new("/lib/modules").join(release.trim()).as_path()) {
        missing.push("overlayfs: the kernel has no overlay filesystem (load the module: modprobe overlay)".to_owned());
    }
    missing
}

/// Controllers available on v1 hierarchies (mount options) and the v2 one (its root's
/// `cgroup.controllers`, read through `v2_controllers`).
fn controllers(mountinfo: &str, v2_controllers: impl Fn(&Path) -> Option<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let mount_point = before.split_whitespace().nth(4);
        let tail: Vec<&str> = after.split_whitespace().collect();
        match (tail.first().copied(), mount_point) {
            (Some("cgroup"), _) => {
                let options = tail.get(2).copied().unwrap_or("");
                found.extend(options.split(',').filter(|o| CONTROLLERS.contains(o)).map(str::to_owned));
            }
            (Some("cgroup2"), Some(mount_point)) => {
                let listed = v2_controllers(Path::new(mount_point)).unwrap_or_default();
                found.extend(listed.split_whitespace().map(str::to_owned));
            }
            _ => {}
        }
    }
    found
}

/// Overlayfs is registered, or its module is there for the kernel to load on first mount.
fn has_overlayfs(proc_filesystems: &str, modules: &Path) -> bool {
    proc_filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay"))
        || ["overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz"]
            .iter()
            .any(|name| modules.join("kernel/fs/overlayfs").join(name).exists())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:17 - cgroup cgroup rw,pids
";

    #[test]
    fn controllers_on_v1_hybrid_and_v2() {
        let found = controllers(HYBRID, |_| Some(String::new()));
        assert!(CONTROLLERS.iter().all(|c| found.contains(*c)), "{found:?}");
        let v2 = "31 23 0:27 / /sys/fs/cgroup rw shared:10 - cgroup2 cgroup2 rw\n";
        let found = controllers(v2, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            Some("cpuset cpu io memory\n".to_owned())
        });
        assert!(found.contains("memory") && found.contains("cpu") && !found.contains("pids"));
    }

    #[test]
    fn overlayfs_from_proc_or_modules() {
        let none = Path::new("/nonexistent");
        assert!(has_overlayfs("nodev\tsysfs\n\text4\nnodev\toverlay\n", none));
        assert!(!has_overlayfs("nodev\tsysfs\n\text4\n", none));
    }
}
