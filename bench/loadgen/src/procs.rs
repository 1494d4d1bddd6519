//! Starting, probing, measuring and stopping the servers under test.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;

use crate::http::{Endpoint, Req};

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub name: &'static str,
    pub child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait up to `grace`; SIGKILL after that. Returns how long the exit took.
    pub fn stop(&mut self, grace: Duration) -> Result<Duration> {
        let started = Instant::now();
        if self.child.try_wait()?.is_some() {
            return Ok(Duration::ZERO);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            // The process may exit between try_wait and kill; that is fine.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        while started.elapsed() < grace {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("{} did not exit within {grace:?} of SIGTERM; killed", self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop(Duration::from_secs(10));
        }
    }
}

/// Resident memory of a process: (VmRSS, Pss) in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let field = |path: String, name: &str| -> Result<u64> {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let line =
            text.lines().find(|line| line.starts_with(name)).ok_or_else(|| anyhow!("{path} has no {name} line"))?;
        let number = line[name.len()..].split_whitespace().next().ok_or_else(|| anyhow!("empty {name}"))?;
        Ok(number.parse()?)
    };
    Ok((field(format!("/proc/{pid}/status"), "VmRSS:")?, field(format!("/proc/{pid}/smaps_rollup"), "Pss:")?))
}

pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// Bytes in all regular files below `dir`.
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(_) => file_size(&entry.path()),
            Err(_) => 0,
        })
        .sum()
}

fn log_file(data_dir: &Path, name: &str) -> Result<File> {
    let path = data_dir.with_extension(format!("{name}.log"));
    File::create(&path).with_context(|| format!("creating {}", path.display()))
}

/// `berth server` on a loopback port. `extra` are flags such as `--no-controllers`.
pub fn spawn_berth(bin: &Path, data_dir: &Path, port: u16, extra: &[&str]) -> Result<Server> {
    std::fs::create_dir_all(data_dir)?;
    let child = Command::new(bin)
        .arg("server")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(loopback(port).to_string())
        .args(extra)
        .env("BERTH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(data_dir, "berth")?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Server { name: "berth", child })
}

/// One etcd member on loopback with default durability.
pub fn spawn_etcd(bin: &Path, data_dir: &Path, client_port: u16, peer_port: u16) -> Result<Server> {
    std::fs::create_dir_all(data_dir)?;
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(bin)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=bench={peer}"))
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(data_dir, "etcd")?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Server { name: "etcd", child })
}

/// `busybox httpd` serving one small file: the floor for "start a server and get an answer".
pub fn spawn_httpd(busybox: &Path, root: &Path, port: u16) -> Result<Server> {
    let child = Command::new(busybox)
        .args(["httpd", "-f", "-p"])
        .arg(loopback(port).to_string())
        .arg("-h")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} httpd", busybox.display()))?;
    Ok(Server { name: "busybox httpd", child })
}

/// The CA certificate and admin token from Berth's kubeconfig.
pub fn read_kubeconfig(path: &Path) -> Result<(Vec<u8>, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value_of = |key: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(key).map(|rest| rest.trim().to_owned()))
            .ok_or_else(|| anyhow!("{} has no {key}", path.display()))
    };
    let ca = base64::engine::general_purpose::STANDARD
        .decode(value_of("certificate-authority-data:")?)
        .context("decoding certificate-authority-data")?;
    Ok((ca, value_of("token:")?))
}

/// Polls `probe` on a fresh connection until it answers 200. Failed connects are retried after
/// `interval` with a blocking sleep: async timers only have millisecond resolution.
/// `endpoint_for` builds the endpoint lazily, because a fresh Berth's CA exists only once it runs.
pub async fn wait_until_ok(
    addr: SocketAddr,
    mut endpoint_for: impl FnMut() -> Result<Option<Arc<Endpoint>>>,
    path: &str,
    interval: Duration,
    deadline: Duration,
    child: &mut Child,
) -> Result<Duration> {
    let started = Instant::now();
    let mut endpoint: Option<Arc<Endpoint>> = None;
    let request = Req::get(path);
    loop {
        if started.elapsed() > deadline {
            bail!("{addr}{path} did not answer 200 within {deadline:?}");
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited with {status} before {path} answered");
        }
        if endpoint.is_none() {
            endpoint = endpoint_for()?;
        }
        if let Some(endpoint) = &endpoint
            && let Ok(mut conn) = endpoint.connect().await
            && let Ok((status, _)) = conn.call(&request).await
            && status.is_success()
        {
            return Ok(started.elapsed());
        }
        std::thread::sleep(interval);
    }
}
