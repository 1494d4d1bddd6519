//! HTTP entry point: authentication, routing by path, and the resource verbs.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::Response,
};
use berth_core::{
    ApiError, ResourceInfo,
    selector::{FieldSelector, LabelSelector, supported_fields},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::{
    discovery,
    objects::{
        DeleteOptions, FieldValidation, ListOptions, ListRevision, Objects, WriteOptions, decode_continue,
        deleted_status, encode_continue, meta_str, parse_rv,
    },
    request::{self, ResourcePath, Target},
    subresources, table, watch,
};

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub objects: Arc<Objects>,
    /// The admin bearer token.
    pub token: String,
    /// `host:port` clients use, for `serverAddressByClientCIDRs`.
    pub server_address: String,
    pub max_body_bytes: usize,
    /// Hooks for subresources served by other components (logs, exec).
    pub pod_io: Option<Arc<dyn subresources::PodIo>>,
    /// The API server's own Prometheus series.
    pub api_metrics: crate::metrics::ApiMetrics,
}

pub type Shared = Arc<AppState>;

/// Query parameters, in order.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1") | Some(""))
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub fn error_response(err: &ApiError) -> Response {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &err.to_status())
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authenticated(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else { return false };
    constant_time_eq(token.trim().as_bytes(), state.token.as_bytes())
}

fn accept(headers: &HeaderMap) -> String {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

pub async fn handle(State(state): State<Shared>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let target = request::parse(req.uri().path());
    let rp = match &target {
        Target::Resource(rp) => Some(rp.clone()),
        _ => None,
    };
    let verb = crate::metrics::verb(req.method(), rp.as_ref(), &Query::parse(req.uri().query()));
    // Health probes are not API requests (upstream leaves them out too).
    let health = matches!(target, Target::Health(_));
    let resp = dispatch(&state, target, req).await;
    if !health {
        state.api_metrics.observe(verb, rp.as_ref(), resp.status().as_u16(), started);
    }
    resp
}

async fn dispatch(state: &Shared, target: Target, req: Request) -> Response {
    let state = Arc::clone(state);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if let Target::Health(_) = target {
        return plain(StatusCode::OK, "ok");
    }
    if target != Target::Version && !authenticated(&state, req.headers()) {
        return error_response(&ApiError::unauthorized());
    }
    let registry = state.objects.registry();
    let headers = req.headers().clone();
    let accept = accept(&headers);
    match target {
        Target::Health(_) => plain(StatusCode::OK, "ok"),
        Target::Version => json_response(StatusCode::OK, &discovery::version()),
        Target::CoreRoot if discovery::wants_aggregated(&accept) => {
            aggregated_response(&discovery::aggregated(&registry, true))
        }
        Target::CoreRoot => json_response(StatusCode::OK, &discovery::core_versions(&state.server_address)),
        Target::GroupsRoot if discovery::wants_aggregated(&accept) => {
            aggregated_response(&discovery::aggregated(&registry, false))
        }
        Target::GroupsRoot => json_response(StatusCode::OK, &discovery::group_list(&registry)),
        Target::Group(g) => match discovery::group(&registry, &g) {
            Some(v) => json_response(StatusCode::OK, &v),
            None => error_response(&ApiError::route_not_found(&path)),
        },
        Target::GroupVersion(g, v) => match discovery::resource_list(&registry, &g, &v) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => error_response(&ApiError::route_not_found(&path)),
        },
        Target::OpenApiV2 => {
            // An empty protobuf `Document`: kubectl then relies on v3 and its own types.
            let mut resp = Response::new(Body::empty());
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            resp
        }
        Target::OpenApiV3Root => json_response(StatusCode::OK, &discovery::openapi_v3_root(&registry)),
        Target::OpenApiV3(rest) => match discovery::openapi_v3_for(&registry, &rest) {
            Some(doc) => {
                let mut resp = json_response(StatusCode::OK, &doc);
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
                resp
            }
            None => error_response(&ApiError::route_not_found(&path)),
        },
        Target::Metrics => crate::metrics::prometheus(&state),
        Target::NotFound => error_response(&ApiError::route_not_found(&path)),
        Target::Resource(rp) => {
            let query = Query::parse(req.uri().query());
            match resource(&state, method, rp, query, req).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn aggregated_response(doc: &Value) -> Response {
    let mut resp = json_response(StatusCode::OK, doc);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(discovery::AGGREGATED_V2));
    resp
}

pub fn write_options(q: &Query) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.all("dryRun").as_slice() {
        [] => false,
        [v] if v == "All" => true,
        other => {
            return Err(ApiError::bad_request(format!("unsupported dryRun value {other:?}: only All is supported")));
        }
    };
    let field_validation = match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
            )));
        }
    };
    Ok(WriteOptions { dry_run, field_validation })
}

