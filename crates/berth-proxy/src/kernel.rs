//! The kernel data path: iptables NAT rules that send a Service frontend's new connections to
//! one ready endpoint, in the layout kube-proxy's iptables mode uses (one chain per Service
//! port choosing an endpoint with `statistic` probabilities, one chain per endpoint doing the
//! DNAT, `recent` lists for `sessionAffinity: ClientIP`, a mark for masquerading traffic that
//! would otherwise come back the wrong way). Packets then never cross user space.
//!
//! Every chain is named `BRT-<service interface>-…`, so several servers on one machine (tests
//! on their own slots) never touch each other's rules, and everything with the prefix can be
//! removed at shutdown. The ruleset is applied in one `iptables-restore --noflush`
//! transaction, so a change is atomic for new connections and never touches established ones
//! (conntrack keeps their translation).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::table::{BackendSpec, Frontend, Protocol, ServicePortKey};

/// The mark bit asking POSTROUTING to masquerade (the bit kube-proxy uses, so a machine
/// running both agrees on its meaning).
const MASQ_MARK: &str = "0x4000/0x4000";

/// Errors programming the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// What kind of address a frontend is, which decides whether its traffic is masqueraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendKind {
    /// A ClusterIP: masqueraded only when the client is not a pod (the host itself).
    ClusterIp,
    /// An external IP or a LoadBalancer address on the node.
    External,
    /// A NodePort on every local address.
    NodePort,
}

/// The chain names of one server instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chains {
    prefix: String,
}

impl Chains {
    /// Chains of the server whose service interface is `interface` (at most 15 characters, so
    /// every name stays within iptables' 28).
    pub fn for_interface(interface: &str) -> Self {
        Chains { prefix: format!("BRT-{interface}") }
    }

    fn services(&self) -> String {
        format!("{}-SVC", self.prefix)
    }

    fn node_ports(&self) -> String {
        format!("{}-NP", self.prefix)
    }

    fn mark(&self) -> String {
        format!("{}-MARK", self.prefix)
    }

    fn postrouting(&self) -> String {
        format!("{}-POST", self.prefix)
    }

    /// The filter chain guarding loopback addresses (see [`Kernel::serve_localhost`]).
    fn localnet_guard(&self) -> String {
        format!("{}-FW", self.prefix)
    }

    fn service(&self, key: &ServicePortKey) -> String {
        format!("{}-S{}", self.prefix, short_hash(&format!("{key:?}")))
    }

    fn endpoint(&self, key: &ServicePortKey, endpoint: &SocketAddr) -> String {
        format!("{}-E{}", self.prefix, short_hash(&format!("{key:?}/{endpoint}")))
    }

    /// Whether `chain` belongs to this instance.
    fn owns(&self, chain: &str) -> bool {
        chain.strip_prefix(&self.prefix).is_some_and(|rest| rest.starts_with('-'))
    }

    fn comment(&self) -> String {
        format!("berth services {}", self.prefix)
    }

    /// The jumps from the built-in chains into this instance's chains.
    fn hooks(&self) -> Vec<(&'static str, String)> {
        vec![("PREROUTING", self.services()), ("OUTPUT", self.services()), ("POSTROUTING", self.postrouting())]
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(4).fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02X}");
        out
    })[..7]
        .to_owned()
}

fn proto(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// One frontend served by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// Address and protocol.
    pub frontend: Frontend,
    /// How it is reached.
    pub kind: FrontendKind,
    /// The Service port behind it.
    pub key: ServicePortKey,
}

/// The nat table's part owned by one instance: chain names and the `iptables-restore` body
/// (without the table header, chain declarations and `COMMIT`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Every chain the rules use.
    pub chains: BTreeSet<String>,
    /// `-A …` lines.
    pub rules: Vec<String>,
}

