//! A pod's network, UTS and IPC namespaces, made without starting any process.
//!
//! A namespace switch applies to the calling thread only, and a tokio worker must never be
//! switched (it would run every later task inside the pod). So a throwaway OS thread does
//! it: it unshares the three namespaces, pins each by bind-mounting its
//! `/proc/thread-self/ns/<kind>` file onto a path (as `ip netns add` and `unshare --uts=FILE`
//! do), opens a netlink socket inside the new network namespace (a socket stays in the
//! namespace it was made in), and ends. Nothing but that thread ever enters the namespaces.

use std::path::{Path, PathBuf};

use rustix::mount::{MountPropagationFlags, mount_bind, mount_bind_recursive, mount_change};
use rustix::thread::UnshareFlags;

/// Where pinned network namespaces live, shared with iproute2 (`ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace thread ended without an answer")]
    ThreadLost,
}

fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NamespaceError {
    let context = context.into();
    move |source| NamespaceError::Io { context, source }
}

fn errno_context(context: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> NamespaceError {
    let context = context.into();
    move |errno| NamespaceError::Io { context, source: errno.into() }
}

/// Makes [`NETNS_DIR`] a shared mount point, as `ip netns add` does, so namespaces pinned
/// there later also appear in mount namespaces copied before. Idempotent.
pub fn prepare_netns_dir() -> Result<(), NamespaceError> {
    std::fs::create_dir_all(NETNS_DIR).map_err(io_context(format!("creating {NETNS_DIR}")))?;
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    if mount_change(NETNS_DIR, shared).is_ok() {
        return Ok(());
    }
    // Not a mount point yet: make it one (bound onto itself), then shared.
    mount_bind_recursive(NETNS_DIR, NETNS_DIR).map_err(errno_context(format!("bind-mounting {NETNS_DIR}")))?;
    mount_change(NETNS_DIR, shared).map_err(errno_context(format!("making {NETNS_DIR} shared")))
}

/// Files the new namespaces are pinned on; each is created if missing.
#[derive(Debug, Clone)]
pub struct PodNamespacePaths {
    pub net: PathBuf,
    pub uts: PathBuf,
    pub ipc: PathBuf,
    /// The pod's hostname, set in its new UTS namespace: containers join that namespace, and
    /// a runtime sets a hostname only in a UTS namespace it creates itself.
    pub hostname: String,
}

/// A netlink connection whose socket lives in the pod's network namespace.
pub type PodNetlink = (rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>, rtnetlink::Handle);

/// Creates and pins the pod's network, UTS and IPC namespaces; returns a netlink connection
/// inside the network namespace (spawn its `Connection` on the runtime to use the handle).
/// On error the caller removes whatever was pinned.
pub async fn create(paths: PodNamespacePaths) -> Result<PodNetlink, NamespaceError> {
    let runtime = tokio::runtime::Handle::current();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-podns".to_owned())
        .spawn(move || {
            // The netlink socket registers with this runtime's reactor.
            let _entered = runtime.enter();
            let _ = sender.send(create_on_this_thread(&paths));
        })
        .map_err(io_context("starting the namespace thread"))?;
    receiver.await.map_err(|_| NamespaceError::ThreadLost)?
}

/// Runs on a thread of its own that ends right after: it is left inside the new namespaces.
fn create_on_this_thread(paths: &PodNamespacePaths) -> Result<PodNetlink, NamespaceError> {
    for path in [&paths.net, &paths.uts, &paths.ipc] {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_context(format!("creating {}", path.display())))?;
    }
    unshare(UnshareFlags::NEWNET | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC)
        .map_err(errno_context("unsharing network, UTS and IPC namespaces"))?;
    pin("net", &paths.net)?;
    pin("uts", &paths.uts)?;
    pin("ipc", &paths.ipc)?;
    rustix::system::sethostname(paths.hostname.as_bytes())
        .map_err(errno_context(format!("setting the pod's hostname {:?}", paths.hostname)))?;
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(io_context("opening netlink in the pod's network namespace"))?;
    Ok((connection, handle))
}

fn pin(kind: &str, target: &Path) -> Result<(), NamespaceError> {
    // A pin left by an earlier try would otherwise stay underneath, holding its namespace.
    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
    let source = format!("/proc/thread-self/ns/{kind}");
    mount_bind(&source, target).map_err(errno_context(format!("bind-mounting {source} onto {}", target.display())))
}

#[allow(unsafe_code)]
fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    // SAFETY: rustix marks unshare unsafe only for `UnshareFlags::FILES` (a thread with its
    // own descriptor table could be handed descriptors of another); only namespace flags
    // are passed here.
    debug_assert!(!flags.contains(UnshareFlags::FILES));
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// Unpins a namespace and removes its file. Best effort: what is gone already is fine.
pub fn remove_pinned(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}
