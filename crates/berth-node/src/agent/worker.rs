//! One task per pod bound to this node (kubelet's pod worker): it creates the sandbox, runs
//! init containers in order and then the containers, restarts them as `restartPolicy` and the
//! back-off say, acts on probe results, reports status, and on deletion stops everything,
//! cleans up and removes the pod object.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, LifecycleHandler, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus,
    Probe, Secret, Service,
};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::events::EventSink;
use super::node::Capacity;
use super::probe::{self, ProbeContext, ProbeKind, ProbeSignal, ProbeTask, ProbeUpdate};
use super::status::{self, ContainerInfo, PodView, State, Terminated};
use crate::crilog::{self, LogOptions};
use crate::runtime::{ContainerHandle, PodRun, PreparedStart, Runtime, RuntimeError};
use crate::sandbox::Sandbox;
use crate::shim::ExitRecord;
use crate::spec::{PodInputs, PodPlacement};
use crate::volumes::PreparedVolumes;

/// What every worker shares.
pub struct Shared {
    pub client: kube::Client,
    pub runtime: Arc<Runtime>,
    pub node_name: String,
    pub host_ip: String,
    pub capacity: Capacity,
    pub events: EventSink,
    pub drain: Option<crate::config::DrainHook>,
}

/// How often a running pod is looked at even when nothing happens (ConfigMap and Secret
/// volumes are refreshed then).
const RESYNC: Duration = Duration::from_secs(60);
/// Retry delay after a failed API call or sandbox set-up.
const RETRY: Duration = Duration::from_secs(5);
const DEFAULT_GRACE: i64 = 30;
/// How long a start's status waits for the container's first readiness verdict (a program
/// that serves within this gets one status write, `Running` and `Ready`, instead of two).
/// Against the start itself (tens of milliseconds) it delays no status noticeably.
const FIRST_READY_WAIT: Duration = Duration::from_millis(15);

/// The agent's end of a worker: send the newest pod, or `None` once it is gone from the API.
pub struct WorkerHandle {
    pub updates: watch::Sender<Option<Arc<Pod>>>,
}

/// Starts the worker of `pod`. `rejected` makes it report the pod as refused by admission.
/// When it has cleaned up after the pod's deletion it sends the UID on `done`.
pub fn spawn(
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    rejected: Option<(String, String)>,
    done: mpsc::UnboundedSender<String>,
) -> WorkerHandle {
    let (updates, receiver) = watch::channel(Some(pod.clone()));
    tokio::spawn(async move {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let worker = Worker::new(shared, pod, rejected);
        if worker.run(receiver).await == Outcome::Removed {
            let _ = done.send(uid);
        }
    });
    WorkerHandle { updates }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The pod was deleted and everything of it cleaned up.
    Removed,
    /// The agent is shutting down; the pod keeps running.
    Detached,
}

struct Running {
    handle: ContainerHandle,
    started_at: Timestamp,
    ready: bool,
    started: bool,
    /// Being killed (liveness or startup failure); its exit is on its way.
    killing: bool,
    _probes: Option<ProbeTask>,
}

struct Ended {
    terminated: Terminated,
    /// When it ended, on the monotonic clock (for back-off).
    finished: Instant,
}

/// One container of the pod and what happened to it so far.
struct Slot {
    spec: Container,
    running: Option<Running>,
    /// The last attempt that ended.
    last: Option<Ended>,
    /// The attempt that ended before `last`.
    previous: Option<Terminated>,
    /// Why it is not running (while waiting to start or restart).
    waiting: Option<(String, Option<String>)>,
    next_attempt: u32,
    backoff: Backoff,
    /// A failed start is retried no earlier than this.
    retry_at: Option<Instant>,
    /// Last time a BackOff event was sent, so there is one per back-off period.
    backoff_reported: Option<Instant>,
}

impl Slot {
    fn new(spec: Container) -> Slot {
        Slot {
            spec,
            running: None,
            last: None,
            previous: None,
            waiting: None,
            next_attempt: 0,
            backoff: Backoff::default(),
            retry_at: None,
            backoff_reported: None,
        }
    }

    fn restart_count(&self) -> u32 {
        self.next_attempt.saturating_sub(1)
    }

