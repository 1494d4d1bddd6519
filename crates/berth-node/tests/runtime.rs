//! The container runtime for real, as root: sandboxes with their own IPs on a bridge, runc
//! containers built from the `host` image, volumes, limits, logs, stop and clean-up, and
//! containers that keep running across a restart of the runtime.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_node::runtime::PodRun;
use berth_node::spec::{PodInputs, PodPlacement};
use berth_node::{LogOptions, Runtime, read_log};
use common::{eventually, host_container, http_get, pod, skip_unless_capable, test_node};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn placement(runtime_ip: &str) -> PodPlacement {
    PodPlacement {
        pod_ip: runtime_ip.to_owned(),
        host_ip: "127.0.0.1".to_owned(),
        node_name: "test-node".to_owned(),
        node_cpu_millis: 2000,
        node_memory_bytes: 8 << 30,
    }
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn pod_serves_http_from_its_own_ip_and_is_cleaned_up() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();

    let mut web = host_container("web", &["python3", "-m", "http.server", "8080", "--directory", "/www"]);
    web.volume_mounts = Some(vec![
        VolumeMount { name: "site".into(), mount_path: "/www".into(), ..Default::default() },
        VolumeMount { name: "scratch".into(), mount_path: "/scratch".into(), ..Default::default() },
    ]);
    web.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("memory".to_owned(), Quantity("64Mi".into())),
            ("cpu".to_owned(), Quantity("500m".into())),
        ])),
        ..Default::default()
    });
    let mut pod = pod("web-0", vec![web.clone()]);
    pod.spec.as_mut().unwrap().volumes = Some(vec![
        Volume {
            name: "site".into(),
            config_map: Some(ConfigMapVolumeSource { name: "site".into(), ..Default::default() }),
            ..Default::default()
        },
        Volume { name: "scratch".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
    ]);
    let uid = pod.metadata.uid.clone().unwrap();
    let mut inputs = PodInputs::default();
    inputs.config_maps.insert(
        "site".into(),
        ConfigMap {
            data: Some(BTreeMap::from([("index.html".to_owned(), "hello from berth\n".to_owned())])),
            ..Default::default()
        },
    );

    let sandbox = runtime.create_sandbox(&pod).await.unwrap();
    assert!(node.config.network.pod_cidr.contains(sandbox.ip()));
    let volumes = runtime.prepare_volumes(&pod, &inputs).unwrap();
    let place = placement(&sandbox.ip().to_string());
    let run = PodRun { sandbox: &sandbox, pod: &pod, inputs: &inputs, volumes: &volumes, placement: &place };
    let handle = runtime.start_container(&run, &web, 0).await.unwrap();

    // The pod's three namespaces are pinned in the pin namespace, not on the host's mount
    // table (every line there slows every container create down); the host's copy of the
    // container's root is detached once it started.
    eventually("the pod's mounts to be off the host's table", WAIT, || async {
        (common::mounts_mentioning(&uid) == (0, 3)).then_some(())
    })
    .await;

    // The bundle is on the node's run directory, a tmpfs; the log stays on disk.
    let run_dir = runtime.data_dir().join("run");
    assert!(handle.state_dir.starts_with(&run_dir), "{}", handle.state_dir.display());
    assert!(handle.state_dir.join("config.json").is_file());
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    assert_eq!(rustix::fs::statfs(&run_dir).unwrap().f_type as i64, TMPFS_MAGIC, "the run directory is a tmpfs");
    assert!(runtime.log_path(&uid, "web", 0).starts_with(runtime.data_dir().join("pods")));

    // The host reaches the pod on its own IP.
    let body = eventually("the pod to serve HTTP", WAIT, || async {
        http_get(sandbox.ip(), 8080, "/index.html").await.ok().filter(|r| r.contains("200"))
    })
    .await;
    assert!(body.contains("hello from berth"), "{body}");

    // Hairpin is on for the pod's port (a pod reaching itself through a Service address).
    let hairpin = Path::new("/sys/class/net").join(&sandbox.network.host_veth).join("brport/hairpin_mode");
    assert_eq!(std::fs::read_to_string(&hairpin).unwrap().trim(), "1");
    // Its veth has one queue each way, not one per CPU cut down to one in use (network.rs).
    let details = std::process::Command::new("ip")
        .args(["-d", "-o", "link", "show", "dev", &sandbox.network.host_veth])
        .output()
        .unwrap();
    let details = String::from_utf8_lossy(&details.stdout);
    assert!(details.contains("numtxqueues 1 numrxqueues 1"), "{details}");
    // The shim holds the detached /proc libcontainer read through, so the container's program
    // did not drop the last reference to it when it exec'd (see docs/node.md).
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    let holds_proc_root = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == Path::new("/"))
                && rustix::fs::statfs(fd.path()).is_ok_and(|s| s.f_type == PROC_SUPER_MAGIC)
        })
    };
    assert!(holds_proc_root(handle.record.shim_pid), "the shim holds a /proc handle");

    // Pod identity and isolation, seen from inside.
    let exec = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let runtime = &runtime;
        let handle = &handle;
        async move { runtime.exec_sync(handle, &argv, Duration::from_secs(10)).await.unwrap() }
    };
    let hostname = exec(&["cat", "/etc/hostname"]).await;
    assert_eq!(String::from_utf8_lossy(&hostname.output).trim(), "web-0");
    let hosts = exec(&["cat", "/etc/hosts"]).await;
    assert!(String::from_utf8_lossy(&hosts.output).contains(&format!("{}\tweb-0", sandbox.ip())));
    let uname = exec(&["python3", "-c", "import socket; print(socket.gethostname())"]).await;
    assert_eq!(String::from_utf8_lossy(&uname.output).trim(), "web-0");
    let pid_one = exec(&["cat", "/proc/1/cmdline"]).await;
    assert!(String::from_utf8_lossy(&pid_one.output).starts_with("python3"), "own PID namespace");
    let usr_write = exec(&["touch", "/usr/berth-should-fail"]).await;
    assert_ne!(usr_write.exit_code, 0, "/usr is read-only");
    assert!(!Path::new("/usr/berth-should-fail").exists());
    let tmp_write = exec(&["sh", "-c", "echo x > /tmp/ok && echo y > /var/ok && echo z > /scratch/ok"]).await;
    assert_eq!(tmp_write.exit_code, 0, "{}", String::from_utf8_lossy(&tmp_write.output));
    let eth0 = exec(&["cat", "/sys/class/net/eth0/address"]).await;
    assert_eq!(eth0.exit_code, 0, "the pod has its own eth0");

    // Limits reached the cgroup.
    let memory_limit = format!("/sys/fs/cgroup/memory{}/pod{uid}/web/memory.limit_in_bytes", node.config.cgroup_parent);
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(std::fs::read_to_string(&memory_limit).unwrap().trim(), (64 * 1024 * 1024).to_string());
        let quota = format!("/sys/fs/cgroup/cpu{}/pod{uid}/web/cpu.cfs_quota_us", node.config.cgroup_parent);
        assert_eq!(std::fs::read_to_string(&quota).unwrap().trim(), "50000");
    }

    // The request shows in the CRI log (python logs requests on stderr).
    let log = runtime.log_path(&uid, "web", 0);
    let raw = eventually("the request to be logged", WAIT, || async {
        std::fs::read_to_string(&log).ok().filter(|t| t.contains("GET /index.html"))
    })
    .await;
    let line = raw.lines().find(|l| l.contains("GET /index.html")).unwrap();
    let fields: Vec<&str> = line.splitn(4, ' ').collect();
    assert!(fields[0].ends_with('Z') && fields[0].contains('T'), "{line}");
    assert_eq!(&fields[1..3], &["stderr", "F"]);
    let rendered = read_log(&log, &LogOptions::default()).unwrap();
    assert!(String::from_utf8_lossy(&rendered).contains("GET /index.html"));

    // python installs no SIGTERM handler and, as PID 1 of its namespace, ignores SIGTERM:
    // after the grace period it is killed, as on Kubernetes.
    let exit = runtime.stop_container(&handle, Duration::from_secs(1)).await;
    assert_eq!((exit.exit_code, exit.signal, exit.oom_killed), (137, Some(9), false), "{exit:?}");
    assert!(http_get(sandbox.ip(), 8080, "/").await.is_err());

    runtime.remove_pod(&uid).await.unwrap();
    assert_eq!(common::mounts_mentioning(&uid), (0, 0), "namespaces unpinned");
    assert!(!Path::new("/sys/class/net").join(&sandbox.network.host_veth).exists(), "veth removed");
    assert!(!node.data_dir.path().join("run/ipam").join(sandbox.ip().to_string()).exists(), "IP released");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory{}/pod{uid}", node.config.cgroup_parent)).exists(),
        "cgroup removed"
    );
    assert!(!node.data_dir.path().join("pods").join(&uid).exists(), "pod directory removed");
    assert!(!node.data_dir.path().join("run/pods").join(&uid).exists(), "pod run-time state removed");
}

