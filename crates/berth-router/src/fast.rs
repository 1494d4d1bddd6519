//! The HTTP/1.1 fast path for client connections, plain or TLS (HTTPS clients that chose
//! HTTP/2 by ALPN go straight to hyper).
//!
//! Why hand-written: every proxy crate (hyper's client and server included) decodes a message
//! into a header map and re-encodes it on the other side, and two hyper HTTP/1 state machines
//! per request were most of the router's user-space time. Here the client's request head is
//! parsed in place with `httparse` (hyper's own parser), the upstream request is written into
//! one buffer and sent with one write, and the upstream's response head likewise; bodies pass
//! through as bytes, framed by Content-Length or chunked encoding, never re-encoded.
//!
//! Only the common case is handled here. Anything else is handed, with the bytes already read
//! replayed first ([`Rewind`]), to the hyper path for the rest of the connection: HTTP/1.0,
//! HTTP/2's preface, CONNECT, absolute-form targets, `Upgrade`, `Expect`, transfer codings other
//! than `chunked`, h2c upstreams, heads hyper has to judge (bad syntax, too many headers).
//!
//! What it defends against:
//! - request smuggling: `Content-Length` with `Transfer-Encoding`, an invalid or duplicated
//!   differing `Content-Length`, and malformed chunk-size lines, chunk ends or trailers (bare
//!   LF, control bytes, no hex digit) are answered 400 and the connection closed; since body
//!   bytes pass through unchanged, the upstream can only see the framing this code checked;
//! - oversize heads (over [`MAX_HEAD`]: hyper's limits then apply) and header-read stalls
//!   (slowloris: a head must arrive within [`HEAD_TIMEOUT`] of waiting for it);
//! - responses it cannot frame the way the client will (`Content-Length` with
//!   `Transfer-Encoding`, differing lengths, an unrequested `101`): 502.
//!
//! Deadlines are one lazily armed timer per connection and kind (head read, upstream answer)
//! that only moves forward, not a timer-wheel entry per request.

