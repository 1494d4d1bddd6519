//! Test support for Berth's end-to-end tests (a dev-dependency only, never shipped).
//!
//! [`Server`] starts a real `berth server` on a free port with its own data dir and drives it
//! with stock `kubectl` (with a fresh discovery cache) or kube-rs ([`Server::client`]). Servers
//! that run pods get a [`Slot`]: a bridge, a pod range, a service range and a NodePort range
//! that no other test server on this machine uses while the slot is held, also across test
//! binaries and across checkouts, so tests may run side by side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

mod cleanup;
mod ports;
mod slot;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

pub use slot::Slot;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether pods can run here (root and runc); prints why not when they cannot.
pub fn can_run_pods() -> bool {
    let root = is_root();
    let runc = Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    if !root || !runc {
        eprintln!("skipping: pods need root and runc (root: {root}, runc: {runc})");
    }
    root && runc
}

/// A TCP port nobody listens on right now, held for this test process alone (see [`ports`]).
pub fn free_port() -> u16 {
    ports::reserve()
}

/// Copies a server's standard error to this process's (where `cargo test` shows it, as when
/// inherited) and keeps its last lines, for a panic message when the server does not start.
/// The receiver hears (or is disconnected) when the pipe has closed.
fn forward_stderr(stderr: std::process::ChildStderr) -> (StderrTail, std::sync::mpsc::Receiver<()>) {
    const KEPT: usize = 40;
    let tail = std::sync::Arc::new(Mutex::new(std::collections::VecDeque::with_capacity(KEPT)));
    let kept = std::sync::Arc::clone(&tail);
    let (closed, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Write;
        let _closed = closed;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(std::io::stderr(), "{line}");
            let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
    (tail, closed_rx)
}

type StderrTail = std::sync::Arc<Mutex<std::collections::VecDeque<String>>>;

/// The `berth` binary: `$BERTH_BIN`, else the one next to the running test in the same target
/// directory, built on first use (`cargo test` builds a package's binaries only for that
/// package's own tests).
pub fn berth_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("BERTH_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: Mutex<bool> = Mutex::new(false);
    // Tests run from <target>/<profile>/deps/<test-binary>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir").to_path_buf();
    let bin = profile_dir.join("berth");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        // Variables cargo sets for the test process would change build-script fingerprints.
        for (key, _) in std::env::vars() {
            if key.starts_with("CARGO_") && key != "CARGO_HOME" {
                build.env_remove(key);
            }
        }
        let target = profile_dir.parent().expect("target dir").to_path_buf();
        let mut args = vec!["build", "-p", "berth", "--quiet"];
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let status = build
            .args(&args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p berth");
        assert!(status.success(), "cargo build -p berth failed");
        *built = true;
    }
    bin
}

/// A running `berth server`, stopped (and its pods removed) on drop.
pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub cache_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// The network resources of a server that runs pods.
    pub slot: Option<Slot>,
    binary: PathBuf,
    /// `server`, or `up` for a server that also deploys the example app.
    subcommand: String,
    /// Standard output lines after the first.
    lines: Option<std::sync::mpsc::Receiver<String>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with only the API (no controllers, no node agent).
    pub fn api_only() -> Self {
        Self::start(&["--no-controllers", "--no-node"])
    }

    /// Starts a server with the given extra flags. A server that runs pods gets a [`Slot`] of
    /// its own, passed as `--pod-bridge` and `--pod-cidr`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(berth_binary(), args)
    }

    /// As [`Server::start`], with another `berth` binary.
    pub fn start_with(binary: PathBuf, args: &[&str]) -> Self {
        Self::start_command(binary, "server", args)
    }

    /// As [`Server::start`] with another subcommand that starts a server (`up`).
    pub fn start_command(binary: PathBuf, subcommand: &str, args: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        // The router's listeners default to ports 80 and 443; tests choose free ports instead.
        for flag in ["--http-listen", "--https-listen"] {
            if !args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
                args.extend([flag.to_owned(), "off".to_owned()]);
            }
        }
        let slot = (!args.iter().any(|a| a == "--no-node")).then(Slot::acquire);
        if let Some(slot) = &slot {
            args.extend(slot.server_args());
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let cache_dir = tmp.path().join("kubecache");
        let mut s = Server {
            child: None,
            data_dir,
            port,
            cache_dir,
            extra_args: args,
            slot,
            binary,
            subcommand: subcommand.to_owned(),
            lines: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    /// What a reboot does to a stopped server's pods: stops their containers and shims,
    /// removes their namespaces and cgroups, and unmounts everything below the node's data
    /// dir (the run tmpfs included); files on disk stay.
    pub fn reboot_pods(&self) {
        cleanup::remove_pods(&self.data_dir.join("node"));
    }

    /// Runs another `berth` binary on the next [`Server::spawn`] (an upgrade in place).
    pub fn set_binary(&mut self, binary: PathBuf) {
        self.binary = binary;
    }

    /// Starts (or restarts) the server process on the same data dir and port.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(&self.subcommand)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra_args)
            .env("BERTH_LOG", std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn berth server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (stderr_tail, stderr_closed) = forward_stderr(child.stderr.take().expect("stderr"));
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            // The last lines are in once the pipe is closed (unless a child of the server
            // holds it open still).
            let _ = stderr_closed.recv_timeout(Duration::from_secs(2));
            let tail = stderr_tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            panic!("the server printed no address ({status}); its last log lines:\n{}", tail.join("\n"));
        };
        assert!(line.contains("KUBECONFIG="), "unexpected first line: {line}");
        self.lines = Some(rx);
        self.child = Some(child);
    }

    /// The next line the server prints on standard output after its first, within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(timeout).ok()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("reading kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        kube::Client::try_from(config).expect("client")
    }

    /// Kills the server process with SIGKILL (pods keep running, by design).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = c.try_wait() {
                    return st.success();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        false
    }

    /// Starts `kubectl args` in the background, for commands that keep printing (`get -w`):
    /// its standard output arrives line by line on the receiver.
    pub fn kubectl_lines(&self, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
        let mut child =
            self.kubectl_cmd(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn kubectl");
        let stdout = child.stdout.take().expect("kubectl stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, rx)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args).env("KUBECONFIG", self.kubeconfig()).env("KUBECACHEDIR", &self.cache_dir);
        cmd
    }

    /// Runs kubectl and returns its output, whatever the exit code.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as standard input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, asserts success, and returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.kubectl(args))
    }

    /// Runs kubectl with `stdin`, asserts success, and returns stdout.
    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, &self.kubectl_stdin(args, stdin))
    }

    /// Runs kubectl, asserts failure, and returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `kubectl <args>` on a pseudo-terminal of `rows`×`cols` (python3's `pty` module
    /// plays the user's terminal). If kubectl says to press enter (attach) it does; at the
    /// first shell prompt after that it types `input`. Returns everything the terminal showed
    /// and kubectl's exit code.
    pub fn on_terminal(&self, args: &[&str], rows: u16, cols: u16, input: &str) -> (String, i32) {
        const DRIVER: &str = r##"
import fcntl, os, pty, select, struct, sys, termios, time
rows, cols, text, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(sys.stdin.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.execvp("kubectl", ["kubectl"] + argv)
out = b""
deadline = time.time() + 90
entered = 0
typed = False
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if ready:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    if not entered and b"try pressing enter" in out:
        os.write(fd, b"\r")
        entered = len(out)
    if not typed and (b"#" in out[entered:] or b"$" in out[entered:]):
        os.write(fd, text.encode())
        typed = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.stdout.write("\nEXIT:%d\n" % os.waitstatus_to_exitcode(status))
"##;
        let out = Command::new("python3")
            .args(["-c", DRIVER, &rows.to_string(), &cols.to_string(), input])
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", &self.cache_dir)
            .output()
            .expect("python3 pty driver");
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = screen
            .rsplit_once("EXIT:")
            .and_then(|(_, code)| code.trim().parse().ok())
            .unwrap_or_else(|| panic!("no exit code from the terminal driver: {screen}"));
        (screen, code)
    }

    /// `kubectl <args> -o json`, parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).expect("kubectl printed JSON")
    }

    pub fn data_path(&self, rel: &str) -> PathBuf {
        self.data_dir.join(rel)
    }

    fn runs_pods(&self) -> bool {
        self.slot.is_some()
    }
}

