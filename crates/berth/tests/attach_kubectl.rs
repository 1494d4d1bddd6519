//! `kubectl attach` and `kubectl run -i/-it` against real pods: the container's stdin (a pipe
//! or a terminal) is held by its shim and served on its attach socket. Needs root and runc;
//! skipped otherwise.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth_testkit::{Server, can_run_pods, old_kubectl, wait_for};

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: echo
spec:
  containers:
  - name: main
    image: host
    command: [cat]
    stdin: true
---
apiVersion: v1
kind: Pod
metadata:
  name: deaf
spec:
  containers:
  - name: main
    image: host
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata:
  name: term
spec:
  containers:
  - name: main
    image: host
    command: [sh]
    stdin: true
    tty: true
"#;

fn start_pods(s: &Server) {
    s.ok_stdin(&["apply", "-f", "-"], PODS);
    for pod in ["echo", "deaf", "term"] {
        wait_for(&format!("pod {pod} running"), Duration::from_secs(90), || {
            (s.json(&["get", "pod", pod])["status"]["phase"] == "Running").then_some(())
        });
    }
}

/// Runs `kubectl attach -i echo` (the given kubectl command), feeds it lines one at a time and
/// checks each comes back from `cat`; then ends its input, which ends the session.
fn echo_lines(mut kubectl: Command, lines: &[&str]) {
    let mut child = kubectl
        .args(["attach", "-i", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl attach");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write to kubectl");
        let Ok(back) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let out = child.wait_with_output().expect("kubectl output");
            panic!("{line:?} did not come back: {}", String::from_utf8_lossy(&out.stderr));
        };
        assert_eq!(back, *line);
    }
    // The end of kubectl's input ends the session (the container keeps its stdin open).
    drop(stdin);
    let status = wait_for("kubectl attach to end with its input", Duration::from_secs(30), || {
        child.try_wait().expect("try_wait")
    });
    assert!(status.success(), "kubectl attach: {status}");
}

#[test]
fn attach_i_feeds_stdin_across_sessions_clients_and_restarts() {
    if !can_run_pods() {
        return;
    }
    let mut s = Server::start(&[]);
    start_pods(&s);

    echo_lines(s.kubectl_cmd(&[]), &["line one", "line two"]);
    // A second session finds the same stdin still open.
    echo_lines(s.kubectl_cmd(&[]), &["again"]);

    // A container started without stdin refuses input instead of silently dropping it.
    let refused = s.fails(&["attach", "-i", "deaf"]);
    assert!(refused.contains("without stdin"), "{refused}");

    // kubectl before 1.30 attaches over SPDY.
    match old_kubectl(27) {
        Some(kubectl) => {
            let mut cmd = Command::new(kubectl);
            cmd.env("KUBECONFIG", s.kubeconfig()).env("KUBECACHEDIR", &s.cache_dir);
            echo_lines(cmd, &["through spdy"]);
        }
        None => eprintln!("skipping kubectl 1.27: not installed"),
    }

    // The shim holds the container's stdin, so attach works after Berth crashes and restarts.
    s.kill9();
    s.spawn();
    wait_for("the API after the restart", Duration::from_secs(60), || {
        s.kubectl(&["get", "pod", "echo"]).status.success().then_some(())
    });
    echo_lines(s.kubectl_cmd(&[]), &["after the restart"]);
    let pod = s.json(&["get", "pod", "echo"]);
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "cat ran throughout");
}

#[test]
fn run_i_with_stdin_once_closes_stdin_after_the_session() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    // kubectl run -i makes a stdinOnce container: when kubectl's input ends, cat sees the end
    // of its stdin and exits; kubectl reports its exit and --rm deletes the pod.
    let out = s.kubectl_stdin(
        &["run", "-i", "--rm", "--image=host", "--restart=Never", "once", "--command", "--", "cat"],
        "first\nsecond\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl run -i: {stdout}\n{stderr}");
    assert!(stdout.contains("first\nsecond\n"), "{stdout}\n{stderr}");
    assert!(!stderr.contains("falling back to streaming logs"), "{stderr}");
    wait_for("pod once removed", Duration::from_secs(60), || {
        (!s.kubectl(&["get", "pod", "once"]).status.success()).then_some(())
    });
}

#[test]
fn run_it_rm_gives_a_shell_and_removes_the_pod() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    let (screen, code) = s.on_terminal(
        &["run", "-it", "--rm", "--image=host", "--restart=Never", "dbg", "--command", "--", "sh"],
        24,
        80,
        "echo $((6*7))-marker; tty; exit\r",
    );
    assert!(screen.contains("42-marker"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "the shell runs on a terminal: {screen}");
    assert!(!screen.contains("falling back to streaming logs"), "{screen}");
    assert_eq!(code, 0, "{screen}");
    wait_for("pod dbg removed", Duration::from_secs(60), || {
        (!s.kubectl(&["get", "pod", "dbg"]).status.success()).then_some(())
    });
}

#[test]
fn attach_it_has_the_callers_terminal_size() {
    if !can_run_pods() {
        return;
    }
    let s = Server::start(&[]);
    start_pods(&s);
    let (screen, _) = s.on_terminal(&["attach", "-it", "term"], 33, 101, "stty size; exit\r");
    assert!(screen.contains("33 101"), "the terminal has the caller's size: {screen}");
    // A state directory too long for a socket's name: runc still hands over the terminal
    // and attach still connects (through /proc/<pid>/fd/<dir>).
    let long = "c".repeat(63);
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: long\nspec:\n  containers:\n  - name: {long}\n    \
         image: host\n    command: [sh]\n    stdin: true\n    tty: true\n"
    );
    s.ok_stdin(&["apply", "-f", "-"], &pod);
    wait_for("pod long running", Duration::from_secs(90), || {
        (s.json(&["get", "pod", "long"])["status"]["phase"] == "Running").then_some(())
    });
    let (screen, _) = s.on_terminal(&["attach", "-it", "long"], 24, 80, "tty; exit\r");
    assert!(screen.contains("/dev/pts/"), "{screen}");

    // The terminal's output is the container's log, as upstream keeps it.
    wait_for("terminal output in the log", Duration::from_secs(30), || {
        let logs = s.kubectl(&["logs", "term", "--previous"]);
        String::from_utf8_lossy(&logs.stdout).contains("33 101").then_some(())
    });
}
