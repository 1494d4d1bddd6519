//! Resource usage of the pods this node runs and of the node itself: CPU time, memory
//! working set and block I/O from each container's cgroup (v1, v2 or hybrid layouts), bytes
//! used by its root filesystem, network counters of the pod's namespace (read through
//! `/proc/<init>/net/dev` of a process inside it), and the machine's CPU and memory from
//! `/proc`. [`Sampler`] keeps the last readings so CPU can be reported as a rate over a
//! window, as metrics-server and cAdvisor do.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use crate::cgroups::CgroupMounts;
use crate::runtime::ContainerRecord;
use crate::sandbox::Sandbox;
use crate::shim;

/// Counters of one running container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerStats {
    pub name: String,
    /// runc's container ID.
    pub id: String,
    pub image: String,
    /// The cgroup path (cAdvisor's `id` label).
    pub cgroup: String,
    pub cpu_usage_ns: u64,
    /// Usage minus inactive file cache: what the kernel cannot simply drop (cAdvisor's rule).
    pub memory_working_set: u64,
    pub memory_usage: u64,
    pub memory_rss: u64,
    pub fs_usage_bytes: u64,
    pub fs_reads_bytes: u64,
    pub fs_writes_bytes: u64,
    /// Seconds since the epoch.
    pub start_time: f64,
}

/// Counters of a pod's network namespace, summed over its interfaces but `lo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodStats {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerStats>,
    pub network: Option<NetworkStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineStats {
    /// CPU time spent not idle, all CPUs.
    pub cpu_usage_ns: u64,
    pub cpus: u32,
    pub memory_total: u64,
    /// Total minus available.
    pub memory_working_set: u64,
}

/// One reading of everything.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Timestamp,
    at: Instant,
    pub pods: Vec<PodStats>,
    pub machine: MachineStats,
}

/// Where to read: the node's data dir and the cgroup mounts.
#[derive(Debug, Clone)]
pub struct Reader {
    data_dir: PathBuf,
    cgroup_parent: String,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
    /// The v2 hierarchy, used for whatever has no v1 controller.
    unified: Option<PathBuf>,
}

impl Reader {
    pub fn new(data_dir: &Path, cgroup_parent: &str) -> Reader {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::from_mountinfo(data_dir, cgroup_parent, &text)
    }

    fn from_mountinfo(data_dir: &Path, cgroup_parent: &str, mountinfo: &str) -> Reader {
        let mut reader = Reader {
            data_dir: data_dir.to_owned(),
            cgroup_parent: cgroup_parent.trim_end_matches('/').to_owned(),
            cpuacct: None,
            memory: None,
            blkio: None,
            unified: None,
        };
        for (mount_point, fstype, options) in CgroupMounts::cgroup_mounts(mountinfo) {
            if fstype == "cgroup2" {
                reader.unified = Some(mount_point);
                continue;
            }
            for option in options.split(',') {
                match option {
                    "cpuacct" => reader.cpuacct = Some(mount_point.clone()),
                    "memory" => reader.memory = Some(mount_point.clone()),
                    "blkio" => reader.blkio = Some(mount_point.clone()),
                    _ => {}
                }
            }
        }
        reader
    }