/// Computes the rules for `routes`, each Service port's endpoints taken from `backends`.
/// A frontend with no ready endpoint gets no rule: its address is local (ClusterIPs sit on
/// the service interface, NodePorts and LoadBalancer addresses on the host), so the kernel
/// answers a TCP reset or an ICMP port unreachable, as upstream's REJECT rules do.
pub fn ruleset(
    chains: &Chains,
    pod_cidr: &str,
    routes: &[KernelRoute],
    backends: &BTreeMap<ServicePortKey, BackendSpec>,
) -> Ruleset {
    let mut out = Ruleset::default();
    let (svc, np, mark, post) = (chains.services(), chains.node_ports(), chains.mark(), chains.postrouting());
    for chain in [&svc, &np, &mark, &post] {
        out.chains.insert(chain.clone());
    }
    out.rules.push(format!("-A {mark} -j MARK --set-xmark {MASQ_MARK}"));
    out.rules.push(format!("-A {post} -m mark ! --mark {MASQ_MARK} -j RETURN"));
    // Clear the bit so that a packet seen again (another instance's chain) is not re-marked.
    out.rules.push(format!("-A {post} -j MARK --xor-mark 0x4000"));
    out.rules.push(format!("-A {post} -j MASQUERADE"));

    let mut used_keys: BTreeSet<&ServicePortKey> = BTreeSet::new();
    let mut node_port_rules = Vec::new();
    for route in routes {
        if backends.get(&route.key).is_none_or(|b| b.endpoints.is_empty()) {
            continue;
        }
        used_keys.insert(&route.key);
        let p = proto(route.frontend.protocol);
        let port = route.frontend.addr.port();
        let target = chains.service(&route.key);
        let comment = format!("{}/{}:{}", route.key.namespace, route.key.name, route.key.port_name);
        match route.kind {
            FrontendKind::ClusterIp | FrontendKind::External => {
                let dst = format!("-d {}/32 -p {p} -m {p} --dport {port}", route.frontend.addr.ip());
                let masq = if route.kind == FrontendKind::ClusterIp {
                    // Pods keep their source address; the host's own connections are
                    // masqueraded so replies come back through the bridge.
                    format!("-A {svc} {dst} ! -s {pod_cidr} -m comment --comment \"{comment}\" -j {mark}")
                } else {
                    format!("-A {svc} {dst} -m comment --comment \"{comment}\" -j {mark}")
                };
                out.rules.push(masq);
                out.rules.push(format!("-A {svc} {dst} -m comment --comment \"{comment}\" -j {target}"));
            }
            FrontendKind::NodePort => {
                let dst = format!("-p {p} -m {p} --dport {port}");
                node_port_rules.push(format!("-A {np} {dst} -m comment --comment \"{comment}\" -j {mark}"));
                node_port_rules.push(format!("-A {np} {dst} -m comment --comment \"{comment}\" -j {target}"));
            }
        }
    }
    // NodePorts last, for any local destination, as kube-proxy does.
    out.rules.push(format!("-A {svc} -m addrtype --dst-type LOCAL -j {np}"));
    out.rules.extend(node_port_rules);

    for key in used_keys {
        let Some(backend) = backends.get(key) else { continue };
        let service_chain = chains.service(key);
        out.chains.insert(service_chain.clone());
        let p = proto(key.protocol);
        let endpoint_chains: Vec<String> = backend.endpoints.iter().map(|e| chains.endpoint(key, e)).collect();
        if let Some(timeout) = backend.affinity {
            let seconds = timeout.as_secs().max(1);
            for chain in &endpoint_chains {
                out.rules.push(format!(
                    "-A {service_chain} -m recent --name {chain} --mask 255.255.255.255 --rsource --rcheck --seconds {seconds} --reap -j {chain}"
                ));
            }
        }
        let n = endpoint_chains.len();
        for (i, chain) in endpoint_chains.iter().enumerate() {
            if i + 1 < n {
                let probability = 1.0 / (n - i) as f64;
                out.rules.push(format!(
                    "-A {service_chain} -m statistic --mode random --probability {probability:.11} -j {chain}"
                ));
            } else {
                out.rules.push(format!("-A {service_chain} -j {chain}"));
            }
        }
        for (endpoint, chain) in backend.endpoints.iter().zip(&endpoint_chains) {
            out.chains.insert(chain.clone());
            // A pod reaching itself through its Service must see the reply come from the host.
            out.rules.push(format!("-A {chain} -s {}/32 -j {mark}", endpoint.ip()));
            let recent = if backend.affinity.is_some() {
                format!(" -m recent --name {chain} --mask 255.255.255.255 --rsource --set")
            } else {
                String::new()
            };
            out.rules.push(format!("-A {chain} -p {p} -m {p}{recent} -j DNAT --to-destination {endpoint}"));
        }
    }
    out
}