pub fn list_options(info: &ResourceInfo, q: &Query) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields =
        FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for f in fields.fields() {
        let ok = f == "metadata.name" || f == "metadata.namespace" || supported_fields(&info.gvk.kind).contains(&f);
        if !ok {
            return Err(ApiError::bad_request(format!("field label not supported: {f}")));
        }
    }
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => {
            Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?)
        }
        _ => None,
    };
    // Upstream parses the version before reading anything: "abc" is a client error, not "latest".
    let rv = match q.get("resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(rv) => Some(parse_rv(rv)?),
        None => None,
    };
    let revision = match (rv, q.get("resourceVersionMatch").filter(|m| !m.is_empty())) {
        // A match without a version (streaming watch lists send one) means the latest.
        (None, _) => ListRevision::Latest,
        (Some(0), None) => ListRevision::Any,
        (Some(rv), None | Some("NotOlderThan")) => ListRevision::NotOlderThan(rv),
        (Some(0), Some("Exact")) => {
            return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""));
        }
        (Some(rv), Some("Exact")) => ListRevision::Exact(rv),
        (Some(_), Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
    };
    let (continue_key, continue_revision) = match q.get("continue") {
        Some(c) if !c.is_empty() => {
            let (key, revision) = decode_continue(c)?;
            // The token names a key of this list only.
            if !key.starts_with(&info.key_prefix()) {
                return Err(ApiError::bad_request("continue key is not valid: key is outside the listed resource"));
            }
            (Some(key), revision)
        }
        _ => (None, None),
    };
    Ok(ListOptions { labels, fields, limit: limit.filter(|l| *l > 0), continue_key, continue_revision, revision })
}

async fn read_body(state: &AppState, req: Request) -> Result<(HeaderMap, bytes::Bytes), ApiError> {
    let headers = req.headers().clone();
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > state.max_body_bytes
    {
        return Err(ApiError::request_entity_too_large(state.max_body_bytes));
    }
    let bytes = axum::body::to_bytes(req.into_body(), state.max_body_bytes)
        .await
        .map_err(|_| ApiError::request_entity_too_large(state.max_body_bytes))?;
    Ok((headers, bytes))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a request body as JSON, YAML or Kubernetes protobuf.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    match ct.as_str() {
        "" | "application/json" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("YAML body is not valid UTF-8"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))
}

fn wants_table(headers: &HeaderMap) -> bool {
    accept(headers).split(',').next().is_some_and(|first| first.replace(' ', "").contains("as=Table"))
}

