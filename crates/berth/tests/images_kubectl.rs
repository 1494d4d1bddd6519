//! Images for real: OCI-layout and docker-archive tarballs that the tests build from Debian's
//! `busybox-static` are imported with `berth image import` and run as pods; images are pulled
//! from a local registry (Debian's `docker-registry`, standing in for a public registry, with
//! htpasswd auth) using `imagePullSecrets`; missing images give `ErrImagePull`,
//! `ImagePullBackOff` and `ErrImageNeverPull`. Needs root; skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_testkit::{Server, berth_binary, can_run_pods, free_port, wait_for};
use sha2::{Digest, Sha256};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "echo", "cat", "sleep", "ls", "id", "test", "pwd", "env"];

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_size(size);
    header
}

fn add_file(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    builder.append_data(&mut h, path, data).unwrap();
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    builder.append_data(&mut h, path, std::io::empty()).unwrap();
}

/// A base layer: busybox-static and its applets as symlinks, /etc/passwd and /etc/motd.
fn base_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("home", 0o755), ("home/app", 0o755)] {
        add_dir(&mut b, dir, mode);
    }
    add_file(&mut b, "bin/busybox", 0o755, &std::fs::read(BUSYBOX).unwrap());
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    add_file(&mut b, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
    add_file(&mut b, "etc/group", 0o644, b"root:x:0:\napp:x:1000:\n");
    add_file(&mut b, "etc/motd", 0o644, b"base layer\n");
    b.into_inner().unwrap()
}

/// A layer that deletes /etc/motd (a whiteout) and adds /etc/layer2.
fn second_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "etc", 0o755);
    add_file(&mut b, "etc/.wh.motd", 0o644, b"");
    add_file(&mut b, "etc/layer2", 0o644, b"second layer\n");
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn image_config(diff_ids: &[String], config: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest(bytes), "size": bytes.len()})
}

/// An OCI image layout as a tarball: one gzip layer, named `name`.
fn oci_archive(path: &Path, name: &str, config: serde_json::Value) {
    let layer = base_layer();
    let layer_gz = gzip(&layer);
    let config = image_config(&[digest(&layer)], config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer_gz)],
    }))
    .unwrap();
    let mut manifest_descriptor = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [manifest_descriptor]})).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    add_file(&mut b, "index.json", 0o644, &index);
    for blob in [&layer_gz, &config, &manifest] {
        let hex = digest(blob).trim_start_matches("sha256:").to_owned();
        add_file(&mut b, &format!("blobs/sha256/{hex}"), 0o644, blob);
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// A `docker save` style archive with two plain layers, the second deleting a file.
fn docker_archive(path: &Path, name: &str, config: serde_json::Value) {
    let layers = [base_layer(), second_layer()];
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = image_config(&diff_ids, config);
    let config_name = format!("{}.json", digest(&config).trim_start_matches("sha256:"));
    let layer_names: Vec<String> = (0..layers.len()).map(|i| format!("layer{i}/layer.tar")).collect();
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [name], "Layers": layer_names}]).to_string();
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, &config_name, 0o644, &config);
    for (name, layer) in layer_names.iter().zip(&layers) {
        add_file(&mut b, name, 0o644, layer);
    }
    add_file(&mut b, "manifest.json", 0o644, manifest.as_bytes());
    std::fs::write(path, gzip(&b.into_inner().unwrap())).unwrap();
}

/// `berth image ARGS --data-dir <server's>`; returns stdout, asserting success.
#[track_caller]
fn berth_image(server: &Server, args: &[&str]) -> String {
    let out = berth_image_output(server, args);
    assert!(out.status.success(), "berth image {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn berth_image_output(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(berth_binary()).arg("image").args(args).arg("--data-dir").arg(&server.data_dir).output().unwrap()
}

fn pod_yaml(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: main\n    image: {image}\n{extra}"
    )
}

fn phase_and_reason(server: &Server, pod: &str) -> (String, String) {
    let pod = server.json(&["get", "pod", pod]);
    let phase = pod["status"]["phase"].as_str().unwrap_or("").to_owned();
    let state = &pod["status"]["containerStatuses"][0]["state"];
    let reason = if state.get("running").is_some() {
        "Running".to_owned()
    } else {
        state["waiting"]["reason"].as_str().or(state["terminated"]["reason"].as_str()).unwrap_or("").to_owned()
    };
    (phase, reason)
}

#[track_caller]
fn wait_reason(server: &Server, pod: &str, wanted: &str, timeout: Duration) {
    wait_for(&format!("pod {pod} to show {wanted}"), timeout, || {
        (phase_and_reason(server, pod).1 == wanted).then_some(())
    });
}