#[tokio::test]
async fn pods_reach_each_other_and_the_host_and_survive_a_runtime_restart() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();

    let server = host_container("server", &["python3", "-m", "http.server", "8080", "--directory", "/etc"]);
    let server_pod = pod("server", vec![server.clone()]);
    let server_sandbox = runtime.create_sandbox(&server_pod).await.unwrap();
    let no_inputs = PodInputs::default();
    let volumes = runtime.prepare_volumes(&server_pod, &no_inputs).unwrap();
    let place = placement(&server_sandbox.ip().to_string());
    let run =
        PodRun { sandbox: &server_sandbox, pod: &server_pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    runtime.start_container(&run, &server, 0).await.unwrap();
    eventually("the server pod", WAIT, || async { http_get(server_sandbox.ip(), 8080, "/hostname").await.ok() }).await;

    // A second pod fetches from the first over the bridge, then from the host's gateway IP.
    let fetch = format!(
        "import urllib.request,sys; print(urllib.request.urlopen('http://{}:8080/hostname', timeout=5).read().decode())",
        server_sandbox.ip()
    );
    let client = host_container("client", &["sleep", "3600"]);
    let client_pod = pod("client", vec![client.clone()]);
    let client_sandbox = runtime.create_sandbox(&client_pod).await.unwrap();
    assert_ne!(client_sandbox.ip(), server_sandbox.ip());
    let client_volumes = runtime.prepare_volumes(&client_pod, &no_inputs).unwrap();
    let client_place = placement(&client_sandbox.ip().to_string());
    let client_run = PodRun {
        sandbox: &client_sandbox,
        pod: &client_pod,
        inputs: &no_inputs,
        volumes: &client_volumes,
        placement: &client_place,
    };
    // The client's shim is the spare started after the server's start: it names its
    // container in its command line (what adoption below checks), as a shim started for it.
    eventually("a spare shim", WAIT, || async { runtime.spare_shim_ready().then_some(()) }).await;
    let client_handle = runtime.start_container(&client_run, &client, 0).await.unwrap();
    let shim_cmdline = std::fs::read(format!("/proc/{}/cmdline", client_handle.record.shim_pid)).unwrap();
    let shim_args: Vec<&[u8]> = shim_cmdline.split(|b| *b == 0).collect();
    assert_eq!(shim_args.get(2), Some(&&b"--spare"[..]), "{}", String::from_utf8_lossy(&shim_cmdline));
    assert_eq!(shim_args.get(3), Some(&client_handle.state_dir.as_os_str().as_encoded_bytes()));
    let out = runtime
        .exec_sync(&client_handle, &["python3".into(), "-c".into(), fetch], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.output).trim(), "server", "exit {}", out.exit_code);

    let host_listener = tokio::net::TcpListener::bind((node.config.network.pod_cidr.gateway(), 0)).await.unwrap();
    let port = host_listener.local_addr().unwrap().port();
    let connect = format!(
        "import socket; socket.create_connection(('{}', {port}), timeout=5).sendall(b'hi')",
        node.config.network.pod_cidr.gateway()
    );
    let accepted = tokio::spawn(async move {
        let (mut socket, _) = host_listener.accept().await.unwrap();
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut buf).await.unwrap();
        buf
    });
    let out = runtime
        .exec_sync(&client_handle, &["python3".into(), "-c".into(), connect], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.output));
    assert_eq!(accepted.await.unwrap(), b"hi");

    // "Restart Berth": a new runtime over the same data dir finds both pods running (the
    // client's shim was a spare), and the server still answers meanwhile.
    drop(runtime);
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    assert!(http_get(server_sandbox.ip(), 8080, "/hostname").await.unwrap().contains("server"));
    assert_eq!(runtime.sandbox(&server_sandbox.uid), Some(server_sandbox.clone()));
    let mut uids = runtime.pod_uids();
    uids.sort();
    let mut expected = vec![server_sandbox.uid.clone(), client_sandbox.uid.clone()];
    expected.sort();
    assert_eq!(uids, expected);
    // The pin namespace outlived the first runtime: a container started now joins the server
    // pod's namespaces (its network: same IP, the server's port taken; its UTS: the hostname).
    let planned = runtime.plan_sandbox(&server_pod).await.unwrap();
    assert!(planned.exists, "the sandbox is found alive after the restart");
    let joiner = host_container(
        "joiner",
        &["sh", "-c", "cat /proc/sys/kernel/hostname; python3 -m http.server 8080 2>&1 | tail -n 1; sleep 3600"],
    );
    let joiner_handle = runtime.start_container(&run, &joiner, 0).await.unwrap();
    let joiner_log = runtime.log_path(&server_sandbox.uid, "joiner", 0);
    let log = eventually("the joiner's output", WAIT, || async {
        let log = String::from_utf8_lossy(&std::fs::read(&joiner_log).unwrap_or_default()).into_owned();
        log.contains("Address already in use").then_some(log)
    })
    .await;
    assert!(log.contains(" server\n"), "the pod's hostname: {log}");
    runtime.stop_container(&joiner_handle, Duration::from_secs(1)).await;
    // The host's copy of the joiner's root is detached on the blocking pool after its start:
    // on a loaded machine that may come after the joiner already printed its lines.
    eventually("only the server pod's pins to mention it", WAIT, || async {
        (common::mounts_mentioning(&server_sandbox.uid) == (0, 3)).then_some(())
    })
    .await;
    for uid in [&server_sandbox.uid, &client_sandbox.uid] {
        let containers = runtime.containers(uid).await;
        let running: Vec<_> = containers.iter().filter(|c| c.exit_record().is_none()).collect();
        assert_eq!(running.len(), 1, "still running after the restart: {containers:?}");
        assert_ne!(running[0].record.name, "joiner");
        let exit = runtime.stop_container(running[0], Duration::from_secs(1)).await;
        assert!(exit.signal.is_some() || exit.exit_code != 0, "{exit:?}");
        runtime.remove_pod(uid).await.unwrap();
    }
    // Allocations were freed, so a new pod may get an address again.
    assert!(
        std::fs::read_dir(node.data_dir.path().join("run/ipam"))
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == "last_reserved")
    );
}

