//! The container runtime: pod sandboxes and containers run by runc, each container watched by
//! its own shim process (see [`crate::shim`]), all state kept in files (on the run tmpfs,
//! which outlives Berth) so a restarted Berth finds running pods again.
//!
//! Layout under the data dir (see [`crate::layout`] for what is on disk and what on the run
//! tmpfs):
//! - `run/ipam/<ip>`: IP allocations (see [`crate::ipam`]);
//! - `run/oci/`, `run/runc/`: the OCI runtimes' state (`--root`);
//! - `run/pods/<uid>/_sandbox/`: `sandbox.json`, `hosts`, `hostname`, `resolv.conf`, `uts`, `ipc`;
//! - `run/pods/<uid>/_containers/<name>-<attempt>/`: OCI bundle (`config.json`, `rootfs/`),
//!   `shim.json`, `shim.pid`, `container.json`, `exit.json`, `termination-log`, `attach.sock`;
//! - `pods/<uid>/_volumes/<kind>/<name>`: volumes;
//! - `run/host-root/<hash>/`: the `host` image's read-only skeleton (see [`crate::rootfs`]);
//! - `pods/<uid>/_layers/<name>-<attempt>/`: a container's writable layer (`upper`, `work`);
//! - `pods/<uid>/<container>/<attempt>.log`: logs (CRI format).
//!
//! Names with `_` cannot clash with container names, which are DNS labels.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cgroups::{CgroupMounts, MigrationWarmer, WarmGuard};
use crate::command::{self, CommandError};
use crate::config::NodeConfig;
use crate::crilog;
use crate::images;
use crate::ipam::{Ipam, IpamError};
use crate::layout::{self, RunDir};
use crate::network::{self, NetworkError};
use crate::oci::{self, Mount, Namespace};
use crate::oci_runtime::{OciCli, RuntimeKind};
use crate::rootfs::{HOST_IMAGE, HostImage, MountTarget, RootfsError};
use crate::sandbox::{self, Sandbox};
use crate::shim::{self, ExitRecord, ShimConfig};
use crate::shim_spawn::{self, ShimProcess, SpareShim};
use crate::spec::{self, PodInputs, PodPlacement, ProcessSpec, SpecError};
use crate::volumes::{self, PreparedVolumes, VolumeError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the node agent needs root to create namespaces and cgroups (running as uid {0})")]
    NotRoot(u32),
    #[error("{program} not found: install the Debian package {package}")]
    MissingTool { program: String, package: &'static str },
    #[error("pod UID {0:?} is not usable as a file name")]
    BadUid(String),
    #[error("{message}")]
    ImagePull { image: String, message: String },
    #[error("Container image \"{0}\" is not present with pull policy of Never")]
    ImageNeverPull(String),
    #[error("image \"{image}\": {source}")]
    Image {
        image: String,
        #[source]
        source: berth_image::ImageError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("volume \"{0}\" is mounted but not defined in the pod")]
    UnknownVolume(String),
    #[error("invalid subPath {0:?}: must be a relative path without \"..\"")]
    BadSubPath(String),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("no sandbox for pod {0}")]
    NoSandbox(String),
    #[error("a runtime task failed: {0}")]
    Task(String),
    #[error("starting container shim: {0}")]
    Shim(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// The container waiting reason kubelet shows for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::ImagePull { .. } => "ErrImagePull",
            RuntimeError::ImageNeverPull(_) => "ErrImageNeverPull",
            RuntimeError::Spec(error) => error.reason(),
            RuntimeError::Volume(_) | RuntimeError::UnknownVolume(_) | RuntimeError::BadSubPath(_) => {
                "CreateContainerConfigError"
            }
            _ => "RunContainerError",
        }
    }
}

fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// How long the shim may take to create a container before Berth gives up on it.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGKILL a container is gone within moments; this bounds waiting on a broken shim.
const KILL_WAIT: Duration = Duration::from_secs(30);
const CLUSTER_DOMAIN: &str = "cluster.local";

/// Persisted as `container.json` next to the bundle once the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    /// The OCI runtime's container ID.
    pub id: String,
    /// The runtime that created it (runc for records of older versions).
    #[serde(default)]
    pub runtime: RuntimeKind,
    pub image: String,
    /// What `imageID` shows: the stored image's digest (`name@sha256:...` if pulled), or `host`
    /// (empty in records of older versions).
    #[serde(default)]
    pub image_id: String,
    /// RFC 3339.
    pub started_at: String,
    pub init_pid: i32,
    pub shim_pid: i32,
}

impl ContainerRecord {
    /// The `imageID` to report for this container.
    pub fn image_id(&self) -> &str {
        if self.image_id.is_empty() && self.image == HOST_IMAGE { HOST_IMAGE } else { &self.image_id }
    }
}

/// A container this runtime started or found again after a restart.
#[derive(Clone)]
pub struct ContainerHandle {
    pub record: ContainerRecord,
    pub state_dir: PathBuf,
    /// Readable once the shim has exited (and so written `exit.json`); `None` if it already had.
    shim: Option<Arc<AsyncFd<OwnedFd>>>,
}

impl std::fmt::Debug for ContainerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerHandle").field("record", &self.record).field("state_dir", &self.state_dir).finish()
    }
}

impl ContainerHandle {
    /// The exit record if the container has ended.
    pub fn exit_record(&self) -> Option<ExitRecord> {
        shim::read_exit_record(&self.state_dir)
    }

    /// Waits for the container to end and returns how it ended.
    pub async fn wait(&self) -> ExitRecord {
        if let Some(pidfd) = &self.shim {
            // A pidfd polls readable once the process has exited; nothing to clear after.
            let _ = pidfd.readable().await;
        }
        self.exit_record().unwrap_or_else(|| ExitRecord {
            exit_code: 137,
            signal: None,
            oom_killed: false,
            finished_at: Timestamp::now().to_string(),
            error: Some("the container's shim ended without recording an exit status".to_owned()),
        })
    }

    /// The message the container wrote to its termination message file, if any.
    pub fn termination_message(&self) -> Option<String> {
        let bytes = std::fs::read(self.state_dir.join(TERMINATION_LOG)).ok()?;
        // Upstream caps the message at 4096 bytes.
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
        (!text.is_empty()).then_some(text)
    }
}

const TERMINATION_LOG: &str = "termination-log";
const CONTAINER_RECORD: &str = "container.json";
const SANDBOX_FILE: &str = "sandbox.json";