use std::{
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use bytes::{Buf as _, Bytes};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::{
    proxy::{CONNECT_RETRIES, Proxy, page_text, unavailable_text},
    snapshot::{Backend, Choice, Snapshot, endpoint_token},
};

/// The largest request or response head handled here.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send a request head (also the keep-alive idle limit).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers per head (hyper's default limit is 100 too).
const MAX_HEADERS: usize = 100;
/// A chunk-size or trailer line, and all trailers together.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Idle upstream connections kept per client connection (one per endpoint).
const MAX_IDLE: usize = 16;
const READ_SIZE: usize = 16 * 1024;

/// Serves an HTTP/1 client connection (plain, or TLS once accepted), on the fast path while
/// it can; `scheme` is what `X-Forwarded-Proto` says.
pub async fn serve<C>(stream: C, peer: SocketAddr, scheme: &'static str, proxy: Arc<Proxy>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = Conn {
        client: stream,
        scheme,
        peer,
        peer_ip: peer.ip().to_string(),
        buf: Buffer::new(),
        out: Vec::with_capacity(1024),
        idle: Vec::new(),
        idle_snapshot: None,
        head_deadline: Deadline::default(),
        answer_deadline: Deadline::default(),
    };
    if conn.run(&proxy).await == End::HandOff {
        let pre = Bytes::copy_from_slice(conn.buf.data());
        let io = Rewind { pre, inner: conn.client };
        crate::serve_connection(TokioIo::new(io), peer, scheme, proxy).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    HandOff,
}

/// A read buffer: `data[start..end]` are bytes read and not yet used.
struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    fn new() -> Self {
        Buffer { data: vec![0; READ_SIZE], start: 0, end: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room at the end for a read: moves what is left to the front, grows a full buffer.
    fn room(&mut self) -> &mut [u8] {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.data.resize(self.data.len() * 2, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Reads once; `Ok(0)` at the end of the stream.
    fn poll_fill<R: AsyncRead + Unpin>(&mut self, io: &mut R, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(self.room());
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

/// A deadline backed by one timer that only moves forward: setting a later deadline costs
/// nothing; the timer re-arms itself when it fires early.
#[derive(Default)]
struct Deadline {
    at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn set(&mut self, at: Instant) {
        self.at = Some(at);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else { return Poll::Pending };
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(at);
        }
    }
}

/// Why a read gave nothing.
enum ReadFail {
    Eof,
    Timeout,
    Io,
}

/// Reads once more into `buf`, or fails at `deadline`.
async fn fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buffer,
    mut deadline: Option<&mut Deadline>,
) -> Result<(), ReadFail> {
    poll_fn(|cx| {
        if let Poll::Ready(r) = buf.poll_fill(io, cx) {
            return Poll::Ready(match r {
                Ok(0) => Err(ReadFail::Eof),
                Ok(_) => Ok(()),
                Err(_) => Err(ReadFail::Io),
            });
        }
        match deadline.as_mut() {
            Some(d) => d.poll(cx).map(|()| Err(ReadFail::Timeout)),
            None => Poll::Pending,
        }
    })
    .await
}

/// One kept upstream connection.
struct Upstream {
    endpoint: SocketAddr,
    stream: TcpStream,
    buf: Buffer,
}

impl Upstream {
    /// Whether a kept connection is still open and quiet: its readiness is checked without
    /// blocking (a short read cleared it, so this is usually no system call).
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes (responses only).
    Close,
}

/// What to do with a request head.
enum Plan {
    HandOff,
    /// Answer with this status and close (bad framing).
    Reject(StatusCode, &'static str),
    NotFound {
        head_len: usize,
        body: bool,
        head_method: bool,
        close: bool,
    },
    Forward(Forward),
}

struct Forward {
    head_len: usize,
    framing: Framing,
    close: bool,
    head_method: bool,
    backend: Arc<Backend>,
    sticky: Option<String>,
    /// What the access log shows, while it is on.
    log: Option<AccessLog>,
}

struct AccessLog {
    method: String,
    host: String,
    path: String,
    /// When the request head was complete (the clock is read only while the log is on).
    started: std::time::Instant,
}

struct Conn<C> {
    client: C,
    /// `http` or `https`.
    scheme: &'static str,
    peer: SocketAddr,
    peer_ip: String,
    buf: Buffer,
    out: Vec<u8>,
    idle: Vec<Upstream>,
    /// The snapshot `idle` was last checked against.
    idle_snapshot: Option<Arc<Snapshot>>,
    head_deadline: Deadline,
    answer_deadline: Deadline,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The comma-separated tokens of a header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// A Content-Length value: digits only.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Hop-by-hop headers a Connection header may name but this path never drops: they carry
/// the framing or the route.
fn protected(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"].iter().any(|p| name.eq_ignore_ascii_case(p))
}

/// Reads the request head at the front of `buf` and decides; `None` while it is incomplete.
/// For a request to forward, `out` receives the upstream request head.
fn plan(buf: &[u8], out: &mut Vec<u8>, snapshot: &Snapshot, peer_ip: &str, scheme: &str) -> Option<Plan> {
    // Uninitialised: filling 100 empty headers per head costs more than parsing a short one.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return (buf.len() >= MAX_HEAD).then_some(Plan::HandOff),
        // Bad syntax, too many headers, HTTP/2's preface: hyper answers those.
        Err(_) => return Some(Plan::HandOff),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Some(Plan::HandOff);
    };
    if method == "CONNECT" || !target.starts_with('/') || target.contains('#') {
        return Some(Plan::HandOff);
    }
    let mut host: Option<&str> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_headers = 0;
    let mut close = false;
    let mut te_trailers = false;
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut named: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if eq(name, "host") {
            if host.is_some() {
                return Some(Plan::Reject(StatusCode::BAD_REQUEST, "More than one Host header.\n"));
            }
            let Ok(value) = std::str::from_utf8(h.value) else { return Some(Plan::HandOff) };
            host = Some(value.trim());
        } else if eq(name, "content-length") {
            let Some(n) = content_length(h.value) else {
                return Some(Plan::Reject(StatusCode::BAD_REQUEST, "Invalid Content-Length.\n"));
            };
            if length.is_some_and(|l| l != n) {
                return Some(Plan::Reject(StatusCode::BAD_REQUEST, "Conflicting Content-Length headers.\n"));
            }
            length = Some(n);
        } else if eq(name, "transfer-encoding") {
            te_headers += 1;
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if eq(name, "connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") && !protected(t) {
                    named.push(t);
                }
            }
        } else if eq(name, "upgrade") || eq(name, "expect") {
            return Some(Plan::HandOff);
        } else if eq(name, "te") {
            te_trailers |= has_token(h.value, "trailers");
        } else if eq(name, "x-forwarded-for") {
            forwarded_for.push(h.value.trim_ascii());
        }
    }
    if te_headers > 0 && length.is_some() {
        return Some(Plan::Reject(StatusCode::BAD_REQUEST, "Both Content-Length and Transfer-Encoding.\n"));
    }
    if te_headers > 1 || (te_headers == 1 && !chunked) {
        return Some(Plan::HandOff);
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else { return Some(Plan::HandOff) };
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::None,
    };
    let head_method = method == "HEAD";
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(backend) = snapshot.find(host, path) else {
        return Some(Plan::NotFound { head_len, body: framing != Framing::None, head_method, close });
    };
    let sticky = backend.sticky_cookie.as_deref().and_then(|name| {
        req.headers
            .iter()
            .filter(|h| eq(h.name, "cookie"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|s| s.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    });

    // The upstream request: the client's head minus hop-by-hop headers, plus X-Forwarded-*.
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_written = false;
    for h in req.headers.iter() {
        let name = h.name;
        let skip = ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"]
            .iter()
            .chain(&["trailer", "te", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"])
            .any(|n| eq(name, n))
            || named.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()));
        if skip {
            continue;
        }
        if eq(name, "content-length") {
            // Equal duplicates are folded into one.
            if length_written {
                continue;
            }
            length_written = true;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for prev in &forwarded_for {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(scheme.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");

    let log = tracing::enabled!(target: "berth::access", tracing::Level::INFO).then(|| AccessLog {
        method: method.to_owned(),
        host: host.to_owned(),
        path: path.to_owned(),
        started: std::time::Instant::now(),
    });
    Some(Plan::Forward(Forward { head_len, framing, close, head_method, backend: Arc::clone(backend), sticky, log }))
}

/// Writes one of the router's own pages.
fn write_page(out: &mut Vec<u8>, status: StatusCode, message: &str, close: bool, head_method: bool) {
    let body = page_text(status, message);
    out.clear();
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\ncontent-length: {}\r\n{}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        )
        .as_bytes(),
    );
    if !head_method {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The upstream's response head, read from the front of its buffer.
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    /// The upstream connection may carry another request after this response.
    reusable: bool,
}

/// Parses a response head and writes what the client gets into `out`; `Err` with a message
/// for a head that cannot be forwarded faithfully.
fn response_head(
    buf: &[u8],
    head_method: bool,
    out: &mut Vec<u8>,
    extra: Option<&str>,
    close_client: bool,
) -> Result<Option<Head>, &'static str> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        _ => return Err("The upstream sent an invalid response.\n"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("The upstream sent an invalid response.\n");
    };
    if status == 101 {
        return Err("The upstream switched protocols unasked.\n");
    }
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut upstream_close = version == 0;
    let mut named: Vec<&[u8]> = Vec::new();
    for h in resp.headers.iter() {
        if eq(h.name, "content-length") {
            let n = content_length(h.value).ok_or("The upstream sent an invalid Content-Length.\n")?;
            if length.is_some_and(|l| l != n) {
                return Err("The upstream sent conflicting Content-Length headers.\n");
            }
            length = Some(n);
        } else if eq(h.name, "transfer-encoding") {
            codings.extend(tokens(h.value));
        } else if eq(h.name, "connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    upstream_close = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") && !protected(t) {
                    named.push(t);
                }
            }
        }
    }
    if !codings.is_empty() && length.is_some() {
        return Err("The upstream sent both Content-Length and Transfer-Encoding.\n");
    }
    // Chunked last and only there; other codings alone end with the connection.
    let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    if codings.iter().rev().skip(1).any(chunked) {
        return Err("The upstream sent an invalid Transfer-Encoding.\n");
    }
    let te = (!codings.is_empty()).then(|| codings.last().is_some_and(chunked));
    let informational = (100..200).contains(&status);
    let framing = if informational || head_method || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te, length) {
            (Some(true), _) if version == 1 => Framing::Chunked,
            (Some(_), _) => Framing::Close,
            (None, Some(0)) => Framing::None,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse checked it is three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let skip = ["connection", "keep-alive", "proxy-connection"].iter().any(|n| eq(h.name, n))
            || named.iter().any(|n| n.eq_ignore_ascii_case(h.name.as_bytes()));
        if !skip {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !informational {
        if let Some(cookie) = extra {
            out.extend_from_slice(b"set-cookie: ");
            out.extend_from_slice(cookie.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if close_client || framing == Framing::Close {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Head { len, status, framing, reusable: !upstream_close && framing != Framing::Close }))
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Follows a chunked body as its bytes pass through, to find where it ends.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    trailers: usize,
}

/// A line (up to LF) at the front of `data`: `Ok(None)` while incomplete. Lines end in CRLF
/// and hold no other control byte than tab: a bare LF or CR is refused, so no reader after
/// this one can see a line end where this one did not.
fn line(data: &[u8]) -> Result<Option<usize>, ()> {
    match data.iter().position(|b| *b == b'\n') {
        None if data.len() > MAX_LINE => Err(()),
        None => Ok(None),
        Some(0) => Err(()),
        Some(nl) => {
            let text = &data[..nl - 1];
            if data[nl - 1] != b'\r' || text.iter().any(|b| *b != b'\t' && (*b < 0x20 || *b == 0x7f)) {
                return Err(());
            }
            Ok(Some(nl + 1))
        }
    }
}

impl Chunked {
    /// How many bytes at the front of `data` belong to the body; `Err` on bad framing.
    fn scan(&mut self, data: &[u8]) -> Result<usize, ()> {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(n) = line(rest)? else { return Ok(pos) };
                    if !rest[0].is_ascii_hexdigit() {
                        return Err(());
                    }
                    match httparse::parse_chunk_size(&rest[..n]) {
                        Ok(httparse::Status::Complete((used, size))) if used == n => {
                            pos += n;
                            self.state = if size == 0 { ChunkState::Trailer } else { ChunkState::Data(size) };
                        }
                        _ => return Err(()),
                    }
                }
                ChunkState::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    if take < left {
                        self.state = ChunkState::Data(left - take);
                        return Ok(pos);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return if rest.first().is_none_or(|b| *b == b'\r') { Ok(pos) } else { Err(()) };
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(());
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(n) = line(rest)? else { return Ok(pos) };
                    pos += n;
                    if n == 2 {
                        self.state = ChunkState::Done;
                    } else {
                        self.trailers += n;
                        if self.trailers > MAX_TRAILERS || !rest[..n].contains(&b':') {
                            return Err(());
                        }
                    }
                }
            }
        }
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Tracks a body's remaining length as its bytes pass.
enum BodyLeft {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

impl BodyLeft {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyLeft::Done,
            Framing::Length(n) => BodyLeft::Length(n),
            Framing::Chunked => BodyLeft::Chunked(Chunked::default()),
            Framing::Close => BodyLeft::Close,
        }
    }

    /// How many bytes at the front of `data` belong to the body.
    fn take(&mut self, data: &[u8]) -> Result<usize, ()> {
        match self {
            BodyLeft::Done => Ok(0),
            BodyLeft::Close => Ok(data.len()),
            BodyLeft::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                if *left == 0 {
                    *self = BodyLeft::Done;
                }
                Ok(n as usize)
            }
            BodyLeft::Chunked(c) => {
                let n = c.scan(data)?;
                if c.done() {
                    *self = BodyLeft::Done;
                }
                Ok(n)
            }
        }
    }

    fn done(&self) -> bool {
        matches!(self, BodyLeft::Done)
    }
}

/// How forwarding one request ended.
enum Step {
    /// The connection goes on with the next request.
    Next,
    End(End),
}

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    async fn run(&mut self, proxy: &Proxy) -> End {
        loop {
            self.head_deadline.set(Instant::now() + HEAD_TIMEOUT);
            let (plan, snapshot) = loop {
                if !self.buf.is_empty() {
                    // The snapshot of the moment the head is complete, not of when it was awaited.
                    let snapshot = proxy.snapshot.load_full();
                    if let Some(plan) = plan(self.buf.data(), &mut self.out, &snapshot, &self.peer_ip, self.scheme) {
                        break (plan, snapshot);
                    }
                }
                if let Err(fail) = fill(&mut self.client, &mut self.buf, Some(&mut self.head_deadline)).await {
                    if matches!(fail, ReadFail::Timeout) {
                        tracing::debug!(peer = %self.peer, "no request head in time; closing");
                    }
                    return End::Closed;
                }
            };
            let step = match plan {
                Plan::HandOff => return End::HandOff,
                Plan::Reject(status, message) => {
                    write_page(&mut self.out, status, message, true, false);
                    self.finish_closed().await
                }
                Plan::NotFound { head_len, body, head_method, close } => {
                    // A request with a body is answered and the connection closed, not read.
                    let close = close || body;
                    self.buf.consume(head_len);
                    write_page(
                        &mut self.out,
                        StatusCode::NOT_FOUND,
                        "No route matches this host and path.\n",
                        close,
                        head_method,
                    );
                    if close { self.finish_closed().await } else { self.write_out().await }
                }
                Plan::Forward(f) => self.forward(proxy, &snapshot, f).await,
            };
            match step {
                Step::Next => {}
                Step::End(end) => return end,
            }
        }
    }

    async fn write_out(&mut self) -> Step {
        match send(&mut self.client, &self.out).await {
            Ok(()) => Step::Next,
            Err(_) => Step::End(End::Closed),
        }
    }

    /// Writes `out` and closes the connection.
    async fn finish_closed(&mut self) -> Step {
        if send(&mut self.client, &self.out).await.is_ok() {
            let _ = self.client.shutdown().await;
        }
        Step::End(End::Closed)
    }

    /// The kept connection to `endpoint`, if it is still good. Kept connections to endpoints
    /// no longer ready in `snapshot` are closed first.
    fn take_idle(&mut self, endpoint: SocketAddr, snapshot: &Arc<Snapshot>) -> Option<Upstream> {
        if self.idle.is_empty() {
            return None;
        }
        if !self.idle_snapshot.as_ref().is_some_and(|s| Arc::ptr_eq(s, snapshot)) {
            self.idle_snapshot = Some(Arc::clone(snapshot));
            self.idle.retain(|u| snapshot.ready_ips.contains(&u.endpoint.ip()));
        }
        let i = self.idle.iter().position(|u| u.endpoint == endpoint)?;
        let mut up = self.idle.swap_remove(i);
        up.alive().then_some(up)
    }

    fn keep(&mut self, up: Upstream) {
        if self.idle.len() >= MAX_IDLE {
            self.idle.swap_remove(0);
        }
        self.idle.push(up);
    }

    /// An upstream connection for `first`, or for another endpoint of `backend` while none
    /// could be connected to (nothing was sent yet, so any request may go elsewhere).
    async fn upstream<'b>(
        &mut self,
        proxy: &Proxy,
        snapshot: &Arc<Snapshot>,
        backend: &'b Backend,
        first: Choice<'b>,
    ) -> Result<Upstream, Option<Choice<'b>>> {
        let mut tried = [first.endpoint; CONNECT_RETRIES + 1];
        let mut failed = 0;
        let mut choice = first;
        loop {
            if choice.pool.h2c {
                return Err(Some(choice));
            }
            if let Some(up) = self.take_idle(choice.endpoint, snapshot) {
                return Ok(up);
            }
            match connect(choice.endpoint, proxy.timeouts.connect).await {
                Ok(up) => return Ok(up),
                Err(e) => {
                    tracing::debug!(endpoint = %choice.endpoint, error = %e, "upstream unreachable; trying another");
                    tried[failed] = choice.endpoint;
                    failed += 1;
                    let next =
                        (failed <= CONNECT_RETRIES).then(|| backend.choose(rand::random(), &tried[..failed])).flatten();
                    match next {
                        Some(next) => choice = next,
                        None => return Err(None),
                    }
                }
            }
        }
    }

    async fn forward(&mut self, proxy: &Proxy, snapshot: &Arc<Snapshot>, f: Forward) -> Step {
        let backend = &*f.backend;
        let pinned = f.sticky.as_deref().and_then(|t| backend.pinned(t));
        let Some(first) = pinned.or_else(|| backend.next()) else {
            let close = f.close || f.framing != Framing::None;
            self.buf.consume(f.head_len);
            let message = unavailable_text(backend);
            write_page(&mut self.out, StatusCode::SERVICE_UNAVAILABLE, &message, close, f.head_method);
            self.log(&f, 503, None);
            return if close { self.finish_closed().await } else { self.write_out().await };
        };
        // The upstream head is in `out`; it stays there while connecting.
        let head = std::mem::take(&mut self.out);
        let mut up = match self.upstream(proxy, snapshot, backend, first).await {
            Ok(up) => up,
            // An h2c endpoint: hyper speaks HTTP/2 to it, for the rest of this connection.
            Err(Some(_)) => {
                self.out = head;
                return Step::End(End::HandOff);
            }
            Err(None) => {
                self.out = head;
                let close = f.close || f.framing != Framing::None;
                self.buf.consume(f.head_len);
                write_page(
                    &mut self.out,
                    StatusCode::BAD_GATEWAY,
                    "The upstream could not be reached.\n",
                    close,
                    f.head_method,
                );
                self.log(&f, 502, None);
                return if close { self.finish_closed().await } else { self.write_out().await };
            }
        };
        self.out = head;
        let endpoint = up.endpoint;
        self.buf.consume(f.head_len);

        // The head and whatever of the body has arrived, in one write; then the rest.
        let mut body = BodyLeft::new(f.framing);
        match body.take(self.buf.data()) {
            Ok(n) => {
                self.out.extend_from_slice(&self.buf.data()[..n]);
                self.buf.consume(n);
            }
            Err(()) => return self.bad_body().await,
        }
        if up.stream.write_all(&self.out).await.is_err() {
            return self.upstream_failed(&f, endpoint).await;
        }
        while !body.done() {
            if fill(&mut self.client, &mut self.buf, None).await.is_err() {
                // The client went away mid-body: the upstream connection is not reusable.
                return Step::End(End::Closed);
            }
            let n = match body.take(self.buf.data()) {
                Ok(n) => n,
                Err(()) => return self.bad_body().await,
            };
            if up.stream.write_all(&self.buf.data()[..n]).await.is_err() {
                return self.upstream_failed(&f, endpoint).await;
            }
            self.buf.consume(n);
        }

        // The response head, within the response timeout.
        self.answer_deadline.set(Instant::now() + proxy.timeouts.response);
        let cookie = backend.sticky_cookie.as_ref().filter(|_| pinned.is_none_or(|p| p.endpoint != endpoint));
        let cookie = cookie.map(|name| format!("{name}={}; Path=/; HttpOnly", endpoint_token(&endpoint)));
        let head = loop {
            if !up.buf.is_empty() {
                match response_head(up.buf.data(), f.head_method, &mut self.out, cookie.as_deref(), f.close) {
                    Ok(Some(head)) if (100..200).contains(&head.status) => {
                        // Informational: passed on, then the real answer.
                        up.buf.consume(head.len);
                        if send(&mut self.client, &self.out).await.is_err() {
                            return Step::End(End::Closed);
                        }
                        continue;
                    }
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(message) => {
                        tracing::warn!(%endpoint, "{}", message.trim_end());
                        write_page(&mut self.out, StatusCode::BAD_GATEWAY, message, f.close, f.head_method);
                        self.log(&f, 502, Some(endpoint));
                        return if f.close { self.finish_closed().await } else { self.write_out().await };
                    }
                }
            }
            match fill(&mut up.stream, &mut up.buf, Some(&mut self.answer_deadline)).await {
                Ok(()) => {}
                Err(ReadFail::Timeout) => {
                    write_page(
                        &mut self.out,
                        StatusCode::GATEWAY_TIMEOUT,
                        "The upstream did not answer in time.\n",
                        f.close,
                        f.head_method,
                    );
                    self.log(&f, 504, Some(endpoint));
                    return if f.close { self.finish_closed().await } else { self.write_out().await };
                }
                Err(_) => return self.upstream_failed(&f, endpoint).await,
            }
        };
        self.log(&f, head.status, Some(endpoint));
        up.buf.consume(head.len);
        let mut body = BodyLeft::new(head.framing);
        let close_client = f.close || head.framing == Framing::Close;
        match body.take(up.buf.data()) {
            Ok(n) => {
                self.out.extend_from_slice(&up.buf.data()[..n]);
                up.buf.consume(n);
            }
            Err(()) => return self.broken_response(endpoint).await,
        }
        if send(&mut self.client, &self.out).await.is_err() {
            return Step::End(End::Closed);
        }
        while !body.done() {
            match fill(&mut up.stream, &mut up.buf, None).await {
                Ok(()) => {}
                Err(ReadFail::Eof) if matches!(body, BodyLeft::Close) => break,
                // Broke off mid-body: the client must not wait for the rest.
                Err(_) => return self.broken_response(endpoint).await,
            }
            let n = match body.take(up.buf.data()) {
                Ok(n) => n,
                Err(()) => return self.broken_response(endpoint).await,
            };
            if send(&mut self.client, &up.buf.data()[..n]).await.is_err() {
                return Step::End(End::Closed);
            }
            up.buf.consume(n);
        }
        // Bytes after the response: the upstream is out of step, never reuse it.
        if head.reusable && up.buf.is_empty() {
            self.keep(up);
        }
        if close_client {
            let _ = self.client.shutdown().await;
            return Step::End(End::Closed);
        }
        Step::Next
    }

    /// A request body with bad chunked framing: 400, and the connection closed.
    async fn bad_body(&mut self) -> Step {
        write_page(&mut self.out, StatusCode::BAD_REQUEST, "Invalid chunked request body.\n", true, false);
        self.finish_closed().await
    }

    /// The upstream broke off after the request went out: 502, and the client's connection
    /// closed (the rest of its request body, if any, is not read).
    async fn upstream_failed(&mut self, f: &Forward, endpoint: SocketAddr) -> Step {
        tracing::warn!(%endpoint, "upstream request failed");
        write_page(&mut self.out, StatusCode::BAD_GATEWAY, "The upstream failed to answer.\n", true, f.head_method);
        self.log(f, 502, Some(endpoint));
        self.finish_closed().await
    }

    /// The response broke off after its head was sent: close, so the client sees it end.
    async fn broken_response(&mut self, endpoint: SocketAddr) -> Step {
        tracing::warn!(%endpoint, "upstream response broke off");
        let _ = self.client.shutdown().await;
        Step::End(End::Closed)
    }

    fn log(&self, f: &Forward, status: u16, upstream: Option<SocketAddr>) {
        if let Some(AccessLog { method, host, path, started }) = &f.log {
            tracing::info!(
                target: "berth::access",
                client = %self.peer.ip(), %method, %host, %path, status,
                upstream = ?upstream, ms = started.elapsed().as_millis() as u64,
            );
        }
    }
}

/// Writes all of `data` to the client and flushes it: a TLS stream may keep the last record
/// until flushed (a plain TCP stream's flush does nothing).
async fn send<C: AsyncWrite + Unpin>(client: &mut C, data: &[u8]) -> io::Result<()> {
    client.write_all(data).await?;
    client.flush().await
}

async fn connect(endpoint: SocketAddr, timeout: Duration) -> io::Result<Upstream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Upstream { endpoint, stream, buf: Buffer::new() })
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewind<C> {
    pre: Bytes,
    inner: C,
}

