//! The node agent against a real `berth server` (API only), as root: node registration,
//! scheduling and admission, pods with probes and volumes reaching Ready, crash loops with
//! back-off, liveness restarts, deletion with clean-up, and an agent restart that leaves
//! running pods alone.
//!
//! Needs the `berth` binary: `BERTH_BIN`, or `target/debug/berth` next to this test's
//! directory (`cargo build -p berth` first); skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_node::NodeConfig;
use common::{eventually, host_container, http_get, skip_unless_capable, test_node};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ExecAction, HTTPGetAction, Node, Pod, PodSpec, Probe,
    ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

fn berth_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BERTH_BIN") {
        return Some(PathBuf::from(path));
    }
    // target/debug/deps/agent-<hash> -> target/debug/berth
    let candidate = std::env::current_exe().ok()?.parent()?.parent()?.join("berth");
    candidate.is_file().then_some(candidate)
}

struct Server {
    child: std::process::Child,
    _data_dir: tempfile::TempDir,
    client: kube::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(binary: &PathBuf) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    let port = berth_testkit::free_port();
    let child = std::process::Command::new(binary)
        .args(["server", "--no-node", "--no-controllers", "--http-listen", "off", "--https-listen", "off", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let kubeconfig = data_dir.path().join("kubeconfig");
    let client = eventually("berth server to serve", WAIT, || async {
        let config = Kubeconfig::read_from(&kubeconfig).ok()?;
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await.ok()?;
        let client = kube::Client::try_from(config).ok()?;
        client.apiserver_version().await.ok()?;
        Some(client)
    })
    .await;
    Server { child, _data_dir: data_dir, client }
}

struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), berth_node::AgentError>>,
}

impl RunningAgent {
    fn start(client: kube::Client, config: NodeConfig) -> RunningAgent {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_node::run_until(client, config, async {
            let _ = stopped.await;
        }));
        RunningAgent { stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

fn pod(name: &str, containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            ..Default::default()
        },
        spec: Some(PodSpec { containers, ..Default::default() }),
        ..Default::default()
    }
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

async fn wait_pod(api: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    eventually(what, WAIT, || async { api.get(name).await.ok().filter(|p| check(p)) }).await
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |c| c[0].restart_count)
}

