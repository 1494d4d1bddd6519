//! The per-container shim: a small single-threaded process (the `berth` binary started with
//! [`SHIM_ARG`]) that outlives Berth. It creates and starts the container (libcontainer in
//! this process, or `runc run --detach`, or `runc create` then `runc start`) as a child
//! subreaper, so the container's init becomes its child; it copies
//! the container's stdout/stderr into the CRI log file; when the container exits it records
//! the exit status (and whether the memory cgroup OOM-killed it), deletes the runc container
//! and exits itself.
//!
//! It also holds the container's stdin (a pipe for `stdin: true`, the controller side of a
//! terminal for `tty: true`) and serves attach sessions on `attach.sock` (see
//! [`crate::attach`]).
//!
//! Berth talks to it through files in the container's state directory: `shim.json` (what to
//! run), `shim.pid`, and `exit.json` (written atomically just before the shim exits), plus
//! lines on its stdin and one on its stdout. Berth starts the shim early and writes either
//! [`GO_LINE`] once the sandbox and the bundle are ready (create and start), or
//! [`CREATE_LINE`] once the bundle and the pod's namespaces are ready, then [`START_LINE`]
//! once the pod's network is configured too (so the container is created while the network
//! is configured, and its program starts only after). End-of-file instead of a line means:
//! Berth died or gave up on this start; the shim deletes what it created and exits having
//! started nothing. The shim answers with one handshake line once the container runs.
//! A spare shim (see [`crate::shim_spawn`]) is started without a directory and first reads
//! it there.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitOptions, pidfd_open, waitid, waitpid};
use serde::{Deserialize, Serialize};

use crate::attach::{AttachServer, SocketDir, StdioMode, Token};
use crate::crilog::{CriLogWriter, RotatingFile, Rotation, Stream};
use crate::oci_runtime::{self, InitStdio, RuntimeKind};

/// First argument that makes the `berth` binary act as a container shim.
pub const SHIM_ARG: &str = "__berth-node-shim";

pub const SHIM_CONFIG_FILE: &str = "shim.json";
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const EXIT_FILE: &str = "exit.json";
const INIT_PID_FILE: &str = "init.pid";
const RUNC_LOG_FILE: &str = "runc.log";
/// Where runc sends the controller side of a `tty: true` container's terminal.
const CONSOLE_SOCKET: &str = "console.sock";

/// How long to keep copying output after the container's init exited: every writer is in
/// its PID namespace and dies with it, so this only bounds a pathological case.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

/// What the shim is asked to run, written by Berth as `shim.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// Which runtime creates the container (runc for configs of older shims).
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The runc binary (unused with libcontainer).
    pub runc: PathBuf,
    /// The runtime's state root (`runc --root`, or libcontainer's root path).
    pub runc_root: PathBuf,
    pub container_id: String,
    pub bundle: PathBuf,
    pub log_path: PathBuf,
    /// Size-based rotation of the log (absent in the config of shims from older versions).
    #[serde(default)]
    pub log_rotation: Rotation,
    /// The cgroup file counting OOM kills (`memory.oom_control` on v1, `memory.events` on
    /// v2), read once the container exits.
    pub oom_counter: Option<PathBuf>,
    /// The container's `stdin`, `stdinOnce` and `tty` (absent in configs of older shims).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
}

/// How a container ended, written by the shim as `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number for a killed process (as a shell reports it).
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
    /// Set when the shim could not watch the container to its end.
    pub error: Option<String>,
}

/// Entry point for the `berth` binary: call first thing in `main`. Returns if the process was
/// not started as a shim; otherwise runs the shim and exits.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(SHIM_ARG)) {
        return;
    }
    let code = match args.next() {
        Some(arg) if arg == SPARE_ARG => spare_main(),
        Some(state_dir) => shim_main(Path::new(&state_dir)),
        None => {
            eprintln!("usage: {SHIM_ARG} <container-state-dir>");
            2
        }
    };
    std::process::exit(code);
}

/// Second argument of a spare shim (see [`crate::shim_spawn`]); its third is the placeholder.
pub const SPARE_ARG: &str = "--spare";