    fn succeeded(&self) -> bool {
        self.running.is_none() && self.last.as_ref().is_some_and(|l| l.terminated.exit_code == 0)
    }
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod: Arc<Pod>,
    pod_ref: ObjectReference,
    api: Api<Pod>,
    rejected: Option<(String, String)>,
    /// The pod had ended before this worker started (Berth restarted): never run it again.
    ended_before: bool,
    sandbox: Option<Sandbox>,
    inputs: Option<(PodInputs, PreparedVolumes)>,
    inputs_fetched: Option<Instant>,
    init: Vec<Slot>,
    containers: Vec<Slot>,
    exits: FuturesUnordered<BoxFuture<'static, (String, u32, ExitRecord)>>,
    probe_tx: mpsc::Sender<ProbeUpdate>,
    probe_rx: mpsc::Receiver<ProbeUpdate>,
    start_time: Timestamp,
    reported: Option<PodStatus>,
    wake_at: Instant,
    torn_down: bool,
    /// A container just started and its first readiness check is due within moments: the
    /// status waits for it until then, so `Running` and `Ready` go out in one write.
    report_held_until: Option<Instant>,
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".to_owned())
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// What an ended attempt looks like in the status. `fallback_to_logs`: the container's
/// `terminationMessagePolicy` is `FallbackToLogsOnError`.
fn terminated_from(
    runtime: &Runtime,
    record: &ExitRecord,
    handle: &ContainerHandle,
    started_at: Option<Timestamp>,
    fallback_to_logs: bool,
) -> Terminated {
    let reason = if record.oom_killed {
        "OOMKilled"
    } else if record.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut message = handle.termination_message();
    if message.is_none() && record.exit_code != 0 && fallback_to_logs {
        message = log_tail(runtime, handle);
    }
    if message.is_none() {
        message = record.error.clone();
    }
    Terminated {
        exit_code: record.exit_code,
        signal: record.signal,
        reason: reason.to_owned(),
        message,
        started_at: started_at.or_else(|| handle.record.started_at.parse().ok()),
        finished_at: record.finished_at.parse().unwrap_or_else(|_| Timestamp::now()),
        container_id: format!("{}://{}", handle.record.runtime, handle.record.id),
        image_id: handle.record.image_id().to_owned(),
    }
}

/// The end of the container's log, as upstream's `FallbackToLogsOnError` (80 lines, 2 KiB).
fn log_tail(runtime: &Runtime, handle: &ContainerHandle) -> Option<String> {
    let path = runtime.log_path(&handle.record.pod_uid, &handle.record.name, handle.record.attempt);
    let options = LogOptions { tail_lines: Some(80), ..Default::default() };
    let bytes = crilog::read_log(&path, &options).ok()?;
    let start = bytes.len().saturating_sub(2048);
    let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    (!text.is_empty()).then_some(text)
}

fn falls_back_to_logs(container: &Container) -> bool {
    container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Arc<Pod>, rejected: Option<(String, String)>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api = Api::namespaced(shared.client.clone(), &namespace);
        let spec = pod.spec.clone().unwrap_or_default();
        let (probe_tx, probe_rx) = mpsc::channel(64);
        let start_time =
            pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or_else(Timestamp::now);
        let ended_before =
            matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"));
        Worker {
            pod_ref: pod.object_ref(&()),
            api,
            uid,
            rejected,
            ended_before,
            sandbox: None,
            inputs: None,
            inputs_fetched: None,
            init: spec.init_containers.unwrap_or_default().into_iter().map(Slot::new).collect(),
            containers: spec.containers.into_iter().map(Slot::new).collect(),
            exits: FuturesUnordered::new(),
            probe_tx,
            probe_rx,
            start_time,
            reported: pod.status.clone(),
            wake_at: Instant::now() + RESYNC,
            torn_down: false,
            report_held_until: None,
            shared,
            pod,
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    async fn run(mut self, mut updates: watch::Receiver<Option<Arc<Pod>>>) -> Outcome {
        self.adopt().await;
        let mut gone = false;
        loop {
            if gone || self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate(gone).await;
                return Outcome::Removed;
            }
            self.sync().await;
            let wake = tokio::time::sleep_until(self.wake_at);
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        return Outcome::Detached;
                    }
                    let latest = updates.borrow_and_update().clone();
                    match latest {
                        Some(pod) => self.pod = pod,
                        None => gone = true,
                    }
                }
                Some((name, attempt, record)) = self.exits.next(), if !self.exits.is_empty() => {
                    self.on_exit(&name, attempt, record).await;
                }
                Some(update) = self.probe_rx.recv() => self.on_probe(update).await,
                _ = wake => {}
            }
        }
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Slot> {
        self.init.iter_mut().chain(self.containers.iter_mut()).find(|s| s.spec.name == name)
    }

    /// Finds containers of this pod that already run (Berth restarted).
    async fn adopt(&mut self) {
        if self.rejected.is_some() {
            return;
        }
        // After a reboot the record survives but the namespaces do not: build it anew then.
        self.sandbox = self.shared.runtime.sandbox(&self.uid).filter(|s| self.shared.runtime.sandbox_alive(s));
        let handles = self.shared.runtime.containers(&self.uid).await;
        let mut by_name: BTreeMap<String, Vec<ContainerHandle>> = BTreeMap::new();
        for handle in handles {
            by_name.entry(handle.record.name.clone()).or_default().push(handle);
        }
        let previous_ready: BTreeSet<String> = self
            .pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter(|s| s.ready)
            .filter_map(|s| s.container_id.clone())
            .collect();
        let now = Timestamp::now();
        for (name, mut attempts) in by_name {
            attempts.sort_by_key(|h| h.record.attempt);
            let Some(latest) = attempts.pop() else { continue };
            let before = attempts.pop();
            let pod_ip = self.sandbox.as_ref().map(|s| s.ip());
            let probe_context = pod_ip.map(|ip| self.probe_context(&latest, ip));
            let runtime = self.shared.runtime.clone();
            let Some(slot) = self.slot_mut(&name) else { continue };
            let fallback = falls_back_to_logs(&slot.spec);
            slot.next_attempt = latest.record.attempt + 1;
            let before =
                before.as_ref().and_then(|h| h.exit_record().map(|r| terminated_from(&runtime, &r, h, None, fallback)));
            let ended = |terminated: Terminated| {
                let elapsed = now.duration_since(terminated.finished_at).unsigned_abs();
                let finished = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
                Ended { terminated, finished }
            };
            match latest.exit_record() {
                Some(record) => {
                    slot.previous = before;
                    slot.last = Some(ended(terminated_from(&runtime, &record, &latest, None, fallback)));
                }
                None => {
                    // A running container's last state is the attempt before it, as when it
                    // was started by this process.
                    slot.last = before.map(ended);
                    let container_id = format!("{}://{}", latest.record.runtime, latest.record.id);
                    let started_at = latest.record.started_at.parse().unwrap_or(now);
                    let waiter = latest.clone();
                    self.exits.push(Box::pin(async move {
                        let record = waiter.wait().await;
                        (waiter.record.name.clone(), waiter.record.attempt, record)
                    }));
                    let probes = probe_context.map(probe::spawn);
                    if let Some(slot) = self.slot_mut(&name) {
                        slot.running = Some(Running {
                            ready: previous_ready.contains(&container_id),
                            started: true,
                            handle: latest,
                            started_at,
                            killing: false,
                            _probes: probes,
                        });
                    }
                }
            }
        }
        // After a reboot the run directory is empty but the logs on disk remain: carry on
        // after their attempts, so restart counts continue and no earlier log is overwritten.
        let data_dir = self.shared.runtime.data_dir().to_owned();
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if slot.next_attempt == 0
                && let Ok(files) = crate::crilog::log_files(&data_dir, &self.uid, &slot.spec.name)
                && let Some(newest) = files.iter().map(|(attempt, _)| *attempt).max()
            {
                slot.next_attempt = newest + 1;
            }
        }
    }

    fn probe_context(&self, handle: &ContainerHandle, pod_ip: std::net::Ipv4Addr) -> ProbeContext {
        let container = self
            .init
            .iter()
            .chain(self.containers.iter())
            .find(|s| s.spec.name == handle.record.name)
            .map(|s| s.spec.clone())
            .unwrap_or_default();
        ProbeContext {
            runtime: self.shared.runtime.clone(),
            handle: handle.clone(),
            container,
            pod_ip,
            pod_ref: self.pod_ref.clone(),
            events: self.shared.events.clone(),
            updates: self.probe_tx.clone(),
        }
    }

    fn wake_within(&mut self, delay: Duration) {
        let at = Instant::now() + delay;
        if at < self.wake_at {
            self.wake_at = at;
        }
    }

    /// One pass of kubelet's `syncPod`: act, then report.
    async fn sync(&mut self) {
        self.wake_at = Instant::now() + RESYNC;
        if self.rejected.is_none() && !self.ended_before {
            self.act().await;
        }
        if self.report_held() {
            return;
        }
        self.report().await;
    }

    /// Whether the status waits for a first readiness verdict (see `report_held_until`).
    fn report_held(&mut self) -> bool {
        let Some(until) = self.report_held_until else { return false };
        let awaited = self.containers.iter().any(|slot| {
            slot.spec.readiness_probe.is_some() && slot.running.as_ref().is_some_and(|r| !r.ready && !r.killing)
        });
        let now = Instant::now();
        if awaited && now < until {
            self.wake_within(until - now);
            return true;
        }
        self.report_held_until = None;
        false
    }

    fn phase(&self) -> &'static str {
        status::phase(&self.pod, &self.infos(&self.init), &self.infos(&self.containers))
    }

    async fn act(&mut self) {
        let phase = self.phase();
        if phase == "Succeeded" || phase == "Failed" {
            if !self.torn_down && self.all_stopped() {
                // Like kubelet, free the sandbox (and the IP) of a finished pod right away.
                self.shared.runtime.teardown_sandbox(&self.uid).await;
                self.torn_down = true;
            }
            return;
        }
        // A first start: the container's move into its cgroup comes some milliseconds from now.
        let _warm = self.sandbox.is_none().then(|| self.shared.runtime.warm_cgroup_moves());
        // The sandbox (namespaces, veth) and the inputs (API reads, volumes) do not depend on
        // each other: make them at the same time. Nor does the preparation of the first
        // container (bundle, shim started and waiting): it needs only what the sandbox will be.
        let plan = match self.sandbox.is_none() {
            true => match self.shared.runtime.plan_sandbox(&self.pod).await {
                Ok(plan) => Some(plan),
                Err(error) => return self.sandbox_failed(&error),
            },
            false => None,
        };
        let refresh_due = self.inputs_fetched.is_none_or(|at| at.elapsed() >= RESYNC);
        let fetch_inputs = (self.inputs.is_none() || refresh_due).then(|| self.prepare_inputs());
        let early = plan.as_ref().and_then(|plan| {
            let (is_init, index) = self.first_start()?;
            let placement = PodPlacement { pod_ip: plan.sandbox.ip().to_string(), ..self.placement() };
            Some((is_init, index, self.pending_start(is_init, index, plan.sandbox.clone(), placement)))
        });
        let known_inputs = self.inputs.clone();
        let early_prepare = early.as_ref().map(|(_, _, start)| start.clone());
        // The first container is created (not started) as soon as it is prepared and the
        // pod's namespaces exist, while the sandbox task configures their network.
        let (namespaces_ready, namespaces_made) = tokio::sync::oneshot::channel();
        let inputs_then_first = async move {
            let fetched = OptionFuture::from(fetch_inputs).await;
            let inputs = match &fetched {
                Some(Ok(prepared)) => Some(prepared.clone()),
                Some(Err(_)) => None,
                None => known_inputs,
            };
            let prepared = match (early_prepare, inputs) {
                (Some(start), Some(inputs)) => {
                    let mut prepared = start.prepare(inputs).await;
                    // No word means the sandbox failed first: nothing is created.
                    if let Ok(prepared) = &mut prepared
                        && namespaces_made.await.is_ok()
                    {
                        prepared.create().await;
                    }
                    Some(prepared)
                }
                _ => None,
            };
            (fetched, prepared)
        };
        // A task of its own, so the preparation's file writes here do not hold it up.
        let make_sandbox = plan.map(|plan| {
            let (runtime, pod) = (self.shared.runtime.clone(), self.pod.clone());
            let task = tokio::spawn(async move { runtime.make_sandbox(&pod, plan, Some(namespaces_ready)).await });
            async move { task.await.unwrap_or_else(|error| Err(RuntimeError::Task(error.to_string()))) }
        });
        let (created, (fetched, prepared)) = tokio::join!(OptionFuture::from(make_sandbox), inputs_then_first);
        match fetched {
            Some(Ok(prepared)) => {
                self.inputs = Some(prepared);
                self.inputs_fetched = Some(Instant::now());
            }
            Some(Err(message)) => {
                self.shared.events.warning(&self.pod_ref, "FailedMount", message);
                self.wake_within(RETRY * 2);
            }
            None => {}
        }
        match created {
            Some(Err(error)) => {
                // The first container may be created already: its shim deletes it and exits
                // having started nothing; once it has, the pod's cgroup can go too, so the
                // retry starts clean.
                if let Some(Ok(prepared)) = prepared {
                    prepared.abandon().await;
                    self.shared.runtime.teardown_sandbox(&self.uid).await;
                }
                return self.sandbox_failed(&error);
            }
            Some(Ok(sandbox)) => self.sandbox = Some(sandbox),
            None => {}
        }
        if self.inputs.is_none() {
            return;
        }
        if let (Some((is_init, index, start)), Some(prepared)) = (early, prepared) {
            let result = match prepared {
                Ok(prepared) => self.shared.runtime.launch(prepared).await,
                Err(error) => Err(error),
            };
            let ip = self.sandbox.as_ref().map(Sandbox::ip).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            self.started(is_init, index, &start.container, start.attempt, ip, result).await;
        }

        // Init containers one after the other; containers only once they all succeeded.
        let mut index = 0;
        while index < self.init.len() {
            if self.init[index].succeeded() {
                index += 1;
                continue;
            }
            if self.init[index].running.is_none() {
                self.start_or_back_off(true, index).await;
            }
            for slot in &mut self.containers {
                if slot.running.is_none() && slot.last.is_none() {
                    slot.waiting = Some(("PodInitializing".to_owned(), None));
                }
            }
            return;
        }
        for index in 0..self.containers.len() {
            if self.containers[index].running.is_none() {
                self.start_or_back_off(false, index).await;
            }
        }
    }

    fn all_stopped(&self) -> bool {
        self.init.iter().chain(self.containers.iter()).all(|s| s.running.is_none())
    }

    /// Fetches the ConfigMaps and Secrets the pod refers to and sets up its volumes.
    fn prepare_inputs(&self) -> impl Future<Output = Result<(PodInputs, PreparedVolumes), String>> + Send + 'static {
        prepare_inputs(self.shared.clone(), self.pod.clone())
    }

    fn placement(&self) -> PodPlacement {
        PodPlacement {
            pod_ip: self.sandbox.as_ref().map(|s| s.ip().to_string()).unwrap_or_default(),
            host_ip: self.shared.host_ip.clone(),
            node_name: self.shared.node_name.clone(),
            node_cpu_millis: self.shared.capacity.cpu_millis,
            node_memory_bytes: self.shared.capacity.memory_bytes,
        }
    }

    /// Starts a container that is not running, unless its restart policy or back-off says
    /// to wait (or never to start again).
    async fn start_or_back_off(&mut self, is_init: bool, index: usize) {
        let policy = restart_policy(&self.pod);
        let pod_label = full_name(&self.pod);
        let now = Instant::now();
        let slot = if is_init { &mut self.init[index] } else { &mut self.containers[index] };
        if let Some(retry_at) = slot.retry_at
            && retry_at > now
        {
            let delay = retry_at - now;
            self.wake_within(delay);
            return;
        }
        if let Some(last) = &slot.last {
            let failed = last.terminated.exit_code != 0;
            // Init containers are restarted on failure unless the policy is Never.
            let restart = if is_init {
                failed && policy != "Never"
            } else {
                policy == "Always" || (policy == "OnFailure" && failed)
            };
            if !restart {
                slot.waiting = None;
                return;
            }
            if let Some(remaining) = slot.backoff.remaining(last.finished, now) {
                let delay = slot.backoff.delay().unwrap_or_default().as_secs();
                let name = slot.spec.name.clone();
                slot.waiting = Some((
                    "CrashLoopBackOff".to_owned(),
                    Some(format!("back-off {delay}s restarting failed container={name} pod={pod_label}")),
                ));
                let report = slot.backoff_reported.is_none_or(|at| at < last.finished);
                if report {
                    slot.backoff_reported = Some(now);
                    self.shared.events.warning(
                        &self.pod_ref,
                        "BackOff",
                        format!("Back-off restarting failed container {name} in pod {pod_label}"),
                    );
                }
                self.wake_within(remaining);
                return;
            }
            let finished = last.finished;
            slot.backoff.step(finished, now);
        }
        self.start(is_init, index).await;
    }

    async fn start(&mut self, is_init: bool, index: usize) {
        let Some(sandbox) = self.sandbox.clone() else { return };
        let Some(inputs) = self.inputs.clone() else { return };
        let start = self.pending_start(is_init, index, sandbox, self.placement());
        let result = match start.prepare(inputs).await {
            Ok(prepared) => {
                let _warm = self.shared.runtime.warm_cgroup_moves();
                self.shared.runtime.launch(prepared).await
            }
            Err(error) => Err(error),
        };
        self.started(is_init, index, &start.container, start.attempt, start.sandbox.ip(), result).await;
    }

    /// The next start of the container in slot `index`, in `sandbox` (made, or only planned).
    fn pending_start(&self, is_init: bool, index: usize, sandbox: Sandbox, placement: PodPlacement) -> PendingStart {
        let slot = if is_init { &self.init[index] } else { &self.containers[index] };
        PendingStart {
            shared: self.shared.clone(),
            pod: self.pod.clone(),
            pod_ref: self.pod_ref.clone(),
            container: slot.spec.clone(),
            attempt: slot.next_attempt,
            sandbox,
            placement,
        }
    }

    /// Which container the first start of the pod begins with, if it may start at once (no
    /// earlier attempt, no back-off): the first init container, or the first container.
    fn first_start(&self) -> Option<(bool, usize)> {
        let (is_init, slot) = match self.init.first() {
            Some(slot) => (true, slot),
            None => (false, self.containers.first()?),
        };
        let fresh = slot.running.is_none() && slot.last.is_none() && slot.retry_at.is_none();
        fresh.then_some((is_init, 0))
    }

    fn sandbox_failed(&mut self, error: &RuntimeError) {
        self.shared.events.warning(
            &self.pod_ref,
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: {error}"),
        );
        self.wake_within(RETRY);
    }

    /// Records the outcome of a container start: events, waiter, hooks, probes, the slot.
    async fn started(
        &mut self,
        is_init: bool,
        index: usize,
        container: &Container,
        attempt: u32,
        pod_ip: std::net::Ipv4Addr,
        result: Result<ContainerHandle, RuntimeError>,
    ) {
        let image = container.image.clone().unwrap_or_default();
        match result {
            Ok(handle) => {
                self.shared.events.normal(&self.pod_ref, "Created", format!("Created container: {}", container.name));
                self.shared.events.normal(&self.pod_ref, "Started", format!("Started container {}", container.name));
                let waiter = handle.clone();
                self.exits.push(Box::pin(async move {
                    let record = waiter.wait().await;
                    (waiter.record.name.clone(), waiter.record.attempt, record)
                }));
                // As kubelet: the postStart hook runs to completion before the container counts
                // as running; if it fails, the container is killed and restarted by its policy.
                let post_start = container.lifecycle.as_ref().and_then(|l| l.post_start.clone());
                let hook_failed = match post_start {
                    Some(hook) => {
                        let context = self.probe_context(&handle, pod_ip);
                        run_handler(&context, &hook, POST_START_TIMEOUT).await.err()
                    }
                    None => None,
                };
                if let Some(message) = &hook_failed {
                    tracing::info!(pod = %self.name(), container = %container.name, %message, "postStart hook failed");
                    // Upstream leaves the hook's output out of the event: it may hold secrets.
                    self.shared.events.warning(&self.pod_ref, "FailedPostStartHook", "PostStartHook failed".to_owned());
                    let runtime = self.shared.runtime.clone();
                    let (victim, grace) = (handle.clone(), self.grace_period(None));
                    // The exit arrives through the container's own waiter.
                    tokio::spawn(async move { runtime.stop_container(&victim, grace).await });
                }
                let probes = hook_failed.is_none().then(|| probe::spawn(self.probe_context(&handle, pod_ip)));
                let has_startup_probe = container.startup_probe.is_some();
                // Checked at once (no initial delay): its verdict may come before a write would.
                let quick_verdict = container
                    .readiness_probe
                    .as_ref()
                    .is_some_and(|probe| probe.initial_delay_seconds.unwrap_or(0) <= 0);
                if !is_init && probes.is_some() && !has_startup_probe && quick_verdict {
                    self.report_held_until.get_or_insert(Instant::now() + FIRST_READY_WAIT);
                }
                let slot = if is_init { &mut self.init[index] } else { &mut self.containers[index] };
                slot.next_attempt = attempt + 1;
                slot.waiting = None;
                slot.retry_at = None;
                slot.running = Some(Running {
                    started_at: handle.record.started_at.parse().unwrap_or_else(|_| Timestamp::now()),
                    handle,
                    ready: false,
                    started: !has_startup_probe,
                    killing: hook_failed.is_some(),
                    _probes: probes,
                });
                if attempt >= 2 {
                    self.shared.runtime.prune_attempts(&self.uid, &container.name, attempt - 1).await;
                }
            }
            Err(error) => {
                let retry = self.start_failure(is_init, index, &error, &image);
                self.wake_within(retry);
            }
        }
    }

    /// Records why a container could not start; returns when to try again.
    fn start_failure(&mut self, is_init: bool, index: usize, error: &RuntimeError, image: &str) -> Duration {
        let now = Instant::now();
        let slot = if is_init { &mut self.init[index] } else { &mut self.containers[index] };
        let reason = error.reason();
        let retry = match reason {
            "ErrImagePull" => {
                // Image pulls back off like restarts; the waiting reason says so.
                let backing_off =
                    slot.waiting.as_ref().is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff");
                slot.backoff.step(now, now);
                let waiting_reason = if backing_off { "ImagePullBackOff" } else { "ErrImagePull" };
                let message = if backing_off {
                    format!("Back-off pulling image \"{image}\": {error}")
                } else {
                    error.to_string()
                };
                slot.waiting = Some((waiting_reason.to_owned(), Some(message)));
                slot.backoff.delay().unwrap_or(RETRY)
            }
            _ => {
                slot.waiting = Some((reason.to_owned(), Some(error.to_string())));
                Duration::from_secs(10)
            }
        };
        slot.retry_at = Some(now + retry);
        let note = match reason {
            "ErrImagePull" => format!("Failed to pull image \"{image}\": {error}"),
            _ => format!("Error: {error}"),
        };
        self.shared.events.warning(&self.pod_ref, "Failed", note);
        retry
    }

    async fn on_exit(&mut self, name: &str, attempt: u32, record: ExitRecord) {
        let runtime = self.shared.runtime.clone();
        let Some(slot) = self.slot_mut(name) else { return };
        let Some(running) = slot.running.take_if(|r| r.handle.record.attempt == attempt) else { return };
        let fallback = falls_back_to_logs(&slot.spec);
        let terminated = terminated_from(&runtime, &record, &running.handle, Some(running.started_at), fallback);
        tracing::info!(
            pod = %running.handle.record.pod_uid,
            container = name,
            exit_code = record.exit_code,
            reason = %terminated.reason,
            "container ended"
        );
        slot.previous = slot.last.take().map(|l| l.terminated);
        slot.last = Some(Ended { terminated, finished: Instant::now() });
    }

    async fn on_probe(&mut self, update: ProbeUpdate) {
        let grace = self.grace_period(None);
        let runtime = self.shared.runtime.clone();
        let events = self.shared.events.clone();
        let pod_ref = self.pod_ref.clone();
        let Some(slot) = self.slot_mut(&update.container) else { return };
        let Some(running) = slot.running.as_mut().filter(|r| r.handle.record.attempt == update.attempt) else {
            return;
        };
        match update.signal {
            ProbeSignal::Started => running.started = true,
            ProbeSignal::Ready(ready) => running.ready = ready,
            ProbeSignal::Failed { kind, message: _ } => {
                if running.killing {
                    return;
                }
                running.killing = true;
                running.ready = false;
                let which = if kind == ProbeKind::Startup { "startup" } else { "liveness" };
                events.normal(
                    &pod_ref,
                    "Killing",
                    format!("Container {} failed {which} probe, will be restarted", update.container),
                );
                let probe = match kind {
                    ProbeKind::Startup => slot.spec.startup_probe.as_ref(),
                    _ => slot.spec.liveness_probe.as_ref(),
                };
                let grace = probe
                    .and_then(|p| p.termination_grace_period_seconds)
                    .map_or(grace, |s| Duration::from_secs(s.max(0) as u64));
                let handle = running.handle.clone();
                // The exit arrives through the container's own waiter.
                tokio::spawn(async move { runtime.stop_container(&handle, grace).await });
            }
        }
    }

    fn grace_period(&self, override_seconds: Option<i64>) -> Duration {
        let seconds = override_seconds
            .or(self.pod.metadata.deletion_grace_period_seconds)
            .or(self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(seconds.max(0) as u64)
    }

    fn infos(&self, slots: &[Slot]) -> Vec<ContainerInfo> {
        slots
            .iter()
            .map(|slot| {
                let image = slot.spec.image.clone().unwrap_or_default();
                let (state, last_terminated) = match (&slot.running, &slot.last, &slot.waiting) {
                    (Some(running), last, _) => (
                        State::Running {
                            started_at: running.started_at,
                            container_id: format!("{}://{}", running.handle.record.runtime, running.handle.record.id),
                        },
                        last.as_ref().map(|l| l.terminated.clone()),
                    ),
                    (None, Some(last), Some((reason, message))) => (
                        State::Waiting { reason: reason.clone(), message: message.clone() },
                        Some(last.terminated.clone()),
                    ),
                    (None, Some(last), None) => (State::Terminated(last.terminated.clone()), slot.previous.clone()),
                    (None, None, Some((reason, message))) => {
                        (State::Waiting { reason: reason.clone(), message: message.clone() }, None)
                    }
                    (None, None, None) => {
                        (State::Waiting { reason: "ContainerCreating".to_owned(), message: None }, None)
                    }
                };
                let image_id = match (&slot.running, &state, &last_terminated) {
                    (Some(running), _, _) => running.handle.record.image_id().to_owned(),
                    (None, State::Terminated(ended), _) => ended.image_id.clone(),
                    (None, _, Some(last)) => last.image_id.clone(),
                    (None, _, None) => String::new(),
                };
                ContainerInfo {
                    name: slot.spec.name.clone(),
                    image,
                    image_id,
                    state,
                    restart_count: slot.restart_count(),
                    last_terminated,
                    ready: slot.running.as_ref().is_some_and(|r| r.ready && r.started && !r.killing),
                    started: slot.running.as_ref().is_some_and(|r| r.started),
                }
            })
            .collect()
    }

    async fn report(&mut self) {
        if self.ended_before {
            return;
        }
        let view = PodView {
            pod: &self.pod,
            init_containers: self.infos(&self.init),
            containers: self.infos(&self.containers),
            sandbox_ready: self.sandbox.is_some() && !self.torn_down,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip().to_string()),
            host_ip: self.shared.host_ip.clone(),
            start_time: self.start_time,
            rejected: self.rejected.clone(),
            now: Timestamp::now(),
        };
        let status = status::pod_status(&view, self.reported.as_ref());
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        let patch = status::status_patch(&status);
        match self.api.patch_status(self.name(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::debug!(
                    target: "berth_node::runtime",
                    pod = %self.name(),
                    phase = ?status.phase,
                    ready = status::is_ready(&status),
                    "pod status written"
                );
                self.reported = Some(status)
            }
            Err(kube::Error::Api(response)) if response.code == 404 => {}
            Err(error) => {
                tracing::warn!(pod = %self.name(), %error, "cannot update pod status");
                self.wake_within(RETRY);
            }
        }
    }

    /// Stops every container (SIGTERM, grace period, SIGKILL), removes the pod's resources
    /// from the machine and, if the pod object still exists, deletes it for good.
    async fn terminate(&mut self, gone: bool) {
        let grace = self.grace_period(None);
        tracing::info!(pod = %self.name(), uid = %self.uid, ?grace, gone, "stopping pod");
        let deadline = Instant::now() + grace;
        let pod_ip = self.sandbox.as_ref().map(|sandbox| sandbox.ip());
        // New requests stop reaching the pod before it is asked to stop, so that none of
        // them meets a closing server; the wait spends part of the grace period.
        if let (Some(hook), Some(ip), false) = (&self.shared.drain, pod_ip, gone) {
            hook.0.drain(std::net::IpAddr::V4(ip), grace.min(MAX_DRAIN_WAIT)).await;
        }
        let grace = deadline.saturating_duration_since(Instant::now()).max(MIN_GRACE_AFTER_HOOK.min(grace));
        let mut running_now = Vec::new();
        for slot in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if let Some(running) = slot.running.take() {
                running_now.push((slot.spec.clone(), running));
            }
        }
        let mut stops = Vec::new();
        for (spec, running) in running_now {
            self.shared.events.normal(&self.pod_ref, "Killing", format!("Stopping container {}", spec.name));
            let runtime = self.shared.runtime.clone();
            let hook = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
            let context = match (hook.is_some(), pod_ip) {
                (true, Some(ip)) => Some(self.probe_context(&running.handle, ip)),
                _ => None,
            };
            stops.push(async move {
                let mut remaining = grace;
                if let (Some(hook), Some(context)) = (hook, context) {
                    run_pre_stop(&context, &hook, grace).await;
                    // The hook spends the grace period; the container still gets a moment after it.
                    remaining = deadline.saturating_duration_since(Instant::now()).max(MIN_GRACE_AFTER_HOOK);
                }
                runtime.stop_container(&running.handle, remaining).await
            });
        }
        futures::future::join_all(stops).await;
        if let Err(error) = self.shared.runtime.remove_pod(&self.uid).await {
            tracing::warn!(pod = %self.name(), %error, "cannot remove pod files");
        }
        tracing::info!(pod = %self.name(), uid = %self.uid, "pod stopped and removed");
        if !gone {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match self.api.delete(self.name(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(response)) if response.code == 404 || response.code == 409 => {}
                Err(error) => tracing::warn!(pod = %self.name(), %error, "cannot delete pod object"),
            }
        }
    }
}

