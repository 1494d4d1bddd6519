//! Metrics: the resource metrics API (`metrics.k8s.io/v1beta1` PodMetrics and NodeMetrics,
//! which `kubectl top` reads), built from the stored pods and nodes and the usage the node
//! measures ([`PodIo::pod_usage`]); and the Prometheus endpoint `/metrics`, with the API
//! server's own request counters and the node's per-container series ([`PodIo::prometheus`]).

use std::time::{Duration, Instant};

use berth_core::{ApiError, ResourceInfo};
use http::{HeaderValue, Method, StatusCode, header};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use serde_json::{Value, json};

use crate::{
    handlers::{Query, Shared, json_response, list_options},
    request::ResourcePath,
    subresources::PodIo,
};

/// Usage of one container over the sampling window.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// Usage of one pod, keyed by its UID.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub uid: String,
    /// RFC 3339: the end of the window.
    pub timestamp: String,
    pub window: Duration,
    pub containers: Vec<ContainerUsage>,
}

/// Usage of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeUsage {
    pub node: String,
    pub timestamp: String,
    pub window: Duration,
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

type RequestLabels = Vec<(String, String)>;

/// The API server's own series, named as upstream's.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0])
        });
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version and resource",
            durations.clone(),
        );
        ApiMetrics { registry, requests, durations }
    }
}

impl ApiMetrics {
    /// Counts one request; `resource` is `None` for paths that are not resources.
    pub fn observe(&self, verb: &str, resource: Option<&ResourcePath>, code: u16, started: Instant) {
        let (group, version, plural, sub) = match resource {
            Some(rp) => {
                (rp.group.as_str(), rp.version.as_str(), rp.resource.as_str(), rp.subresource.as_deref().unwrap_or(""))
            }
            None => ("", "", "", ""),
        };
        let base: RequestLabels = vec![
            ("verb".to_owned(), verb.to_owned()),
            ("group".to_owned(), group.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("resource".to_owned(), plural.to_owned()),
            ("subresource".to_owned(), sub.to_owned()),
        ];
        // Long-running requests (watches, exec, log streams) are counted but not timed, as
        // upstream leaves them out of the latency histogram.
        if !matches!(verb, "WATCH" | "CONNECT") {
            self.durations.get_or_create(&base).observe(started.elapsed().as_secs_f64());
        }
        let mut labels = base;
        labels.push(("code".to_owned(), code.to_string()));
        self.requests.get_or_create(&labels).inc();
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The verb upstream's metrics name a request by.
pub fn verb(method: &Method, rp: Option<&ResourcePath>, q: &Query) -> &'static str {
    let connect =
        rp.is_some_and(|rp| matches!(rp.subresource.as_deref(), Some("exec" | "attach" | "portforward" | "proxy")));
    let named = rp.is_some_and(|rp| rp.name.is_some());
    match *method {
        _ if connect => "CONNECT",
        Method::GET if q.flag("watch") => "WATCH",
        Method::GET if rp.is_some() && !named => "LIST",
        Method::GET | Method::HEAD => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if rp.is_some() && !named => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// `/metrics`: the API server's series then the node's, as one OpenMetrics document.
pub fn prometheus(state: &Shared) -> http::Response<axum::body::Body> {
    let mut text = state.api_metrics.encode();
    if let Some(io) = &state.pod_io {
        let node = io.prometheus();
        if !node.is_empty() {
            // Each encoded registry ends with "# EOF"; the document may have only one.
            if let Some(stripped) = text.strip_suffix("# EOF\n") {
                text.truncate(stripped.len());
            }
            text.push_str(&node);
        }
    }
    let mut resp = http::Response::new(axum::body::Body::from(text));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// A CPU quantity in nanocores and a memory quantity in KiB, as metrics-server writes them.
fn usage(cpu_nanocores: u64, memory_bytes: u64) -> Value {
    json!({"cpu": format!("{cpu_nanocores}n"), "memory": format!("{}Ki", memory_bytes / 1024)})
}

fn window(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{}.{:03}s", ms / 1000, ms % 1000) }
}

fn metrics_meta(obj: &Value) -> Value {
    let mut meta = json!({
        "name": obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "creationTimestamp": crate::objects::now_rfc3339(),
    });
    if let Some(ns) = obj.pointer("/metadata/namespace") {
        meta["namespace"] = ns.clone();
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        meta["labels"] = labels.clone();
    }
    meta
}

fn pod_metrics(pod: &Value, usage_of: &PodUsage) -> Value {
    json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metrics_meta(pod),
        "timestamp": usage_of.timestamp,
        "window": window(usage_of.window),
        "containers": usage_of.containers.iter().map(|c| json!({
            "name": c.name,
            "usage": usage(c.cpu_nanocores, c.memory_bytes),
        })).collect::<Vec<_>>(),
    })
}

fn node_metrics(node: &Value, usage_of: &NodeUsage) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": metrics_meta(node),
        "timestamp": usage_of.timestamp,
        "window": window(usage_of.window),
        "usage": usage(usage_of.cpu_nanocores, usage_of.memory_bytes),
    })
}

