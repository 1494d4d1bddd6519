//! Starting shim processes, and keeping one started ahead of need.
//!
//! Exec'ing the `berth` binary as a shim costs a millisecond or two (the spawn waits until the
//! child has exec'd), on the path of every container start. So the runtime keeps one spare
//! shim waiting: a start claims it by writing the container's state directory on its stdin,
//! and a new spare is started once that start is over, off the path of the next one. A spare
//! holds no container; with Berth gone its stdin ends and it exits. Every spawn, a spare's or
//! that of a start which found none (a burst of starts), runs on the blocking pool, never on
//! an async worker.
//!
//! A spare is started with a placeholder argument as wide as the longest state directory it
//! may be given; once claimed it writes the state directory over that argument (see
//! [`crate::shim`]), so its command line names its container like a shim started for it:
//! adoption after a restart and the tools that find a pod's shims rely on that.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::AsyncWriteExt;
use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStdin, ChildStdout};

use crate::shim;

/// A started shim: its stdin (where Berth's lines go) and stdout (where its handshake comes).
pub(crate) struct ShimProcess {
    pub pid: Pid,
    pub pidfd: AsyncFd<OwnedFd>,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
}

/// Starts `program` with `args`, detached from Berth (own process group), stderr to `stderr`.
pub(crate) fn spawn(program: &Path, args: &[&OsStr], stderr: Stdio) -> Result<ShimProcess, String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()).and_then(Pid::from_raw) else {
        return Err("the shim exited at once".to_owned());
    };
    // Opened while we still hold the child, so the PID cannot have been reused.
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open: {e}"))?;
    let pidfd = crate::runtime::watch_fd(pidfd).map_err(|e| format!("watching the shim: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("no handshake pipe".to_owned());
    };
    // Dropping the child handle leaves the shim running; tokio reaps it when it exits.
    drop(child);
    Ok(ShimProcess { pid, pidfd, stdin, stdout })
}

/// The one spare shim of a runtime.
pub(crate) struct SpareShim {
    program: PathBuf,
    slot: Arc<Mutex<Option<ShimProcess>>>,
}

impl SpareShim {
    pub fn new(program: PathBuf) -> SpareShim {
        SpareShim { program, slot: Arc::new(Mutex::new(None)) }
    }

    /// Starts a spare in the background if there is none.
    pub fn replenish(&self) {
        let (program, slot) = (self.program.clone(), self.slot.clone());
        if slot.lock().map_or(true, |spare| spare.is_some()) {
            return;
        }
        // On the blocking pool: the spawn holds its thread until the child has exec'd.
        tokio::task::spawn_blocking(move || {
            let placeholder = shim::spare_placeholder();
            let args = [OsStr::new(shim::SHIM_ARG), OsStr::new(shim::SPARE_ARG), OsStr::new(&placeholder)];
            match spawn(&program, &args, Stdio::null()) {
                Ok(process) => {
                    if let Ok(mut spare) = slot.lock()
                        && spare.is_none()
                    {
                        *spare = Some(process);
                    }
                    // Otherwise another spare won the race: this one's stdin closes on drop.
                }
                Err(error) => tracing::warn!(%error, "cannot start a spare shim"),
            }
        });
    }

    /// Whether a spare is waiting.
    pub fn ready(&self) -> bool {
        self.slot.lock().is_ok_and(|spare| spare.is_some())
    }

    /// Hands the spare (if there is one, and it can take a directory that long) the
    /// container whose state is in `state_dir`; it then waits for `go` like a shim started
    /// for that directory.
    pub async fn claim(&self, state_dir: &Path) -> Option<ShimProcess> {
        let line = shim::spare_claim_line(state_dir)?;
        let mut process = self.slot.lock().ok()?.take()?;
        // A spare that died meanwhile makes this fail: the caller starts a shim of its own.
        process.stdin.write_all(&line).await.ok()?;
        Some(process)
    }
}