#[tokio::test]
async fn agent_registers_schedules_runs_and_deletes_pods() {
    skip_unless_capable!();
    let Some(binary) = berth_binary() else {
        eprintln!("skipping: no berth binary (set BERTH_BIN or run `cargo build -p berth`)");
        return;
    };
    let server = start_server(&binary).await;
    let node = test_node();
    let mut config = node.config.clone();
    config.node_name = format!("node-{}", &config.network.bridge);
    config.capacity.cpu_millis = Some(2000);
    let agent = RunningAgent::start(server.client.clone(), config.clone());

    let nodes: Api<Node> = Api::all(server.client.clone());
    let registered =
        eventually("the node to register", WAIT, || async { nodes.get(&config.node_name).await.ok() }).await;
    let status = registered.status.unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "2");
    let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    let client = server.client.clone();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta { name: Some("site".into()), ..Default::default() },
                data: Some(BTreeMap::from([("index.html".to_owned(), "served by berth\n".to_owned())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // A web pod: scheduled here, volume from a ConfigMap, readiness probe over HTTP.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut web = host_container("web", &["python3", "-m", "http.server", "8080", "--directory", "/www"]);
    web.volume_mounts =
        Some(vec![VolumeMount { name: "site".into(), mount_path: "/www".into(), ..Default::default() }]);
    web.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/index.html".into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        period_seconds: Some(1),
        ..Default::default()
    });
    let mut web_pod = pod("web", vec![web]);
    web_pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    web_pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "site".into(),
        config_map: Some(ConfigMapVolumeSource { name: "site".into(), ..Default::default() }),
        ..Default::default()
    }]);
    pods.create(&PostParams::default(), &web_pod).await.unwrap();
    let running = wait_pod(&pods, "web", "web to be Ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    let spec = running.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(config.node_name.as_str()));
    let status = running.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ip: std::net::Ipv4Addr = status.pod_ip.as_deref().unwrap().parse().unwrap();
    assert!(config.network.pod_cidr.contains(ip));
    let container = &status.container_statuses.as_ref().unwrap()[0];
    assert!(container.ready && container.state.as_ref().unwrap().running.is_some());
    let scheme = format!("{}://", config.runtime);
    assert!(container.container_id.as_deref().unwrap().starts_with(&scheme));
    for type_ in ["PodScheduled", "Initialized", "ContainersReady", "PodReadyToStartContainers"] {
        assert_eq!(condition(&running, type_).as_deref(), Some("True"), "{type_}");
    }
    let body = http_get(ip, 8080, "/index.html").await.unwrap();
    assert!(body.contains("served by berth"), "{body}");

    // A pod asking for more CPU than the node has stays Pending as unschedulable.
    let mut greedy = host_container("greedy", &["sleep", "3600"]);
    greedy.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity("3".into()))])),
        ..Default::default()
    });
    pods.create(&PostParams::default(), &pod("greedy", vec![greedy])).await.unwrap();
    let pending = wait_pod(&pods, "greedy", "greedy to be unschedulable", |p| {
        condition(p, "PodScheduled").as_deref() == Some("False")
    })
    .await;
    assert_eq!(pending.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(pending.spec.as_ref().unwrap().node_name.is_none());
    let scheduled_condition =
        pending.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "PodScheduled").unwrap();
    assert_eq!(scheduled_condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(scheduled_condition.message.as_deref(), Some("0/1 nodes are available: 1 Insufficient cpu."));

    // A crashing container is restarted, then backs off.
    let mut crasher_pod = pod("crasher", vec![host_container("crash", &["sh", "-c", "echo boom; exit 3"])]);
    crasher_pod.metadata.name = Some("crasher".into());
    pods.create(&PostParams::default(), &crasher_pod).await.unwrap();
    let crashing = wait_pod(&pods, "crasher", "crasher to back off", |p| {
        let Some(status) = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|c| c[0].clone()) else {
            return false;
        };
        let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.clone());
        status.restart_count >= 1 && waiting.as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let status = &crashing.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    let last = status.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(crashing.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    let uid = crashing.metadata.uid.clone().unwrap();
    let logs = berth_node::log_files(&node.config.data_dir, &uid, "crash").unwrap();
    let last_log = &logs.last().unwrap().1;
    assert_eq!(berth_node::read_log(last_log, &Default::default()).unwrap(), b"boom\n");

    // Past its memory limit a container is OOM-killed; with restartPolicy Never the pod fails
    // and its sandbox (and IP) is released at once.
    let mut hog = host_container("hog", &["python3", "-c", "x = bytearray(512 * 1024 * 1024)"]);
    hog.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("32Mi".into()))])),
        ..Default::default()
    });
    let mut hog_pod = pod("hog", vec![hog]);
    hog_pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    pods.create(&PostParams::default(), &hog_pod).await.unwrap();
    let failed =
        wait_pod(&pods, "hog", "hog to fail", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
            .await;
    let status = &failed.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    let terminated = status.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (137, Some("OOMKilled")));
    assert_eq!(condition(&failed, "Ready").as_deref(), Some("False"));
    let hog_uid = failed.metadata.uid.clone().unwrap();
    eventually("the hog's sandbox to be released", WAIT, || async {
        (common::mounts_mentioning(&hog_uid) == (0, 0)).then_some(())
    })
    .await;

    // Events tell the story, as kubectl describe shows it.
    // Read as `kubectl describe` does: core v1 events.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let wanted = ["Scheduled", "Pulled", "Created", "Started", "FailedScheduling", "BackOff"];
    let mut reasons = Vec::new();
    for _ in 0..100 {
        let list = events.list(&Default::default()).await.unwrap();
        reasons = list.items.into_iter().filter_map(|e| e.reason).collect();
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for reason in wanted {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event among {reasons:?}");
    }
    assert!(reasons.contains(&"Started".to_owned()));

    // Deleting the web pod stops it, cleans the machine and removes the object.
    let web_uid = running.metadata.uid.clone().unwrap();
    pods.delete("web", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() }).await.unwrap();
    eventually("web to be gone", WAIT, || async { matches!(pods.get_opt("web").await, Ok(None)).then_some(()) }).await;
    // With graceful deletion the node removes the object after cleaning up; an API server
    // that deletes at once leaves the clean-up to follow.
    eventually("web to be cleaned up", WAIT, || async {
        let dir_gone = !node.config.data_dir.join("pods").join(&web_uid).exists();
        let netns_gone = common::mounts_mentioning(&web_uid) == (0, 0);
        (dir_gone && netns_gone).then_some(())
    })
    .await;
    assert!(http_get(ip, 8080, "/").await.is_err());

    agent.stop().await;
}

