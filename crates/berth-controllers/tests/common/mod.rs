//! Test harness: a real `berth server` child process (controllers disabled, so only the
//! controllers under test act), a kube client for it, and a stand-in kubelet that moves pods to
//! Running/Ready through the status API the way kwok does.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};

/// How long any single condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(90);

fn target_dir() -> PathBuf {
    // tests run from <target>/debug/deps/<test-binary>
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
        // Make sure the binary matches the current sources (cheap when it is up to date).
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let target = target_dir().parent().expect("target dir").to_path_buf();
        let mut build = Command::new(cargo);
        // Variables cargo sets for the test process would change build-script fingerprints
        // and force a rebuild of half the dependency tree; start from a clean slate.
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

use berth_testkit::free_port;

/// A running API server with its own data directory.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl Server {
    /// Starts `berth server --no-controllers --no-node` on a free port and connects to it.
    pub async fn start() -> Server {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let bin = tokio::task::spawn_blocking(berth_binary).await.expect("building berth");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(&bin)
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--no-controllers", "--no-node", "--fast-commit"])
            // Parallel tests must not compete for the router's ports 80 and 443.
            .args(["--http-listen", "off", "--https-listen", "off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let kubeconfig = dir.path().join("kubeconfig");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let client = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "berth server did not come up; log: {}",
                read_log(dir.path())
            );
            if kubeconfig.exists()
                && let Ok(kc) = Kubeconfig::read_from(&kubeconfig)
                && let Ok(config) = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
                && let Ok(client) = Client::try_from(config)
                && client.apiserver_version().await.is_ok()
            {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn first_image(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Marks every pod in `namespace` Running and Ready, except pods whose first container's image
/// is in `never_ready` (they stay Pending, like a crash-looping image).
pub fn spawn_kubelet(client: Client, namespace: &str, never_ready: &[&str]) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let never_ready: Vec<String> = never_ready.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move {
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            if is_ready(&pod) || pod.metadata.deletion_timestamp.is_some() || never_ready.contains(&first_image(&pod)) {
                continue;
            }
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let cond = |t: &str| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now});
            let patch = serde_json::json!({"status": {
                "phase": "Running",
                "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                "startTime": now,
            }});
            let name = pod.metadata.name.clone().unwrap_or_default();
            // The pod may be gone already; the next event will tell.
            let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    })
}

/// Counts of live (not terminating) pods seen by a watch, and the extremes over time.
#[derive(Debug, Default, Clone)]
pub struct PodBounds {
    pub max_total: usize,
    pub min_ready: usize,
    pub samples: usize,
}

/// Watches pods in `namespace` and records, after every event, the number of live pods and of
/// ready live pods.
pub fn spawn_pod_monitor(client: Client, namespace: &str) -> (Arc<Mutex<PodBounds>>, tokio::task::JoinHandle<()>) {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let bounds = Arc::new(Mutex::new(PodBounds { max_total: 0, min_ready: usize::MAX, samples: 0 }));
    let out = bounds.clone();
    let handle = tokio::spawn(async move {
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listed = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                Ok(watcher::Event::Delete(p)) => {
                    pods.remove(&p.metadata.name.clone().unwrap_or_default());
                }
                Ok(watcher::Event::InitDone) => listed = true,
                _ => continue,
            }
            if !listed {
                continue;
            }
            let live: Vec<&Pod> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let ready = live.iter().filter(|p| is_ready(p)).count();
            let mut b = out.lock().unwrap_or_else(|e| e.into_inner());
            b.max_total = b.max_total.max(live.len());
            b.min_ready = b.min_ready.min(ready);
            b.samples += 1;
        }
    });
    (bounds, handle)
}