/// The longest a terminating pod waits for the router to take it out of rotation.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Upstream gives a container at least this long after its preStop hook before SIGKILL.
const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// Kubelet bounds no hook but the pod's own lifetime; this keeps a hung postStart from
/// holding the pod worker forever.
const POST_START_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a lifecycle hook (exec, httpGet, tcpSocket or sleep) within `limit`.
async fn run_handler(context: &probe::ProbeContext, hook: &LifecycleHandler, limit: Duration) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(wanted.min(limit)).await;
        return Ok(());
    }
    let as_probe = Probe {
        exec: hook.exec.clone(),
        http_get: hook.http_get.clone(),
        tcp_socket: hook.tcp_socket.clone(),
        ..Probe::default()
    };
    match probe::check(context, &as_probe, limit).await {
        // Any answer at all is success for an httpGet hook (unlike a probe).
        Err(message) if hook.http_get.is_some() && message.starts_with("HTTP probe failed with statuscode") => Ok(()),
        other => other,
    }
}

/// Runs a container's preStop hook within `grace`; a failure is reported as a
/// `FailedPreStopHook` event and stopping goes on.
async fn run_pre_stop(context: &probe::ProbeContext, hook: &LifecycleHandler, grace: Duration) {
    if let Err(message) = run_handler(context, hook, grace).await {
        let container = &context.container.name;
        context.events.warning(
            &context.pod_ref,
            "FailedPreStopHook",
            format!("PreStopHook failed for container \"{container}\": {message}"),
        );
    }
}

