//! Removing what a test server's pods leave behind once the server is gone. Pods outlive
//! `berth server` by design, so a test must take them down itself.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use rustix::mount::{UnmountFlags, unmount};

/// Stops every container of the node whose state is under `node_dir` and removes its shims,
/// mounts, network namespaces and cgroups.
pub fn remove_pods(node_dir: &Path) {
    let quiet = |cmd: &mut Command| {
        let _ = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).output();
    };
    // Shims first, so none of them restarts or reports anything.
    for pid in processes_mentioning(node_dir) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    // runc's state is in the run directory (a tmpfs), or at the old place for older versions.
    for runc_root in [node_dir.join("run").join("runc"), node_dir.join("runc")] {
        if let Ok(out) = Command::new("runc").arg("--root").arg(&runc_root).args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                quiet(Command::new("runc").arg("--root").arg(&runc_root).args(["delete", "--force", id]));
            }
        }
    }
    let mut uids: Vec<String> = [node_dir.join("pods"), node_dir.join("run").join("pods")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    uids.sort();
    uids.dedup();
    for uid in &uids {
        // Removing a pin's file unpins its namespace in Berth's pin namespace (the kernel
        // detaches mounts on a file deleted in another mount namespace); the pod's veth pair
        // goes with its network namespace.
        for dir in [node_dir.join("run/pods").join(uid), node_dir.join("pods").join(uid)] {
            for pin in ["net", "uts", "ipc"] {
                let _ = std::fs::remove_file(dir.join("_sandbox").join(pin));
            }
        }
        // Pinned on the host's table by a version before the pin namespace (upgrade tests).
        quiet(Command::new("ip").args(["netns", "del", &format!("berth-{uid}")]));
        remove_cgroups(&format!("pod{uid}"));
    }
    // Deepest first: containers' roots and namespace pins, then the run tmpfs itself, so the
    // data dir can be deleted.
    unmount_below(node_dir);
}

/// Processes whose command line mentions `dir` (the node's shims).
fn processes_mentioning(dir: &Path) -> Vec<rustix::process::Pid> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(&needle)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Unmounts every mount point below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = unmount(&point, UnmountFlags::DETACH);
    }
}

/// Removes `<hierarchy>/berth/<name>` (leaves first) in every cgroup hierarchy, after killing
/// what still runs in it (containers libcontainer created have no runc state to delete them by).
fn remove_cgroups(name: &str) {
    let pids = Path::new("/sys/fs/cgroup/pids/berth").join(name);
    let unified = Path::new("/sys/fs/cgroup/berth").join(name);
    for tree in [pids, unified] {
        if tree.is_dir() {
            kill_tree(&tree);
        }
    }
    let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    let mut hierarchies: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
    hierarchies.extend(std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten().map(|e| e.path()));
    for hierarchy in hierarchies {
        let dir = hierarchy.join("berth").join(name);
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

fn kill_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            kill_tree(&entry.path());
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<rustix::process::Pid> =
        procs.lines().filter_map(|l| l.trim().parse().ok()).filter_map(rustix::process::Pid::from_raw).collect();
    for pid in &pids {
        let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
    }
    // A cgroup can be removed only once its processes are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !pids.is_empty()
        && std::time::Instant::now() < deadline
        && !std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().trim().is_empty()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn remove_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
