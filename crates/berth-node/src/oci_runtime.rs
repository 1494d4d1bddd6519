//! Which OCI runtime runs a container, and the OCI runtime command line Berth drives it with.
//!
//! Two runtimes keep one contract, runc's command line (`--root R kill|state|delete|exec|list`):
//! - [`RuntimeKind::Runc`]: the `runc` binary.
//! - [`RuntimeKind::Libcontainer`]: youki's `libcontainer` inside Berth's own processes. The
//!   shim creates and starts the container in-process ([`create_and_start`]); every other verb
//!   is the `berth` binary re-executed as `berth __berth-oci --root R <verb>` ([`run_if_requested`]),
//!   a short-lived single-threaded process, since libcontainer forks and changes namespaces and
//!   must never run on a tokio thread.
//!
//! Each container records the kind that created it (`container.json`, `shim.json`), so a
//! server started with the other kind still stops and execs into older containers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, pidfd_open, waitid};
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

/// The libcontainer release Berth is built with (Cargo.toml), for the node's runtime version.
pub const LIBCONTAINER_VERSION: &str = "0.7.0";

/// First argument that makes the `berth` binary act as the OCI runtime command line.
pub const OCI_ARG: &str = "__berth-oci";

/// The OCI runtime that creates containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The `runc` binary (also what records written before the kind was recorded mean).
    #[default]
    Runc,
    /// youki's `libcontainer`, in the shim and in `berth __berth-oci`.
    Libcontainer,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Libcontainer => "libcontainer",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "runc" => Ok(RuntimeKind::Runc),
            "libcontainer" => Ok(RuntimeKind::Libcontainer),
            other => Err(format!("unknown container runtime {other:?}: expected runc or libcontainer")),
        }
    }
}

/// How to run one OCI runtime's command line: `program leading... --root root <verb> ...`.
#[derive(Debug, Clone)]
pub struct OciCli {
    pub program: PathBuf,
    pub leading: Vec<OsString>,
    pub root: PathBuf,
}

impl OciCli {
    /// The command line of `kind` for the node configured by `config`.
    pub fn new(config: &NodeConfig, kind: RuntimeKind) -> OciCli {
        OciCli::with_root(config, kind, crate::layout::state_root(&config.data_dir, kind))
    }

    /// The command line for the container whose state directory is `state_dir` (containers
    /// of older versions keep their OCI state at the old place, see [`crate::layout`]).
    pub fn for_container(config: &NodeConfig, kind: RuntimeKind, state_dir: &Path) -> OciCli {
        OciCli::with_root(config, kind, crate::layout::state_root_for(&config.data_dir, kind, state_dir))
    }

    fn with_root(config: &NodeConfig, kind: RuntimeKind, root: PathBuf) -> OciCli {
        match kind {
            RuntimeKind::Runc => OciCli { program: config.runc.clone(), leading: Vec::new(), root },
            RuntimeKind::Libcontainer => {
                OciCli { program: config.shim_program.clone(), leading: vec![OsString::from(OCI_ARG)], root }
            }
        }
    }

    /// Everything before the verb.
    pub fn base_args(&self) -> Vec<OsString> {
        let mut args = self.leading.clone();
        args.push("--root".into());
        args.push(self.root.clone().into_os_string());
        args
    }

    pub fn tokio_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(self.base_args());
        command
    }

    pub fn std_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(self.base_args());
        command
    }
}

