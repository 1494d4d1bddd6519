//! Test harness: a real `berth server` child process (built-in controllers on, no node agent),
//! a kube client for it, small TCP and UDP servers that say which address answered, and guards
//! that remove the network state a test creates.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long any single condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Tests that bind ClusterIPs run one at a time: every server has the same `kubernetes`
/// Service address, and ClusterIPs are only unique within one server.
pub static NETWORK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends the proxy's and controllers' logs to the test output (filter with `RUST_LOG`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Whether the test runs as root (needed for the service interface and namespaces).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn target_dir() -> PathBuf {
    // Tests run from <target>/debug/deps/<test-binary>.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target profile dir").to_path_buf()
}

/// The `berth` binary: $BERTH_BIN, or the workspace build next to this test (built on demand).
fn berth_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("BERTH_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let bin = target_dir().join("berth");
    if !*built {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let target = target_dir().parent().expect("target dir").to_path_buf();
        let mut build = Command::new(cargo);
        // Variables cargo sets for the test process would change build-script fingerprints.
        for (key, _) in std::env::vars() {
            if key.starts_with("CARGO_") && key != "CARGO_HOME" {
                build.env_remove(key);
            }
        }
        let status = build
            .args(["build", "-p", "berth", "--quiet"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build -p berth");
        assert!(status.success(), "cargo build -p berth failed");
        *built = true;
    }
    bin
}

pub use berth_testkit::free_port;

/// A running `berth server` with its own data directory.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl Server {
    /// Starts `berth server --no-node` on a free port and connects once it prints its
    /// `KUBECONFIG=` line.
    pub async fn start() -> Server {
        let bin = tokio::task::spawn_blocking(berth_binary).await.expect("building berth");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut child = Command::new(&bin)
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--no-node", "--fast-commit"])
            // Parallel tests must not compete for the router's ports 80 and 443.
            .args(["--http-listen", "off", "--https-listen", "off"])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = tokio::sync::oneshot::channel::<PathBuf>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(path) = line.split("KUBECONFIG=").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(PathBuf::from(path.trim()));
                }
            }
        });
        let kubeconfig = match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(path)) => path,
            _ => panic!("berth server did not print KUBECONFIG=; log: {}", read_log(dir.path())),
        };
        let kc = Kubeconfig::read_from(&kubeconfig).expect("reading kubeconfig");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        wait_for("the API server", || {
            let client = client.clone();
            async move { client.apiserver_version().await.ok() }
        })
        .await;
        Server { child, dir, client }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eprintln!("waiting for {what}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("running ip")
}

/// A unique name for a test's service interface (at most 15 characters).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// Deletes a network interface when dropped, even if the test panics.
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.0).exists() {
            let _ = run_ip(&["link", "del", &self.0]);
        }
    }
}

/// The IPv4 addresses on an interface.
pub fn interface_addresses(name: &str) -> Vec<Ipv4Addr> {
    let out = run_ip(&["-j", "-4", "addr", "show", "dev", name]);
    let text = String::from_utf8_lossy(&out.stdout);
    let links: serde_json::Value =
        serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text }).unwrap_or_default();
    links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l.get("addr_info").and_then(|a| a.as_array()).cloned().unwrap_or_default())
        .filter_map(|a| a.get("local").and_then(|l| l.as_str()).and_then(|l| l.parse().ok()))
        .collect()
}

/// A network namespace standing in for a pod: a veth pair to the host, the host side holding
/// the gateway address, the default route through it. Removed (with the veth) when dropped.
pub struct PodNamespace {
    pub name: String,
    pub host_veth: String,
}

impl PodNamespace {
    /// Creates it on the /30 `10.211.<subnet>.0`.
    pub fn create(subnet: u8) -> PodNamespace {
        let name = unique_name("bpt");
        let host_veth = unique_name("bph");
        let ns = PodNamespace { name: name.clone(), host_veth: host_veth.clone() };
        let gateway = format!("10.211.{subnet}.1");
        let (host_cidr, pod_cidr) = (format!("{gateway}/30"), format!("10.211.{subnet}.2/30"));
        let batch = [
            vec!["netns", "add", &name],
            vec!["link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &name],
            vec!["addr", "add", &host_cidr, "dev", &host_veth],
            vec!["link", "set", &host_veth, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec!["-n", &name, "addr", "add", &pod_cidr, "dev", "eth0"],
            vec!["-n", &name, "link", "set", "eth0", "up"],
            vec!["-n", &name, "route", "add", "default", "via", &gateway],
        ];
        for args in batch {
            let out = run_ip(&args);
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        ns
    }

    /// Connects from inside the namespace to `addr` and returns the greeting line, if any.
    /// Runs on a fresh thread that enters the namespace and then ends, so no pooled thread
    /// is ever left in it.
    pub async fn fetch(&self, addr: SocketAddr) -> Option<String> {
        let path = Path::new("/run/netns").join(&self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let attempt = || -> Option<String> {
                use std::io::Read;
                use std::os::fd::AsFd;
                let ns = std::fs::File::open(&path).ok()?;
                rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                    .ok()?;
                let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                let mut greeting = Vec::new();
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).ok()? == 1 && byte[0] != b'\n' {
                    greeting.push(byte[0]);
                }
                (!greeting.is_empty()).then(|| String::from_utf8_lossy(&greeting).into_owned())
            };
            let _ = tx.send(attempt());
        });
        rx.await.ok().flatten()
    }
}

impl Drop for PodNamespace {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.host_veth).exists() {
            let _ = run_ip(&["link", "del", &self.host_veth]);
        }
        let _ = run_ip(&["netns", "del", &self.name]);
    }
}

