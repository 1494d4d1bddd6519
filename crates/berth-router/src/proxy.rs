//! Serving one request: find its backend in the current snapshot, forward it to a ready
//! endpoint, and stream the answer back (WebSocket and other upgrades are spliced).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
    header::{self, CONNECTION, COOKIE, HOST, SET_COOKIE, UPGRADE},
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};

use crate::{
    owned::{Owned, OwnedBody, Slot, Upstream},
    snapshot::{Backend, Choice, Snapshot, endpoint_token},
};

/// What the shared pool sends upstream (a body, or nothing on a retry).
type ReqBody = BoxBody<Bytes, hyper::Error>;

/// A response body: the router's own page, or the upstream's, streamed as it comes (no box).
pub enum RespBody {
    Page(Full<Bytes>),
    /// From the shared pool (HTTP/2 clients, h2c upstreams, upgrades).
    Pooled(Incoming),
    /// From an upstream connection owned by the client connection.
    Owned(OwnedBody),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Page(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            RespBody::Pooled(b) => std::pin::Pin::new(b).poll_frame(cx),
            RespBody::Owned(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Page(b) => b.is_end_stream(),
            RespBody::Pooled(b) => b.is_end_stream(),
            RespBody::Owned(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Page(b) => b.size_hint(),
            RespBody::Pooled(b) => b.size_hint(),
            RespBody::Owned(b) => b.size_hint(),
        }
    }
}

/// Limits applied to every proxied request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the upstream's response headers.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(5), response: Duration::from_secs(60) }
    }
}

/// Extra tries when the upstream could not be reached at all (never once it saw the request).
pub(crate) const CONNECT_RETRIES: usize = 2;

pub struct Proxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    http1: Client<HttpConnector, ReqBody>,
    h2c: Client<HttpConnector, ReqBody>,
    pub(crate) timeouts: Timeouts,
}