/// An error and its causes on one line (libcontainer's errors nest the useful part).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The standard streams of a container's init process.
pub struct InitStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Creates container `id` from the bundle in `bundle` and starts it (what `runc run --detach`
/// does), in this process; returns the pid of its init, which is a child of this process.
/// Between the two steps it asks `may_start`: on false the created container is deleted and
/// nothing of it ever ran. Call only from a single-threaded process (the shim).
pub fn create_and_start(
    root: &Path,
    id: &str,
    bundle: &Path,
    console_socket: Option<&Path>,
    stdio: InitStdio,
    may_start: impl FnOnce() -> bool,
) -> Result<Pid, String> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    // libcontainer hands the container's oom_score_adj to its caller first (children inherit
    // it); the shim keeps its own.
    let own_score = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
    let builder = ContainerBuilder::new(id.to_owned(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| chain(&e))?
        .with_console_socket(console_socket)
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .validate_id()
        .map_err(|e| chain(&e))?;
    let created = builder.as_init(bundle).with_systemd(false).with_detach(true).build();
    if let Some(score) = own_score {
        let _ = std::fs::write("/proc/self/oom_score_adj", score.trim());
    }
    let mut container = match created {
        Ok(container) => container,
        Err(error) => {
            // A create that failed half-way (its namespaces went away meanwhile, say) may
            // have left its state and cgroup.
            let _ = delete(root, id);
            return Err(chain(&error));
        }
    };
    let created_after = started.elapsed();
    if !may_start() {
        // The init waits for its start signal: deleting kills it before the program ran.
        let deleted = container.delete(true).map_err(|e| chain(&e));
        return Err(format!("Berth gave up on the start after the container was created; deleted: {deleted:?}"));
    }
    let start_at = started.elapsed();
    if let Err(error) = container.start() {
        let _ = container.delete(true);
        return Err(chain(&error));
    }
    // For the start trace (`shim.log`; the shim's stderr).
    eprintln!(
        "libcontainer: create {:.1} ms, start {:.1} ms, waited {:.1} ms for start",
        created_after.as_secs_f64() * 1e3,
        (started.elapsed() - start_at).as_secs_f64() * 1e3,
        (start_at - created_after).as_secs_f64() * 1e3,
    );
    container
        .pid()
        .and_then(|pid| Pid::from_raw(pid.as_raw()))
        .ok_or_else(|| "the container has no init process".to_owned())
}

/// Removes container `id` (killing what still runs in it), as `runc delete --force` does.
pub fn delete(root: &Path, id: &str) -> Result<(), String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let mut container = Container::load(dir).map_err(|e| chain(&e))?;
    container.delete(true).map_err(|e| chain(&e))
}

/// Entry point for the `berth` binary: call first thing in `main`. Returns if the process was
/// not started as the OCI runtime command line; otherwise runs the verb and exits.
pub fn run_if_requested() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(OCI_ARG) {
        return;
    }
    let args: Vec<String> = args.collect();
    let code = match cli_main(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    };
    std::process::exit(code);
}

const USAGE: &str = "usage: __berth-oci --root DIR (kill ID [SIGNAL] | state ID | delete [--force] ID | \
                     exec [--tty] [--env K=V]... ID COMMAND... | list [-q])";

fn cli_main(args: &[String]) -> Result<i32, String> {
    let mut rest = args;
    let mut root = None;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "--root" => {
                root = rest.get(1).map(PathBuf::from);
                rest = rest.get(2..).unwrap_or_default();
            }
            _ => break,
        }
    }
    let root = root.ok_or(USAGE)?;
    let (verb, rest) = rest.split_first().ok_or(USAGE)?;
    match verb.as_str() {
        "kill" => {
            let id = rest.first().ok_or(USAGE)?;
            let signal = rest.get(1).map_or("TERM", String::as_str);
            let signal = libcontainer::signal::Signal::try_from(signal).map_err(|e| chain(&e))?;
            let mut container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
            container.kill(signal, false).map_err(|e| chain(&e))?;
            Ok(0)
        }
        "state" => {
            let id = rest.first().ok_or(USAGE)?;
            let container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
            let state = serde_json::json!({
                "ociVersion": "1.0.2",
                "id": container.id(),
                "status": container.status().to_string().to_lowercase(),
                "pid": container.pid().map_or(0, |pid| pid.as_raw()),
                "bundle": container.bundle(),
            });
            println!("{state}");
            Ok(0)
        }
        "delete" => {
            let id = rest.iter().find(|arg| !arg.starts_with('-')).ok_or(USAGE)?;
            // Like runc, a stopped container is removed with or without --force; Berth always
            // passes it.
            delete(&root, id)?;
            Ok(0)
        }
        "list" => {
            let mut ids: Vec<String> = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.path().join("state.json").exists())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect();
            ids.sort();
            for id in ids {
                println!("{id}");
            }
            Ok(0)
        }
        "exec" => exec(&root, rest),
        _ => Err(USAGE.to_owned()),
    }
}

