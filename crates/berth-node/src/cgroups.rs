//! Where the cgroup hierarchies are mounted, so Berth can find a container's OOM counter and
//! remove the per-pod cgroup directories the OCI runtime leaves behind. The runtime
//! (libcontainer or runc) creates the container cgroups and applies the limits (v1 and v2
//! alike); Berth only prepares the parent (v1 cpusets) and keeps cgroup moves fast.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMounts {
    /// Mount points of every v1 hierarchy and of the v2 hierarchy (if any).
    pub hierarchies: Vec<PathBuf>,
    /// v1 `memory` controller mount, if the memory controller is on v1.
    pub memory_v1: Option<PathBuf>,
    /// v2 mount point, if `memory` is enabled there (pure v2 machines).
    pub memory_v2: Option<PathBuf>,
    /// v1 `cpuset` controller mount, if the cpuset controller is on v1.
    pub cpuset_v1: Option<PathBuf>,
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
        let mut mounts = CgroupMounts { hierarchies: Vec::new(), memory_v1: None, memory_v2: None, cpuset_v1: None };
        for (mount_point, fstype, options) in Self::cgroup_mounts(mountinfo) {
            if fstype == "cgroup" && options.split(',').any(|o| o == "memory") {
                mounts.memory_v1 = Some(mount_point.clone());
            }
            if fstype == "cgroup" && options.split(',').any(|o| o == "cpuset") {
                mounts.cpuset_v1 = Some(mount_point.clone());
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

    /// Makes new cgroups under `parent` in the v1 cpuset hierarchy start with their parent's
    /// CPUs and memory nodes (`cgroup.clone_children`, which children inherit).
    ///
    /// A v1 cpuset cgroup is created empty and takes no task until both are set; the OCI
    /// runtime then copies them down level by level, and every write of `cpuset.cpus` makes
    /// the kernel rebuild its scheduling domains (a fifth of libcontainer's cgroup set-up per
    /// container). With the flag set the kernel copies them at creation and nothing is
    /// written. Best effort: without it the runtime still fills them in.
    pub fn prepare_parent(&self, parent: &str) {
        let Some(mount) = &self.cpuset_v1 else { return };
        if let Err(error) = clone_cpusets_under(mount, parent) {
            tracing::debug!(%error, parent, "cannot make cpuset cgroups copy their parent's");
        }
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

/// How moves into cgroups are kept fast: by the kernel where it can ([`favor_dynamic_modifications`]),
/// else by warming ([`MigrationWarmer`]). With `favor_dynmods` false the kernel's setting is
/// left as it is (warming unless it is on already).
pub fn keep_moves_fast(favor_dynmods: bool) -> MigrationWarmer {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if dynamic_modifications_favored(&mountinfo) {
        tracing::debug!("cgroup moves are fast already: the v2 hierarchy has favordynmods");
        return MigrationWarmer::off();
    }
    if favor_dynmods {
        match favor_dynamic_modifications(&mountinfo) {
            Ok(mount) => {
                tracing::info!(
                    mount = %mount.display(),
                    "favordynmods turned on on the cgroup v2 hierarchy: moves into cgroups no longer wait for \
                     the kernel (machine-wide until reboot; --cgroup-favordynmods=false leaves it off)"
                );
                return MigrationWarmer::off();
            }
            Err(error) => tracing::debug!(%error, "cannot turn on favordynmods; warming cgroup moves instead"),
        }
    }
    MigrationWarmer::from_mountinfo(&mountinfo)
}

/// Why `favordynmods` could not be turned on.
#[derive(Debug, thiserror::Error)]
pub enum DynmodsError {
    #[error("no cgroup v2 hierarchy is mounted")]
    NoV2Hierarchy,
    #[error("{step} on {mount}: {source}")]
    Kernel {
        step: &'static str,
        mount: PathBuf,
        #[source]
        source: rustix::io::Errno,
    },
}

/// Whether the v2 hierarchy is mounted with `favordynmods`.
fn dynamic_modifications_favored(mountinfo: &str) -> bool {
    CgroupMounts::cgroup_mounts(mountinfo)
        .iter()
        .any(|(_, fstype, options)| *fstype == "cgroup2" && options.split(',').any(|o| o == "favordynmods"))
}

/// Reconfigures the cgroup v2 hierarchy with `favordynmods` (the kernel's own answer to what
/// [`MigrationWarmer`] works around): moves into cgroups stop waiting for RCU grace periods
/// for good, at a small cost to every fork and exit. The setting is global to the kernel (the
/// lock is shared by all hierarchies, v1 ones too, which cannot take the option themselves)
/// and recent kernels (6.18 here) do not let it be turned off again before a reboot. The hierarchy's
/// other options are passed again, as a reconfiguration resets those not given; the mount
/// points' own flags (nosuid, ...) are not touched. Returns the mount point.
pub fn favor_dynamic_modifications(mountinfo: &str) -> Result<PathBuf, DynmodsError> {
    use rustix::mount::{FsPickFlags, fsconfig_reconfigure, fsconfig_set_flag, fspick};
    let mounts = CgroupMounts::cgroup_mounts(mountinfo);
    let (mount, _, options) =
        mounts.into_iter().find(|(_, fstype, _)| *fstype == "cgroup2").ok_or(DynmodsError::NoV2Hierarchy)?;
    let kernel = |step: &'static str, mount: &Path| {
        let mount = mount.to_path_buf();
        move |source| DynmodsError::Kernel { step, mount, source }
    };
    let context = fspick(rustix::fs::CWD, &mount, FsPickFlags::FSPICK_CLOEXEC).map_err(kernel("fspick", &mount))?;
    for option in options.split(',').filter(|o| !o.is_empty() && *o != "rw" && *o != "ro") {
        // Only flags exist for cgroup2; a valued option the kernel does not take fails here,
        // before anything changed.
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        let set = if value.is_empty() {
            fsconfig_set_flag(&context, key)
        } else {
            rustix::mount::fsconfig_set_string(&context, key, value)
        };
        set.map_err(kernel("passing the hierarchy's options again", &mount))?;
    }
    fsconfig_set_flag(&context, "favordynmods").map_err(kernel("setting favordynmods", &mount))?;
    fsconfig_reconfigure(&context).map_err(kernel("reconfiguring", &mount))?;
    Ok(mount)
}

/// Keeps the kernel's cgroup migration path fast while containers start, where the kernel
/// cannot be told to ([`favor_dynamic_modifications`]: no v2 hierarchy, an older kernel).
///
/// Moving a task into a cgroup (what the OCI runtime does for every new container) takes a
/// machine-wide lock whose first writer after a quiet spell waits for an RCU grace period
/// (12-24 ms measured on this machine, with the cgroup mutex held, so every other cgroup
/// operation waits too); a writer that comes within about one grace period of the last one
/// does not wait. While a start is under way, and for [`LINGER`] after, a thread of ours
/// writes its own thread ID into the cgroup it is already in (which changes nothing) every
/// [`PERIOD`], so the runtime's moves mostly find the lock warm; but a grace period shorter
/// than the period lets it go cold, and then the warming write itself is the one that waits
/// (about 4 starts in 100 in a traced run). Best effort: if the write fails it stops for good.
#[derive(Clone)]
pub struct MigrationWarmer {
    inner: Option<Arc<Warmer>>,
}

/// How often the warming thread takes the lock, well within a grace period.
const PERIOD: Duration = Duration::from_millis(2);
/// How long warming goes on after the last start: starts come in runs (replicas, restarts).
const LINGER: Duration = Duration::from_millis(250);

struct Warmer {
    /// The `tasks` (v1) or `cgroup.procs` (v2) file of the warming thread's own cgroup.
    tasks_file: PathBuf,
    state: Mutex<WarmState>,
}

#[derive(Default)]
struct WarmState {
    holders: usize,
    until: Option<Instant>,
    running: bool,
    failed: bool,
}

/// Keeps warming going while it lives.
pub struct WarmGuard {
    inner: Option<Arc<Warmer>>,
}

impl MigrationWarmer {
    /// A warmer for this process's cgroups (inert where they cannot be found).
    pub fn detect() -> MigrationWarmer {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::from_mountinfo(&mountinfo)
    }

    /// [`MigrationWarmer::detect`] with this process's mount table already read.
    fn from_mountinfo(mountinfo: &str) -> MigrationWarmer {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        MigrationWarmer { inner: own_tasks_file(&cgroup, mountinfo).map(Warmer::new) }
    }

    /// Never warms: the kernel keeps moves fast (favordynmods).
    fn off() -> MigrationWarmer {
        MigrationWarmer { inner: None }
    }

    /// Starts warming (if it is not on) until the guard is dropped, then for [`LINGER`].
    pub fn hold(&self) -> WarmGuard {
        let Some(inner) = &self.inner else { return WarmGuard { inner: None } };
        let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.failed {
            return WarmGuard { inner: None };
        }
        state.holders += 1;
        if !state.running {
            state.running = true;
            let warmer = inner.clone();
            let spawned = std::thread::Builder::new().name("cgroup-warm".to_owned()).spawn(move || warmer.run());
            if spawned.is_err() {
                state.running = false;
            }
        }
        WarmGuard { inner: Some(inner.clone()) }
    }
}

impl Drop for WarmGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let mut state = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            state.holders = state.holders.saturating_sub(1);
            if state.holders == 0 {
                state.until = Some(Instant::now() + LINGER);
            }
        }
    }
}