/// A container start about to be prepared: any start, and the first container of a pod's
/// first start while its sandbox is made.
#[derive(Clone)]
struct PendingStart {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    pod_ref: ObjectReference,
    container: Container,
    attempt: u32,
    /// The sandbox, or as planned (its namespaces may not exist yet).
    sandbox: Sandbox,
    placement: PodPlacement,
}

impl PendingStart {
    /// Pulls the image if needed, then writes the bundle and starts the waiting shim.
    async fn prepare(&self, (inputs, volumes): (PodInputs, PreparedVolumes)) -> Result<PreparedStart, RuntimeError> {
        super::pull::ensure_image(&self.shared, &self.pod, &self.pod_ref, &self.container).await?;
        let run = PodRun {
            sandbox: &self.sandbox,
            pod: &self.pod,
            inputs: &inputs,
            volumes: &volumes,
            placement: &self.placement,
        };
        self.shared.runtime.prepare_container(&run, &self.container, self.attempt).await
    }
}

/// Fetches the ConfigMaps and Secrets `pod` refers to and sets up its volumes.
async fn prepare_inputs(shared: Arc<Shared>, pod: Arc<Pod>) -> Result<(PodInputs, PreparedVolumes), String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let (config_maps, secrets) = referenced_objects(&pod);
    let mut inputs = PodInputs::default();
    let config_map_api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &namespace);

    for name in config_maps {
        match config_map_api.get_opt(&name).await {
            Ok(Some(object)) => {
                inputs.config_maps.insert(name, object);
            }
            Ok(None) => {}
            Err(error) => return Err(format!("cannot read configmap \"{name}\": {error}")),
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(shared.client.clone(), &namespace);
    for name in secrets {
        match secret_api.get_opt(&name).await {
            Ok(Some(object)) => {
                inputs.secrets.insert(name, object);
            }
            Ok(None) => {}
            Err(error) => return Err(format!("cannot read secret \"{name}\": {error}")),
        }
    }
    // Service links: the pod's namespace (unless turned off) and the API server's service.
    let service_links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    if service_links {
        let service_api: Api<Service> = Api::namespaced(shared.client.clone(), &namespace);
        match service_api.list(&Default::default()).await {
            Ok(list) => inputs.services.extend(list.items),
            Err(error) => return Err(format!("cannot list services: {error}")),
        }
    }
    if !service_links || namespace != "default" {
        let default_services: Api<Service> = Api::namespaced(shared.client.clone(), "default");
        if let Ok(Some(kubernetes)) = default_services.get_opt("kubernetes").await {
            inputs.services.retain(|s| s.metadata.name.as_deref() != Some("kubernetes"));
            inputs.services.push(kubernetes);
        }
    }
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &namespace);
    let volume_api: Api<PersistentVolume> = Api::all(shared.client.clone());
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(source) = &volume.persistent_volume_claim else { continue };
        let name = &source.claim_name;
        let claim = match claim_api.get_opt(name).await {
            Ok(Some(claim)) => claim,
            Ok(None) => return Err(format!("persistentvolumeclaim \"{name}\" not found")),
            Err(error) => return Err(format!("cannot read persistentvolumeclaim \"{name}\": {error}")),
        };
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
        let Some(volume_name) = volume_name.filter(|_| bound) else {
            return Err(format!("persistentvolumeclaim \"{name}\" is not bound"));
        };
        let persistent_volume = volume_api
            .get(&volume_name)
            .await
            .map_err(|error| format!("cannot read persistentvolume \"{volume_name}\": {error}"))?;
        let spec = persistent_volume.spec.unwrap_or_default();
        let path = spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path));
        let Some(path) = path else {
            return Err(format!("persistentvolume \"{volume_name}\" has no hostPath or local source"));
        };
        inputs.claims.insert(name.clone(), std::path::PathBuf::from(path));
    }
    let volumes = shared.runtime.prepare_volumes(&pod, &inputs).map_err(|e| e.to_string())?;
    Ok((inputs, volumes))
}