/// The pod-level inputs of a container start.
#[derive(Debug, Clone, Copy)]
pub struct PodRun<'a> {
    pub sandbox: &'a Sandbox,
    pub pod: &'a Pod,
    pub inputs: &'a PodInputs,
    pub volumes: &'a PreparedVolumes,
    pub placement: &'a PodPlacement,
}

/// A container start prepared by [`Runtime::prepare_container`], to be finished by
/// [`Runtime::launch`] (optionally after [`PreparedStart::create`]). Dropping it aborts the
/// start: the shim sees end-of-file instead of its next line, deletes what it created and
/// exits having started nothing.
pub struct PreparedStart {
    record: ContainerRecord,
    state_dir: PathBuf,
    shim: WaitingShim,
    prepare: Duration,
    prepared_at: std::time::Instant,
}

impl std::fmt::Debug for PreparedStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedStart").field("record", &self.record).field("state_dir", &self.state_dir).finish()
    }
}

impl PreparedStart {
    /// The shim's process ID.
    pub fn shim_pid(&self) -> i32 {
        self.record.shim_pid
    }

    /// The container's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Lets the shim create the container without starting it, once the pod's namespaces
    /// exist (their network may still be being configured); [`Runtime::launch`] starts it.
    pub async fn create(&mut self) {
        self.shim.create().await;
    }

    /// Abandons the start and waits (bounded) until the shim has deleted whatever it
    /// created and exited, so the pod's cgroup and the attempt's state can go.
    pub async fn abandon(self) {
        let PreparedStart { shim, .. } = self;
        let WaitingShim { pidfd, lines, .. } = shim;
        drop(lines);
        let _ = tokio::time::timeout(KILL_WAIT, pidfd.readable()).await;
    }
}

/// A shim started and waiting for its first line on stdin ("go", or "create" then "start")
/// before it creates the container.
struct WaitingShim {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    lines: tokio::process::ChildStdin,
    handshake: tokio::process::ChildStdout,
    /// When "create" was sent.
    created: Option<std::time::Instant>,
}

impl WaitingShim {
    /// Lets the shim create the container; it then waits for [`WaitingShim::go`] to start it.
    async fn create(&mut self) {
        if self.created.is_none() {
            // A shim that failed its set-up has exited: `go` reads why.
            let _ = self.lines.write_all(shim::CREATE_LINE.as_bytes()).await;
            self.created = Some(std::time::Instant::now());
        }
    }

    /// Lets the shim start the container (and create it first unless [`WaitingShim::create`]
    /// did); returns its pidfd and the container's init PID.
    async fn go(self) -> Result<(AsyncFd<OwnedFd>, i32), RuntimeError> {
        let WaitingShim { pidfd, mut lines, handshake, created, .. } = self;
        let line = if created.is_some() { shim::START_LINE } else { shim::GO_LINE };
        // A shim that failed its set-up has exited: its handshake line says why.
        let _ = lines.write_all(line.as_bytes()).await;
        drop(lines);
        let mut line = String::new();
        let read = tokio::time::timeout(CREATE_TIMEOUT, BufReader::new(handshake).read_line(&mut line)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(RuntimeError::Shim(format!("reading the shim handshake: {error}"))),
            Err(_) => return Err(RuntimeError::Shim("the shim did not create the container in time".to_owned())),
        }
        let line = line.trim();
        match line.strip_prefix("ok ").and_then(|init| init.parse::<i32>().ok()) {
            Some(init_pid) => Ok((pidfd, init_pid)),
            None => {
                let message = line.strip_prefix("error ").unwrap_or(line);
                let message = if message.is_empty() { "the shim exited without a handshake" } else { message };
                Err(RuntimeError::Shim(message.to_owned()))
            }
        }
    }
}

/// A sandbox about to be made (or found alive), from [`Runtime::plan_sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    /// What the sandbox is (or will be once made).
    pub sandbox: Sandbox,
    /// It is already there: making it does nothing.
    pub exists: bool,
}

/// Output of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub output: Vec<u8>,
    pub timed_out: bool,
}

pub struct Runtime {
    config: NodeConfig,
    ipam: Ipam,
    host_image: HostImage,
    /// The read-only lower directory of every `image: host` container's root.
    host_skeleton: PathBuf,
    images: berth_image::ImageStore,
    cgroups: CgroupMounts,
    migrations: MigrationWarmer,
    host_resolv_conf: String,
    limits: HostLimits,
    netlink: network::HostNetlink,
    spare_shim: SpareShim,
    /// Where pods' namespaces are pinned (see [`crate::namespaces`]).
    pins: crate::namespaces::PinNamespace,
}

/// What Berth itself may hand to containers; it may run with less than full root (inside a
/// user namespace or a VM sandbox without CAP_SYS_RESOURCE, as on the test machines).
#[derive(Debug, Clone, Copy)]
struct HostLimits {
    /// Bounding capability set (bit n = capability n).
    capabilities: u64,
    /// Lowest `oom_score_adj` settable: Berth's own unless it holds CAP_SYS_RESOURCE.
    min_oom_score_adj: i32,
}

const CAP_SYS_RESOURCE: u32 = 24;

impl HostLimits {
    fn detect() -> HostLimits {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mask = |field: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .unwrap_or(u64::MAX)
        };
        let capabilities = mask("CapBnd:");
        let effective = mask("CapEff:");
        let own_score = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .unwrap_or(0);
        let min_oom_score_adj = if effective & (1 << CAP_SYS_RESOURCE) != 0 { -1000 } else { own_score };
        HostLimits { capabilities, min_oom_score_adj }
    }

    fn capability_available(&self, name: &str) -> bool {
        spec::ALL_CAPABILITIES
            .iter()
            .position(|known| *known == name)
            .is_none_or(|bit| bit >= 64 || self.capabilities & (1 << bit) != 0)
    }
}

fn check_uid(uid: &str) -> Result<(), RuntimeError> {
    let usable = !uid.is_empty() && uid.len() <= 64 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if usable { Ok(()) } else { Err(RuntimeError::BadUid(uid.to_owned())) }
}