    /// Reads every running container of every pod on disk, and the machine.
    pub fn snapshot(&self) -> Snapshot {
        let mut pods = Vec::new();
        for uid in crate::layout::pod_uids(&self.data_dir) {
            let sandbox_dir = crate::layout::sandbox_dir(&self.data_dir, &uid);
            let Some(sandbox) = std::fs::read(sandbox_dir.join("sandbox.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Sandbox>(&bytes).ok())
            else {
                continue;
            };
            if let Some(pod) = self.pod(&uid, sandbox) {
                pods.push(pod);
            }
        }
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Snapshot { taken: Timestamp::now(), at: Instant::now(), pods, machine: machine() }
    }

    fn pod(&self, uid: &str, sandbox: Sandbox) -> Option<PodStats> {
        let mut newest: HashMap<String, (ContainerRecord, PathBuf)> = HashMap::new();
        for state_dir in crate::layout::container_state_dirs(&self.data_dir, uid) {
            if state_dir.join(shim::EXIT_FILE).exists() {
                continue;
            }
            let Some(record) = std::fs::read(state_dir.join("container.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ContainerRecord>(&bytes).ok())
            else {
                continue;
            };
            if newest.get(&record.name).is_none_or(|(r, _)| r.attempt < record.attempt) {
                newest.insert(record.name.clone(), (record, state_dir));
            }
        }
        if newest.is_empty() {
            return None;
        }
        let pod_cgroup = format!("{}/pod{}", self.cgroup_parent, sandbox.uid);
        let mut network = None;
        let mut containers: Vec<ContainerStats> = newest
            .into_values()
            .map(|(record, state_dir)| {
                if network.is_none() && record.init_pid > 0 {
                    network = std::fs::read_to_string(format!("/proc/{}/net/dev", record.init_pid))
                        .ok()
                        .map(|text| parse_net_dev(&text));
                }
                let cgroup = format!("{pod_cgroup}/{}", record.name);
                let mut stats = self.cgroup(&cgroup);
                stats.name = record.name.clone();
                stats.id = record.id.clone();
                stats.image = record.image.clone();
                // What the container wrote: its layer on disk (containers started before
                // layers moved there keep theirs in the bundle).
                let layer = crate::layout::layer_dir(&self.data_dir, uid, &record.name, record.attempt);
                let written = if layer.exists() { layer } else { state_dir.join("rootfs") };
                stats.fs_usage_bytes = disk_usage(&written);
                stats.start_time =
                    record.started_at.parse::<Timestamp>().map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
                stats
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Some(PodStats { uid: sandbox.uid, namespace: sandbox.namespace, name: sandbox.name, containers, network })
    }

    /// The counters of cgroup `path` (as in the OCI `cgroupsPath`).
    fn cgroup(&self, path: &str) -> ContainerStats {
        let relative = path.trim_start_matches('/');
        let v1 = |mount: &Option<PathBuf>, file: &str| mount.as_ref().map(|m| m.join(relative).join(file));
        let v2 = |file: &str| self.unified.as_ref().map(|m| m.join(relative).join(file));
        let read = |file: Option<PathBuf>| file.and_then(|f| std::fs::read_to_string(f).ok());
        let mut stats = ContainerStats { cgroup: path.to_owned(), ..Default::default() };
        stats.cpu_usage_ns = match read(v1(&self.cpuacct, "cpuacct.usage")) {
            Some(text) => text.trim().parse().unwrap_or(0),
            None => read(v2("cpu.stat")).and_then(|text| keyed(&text, "usage_usec")).unwrap_or(0) * 1000,
        };
        let (usage, stat, inactive_key, rss_key) = match read(v1(&self.memory, "memory.usage_in_bytes")) {
            Some(usage) => (Some(usage), read(v1(&self.memory, "memory.stat")), "total_inactive_file", "total_rss"),
            None => (read(v2("memory.current")), read(v2("memory.stat")), "inactive_file", "anon"),
        };
        stats.memory_usage = usage.and_then(|u| u.trim().parse().ok()).unwrap_or(0);
        let stat = stat.unwrap_or_default();
        let inactive = keyed(&stat, inactive_key).unwrap_or(0);
        stats.memory_working_set = stats.memory_usage.saturating_sub(inactive);
        stats.memory_rss = keyed(&stat, rss_key).unwrap_or(0);
        match read(v1(&self.blkio, "blkio.throttle.io_service_bytes")) {
            Some(text) => {
                for line in text.lines() {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if let [_device, op, value] = fields.as_slice() {
                        let value: u64 = value.parse().unwrap_or(0);
                        match *op {
                            "Read" => stats.fs_reads_bytes += value,
                            "Write" => stats.fs_writes_bytes += value,
                            _ => {}
                        }
                    }
                }
            }
            None => {
                for line in read(v2("io.stat")).unwrap_or_default().lines() {
                    for field in line.split_whitespace().skip(1) {
                        match field.split_once('=') {
                            Some(("rbytes", v)) => stats.fs_reads_bytes += v.parse::<u64>().unwrap_or(0),
                            Some(("wbytes", v)) => stats.fs_writes_bytes += v.parse::<u64>().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
        }
        stats
    }
}

/// `key value` lines (`memory.stat`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sums `/proc/net/dev` over every interface but loopback.
fn parse_net_dev(text: &str) -> NetworkStats {
    let mut stats = NetworkStats::default();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let n: Vec<u64> = counters.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        if n.len() < 12 {
            continue;
        }
        stats.rx_bytes += n[0];
        stats.rx_packets += n[1];
        stats.rx_errors += n[2];
        stats.rx_dropped += n[3];
        stats.tx_bytes += n[8];
        stats.tx_packets += n[9];
        stats.tx_errors += n[10];
        stats.tx_dropped += n[11];
    }
    stats
}

/// Bytes used by files under `dir`, staying on its filesystem (volumes and the host's
/// directories are mounted only inside the container, so they are not seen here).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(root) = std::fs::symlink_metadata(dir) else { return 0 };
    let device = root.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            // Never follows symbolic links: they may point anywhere on the host, even above.
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

fn machine() -> MachineStats {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    machine_from(&stat, &meminfo, rustix::param::clock_ticks_per_second())
}

fn machine_from(stat: &str, meminfo: &str, ticks_per_second: u64) -> MachineStats {
    let mut machine = MachineStats::default();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: Vec<u64> = fields.map(|v| v.parse().unwrap_or(0)).collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                let busy: u64 =
                    ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
                machine.cpu_usage_ns = busy.saturating_mul(1_000_000_000 / ticks_per_second.max(1));
            }
            Some(name) if name.starts_with("cpu") => machine.cpus += 1,
            _ => {}
        }
    }
    let kib = |key: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok().map(|v| v * 1024)
        })
    };
    machine.memory_total = kib("MemTotal").unwrap_or(0);
    machine.memory_working_set = machine.memory_total.saturating_sub(kib("MemAvailable").unwrap_or(0));
    machine
}

/// CPU rates and memory of a container over the window between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    /// Cores × 10⁹ (upstream's `n` unit of a CPU quantity).
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub timestamp: Timestamp,
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineUsage {
    pub timestamp: Timestamp,
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

fn rate(newer: u64, older: u64, window: Duration) -> u64 {
    let seconds = window.as_secs_f64();
    if seconds <= 0.0 {
        return 0;
    }
    (newer.saturating_sub(older) as f64 / seconds) as u64
}

/// Keeps recent snapshots; readers get rates over the longest window kept.
pub struct Sampler {
    reader: Reader,
    kept: Mutex<VecDeque<Arc<Snapshot>>>,
    keep: usize,
}

impl Sampler {
    /// Keeps `keep` snapshots (at least two): rates cover `keep - 1` sampling intervals.
    pub fn new(reader: Reader, keep: usize) -> Sampler {
        Sampler { reader, kept: Mutex::new(VecDeque::new()), keep: keep.max(2) }
    }

    /// Takes a snapshot now (blocking file reads).
    pub fn sample(&self) {
        let snapshot = Arc::new(self.reader.snapshot());
        tracing::debug!(pods = snapshot.pods.len(), "usage sampled");
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back(snapshot);
        while kept.len() > self.keep {
            kept.pop_front();
        }
    }

    /// Samples every `interval` until the task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            let sampler = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || sampler.sample()).await;
            tokio::time::sleep(interval).await;
        }
    }

    fn ends(&self) -> Option<(Arc<Snapshot>, Arc<Snapshot>)> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let (oldest, newest) = (kept.front()?, kept.back()?);
        (kept.len() >= 2).then(|| (Arc::clone(oldest), Arc::clone(newest)))
    }

    /// The newest snapshot, for counters.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).back().cloned()
    }