/// The rules this instance currently has in the kernel, and how to change them.
#[derive(Debug)]
pub struct Kernel {
    chains: Chains,
    pod_cidr: String,
    applied: Option<Ruleset>,
    hooked: bool,
}

impl Kernel {
    /// A kernel data path with chains for `interface`, pods in `pod_cidr`.
    pub fn new(interface: &str, pod_cidr: &str) -> Self {
        Kernel { chains: Chains::for_interface(interface), pod_cidr: pod_cidr.to_owned(), applied: None, hooked: false }
    }

    /// Makes the kernel hold `routes`; a no-op when they produce the rules already applied.
    pub async fn apply(
        &mut self,
        routes: &[KernelRoute],
        backends: &BTreeMap<ServicePortKey, BackendSpec>,
    ) -> Result<bool, KernelError> {
        let want = ruleset(&self.chains, &self.pod_cidr, routes, backends);
        if self.applied.as_ref() == Some(&want) && self.hooked {
            return Ok(false);
        }
        let existing = self.existing_chains().await?;
        let mut input = String::from("*nat\n");
        // Declaring a chain in a --noflush restore creates it or flushes it.
        for chain in want.chains.iter().chain(existing.difference(&want.chains)) {
            let _ = writeln!(input, ":{chain} - [0:0]");
        }
        for rule in &want.rules {
            input.push_str(rule);
            input.push('\n');
        }
        for stale in existing.difference(&want.chains) {
            let _ = writeln!(input, "-X {stale}");
        }
        input.push_str("COMMIT\n");
        run("iptables-restore", &["-w", "--noflush"], Some(&input)).await?;
        self.applied = Some(want);
        if !self.hooked {
            self.hook().await?;
            self.serve_localhost().await;
            self.hooked = true;
        }
        Ok(true)
    }

    async fn existing_chains(&self) -> Result<BTreeSet<String>, KernelError> {
        let saved = run("iptables-save", &["-t", "nat"], None).await?;
        Ok(saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| self.chains.owns(c))
            .map(str::to_owned)
            .collect())
    }

    /// Adds the jumps from the built-in chains, first in each (before rules of other tools
    /// that might accept or rewrite the packet).
    async fn hook(&self) -> Result<(), KernelError> {
        let comment = self.chains.comment();
        for (builtin, target) in self.chains.hooks() {
            let spec = ["-m", "comment", "--comment", comment.as_str(), "-j", target.as_str()];
            let check: Vec<&str> = ["-w", "-t", "nat", "-C", builtin].iter().copied().chain(spec).collect();
            if run("iptables", &check, None).await.is_err() {
                let insert: Vec<&str> = ["-w", "-t", "nat", "-I", builtin, "1"].iter().copied().chain(spec).collect();
                run("iptables", &insert, None).await?;
            }
        }
        Ok(())
    }

    /// Lets NodePorts answer on 127.0.0.1 too, as kube-proxy does: the kernel may then route
    /// DNATed packets whose source is a loopback address (`route_localnet`, which the
    /// masquerade rule rewrites on the way out), and a filter rule drops what that would
    /// otherwise let in: packets from elsewhere claiming a loopback destination. Without
    /// either, NodePorts still answer on every other local address.
    async fn serve_localhost(&self) {
        let guard = self.chains.localnet_guard();
        let comment = self.chains.comment();
        let input = format!(
            "*filter\n:{guard} - [0:0]\n-A {guard} ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"{comment}: loopback from elsewhere\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\nCOMMIT\n"
        );
        let spec = ["-m", "comment", "--comment", comment.as_str(), "-j", guard.as_str()];
        let check: Vec<&str> = ["-w", "-t", "filter", "-C", "INPUT"].iter().copied().chain(spec).collect();
        let insert: Vec<&str> = ["-w", "-t", "filter", "-I", "INPUT", "1"].iter().copied().chain(spec).collect();
        let guarded = match run("iptables-restore", &["-w", "--noflush"], Some(&input)).await {
            Ok(_) if run("iptables", &check, None).await.is_ok() => Ok(()),
            Ok(_) => run("iptables", &insert, None).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let result = match guarded {
            Ok(()) => std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1").map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "NodePorts will not answer on 127.0.0.1");
        }
    }

    /// Drops the conntrack entries of UDP flows that a change leaves pointing the wrong way:
    /// flows to endpoints that left the Service, and flows that reached a frontend while it
    /// had no endpoint (they would keep missing the new ones).
    pub async fn flush_udp(&self, frontend: &Frontend, gone: &[SocketAddr], was_empty: bool) {
        let port = frontend.addr.port().to_string();
        let ip = frontend.addr.ip();
        let mut base: Vec<String> = vec!["-D".into(), "-p".into(), "udp".into()];
        if !ip.is_unspecified() {
            base.extend(["--orig-dst".into(), ip.to_string()]);
        }
        base.extend(["--orig-port-dst".into(), port]);
        let mut commands = Vec::new();
        if was_empty {
            commands.push(base.clone());
        }
        for endpoint in gone {
            let mut args = base.clone();
            args.extend(["--dst-nat".into(), endpoint.ip().to_string()]);
            commands.push(args);
        }
        for args in commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // conntrack exits 1 when nothing matched; that is fine.
            if let Err(KernelError::Spawn { source, .. }) = run("conntrack", &args, None).await {
                tracing::debug!(error = %source, "conntrack not available; stale UDP flows expire on their own");
            }
        }
    }
}