#[track_caller]
fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Server {
    fn drop(&mut self) {
        // Pods outlive the server by design, so a test that ran pods removes them first.
        if self.runs_pods() && self.child.is_some() {
            let _ = self
                .kubectl_cmd(&[
                    "delete",
                    "deploy,rs,statefulset,daemonset,job,cronjob,pods",
                    "--all",
                    "-A",
                    "--grace-period=0",
                    "--force",
                    "--timeout=30s",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let out = self.kubectl(&["get", "pods", "-A", "-o", "name"]);
                if !out.status.success() || out.stdout.iter().all(u8::is_ascii_whitespace) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.kill9();
        if self.runs_pods() {
            // Whatever the deletes above did not finish: containers, shims, mounts, namespaces.
            cleanup::remove_pods(&self.data_dir.join("node"));
        }
        if let Some(slot) = &self.slot {
            slot.clean_up();
        }
    }
}

/// `kubectl.1.NN` installed next to the `kubectl` on PATH, if any.
pub fn old_kubectl(minor: u32) -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("sh").args(["-c", "command -v kubectl"]).output().ok()?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let real = std::fs::canonicalize(path).ok()?;
    let old = real.parent()?.join(format!("kubectl.1.{minor}"));
    old.exists().then_some(old)
}

/// Polls `f` until it returns `Some` or the deadline passes.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the async `f` until it returns `Some` or the deadline passes.
pub async fn wait_for_async<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A self-signed certificate for `host` and its key, made with openssl in `dir`: the paths of
/// `tls.crt` and `tls.key`.
pub fn self_signed_cert(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(made.success(), "openssl could not make a certificate");
    (crt, key)
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p
}