#[tokio::test]
async fn memory_limit_kills_with_oom_and_security_context_applies() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();

    let mut hog = host_container(
        "hog",
        &[
            "python3",
            "-c",
            "import sys; print('allocating', flush=True); x = bytearray(512 * 1024 * 1024); print('survived')",
        ],
    );
    hog.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("32Mi".into()))])),
        ..Default::default()
    });
    let mut locked = host_container(
        "locked",
        &[
            "sh",
            "-c",
            "id -u; id -g; if touch /probe 2>/dev/null; then echo writable; else echo read-only; fi; grep CapEff /proc/self/status",
        ],
    );
    locked.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(1000),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    });
    let pod = pod("limits", vec![hog.clone(), locked.clone()]);
    let uid = pod.metadata.uid.clone().unwrap();
    let sandbox = runtime.create_sandbox(&pod).await.unwrap();
    let no_inputs = PodInputs::default();
    let volumes = runtime.prepare_volumes(&pod, &no_inputs).unwrap();
    let place = placement(&sandbox.ip().to_string());
    let run = PodRun { sandbox: &sandbox, pod: &pod, inputs: &no_inputs, volumes: &volumes, placement: &place };

    let hog_handle = runtime.start_container(&run, &hog, 0).await.unwrap();
    let exit = tokio::time::timeout(WAIT, hog_handle.wait()).await.unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, 137);
    let hog_log =
        String::from_utf8(read_log(&runtime.log_path(&uid, "hog", 0), &LogOptions::default()).unwrap()).unwrap();
    assert_eq!(hog_log, "allocating\n");

    let locked_handle = runtime.start_container(&run, &locked, 0).await.unwrap();
    let exit = tokio::time::timeout(WAIT, locked_handle.wait()).await.unwrap();
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    let output =
        String::from_utf8(read_log(&runtime.log_path(&uid, "locked", 0), &LogOptions::default()).unwrap()).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(&lines[..3], &["1000", "1000", "read-only"], "{output}");
    // A non-root user keeps no effective capabilities.
    assert_eq!(lines[3].split_whitespace().nth(1), Some("0000000000000000"), "{output}");

    // A process that handles SIGTERM ends on it within the grace period.
    let graceful = host_container(
        "graceful",
        &["sh", "-c", "trap 'echo bye; exit 3' TERM; echo up; while true; do sleep 0.1; done"],
    );
    let graceful_handle = runtime.start_container(&run, &graceful, 0).await.unwrap();
    let graceful_log = runtime.log_path(&uid, "graceful", 0);
    eventually("the trap to be set", WAIT, || async {
        std::fs::read_to_string(&graceful_log).ok().filter(|t| t.contains(" up"))
    })
    .await;
    let exit = runtime.stop_container(&graceful_handle, Duration::from_secs(60)).await;
    assert_eq!((exit.exit_code, exit.signal), (3, None), "{exit:?}");
    let output = String::from_utf8(read_log(&graceful_log, &LogOptions::default()).unwrap()).unwrap();
    assert_eq!(output, "up\nbye\n");

    // A second attempt of the same container gets its own log file.
    let again = runtime.start_container(&run, &locked, 1).await.unwrap();
    tokio::time::timeout(WAIT, again.wait()).await.unwrap();
    let files: Vec<u32> =
        berth_node::log_files(runtime.data_dir(), &uid, "locked").unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(files, vec![0, 1]);

    // A command that does not exist fails the start, leaving nothing behind in runc.
    let missing = host_container("missing", &["no-such-program-here"]);
    let error = runtime.start_container(&run, &missing, 0).await.unwrap_err();
    assert_eq!(error.reason(), "RunContainerError");
    assert!(error.to_string().contains("no-such-program-here"), "{error}");
    let cli = berth_node::oci_runtime::OciCli::new(&node.config, node.config.runtime);
    let listed = cli.std_command().args(["list", "-q"]).output().unwrap();
    assert!(listed.status.success());
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("-missing-"), "runtime state left behind");

    // Anything but the host image is refused with the reason kubelet would show.
    let mut other = host_container("other", &["true"]);
    other.image = Some("nginx:1.27".into());
    let error = runtime.start_container(&run, &other, 0).await.unwrap_err();
    assert_eq!(error.reason(), "ErrImagePull");
    assert!(error.to_string().contains("nginx:1.27"), "{error}");

    runtime.remove_pod(&uid).await.unwrap();
}

