//! The server's own clients (controllers, node agent, ...) reach its API in-process: they do
//! their work while the process holds no TCP connection to its own API port. With the hidden
//! `--api-transport https` they connect over loopback, which shows the check sees them.

use std::{collections::HashSet, time::Duration};

use berth_testkit::{Server, wait_for};

/// Established TCP connections that `pid` opened to `port` (its own API port: the accepted
/// ends have it as the local port instead).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's fds")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let port = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[2].rsplit(':').next() == Some(port.as_str())
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}

/// Starts a server with controllers, has them roll out a Deployment, and returns the server.
fn rolled_out(transport: &str) -> Server {
    let s = Server::start(&["--no-node", "--api-transport", transport]);
    s.ok(&["create", "deployment", "web", "--image=registry.invalid/web:1", "--replicas=2"]);
    // The Deployment and ReplicaSet controllers made the pods through the API.
    wait_for("the controllers to create two pods", Duration::from_secs(60), || {
        let pods = s.json(&["get", "pods", "-l", "app=web"]);
        (pods["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    wait_for("the Deployment's status to count them", Duration::from_secs(60), || {
        let d = s.json(&["get", "deployment", "web"]);
        (d["status"]["replicas"] == 2).then_some(())
    });
    s
}

#[test]
fn own_clients_use_no_connection_to_the_api() {
    let s = rolled_out("in-process");
    let pid = s.child.as_ref().expect("running").id();
    assert_eq!(connections_to(pid, s.port), 0, "the server connected to its own API");
}

#[test]
fn https_transport_connects_over_loopback() {
    let s = rolled_out("https");
    let pid = s.child.as_ref().expect("running").id();
    wait_for("the server's clients to hold connections to its API", Duration::from_secs(30), || {
        (connections_to(pid, s.port) > 0).then_some(())
    });
}
