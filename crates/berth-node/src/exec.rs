//! Processes started inside a pod's running container with runc's own `exec` command, for
//! `kubectl exec` and `kubectl cp`: with piped stdio, or with a pseudo-terminal for `-t`.
//!
//! runc, given `--tty` without `--detach`, allocates the container-side terminal itself and
//! copies between it and its own stdio, which must then be a terminal too (it switches that
//! one to raw mode). So a `-t` exec gets a pty pair here: runc holds the replica side, the
//! caller reads and writes the controller side, and a resize sets the size on our side and
//! sends runc SIGWINCH, upon which runc copies the size into the container's terminal.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Signal};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::oci_runtime::OciCli;
use crate::runtime::ContainerRecord;
use crate::shim;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("container {container:?} of pod {pod_uid} is not running")]
    NotRunning { pod_uid: String, container: String },
    #[error("allocating a terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// What to run and which streams the caller wants.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The terminal's initial size (columns, rows), if known.
    pub size: Option<(u16, u16)>,
}

pub type ExecReader = Pin<Box<dyn AsyncRead + Send>>;
pub type ExecWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A running `runc exec`. With a terminal, its output all arrives on `stdout`.
pub struct ExecProcess {
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    pub stderr: Option<ExecReader>,
    terminal: Option<File>,
    child: tokio::process::Child,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess").field("tty", &self.terminal.is_some()).field("pid", &self.child.id()).finish()
    }
}

/// The record of the newest attempt of container `name` in pod `uid` that has not ended.
pub fn running_container(data_dir: &Path, uid: &str, name: &str) -> Option<ContainerRecord> {
    running_container_state(data_dir, uid, name).map(|(record, _)| record)
}

/// Like [`running_container`], with the attempt's state directory.
pub fn running_container_state(data_dir: &Path, uid: &str, name: &str) -> Option<(ContainerRecord, PathBuf)> {
    if uid.is_empty() || !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    crate::layout::container_state_dirs(data_dir, uid)
        .into_iter()
        .filter_map(|dir| {
            let record: ContainerRecord =
                serde_json::from_slice(&std::fs::read(dir.join("container.json")).ok()?).ok()?;
            (record.name == name && !dir.join(shim::EXIT_FILE).exists()).then_some((record, dir))
        })
        .max_by_key(|(record, _)| record.attempt)
}

/// Starts `spec.command` in container `id` with the runtime's `exec` (`runc exec` or its
/// libcontainer counterpart, which keep one contract).
pub fn spawn(cli: &OciCli, id: &str, spec: &ExecSpec) -> Result<ExecProcess, ExecError> {
    let mut cmd = cli.tokio_command();
    cmd.arg("exec");
    if spec.tty {
        cmd.arg("--tty").arg("--env").arg("TERM=xterm");
    }
    cmd.arg(id).args(&spec.command).kill_on_drop(true);
    let spawn_error = |source| ExecError::Spawn { program: cli.program.display().to_string(), source };
    if spec.tty {
        let (controller, replica) = open_pty().map_err(ExecError::Terminal)?;
        if let Some((cols, rows)) = spec.size {
            set_size(&controller, cols, rows);
        }
        let clone = |f: &OwnedFd| f.try_clone().map_err(ExecError::Terminal);
        cmd.stdin(Stdio::from(clone(&replica)?)).stdout(Stdio::from(clone(&replica)?)).stderr(Stdio::from(replica));
        let child = cmd.spawn().map_err(spawn_error)?;
        // Our copy of the replica side was moved into the Command and is closed with it, so
        // reading the controller side ends (EIO) once runc and the process are gone.
        drop(cmd);
        let reader = File::from(clone(&controller)?);
        let writer = File::from(clone(&controller)?);
        Ok(ExecProcess {
            stdin: spec.stdin.then(|| Box::pin(tokio::fs::File::from_std(writer)) as ExecWriter),
            stdout: Some(Box::pin(tokio::fs::File::from_std(reader)) as ExecReader),
            stderr: None,
            terminal: Some(File::from(controller)),
            child,
        })
    } else {
        let piped = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(piped(spec.stdin)).stdout(piped(spec.stdout)).stderr(piped(spec.stderr));
        let mut child = cmd.spawn().map_err(spawn_error)?;
        Ok(ExecProcess {
            stdin: child.stdin.take().map(|s| Box::pin(s) as ExecWriter),
            stdout: child.stdout.take().map(|s| Box::pin(s) as ExecReader),
            stderr: child.stderr.take().map(|s| Box::pin(s) as ExecReader),
            terminal: None,
            child,
        })
    }
}

fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let controller = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&controller)?;
    rustix::pty::unlockpt(&controller)?;
    let name = rustix::pty::ptsname(&controller, Vec::new())?;
    let replica = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    Ok((controller, replica))
}

fn set_size(terminal: &OwnedFd, cols: u16, rows: u16) {
    let size = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    if let Err(e) = rustix::termios::tcsetwinsize(terminal, size) {
        tracing::debug!(error = %e, "setting the exec terminal size");
    }
}

impl ExecProcess {
    /// A handle to resize the terminal from another task, if there is one.
    pub fn resizer(&self) -> Option<Resizer> {
        let terminal = self.terminal.as_ref()?.try_clone().ok()?;
        let pid = self.child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw)?;
        Some(Resizer { terminal: OwnedFd::from(terminal), runc_pid: pid })
    }

    /// Waits for the process; its exit code (runc reports 128+n for a signal n).
    pub async fn wait(mut self) -> io::Result<i32> {
        // Close our write side first so a process reading stdin sees its end.
        self.stdin = None;
        let status = self.child.wait().await?;
        Ok(status.code().unwrap_or(-1))
    }

    /// Takes the streams out, leaving the process to be waited on.
    pub fn take_streams(&mut self) -> (Option<ExecWriter>, Option<ExecReader>, Option<ExecReader>) {
        (self.stdin.take(), self.stdout.take(), self.stderr.take())
    }
}

/// Resizes an exec's terminal.
pub struct Resizer {
    terminal: OwnedFd,
    runc_pid: Pid,
}

impl Resizer {
    pub fn resize(&self, cols: u16, rows: u16) {
        set_size(&self.terminal, cols, rows);
        // runc applies our terminal's size to the container's on SIGWINCH. The pid is that
        // of our own child, which `ExecProcess` keeps unreaped while this handle is in use.
        if let Err(e) = rustix::process::kill_process(self.runc_pid, Signal::WINCH) {
            tracing::debug!(error = %e, "signalling runc exec to resize");
        }
    }
}