#[track_caller]
fn wait_log(server: &Server, pod: &str, needle: &str) -> String {
    wait_for(&format!("log of {pod} to contain {needle:?}"), Duration::from_secs(60), || {
        let out = server.kubectl(&["logs", pod]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(needle).then_some(text)
    })
}

fn image_id_of(server: &Server, pod: &str) -> String {
    let pod = server.json(&["get", "pod", pod]);
    pod["status"]["containerStatuses"][0]["imageID"].as_str().unwrap_or_default().to_owned()
}

fn events_of(server: &Server, pod: &str) -> String {
    server.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={pod}")])
}

fn skip() -> bool {
    if !can_run_pods() {
        eprintln!("skipping: needs root, runc and overlayfs to run pods");
        return true;
    }
    if !Path::new(BUSYBOX).is_file() {
        eprintln!("skipping: {BUSYBOX} missing (install busybox-static: scripts/install-test-deps)");
        return true;
    }
    false
}

#[test]
fn imported_oci_and_docker_archives_run_as_pods_and_are_removed() {
    if skip() {
        return;
    }
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();

    // The acceptance line: an OCI tarball built here from busybox-static runs as a pod, with
    // the image's Entrypoint, Cmd, Env and WorkingDir.
    let oci = work.path().join("busybox-oci.tar");
    oci_archive(
        &oci,
        "berth.test/busybox:1",
        serde_json::json!({
            "Env": ["PATH=/bin", "GREETING=from-oci-image"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo \"$GREETING in $(pwd)\"; exec sleep 3600"],
            "WorkingDir": "/home/app",
        }),
    );
    let out = berth_image(&server, &["import", oci.to_str().unwrap()]);
    assert!(out.contains("berth.test/busybox:1"), "{out}");
    let docker = work.path().join("busybox-docker.tar.gz");
    docker_archive(
        &docker,
        "berth.test/busybox-docker:2",
        serde_json::json!({"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo unused"], "User": "app"}),
    );
    berth_image(&server, &["import", docker.to_str().unwrap()]);
    let listing = berth_image(&server, &["ls"]);
    for name in ["host", "berth.test/busybox:1", "berth.test/busybox-docker:2"] {
        assert!(listing.contains(name), "{name} missing from:\n{listing}");
    }

    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("oci", "berth.test/busybox:1", ""));
    wait_reason(&server, "oci", "Running", Duration::from_secs(60));
    wait_log(&server, "oci", "from-oci-image in /home/app");
    // imageID names the image by digest, as `kubectl describe` shows it: an OCI layout keeps
    // its manifest's digest.
    let image_id = image_id_of(&server, "oci");
    assert!(image_id.starts_with("berth.test/busybox@sha256:"), "{image_id}");
    // The root is the image's, not the host's: no /usr, and busybox is the only program.
    let root = server.ok(&["exec", "oci", "--", "ls", "/"]);
    assert!(!root.split_whitespace().any(|e| e == "usr"), "{root}");
    assert!(events_of(&server, "oci").contains("already present on machine"));

    // docker-archive: args replace Cmd, the image's User applies, the whiteout hides a file.
    let extra = "    imagePullPolicy: Never\n    args: [\"test ! -e /etc/motd && cat /etc/layer2 && id -u && exec sleep 3600\"]\n";
    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("docker", "berth.test/busybox-docker:2", extra));
    wait_reason(&server, "docker", "Running", Duration::from_secs(60));
    let log = wait_log(&server, "docker", "second layer");
    assert!(log.contains("1000"), "image User app is uid 1000: {log}");
    // A docker-archive has no manifest digest: its imageID is the image ID (config digest).
    let image_id = image_id_of(&server, "docker");
    assert!(image_id.starts_with("sha256:") && image_id.len() == 71, "{image_id}");

    // Writes land in the container's own upper layer, never in the shared image layers.
    server.ok(&["exec", "oci", "--", "sh", "-c", "echo scribble > /etc/passwd"]);
    let fresh = server.ok(&["exec", "docker", "--", "cat", "/etc/passwd"]);
    assert!(fresh.contains("app:x:1000"), "{fresh}");
    // That upper layer is on disk, not on the node's run tmpfs with the bundle.
    let uid = server.json(&["get", "pod", "oci"])["metadata"]["uid"].as_str().expect("uid").to_owned();
    let upper = server.data_path(&format!("node/pods/{uid}/_layers/main-0/upper/etc/passwd"));
    assert_eq!(std::fs::read_to_string(&upper).expect("upper layer on disk"), "scribble\n");

    // An image in use is not removed; once its pod is gone it is, with its layers.
    let refused = berth_image_output(&server, &["rm", "berth.test/busybox:1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("used by containers on this node"));
    server.ok(&["delete", "pod", "oci", "docker", "--wait=true"]);
    // The node removes a deleted pod's containers moments after the API forgets it.
    wait_for("the image to be removable", Duration::from_secs(30), || {
        berth_image_output(&server, &["rm", "berth.test/busybox:1"]).status.success().then_some(())
    });
    let listing = berth_image(&server, &["ls"]);
    assert!(!listing.contains("berth.test/busybox:1"), "{listing}");
    assert!(listing.contains("berth.test/busybox-docker:2"), "{listing}");
    let prune = berth_image(&server, &["prune"]);
    assert!(prune.contains("busybox-docker:2"), "{prune}");
    let layers = server.data_path("node/images/layers");
    let left: Vec<_> = std::fs::read_dir(&layers).unwrap().collect();
    assert!(left.is_empty(), "layers left after prune: {left:?}");

    // imagePullPolicy: Never with a missing image.
    let never = "    imagePullPolicy: Never\n    command: [sh]\n";
    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("never", "berth.test/absent:1", never));
    wait_reason(&server, "never", "ErrImageNeverPull", Duration::from_secs(30));
    let pod = server.json(&["get", "pod", "never"]);
    let message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
    assert_eq!(message, "Container image \"berth.test/absent:1\" is not present with pull policy of Never");
    assert!(events_of(&server, "never").contains("ErrImageNeverPull"));
}

