//! A pod's network, UTS and IPC namespaces, made without starting any process, and pinned
//! in a mount namespace of Berth's own.
//!
//! A namespace switch applies to the calling thread only, and a tokio worker must never be
//! switched (it would run every later task inside the pod). So a throwaway OS thread does
//! it: it unshares the three namespaces, pins each by bind-mounting its
//! `/proc/thread-self/ns/<kind>` file onto a path (as `ip netns add` and `unshare --uts=FILE`
//! do), opens a netlink socket inside the new network namespace (a socket stays in the
//! namespace it was made in), and ends. Nothing but that thread ever enters the namespaces.
//!
//! Pins are mounts, and each line of the host's mount table costs every container create:
//! libcontainer and libcgroups read `/proc/self/mountinfo` many times per create, and the
//! kernel copies the whole table into each new container's mount namespace (measured here:
//! about 1 ms per 100 lines, so three pins a pod made the hundredth start 3 ms slower than the
//! first). So the pins go into the *pin namespace* ([`PinNamespace`]): a copy of the
//! host's mount namespace that the host holds by one bind mount of it (the anchor, on the run
//! tmpfs), so it outlives `berth server` as the pods do. A parked thread of the server lives
//! in it, and `/proc/<pid>/task/<tid>/root` is the way in for paths: a container joins a pod's
//! namespaces through it. Removing a pin's file on the host detaches the mount on it in the
//! pin namespace (the kernel lazily unmounts mounts on a file deleted in another mount
//! namespace), so no thread has to enter the namespace to unpin.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::mount::{MountPropagationFlags, mount_bind, mount_change};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// Where versions before the pin namespace pinned pods' network namespaces (iproute2's
/// `ip netns` directory): such pods are still found there until they are removed.
pub const LEGACY_NETNS_DIR: &str = "/run/netns";

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

/// The namespaces a pod's containers share, pinned by Berth: each as its OCI namespace type and
/// its name under `/proc/<tid>/ns/`, which is also its pin file's name in the sandbox directory.
pub const PINNED: [(&str, &str); 3] = [("network", "net"), ("uts", "uts"), ("ipc", "ipc")];

/// Where the new namespaces are pinned: the [`PINNED`] files of a sandbox directory (a host
/// path; each file is created if missing), in the pin namespace.
#[derive(Debug, Clone)]
pub struct PodNamespacePaths {
    pub dir: PathBuf,
    /// The pod's hostname, set in its new UTS namespace: containers join that namespace, and
    /// a runtime sets a hostname only in a UTS namespace it creates itself.
    pub hostname: String,
    /// The pin namespace ([`PinNamespace::handle`]).
    pub pin_namespace: Arc<OwnedFd>,
}

/// The new network namespace: a netlink connection whose socket lives in it (spawn the
/// `Connection` on the runtime to use the handle), and the namespace itself, open.
pub struct PodNetwork {
    pub connection: rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
    pub handle: rtnetlink::Handle,
    pub netns: OwnedFd,
}

/// Creates and pins the pod's network, UTS and IPC namespaces. On error the caller removes
/// whatever was pinned.
pub async fn create(paths: PodNamespacePaths) -> Result<PodNetwork, NamespaceError> {
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
fn create_on_this_thread(paths: &PodNamespacePaths) -> Result<PodNetwork, NamespaceError> {
    for (_, name) in PINNED {
        create_file(&paths.dir.join(name))?;
    }
    // FS: a thread sharing its root and working directory with others cannot switch mount
    // namespaces.
    unshare(UnshareFlags::NEWNET | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | UnshareFlags::FS)
        .map_err(errno_context("unsharing network, UTS and IPC namespaces"))?;
    rustix::thread::move_into_link_name_space(paths.pin_namespace.as_fd(), Some(LinkNameSpaceType::Mount))
        .map_err(errno_context("entering the pin namespace"))?;
    for (_, name) in PINNED {
        pin(name, &paths.dir.join(name))?;
    }
    rustix::system::sethostname(paths.hostname.as_bytes())
        .map_err(errno_context(format!("setting the pod's hostname {:?}", paths.hostname)))?;
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(io_context("opening netlink in the pod's network namespace"))?;
    let netns = rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(errno_context("opening the pod's network namespace"))?;
    Ok(PodNetwork { connection, handle, netns })
}

/// Makes `path` exist as a file (something to bind-mount a namespace onto), keeping what is there.
fn create_file(path: &Path) -> Result<(), NamespaceError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(io_context(format!("creating {}", path.display())))
}