    /// Usage of every pod seen in both ends of the window (as metrics-server, which needs two
    /// readings of a container to report it).
    pub fn pods(&self) -> Vec<PodUsage> {
        let Some((older, newer)) = self.ends() else { return Vec::new() };
        let window = newer.at.duration_since(older.at);
        let before: HashMap<(&str, &str), &ContainerStats> = older
            .pods
            .iter()
            .flat_map(|p| p.containers.iter().map(move |c| ((p.uid.as_str(), c.id.as_str()), c)))
            .collect();
        newer
            .pods
            .iter()
            .filter_map(|pod| {
                let containers: Vec<ContainerUsage> = pod
                    .containers
                    .iter()
                    .filter_map(|c| {
                        let old = before.get(&(pod.uid.as_str(), c.id.as_str()))?;
                        Some(ContainerUsage {
                            name: c.name.clone(),
                            cpu_nanocores: rate(c.cpu_usage_ns, old.cpu_usage_ns, window),
                            memory_bytes: c.memory_working_set,
                        })
                    })
                    .collect();
                (!containers.is_empty()).then(|| PodUsage {
                    uid: pod.uid.clone(),
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    timestamp: newer.taken,
                    window,
                    containers,
                })
            })
            .collect()
    }

    pub fn machine(&self) -> Option<MachineUsage> {
        let (older, newer) = self.ends()?;
        let window = newer.at.duration_since(older.at);
        Some(MachineUsage {
            timestamp: newer.taken,
            window,
            cpu_nanocores: rate(newer.machine.cpu_usage_ns, older.machine.cpu_usage_ns, window),
            memory_bytes: newer.machine.memory_working_set,
        })
    }
}