/// The widest state directory a spare can take (its command line is rewritten in place).
const SPARE_WIDTH: usize = 1024;

/// A spare's third argument: room for the state directory it will be given.
pub fn spare_placeholder() -> String {
    "_".repeat(SPARE_WIDTH)
}

/// The line that hands a spare its container, `None` for a directory it cannot take.
pub fn spare_claim_line(state_dir: &Path) -> Option<Vec<u8>> {
    let bytes = state_dir.as_os_str().as_encoded_bytes();
    let fits = !bytes.is_empty() && bytes.len() <= SPARE_WIDTH && !bytes.contains(&b'\n') && !bytes.contains(&0);
    fits.then(|| [bytes, b"\n"].concat())
}

/// A spare shim: waits for the state directory of the container it is to watch, names it in
/// its own command line, sends its stderr to that directory's `shim.log`, and goes on as a
/// shim started for it. End of file first (Berth gone, or a spare in excess): exit.
fn spare_main() -> i32 {
    cache_procfs_handle();
    let mut line = Vec::new();
    if std::io::stdin().lock().read_until(b'\n', &mut line).map_or(true, |n| n == 0) {
        return 0;
    }
    let Some(bytes) = line.strip_suffix(b"\n") else { return 0 };
    let state_dir = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes));
    if let Err(error) = name_state_dir(bytes) {
        handshake(&format!("error naming the state directory in the command line: {error}"));
        return 1;
    }
    match File::create(state_dir.join("shim.log")) {
        Ok(log) => {
            let _ = rustix::stdio::dup2_stderr(&log);
        }
        Err(error) => {
            handshake(&format!("error creating shim.log: {error}"));
            return 1;
        }
    }
    shim_main(&state_dir)
}

/// Writes `state_dir` over the placeholder argument in this process's own argument memory
/// (what `/proc/<pid>/cmdline` shows), padded with NULs; the final NUL stays in place.
fn name_state_dir(state_dir: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start with field 3; arg_start is 48.
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).ok_or_else(|| invalid("/proc/self/stat"))?;
    let arg_start: u64 =
        after_name.split(' ').nth(48 - 3).and_then(|f| f.parse().ok()).ok_or_else(|| invalid("arg_start"))?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let [first, shim_arg, spare_arg, placeholder] = args.as_slice() else { return Err(invalid("arguments")) };
    if placeholder.len() < state_dir.len() {
        return Err(invalid("state directory wider than the placeholder"));
    }
    let offset = [first, shim_arg, spare_arg].iter().map(|a| a.len() as u64 + 1).sum::<u64>();
    let mut text = state_dir.to_vec();
    text.resize(placeholder.len(), 0);
    std::fs::OpenOptions::new().write(true).open("/proc/self/mem")?.write_all_at(&text, arg_start + offset)
}

/// The line Berth writes on the shim's stdin once the container may be created and started
/// (its sandbox exists and its bundle is written).
pub const GO_LINE: &str = "go\n";
/// The line that lets the shim create the container (its bundle is written and the pod's
/// namespaces exist) but not start it: it then waits for [`START_LINE`].
pub const CREATE_LINE: &str = "create\n";
/// The line, after [`CREATE_LINE`], that lets the shim start the created container (the pod's
/// network is configured).
pub const START_LINE: &str = "start\n";

/// What Berth's first line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    /// Create and start at once.
    Start,
    /// Create, then wait for [`START_LINE`].
    CreateOnly,
}

/// Runs the shim for the container whose state is in `state_dir`; returns the process exit code.
pub fn shim_main(state_dir: &Path) -> i32 {
    // Out of Berth's session and process group, so signals aimed at Berth miss it.
    let _ = rustix::process::setsid();
    // Orphans below us (the container's init once `runc run --detach` exits) become our children,
    // which is what lets us collect its exit status.
    if let Err(error) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        handshake(&format!("error becoming a subreaper: {error}"));
        return 1;
    }
    cache_procfs_handle();
    // Berth starts us before the pod's sandbox exists, so our exec and set-up overlap with it.
    let Some(go) = wait_for_go() else {
        // Berth died or gave up on this start: nothing was created, nothing is left behind.
        eprintln!("no go from Berth: exiting without creating the container");
        return 0;
    };
    let config: ShimConfig = match std::fs::read(state_dir.join(SHIM_CONFIG_FILE))
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(error) => {
            handshake(&format!("error reading {SHIM_CONFIG_FILE}: {error}"));
            return 1;
        }
    };
    match create(&config, state_dir, go) {
        Ok(created) => {
            handshake(&format!("ok {}", created.pid.as_raw_nonzero()));
            supervise(&config, state_dir, created);
            0
        }
        Err(error) => {
            handshake(&format!("error {error}"));
            1
        }
    }
}