fn pin(kind: &str, target: &Path) -> Result<(), NamespaceError> {
    // A pin left by an earlier try would otherwise stay underneath, holding its namespace
    // (this thread is in the pin namespace: that is where it would be).
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

/// Unpins a namespace and removes its file (a host path). Best effort: what is gone already
/// is fine. Removing the file detaches a pin in the pin namespace; the unmount is for pins
/// on the host's table, made by versions before it.
pub fn remove_pinned(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

/// Berth's mount namespace for pins (see the module docs), entered by a parked thread that
/// ends when this is dropped.
#[derive(Debug)]
pub struct PinNamespace {
    /// `/proc/<pid>/task/<tid>/root` of the parked thread.
    root: PathBuf,
    handle: Arc<OwnedFd>,
    _park: std::sync::mpsc::Sender<()>,
}

impl PinNamespace {
    /// Enters the pin namespace anchored on `anchor` by an earlier start, or makes one (a
    /// copy of this process's mount namespace) and anchors it there. Its mounts are slaves of
    /// the host's: no pin propagates to the host, and what the host unmounts (a disk taken
    /// away) goes from the pin namespace too instead of being held there.
    pub fn open(anchor: &Path) -> Result<PinNamespace, NamespaceError> {
        let anchored = crate::volumes::is_mount_point(anchor);
        let anchor_file = if anchored {
            Some(std::fs::File::open(anchor).map_err(io_context(format!("opening {}", anchor.display())))?)
        } else {
            None
        };
        let (entered_sender, entered) = std::sync::mpsc::channel();
        let (park, parked) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("berth-pins".to_owned())
            .spawn(move || {
                let result = enter_pin_namespace(anchor_file.as_ref().map(|f| f.as_fd()));
                let entered_ok = result.is_ok();
                let _ = entered_sender.send(result.map(|()| rustix::thread::gettid()));
                if entered_ok {
                    // Returns once the sender is dropped.
                    let _ = parked.recv();
                }
            })
            .map_err(io_context("starting the pin namespace thread"))?;
        let tid = entered.recv().map_err(|_| NamespaceError::ThreadLost)??;
        let task = PathBuf::from(format!("/proc/{}/task/{}", std::process::id(), tid.as_raw_nonzero()));
        let namespace = task.join("ns/mnt");
        if !anchored {
            create_file(anchor)?;
            mount_bind(&namespace, anchor)
                .map_err(errno_context(format!("anchoring the pin namespace on {}", anchor.display())))?;
        }
        let handle = rustix::fs::open(
            &namespace,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(errno_context(format!("opening {}", namespace.display())))?;
        Ok(PinNamespace { root: task.join("root"), handle: Arc::new(handle), _park: park })
    }

    /// `host_path` (absolute) inside the pin namespace, as any process of the host opens it.
    pub fn path(&self, host_path: &Path) -> PathBuf {
        self.root.join(host_path.strip_prefix("/").unwrap_or(host_path))
    }

    /// The namespace, for [`PodNamespacePaths::pin_namespace`].
    pub fn handle(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.handle)
    }
}

/// Runs on the parked thread: joins the anchored namespace, or makes a new one.
fn enter_pin_namespace(anchored: Option<std::os::fd::BorrowedFd<'_>>) -> Result<(), NamespaceError> {
    match anchored {
        Some(namespace) => {
            unshare(UnshareFlags::FS).map_err(errno_context("unsharing the thread's root"))?;
            rustix::thread::move_into_link_name_space(namespace, Some(LinkNameSpaceType::Mount))
                .map_err(errno_context("entering the pin namespace"))
        }
        None => {
            unshare(UnshareFlags::NEWNS).map_err(errno_context("unsharing a mount namespace"))?;
            mount_change("/", MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
                .map_err(errno_context("making the pin namespace's mounts slaves"))
        }
    }
}