impl<C: AsyncRead + Unpin> AsyncRead for Rewind<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Rewind<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8]) -> Result<(usize, bool), ()> {
        let mut c = Chunked::default();
        let n = c.scan(body)?;
        Ok((n, c.done()))
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-sum: 1\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(scan_all(body), Ok((body.len() - 16, true)));
        // Byte by byte gives the same end.
        let mut c = Chunked::default();
        let mut total = 0;
        for i in 0..body.len() - 16 {
            total += c.scan(&body[total..=i]).expect("valid");
        }
        assert!(c.done());
        assert_eq!(total, body.len() - 16);
    }

    #[test]
    fn chunked_framing_errors_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5;a\nb\r\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\n\n",
            b"fffffffffffffffff\r\n",
            b" 5\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn planned(head: &str) -> Plan {
        plan(head.as_bytes(), &mut Vec::new(), &Snapshot::default(), "10.0.0.1", "http").expect("complete head")
    }

    #[test]
    fn smuggling_heads_are_rejected_and_unusual_ones_handed_to_hyper() {
        for head in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(matches!(planned(head), Plan::Reject(StatusCode::BAD_REQUEST, _)), "{head}");
        }
        for head in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(planned(head), Plan::HandOff), "{head}");
        }
        assert!(matches!(planned("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Plan::NotFound { .. }));
    }

    #[test]
    fn response_heads_drop_hop_by_hop_headers() {
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nhi";
        let head =
            response_head(raw, false, &mut out, Some("s=1; Path=/; HttpOnly"), true).expect("valid").expect("complete");
        assert_eq!(head.len, raw.len() - 2);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nset-cookie: s=1; Path=/; HttpOnly\r\nconnection: close\r\n\r\n"
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(response_head(bad, false, &mut out, None, false).is_err());
        }
    }
}
