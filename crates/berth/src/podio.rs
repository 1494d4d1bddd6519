//! Serves `pods/log` from the node agent's CRI log files (the API server and the node share
//! this process, so the files are read directly rather than through a kubelet endpoint).

use std::{path::PathBuf, time::Duration};

use axum::body::Body;
use berth_apiserver::{
    LogOptions, PodIo,
    stream::{ExecIo, ExecOptions},
};
use berth_core::ApiError;
use bytes::Bytes;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

pub struct NodeLogs {
    pub data_dir: PathBuf,
    /// The node's name, for its NodeMetrics.
    pub node_name: String,
    /// Usage readings of the pods (kubectl top, /metrics).
    pub metrics: Option<std::sync::Arc<berth_node::metrics::Sampler>>,
}

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long a followed container must have been seen not running before the stream ends
/// (covers the moment between its log file appearing and its record being written).
const ENDED_AFTER: Duration = Duration::from_secs(1);

fn restart_count(pod: &Value, container: &str) -> Option<u32> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/status/{k}")).and_then(Value::as_array))
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
        .and_then(|s| s.get("restartCount").and_then(Value::as_u64))
        .and_then(|n| u32::try_from(n).ok())
}

impl NodeLogs {
    fn options(opts: &LogOptions) -> Result<berth_node::LogOptions, ApiError> {
        let since = match (&opts.since_time, opts.since_seconds) {
            (Some(t), _) => {
                Some(t.parse::<Timestamp>().map_err(|_| ApiError::bad_request(format!("invalid sinceTime {t:?}")))?)
            }
            (None, Some(secs)) => Timestamp::now().checked_sub(SignedDuration::from_secs(secs.max(0))).ok(),
            (None, None) => None,
        };
        Ok(berth_node::LogOptions {
            timestamps: opts.timestamps,
            tail_lines: opts.tail_lines.and_then(|n| usize::try_from(n).ok()),
            since,
            limit_bytes: opts.limit_bytes.and_then(|n| usize::try_from(n).ok()),
        })
    }
}

fn rfc3339(ts: Timestamp) -> String {
    // Second precision, as upstream serialises metav1.Time.
    format!("{ts:.0}")
}

impl PodIo for NodeLogs {
    fn pod_usage(&self) -> Vec<berth_apiserver::metrics::PodUsage> {
        let Some(sampler) = &self.metrics else { return Vec::new() };
        sampler
            .pods()
            .into_iter()
            .map(|p| berth_apiserver::metrics::PodUsage {
                uid: p.uid,
                timestamp: rfc3339(p.timestamp),
                window: p.window,
                containers: p
                    .containers
                    .into_iter()
                    .map(|c| berth_apiserver::metrics::ContainerUsage {
                        name: c.name,
                        cpu_nanocores: c.cpu_nanocores,
                        memory_bytes: c.memory_bytes,
                    })
                    .collect(),
            })
            .collect()
    }

    fn node_usage(&self) -> Option<berth_apiserver::metrics::NodeUsage> {
        let machine = self.metrics.as_ref()?.machine()?;
        Some(berth_apiserver::metrics::NodeUsage {
            node: self.node_name.clone(),
            timestamp: rfc3339(machine.timestamp),
            window: machine.window,
            cpu_nanocores: machine.cpu_nanocores,
            memory_bytes: machine.memory_bytes,
        })
    }

    fn prometheus(&self) -> String {
        self.metrics
            .as_ref()
            .and_then(|sampler| sampler.latest())
            .map(|snapshot| berth_node::metrics::encode_prometheus(&snapshot))
            .unwrap_or_default()
    }

    fn exec(&self, pod: &Value, opts: &ExecOptions) -> Result<ExecIo, ApiError> {
        self.exec_in(pod, opts)
    }

    fn attach(&self, pod: &Value, opts: &ExecOptions) -> Result<ExecIo, ApiError> {
        self.attach_to(pod, opts)
    }

    fn logs(&self, pod: &Value, opts: &LogOptions) -> Result<Body, ApiError> {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let known = ["containers", "initContainers"]
            .iter()
            .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
            .flatten()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(opts.container.as_str()));
        if !known {
            return Err(ApiError::bad_request(format!("container {} is not valid for pod {name}", opts.container)));
        }
        let waiting =
            || ApiError::bad_request(format!("container {:?} in pod {name:?} is waiting to start", opts.container));
        let current = restart_count(pod, &opts.container).ok_or_else(waiting)?;
        let attempt = if opts.previous {
            current.checked_sub(1).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container {:?} in pod {name:?} not found",
                    opts.container
                ))
            })?
        } else {
            current
        };
        let path = berth_node::log_path(&self.data_dir, uid, &opts.container, attempt);
        let node_opts = Self::options(opts)?;
        let (first, mut follower) = match berth_node::LogFollower::open(&path, &node_opts) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(waiting()),
            Err(e) => return Err(ApiError::internal(format!("reading log: {e}"))),
        };
        if !opts.follow || opts.previous || follower.exhausted() {
            return Ok(Body::from(first));
        }
        // Follow: send what is there, then what is written, until the container ends (is no
        // longer running for a moment, or a newer attempt's log appears), the pod is removed,
        // the byte limit is reached, or the client leaves.
        let next_attempt = berth_node::log_path(&self.data_dir, uid, &opts.container, attempt + 1);
        let data_dir = self.data_dir.clone();
        let (uid, container) = (uid.to_owned(), opts.container.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
                return;
            }
            let mut stopped_since: Option<std::time::Instant> = None;
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
                let running = berth_node::exec::running_container(&data_dir, &uid, &container)
                    .is_some_and(|record| record.attempt == attempt);
                let ended = !running
                    && stopped_since.get_or_insert_with(std::time::Instant::now).elapsed() > ENDED_AFTER
                    || next_attempt.exists()
                    || !path.exists();
                if running {
                    stopped_since = None;
                }
                let chunk = match follower.read_new() {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
                if ended || follower.exhausted() {
                    return;
                }
            }
        });
        Ok(Body::from_stream(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        )))
    }
}