impl Proxy {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, timeouts: Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new()).http2_only(true).build(connector);
        Proxy { snapshot, http1, h2c, timeouts }
    }

    /// Answers one request that arrived at `peer` over `scheme` (`http` or `https`). `owned`
    /// holds the upstream connections of an HTTP/1.x client connection.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        owned: Option<&Arc<Owned>>,
    ) -> Response<RespBody> {
        let started = Instant::now();
        // A shared copy of the client's host (no allocation for HTTP/1.1).
        let host = request_host(&req).unwrap_or_else(|| HeaderValue::from_static(""));
        let host_str = host.to_str().unwrap_or("");
        // What the access log needs, taken only while it is on.
        let logged = tracing::enabled!(target: "berth::access", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let snapshot = self.snapshot.load_full();
        let (response, upstream) = match snapshot.find(host_str, req.uri().path()) {
            None => (page(StatusCode::NOT_FOUND, "No route matches this host and path.\n".into()), None),
            Some(backend) => {
                let sticky = backend.sticky_cookie.as_deref().and_then(|name| cookie(req.headers(), name));
                let pinned = sticky.as_deref().and_then(|t| backend.pinned(t));
                let first = pinned.or_else(|| backend.next());
                match first {
                    None => (unavailable(backend), None),
                    Some(choice) => {
                        let upgrade = wants_upgrade(&req);
                        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
                        prepare(&mut req, &host, peer, scheme, upgrade);
                        let (resp, endpoint) = match owned {
                            Some(owned) if !upgrade && !choice.pool.h2c && req.method() != http::Method::CONNECT => {
                                self.forward_owned(req, &snapshot, backend, choice, owned).await
                            }
                            _ => self.forward(req, backend, choice).await,
                        };
                        let mut resp = resp;
                        if let (Some(name), Some(ep)) = (&backend.sticky_cookie, endpoint)
                            && pinned.is_none_or(|p| p.endpoint != ep)
                            && let Ok(v) =
                                HeaderValue::from_str(&format!("{name}={}; Path=/; HttpOnly", endpoint_token(&ep)))
                        {
                            resp.headers_mut().append(SET_COOKIE, v);
                        }
                        if let Some(on_client) = client_upgrade
                            && resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        {
                            resp = splice(on_client, resp);
                        }
                        (resp, endpoint)
                    }
                }
            }
        };
        if let Some((method, path)) = logged {
            tracing::info!(
                target: "berth::access",
                client = %peer.ip(), %method, host = %host_str, path = %path, status = response.status().as_u16(),
                upstream = ?upstream, ms = started.elapsed().as_millis() as u64,
            );
        }
        response
    }

    /// Sends the request over the client connection's own upstream connection to `choice`,
    /// trying other endpoints while none could be connected to (the request is untouched
    /// until a connection is up, so any request may be retried then).
    async fn forward_owned(
        &self,
        mut req: Request<Incoming>,
        snapshot: &Snapshot,
        backend: &Backend,
        choice: Choice<'_>,
        owned: &Arc<Owned>,
    ) -> (Response<RespBody>, Option<SocketAddr>) {
        // HTTP/1.1 upstreams take the origin form; the Host header is already set.
        if req.uri().authority().is_some() {
            *req.uri_mut() = req.uri().path_and_query().cloned().map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        *req.version_mut() = Version::HTTP_11;
        let mut tried = [choice.endpoint; CONNECT_RETRIES + 1];
        let mut failed = 0;
        let mut stale = 0;
        let mut choice = choice;
        loop {
            let kept = match owned.take(choice.endpoint, snapshot) {
                Slot::Idle(mut upstream) => {
                    match tokio::time::timeout(self.timeouts.response, upstream.ready()).await {
                        Ok(true) => Some(upstream),
                        _ => None,
                    }
                }
                Slot::Free => None,
                Slot::Full => return self.forward(req, backend, choice).await,
            };
            let mut upstream = match kept {
                Some(upstream) => upstream,
                None => match Upstream::connect(choice.endpoint, self.timeouts.connect).await {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        tracing::debug!(endpoint = %choice.endpoint, error = %e, "upstream unreachable; trying another");
                        tried[failed] = choice.endpoint;
                        failed += 1;
                        let next = (failed <= CONNECT_RETRIES)
                            .then(|| backend.choose(rand::random(), &tried[..failed]))
                            .flatten();
                        match next {
                            Some(next) if next.pool.h2c => return self.forward(req, backend, next).await,
                            Some(next) => {
                                choice = next;
                                continue;
                            }
                            None => {
                                return (
                                    page(StatusCode::BAD_GATEWAY, "The upstream could not be reached.\n".into()),
                                    None,
                                );
                            }
                        }
                    }
                },
            };
            match tokio::time::timeout(self.timeouts.response, upstream.send(req)).await {
                Ok(Ok(resp)) => {
                    let endpoint = upstream.endpoint();
                    return (
                        resp.map(|b| RespBody::Owned(OwnedBody::new(b, upstream, Arc::clone(owned)))),
                        Some(endpoint),
                    );
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Not sent: a kept connection the upstream had just closed. Once more on a new one.
                    Some(back) if stale == 0 => {
                        stale += 1;
                        req = back;
                    }
                    _ => {
                        tracing::warn!(endpoint = %choice.endpoint, error = %e.error(), "upstream request failed");
                        return (page(StatusCode::BAD_GATEWAY, "The upstream failed to answer.\n".into()), None);
                    }
                },
                Err(_) => {
                    return (
                        page(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time.\n".into()),
                        Some(choice.endpoint),
                    );
                }
            }
        }
    }

    /// Sends the request through the shared pool to `choice`, trying other endpoints while
    /// none could be connected to.
    async fn forward(
        &self,
        req: Request<Incoming>,
        backend: &Backend,
        choice: Choice<'_>,
    ) -> (Response<RespBody>, Option<SocketAddr>) {
        // A request without a body can be rebuilt for another endpoint; one with a body cannot.
        let replayable = req.body().is_end_stream();
        let (parts, body) = req.into_parts();
        let mut body = Some(body.boxed());
        let mut tried = [choice.endpoint; CONNECT_RETRIES + 1];
        let mut attempts = 0;
        let mut choice = choice;
        loop {
            tried[attempts] = choice.endpoint;
            attempts += 1;
            let mut upstream = Request::from_parts(parts.clone(), ());
            *upstream.uri_mut() = upstream_uri(&parts.uri, choice.authority());
            let client = if choice.pool.h2c {
                *upstream.version_mut() = Version::HTTP_2;
                &self.h2c
            } else {
                *upstream.version_mut() = Version::HTTP_11;
                &self.http1
            };
            let Some(b) = body.take() else {
                return (page(StatusCode::BAD_GATEWAY, "The upstream could not be reached.\n".into()), None);
            };
            let upstream = upstream.map(|()| b);
            let sent = tokio::time::timeout(self.timeouts.response, client.request(upstream)).await;
            match sent {
                Ok(Ok(resp)) => return (resp.map(RespBody::Pooled), Some(choice.endpoint)),
                Ok(Err(e)) if e.is_connect() && replayable && attempts <= CONNECT_RETRIES => {
                    tracing::debug!(endpoint = %choice.endpoint, error = %e, "upstream unreachable; trying another");
                    let Some(next) = backend.choose(rand::random(), &tried[..attempts]) else {
                        return (page(StatusCode::BAD_GATEWAY, "The upstream could not be reached.\n".into()), None);
                    };
                    choice = next;
                    body = Some(Empty::new().map_err(|never| match never {}).boxed());
                }
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %choice.endpoint, error = %e, "upstream request failed");
                    return (page(StatusCode::BAD_GATEWAY, "The upstream failed to answer.\n".into()), None);
                }
                Err(_) => {
                    return (
                        page(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time.\n".into()),
                        Some(choice.endpoint),
                    );
                }
            }
        }
    }
}