/// `exec [--tty] [--env K=V]... ID COMMAND...`: runs COMMAND in the running container and exits
/// with its status (128 + n for a signal n). Without `--tty` the process gets this process's
/// stdio; with it, a terminal inside the container whose other side this process copies to and
/// from its own stdio (a terminal too), taking the size from it on start and on SIGWINCH.
fn exec(root: &Path, args: &[String]) -> Result<i32, String> {
    let mut tty = false;
    let mut env = HashMap::new();
    let mut rest = args;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "--tty" | "-t" => {
                tty = true;
                rest = &rest[1..];
            }
            "--env" | "-e" => {
                let pair = rest.get(1).ok_or(USAGE)?;
                let (key, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
                env.insert(key.to_owned(), value.to_owned());
                rest = rest.get(2..).unwrap_or_default();
            }
            _ => break,
        }
    }
    let (id, command) = rest.split_first().ok_or(USAGE)?;
    if command.is_empty() {
        return Err(USAGE.to_owned());
    }
    let console = if tty {
        // A short path of our own: the container's state dir may be too long for a socket.
        let path = std::env::temp_dir().join(format!("berth-exec-{}.sock", rustix::process::getpid().as_raw_nonzero()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("console socket {}: {e}", path.display()))?;
        Some((listener, path))
    } else {
        None
    };
    // A terminal needs the whole process description (libcontainer takes `terminal` only from
    // one): the container's own, with the command, the extra environment and a terminal.
    let process_file = match &console {
        Some((_, socket)) => Some(terminal_process(root, id, command, &env, &socket.with_extension("json"))?),
        None => None,
    };
    let built = ContainerBuilder::new(id.clone(), SyscallType::Linux)
        .with_root_path(root)
        .and_then(ContainerBuilder::validate_id)
        .map(|builder| builder.with_console_socket(console.as_ref().map(|(_, path)| path.as_path())))
        .and_then(|builder| match &process_file {
            // "Detached" only in libcontainer's sense: the terminal goes to the console socket.
            Some(file) => builder.as_tenant().with_detach(true).with_process(Some(file)).build(),
            None => builder.as_tenant().with_detach(false).with_container_args(command.to_vec()).with_env(env).build(),
        });
    for path in console.as_ref().map(|(_, path)| path).into_iter().chain(process_file.as_ref()) {
        let _ = std::fs::remove_file(path);
    }
    let pid = built.map_err(|e| chain(&e))?;
    let pid = Pid::from_raw(pid.as_raw()).ok_or("libcontainer returned no process")?;
    // The process is our child (libcontainer clones it as a sibling of its intermediate).
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open: {e}"))?;
    // Blocked only now: the process inherits our signal mask, and libcontainer does not reset it.
    let signals = forwarded_signals();
    if let Some((listener, _)) = console {
        let terminal =
            crate::attach::receive_terminal(&listener).map_err(|e| format!("receiving the terminal: {e}"))?;
        copy_terminal(&terminal, &pidfd, signals.as_ref());
    } else if let Some(signals) = &signals {
        forward_until_exit(&pidfd, signals);
    }
    let status = loop {
        match waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
            Ok(Some(status)) => break status,
            Ok(None) | Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(format!("waiting for the process: {error}")),
        }
    };
    Ok(match (status.exit_status(), status.terminating_signal()) {
        (_, Some(signal)) => 128 + signal,
        (Some(code), None) => code,
        (None, None) => 255,
    })
}

/// Signals sent to `berth __berth-oci exec` that go on to the exec'd process, as runc passes
/// them: whoever stops the exec (a timeout, an ended session) stops the process.
const FORWARDED: [nix::sys::signal::Signal; 6] = {
    use nix::sys::signal::Signal;
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2]
};

/// Blocks [`FORWARDED`] and returns a signalfd that receives them.
fn forwarded_signals() -> Option<nix::sys::signalfd::SignalFd> {
    use nix::sys::signal::SigSet;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask.thread_block().ok()?;
    // Non-blocking: `forward_pending` reads until nothing is left.
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()
}

/// Sends what arrived on `signals` to the process behind `pidfd`.
fn forward_pending(signals: &nix::sys::signalfd::SignalFd, pidfd: &OwnedFd) {
    while let Ok(Some(info)) = signals.read_signal() {
        if let Some(signal) = rustix::process::Signal::from_named_raw(info.ssi_signo as i32) {
            let _ = rustix::process::pidfd_send_signal(pidfd, signal);
        }
    }
}

/// Waits until the process behind `pidfd` exits, passing on forwarded signals meanwhile.
fn forward_until_exit(pidfd: &OwnedFd, signals: &nix::sys::signalfd::SignalFd) {
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN), PollFd::from_borrowed_fd(signals.as_fd(), PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        let (exited, signalled) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if signalled {
            forward_pending(signals, pidfd);
        }
        if exited {
            return;
        }
    }
}