impl Warmer {
    fn new(tasks_file: PathBuf) -> Arc<Warmer> {
        Arc::new(Warmer { tasks_file, state: Mutex::new(WarmState::default()) })
    }

    /// The warming thread: ends when nobody holds it and the linger time is over.
    fn run(&self) {
        let tid = rustix::thread::gettid().as_raw_nonzero().to_string();
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let done = state.holders == 0 && state.until.is_none_or(|until| Instant::now() >= until);
                if done || state.failed {
                    state.running = false;
                    return;
                }
            }
            // A non-zero ID, even our own, makes the kernel take the lock.
            if let Err(error) = std::fs::write(&self.tasks_file, &tid) {
                tracing::debug!(file = %self.tasks_file.display(), %error, "cgroup warming is off");
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.failed = true;
                state.running = false;
                return;
            }
            std::thread::sleep(PERIOD);
        }
    }
}

/// The file that moves a task into this process's own cgroup: `tasks` (one thread) of the first
/// v1 hierarchy with a controller, else `cgroup.procs` of the v2 hierarchy (the whole process,
/// which is there already).
fn own_tasks_file(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let mounts = CgroupMounts::cgroup_mounts(mountinfo);
    let mut v2 = None;
    for line in cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            v2 = mounts
                .iter()
                .find(|(_, fstype, _)| *fstype == "cgroup2")
                .map(|(mount, _, _)| mount.join(relative).join("cgroup.procs"));
            continue;
        }
        let first = controllers.split(',').next().unwrap_or_default();
        if first.starts_with("name=") {
            continue;
        }
        let mount =
            mounts.iter().find(|(_, fstype, options)| *fstype == "cgroup" && options.split(',').any(|o| o == first));
        if let Some((mount, _, _)) = mount {
            return Some(mount.join(relative).join("tasks"));
        }
    }
    v2
}