/// Removes every rule and chain of the server whose service interface is `interface`
/// (at shutdown, or to clean up after a server that died). Missing ones are fine.
pub async fn remove_rules(interface: &str) -> Result<(), KernelError> {
    let chains = Chains::for_interface(interface);
    let comment = chains.comment();
    for (builtin, target) in chains.hooks() {
        let spec = ["-m", "comment", "--comment", comment.as_str(), "-j", target.as_str()];
        let delete: Vec<&str> = ["-w", "-t", "nat", "-D", builtin].iter().copied().chain(spec).collect();
        while run("iptables", &delete, None).await.is_ok() {}
    }
    // The loopback guard; route_localnet stays on, as kube-proxy leaves it.
    let guard = chains.localnet_guard();
    let spec = ["-m", "comment", "--comment", comment.as_str(), "-j", guard.as_str()];
    let delete: Vec<&str> = ["-w", "-t", "filter", "-D", "INPUT"].iter().copied().chain(spec).collect();
    while run("iptables", &delete, None).await.is_ok() {}
    for action in ["-F", "-X"] {
        let _ = run("iptables", &["-w", "-t", "filter", action, guard.as_str()], None).await;
    }
    let kernel = Kernel::new(interface, "0.0.0.0/0");
    let existing = kernel.existing_chains().await?;
    if existing.is_empty() {
        return Ok(());
    }
    let mut input = String::from("*nat\n");
    for chain in &existing {
        let _ = writeln!(input, ":{chain} - [0:0]");
    }
    for chain in &existing {
        let _ = writeln!(input, "-X {chain}");
    }
    input.push_str("COMMIT\n");
    run("iptables-restore", &["-w", "--noflush"], Some(&input)).await.map(|_| ())
}

/// Whether `frontend` (a LoadBalancer address on the node) is already served by a local
/// listener of another program, such as Berth's HTTP router on port 80: DNAT would silently
/// steal its traffic, so the Service must wait instead.
pub fn held_by_listener(frontend: &Frontend) -> bool {
    let held = |e: std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    match frontend.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(frontend.addr).err().is_some_and(held),
        Protocol::Udp => std::net::UdpSocket::bind(frontend.addr).err().is_some_and(held),
    }
}