/// Writes the process description of a terminal exec to `path`: the container's process with
/// `command`, `env` added over its environment, and `terminal: true`.
fn terminal_process(
    root: &Path,
    id: &str,
    command: &[String],
    env: &HashMap<String, String>,
    path: &Path,
) -> Result<PathBuf, String> {
    let container = Container::load(root.join(id)).map_err(|e| chain(&e))?;
    let spec =
        libcontainer::oci_spec::runtime::Spec::load(container.bundle().join("config.json")).map_err(|e| chain(&e))?;
    let mut process = spec.process().clone().ok_or("the container's config has no process")?;
    let mut environment = process.env().clone().unwrap_or_default();
    for (key, value) in env {
        let prefix = format!("{key}=");
        environment.retain(|entry| !entry.starts_with(&prefix));
        environment.push(format!("{key}={value}"));
    }
    process.set_env(Some(environment));
    process.set_args(Some(command.to_vec()));
    process.set_terminal(Some(true));
    let bytes = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path.to_owned())
}

/// Copies between our stdio and the container's terminal until the terminal's process side is
/// closed (or, failing that, until the process exits); passes on our terminal's size.
fn copy_terminal(terminal: &OwnedFd, pidfd: &OwnedFd, signals: Option<&nix::sys::signalfd::SignalFd>) {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let copy_size = || {
        if let Ok(size) = rustix::termios::tcgetwinsize(&stdin) {
            let _ = rustix::termios::tcsetwinsize(terminal, size);
        }
    };
    // Resizes arrive as SIGWINCH (runc's contract); read through a signalfd, no handler.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGWINCH);
    let winch = mask.thread_block().ok().and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).ok());
    copy_size();
    // Keystrokes go through unchanged (no echo, no line editing here): the container's
    // terminal does that. runc does the same to its own terminal.
    if let Ok(mut termios) = rustix::termios::tcgetattr(&stdin) {
        termios.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &termios);
    }
    let mut terminal_file = match terminal.try_clone() {
        Ok(fd) => File::from(fd),
        Err(_) => return,
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_open = true;
    let mut exited = false;
    loop {
        let mut fds = vec![PollFd::new(terminal, PollFlags::IN), PollFd::new(pidfd, PollFlags::IN)];
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let winch_index = fds.len();
        if let Some(winch) = &winch {
            fds.push(PollFd::from_borrowed_fd(winch.as_fd(), PollFlags::IN));
        }
        let signals_index = fds.len();
        if let Some(signals) = signals {
            fds.push(PollFd::from_borrowed_fd(signals.as_fd(), PollFlags::IN));
        }
        // Once the process exited, whatever it wrote is already in the terminal: drain it.
        let timeout = exited.then_some(rustix::event::Timespec { tv_sec: 0, tv_nsec: 100_000_000 });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        if !ready[0].is_empty() {
            match terminal_file.read(&mut buf) {
                // EIO once no process holds the terminal's other side any more.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut out = stdout.lock();
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        if !ready[1].is_empty() {
            exited = true;
        }
        if stdin_open && ready.get(2).is_some_and(|events| !events.is_empty()) {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if terminal_file.write_all(&buf[..n]).is_err() {
                        stdin_open = false;
                    }
                }
            }
        }
        if let Some(winch) = &winch
            && ready.get(winch_index).is_some_and(|events| !events.is_empty())
        {
            let _ = winch.read_signal();
            copy_size();
        }
        if let Some(signals) = signals
            && ready.get(signals_index).is_some_and(|events| !events.is_empty())
        {
            forward_pending(signals, pidfd);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_serialise() {
        assert_eq!("libcontainer".parse::<RuntimeKind>().unwrap(), RuntimeKind::Libcontainer);
        assert_eq!("runc".parse::<RuntimeKind>().unwrap(), RuntimeKind::Runc);
        assert!("crun".parse::<RuntimeKind>().is_err());
        assert_eq!(serde_json::to_string(&RuntimeKind::Libcontainer).unwrap(), "\"libcontainer\"");
    }

    #[test]
    fn cli_rejects_bad_usage() {
        assert!(cli_main(&[]).is_err());
        assert!(cli_main(&["--root".into(), "/nonexistent".into(), "frobnicate".into()]).is_err());
        // Listing an empty root lists nothing.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cli_main(&["--root".into(), dir.path().display().to_string(), "list".into(), "-q".into()]), Ok(0));
        // Deleting what is not there succeeds, as cleaning up twice must.
        assert_eq!(
            cli_main(&[
                "--root".into(),
                dir.path().display().to_string(),
                "delete".into(),
                "--force".into(),
                "x".into()
            ]),
            Ok(0)
        );
    }
}