/// Creates `parent` under the cpuset hierarchy at `mount` (each level with its parent's CPUs
/// and memory nodes if empty) and sets `cgroup.clone_children` on it.
fn clone_cpusets_under(mount: &Path, parent: &str) -> std::io::Result<()> {
    let mut dir = mount.to_path_buf();
    for component in Path::new(parent.trim_start_matches('/')).components() {
        let std::path::Component::Normal(name) = component else { continue };
        let child = dir.join(name);
        match std::fs::create_dir(&child) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(child.join(file))?;
            if current.trim().is_empty() {
                std::fs::write(child.join(file), std::fs::read_to_string(dir.join(file))?.trim())?;
            }
        }
        dir = child;
    }
    if dir != mount {
        std::fs::write(dir.join("cgroup.clone_children"), "1")?;
    }
    Ok(())
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
    fn new_cpuset_cgroups_start_with_their_parents_cpus() {
        let mounts = CgroupMounts::detect();
        let Some(cpuset) = mounts.cpuset_v1.clone() else {
            eprintln!("skipped: no v1 cpuset hierarchy");
            return;
        };
        let parent = format!("berth-unit-cpuset-{}/pods", std::process::id());
        mounts.prepare_parent(&parent);
        let dir = cpuset.join(&parent);
        if !dir.join("cgroup.clone_children").exists() {
            eprintln!("skipped: cannot create cpuset cgroups (not root?)");
            return;
        }
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.clone_children")).unwrap().trim(), "1");
        // What the OCI runtime does for a pod and its container: plain mkdir, no writes.
        let leaf = dir.join("podx").join("app");
        std::fs::create_dir_all(&leaf).unwrap();
        let root_cpus = std::fs::read_to_string(cpuset.join("cpuset.cpus")).unwrap();
        let leaf_cpus = std::fs::read_to_string(leaf.join("cpuset.cpus")).unwrap();
        let leaf_mems = std::fs::read_to_string(leaf.join("cpuset.mems")).unwrap();
        remove_tree(&cpuset.join(parent.split('/').next().unwrap()));
        assert_eq!(leaf_cpus.trim(), root_cpus.trim());
        assert!(!leaf_mems.trim().is_empty());
    }

    #[test]
    fn warming_writes_into_our_own_cgroup() {
        let cgroup = "9:name=systemd:/\n8:pids:/user.slice\n4:memory:/x\n0::/init.scope\n";
        let mountinfo = format!(
            "{HYBRID}36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids\n\
             37 30 0:33 / /sys/fs/cgroup/systemd rw shared:17 - cgroup cgroup rw,name=systemd\n"
        );
        // The first hierarchy with a controller: one thread moves through `tasks`.
        assert_eq!(own_tasks_file(cgroup, &mountinfo), Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice/tasks")));
        // Pure v2: the process's own `cgroup.procs`.
        let v2 = "31 23 0:27 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_tasks_file("0::/system.slice/berth.service\n", v2),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/berth.service/cgroup.procs"))
        );
        // Nothing mounted: no warming.
        assert_eq!(own_tasks_file(cgroup, ""), None);
    }

    /// The names of this process's threads.
    fn thread_names() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    }

    #[test]
    fn warming_runs_while_held_moves_nothing_and_stops_after() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: cgroup warming needs root");
            return;
        }
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let warmer = MigrationWarmer::detect();
        assert!(warmer.inner.is_some(), "no cgroup of our own found in {before}");
        let guard = warmer.hold();
        let second = warmer.hold();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread_names().iter().any(|n| n == "cgroup-warm") {
            assert!(Instant::now() < deadline, "the warming thread never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(PERIOD * 10);
        let inner = warmer.inner.as_ref().unwrap();
        assert!(!inner.state.lock().unwrap().failed, "writing {} failed", inner.tasks_file.display());
        // Writing ourselves where we are changes nothing.
        assert_eq!(std::fs::read_to_string("/proc/self/cgroup").unwrap(), before);
        drop(guard);
        drop(second);
        let deadline = Instant::now() + LINGER + Duration::from_secs(10);
        while inner.state.lock().unwrap().running {
            assert!(Instant::now() < deadline, "warming went on after the last guard and its linger time");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(inner.state.lock().unwrap().holders, 0);
    }

    #[test]
    fn favordynmods_is_read_from_the_v2_hierarchys_options() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      42 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,favordynmods\n";
        assert!(!dynamic_modifications_favored(hybrid), "only the v2 hierarchy's options count");
        let on = "31 23 0:27 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n";
        assert!(dynamic_modifications_favored(on));
        assert!(matches!(favor_dynamic_modifications(""), Err(DynmodsError::NoV2Hierarchy)));
    }

    #[test]
    fn favordynmods_is_turned_on_keeping_the_hierarchys_other_options() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: reconfiguring a cgroup hierarchy needs root");
            return;
        }
        let v2_options = |mountinfo: &str| {
            CgroupMounts::cgroup_mounts(mountinfo).into_iter().find(|(_, fstype, _)| *fstype == "cgroup2")
        };
        let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some((mount, _, options_before)) = v2_options(&before) else {
            eprintln!("skipping: no cgroup v2 hierarchy here");
            return;
        };
        match favor_dynamic_modifications(&before) {
            Ok(turned_on) => assert_eq!(turned_on, mount),
            Err(DynmodsError::Kernel { source, .. }) if source == rustix::io::Errno::INVAL => {
                eprintln!("skipping: this kernel has no favordynmods");
                return;
            }
            Err(error) => panic!("{error}"),
        }
        let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let (_, _, options_after) = v2_options(&after).unwrap();
        assert!(dynamic_modifications_favored(&after), "{options_after}");
        for option in options_before.split(',') {
            assert!(
                options_after.split(',').any(|o| o == option),
                "{option} lost: {options_before} -> {options_after}"
            );
        }
        assert!(keep_moves_fast(true).inner.is_none(), "warming is left to the kernel");
    }

    #[test]
    fn unified_layout_uses_memory_events() {
        let v2 = "31 23 0:27 / /sys/fs/cgroup rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n";
        let mounts = CgroupMounts::parse(v2, |_| true);
        assert_eq!(mounts.oom_counter("/berth/p/c"), Some(PathBuf::from("/sys/fs/cgroup/berth/p/c/memory.events")));
    }
}