/// Debian's `docker-registry` on a free loopback port with htpasswd auth; it stands in for
/// a public registry (no network here).
struct Registry {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command_exists(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

fn start_registry(user: &str, password: &str) -> Option<Registry> {
    for program in ["docker-registry", "htpasswd", "skopeo"] {
        if !command_exists(program) {
            eprintln!("skipping: {program} missing (scripts/install-test-deps)");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = Command::new("htpasswd").args(["-Bbn", user, password]).output().unwrap();
    assert!(htpasswd.status.success());
    std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n",
        root = dir.path().join("data").display(),
        htpasswd = dir.path().join("htpasswd").display(),
    );
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let registry = Registry { child, address, _dir: dir };
    wait_for("the registry to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&registry.address).ok().map(|_| ())
    });
    Some(registry)
}

/// Pushes an OCI archive to the registry with skopeo.
fn push(archive: &Path, registry: &Registry, name: &str, creds: &str) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{}/{name}", registry.address))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn images_are_pulled_from_a_registry_with_pull_secrets() {
    if skip() {
        return;
    }
    let Some(registry) = start_registry("puller", "s3cret-pw") else { return };
    let work = tempfile::tempdir().unwrap();
    let archive: PathBuf = work.path().join("app.tar");
    oci_archive(
        &archive,
        "app:1",
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "echo pulled-and-running; exec sleep 3600"]}),
    );
    push(&archive, &registry, "team/app:1", "puller:s3cret-pw");
    let image = format!("{}/team/app:1", registry.address);

    let server = Server::start(&["--insecure-registry", &registry.address]);
    // Without credentials the registry refuses: ErrImagePull, then ImagePullBackOff.
    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("anonymous", &image, ""));
    wait_reason(&server, "anonymous", "ErrImagePull", Duration::from_secs(60));
    wait_reason(&server, "anonymous", "ImagePullBackOff", Duration::from_secs(60));
    let events = events_of(&server, "anonymous");
    assert!(events.contains("Pulling") && events.contains("Failed to pull image"), "{events}");

    // A missing image on a reachable registry fails the same way, with the registry's word.
    let missing = format!("{}/team/nothing:1", registry.address);
    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("missing", &missing, ""));
    wait_reason(&server, "missing", "ErrImagePull", Duration::from_secs(60));

    // With a dockerconfigjson secret in imagePullSecrets the pull succeeds.
    server.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", registry.address),
        "--docker-username=puller",
        "--docker-password=s3cret-pw",
    ]);
    let with_secret = "    imagePullPolicy: IfNotPresent\n  imagePullSecrets:\n  - name: regcred\n";
    server.ok_stdin(&["apply", "-f", "-"], &pod_yaml("pulled", &image, with_secret));
    wait_reason(&server, "pulled", "Running", Duration::from_secs(90));
    wait_log(&server, "pulled", "pulled-and-running");
    // A pulled image's imageID names its repository and manifest digest.
    let image_id = image_id_of(&server, "pulled");
    assert!(image_id.starts_with(&format!("{}/team/app@sha256:", registry.address)), "{image_id}");
    let events = events_of(&server, "pulled");
    assert!(events.contains("Successfully pulled image"), "{events}");
    let listing = berth_image(&server, &["ls"]);
    assert!(listing.contains(&format!("{}/team/app:1", registry.address)), "{listing}");

    // The CLI pulls too, with the same flag for plain HTTP.
    let cli = berth_image_output(
        &server,
        &["pull", &image, "--insecure-registry", &registry.address, "--username", "puller", "--password", "s3cret-pw"],
    );
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(String::from_utf8_lossy(&cli.stdout).contains("Pulled"));
}