/// `original`'s path and query on `authority`, sharing both (no parsing, no copies).
fn upstream_uri(original: &Uri, authority: Authority) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(original.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The host the client asked for: the Host header, else the URI's authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers()
        .get(HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()))
}

fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; `te: trailers` is, for gRPC.
fn prepare<B>(req: &mut Request<B>, host: &HeaderValue, peer: SocketAddr, scheme: &str, upgrade: bool) {
    let headers = req.headers_mut();
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .filter(|t| !t.is_empty() && t != "upgrade")
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "trailer"] {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
    let te_trailers = headers.get(header::TE).is_some_and(|v| v.to_str().is_ok_and(|s| s.contains("trailers")));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    let client = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client,
    };
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }));
    if !host.is_empty() {
        headers.insert("x-forwarded-host", host.clone());
        // HTTP/2 clients send :authority only; HTTP/1.1 upstreams need a Host header.
        headers.entry(HOST).or_insert_with(|| host.clone());
    }
}

/// Joins the client's and the upstream's upgraded connections once both sides switched.
fn splice(on_client: hyper::upgrade::OnUpgrade, mut resp: Response<RespBody>) -> Response<RespBody> {
    let on_upstream = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(on_client, on_upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
    resp
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn unavailable(backend: &Backend) -> Response<RespBody> {
    page(StatusCode::SERVICE_UNAVAILABLE, unavailable_text(backend))
}

/// Why a route has nowhere to send a request, naming its Services.
pub(crate) fn unavailable_text(backend: &Backend) -> String {
    match backend.service_names().as_slice() {
        [] => "No Service is configured for this route.\n".to_owned(),
        [one] => format!("Service {one} has no ready endpoints.\n"),
        many => format!("Services {} have no ready endpoints.\n", many.join(", ")),
    }
}

/// The text of a small error page.
pub(crate) fn page_text(status: StatusCode, message: &str) -> String {
    format!("{} {}\n\n{message}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// A small plain-text error page.
pub fn page(status: StatusCode, message: String) -> Response<RespBody> {
    let body = page_text(status, &message);
    let mut resp = Response::new(RespBody::Page(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