#[tokio::test]
async fn liveness_failures_restart_and_an_agent_restart_keeps_pods() {
    skip_unless_capable!();
    let Some(binary) = berth_binary() else {
        eprintln!("skipping: no berth binary (set BERTH_BIN or run `cargo build -p berth`)");
        return;
    };
    let server = start_server(&binary).await;
    let node = test_node();
    let mut config = node.config.clone();
    config.node_name = format!("node-{}", &config.network.bridge);
    let agent = RunningAgent::start(server.client.clone(), config.clone());
    let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");

    // Healthy for about two seconds, then the liveness check fails: restarted each time.
    let mut flaky = host_container("flaky", &["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]);
    flaky.liveness_probe = Some(Probe {
        exec: Some(ExecAction { command: Some(vec!["test".into(), "-f".into(), "/tmp/healthy".into()]) }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    let mut flaky_pod = pod("flaky", vec![flaky]);
    flaky_pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    pods.create(&PostParams::default(), &flaky_pod).await.unwrap();
    let restarted = wait_pod(&pods, "flaky", "a liveness restart", |p| restart_count(p) >= 1).await;
    let status = &restarted.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(status.last_state.as_ref().unwrap().terminated.is_some());

    // A failing readiness probe takes a running pod out of Ready without restarting it.
    let mut shy = host_container("shy", &["sh", "-c", "touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 3600"]);
    shy.readiness_probe = Some(Probe {
        exec: Some(ExecAction { command: Some(vec!["test".into(), "-f".into(), "/tmp/ready".into()]) }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    let mut shy_pod = pod("shy", vec![shy]);
    shy_pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    pods.create(&PostParams::default(), &shy_pod).await.unwrap();
    wait_pod(&pods, "shy", "shy to be ready", |p| condition(p, "Ready").as_deref() == Some("True")).await;
    let unready =
        wait_pod(&pods, "shy", "shy to be unready", |p| condition(p, "Ready").as_deref() == Some("False")).await;
    assert_eq!(unready.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(restart_count(&unready), 0);
    let status = &unready.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(!status.ready && status.state.as_ref().unwrap().running.is_some());

    // The first status after a start waits a moment for the first readiness verdict, never
    // longer: a container whose probe never passes is still reported running, not ready.
    let mut never = host_container("never", &["sleep", "3600"]);
    never.readiness_probe = Some(Probe {
        exec: Some(ExecAction { command: Some(vec!["false".into()]) }),
        period_seconds: Some(1),
        ..Default::default()
    });
    let mut never_pod = pod("never", vec![never]);
    never_pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(1);
    pods.create(&PostParams::default(), &never_pod).await.unwrap();
    let running = wait_pod(&pods, "never", "never to be reported running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));
    let status = &running.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    assert!(!status.ready && status.state.as_ref().unwrap().running.is_some());

    // A steady pod survives the agent's restart untouched.
    let steady = host_container("steady", &["python3", "-m", "http.server", "8080"]);
    pods.create(&PostParams::default(), &pod("steady", vec![steady])).await.unwrap();
    let before = wait_pod(&pods, "steady", "steady to run", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && condition(p, "Ready").as_deref() == Some("True")
    })
    .await;
    let ip: std::net::Ipv4Addr = before.status.as_ref().unwrap().pod_ip.as_deref().unwrap().parse().unwrap();
    eventually("steady to serve", WAIT, || async { http_get(ip, 8080, "/").await.ok() }).await;
    let container_id = before.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].container_id.clone();

    agent.stop().await;
    // Berth is down: the pod still serves.
    assert!(http_get(ip, 8080, "/").await.unwrap().contains("200"));
    let agent = RunningAgent::start(server.client.clone(), config.clone());
    // The new agent finds the pod again: same container, same IP.
    let after =
        wait_pod(&pods, "steady", "steady to be reported again", |p| condition(p, "Ready").as_deref() == Some("True"))
            .await;
    let status = after.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some(ip.to_string().as_str()));
    assert_eq!(status.container_statuses.as_ref().unwrap()[0].container_id, container_id);
    assert_eq!(restart_count(&after), 0);
    assert!(http_get(ip, 8080, "/").await.unwrap().contains("200"));
    let uid = after.metadata.uid.clone().unwrap();
    let shims = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("{uid}/_containers/steady-")))
        })
        .count();
    assert_eq!(shims, 1, "one shim for the steady container, nothing started twice");

    // The new agent watches the container it found: when it dies, it is restarted.
    let (scheme, id) = container_id.as_deref().unwrap().split_once("://").unwrap();
    let kind: berth_node::oci_runtime::RuntimeKind = scheme.parse().unwrap();
    let killed = berth_node::oci_runtime::OciCli::new(&config, kind).std_command().args(["kill", id, "KILL"]).status();
    assert!(killed.unwrap().success());
    let restarted =
        wait_pod(&pods, "steady", "steady to be restarted by the new agent", |p| restart_count(p) == 1).await;
    let status = restarted.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some(ip.to_string().as_str()));
    let last = status.container_statuses.as_ref().unwrap()[0].last_state.clone().unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.container_id.clone()), (137, container_id.clone()));
    eventually("steady to serve again", WAIT, || async { http_get(ip, 8080, "/").await.ok() }).await;

    pods.delete("steady", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() }).await.unwrap();
    pods.delete("flaky", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() }).await.unwrap();
    pods.delete("shy", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() }).await.unwrap();
    pods.delete("never", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() }).await.unwrap();
    for name in ["steady", "flaky", "shy", "never"] {
        eventually("pods to be gone", WAIT, || async { matches!(pods.get_opt(name).await, Ok(None)).then_some(()) })
            .await;
    }
    eventually("the pods' files to be removed", WAIT, || async {
        let left = std::fs::read_dir(config.data_dir.join("pods")).unwrap().count();
        (left == 0).then_some(())
    })
    .await;
    agent.stop().await;
}