/// GET and LIST of `metrics.k8s.io/v1beta1` pods and nodes.
pub async fn serve(
    state: &Shared,
    info: &ResourceInfo,
    rp: &ResourcePath,
    method: &Method,
    q: &Query,
) -> Result<http::Response<axum::body::Body>, ApiError> {
    if *method != Method::GET || rp.subresource.is_some() || q.flag("watch") {
        return Err(ApiError::method_not_allowed("the metrics API serves only get and list"));
    }
    let registry = state.objects.registry();
    let (source_plural, is_pods) = if info.gvk.kind == "PodMetrics" { ("pods", true) } else { ("nodes", false) };
    let source = registry
        .get("", "v1", source_plural)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("{source_plural} are not served")))?;
    let ns = rp.namespace.as_deref();
    let io: Option<&dyn PodIo> = state.pod_io.as_deref();
    let pods_usage = if is_pods { io.map(|io| io.pod_usage()).unwrap_or_default() } else { Vec::new() };
    let node_usage = if is_pods { None } else { io.and_then(|io| io.node_usage()) };
    let render = |obj: &Value| -> Option<Value> {
        if is_pods {
            let uid = obj.pointer("/metadata/uid").and_then(Value::as_str)?;
            pods_usage.iter().find(|u| u.uid == uid).map(|u| pod_metrics(obj, u))
        } else {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str)?;
            node_usage.as_ref().filter(|u| u.node == name).map(|u| node_metrics(obj, u))
        }
    };
    if let Some(name) = &rp.name {
        let obj = state.objects.get(&source, ns, name).await.map_err(|_| ApiError::not_found(info, name))?;
        return render(&obj).map(|m| json_response(StatusCode::OK, &m)).ok_or_else(|| ApiError::not_found(info, name));
    }
    let mut opts = list_options(&source, q)?;
    opts.limit = None;
    opts.continue_key = None;
    let page = state.objects.list(&source, ns, &opts).await?;
    let items: Vec<Value> = page.items.iter().filter_map(render).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", info.gvk.kind), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_windows_look_like_metrics_server() {
        assert_eq!(usage(1_500_000, 10 * 1024 * 1024), json!({"cpu": "1500000n", "memory": "10240Ki"}));
        assert_eq!(window(Duration::from_millis(10_250)), "10.250s");
        assert_eq!(window(Duration::from_secs(15)), "15s");
    }

    #[test]
    fn api_requests_are_counted_with_upstream_names() {
        let metrics = ApiMetrics::default();
        let rp = ResourcePath {
            group: "apps".into(),
            version: "v1".into(),
            namespace: Some("default".into()),
            resource: "deployments".into(),
            name: None,
            subresource: None,
        };
        let q = Query::parse(None);
        assert_eq!(verb(&Method::GET, Some(&rp), &q), "LIST");
        metrics.observe("LIST", Some(&rp), 200, Instant::now());
        let text = metrics.encode();
        assert!(text.contains("apiserver_request_total{verb=\"LIST\",group=\"apps\",version=\"v1\",resource=\"deployments\",subresource=\"\",code=\"200\"} 1"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket"), "{text}");
    }
}