/// TCP servers on several loopback addresses, all on one port: each connection is greeted
/// with the address that accepted it, then echoed. Aborted when dropped.
pub struct TcpIdentity {
    pub port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TcpIdentity {
    pub async fn start(ips: &[Ipv4Addr]) -> TcpIdentity {
        // Find a port free on every address.
        'search: loop {
            let first = TcpListener::bind((ips[0], 0)).await.expect("bind");
            let port = first.local_addr().unwrap().port();
            let mut listeners = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((*ip, port)).await {
                    Ok(l) => listeners.push(l),
                    Err(_) => continue 'search,
                }
            }
            let tasks = listeners
                .into_iter()
                .zip(ips.iter().copied())
                .map(|(listener, ip)| {
                    tokio::spawn(async move {
                        loop {
                            let Ok((mut stream, _)) = listener.accept().await else { continue };
                            tokio::spawn(async move {
                                if stream.write_all(format!("{ip}\n").as_bytes()).await.is_err() {
                                    return;
                                }
                                let mut buf = [0u8; 1024];
                                loop {
                                    match stream.read(&mut buf).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => {
                                            if stream.write_all(&buf[..n]).await.is_err() {
                                                return;
                                            }
                                        }
                                    }
                                }
                            });
                        }
                    })
                })
                .collect();
            return TcpIdentity { port, tasks };
        }
    }
}

impl Drop for TcpIdentity {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// UDP servers on several loopback addresses, all on one port: each datagram is answered
/// with `<address>:<datagram>`. Aborted when dropped.
pub struct UdpIdentity {
    pub port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl UdpIdentity {
    pub async fn start(ips: &[Ipv4Addr]) -> UdpIdentity {
        'search: loop {
            let first = UdpSocket::bind((ips[0], 0)).await.expect("bind");
            let port = first.local_addr().unwrap().port();
            let mut sockets = vec![first];
            for ip in &ips[1..] {
                match UdpSocket::bind((*ip, port)).await {
                    Ok(s) => sockets.push(s),
                    Err(_) => continue 'search,
                }
            }
            let tasks = sockets
                .into_iter()
                .zip(ips.iter().copied())
                .map(|(socket, ip)| {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 2048];
                        loop {
                            let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
                            let mut reply = format!("{ip}:").into_bytes();
                            reply.extend_from_slice(&buf[..n]);
                            let _ = socket.send_to(&reply, from).await;
                        }
                    })
                })
                .collect();
            return UdpIdentity { port, tasks };
        }
    }
}

impl Drop for UdpIdentity {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connection through the proxy to an identity server.
pub struct Conn {
    pub greeting: String,
    reader: tokio::io::BufReader<TcpStream>,
}

impl Conn {
    /// Connects and reads the greeting; `None` if refused, closed or silent.
    pub async fn open(addr: SocketAddr) -> Option<Conn> {
        let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await.ok()?.ok()?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await.ok()?.ok()?;
        (n > 0).then(|| Conn { greeting: line.trim().to_string(), reader })
    }

    /// Sends a line and reads the echo.
    pub async fn echo(&mut self, text: &str) -> Option<String> {
        self.reader.get_mut().write_all(format!("{text}\n").as_bytes()).await.ok()?;
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(2), self.reader.read_line(&mut line)).await.ok()?.ok()?;
        (n > 0).then(|| line.trim().to_string())
    }
}

/// Which address answers a new connection to `addr`, if any.
pub async fn who(addr: SocketAddr) -> Option<String> {
    Conn::open(addr).await.map(|c| c.greeting)
}

/// Which address answers a UDP datagram to `addr` from a fresh client socket, if any.
pub async fn who_udp(addr: SocketAddr, payload: &str) -> Option<String> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.connect(addr).await.ok()?;
    socket.send(payload.as_bytes()).await.ok()?;
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}
