//! The pod status kubelet reports, computed from what the worker knows: phase, conditions
//! and container statuses, with upstream's rules and wording.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::resources;

/// A container attempt that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: String,
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: Timestamp, container_id: String },
    Terminated(Terminated),
}

/// What the worker knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    pub image: String,
    /// The `imageID` of the running container, or of the last one that ran.
    pub image_id: String,
    pub state: State,
    pub restart_count: u32,
    pub last_terminated: Option<Terminated>,
    pub ready: bool,
    /// Running and past its startup probe.
    pub started: bool,
}

/// What the worker knows about the pod.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub init_containers: Vec<ContainerInfo>,
    pub containers: Vec<ContainerInfo>,
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Timestamp,
    /// Set when the node refused the pod (it stays `Failed` with this reason and message).
    pub rejected: Option<(String, String)>,
    pub now: Timestamp,
}

fn seconds(ts: Timestamp) -> Time {
    // Upstream serialises times with second precision; equal statuses compare equal.
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

/// The pod phase from its containers, as kubelet's `getPhase` decides it.
pub fn phase(pod: &Pod, init: &[ContainerInfo], containers: &[ContainerInfo]) -> &'static str {
    let policy = restart_policy(pod);
    let mut pending_init = 0;
    let mut failed_init = 0;
    for info in init {
        match &info.state {
            State::Running { .. } => pending_init += 1,
            State::Terminated(t) if t.exit_code == 0 => {}
            State::Terminated(_) => failed_init += 1,
            State::Waiting { .. } => {
                if info.last_terminated.as_ref().is_some_and(|t| t.exit_code != 0) {
                    failed_init += 1;
                } else {
                    pending_init += 1;
                }
            }
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || failed_init > 0 {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for info in containers {
        match &info.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if info.last_terminated.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

fn container_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        State::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(seconds(*started_at)) }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState { terminated: Some(terminated_state(t)), ..Default::default() },
    }
}

fn terminated_state(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(seconds),
        finished_at: Some(seconds(t.finished_at)),
        container_id: Some(t.container_id.clone()),
    }
}

fn container_status(info: &ContainerInfo) -> ContainerStatus {
    let container_id = match &info.state {
        State::Running { container_id, .. } => Some(container_id.clone()),
        State::Terminated(t) => Some(t.container_id.clone()),
        State::Waiting { .. } => info.last_terminated.as_ref().map(|t| t.container_id.clone()),
    };
    let running = matches!(info.state, State::Running { .. });
    ContainerStatus {
        name: info.name.clone(),
        image: info.image.clone(),
        image_id: if container_id.is_some() { info.image_id.clone() } else { String::new() },
        container_id,
        ready: info.ready && running,
        restart_count: i32::try_from(info.restart_count).unwrap_or(i32::MAX),
        started: Some(running && info.started),
        state: Some(container_state(&info.state)),
        last_state: Some(
            info.last_terminated
                .as_ref()
                .map(|t| ContainerState { terminated: Some(terminated_state(t)), ..Default::default() })
                .unwrap_or_default(),
        ),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, reason: Option<String>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// The full status to report. `previous` (the status on the server) keeps condition
/// transition times and the start time stable.
pub fn pod_status(view: &PodView<'_>, previous: Option<&PodStatus>) -> PodStatus {
    let pod = view.pod;
    let phase = if view.rejected.is_some() { "Failed" } else { phase(pod, &view.init_containers, &view.containers) };
    let terminal = phase == "Succeeded" || phase == "Failed";

    let pending_init: Vec<&str> = view
        .init_containers
        .iter()
        .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !(c.ready && matches!(c.state, State::Running { .. })))
        .map(|c| c.name.as_str())
        .collect();
    let initialized = pending_init.is_empty();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted".to_owned(), None)
    } else {
        ("ContainersNotReady".to_owned(), Some(format!("containers with unready status: {}", list(&unready))))
    };
    let (init_reason, init_message) = if terminal && !initialized {
        ("PodCompleted".to_owned(), None)
    } else {
        (
            "ContainersNotInitialized".to_owned(),
            Some(format!("containers with incomplete status: {}", list(&pending_init))),
        )
    };
    let all_ready = unready.is_empty() && !terminal;
    let mut conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None, None),
        condition("Initialized", initialized, Some(init_reason), init_message),
        condition("Ready", all_ready, Some(ready_reason.clone()), ready_message.clone()),
        condition("ContainersReady", all_ready, Some(ready_reason), ready_message),
        condition("PodScheduled", true, None, None),
    ];
    let previous_conditions = previous.and_then(|s| s.conditions.as_ref());
    for condition in &mut conditions {
        let before = previous_conditions.and_then(|list| list.iter().find(|c| c.type_ == condition.type_));
        condition.last_transition_time = match before {
            Some(before) if before.status == condition.status && before.last_transition_time.is_some() => {
                before.last_transition_time.clone()
            }
            _ => Some(seconds(view.now)),
        };
    }

    let start_time = previous.and_then(|s| s.start_time.clone()).unwrap_or_else(|| seconds(view.start_time));
    let statuses = |infos: &[ContainerInfo]| infos.iter().map(container_status).collect::<Vec<_>>();
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(view.host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: view.host_ip.clone() }]),
        pod_ip: view.pod_ip.clone(),
        pod_ips: view.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(start_time),
        qos_class: Some(resources::qos_class(pod).as_str().to_owned()),
        init_container_statuses: (!view.init_containers.is_empty()).then(|| statuses(&view.init_containers)),
        container_statuses: Some(statuses(&view.containers)),
        reason: view.rejected.as_ref().map(|(reason, _)| reason.clone()),
        message: view.rejected.as_ref().map(|(_, message)| message.clone()),
        ..Default::default()
    }
}