/// Makes the `/proc` handle libcontainer reads through (pathrs), before the container's
/// processes are forked. pathrs mounts a private, detached procfs at its first use in a
/// process and keeps the descriptor for the process's life. Made here, the container's
/// processes inherit it instead of mounting their own (one procfs instance less per start),
/// and the shim holds it: otherwise the container's program closed the last reference when it
/// exec'd, and the kernel's release of a detached mount waits for an RCU grace period (traced:
/// 0.2 ms typically, over 2 ms on a busy machine) on the way from started to serving.
/// Best effort: without it libcontainer makes its own, as before.
fn cache_procfs_handle() {
    if let Err(error) = pathrs::procfs::ProcfsHandle::new() {
        eprintln!("no cached /proc handle ({error}); libcontainer will make its own");
    }
}

/// Blocks until Berth writes [`GO_LINE`] or [`CREATE_LINE`] on stdin; `None` on end-of-file
/// (Berth's end closed: it died or dropped the start) or anything else. After [`GO_LINE`]
/// stdin is `/dev/null`; after [`CREATE_LINE`] it stays open for [`wait_for_start`].
fn wait_for_go() -> Option<Go> {
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    let go = match read {
        Ok(n) if n > 0 && line == GO_LINE => Some(Go::Start),
        Ok(n) if n > 0 && line == CREATE_LINE => Some(Go::CreateOnly),
        _ => None,
    };
    if go != Some(Go::CreateOnly) {
        detach_stdin();
    }
    go
}

/// Blocks until Berth writes [`START_LINE`]; false on end-of-file or anything else (then the
/// created container must be deleted). Stdin is `/dev/null` afterwards.
fn wait_for_start() -> bool {
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    detach_stdin();
    matches!(read, Ok(n) if n > 0) && line == START_LINE
}

fn detach_stdin() {
    if let Ok(null) = File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
}