/// The snapshot's counters as Prometheus series named as cAdvisor names them (labels
/// `namespace`, `pod`, `container`, `id`, `image`, `name`), one OpenMetrics text document.
/// Pod-level network series carry `container=""` and `interface`, as kubelet's do.
pub fn encode_prometheus(snapshot: &Snapshot) -> String {
    use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
    use std::sync::atomic::AtomicU64;
    type Labels = Vec<(String, String)>;
    type CounterF = Family<Labels, Counter<f64, AtomicU64>>;
    type GaugeF = Family<Labels, Gauge<f64, AtomicU64>>;

    let mut registry = prometheus_client::registry::Registry::default();
    let counter = |registry: &mut prometheus_client::registry::Registry, name: &str, help: &str| {
        let family = CounterF::default();
        registry.register(name, help, family.clone());
        family
    };
    let gauge = |registry: &mut prometheus_client::registry::Registry, name: &str, help: &str| {
        let family = GaugeF::default();
        registry.register(name, help, family.clone());
        family
    };
    let cpu = counter(&mut registry, "container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds");
    let working_set = gauge(&mut registry, "container_memory_working_set_bytes", "Current working set in bytes");
    let memory_usage = gauge(
        &mut registry,
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
    );
    let rss = gauge(&mut registry, "container_memory_rss", "Size of RSS in bytes");
    let fs_usage = gauge(
        &mut registry,
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem",
    );
    let fs_reads = counter(&mut registry, "container_fs_reads_bytes", "Cumulative count of bytes read");
    let fs_writes = counter(&mut registry, "container_fs_writes_bytes", "Cumulative count of bytes written");
    let start =
        gauge(&mut registry, "container_start_time_seconds", "Start time of the container since unix epoch in seconds");
    let rx = counter(&mut registry, "container_network_receive_bytes", "Cumulative count of bytes received");
    let tx = counter(&mut registry, "container_network_transmit_bytes", "Cumulative count of bytes transmitted");
    let rx_packets =
        counter(&mut registry, "container_network_receive_packets", "Cumulative count of packets received");
    let tx_packets =
        counter(&mut registry, "container_network_transmit_packets", "Cumulative count of packets transmitted");
    let rx_errors = counter(
        &mut registry,
        "container_network_receive_errors",
        "Cumulative count of errors encountered while receiving",
    );
    let tx_errors = counter(
        &mut registry,
        "container_network_transmit_errors",
        "Cumulative count of errors encountered while transmitting",
    );
    let rx_dropped = counter(
        &mut registry,
        "container_network_receive_packets_dropped",
        "Cumulative count of packets dropped while receiving",
    );
    let tx_dropped = counter(
        &mut registry,
        "container_network_transmit_packets_dropped",
        "Cumulative count of packets dropped while transmitting",
    );
    let machine_cores = Gauge::<f64, AtomicU64>::default();
    registry.register("machine_cpu_cores", "Number of logical CPU cores", machine_cores.clone());
    let machine_memory = Gauge::<f64, AtomicU64>::default();
    registry.register("machine_memory_bytes", "Amount of memory installed on the machine", machine_memory.clone());

    for pod in &snapshot.pods {
        for c in &pod.containers {
            let labels: Labels = vec![
                ("container".to_owned(), c.name.clone()),
                ("id".to_owned(), c.cgroup.clone()),
                ("image".to_owned(), c.image.clone()),
                ("name".to_owned(), c.id.clone()),
                ("namespace".to_owned(), pod.namespace.clone()),
                ("pod".to_owned(), pod.name.clone()),
            ];
            cpu.get_or_create(&labels).inc_by(c.cpu_usage_ns as f64 / 1e9);
            working_set.get_or_create(&labels).set(c.memory_working_set as f64);
            memory_usage.get_or_create(&labels).set(c.memory_usage as f64);
            rss.get_or_create(&labels).set(c.memory_rss as f64);
            fs_usage.get_or_create(&labels).set(c.fs_usage_bytes as f64);
            fs_reads.get_or_create(&labels).inc_by(c.fs_reads_bytes as f64);
            fs_writes.get_or_create(&labels).inc_by(c.fs_writes_bytes as f64);
            start.get_or_create(&labels).set(c.start_time);
        }
        if let Some(net) = &pod.network {
            let labels: Labels = vec![
                ("container".to_owned(), String::new()),
                ("interface".to_owned(), "eth0".to_owned()),
                ("namespace".to_owned(), pod.namespace.clone()),
                ("pod".to_owned(), pod.name.clone()),
            ];
            for (family, value) in [
                (&rx, net.rx_bytes),
                (&tx, net.tx_bytes),
                (&rx_packets, net.rx_packets),
                (&tx_packets, net.tx_packets),
                (&rx_errors, net.rx_errors),
                (&tx_errors, net.tx_errors),
                (&rx_dropped, net.rx_dropped),
                (&tx_dropped, net.tx_dropped),
            ] {
                family.get_or_create(&labels).inc_by(value as f64);
            }
        }
    }
    machine_cores.set(f64::from(snapshot.machine.cpus));
    machine_memory.set(snapshot.machine.memory_total as f64);
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_controllers_in_a_hybrid_layout() {
        let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let reader = Reader::from_mountinfo(Path::new("/d"), "/berth/", mountinfo);
        assert_eq!(reader.cpuacct.as_deref(), Some(Path::new("/sys/fs/cgroup/cpuacct")));
        assert_eq!(reader.memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(reader.blkio.as_deref(), Some(Path::new("/sys/fs/cgroup/blkio")));
        assert_eq!(reader.unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(reader.cgroup_parent, "/berth");
    }

    #[test]
    fn reads_v2_counters() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("berth/podu/web");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "10000\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 6000\nfile 4000\ninactive_file 3000\n").unwrap();
        std::fs::write(dir.join("io.stat"), "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n").unwrap();
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", root.path().display());
        let reader = Reader::from_mountinfo(Path::new("/d"), "/berth", &mountinfo);
        let stats = reader.cgroup("/berth/podu/web");
        assert_eq!(stats.cpu_usage_ns, 2_500_000);
        assert_eq!((stats.memory_usage, stats.memory_working_set, stats.memory_rss), (10000, 7000, 6000));
        assert_eq!((stats.fs_reads_bytes, stats.fs_writes_bytes), (100, 200));
    }

    #[test]
    fn network_counters_skip_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    5000      10    1    2    0     0          0         0     3000       7    0    1    0     0       0          0
";
        let stats = parse_net_dev(text);
        assert_eq!((stats.rx_bytes, stats.rx_packets, stats.rx_errors, stats.rx_dropped), (5000, 10, 1, 2));
        assert_eq!((stats.tx_bytes, stats.tx_packets, stats.tx_dropped), (3000, 7, 1));
    }

    #[test]
    fn machine_cpu_and_memory() {
        let stat =
            "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 50 0 25 500 5 0 0 0 0 0\ncpu1 50 0 25 500 5 0 0 0 0 0\nintr 1\n";
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    600 kB\n";
        let machine = machine_from(stat, meminfo, 100);
        assert_eq!(machine.cpus, 2);
        assert_eq!(machine.cpu_usage_ns, 150 * 10_000_000);
        assert_eq!((machine.memory_total, machine.memory_working_set), (1_024_000, 409_600));
    }

    #[test]
    fn rates_need_two_readings() {
        assert_eq!(rate(3_000_000_000, 1_000_000_000, Duration::from_secs(4)), 500_000_000);
        assert_eq!(rate(1, 2, Duration::from_secs(1)), 0);
        assert_eq!(rate(5, 1, Duration::ZERO), 0);
    }

    #[test]
    fn prometheus_series_use_cadvisor_names() {
        let snapshot = Snapshot {
            taken: Timestamp::now(),
            at: Instant::now(),
            pods: vec![PodStats {
                uid: "u".into(),
                namespace: "default".into(),
                name: "web".into(),
                containers: vec![ContainerStats {
                    name: "nginx".into(),
                    cpu_usage_ns: 1_500_000_000,
                    memory_working_set: 4096,
                    ..Default::default()
                }],
                network: Some(NetworkStats { rx_bytes: 77, ..Default::default() }),
            }],
            machine: MachineStats { cpus: 2, ..Default::default() },
        };
        let text = encode_prometheus(&snapshot);
        assert!(text.contains("# TYPE container_cpu_usage_seconds counter"), "{text}");
        assert!(text.contains("container_cpu_usage_seconds_total{container=\"nginx\""), "{text}");
        assert!(text.contains("pod=\"web\"} 1.5"), "{text}");
        assert!(text.contains("container_memory_working_set_bytes{"), "{text}");
        assert!(text.contains("container_network_receive_bytes_total{container=\"\",interface=\"eth0\",namespace=\"default\",pod=\"web\"} 77"), "{text}");
        assert!(text.contains("machine_cpu_cores 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