/// Whether `status` has the `Ready` condition true.
pub fn is_ready(status: &PodStatus) -> bool {
    status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The status as a JSON merge patch: fields this node no longer reports are cleared.
pub fn status_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        for key in ["reason", "message", "podIP", "podIPs", "initContainerStatuses", "nominatedNodeName"] {
            object.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": value })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pod(policy: &str) -> Pod {
        Pod { spec: Some(PodSpec { restart_policy: Some(policy.into()), ..Default::default() }), ..Default::default() }
    }

    fn terminated(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(ts("2024-01-01T00:00:00Z")),
            finished_at: ts("2024-01-01T00:00:05Z"),
            container_id: "runc://x".into(),
            image_id: "host".into(),
        }
    }

    fn info(state: State, last: Option<Terminated>) -> ContainerInfo {
        ContainerInfo {
            name: "app".into(),
            image: "host".into(),
            image_id: "host".into(),
            state,
            restart_count: u32::from(last.is_some()),
            last_terminated: last,
            ready: false,
            started: false,
        }
    }

    fn running() -> State {
        State::Running { started_at: ts("2024-01-01T00:00:00Z"), container_id: "runc://x".into() }
    }

    fn waiting(reason: &str) -> State {
        State::Waiting { reason: reason.into(), message: None }
    }

    #[test]
    fn phases_follow_kubelet() {
        let always = pod("Always");
        assert_eq!(phase(&always, &[], &[info(waiting("ContainerCreating"), None)]), "Pending");
        assert_eq!(phase(&always, &[], &[info(running(), None)]), "Running");
        assert_eq!(phase(&always, &[], &[info(waiting("CrashLoopBackOff"), Some(terminated(1)))]), "Running");
        let never = pod("Never");
        assert_eq!(phase(&never, &[], &[info(State::Terminated(terminated(0)), None)]), "Succeeded");
        assert_eq!(phase(&never, &[], &[info(State::Terminated(terminated(2)), None)]), "Failed");
        let on_failure = pod("OnFailure");
        assert_eq!(phase(&on_failure, &[], &[info(State::Terminated(terminated(0)), None)]), "Succeeded");
        // Init containers gate the pod.
        assert_eq!(phase(&always, &[info(running(), None)], &[info(waiting("PodInitializing"), None)]), "Pending");
        assert_eq!(phase(&never, &[info(State::Terminated(terminated(1)), None)], &[]), "Failed");
    }

    #[test]
    fn status_reports_readiness_and_keeps_transition_times() {
        let p = pod("Always");
        let mut app = info(running(), Some(terminated(137)));
        app.ready = false;
        let view = PodView {
            pod: &p,
            init_containers: vec![],
            containers: vec![app.clone()],
            sandbox_ready: true,
            pod_ip: Some("10.88.0.5".into()),
            host_ip: "192.168.0.2".into(),
            start_time: ts("2024-01-01T00:00:00Z"),
            rejected: None,
            now: ts("2024-01-01T00:01:00Z"),
        };
        let first = pod_status(&view, None);
        assert_eq!(first.phase.as_deref(), Some("Running"));
        let ready = first.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("containers with unready status: [app]"));
        let status = &first.container_statuses.as_ref().unwrap()[0];
        assert_eq!(status.restart_count, 1);
        assert_eq!(status.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 137);
        assert_eq!(first.pod_ips.as_ref().unwrap()[0].ip, "10.88.0.5");

        // Later, ready: Ready changes its transition time, Initialized keeps its own.
        let mut later = view.clone();
        later.containers[0].ready = true;
        later.now = ts("2024-01-01T00:02:00Z");
        let second = pod_status(&later, Some(&first));
        let find =
            |s: &PodStatus, t: &str| s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).cloned().unwrap();
        assert_eq!(find(&second, "Ready").status, "True");
        assert_ne!(find(&second, "Ready").last_transition_time, find(&first, "Ready").last_transition_time);
        assert_eq!(find(&second, "Initialized").last_transition_time, find(&first, "Initialized").last_transition_time);
        assert!(second.container_statuses.as_ref().unwrap()[0].ready);

        let patch = status_patch(&second);
        assert!(patch["status"]["reason"].is_null());
        assert_eq!(patch["status"]["phase"], "Running");
    }
}