/// Writes the one handshake line Berth waits for, then detaches stdout from Berth.
fn handshake(line: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

struct Created {
    pid: Pid,
    pidfd: OwnedFd,
    stdout: File,
    stderr: File,
    /// The write end of the container's stdin pipe (`stdin: true` without a terminal).
    stdin: Option<OwnedFd>,
    /// The controller side of the container's terminal (`tty: true`).
    terminal: Option<OwnedFd>,
    socket_dir: SocketDir,
}

fn runc_command(config: &ShimConfig, state_dir: &Path) -> Command {
    let mut command = Command::new(&config.runc);
    command
        .arg("--root")
        .arg(&config.runc_root)
        .arg("--log")
        .arg(state_dir.join(RUNC_LOG_FILE))
        .arg("--log-format")
        .arg("json");
    command
}

fn create(config: &ShimConfig, state_dir: &Path, go: Go) -> Result<Created, String> {
    let socket_dir = SocketDir::open(state_dir).map_err(|e| format!("opening {}: {e}", state_dir.display()))?;
    let (stdout_read, stdout_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stderr_read, stderr_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // A terminal is the container's stdin and output; otherwise stdin is a pipe we hold the
    // write end of, or nothing.
    let (stdin_read, stdin_write) = if config.stdin && !config.tty {
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let console = if config.tty {
        let path = socket_dir.path(CONSOLE_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| format!("console socket: {e}"))?;
        Some((listener, path))
    } else {
        None
    };
    if config.runtime == RuntimeKind::Libcontainer {
        return create_in_process(
            config,
            go,
            socket_dir,
            console,
            (stdin_read, stdin_write),
            stdout_read,
            stdout_write,
            stderr_read,
            stderr_write,
        );
    }
    let pid_file = state_dir.join(INIT_PID_FILE);
    let status = {
        // The command (and with it our copies of the write ends) is dropped right after, so
        // the pipes reach end-of-file exactly when the container's processes are gone.
        let mut command = runc_command(config, state_dir);
        // `go`: create and start in one runc process, the container runs when runc returns.
        // `create`: `runc create` now, `runc start` once Berth says so.
        match go {
            Go::Start => command.args(["run", "--detach"]),
            Go::CreateOnly => command.arg("create"),
        };
        command.arg("--bundle").arg(&config.bundle).arg("--pid-file").arg(&pid_file);
        if let Some((_, path)) = &console {
            command.arg("--console-socket").arg(path);
        }
        command
            .arg(&config.container_id)
            .stdin(stdin_read.map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::from(stdout_write))
            .stderr(Stdio::from(stderr_write));
        command.status().map_err(|e| format!("cannot run {}: {e}", config.runc.display()))?
    };
    let mut stdout = File::from(stdout_read);
    let mut stderr = File::from(stderr_read);
    let runc_delete = || {
        // A half-created container would keep its runc state and cgroup.
        let _ = runc_command(config, state_dir)
            .args(["delete", "--force", config.container_id.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some((_, path)) = &console {
            let _ = std::fs::remove_file(path);
        }
    };
    if !status.success() {
        // runc prints its error on the stderr it was given; nothing else writes there now.
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let text = if text.trim().is_empty() { out } else { text };
        runc_delete();
        let verb = if go == Go::Start { "run" } else { "create" };
        return Err(format!("runc {verb} failed ({status}): {}", text.trim()));
    }
    if go == Go::CreateOnly {
        let created_at = Instant::now();
        if !wait_for_start() {
            // The created init still waits for `runc start`: deleting kills it unstarted.
            runc_delete();
            eprintln!("no start from Berth: deleted the created container, started nothing");
            return Err("Berth gave up on the start after the container was created".to_owned());
        }
        let waited = created_at.elapsed();
        // Not the container's pipes: the created init holds them open.
        let output = runc_command(config, state_dir)
            .args(["start", config.container_id.as_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", config.runc.display()))?;
        if !output.status.success() {
            runc_delete();
            let text = String::from_utf8_lossy(&output.stderr);
            return Err(format!("runc start failed ({}): {}", output.status, text.trim()));
        }
        eprintln!("runc: waited {:.1} ms for start", waited.as_secs_f64() * 1e3);
    }
    let terminal = console.map(take_terminal).transpose()?;
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("runc run left no usable pid in {}", pid_file.display()))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid:?}): {e}"))?;
    Ok(Created { pid, pidfd, stdout, stderr, stdin: stdin_write, terminal, socket_dir })
}

/// Creates and starts the container with libcontainer in this (single-threaded) process: no
/// runtime process is started. The container's init becomes our child.
#[allow(clippy::too_many_arguments)]
fn create_in_process(
    config: &ShimConfig,
    go: Go,
    socket_dir: SocketDir,
    console: Option<(UnixListener, PathBuf)>,
    (stdin_read, stdin_write): (Option<OwnedFd>, Option<OwnedFd>),
    stdout_read: OwnedFd,
    stdout_write: OwnedFd,
    stderr_read: OwnedFd,
    stderr_write: OwnedFd,
) -> Result<Created, String> {
    let started = Instant::now();
    let stdin = match stdin_read {
        Some(read) => read,
        None => File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?.into(),
    };
    // The write ends move into libcontainer and are closed once the init has its copies, so
    // the pipes reach end-of-file exactly when the container's processes are gone.
    let stdio = InitStdio { stdin, stdout: stdout_write, stderr: stderr_write };
    let created = oci_runtime::create_and_start(
        &config.runc_root,
        &config.container_id,
        &config.bundle,
        console.as_ref().map(|(_, path)| path.as_path()),
        stdio,
        || match go {
            Go::Start => true,
            Go::CreateOnly => {
                let start = wait_for_start();
                if !start {
                    eprintln!("no start from Berth: deleting the created container, starting nothing");
                }
                start
            }
        },
    );
    let created_after = started.elapsed();
    let pid = match created {
        Ok(pid) => pid,
        Err(error) => {
            if let Some((_, path)) = &console {
                let _ = std::fs::remove_file(path);
            }
            return Err(error);
        }
    };
    let terminal = console.map(take_terminal).transpose()?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid:?}): {e}"))?;
    // For the start trace (`shim.log`): how long libcontainer took to create and start.
    eprintln!(
        "libcontainer created and started {} in {:.1} ms",
        config.container_id,
        created_after.as_secs_f64() * 1e3
    );
    Ok(Created {
        pid,
        pidfd,
        stdout: File::from(stdout_read),
        stderr: File::from(stderr_read),
        stdin: stdin_write,
        terminal,
        socket_dir,
    })
}

fn supervise(config: &ShimConfig, state_dir: &Path, created: Created) {
    let Created { pid: _, pidfd, stdout, stderr, stdin, terminal, socket_dir } = created;
    let mut log = match RotatingFile::open(&config.log_path, config.log_rotation) {
        Ok(file) => Some(CriLogWriter::new(file)),
        Err(error) => {
            eprintln!("cannot open log file {}: {error}", config.log_path.display());
            None
        }
    };
    let mut streams: Vec<(Stream, Option<File>)> = vec![(Stream::Stdout, Some(stdout)), (Stream::Stderr, Some(stderr))];
    let mode = StdioMode { stdin: config.stdin, stdin_once: config.stdin_once, tty: config.tty };
    // A terminal's output is the container's stdout (as upstream logs it); its input and
    // resizes go to the same controller side.
    let mut attach = {
        let (input, resize) = match &terminal {
            Some(terminal) => {
                let dup = |fd: &OwnedFd| fd.try_clone().ok();
                (if config.stdin { dup(terminal) } else { None }, dup(terminal))
            }
            None => (stdin, None),
        };
        match AttachServer::listen(&socket_dir, mode, input, resize) {
            Ok(server) => Some(server),
            Err(error) => {
                eprintln!("cannot serve attach: {error}");
                None
            }
        }
    };
    if let Some(terminal) = terminal {
        streams.push((Stream::Stdout, Some(File::from(terminal))));
    }
    let mut exit: Option<(i32, Option<i32>)> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open_streams: Vec<usize> = (0..streams.len()).filter(|i| streams[*i].1.is_some()).collect();
        if exit.is_some() && open_streams.is_empty() {
            break;
        }
        if drain_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let attach_set = attach.as_ref().map(AttachServer::poll_set).unwrap_or_default();
        let attach_tokens: Vec<Token> = attach_set.iter().map(|(_, _, token)| *token).collect();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        for index in &open_streams {
            if let Some(file) = &streams[*index].1 {
                fds.push(PollFd::new(file, PollFlags::IN));
            }
        }
        let watching_exit = exit.is_none();
        if watching_exit {
            fds.push(PollFd::new(&pidfd, PollFlags::IN));
        }
        let attach_start = fds.len();
        fds.extend(attach_set.into_iter().map(|(fd, flags, _)| PollFd::from_borrowed_fd(fd, flags)));
        let timeout = drain_deadline.map(|deadline| {
            let left = deadline.saturating_duration_since(Instant::now());
            Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => {
                eprintln!("poll: {error}");
                break;
            }
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        drop(fds);
        for (slot, index) in open_streams.iter().enumerate() {
            if ready[slot].is_empty() {
                continue;
            }
            let (stream, file) = &mut streams[*index];
            let Some(reader) = file.as_mut() else { continue };
            match reader.read(&mut buf) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                // A terminal reports EIO once no process holds its other side: its end.
                Ok(0) | Err(_) => {
                    if let Some(log) = log.as_mut() {
                        let _ = log.finish(*stream, Timestamp::now());
                    }
                    *file = None;
                }
                Ok(n) => {
                    if let Some(log) = log.as_mut()
                        && let Err(error) = log.write(*stream, &buf[..n], Timestamp::now())
                    {
                        eprintln!("writing log: {error}");
                    }
                    if let Some(attach) = attach.as_mut() {
                        attach.output(*stream, &buf[..n]);
                    }
                }
            }
        }
        if watching_exit && ready.get(open_streams.len()).is_some_and(|events| !events.is_empty()) {
            match waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
                Ok(Some(status)) => {
                    exit = Some(match (status.exit_status(), status.terminating_signal()) {
                        (_, Some(signal)) => (128 + signal, Some(signal)),
                        (Some(code), None) => (code, None),
                        (None, None) => (255, None),
                    });
                    drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                Ok(None) => {}
                Err(error) => {
                    eprintln!("waitid: {error}");
                    exit = Some((255, None));
                    drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
            }
            if exit.is_some()
                && let Some(attach) = attach.as_mut()
            {
                attach.stop_listening();
            }
        }
        if let Some(attach) = attach.as_mut() {
            for (token, events) in attach_tokens.iter().zip(&ready[attach_start..]) {
                if !events.is_empty() {
                    attach.ready(*token, *events);
                }
            }
            attach.reap();
        }
    }
    if let Some(attach) = attach {
        attach.finish();
    }
    // Collect any other orphan that was handed to us (nothing we care about).
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}

    let (exit_code, signal) = exit.unwrap_or((255, None));
    let oom_killed = config.oom_counter.as_deref().is_some_and(oom_kills_recorded);
    match config.runtime {
        RuntimeKind::Runc => {
            let delete = runc_command(config, state_dir)
                .args(["delete", "--force", config.container_id.as_str()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(delete, Ok(status) if status.success()) {
                eprintln!("runc delete {} failed: {delete:?}", config.container_id);
            }
        }
        RuntimeKind::Libcontainer => {
            if let Err(error) = oci_runtime::delete(&config.runc_root, &config.container_id) {
                eprintln!("deleting container {} failed: {error}", config.container_id);
            }
        }
    }
    let record = ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at: Timestamp::now().to_string(),
        error: exit.is_none().then(|| "the shim lost track of the container".to_owned()),
    };
    if let Err(error) = write_exit_record(state_dir, &record) {
        eprintln!("cannot write {EXIT_FILE}: {error}");
    }
}

/// Whether the cgroup's OOM-kill counter (`oom_kill N`) is above zero. Each container gets a
/// fresh cgroup, so any kill is this container's.
fn oom_kills_recorded(counter_file: &Path) -> bool {
    std::fs::read_to_string(counter_file).is_ok_and(|text| {
        text.lines().any(|line| {
            line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
        })
    })
}

fn write_exit_record(state_dir: &Path, record: &ExitRecord) -> std::io::Result<()> {
    let temporary = state_dir.join(format!("{EXIT_FILE}.tmp"));
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    {
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, state_dir.join(EXIT_FILE))
}

/// Reads `exit.json` if the shim has written it.
pub fn read_exit_record(state_dir: &Path) -> Option<ExitRecord> {
    std::fs::read(state_dir.join(EXIT_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// The container's terminal, which the runtime sent to the console socket while it created the
/// container (it waits in the socket's queue); the socket file is removed either way.
fn take_terminal((listener, path): (UnixListener, PathBuf)) -> Result<OwnedFd, String> {
    let received = crate::attach::receive_terminal(&listener);
    let _ = std::fs::remove_file(&path);
    received.map_err(|e| format!("receiving the container's terminal: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert!(oom_kills_recorded(&v1));
        std::fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        assert!(!oom_kills_recorded(&v1));
        let v2 = dir.path().join("memory.events");
        std::fs::write(&v2, "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(oom_kills_recorded(&v2));
        assert!(!oom_kills_recorded(&dir.path().join("missing")));
    }

    #[test]
    fn exit_records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_record(dir.path()), None);
        let record = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            oom_killed: true,
            finished_at: "2024-01-01T00:00:00Z".into(),
            error: None,
        };
        write_exit_record(dir.path(), &record).unwrap();
        assert_eq!(read_exit_record(dir.path()), Some(record));
        assert!(!dir.path().join("exit.json.tmp").exists());
    }
}