/// Names of the ConfigMaps and Secrets a pod uses (volumes, env, envFrom).
pub fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else { return (config_maps, secrets) };
    for volume in spec.volumes.iter().flatten() {
        if let Some(source) = &volume.config_map {
            config_maps.insert(source.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(name);
        }
        for projection in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(source) = &projection.config_map {
                config_maps.insert(source.name.clone());
            }
            if let Some(source) = &projection.secret {
                secrets.insert(source.name.clone());
            }
        }
    }
    for container in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for source in container.env_from.iter().flatten() {
            if let Some(reference) = &source.config_map_ref {
                config_maps.insert(reference.name.clone());
            }
            if let Some(reference) = &source.secret_ref {
                secrets.insert(reference.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            let Some(source) = &var.value_from else { continue };
            if let Some(selector) = &source.config_map_key_ref {
                config_maps.insert(selector.name.clone());
            }
            if let Some(selector) = &source.secret_key_ref {
                secrets.insert(selector.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapVolumeSource, EnvFromSource, EnvVar, EnvVarSource, PodSpec, SecretKeySelector,
        SecretVolumeSource, Volume,
    };

    #[test]
    fn referenced_objects_cover_volumes_env_and_env_from() {
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource { name: "settings".into(), optional: None }),
                ..Default::default()
            }]),
            env: Some(vec![EnvVar {
                name: "PASSWORD".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "db".into(),
                        key: "password".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container],
                volumes: Some(vec![
                    Volume {
                        name: "site".into(),
                        config_map: Some(ConfigMapVolumeSource { name: "site".into(), ..Default::default() }),
                        ..Default::default()
                    },
                    Volume {
                        name: "tls".into(),
                        secret: Some(SecretVolumeSource { secret_name: Some("tls".into()), ..Default::default() }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (config_maps, secrets) = referenced_objects(&pod);
        assert_eq!(config_maps.into_iter().collect::<Vec<_>>(), vec!["settings", "site"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), vec!["db", "tls"]);
    }

    #[test]
    fn pod_full_name_matches_kubelet_messages() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web-0".into());
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.uid = Some("u-1".into());
        assert_eq!(full_name(&pod), "web-0_shop(u-1)");
    }
}
