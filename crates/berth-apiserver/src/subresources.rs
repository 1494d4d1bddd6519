//! Subresources: `status`, `scale`, `binding`, `finalize`, and pod I/O (`log`), whose
//! data lives with the node agent and is reached through [`PodIo`].

use axum::{body::Body, extract::Request, response::Response};
use berth_core::{ApiError, FieldError, ResourceInfo};
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    handlers::{Query, Shared, decode_body, json_response, write_options},
    objects::meta_str,
};

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub timestamps: bool,
    pub limit_bytes: Option<i64>,
}

/// Pod I/O served by the node agent in the same process.
pub trait PodIo: Send + Sync + 'static {
    /// A `text/plain` body of the container's log. `pod` is the stored Pod object.
    fn logs(&self, pod: &Value, opts: &LogOptions) -> Result<Body, ApiError>;

    /// Starts a process in one of the pod's running containers (`kubectl exec`).
    fn exec(&self, pod: &Value, opts: &crate::stream::ExecOptions) -> Result<crate::stream::ExecIo, ApiError> {
        let _ = (pod, opts);
        Err(ApiError::bad_request("exec is not supported: no node is running here"))
    }

    /// Connects to a running container's own process (`kubectl attach`).
    fn attach(&self, pod: &Value, opts: &crate::stream::ExecOptions) -> Result<crate::stream::ExecIo, ApiError> {
        let _ = (pod, opts);
        Err(ApiError::bad_request("attach is not supported: no node is running here"))
    }

    /// Usage of the pods running here, over the node's sampling window.
    fn pod_usage(&self) -> Vec<crate::metrics::PodUsage> {
        Vec::new()
    }

    /// Usage of the node.
    fn node_usage(&self) -> Option<crate::metrics::NodeUsage> {
        None
    }

    /// The node's per-container series as an OpenMetrics text document (with its `# EOF`).
    fn prometheus(&self) -> String {
        String::new()
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn handle(
    state: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    method: Method,
    q: Query,
    req: Request,
) -> Result<Response, ApiError> {
    let objects = &state.objects;
    let not_found = || ApiError::route_not_found(req.uri().path());
    match (sub, &method) {
        ("status", &Method::GET) if info.has_status => {
            Ok(json_response(StatusCode::OK, &objects.get(info, ns, name).await?))
        }
        ("status", &Method::PUT) if info.has_status => {
            let opts = write_options(&q)?;
            let (headers, body) = read(state, req).await?;
            let obj = decode_body(&headers, &body)?;
            let (v, _) = objects.update(info, ns, name, obj, Some("status"), &opts).await?;
            Ok(json_response(StatusCode::OK, &v))
        }
        ("status", &Method::PATCH) if info.has_status => {
            let opts = write_options(&q)?;
            let (headers, body) = read(state, req).await?;
            let (v, _, _) =
                crate::patch::patch(state, info, ns, name, Some("status"), &headers, &body, &q, &opts).await?;
            Ok(json_response(StatusCode::OK, &v))
        }
        ("scale", _) if info.has_scale => scale(state, info, ns, name, method, q, req).await,
        ("binding", &Method::POST) if info.gvk.group.is_empty() && info.gvk.kind == "Pod" => {
            let opts = write_options(&q)?;
            let (headers, body) = read(state, req).await?;
            let binding = decode_body(&headers, &body)?;
            let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_owned();
            if node.is_empty() {
                return Err(ApiError::invalid_kind(
                    "",
                    "Binding",
                    "Binding",
                    name,
                    vec![FieldError::required("target.name", "")],
                ));
            }
            objects
                .guaranteed_update(info, ns, name, Some("binding"), &opts, |old| {
                    let mut pod = old.clone();
                    let current = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
                    if !current.is_empty() {
                        return Err(ApiError::conflict_with(
                            info,
                            name,
                            &format!("pod {name} is already assigned to node {current:?}"),
                        ));
                    }
                    if old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                        return Err(ApiError::conflict_with(info, name, "pod is being deleted, cannot be assigned to a host"));
                    }
                    pod["spec"]["nodeName"] = json!(node);
                    set_condition(&mut pod, json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::objects::now_rfc3339()}));
                    Ok(pod)
                })
                .await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("finalize", &Method::PUT) if info.gvk.group.is_empty() && info.gvk.kind == "Namespace" => {
            let opts = write_options(&q)?;
            let (headers, body) = read(state, req).await?;
            let obj = decode_body(&headers, &body)?;
            let (v, _) = objects.update(info, ns, name, obj, Some("finalize"), &opts).await?;
            Ok(json_response(StatusCode::OK, &v))
        }
        ("log", &Method::GET) if info.gvk.group.is_empty() && info.gvk.kind == "Pod" => {
            let pod = objects.get(info, ns, name).await?;
            let opts = log_options(&pod, &q)?;
            let Some(io) = &state.pod_io else {
                return Err(ApiError::bad_request(format!(
                    "container {:?} in pod {name:?} is waiting to start: no node is running here",
                    opts.container
                )));
            };
            let body = io.logs(&pod, &opts)?;
            let mut resp = Response::new(body);
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
            Ok(resp)
        }
        ("exec" | "attach", &Method::GET | &Method::POST) if info.gvk.group.is_empty() && info.gvk.kind == "Pod" => {
            let pod = objects.get(info, ns, name).await?;
            // Container defaulting is the same as for logs.
            let container = log_options(&pod, &q)?.container;
            // As the API server does before any upgrade, so both WebSocket and SPDY clients
            // get the same error.
            let known = ["containers", "initContainers", "ephemeralContainers"].iter().any(|list| {
                pod.pointer(&format!("/spec/{list}"))
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(&container)))
            });
            if !known {
                return Err(ApiError::bad_request(format!("container {container} is not valid for pod {name}")));
            }
            let opts = crate::stream::ExecOptions {
                container,
                command: q.all("command"),
                stdin: q.flag("stdin"),
                stdout: q.flag("stdout"),
                stderr: q.flag("stderr"),
                tty: q.flag("tty"),
                attach: sub == "attach",
            };
            let Some(io) = state.pod_io.clone() else {
                return Err(ApiError::bad_request(format!(
                    "container {:?} in pod {name:?} is not running: no node is running here",
                    opts.container
                )));
            };
            crate::stream::exec(io, &pod, opts, req).await
        }
        ("portforward", &Method::GET | &Method::POST) if info.gvk.group.is_empty() && info.gvk.kind == "Pod" => {
            let pod = objects.get(info, ns, name).await?;
            if state.pod_io.is_none() {
                return Err(ApiError::bad_request(format!("pod {name} is not running: no node is running here")));
            }
            crate::stream::portforward::port_forward(&pod, req).await
        }
        _ => Err(not_found()),
    }
}