/// A pod whose process ignores SIGTERM (`sleep` as PID 1) stays `Terminating` through its
/// grace period after a plain delete (as `kubectl delete --wait=false` sends it); the node
/// kills it, cleans up, and only then removes the object.
#[tokio::test]
async fn deleted_pod_stays_terminating_through_its_grace_period() {
    skip_unless_capable!();
    let Some(binary) = berth_binary() else {
        eprintln!("skipping: no berth binary (set BERTH_BIN or run `cargo build -p berth`)");
        return;
    };
    let server = start_server(&binary).await;
    let node = test_node();
    let mut config = node.config.clone();
    config.node_name = format!("node-{}", &config.network.bridge);
    let agent = RunningAgent::start(server.client.clone(), config.clone());
    let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");

    let mut stubborn = pod("stubborn", vec![host_container("sleeper", &["sleep", "1000"])]);
    stubborn.spec.as_mut().unwrap().termination_grace_period_seconds = Some(4);
    pods.create(&PostParams::default(), &stubborn).await.unwrap();
    let running = wait_pod(&pods, "stubborn", "stubborn to run", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let uid = running.metadata.uid.clone().unwrap();

    let background =
        DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Background), ..Default::default() };
    pods.delete("stubborn", &background).await.unwrap();
    let terminating = pods.get("stubborn").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(4));
    // Still there once the node has seen the deletion and sent SIGTERM (its Killing event).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(server.client.clone(), "default");
    eventually("the Killing event", WAIT, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Killing") && e.involved_object.uid.as_deref() == Some(uid.as_str()))
            .then_some(())
    })
    .await;
    let still = pods.get_opt("stubborn").await.unwrap();
    assert!(still.is_some_and(|p| p.metadata.deletion_timestamp.is_some()), "the object waits for the node");
    assert!(node.config.data_dir.join("pods").join(&uid).exists(), "the pod is still on the machine");

    eventually("stubborn to be gone", WAIT, || async {
        matches!(pods.get_opt("stubborn").await, Ok(None)).then_some(())
    })
    .await;
    assert!(!node.config.data_dir.join("pods").join(&uid).exists(), "cleaned up before the object went");
    agent.stop().await;
}

