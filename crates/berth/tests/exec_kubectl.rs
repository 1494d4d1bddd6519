//! `kubectl exec` and `kubectl cp` against a real pod (WebSocket channel protocol v5, runc
//! exec in the container). Needs root and runc; skipped with a message otherwise.

use std::time::Duration;

use berth_testkit::{Server, can_run_pods, old_kubectl, wait_for};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  containers:
  - name: main
    image: host
    command: [sh, -c, "mkdir -p /tmp/www && echo hello-through-port-forward > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www"]
"#;

fn start_pod(s: &Server) {
    s.ok_stdin(&["apply", "-f", "-"], POD);
    wait_for("pod running", Duration::from_secs(90), || {
        let pod = s.json(&["get", "pod", "shell"]);
        (pod["status"]["phase"] == "Running").then_some(())
    });
}

#[test]
fn exec_runs_commands_in_the_container_and_cp_copies_files() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pod(&s);

    let hostname = s.ok(&["exec", "shell", "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname.trim(), "shell");

    // The command's exit code becomes kubectl's.
    let out = s.kubectl(&["exec", "shell", "--", "sh", "-c", "echo to-stderr >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));

    // Stdin is piped through and its end reaches the process.
    let echoed = s.ok_stdin(&["exec", "-i", "shell", "--", "cat"], "line one\nline two\n");
    assert_eq!(echoed, "line one\nline two\n");

    // kubectl cp in (tar xf in the pod) and out (tar cf in the pod).
    let tmp = tempfile::tempdir().expect("tempdir");
    let local = tmp.path().join("in.txt");
    std::fs::write(&local, "copied with kubectl cp\n").expect("write");
    s.ok(&["cp", local.to_str().expect("utf8"), "shell:/tmp/in.txt"]);
    assert_eq!(s.ok(&["exec", "shell", "--", "cat", "/tmp/in.txt"]), "copied with kubectl cp\n");
    s.ok(&["exec", "shell", "--", "sh", "-c", "echo made in the pod > /tmp/out.txt"]);
    let back = tmp.path().join("out.txt");
    s.ok(&["cp", "shell:/tmp/out.txt", back.to_str().expect("utf8")]);
    assert_eq!(std::fs::read_to_string(&back).expect("copied out"), "made in the pod\n");

    // A container that does not exist is an error, not a hang.
    let err = s.fails(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(err.contains("nope"), "{err}");
}

/// Reads one HTTP/1.0 response from 127.0.0.1:`port`, if anything answers.
fn local_http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn port_forward_reaches_the_pods_port() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pod(&s);
    forward_twice(s.kubectl_cmd(&[]));
}

/// Runs `kubectl port-forward pod/shell PORT:80` with `kubectl` (a command carrying the
/// kubeconfig) and checks two connections through it reach the pod's web server.
fn forward_twice(mut kubectl: std::process::Command) {
    let local_port = berth_testkit::free_port();
    let mut forward = kubectl
        .args(["port-forward", "pod/shell", &format!("{local_port}:80")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn kubectl port-forward");
    let answer = wait_for("an answer through port-forward", Duration::from_secs(30), || {
        local_http_get(local_port).filter(|r| r.contains("hello-through-port-forward"))
    });
    // A second connection over the same session works too.
    let again = local_http_get(local_port).unwrap_or_default();
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    assert!(again.contains("hello-through-port-forward"), "{again}");
}

#[test]
fn exec_it_gives_a_shell_on_a_terminal_of_the_callers_size() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pod(&s);
    let (screen, _) =
        s.on_terminal(&["exec", "-it", "shell", "--", "sh"], 33, 101, "echo $((6*7))-marker; tty; stty size; exit\n");
    assert!(screen.contains("42-marker"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "the shell runs on a terminal: {screen}");
    assert!(screen.contains("33 101"), "the terminal has the caller's size: {screen}");
}

#[test]
fn older_kubectl_execs_over_spdy() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pod(&s);
    for minor in [27, 28, 29] {
        let Some(kubectl) = old_kubectl(minor) else {
            eprintln!("skipping kubectl 1.{minor}: not installed");
            continue;
        };
        let run = |args: &[&str], stdin: &str| {
            use std::io::Write;
            let mut child = std::process::Command::new(&kubectl)
                .args(args)
                .env("KUBECONFIG", s.kubeconfig())
                .env("KUBECACHEDIR", &s.cache_dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("old kubectl");
            child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
            child.wait_with_output().expect("output")
        };
        let out = run(&["exec", "shell", "--", "cat", "/etc/hostname"], "");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "shell",
            "1.{minor}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&["exec", "-i", "shell", "--", "cat"], "through spdy\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "through spdy\n", "1.{minor}");
        let out = run(&["exec", "shell", "--", "sh", "-c", "echo oops >&2; exit 3"], "");
        assert_eq!(out.status.code(), Some(3), "1.{minor}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("oops"), "1.{minor}");
    }
}

#[test]
fn older_kubectl_port_forwards_over_spdy() {
    if !can_run_pods() {
        return;
    }
    let Some(kubectl) = old_kubectl(29) else {
        eprintln!("skipping: kubectl 1.29 is not installed");
        return;
    };
    let s = Server::start(&[]);
    start_pod(&s);
    let mut cmd = std::process::Command::new(&kubectl);
    cmd.env("KUBECONFIG", s.kubeconfig()).env("KUBECACHEDIR", &s.cache_dir);
    forward_twice(cmd);
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn oci_exec_passes_sigterm_on_to_the_process() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pod(&s);
    let uid = s.json(&["get", "pod", "shell"])["metadata"]["uid"].as_str().expect("uid").to_owned();
    // What the node runs for an exec: libcontainer's runc-style command line, as a process of
    // its own whose child is the exec'd process.
    let mut exec = std::process::Command::new(berth_testkit::berth_binary())
        .arg("__berth-oci")
        .arg("--root")
        .arg(s.data_path("node/run/oci"))
        .args(["exec", &format!("{uid}-main-0"), "sleep", "1000"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("berth __berth-oci exec");
    let sleeper = wait_for("the exec'd sleep", Duration::from_secs(30), || {
        children(exec.id()).into_iter().find(|child| {
            std::fs::read(format!("/proc/{child}/cmdline")).is_ok_and(|cmdline| cmdline.starts_with(b"sleep\0"))
        })
    });
    let status = std::process::Command::new("kill").args(["-TERM", &exec.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let status = wait_for("the exec to end", Duration::from_secs(30), || exec.try_wait().expect("try_wait"));
    // The sleep got the signal and died of it; the exec reports that as a shell does.
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(!std::path::Path::new(&format!("/proc/{sleeper}")).exists(), "the exec'd sleep still runs");
}