impl Runtime {
    /// Checks the machine (root, runc, iproute2), then sets up the bridge and the data dir.
    pub async fn new(config: NodeConfig) -> Result<Runtime, RuntimeError> {
        let euid = rustix::process::geteuid().as_raw();
        if euid != 0 {
            return Err(RuntimeError::NotRoot(euid));
        }
        for (program, package) in [(config.runc.as_path(), "runc"), (Path::new("ip"), "iproute2")] {
            if package == "runc" && config.runtime != RuntimeKind::Runc {
                continue;
            }
            if !command::available(program) {
                return Err(RuntimeError::MissingTool { program: program.display().to_string(), package });
            }
        }
        std::fs::create_dir_all(config.data_dir.join("pods")).map_err(io_context("creating the data dir"))?;
        let data_dir = std::fs::canonicalize(&config.data_dir).map_err(io_context("resolving the data dir"))?;
        let config = NodeConfig { data_dir, ..config };
        let run_dir = layout::prepare_run_dir(&config.data_dir).map_err(io_context("preparing the run directory"))?;
        if run_dir == RunDir::Mounted {
            tracing::info!(dir = %layout::run_dir(&config.data_dir).display(), "run-time state on a new tmpfs");
        }
        for kind in [RuntimeKind::Runc, RuntimeKind::Libcontainer] {
            let root = layout::state_root(&config.data_dir, kind);
            std::fs::create_dir_all(&root).map_err(io_context(format!("creating {}", root.display())))?;
        }
        std::fs::create_dir_all(layout::run_dir(&config.data_dir).join("pods"))
            .map_err(io_context("creating the run directory"))?;
        // Pods of a version before the run directory keep their addresses.
        match layout::migrate_ipam(&config.data_dir) {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "IP allocations moved to the run directory"),
            Err(error) => tracing::warn!(%error, "cannot move the old IP allocations"),
        }
        let ipam = Ipam::open(layout::ipam_dir(&config.data_dir), config.network.pod_cidr)?;
        network::setup_host(&config.network).await?;
        let pins =
            crate::namespaces::PinNamespace::open(&layout::pin_anchor(&config.data_dir)).map_err(NetworkError::from)?;
        let netlink = network::HostNetlink::connect()?;
        let host_image = HostImage::from_host(&config.data_dir);
        let host_skeleton = host_image.skeleton(&layout::host_skeletons_dir(&config.data_dir))?;
        let images = berth_image::ImageStore::open(images::store_dir(&config.data_dir))
            .map_err(|source| RuntimeError::Image { image: String::new(), source })?;
        let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let limits = HostLimits::detect();
        if limits.min_oom_score_adj > -1000 {
            tracing::info!(
                min = limits.min_oom_score_adj,
                "no CAP_SYS_RESOURCE: container oom_score_adj is kept at or above Berth's own"
            );
        }
        let cgroups = CgroupMounts::detect();
        let migrations = crate::cgroups::keep_moves_fast(config.cgroup_favordynmods);
        cgroups.prepare_parent(&config.cgroup_parent);
        let spare_shim = SpareShim::new(config.shim_program.clone());
        spare_shim.replenish();
        Ok(Runtime {
            config,
            ipam,
            host_image,
            host_skeleton,
            images,
            cgroups,
            migrations,
            host_resolv_conf,
            limits,
            netlink,
            spare_shim,
            pins,
        })
    }

    /// Keeps moves into cgroups fast until the guard is dropped: take it before a sandbox or a
    /// container is made (see [`MigrationWarmer`]).
    pub fn warm_cgroup_moves(&self) -> WarmGuard {
        self.migrations.hold()
    }

    /// Whether the next container start can take a shim started ahead (see [`shim_spawn`]).
    pub fn spare_shim_ready(&self) -> bool {
        self.spare_shim.ready()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The node's image store.
    pub fn images(&self) -> &berth_image::ImageStore {
        &self.images
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        layout::sandbox_dir(&self.config.data_dir, uid)
    }

    fn volumes_dir(&self, uid: &str) -> PathBuf {
        layout::disk_pod_dir(&self.config.data_dir, uid).join("_volumes")
    }

    fn container_dir(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        layout::container_dir(&self.config.data_dir, uid, name, attempt)
    }

    fn layer_dir(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        layout::layer_dir(&self.config.data_dir, uid, name, attempt)
    }

    /// The OCI runtime command line for new containers created by `kind`.
    fn oci_cli(&self, kind: RuntimeKind) -> OciCli {
        OciCli::new(&self.config, kind)
    }

    /// The OCI runtime command line for an existing container.
    fn handle_cli(&self, handle: &ContainerHandle) -> OciCli {
        OciCli::for_container(&self.config, handle.record.runtime, &handle.state_dir)
    }

    fn pod_cgroup(&self, uid: &str) -> String {
        format!("{}/pod{uid}", self.config.cgroup_parent.trim_end_matches('/'))
    }

    /// Where the log of a container attempt goes.
    pub fn log_path(&self, uid: &str, container: &str, attempt: u32) -> PathBuf {
        crilog::log_path(&self.config.data_dir, uid, container, attempt)
    }

    /// The sandbox of pod `uid` as recorded on disk.
    pub fn sandbox(&self, uid: &str) -> Option<Sandbox> {
        check_uid(uid).ok()?;
        let bytes = std::fs::read(self.sandbox_dir(uid).join(SANDBOX_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// UIDs of every pod that has a directory on this node.
    pub fn pod_uids(&self) -> Vec<String> {
        layout::pod_uids(&self.config.data_dir).into_iter().filter(|uid| check_uid(uid).is_ok()).collect()
    }

    /// Creates (or finds again) the sandbox of `pod`: IP, network namespace, shared UTS and
    /// IPC namespaces, hosts/hostname/resolv.conf files.
    pub async fn create_sandbox(&self, pod: &Pod) -> Result<Sandbox, RuntimeError> {
        let plan = self.plan_sandbox(pod).await?;
        self.make_sandbox(pod, plan, None).await
    }

    /// The first half of [`Runtime::create_sandbox`], quick: finds a live sandbox again, or
    /// reserves the IP and the directory of a new one, whose description (IP, hostname,
    /// namespace paths) is then known before its namespaces exist, so the pod's first
    /// container can be prepared while [`Runtime::make_sandbox`] runs.
    pub async fn plan_sandbox(&self, pod: &Pod) -> Result<SandboxPlan, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        check_uid(&uid)?;
        if let Some(existing) = self.sandbox(&uid) {
            if self.sandbox_alive(&existing) {
                return Ok(SandboxPlan { sandbox: existing, exists: true });
            }
            self.teardown_sandbox(&uid).await;
        }
        // The IP first: everything else about the sandbox follows from it and the pod.
        let ip = self.ipam.allocate(&uid)?;
        let dir = self.sandbox_dir(&uid);
        if let Err(error) = tokio::fs::create_dir_all(&dir).await {
            self.teardown_sandbox(&uid).await;
            return Err(io_context(format!("creating {}", dir.display()))(error));
        }
        let sandbox = Sandbox {
            uid: uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            hostname: sandbox::pod_hostname(pod),
            network: network::PodNetworkInfo::for_pod(&uid, ip),
            created_at: Timestamp::now().to_string(),
        };
        Ok(SandboxPlan { sandbox, exists: false })
    }

    /// Where a container joins the pod's network, UTS and IPC namespaces, as any process of
    /// the host opens them.
    fn pinned_namespaces(&self, sandbox: &Sandbox) -> [(&'static str, PathBuf); 3] {
        let dir = self.sandbox_dir(&sandbox.uid);
        let legacy_net = sandbox.network.legacy_netns_path();
        crate::namespaces::PINNED.map(|(kind, name)| {
            let path = match &legacy_net {
                // Made before the pin namespace: everything on the host's mount table.
                Some(net) if name == "net" => net.clone(),
                Some(_) => dir.join(name),
                None => self.pins.path(&dir.join(name)),
            };
            (kind, path)
        })
    }

    /// Whether the sandbox's namespaces are still pinned: after a reboot (or a clean-up by
    /// hand) its record may outlive them.
    pub fn sandbox_alive(&self, sandbox: &Sandbox) -> bool {
        self.pinned_namespaces(sandbox).iter().all(|(_, path)| volumes::is_mount_point(path))
    }

    /// The second half of [`Runtime::create_sandbox`]: makes the planned sandbox (namespaces,
    /// veth, files); on failure releases everything of it. `namespaces_ready` is told as soon
    /// as the namespaces a container joins exist (and the files it mounts), before their
    /// network is configured: from then on the first container may be created (but not
    /// started, see [`PreparedStart::create`]). It is dropped untold if that step fails.
    pub async fn make_sandbox(
        &self,
        pod: &Pod,
        plan: SandboxPlan,
        namespaces_ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Sandbox, RuntimeError> {
        if plan.exists {
            if let Some(ready) = namespaces_ready {
                let _ = ready.send(());
            }
            return Ok(plan.sandbox);
        }
        let uid = plan.sandbox.uid.clone();
        match self.build_sandbox(pod, plan.sandbox, namespaces_ready).await {
            Ok(sandbox) => Ok(sandbox),
            Err(error) => {
                self.teardown_sandbox(&uid).await;
                Err(error)
            }
        }
    }

    async fn build_sandbox(
        &self,
        pod: &Pod,
        planned: Sandbox,
        namespaces_ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Sandbox, RuntimeError> {
        #[cfg(debug_assertions)]
        self.debug_sandbox_hook(false).await?;
        let started = std::time::Instant::now();
        let (uid, ip, dir) = (planned.uid.as_str(), planned.ip(), self.sandbox_dir(&planned.uid));
        let hostname = planned.hostname.clone();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io_context(format!("writing {}", path.display())))
        };
        // First the files containers bind-mount: a container may be created as soon as the
        // namespaces exist, while their network is configured.
        write("hosts", sandbox::hosts_file(pod, ip, &hostname, CLUSTER_DOMAIN))?;
        write("hostname", format!("{hostname}\n"))?;
        let cluster_dns = self.config.cluster_dns.map(|ip| (ip, CLUSTER_DOMAIN));
        write("resolv.conf", sandbox::resolv_conf_with(pod, &self.host_resolv_conf, cluster_dns))?;
        // The namespaces outlive every container of the pod by being bind-mounted onto these
        // files in the pin namespace (no pause process).
        let namespaces = crate::namespaces::PodNamespacePaths {
            dir: dir.clone(),
            hostname: hostname.clone(),
            pin_namespace: self.pins.handle(),
        };
        let mut namespaces_done = None;
        let namespaces_made = || {
            namespaces_done = Some(started.elapsed());
            tracing::debug!(pod = %planned.name, "sandbox namespaces ready");
            if let Some(ready) = namespaces_ready {
                let _ = ready.send(());
            }
        };
        let network =
            network::attach_pod(&self.config.network, &self.netlink, uid, ip, namespaces, namespaces_made).await?;
        debug_assert_eq!(network, planned.network);
        #[cfg(debug_assertions)]
        self.debug_sandbox_hook(true).await?;
        let sandbox = Sandbox { network, created_at: Timestamp::now().to_string(), ..planned };
        let bytes = serde_json::to_vec_pretty(&sandbox).map_err(|e| RuntimeError::Shim(e.to_string()))?;
        write(SANDBOX_FILE, String::from_utf8_lossy(&bytes).into_owned())?;
        tracing::debug!(
            pod = %sandbox.name,
            namespaces_ms = namespaces_done.unwrap_or_default().as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "sandbox created"
        );
        Ok(sandbox)
    }

    /// Debug builds only (tests), files in `<data-dir>/debug/`. Before the namespaces
    /// (`after_network` false): wait while `hold-sandbox` exists. After the network: while
    /// `fail-sandbox` exists, wait for `fail-sandbox-now` (a test creates it once it saw the
    /// pod's first container created, not started), then fail, swapping both for
    /// `hold-sandbox` so the retry waits until the test has looked: a real sandbox failure
    /// between create and start. Each wait is bounded.
    #[cfg(debug_assertions)]
    async fn debug_sandbox_hook(&self, after_network: bool) -> Result<(), RuntimeError> {
        let dir = self.config.data_dir.join("debug");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let waiting = |name: &str| dir.join(name).exists() && std::time::Instant::now() < deadline;
        if !after_network {
            while waiting("hold-sandbox") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return Ok(());
        }
        while waiting("fail-sandbox") {
            if dir.join("fail-sandbox-now").exists() {
                let _ = std::fs::write(dir.join("hold-sandbox"), "");
                let _ = std::fs::remove_file(dir.join("fail-sandbox-now"));
                let _ = std::fs::remove_file(dir.join("fail-sandbox"));
                return Err(RuntimeError::Task("debug/fail-sandbox: the sandbox fails as asked".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Releases what the sandbox holds on the host (network namespace, IP, namespace mounts,
    /// tmpfs volumes, the pod cgroup) but keeps the pod directory with its logs. Containers
    /// must have ended. Best effort and idempotent.
    pub async fn teardown_sandbox(&self, uid: &str) {
        if check_uid(uid).is_err() {
            return;
        }
        let info = self
            .sandbox(uid)
            .map(|s| s.network)
            .unwrap_or_else(|| network::PodNetworkInfo::for_pod(uid, std::net::Ipv4Addr::UNSPECIFIED));
        network::detach_pod(&self.netlink, &info).await;
        // Made by a version before the pin namespace, or not: both places are cheap to try.
        crate::namespaces::remove_pinned(&network::legacy_netns_path(uid));
        if let Ok(Some(ip)) = self.ipam.find(uid)
            && let Err(error) = self.ipam.release(ip, uid)
        {
            tracing::warn!(%error, uid, "cannot release pod IP");
        }
        // Both places: the sandbox may have been made by a version before the run directory.
        for dir in layout::sandbox_dirs(&self.config.data_dir, uid) {
            for (_, name) in crate::namespaces::PINNED {
                crate::namespaces::remove_pinned(&dir.join(name));
            }
            let _ = std::fs::remove_file(dir.join(SANDBOX_FILE));
        }
        volumes::unmount_all(&self.volumes_dir(uid));
        self.cgroups.remove(&self.pod_cgroup(uid));
    }

    /// Tears the sandbox down and deletes everything of the pod, logs included.
    pub async fn remove_pod(&self, uid: &str) -> Result<(), RuntimeError> {
        check_uid(uid)?;
        self.teardown_sandbox(uid).await;
        for dir in layout::containers_dirs(&self.config.data_dir, uid) {
            images::unmount_pod_rootfs(&dir);
        }
        let data_dir = &self.config.data_dir;
        remove_dirs(&[layout::run_pod_dir(data_dir, uid), layout::disk_pod_dir(data_dir, uid)]).await
    }

    /// Sets up (or refreshes) the pod's volumes.
    pub fn prepare_volumes(&self, pod: &Pod, inputs: &PodInputs) -> Result<PreparedVolumes, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        check_uid(&uid)?;
        Ok(volumes::prepare(pod, &self.volumes_dir(&uid), inputs)?)
    }

    /// Creates and starts attempt `attempt` of `container`; returns once it runs.
    pub async fn start_container(
        &self,
        pod_run: &PodRun<'_>,
        container: &Container,
        attempt: u32,
    ) -> Result<ContainerHandle, RuntimeError> {
        let prepared = self.prepare_container(pod_run, container, attempt).await?;
        self.launch(prepared).await
    }

    /// The first half of a container start: the shim is started (it sets itself up and then
    /// waits), the bundle and `shim.json` are written. Nothing of the sandbox is touched, only
    /// its description, so this may run while the sandbox is being made. Dropping the result
    /// makes the shim exit without creating anything; the files left are cleaned up by the
    /// next start of this attempt.
    pub async fn prepare_container(
        &self,
        pod_run: &PodRun<'_>,
        container: &Container,
        attempt: u32,
    ) -> Result<PreparedStart, RuntimeError> {
        let started = std::time::Instant::now();
        let PodRun { sandbox, pod, inputs, volumes, placement } = *pod_run;
        let uid = sandbox.uid.as_str();
        check_uid(uid)?;
        let image = container.image.clone().unwrap_or_default();
        // Anything but `host` was pulled or imported before the start (agent::pull).
        let resolved = if image == HOST_IMAGE {
            None
        } else {
            let resolved = self.images.resolve(&image).map_err(|source| match source {
                berth_image::ImageError::NotFound(_) => RuntimeError::ImagePull {
                    message: format!("image \"{image}\" is not present on this node"),
                    image: image.clone(),
                },
                source => RuntimeError::Image { image: image.clone(), source },
            })?;
            Some(resolved)
        };
        let process = match &resolved {
            None => spec::process_spec(pod, container, inputs, placement, &sandbox.hostname)?,
            Some(resolved) => {
                let filled = images::with_image_defaults(container, resolved);
                let mut process = spec::process_spec(pod, &filled, inputs, placement, &sandbox.hostname)?;
                images::merge_env(&mut process, container, &resolved.defaults);
                process
            }
        };
        let state_dir = self.container_dir(uid, &container.name, attempt);
        let layer_dir = self.layer_dir(uid, &container.name, attempt);
        let id = format!("{uid}-{}-{attempt}", container.name);
        if state_dir.exists() {
            // Left over from a start that did not finish (Berth stopped half-way).
            for kind in [RuntimeKind::Runc, RuntimeKind::Libcontainer] {
                let _ = self.oci(self.oci_cli(kind), &["delete", "--force", id.as_str()]).await;
            }
            images::unmount_rootfs(&state_dir);
            tokio::fs::remove_dir_all(&state_dir)
                .await
                .map_err(io_context(format!("removing {}", state_dir.display())))?;
        }
        // Left over from an earlier try of this attempt (the bundle's cleanup is above).
        remove_dirs(std::slice::from_ref(&layer_dir)).await?;
        tokio::fs::create_dir_all(&state_dir).await.map_err(io_context(format!("creating {}", state_dir.display())))?;
        // The shim's exec and set-up (a few milliseconds) run while the bundle is written.
        let shim = self.spawn_shim(&state_dir).await?;
        // What a container writes to its own root (`/tmp`, `/var`, ...) goes to its upper layer
        // on disk: not to the run tmpfs, which every start shares.
        let layers = match &resolved {
            None => std::slice::from_ref(&self.host_skeleton),
            Some(resolved) => resolved.layer_dirs.as_slice(),
        };
        images::mount_rootfs(&state_dir, &layer_dir, layers)?;
        std::fs::write(state_dir.join(TERMINATION_LOG), b"").map_err(io_context("creating the termination log"))?;

        let cgroups_path = format!("{}/{}", self.pod_cgroup(uid), container.name);
        let mounts = self.container_mounts(sandbox, container, &process, volumes, &state_dir, resolved.is_none())?;
        let mut bundle = self.oci_spec(sandbox, &process, mounts, &cgroups_path);
        let stdio = stdio_mode(container);
        if stdio.tty {
            // As containerd does for a terminal: runc hands its controller side to the shim.
            bundle.process.terminal = true;
            if !bundle.process.env.iter().any(|e| e.starts_with("TERM=")) {
                bundle.process.env.push("TERM=xterm".to_owned());
            }
        }
        let config_json = serde_json::to_vec_pretty(&bundle).map_err(|e| RuntimeError::Shim(e.to_string()))?;
        std::fs::write(state_dir.join("config.json"), config_json).map_err(io_context("writing config.json"))?;

        let log_path = self.log_path(uid, &container.name, attempt);
        // An attempt's log holds only that attempt's output, even if a start with this number
        // was tried before.
        crilog::remove_log(&log_path);
        let shim_config = ShimConfig {
            runtime: self.config.runtime,
            runc: self.config.runc.clone(),
            runc_root: self.oci_cli(self.config.runtime).root,
            container_id: id.clone(),
            bundle: state_dir.clone(),
            log_path,
            log_rotation: self.config.log_rotation,
            oom_counter: self.cgroups.oom_counter(&cgroups_path),
            stdin: stdio.stdin,
            stdin_once: stdio.stdin_once,
            tty: stdio.tty,
        };
        let shim_json = serde_json::to_vec_pretty(&shim_config).map_err(|e| RuntimeError::Shim(e.to_string()))?;
        std::fs::write(state_dir.join(shim::SHIM_CONFIG_FILE), shim_json).map_err(io_context("writing shim.json"))?;

        let record = ContainerRecord {
            pod_uid: uid.to_owned(),
            name: container.name.clone(),
            attempt,
            id,
            runtime: self.config.runtime,
            image_id: resolved.as_ref().map_or_else(|| HOST_IMAGE.to_owned(), |r| r.record.image_id()),
            image,
            started_at: String::new(),
            init_pid: 0,
            shim_pid: shim.pid.as_raw_nonzero().get(),
        };
        Ok(PreparedStart {
            record,
            state_dir,
            shim,
            prepare: started.elapsed(),
            prepared_at: std::time::Instant::now(),
        })
    }

    /// The second half of a container start, and the one way every start ends: tells the
    /// waiting shim to start the container (creating it first unless [`PreparedStart::create`]
    /// did; the sandbox must be made by now) and returns once it runs.
    pub async fn launch(&self, prepared: PreparedStart) -> Result<ContainerHandle, RuntimeError> {
        let PreparedStart { mut record, state_dir, shim, prepare, prepared_at } = prepared;
        let go_at = std::time::Instant::now();
        let created_at = shim.created;
        let (pidfd, init_pid) = shim.go().await?;
        // The next start's shim, now that this one's is done.
        self.spare_shim.replenish();
        // The container holds its own copy of its overlay root now. The host's copy goes:
        // libcontainer reads the host's mount table many times per create, and a long overlay
        // line per running container made every later create slower.
        let root_owner = state_dir.clone();
        tokio::task::spawn_blocking(move || images::unmount_rootfs(&root_owner));
        if tracing::enabled!(tracing::Level::DEBUG) {
            // The shim's own trace (libcontainer's part of the start) is in its shim.log.
            let shim_log = std::fs::read_to_string(state_dir.join("shim.log")).unwrap_or_default();
            // With "create" first: waited = prepared -> create, network = create -> start.
            let first_line_at = created_at.unwrap_or(go_at);
            tracing::debug!(
                container = %record.id,
                prepare_ms = prepare.as_secs_f64() * 1e3,
                waited_ms = first_line_at.saturating_duration_since(prepared_at).as_secs_f64() * 1e3,
                network_ms = created_at.map(|at| (go_at - at).as_secs_f64() * 1e3),
                shim_ms = first_line_at.elapsed().as_secs_f64() * 1e3,
                shim_log = %shim_log.trim().replace('\n', "; "),
                "container started"
            );
        }
        record.started_at = Timestamp::now().to_string();
        record.init_pid = init_pid;
        let record_json = serde_json::to_vec_pretty(&record).map_err(|e| RuntimeError::Shim(e.to_string()))?;
        std::fs::write(state_dir.join(CONTAINER_RECORD), record_json).map_err(io_context("writing container.json"))?;
        Ok(ContainerHandle { record, state_dir, shim: Some(Arc::new(pidfd)) })
    }

    /// The shim of the container whose state is in `state_dir`, detached from Berth: the
    /// spare (see [`shim_spawn`]) or one started now; it waits for [`WaitingShim::create`] or
    /// [`WaitingShim::go`].
    async fn spawn_shim(&self, state_dir: &Path) -> Result<WaitingShim, RuntimeError> {
        let process = match self.spare_shim.claim(state_dir).await {
            Some(process) => process,
            None => {
                let shim_log =
                    std::fs::File::create(state_dir.join("shim.log")).map_err(io_context("creating shim.log"))?;
                // On the blocking pool, as the spare's: the spawn holds its thread until the
                // child has exec'd (1-13 ms traced), and in a burst of starts, where the spare is
                // soon gone, that held the async workers every other start needs.
                let (program, state_dir) = (self.config.shim_program.clone(), state_dir.to_owned());
                tokio::task::spawn_blocking(move || {
                    let args = [std::ffi::OsStr::new(shim::SHIM_ARG), state_dir.as_os_str()];
                    shim_spawn::spawn(&program, &args, Stdio::from(shim_log))
                })
                .await
                .map_err(|error| RuntimeError::Task(error.to_string()))?
                .map_err(RuntimeError::Shim)?
            }
        };
        std::fs::write(state_dir.join(shim::SHIM_PID_FILE), process.pid.as_raw_nonzero().to_string())
            .map_err(io_context("writing shim.pid"))?;
        let ShimProcess { pid, pidfd, stdin, stdout } = process;
        Ok(WaitingShim { pid, pidfd, lines: stdin, handshake: stdout, created: None })
    }

    fn container_mounts(
        &self,
        sandbox: &Sandbox,
        container: &Container,
        process: &ProcessSpec,
        volumes: &PreparedVolumes,
        state_dir: &Path,
        host_image: bool,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let sys_options: &[&str] =
            if process.privileged { &["nosuid", "noexec", "nodev"] } else { &["nosuid", "noexec", "nodev", "ro"] };
        let mut mounts = vec![
            Mount::new("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            Mount::new("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
            Mount::new(
                "/dev/pts",
                "devpts",
                "devpts",
                &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            ),
            Mount::new("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            Mount::new("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            Mount::new("/sys", "sysfs", "sysfs", sys_options),
            Mount::new("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
        ];
        let mut binds = Vec::new();
        let sandbox_dir = self.sandbox_dir(&sandbox.uid);
        for file in ["hosts", "hostname", "resolv.conf"] {
            binds.push(Mount::bind(&format!("/etc/{file}"), &sandbox_dir.join(file).display().to_string(), false));
        }
        let termination_path =
            container.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".to_owned());
        binds.push(Mount::bind(&termination_path, &state_dir.join(TERMINATION_LOG).display().to_string(), false));
        // These are files; the sandbox's may not exist yet (it is made while this runs).
        let known_files = binds.len();

        let mut volume_mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume = volumes.get(&mount.name).ok_or_else(|| RuntimeError::UnknownVolume(mount.name.clone()))?;
            let lookup = |name: &str| process.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let sub_path = match (&mount.sub_path, &mount.sub_path_expr) {
                (Some(path), _) if !path.is_empty() => Some(path.clone()),
                (_, Some(expr)) if !expr.is_empty() => Some(spec::expand(expr, lookup)),
                _ => None,
            };
            let mut source = volume.host_path.clone();
            if let Some(sub_path) = sub_path {
                let relative = Path::new(&sub_path);
                let safe = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(RuntimeError::BadSubPath(sub_path));
                }
                source = source.join(relative);
                if std::fs::symlink_metadata(&source).is_err() && !volume.force_read_only {
                    std::fs::create_dir_all(&source)
                        .map_err(io_context(format!("creating subPath {}", source.display())))?;
                }
            }
            let read_only = mount.read_only.unwrap_or(false) || volume.force_read_only;
            volume_mounts.push(Mount::bind(&mount.mount_path, &source.display().to_string(), read_only));
        }
        // Parents before children, whatever order the pod lists them in.
        volume_mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
        binds.extend(volume_mounts);
        let targets: Vec<MountTarget> = binds
            .iter()
            .enumerate()
            .map(|(index, bind)| MountTarget {
                destination: bind.destination.clone(),
                is_dir: index >= known_files && std::fs::metadata(&bind.source).map(|m| m.is_dir()).unwrap_or(true),
            })
            .collect();
        if host_image {
            mounts.extend(self.host_image.mounts_for(&targets, &state_dir.join("mountpoints"))?);
        }
        mounts.extend(binds);
        Ok(mounts)
    }

    fn oci_spec(&self, sandbox: &Sandbox, process: &ProcessSpec, mounts: Vec<Mount>, cgroups_path: &str) -> oci::Spec {
        let resources = &process.resources;
        let memory = resources.memory_limit_bytes.map(|limit| oci::Memory { limit: Some(limit) });
        let cpu = oci::Cpu {
            shares: Some(crate::resources::cpu_shares(resources.cpu_request_millis)),
            quota: resources.cpu_limit_millis.map(crate::resources::cpu_quota),
            period: resources.cpu_limit_millis.map(|_| crate::resources::CPU_PERIOD_US),
        };
        // A capability Berth lacks cannot be given (runc would fail); privileged pods get
        // everything Berth has.
        let granted: Vec<String> =
            process.capabilities.iter().filter(|cap| self.limits.capability_available(cap)).cloned().collect();
        let capabilities =
            oci::Capabilities { bounding: granted.clone(), effective: granted.clone(), permitted: granted };
        let (masked_paths, readonly_paths) = if process.privileged {
            (Vec::new(), Vec::new())
        } else {
            (
                [
                    "/proc/acpi",
                    "/proc/asound",
                    "/proc/kcore",
                    "/proc/keys",
                    "/proc/latency_stats",
                    "/proc/timer_list",
                    "/proc/timer_stats",
                    "/proc/sched_debug",
                    "/proc/scsi",
                    "/sys/firmware",
                    "/sys/devices/virtual/powercap",
                ]
                .map(str::to_owned)
                .to_vec(),
                ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"].map(str::to_owned).to_vec(),
            )
        };
        oci::Spec {
            oci_version: "1.0.2".to_owned(),
            process: oci::Process {
                terminal: false,
                user: oci::User {
                    uid: process.uid,
                    gid: process.gid,
                    additional_gids: process.additional_gids.clone(),
                },
                args: process.argv.clone(),
                env: process.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cwd: process.cwd.clone(),
                capabilities,
                no_new_privileges: process.no_new_privileges,
                oom_score_adj: Some(process.oom_score_adj.max(self.limits.min_oom_score_adj)),
            },
            root: oci::Root { path: "rootfs".to_owned(), readonly: process.read_only_root },
            hostname: Some(sandbox.hostname.clone()),
            mounts,
            linux: oci::Linux {
                namespaces: vec![Namespace::new("pid"), Namespace::new("mount")]
                    .into_iter()
                    .chain(
                        self.pinned_namespaces(sandbox)
                            .into_iter()
                            .map(|(kind, path)| Namespace::join(kind, &path.display().to_string())),
                    )
                    .collect(),
                cgroups_path: cgroups_path.to_owned(),
                resources: oci::Resources {
                    devices: vec![oci::DeviceRule { allow: process.privileged, access: "rwm".to_owned() }],
                    memory,
                    cpu: Some(cpu),
                },
                masked_paths,
                readonly_paths,
            },
        }
    }

    /// Runs an OCI runtime verb (runc's command line).
    async fn oci(&self, cli: OciCli, args: &[&str]) -> Result<String, CommandError> {
        let mut full = cli.base_args();
        full.extend(args.iter().map(std::ffi::OsString::from));
        command::run(&cli.program, &full, None).await
    }

    /// Sends `signal` (a name such as `TERM`) to the container's init process.
    pub async fn signal_container(&self, handle: &ContainerHandle, signal: &str) -> Result<(), RuntimeError> {
        match self.oci(self.handle_cli(handle), &["kill", handle.record.id.as_str(), signal]).await {
            Ok(_) => Ok(()),
            // Already gone: the shim is recording its exit.
            Err(_) if handle.exit_record().is_some() || !self.is_running(handle).await => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn is_running(&self, handle: &ContainerHandle) -> bool {
        match self.oci(self.handle_cli(handle), &["state", handle.record.id.as_str()]).await {
            Ok(state) => serde_json::from_str::<serde_json::Value>(&state)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "running" || s == "created"))
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how the container ended.
    pub async fn stop_container(&self, handle: &ContainerHandle, grace: Duration) -> ExitRecord {
        if let Some(record) = handle.exit_record() {
            return record;
        }
        if let Err(error) = self.signal_container(handle, "TERM").await {
            tracing::warn!(%error, id = %handle.record.id, "cannot send SIGTERM");
        }
        if let Ok(record) = tokio::time::timeout(grace, handle.wait()).await {
            return record;
        }
        if let Err(error) = self.signal_container(handle, "KILL").await {
            tracing::warn!(%error, id = %handle.record.id, "cannot send SIGKILL");
        }
        match tokio::time::timeout(KILL_WAIT, handle.wait()).await {
            Ok(record) => record,
            Err(_) => {
                tracing::error!(id = %handle.record.id, "container did not end after SIGKILL");
                ExitRecord {
                    exit_code: 137,
                    signal: Some(9),
                    oom_killed: false,
                    finished_at: Timestamp::now().to_string(),
                    error: Some("the container did not end after SIGKILL".to_owned()),
                }
            }
        }
    }

    /// Runs `argv` inside the container (exec probes); kills the runc client on timeout.
    pub async fn exec_sync(
        &self,
        handle: &ContainerHandle,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let cli = self.handle_cli(handle);
        let child = cli
            .tokio_command()
            .arg("exec")
            .arg(&handle.record.id)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RuntimeError::Command(CommandError::Spawn { program: cli.program.display().to_string(), source: e })
            })?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => {
                let mut combined = output.stdout;
                combined.extend_from_slice(&output.stderr);
                Ok(ExecOutput { exit_code: output.status.code().unwrap_or(-1), output: combined, timed_out: false })
            }
            Ok(Err(error)) => Err(io_context("running the runtime's exec")(error)),
            Err(_) => Ok(ExecOutput { exit_code: -1, output: Vec::new(), timed_out: true }),
        }
    }

    /// Every container attempt of pod `uid` recorded on disk, running or ended, oldest
    /// attempt first per name. Running ones are watched again (Berth restarted meanwhile).
    pub async fn containers(&self, uid: &str) -> Vec<ContainerHandle> {
        if check_uid(uid).is_err() {
            return Vec::new();
        }
        let mut handles = Vec::new();
        for state_dir in layout::container_state_dirs(&self.config.data_dir, uid) {
            let Some(record) = std::fs::read(state_dir.join(CONTAINER_RECORD))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ContainerRecord>(&bytes).ok())
            else {
                continue;
            };
            handles.push(self.adopt(record, state_dir).await);
        }
        handles.sort_by(|a, b| (&a.record.name, a.record.attempt).cmp(&(&b.record.name, b.record.attempt)));
        handles
    }

    async fn adopt(&self, record: ContainerRecord, state_dir: PathBuf) -> ContainerHandle {
        if shim::read_exit_record(&state_dir).is_some() {
            return ContainerHandle { record, state_dir, shim: None };
        }
        if let Some(pidfd) = open_shim(&state_dir, record.shim_pid) {
            // The exit record may have appeared between the check above and opening the
            // pidfd; then the pidfd is simply readable at once.
            return ContainerHandle { record, state_dir, shim: Some(Arc::new(pidfd)) };
        }
        if shim::read_exit_record(&state_dir).is_none() {
            // The shim died without recording anything (killed): the container may still
            // run unwatched. Stop it and record what we know.
            tracing::warn!(id = %record.id, "container shim vanished; stopping the container");
            let cli = OciCli::for_container(&self.config, record.runtime, &state_dir);
            let _ = self.oci(cli, &["delete", "--force", record.id.as_str()]).await;
            let lost = ExitRecord {
                exit_code: 137,
                signal: None,
                oom_killed: false,
                finished_at: Timestamp::now().to_string(),
                error: Some("the container's shim ended without recording an exit status".to_owned()),
            };
            if let Ok(bytes) = serde_json::to_vec(&lost) {
                let _ = std::fs::write(state_dir.join(shim::EXIT_FILE), bytes);
            }
        }
        ContainerHandle { record, state_dir, shim: None }
    }

    /// Forgets attempts of container `name` older than `keep_from`: their bundles and logs.
    /// Kubelet likewise keeps only the current and the previous attempt.
    pub async fn prune_attempts(&self, uid: &str, name: &str, keep_from: u32) {
        if check_uid(uid).is_err() {
            return;
        }
        for attempt in 0..keep_from {
            let [current, legacy] = layout::containers_dirs(&self.config.data_dir, uid);
            let attempt_dir = format!("{name}-{attempt}");
            for dir in [current.join(&attempt_dir), legacy.join(&attempt_dir), self.layer_dir(uid, name, attempt)] {
                images::unmount_rootfs(&dir);
                if tokio::fs::metadata(&dir).await.is_ok()
                    && let Err(error) = tokio::fs::remove_dir_all(&dir).await
                {
                    tracing::warn!(%error, dir = %dir.display(), "cannot remove old container attempt");
                }
            }
            crilog::remove_log(&self.log_path(uid, name, attempt));
        }
    }

    /// Removes the on-disk state of an ended container attempt (its log stays).
    pub async fn remove_container(&self, handle: &ContainerHandle) -> Result<(), RuntimeError> {
        images::unmount_rootfs(&handle.state_dir);
        let record = &handle.record;
        remove_dirs(&[handle.state_dir.clone(), self.layer_dir(&record.pod_uid, &record.name, record.attempt)]).await
    }
}

/// Removes each directory with everything in it; one that is not there is fine.
async fn remove_dirs(dirs: &[PathBuf]) -> Result<(), RuntimeError> {
    for dir in dirs {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_context(format!("removing {}", dir.display()))(error)),
        }
    }
    Ok(())
}

/// The container's `stdin`, `stdinOnce` and `tty`.
fn stdio_mode(container: &Container) -> crate::attach::StdioMode {
    crate::attach::StdioMode {
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
    }
}

/// A pidfd on the shim recorded in `state_dir`, if that process is still that shim.
fn open_shim(state_dir: &Path, shim_pid: i32) -> Option<AsyncFd<OwnedFd>> {
    let pid = Pid::from_raw(shim_pid)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    // With the pidfd held the PID cannot be recycled, so this check is race-free.
    let cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).ok()?;
    let expected = state_dir.as_os_str().as_encoded_bytes();
    let is_our_shim = cmdline.split(|b| *b == 0).any(|arg| arg == expected);
    if !is_our_shim {
        return None;
    }
    watch_fd(pidfd).ok()
}

/// Registers a descriptor (a pidfd, a timerfd) with tokio's reactor for read readiness.
#[allow(deprecated)]
pub(crate) fn watch_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // `AsyncFd::new` is deprecated because a borrowed descriptor could be closed while
    // registered; here the `AsyncFd` owns the `OwnedFd`, so nothing else can close it.
    AsyncFd::new(fd)
}