/// The built-in local-path provisioner: a claim without a class is bound to a new volume under
/// the data dir, pods mount it, its data outlives a pod, and deleting the claim (no pod using
/// it) deletes the volume and its directory.
#[tokio::test]
async fn claims_are_provisioned_mounted_kept_and_reclaimed() {
    use k8s_openapi::api::core::v1::{
        PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
        VolumeResourceRequirements,
    };
    skip_unless_capable!();
    let Some(binary) = berth_binary() else {
        eprintln!("skipping: no berth binary (set BERTH_BIN or run `cargo build -p berth`)");
        return;
    };
    let server = start_server(&binary).await;
    let node = test_node();
    let mut config = node.config.clone();
    config.node_name = format!("node-{}", &config.network.bridge);
    let agent = RunningAgent::start(server.client.clone(), config.clone());
    let client = server.client.clone();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), ..Default::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity("1Gi".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    claims.create(&PostParams::default(), &claim).await.unwrap();
    let bound = eventually("the claim to be bound", WAIT, || async {
        claims.get("data").await.ok().filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
    let status = bound.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "1Gi");
    assert_eq!(status.access_modes.unwrap(), vec!["ReadWriteOnce".to_owned()]);
    let pv_name = bound.spec.unwrap().volume_name.unwrap();
    let pv = volumes.get(&pv_name).await.unwrap();
    let pv_spec = pv.spec.unwrap();
    assert_eq!(pv_spec.storage_class_name.as_deref(), Some("local-path"));
    assert_eq!(pv_spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(pv_spec.claim_ref.unwrap().name.as_deref(), Some("data"));
    let host_dir = PathBuf::from(pv_spec.host_path.unwrap().path);
    assert!(host_dir.starts_with(node.config.data_dir.join("volumes")) && host_dir.is_dir(), "{host_dir:?}");

    let with_claim = |name: &str, script: &str| {
        let mut app = host_container("app", &["sh", "-c", script]);
        app.volume_mounts =
            Some(vec![VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() }]);
        let mut pod = pod(name, vec![app]);
        pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "data".into(),
                read_only: None,
            }),
            ..Default::default()
        }]);
        pod
    };
    pods.create(&PostParams::default(), &with_claim("writer", "echo kept > /data/file; exec sleep 1000"))
        .await
        .unwrap();
    eventually("the writer's file", WAIT, || async {
        std::fs::read_to_string(host_dir.join("file")).ok().filter(|t| t == "kept\n")
    })
    .await;
    let quick = DeleteParams { grace_period_seconds: Some(1), ..Default::default() };
    pods.delete("writer", &quick).await.unwrap();
    eventually("the writer to be gone", WAIT, || async {
        matches!(pods.get_opt("writer").await, Ok(None)).then_some(())
    })
    .await;

    // A new pod sees what the old one wrote.
    pods.create(&PostParams::default(), &with_claim("reader", "cat /data/file > /data/seen; exec sleep 1000"))
        .await
        .unwrap();
    eventually("the reader to see the data", WAIT, || async {
        std::fs::read_to_string(host_dir.join("seen")).ok().filter(|t| t == "kept\n")
    })
    .await;
    pods.delete("reader", &quick).await.unwrap();
    eventually("the reader to be gone", WAIT, || async {
        matches!(pods.get_opt("reader").await, Ok(None)).then_some(())
    })
    .await;

    claims.delete("data", &DeleteParams::default()).await.unwrap();
    eventually("the volume to be deleted", WAIT, || async {
        matches!(volumes.get_opt(&pv_name).await, Ok(None)).then_some(())
    })
    .await;
    assert!(!host_dir.exists(), "the volume's directory is removed");
    agent.stop().await;
}

/// Stopping a deleted pod runs its containers' preStop hooks first.
#[tokio::test]
async fn deletion_runs_pre_stop_hooks() {
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, Lifecycle, LifecycleHandler};
    skip_unless_capable!();
    let Some(binary) = berth_binary() else {
        eprintln!("skipping: no berth binary (set BERTH_BIN or run `cargo build -p berth`)");
        return;
    };
    let server = start_server(&binary).await;
    let node = test_node();
    let mut config = node.config.clone();
    config.node_name = format!("node-{}", &config.network.bridge);
    let agent = RunningAgent::start(server.client.clone(), config.clone());
    let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
    let out = tempfile::tempdir().unwrap();

    let mut app = host_container("app", &["sleep", "1000"]);
    app.lifecycle = Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction { command: Some(vec!["sh".into(), "-c".into(), "echo bye > /out/stopped".into()]) }),
            ..Default::default()
        }),
        ..Default::default()
    });
    app.volume_mounts = Some(vec![VolumeMount { name: "out".into(), mount_path: "/out".into(), ..Default::default() }]);
    let mut hooked = pod("hooked", vec![app]);
    let spec = hooked.spec.as_mut().unwrap();
    spec.termination_grace_period_seconds = Some(3);
    spec.volumes = Some(vec![Volume {
        name: "out".into(),
        host_path: Some(HostPathVolumeSource { path: out.path().display().to_string(), type_: None }),
        ..Default::default()
    }]);
    pods.create(&PostParams::default(), &hooked).await.unwrap();
    let running = wait_pod(&pods, "hooked", "hooked to run", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    let uid = running.metadata.uid.unwrap();
    assert!(!out.path().join("stopped").exists());

    pods.delete("hooked", &DeleteParams::default()).await.unwrap();
    eventually("the pod to be cleaned up", WAIT, || async {
        (!node.config.data_dir.join("pods").join(&uid).exists()).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(out.path().join("stopped")).unwrap(), "bye\n");
    agent.stop().await;
}