impl NodeLogs {
    /// `kubectl attach`: a session with the container's own stdio, served by its shim (see
    /// `berth_node::attach`). Whether it is a terminal is the container's `tty`, as kubelet
    /// takes it from the spec rather than from the request.
    fn attach_to(&self, pod: &Value, opts: &ExecOptions) -> Result<ExecIo, ApiError> {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let spec = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(opts.container.as_str()));
        let flag = |key: &str| spec.and_then(|c| c.get(key)).and_then(Value::as_bool).unwrap_or(false);
        // Upstream runtimes silently drop such input; refusing says why nothing would arrive.
        if opts.stdin && !flag("stdin") {
            return Err(ApiError::bad_request(format!(
                "cannot attach to the stdin of container {:?} in pod {name:?}: it was created without stdin \
                 (set stdin: true in its spec)",
                opts.container
            )));
        }
        let not_running = || ApiError::bad_request(format!("container {:?} is not running", opts.container));
        let (record, state_dir) =
            berth_node::exec::running_container_state(&self.data_dir, uid, &opts.container).ok_or_else(not_running)?;
        let tty = flag("tty");
        let request =
            berth_node::attach::AttachRequest { stdin: opts.stdin, stdout: opts.stdout, stderr: opts.stderr && !tty };
        match berth_node::attach::connect(&state_dir, request) {
            Ok(mut session) => {
                let (stdin, stdout, stderr) = session.take_streams();
                let resize = tty.then(|| Box::new(session.resizer()) as Box<dyn Fn(u16, u16) + Send + Sync>);
                Ok(ExecIo {
                    stdin,
                    stdout,
                    stderr,
                    resize,
                    // kubelet reports success when an attach ends; the exit code is the pod's.
                    exit: Box::pin(async move {
                        session.wait().await;
                        Ok(0)
                    }),
                })
            }
            // A shim started by an older Berth serves no attach socket: follow its log.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !opts.stdin => {
                self.attach_to_log(uid, opts, record.attempt)
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                Err(not_running())
            }
            Err(e) => Err(ApiError::internal(format!("attaching to container {:?}: {e}", opts.container))),
        }
    }

    /// Attach for containers whose shim has no attach socket: their output from now on, read
    /// from the log as it is written, until the container ends.
    fn attach_to_log(&self, uid: &str, opts: &ExecOptions, attempt: u32) -> Result<ExecIo, ApiError> {
        let uid = uid.to_owned();
        let path = berth_node::log_path(&self.data_dir, &uid, &opts.container, attempt);
        let from_now = berth_node::LogOptions { tail_lines: Some(0), ..Default::default() };
        let (_, mut follower) = berth_node::LogFollower::open(&path, &from_now)
            .map_err(|e| ApiError::internal(format!("reading the log of {:?}: {e}", opts.container)))?;
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (data_dir, container) = (self.data_dir.clone(), opts.container.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            loop {
                tokio::time::sleep(FOLLOW_POLL).await;
                let running = berth_node::exec::running_container(&data_dir, &uid, &container)
                    .is_some_and(|r| r.attempt == attempt);
                let Ok(chunk) = follower.read_new() else { break };
                if !chunk.is_empty() && writer.write_all(&chunk).await.is_err() {
                    break;
                }
                if !running {
                    break;
                }
            }
            let _ = done_tx.send(());
        });
        Ok(ExecIo {
            stdin: None,
            stdout: opts.stdout.then(|| Box::pin(reader) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>),
            stderr: None,
            resize: None,
            exit: Box::pin(async move {
                let _ = done_rx.await;
                Ok(0)
            }),
        })
    }

    /// `kubectl exec`: the runtime's `exec` in the newest running attempt of the container.
    fn exec_in(&self, pod: &Value, opts: &ExecOptions) -> Result<ExecIo, ApiError> {
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let known = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(opts.container.as_str()));
        if !known {
            return Err(ApiError::bad_request(format!("container {} is not valid for pod {name}", opts.container)));
        }
        let (record, state_dir) = berth_node::exec::running_container_state(&self.data_dir, uid, &opts.container)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to upgrade connection: container not found ({:?})",
                    opts.container
                ))
            })?;
        // The runtime that created the container, with its state under the node's data dir
        // (runc from PATH, or this binary as libcontainer's command line).
        let config = berth_node::NodeConfig::new(self.data_dir.clone());
        let cli = berth_node::oci_runtime::OciCli::for_container(&config, record.runtime, &state_dir);
        let spec = berth_node::exec::ExecSpec {
            command: opts.command.clone(),
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            tty: opts.tty,
            size: None,
        };
        let mut process = berth_node::exec::spawn(&cli, &record.id, &spec)
            .map_err(|e| ApiError::internal(format!("exec in container {:?}: {e}", opts.container)))?;
        let (stdin, stdout, stderr) = process.take_streams();
        let resize = process
            .resizer()
            .map(|r| Box::new(move |cols: u16, rows: u16| r.resize(cols, rows)) as Box<dyn Fn(u16, u16) + Send + Sync>);
        Ok(ExecIo {
            stdin,
            stdout,
            stderr,
            resize,
            exit: Box::pin(async move { process.wait().await.map_err(|e| format!("waiting for exec: {e}")) }),
        })
    }
}