/// Whether the kernel can carry traffic to `endpoint`: loopback addresses cannot be DNAT
/// targets for traffic from pods, so those Service ports stay in user space.
pub fn reachable_by_dnat(endpoint: &SocketAddr) -> bool {
    match endpoint.ip() {
        IpAddr::V4(ip) => !ip.is_loopback() && ip != Ipv4Addr::UNSPECIFIED,
        IpAddr::V6(_) => false,
    }
}

async fn run(program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, KernelError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| KernelError::Spawn { program, source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the program's own failure.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| KernelError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: "timed out".into(),
        })?
        .map_err(|source| KernelError::Spawn { program, source })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(KernelError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(name: &str, protocol: Protocol) -> ServicePortKey {
        ServicePortKey { namespace: "ns".into(), name: name.into(), port_name: "http".into(), protocol }
    }

    #[test]
    fn spreads_over_endpoints_with_falling_probabilities() {
        let chains = Chains::for_interface("bsv7");
        let k = key("web", Protocol::Tcp);
        let endpoints: Vec<SocketAddr> =
            ["10.180.7.2:80", "10.180.7.3:80", "10.180.7.4:80"].iter().map(|s| s.parse().unwrap()).collect();
        let backends = BTreeMap::from([(k.clone(), BackendSpec { endpoints: endpoints.clone(), affinity: None })]);
        let routes = vec![
            KernelRoute {
                frontend: Frontend { protocol: Protocol::Tcp, addr: "10.181.7.20:80".parse().unwrap() },
                kind: FrontendKind::ClusterIp,
                key: k.clone(),
            },
            KernelRoute {
                frontend: Frontend { protocol: Protocol::Tcp, addr: "0.0.0.0:30140".parse().unwrap() },
                kind: FrontendKind::NodePort,
                key: k.clone(),
            },
        ];
        let rules = ruleset(&chains, "10.180.7.0/24", &routes, &backends);
        let svc = chains.service(&k);
        let text = rules.rules.join("\n");
        assert!(text.contains("-d 10.181.7.20/32 -p tcp -m tcp --dport 80 ! -s 10.180.7.0/24"), "{text}");
        assert!(text.contains(&format!(
            "-A BRT-bsv7-NP -p tcp -m tcp --dport 30140 -m comment --comment \"ns/web:http\" -j {svc}"
        )));
        assert!(text.contains("--probability 0.33333333333"));
        assert!(text.contains("--probability 0.50000000000"));
        assert!(text.contains("-j DNAT --to-destination 10.180.7.4:80"));
        assert_eq!(rules.chains.iter().filter(|c| c.starts_with("BRT-bsv7-E")).count(), 3);
        assert!(rules.chains.iter().all(|c| c.len() <= 28 && chains.owns(c)));
        assert!(!Chains::for_interface("bsv70").owns(&svc));
    }

    #[test]
    fn affinity_and_empty_backends() {
        let chains = Chains::for_interface("berth-svc");
        let sticky = key("sticky", Protocol::Udp);
        let empty = key("empty", Protocol::Tcp);
        let backends = BTreeMap::from([
            (
                sticky.clone(),
                BackendSpec {
                    endpoints: vec!["10.88.0.5:53".parse().unwrap()],
                    affinity: Some(Duration::from_secs(600)),
                },
            ),
            (empty.clone(), BackendSpec { endpoints: vec![], affinity: None }),
        ]);
        let route = |k: &ServicePortKey, addr: &str, protocol| KernelRoute {
            frontend: Frontend { protocol, addr: addr.parse().unwrap() },
            kind: FrontendKind::ClusterIp,
            key: k.clone(),
        };
        let routes =
            vec![route(&sticky, "10.96.0.30:53", Protocol::Udp), route(&empty, "10.96.0.31:80", Protocol::Tcp)];
        let rules = ruleset(&chains, "10.88.0.0/16", &routes, &backends);
        let text = rules.rules.join("\n");
        assert!(text.contains("--rcheck --seconds 600 --reap"), "{text}");
        assert!(text.contains("-p udp -m udp -m recent --name"), "{text}");
        assert!(!text.contains("10.96.0.31"), "no endpoints, no rule: {text}");
        assert!(!rules.chains.contains(&chains.service(&empty)));
    }
}