/// Volumes mounted where the host has nothing, below its read-only `/etc` (a configMap at
/// `/etc/site`, a subPath file in a new directory), with a writable and a read-only root.
#[tokio::test]
async fn volumes_mount_below_read_only_host_directories() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    let dir_name = format!("berth-site-{:08x}", rand::random::<u32>());
    let site_path = format!("/etc/{dir_name}");
    let conf_path = format!("/etc/{dir_name}-conf/app.conf");

    let mut inputs = PodInputs::default();
    inputs.config_maps.insert(
        "site".into(),
        ConfigMap {
            data: Some(BTreeMap::from([("index.html".to_owned(), "configured\n".to_owned())])),
            ..Default::default()
        },
    );
    for read_only_root in [false, true] {
        let mut app = host_container("app", &["sleep", "1000"]);
        app.volume_mounts = Some(vec![
            VolumeMount { name: "site".into(), mount_path: site_path.clone(), ..Default::default() },
            VolumeMount {
                name: "site".into(),
                mount_path: conf_path.clone(),
                sub_path: Some("index.html".into()),
                ..Default::default()
            },
        ]);
        app.security_context =
            Some(SecurityContext { read_only_root_filesystem: Some(read_only_root), ..Default::default() });
        let mut pod = pod("etc-volume", vec![app.clone()]);
        pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
            name: "site".into(),
            config_map: Some(ConfigMapVolumeSource { name: "site".into(), ..Default::default() }),
            ..Default::default()
        }]);
        let uid = pod.metadata.uid.clone().unwrap();
        let sandbox = runtime.create_sandbox(&pod).await.unwrap();
        let volumes = runtime.prepare_volumes(&pod, &inputs).unwrap();
        let place = placement(&sandbox.ip().to_string());
        let run = PodRun { sandbox: &sandbox, pod: &pod, inputs: &inputs, volumes: &volumes, placement: &place };
        let handle = runtime.start_container(&run, &app, 0).await.unwrap();
        let exec = |script: String| {
            let runtime = &runtime;
            let handle = &handle;
            async move {
                let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
                let result = runtime.exec_sync(handle, &argv, Duration::from_secs(10)).await.unwrap();
                (result.exit_code, String::from_utf8_lossy(&result.output).into_owned())
            }
        };
        let (code, out) = exec(format!("cat {site_path}/index.html {conf_path}")).await;
        assert_eq!((code, out.as_str()), (0, "configured\nconfigured\n"), "read_only_root={read_only_root}");
        // The rest of the host's /etc is there and stays read-only.
        let (code, out) = exec("grep -c '^root:' /etc/passwd".to_owned()).await;
        assert_eq!((code, out.trim()), (0, "1"));
        let (code, _) = exec("touch /etc/berth-should-fail".to_owned()).await;
        assert_ne!(code, 0, "/etc is read-only (read_only_root={read_only_root})");
        let (code, _) = exec(format!("touch {site_path}/new")).await;
        assert_ne!(code, 0, "configMap volumes are read-only");
        let (code, _) = exec("touch /tmp/x".to_owned()).await;
        assert_eq!(code == 0, !read_only_root, "the root is writable unless readOnlyRootFilesystem");
        // The host's /etc got no mount points.
        assert!(!Path::new(&site_path).exists());
        assert!(!Path::new(&conf_path).parent().unwrap().exists());

        runtime.stop_container(&handle, Duration::from_secs(1)).await;
        runtime.remove_pod(&uid).await.unwrap();
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn process_ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn a_start_abandoned_before_go_creates_nothing_and_the_pod_starts_after_a_restart() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    let app = host_container("app", &["sleep", "3600"]);
    let app_pod = pod("abandoned", vec![app.clone()]);
    let no_inputs = PodInputs::default();
    let volumes = runtime.prepare_volumes(&app_pod, &no_inputs).unwrap();

    // The first container is prepared from the planned sandbox, as a first start does while
    // the sandbox is made; its shim is up and waits for "go".
    let plan = runtime.plan_sandbox(&app_pod).await.unwrap();
    assert!(!plan.exists);
    let planned = plan.sandbox.clone();
    let place = placement(&planned.ip().to_string());
    let run = PodRun { sandbox: &planned, pod: &app_pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    let prepared = runtime.prepare_container(&run, &app, 0).await.unwrap();
    let (shim_pid, state_dir) = (prepared.shim_pid(), prepared.state_dir().to_owned());
    assert!(state_dir.join("shim.json").exists() && state_dir.join("config.json").exists());
    assert!(!process_ended(shim_pid), "the shim waits for go");

    // Berth dies here (its end of the shim's stdin closes, as a kill -9 closes it).
    drop(prepared);
    drop(runtime);
    eventually("the waiting shim to exit", WAIT, || async { process_ended(shim_pid).then_some(()) }).await;
    let shim_log = std::fs::read_to_string(state_dir.join("shim.log")).unwrap();
    assert!(shim_log.contains("no go from Berth"), "shim.log: {shim_log}");
    for file in ["container.json", "exit.json", "init.pid"] {
        assert!(!state_dir.join(file).exists(), "{file} written by an abandoned start");
    }
    let id = format!("{}-app-0", planned.uid);
    let state_root = berth_node::layout::state_root(&node.config.data_dir, node.config.runtime);
    assert!(!state_root.join(&id).exists(), "the runtime created {id}");

    // Berth restarts: the pod's first start goes through, the half-prepared attempt is replaced.
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    assert!(runtime.containers(&planned.uid).await.is_empty(), "an abandoned start is no container");
    let sandbox = runtime.create_sandbox(&app_pod).await.unwrap();
    assert_eq!(sandbox.ip(), planned.ip(), "the pod keeps the address it was given");
    let place = placement(&sandbox.ip().to_string());
    let run = PodRun { sandbox: &sandbox, pod: &app_pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    let handle = runtime.start_container(&run, &app, 0).await.unwrap();
    assert!(handle.exit_record().is_none(), "running");
    assert!(!process_ended(handle.record.init_pid), "the container's init runs");
    assert_ne!(handle.record.shim_pid, shim_pid);
    let exit = runtime.stop_container(&handle, Duration::from_secs(1)).await;
    assert!(exit.signal.is_some() || exit.exit_code != 0, "{exit:?}");
    runtime.remove_pod(&sandbox.uid).await.unwrap();
}

/// The cgroup directories of `path` (as in cgroupsPath) that exist in any hierarchy.
fn cgroup_dirs(path: &str) -> Vec<std::path::PathBuf> {
    let mounts = berth_node::cgroups::CgroupMounts::detect();
    mounts.hierarchies.iter().map(|h| h.join(path.trim_start_matches('/'))).filter(|dir| dir.is_dir()).collect()
}

#[tokio::test]
async fn a_start_abandoned_between_create_and_start_leaves_nothing_and_the_pod_starts_after_a_restart() {
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    let app = host_container("app", &["sleep", "3600"]);
    let app_pod = pod("half-started", vec![app.clone()]);
    let no_inputs = PodInputs::default();
    let volumes = runtime.prepare_volumes(&app_pod, &no_inputs).unwrap();

    // As a first start does: the container is prepared from the planned sandbox, and created
    // (not started) as soon as the pod's namespaces exist, while their network is configured.
    let plan = runtime.plan_sandbox(&app_pod).await.unwrap();
    let planned = plan.sandbox.clone();
    let place = placement(&planned.ip().to_string());
    let run = PodRun { sandbox: &planned, pod: &app_pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    let mut prepared = runtime.prepare_container(&run, &app, 0).await.unwrap();
    let (shim_pid, state_dir) = (prepared.shim_pid(), prepared.state_dir().to_owned());
    let (ready, namespaces) = tokio::sync::oneshot::channel();
    let create = async {
        namespaces.await.unwrap();
        prepared.create().await;
    };
    let (sandbox, ()) = tokio::join!(runtime.make_sandbox(&app_pod, plan, Some(ready)), create);
    sandbox.unwrap();

    // The runtime created the container; its program has not started.
    let id = format!("{}-app-0", planned.uid);
    let cli = berth_node::oci_runtime::OciCli::new(&node.config, node.config.runtime);
    let state = eventually("the container to be created", WAIT, || async {
        let output = cli.std_command().args(["state", id.as_str()]).output().ok()?;
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        (state["status"] == "created").then_some(state)
    })
    .await;
    let init_pid = i32::try_from(state["pid"].as_i64().unwrap()).unwrap();
    let cmdline = std::fs::read(format!("/proc/{init_pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("sleep"), "the program started before \"start\"");
    let cgroup = format!("{}/pod{}/app", node.config.cgroup_parent, planned.uid);
    assert!(!cgroup_dirs(&cgroup).is_empty(), "the created container has its cgroup");

    // Berth dies here, between create and start (its end of the shim's stdin closes, as a
    // kill -9 closes it): the shim deletes the created container and exits.
    drop(prepared);
    drop(runtime);
    eventually("the shim to exit", WAIT, || async { process_ended(shim_pid).then_some(()) }).await;
    let shim_log = std::fs::read_to_string(state_dir.join("shim.log")).unwrap();
    assert!(shim_log.contains("no start from Berth"), "shim.log: {shim_log}");
    assert!(process_ended(init_pid), "the created init is gone");
    let state_root = berth_node::layout::state_root(&node.config.data_dir, node.config.runtime);
    assert!(!state_root.join(&id).exists(), "the runtime still has {id}");
    assert_eq!(cgroup_dirs(&cgroup), Vec::<std::path::PathBuf>::new(), "the container's cgroup is left");
    for file in ["container.json", "exit.json"] {
        assert!(!state_dir.join(file).exists(), "{file} written by an abandoned start");
    }

    // Berth restarts: the pod starts, the half-started attempt is replaced.
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    assert!(runtime.containers(&planned.uid).await.is_empty(), "an abandoned start is no container");
    let sandbox = runtime.create_sandbox(&app_pod).await.unwrap();
    let place = placement(&sandbox.ip().to_string());
    let run = PodRun { sandbox: &sandbox, pod: &app_pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    let handle = runtime.start_container(&run, &app, 0).await.unwrap();
    assert!(!process_ended(handle.record.init_pid), "the container's init runs");
    runtime.stop_container(&handle, Duration::from_secs(1)).await;
    runtime.remove_pod(&sandbox.uid).await.unwrap();
    let pod_cgroup = format!("{}/pod{}", node.config.cgroup_parent, planned.uid);
    assert_eq!(cgroup_dirs(&pod_cgroup), Vec::<std::path::PathBuf>::new(), "the pod's cgroup is left");
}

/// The lower directories of the overlay at `/` in the mount namespace of process `pid` (a
/// container's init).
fn overlay_lower(pid: i32) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if mount.split(' ').nth(4)? != "/" {
            return None;
        }
        let mut fs = fs.split(' ');
        if fs.next()? != "overlay" {
            return None;
        }
        fs.nth(1)?.split(',').find_map(|option| option.strip_prefix("lowerdir=")).map(str::to_owned)
    })
}

/// Mount points below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

/// An `image: host` root is an overlay: one read-only skeleton on the run tmpfs shared by
/// every attempt, each attempt's writes in its own upper directory on disk.
#[tokio::test]
async fn host_roots_share_one_skeleton_and_keep_each_attempts_writes_apart() {
    use std::os::unix::fs::MetadataExt;
    skip_unless_capable!();
    let node = test_node();
    let runtime = Runtime::new(node.config.clone()).await.unwrap();
    let data_dir = runtime.data_dir().to_owned();
    let app = host_container("app", &["sleep", "1000"]);
    let pod = pod("host-root", vec![app.clone()]);
    let uid = pod.metadata.uid.clone().unwrap();
    let sandbox = runtime.create_sandbox(&pod).await.unwrap();
    let no_inputs = PodInputs::default();
    let volumes = runtime.prepare_volumes(&pod, &no_inputs).unwrap();
    let place = placement(&sandbox.ip().to_string());
    let run = PodRun { sandbox: &sandbox, pod: &pod, inputs: &no_inputs, volumes: &volumes, placement: &place };
    let exec = |handle: &berth_node::runtime::ContainerHandle, script: &str| {
        let argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let runtime = &runtime;
        let handle = handle.clone();
        async move {
            let result = runtime.exec_sync(&handle, &argv, Duration::from_secs(10)).await.unwrap();
            (result.exit_code, String::from_utf8_lossy(&result.output).into_owned())
        }
    };

    let first = runtime.start_container(&run, &app, 0).await.unwrap();
    // Only the container holds its root mount: the host's table does not grow with it, and
    // the container goes on reading and writing its root.
    eventually("the host's copy of the root to go", WAIT, || async {
        mounts_below(&first.state_dir).is_empty().then_some(())
    })
    .await;
    let (code, out) = exec(&first, "echo one > /tmp/written && echo log > /var/log/berth-test").await;
    assert_eq!(code, 0, "{out}");
    // The host's /var skeleton, with its owners.
    let host_log = std::fs::metadata("/var/log").unwrap();
    let (code, out) = exec(&first, "stat -c %u:%g /var/log").await;
    assert_eq!((code, out.trim()), (0, format!("{}:{}", host_log.uid(), host_log.gid()).as_str()));
    let first_lower = overlay_lower(first.record.init_pid).expect("the root is an overlay");
    let skeletons = data_dir.join("run/host-root");
    assert!(Path::new(&first_lower).starts_with(&skeletons), "{first_lower}");
    // The writes are in the attempt's upper directory on disk, not in the shared skeleton.
    let upper = data_dir.join(format!("pods/{uid}/_layers/app-0/upper"));
    assert_eq!(std::fs::read_to_string(upper.join("tmp/written")).unwrap(), "one\n");
    assert!(upper.join("var/log/berth-test").is_file());
    assert!(!Path::new(&first_lower).join("tmp/written").exists());
    // The runtime's own mount points come from the skeleton: starting writes nothing there.
    for dir in ["proc", "dev", "sys"] {
        assert!(!upper.join(dir).exists(), "{dir} made in the upper layer");
    }
    runtime.stop_container(&first, Duration::from_secs(1)).await;

    // The next attempt starts from a fresh root on the same skeleton.
    let second = runtime.start_container(&run, &app, 1).await.unwrap();
    assert_eq!(overlay_lower(second.record.init_pid).as_deref(), Some(first_lower.as_str()));
    let (code, _) = exec(&second, "test -e /tmp/written || test -e /var/log/berth-test").await;
    assert_ne!(code, 0, "an attempt sees nothing of the one before");
    let (code, out) = exec(&second, "stat -c %a /tmp").await;
    assert_eq!((code, out.trim()), (0, "1777"));
    runtime.stop_container(&second, Duration::from_secs(1)).await;

    // Removing the pod unmounts and removes both roots; the shared skeleton stays.
    runtime.remove_pod(&uid).await.unwrap();
    for dir in [data_dir.join("pods").join(&uid), data_dir.join("run/pods").join(&uid)] {
        assert!(mounts_below(&dir).is_empty(), "{:?}", mounts_below(&dir));
        assert!(!dir.exists(), "{}", dir.display());
    }
    assert!(Path::new(&first_lower).join("var").is_dir());
    assert_eq!(std::fs::read_dir(&skeletons).unwrap().count(), 1, "one skeleton for one host layout");
}