async fn read(state: &Shared, req: Request) -> Result<(http::HeaderMap, bytes::Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), state.max_body_bytes)
        .await
        .map_err(|_| ApiError::request_entity_too_large(state.max_body_bytes))?;
    Ok((headers, bytes))
}

/// Sets (or replaces by type) one entry of `status.conditions`.
pub fn set_condition(obj: &mut Value, cond: Value) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let ty = cond.get("type").cloned();
    let conds = obj["status"].as_object_mut().map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conds {
        list.retain(|c| c.get("type") != ty.as_ref());
        list.push(cond);
    }
}

fn log_options(pod: &Value, q: &Query) -> Result<LogOptions, ApiError> {
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    let name = meta_str(pod, "name").unwrap_or_default();
    let container = match q.get("container") {
        Some(c) if !c.is_empty() => c.to_owned(),
        _ => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (default, containers.as_slice()) {
                (Some(d), _) => d,
                (None, [only]) => only.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    )));
                }
            }
        }
    };
    let num = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}"))))
            .transpose()
    };
    Ok(LogOptions {
        container,
        follow: q.flag("follow"),
        previous: q.flag("previous"),
        tail_lines: num("tailLines")?,
        since_seconds: num("sinceSeconds")?,
        since_time: q.get("sinceTime").map(str::to_owned),
        timestamps: q.flag("timestamps"),
        limit_bytes: num("limitBytes")?,
    })
}

fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            let mut parts: Vec<String> = s
                .get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            for e in s.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let vals: Vec<&str> =
                    e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => parts.push(format!("{key} in ({})", vals.join(","))),
                    Some("NotIn") => parts.push(format!("{key} notin ({})", vals.join(","))),
                    Some("Exists") => parts.push(key.to_owned()),
                    Some("DoesNotExist") => parts.push(format!("!{key}")),
                    _ => {}
                }
            }
            parts.join(",")
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let _ = info;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {"replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

async fn scale(
    state: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    method: Method,
    q: Query,
    req: Request,
) -> Result<Response, ApiError> {
    let objects = &state.objects;
    if method == Method::GET {
        let obj = objects.get(info, ns, name).await?;
        return Ok(json_response(StatusCode::OK, &scale_of(info, &obj)));
    }
    let opts = write_options(&q)?;
    let (headers, body) = read(state, req).await?;
    let (new_scale_doc, pt) = match method {
        Method::PUT => (decode_body(&headers, &body)?, None),
        Method::PATCH => {
            let pt = crate::patch::patch_type(&headers)?;
            let doc: Value = if pt == crate::patch::PatchType::Apply {
                crate::handlers::decode_yaml(&body)?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch body: {e}")))?
            };
            (doc, Some(pt))
        }
        _ => return Err(ApiError::method_not_allowed("scale supports get, update and patch")),
    };
    let scale_info = ResourceInfo {
        gvk: berth_core::GroupVersionKind::new("autoscaling", "v1", "Scale"),
        plural: "scale".into(),
        singular: "scale".into(),
        scope: info.scope,
        short_names: vec![],
        categories: vec![],
        has_status: false,
        has_scale: false,
        custom: true,
        read_only: false,
        printer_columns: Vec::new(),
    };
    let (updated, _) = objects
        .guaranteed_update(info, ns, name, None, &opts, |old| {
            let current = scale_of(info, old);
            let new_scale = match pt {
                None => new_scale_doc.clone(),
                Some(pt) => crate::patch::apply_patch(&scale_info, name, pt, &current, &new_scale_doc)?,
            };
            if let Some(rv) = new_scale.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                && !rv.is_empty()
                && Some(rv) != meta_str(old, "resourceVersion")
            {
                return Err(ApiError::conflict(info, name));
            }
            let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid_kind(
                    "autoscaling",
                    "Scale",
                    "Scale.autoscaling",
                    name,
                    vec![FieldError::invalid("spec.replicas", &json!(replicas), "must be greater than or equal to 0")],
                ));
            }
            let mut obj = old.clone();
            obj["spec"]["replicas"] = json!(replicas);
            Ok(obj)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &scale_of(info, &updated)))
}
