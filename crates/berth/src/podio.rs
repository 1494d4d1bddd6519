//! Serves `pods/log` from the node agent's CRI log files (the API server and the node share
//! this process, so the files are read directly rather than through a kubelet endpoint).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

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
}

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

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

fn read(path: &Path, opts: &berth_node::LogOptions) -> Result<Vec<u8>, ApiError> {
    berth_node::read_log(path, opts).map_err(|e| ApiError::internal(format!("reading log: {e}")))
}

impl PodIo for NodeLogs {
    fn exec(&self, pod: &Value, opts: &ExecOptions) -> Result<ExecIo, ApiError> {
        self.exec_in(pod, opts)
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
        if !path.exists() {
            return Err(waiting());
        }
        let node_opts = Self::options(opts)?;
        let first = read(&path, &node_opts)?;
        if !opts.follow || opts.previous {
            return Ok(Body::from(first));
        }
        // Follow: send what is there, then whatever the file grows by, until the container is
        // restarted (a newer attempt's file appears), its pod is removed, or the client leaves.
        let next_attempt = berth_node::log_path(&self.data_dir, uid, &opts.container, attempt + 1);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let full_opts = berth_node::LogOptions { tail_lines: None, limit_bytes: None, ..node_opts };
        let mut sent_of_full = read(&path, &full_opts).map(|v| v.len()).unwrap_or(0);
        tokio::spawn(async move {
            if tx.send(Ok(Bytes::from(first))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
                let Ok(all) = berth_node::read_log(&path, &full_opts) else { return };
                if all.len() > sent_of_full {
                    let chunk = Bytes::copy_from_slice(&all[sent_of_full..]);
                    sent_of_full = all.len();
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                } else if next_attempt.exists() || !path.exists() {
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
    /// `kubectl exec`: `runc exec` in the newest running attempt of the container.
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
        let record = berth_node::exec::running_container(&self.data_dir, uid, &opts.container).ok_or_else(|| {
            ApiError::bad_request(format!("unable to upgrade connection: container not found ({:?})", opts.container))
        })?;
        // The node agent runs runc from PATH with its state under the node's data dir.
        let runc = berth_node::NodeConfig::new(self.data_dir.clone()).runc;
        let spec = berth_node::exec::ExecSpec {
            command: opts.command.clone(),
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            tty: opts.tty,
            size: None,
        };
        let mut process =
            berth_node::exec::spawn(&runc, &berth_node::exec::runc_root(&self.data_dir), &record.id, &spec)
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
            exit: Box::pin(async move { process.wait().await.map_err(|e| format!("waiting for runc exec: {e}")) }),
        })
    }
}
