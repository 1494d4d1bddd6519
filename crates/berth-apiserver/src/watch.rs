//! `?watch=true`: a chunked stream of `WatchEvent`s fed by the store's in-memory watch.

use std::time::Duration;

use axum::{body::Body, response::Response};
use berth_core::{ApiError, ResourceInfo};
use berth_store::{Error as StoreError, EventKind, Revision};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    handlers::{Query, Shared},
    objects::{ListOptions, decode_value, parse_rv},
    table,
};

/// Upstream's default when the client gives no `timeoutSeconds` (min-request-timeout).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
const PRE_TIMEOUT_BOOKMARK: Duration = Duration::from_secs(2);

struct Encoder {
    info: ResourceInfo,
    table: bool,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, ty: &str, obj: &Value) -> Bytes {
        let object = if self.table && ty != "ERROR" && ty != "BOOKMARK" {
            let columns = if self.sent_columns { Vec::new() } else { table::column_definitions(&self.info) };
            self.sent_columns = true;
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": obj.pointer("/metadata/resourceVersion")},
                   "columnDefinitions": columns, "rows": [table::row(&self.info, obj, false)]})
        } else {
            obj.clone()
        };
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

pub async fn serve(
    state: &Shared,
    info: &ResourceInfo,
    ns: Option<&str>,
    opts: ListOptions,
    q: &Query,
    table: bool,
) -> Result<Response, ApiError> {
    let timeout = match q.get("timeoutSeconds") {
        Some(t) if !t.is_empty() => Duration::from_secs(
            t.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        _ => DEFAULT_TIMEOUT,
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let objects = state.objects.clone();
    let rv = q.get("resourceVersion").unwrap_or("");
    // From "" or "0": the current state as ADDED events, then changes after it.
    let (initial, after) = if rv.is_empty() || rv == "0" {
        let mut all = opts.clone();
        all.limit = None;
        all.continue_key = None;
        let page = objects.list(info, ns, &all).await?;
        (page.items, page.revision)
    } else {
        (Vec::new(), parse_rv(rv)?)
    };
    let prefix = info.namespace_prefix(ns);
    let mut enc = Encoder { info: info.clone(), table, sent_columns: false };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let watch = objects.store.watch(&prefix, after).await;
    let mut watch = match watch {
        Ok(w) => w,
        Err(StoreError::Compacted { requested, compacted }) => {
            let status = ApiError::expired(format!("too old resource version: {requested} ({compacted})")).to_status();
            let body = enc.event("ERROR", &status);
            return Ok(stream_response(Body::from(body), table));
        }
        Err(StoreError::FutureRevision { .. }) => {
            // A revision ahead of ours: treat it as "now", as clients only need later events.
            let current = objects.store.current_revision().await.map_err(|e| ApiError::internal(e.to_string()))?;
            objects.store.watch(&prefix, current).await.map_err(|e| ApiError::internal(e.to_string()))?
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let info = info.clone();
    tokio::spawn(async move {
        for obj in &initial {
            if tx.send(Ok(enc.event("ADDED", obj))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // As upstream, one bookmark also goes out shortly before the timeout, so a client can
        // resume from where the server's view was when the watch ends.
        let pre_timeout = tokio::time::sleep(timeout.saturating_sub(PRE_TIMEOUT_BOOKMARK));
        tokio::pin!(pre_timeout);
        let mut pre_timeout_sent = false;
        let mut last_rv = after;
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        let bookmark_event = |enc: &mut Encoder, rv: Revision| {
            let b = json!({"kind": info.gvk.kind, "apiVersion": info.gvk.api_version(), "metadata": {"resourceVersion": rv.to_string()}});
            enc.event("BOOKMARK", &b)
        };
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark_event(&mut enc, last_rv))).await.is_err() { return; }
                }
                () = &mut pre_timeout, if bookmarks && !pre_timeout_sent => {
                    pre_timeout_sent = true;
                    if tx.send(Ok(bookmark_event(&mut enc, last_rv))).await.is_err() { return; }
                }
                ev = watch.next() => {
                    let Some(ev) = ev else { return };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            // The client re-watches from the last revision it saw.
                            tracing::debug!(error = %e, "watch ended");
                            return;
                        }
                    };
                    last_rv = ev.revision;
                    let Ok(cur) = decode_value(&info, &ev.value, ev.revision) else { continue };
                    let cur_match = opts.labels.matches_object(&cur) && opts.fields.matches_object(&cur);
                    let prev_match = ev.prev_value.as_ref().and_then(|p| decode_value(&info, p, ev.revision).ok())
                        .is_some_and(|p| opts.labels.matches_object(&p) && opts.fields.matches_object(&p));
                    let ty = match ev.kind {
                        EventKind::Delete if cur_match || prev_match => "DELETED",
                        EventKind::Delete => continue,
                        EventKind::Put => match (prev_match, cur_match) {
                            (true, true) => "MODIFIED",
                            (false, true) => "ADDED",
                            (true, false) => "DELETED",
                            (false, false) => continue,
                        },
                    };
                    if tx.send(Ok(enc.event(ty, &cur))).await.is_err() { return; }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok(stream_response(body, table))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn stream_response(body: Body, table: bool) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let ct = if table { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    resp
}