async fn resource(
    state: &Shared,
    method: Method,
    rp: ResourcePath,
    q: Query,
    req: Request,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    let Some(info) = state.objects.lookup(&rp.group, &rp.version, &rp.resource) else {
        return Err(ApiError::route_not_found(&path));
    };
    if info.read_only {
        return crate::metrics::serve(state, &info, &rp, &method, &q).await;
    }
    if info.namespaced() && rp.namespace.is_none() && rp.name.is_some() {
        return Err(ApiError::route_not_found(&path));
    }
    if !info.namespaced() && rp.namespace.is_some() && rp.resource != "namespaces" {
        return Err(ApiError::route_not_found(&path));
    }
    let ns = rp.namespace.clone();
    let headers = req.headers().clone();
    let table = wants_table(&headers);
    let watching = q.flag("watch");
    if let Some(sub) = rp.subresource.as_deref() {
        let name = rp.name.clone().unwrap_or_default();
        return subresources::handle(state, &info, ns.as_deref(), &name, sub, method, q, req).await;
    }
    let objects = &state.objects;
    let writes = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let resp = verbs(state, &info, ns.as_deref(), method, rp.name.clone(), q, req, table, watching).await;
    // Quota usage follows every successful write in a namespace.
    if writes
        && resp.is_ok()
        && crate::admission::affects_quota(&info)
        && let Some(ns) = ns.clone()
    {
        let objects = Arc::clone(objects);
        tokio::spawn(async move { crate::admission::refresh_quotas(&objects, &ns).await });
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn verbs(
    state: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    method: Method,
    name: Option<String>,
    q: Query,
    req: Request,
    table: bool,
    watching: bool,
) -> Result<Response, ApiError> {
    let objects = &state.objects;
    let info = info.clone();
    let ns = ns.map(str::to_owned);
    match (method, name) {
        (Method::GET, Some(name)) if watching => {
            let mut opts = list_options(&info, &q)?;
            opts.fields = FieldSelector::parse(&format!("metadata.name={name}"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            watch::serve(state, &info, ns.as_deref(), opts, &q, table).await
        }
        (Method::GET, Some(name)) => {
            if let Some(rv) = q.get("resourceVersion").filter(|rv| !rv.is_empty()) {
                parse_rv(rv)?;
            }
            let obj = objects.get(&info, ns.as_deref(), &name).await?;
            if table {
                return Ok(table_response(table::table(
                    &info,
                    std::slice::from_ref(&obj),
                    meta_str(&obj, "resourceVersion").unwrap_or(""),
                    None,
                    include_object(&q),
                )));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::GET, None) if watching => {
            let opts = list_options(&info, &q)?;
            watch::serve(state, &info, ns.as_deref(), opts, &q, table).await
        }
        (Method::GET, None) if !table => {
            let opts = list_options(&info, &q)?;
            let selected = objects.select(&info, ns.as_deref(), &opts).await?;
            let mut meta = json!({"resourceVersion": selected.revision.to_string()});
            if let Some(key) = &selected.continue_key {
                meta["continue"] = json!(encode_continue(key, Some(selected.revision)));
            }
            let head = json!({"kind": format!("{}List", info.gvk.kind), "apiVersion": info.gvk.api_version(), "metadata": meta});
            // `head` is an object: its closing brace gives way to the items.
            let mut body = serde_json::to_vec(&head).unwrap_or_default();
            body.pop();
            body.reserve(selected.entries.iter().map(|e| e.value.len() + 64).sum::<usize>() + 12);
            body.extend_from_slice(b",\"items\":[");
            let item_head = crate::cache::item_head(&info);
            for (i, entry) in selected.entries.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                entry.write_json(&info, &item_head, &mut body)?;
            }
            body.extend_from_slice(b"]}");
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(resp)
        }
        // Lists as Tables (JSON lists are served above).
        (Method::GET, None) => {
            let opts = list_options(&info, &q)?;
            let selected = objects.select(&info, ns.as_deref(), &opts).await?;
            let mut rows = Vec::new();
            for entry in &selected.entries {
                if include_object(&q) {
                    table::write_row(&info, &entry.decode(&info)?, true, &mut rows);
                } else {
                    entry.write_row(&info, &mut rows)?;
                }
            }
            let cont = selected.continue_key.as_deref().map(|key| encode_continue(key, Some(selected.revision)));
            Ok(table_response(table::table_of_rows(&info, &rows, &selected.revision.to_string(), cont.as_deref())))
        }
        (Method::POST, None) => {
            let opts = write_options(&q)?;
            let (headers, body) = read_body(state, req).await?;
            let obj = decode_body(&headers, &body)?;
            if !obj.is_object() {
                return Err(ApiError::bad_request("the request body must be a JSON object"));
            }
            if info.read_only {
                return Err(ApiError::method_not_allowed("this resource is read-only"));
            }
            let (created, warnings) = objects.create(&info, ns.as_deref(), obj, &opts).await?;
            if is_crd(&info) && !opts.dry_run {
                crate::crd::established(state, &created).await;
            }
            Ok(with_warnings(json_response(StatusCode::CREATED, &created), &warnings))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_options(&q)?;
            let (headers, body) = read_body(state, req).await?;
            let obj = decode_body(&headers, &body)?;
            if !obj.is_object() {
                return Err(ApiError::bad_request("the request body must be a JSON object"));
            }
            let (updated, warnings) = objects.update(&info, ns.as_deref(), &name, obj, None, &opts).await?;
            if is_crd(&info) && !opts.dry_run {
                crate::crd::established(state, &updated).await;
            }
            Ok(with_warnings(json_response(StatusCode::OK, &updated), &warnings))
        }
        (Method::PATCH, Some(name)) => {
            let opts = write_options(&q)?;
            let (headers, body) = read_body(state, req).await?;
            let (obj, warnings, created) =
                crate::patch::patch(state, &info, ns.as_deref(), &name, None, &headers, &body, &q, &opts).await?;
            if is_crd(&info) && !opts.dry_run {
                crate::crd::established(state, &obj).await;
            }
            let code = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(with_warnings(json_response(code, &obj), &warnings))
        }
        (Method::DELETE, Some(name)) => {
            let (headers, body) = read_body(state, req).await?;
            let opts = delete_options(&headers, &body, &q)?;
            if is_crd(&info) && !opts.dry_run {
                return crate::crd::delete(state, &info, &name, &opts).await;
            }
            let obj = objects.delete(&info, ns.as_deref(), &name, &opts).await?;
            let still_there = obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
                && objects.get(&info, ns.as_deref(), &name).await.is_ok();
            let code = if still_there && !opts.dry_run { StatusCode::ACCEPTED } else { StatusCode::OK };
            if info.gvk.group.is_empty() && !still_there && matches!(info.gvk.kind.as_str(), "Namespace") {
                return Ok(json_response(code, &deleted_status(&info, &obj)));
            }
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, None) => {
            let (headers, body) = read_body(state, req).await?;
            let opts = delete_options(&headers, &body, &q)?;
            let list = list_options(&info, &q)?;
            let deleted = objects.delete_collection(&info, ns.as_deref(), &list, &opts).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": format!("{}List", info.gvk.kind), "apiVersion": info.gvk.api_version(), "metadata": {}, "items": deleted}),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

fn is_crd(info: &ResourceInfo) -> bool {
    info.gvk.group == "apiextensions.k8s.io" && info.gvk.kind == "CustomResourceDefinition"
}

fn include_object(q: &Query) -> bool {
    q.get("includeObject") == Some("Object")
}

pub fn table_response(body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"));
    resp
}

pub fn delete_options(headers: &HeaderMap, body: &[u8], q: &Query) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    let parsed = if body.iter().all(u8::is_ascii_whitespace) { None } else { Some(decode_body(headers, body)?) };
    if let Some(b) = &parsed {
        opts.propagation = b.get("propagationPolicy").and_then(Value::as_str).map(str::to_owned);
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) && opts.propagation.is_none() {
            opts.propagation = Some("Orphan".into());
        }
        opts.grace_period = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = b.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_owned);
        opts.precondition_rv = b.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        opts.dry_run =
            b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v.as_str() == Some("All")));
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation = Some(p.to_owned());
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period =
            Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
    }
    if q.all("dryRun").iter().any(|v| v == "All") {
        opts.dry_run = true;
    }
    if let Some(p) = &opts.propagation
        && !matches!(p.as_str(), "Background" | "Foreground" | "Orphan")
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    Ok(opts)
}
