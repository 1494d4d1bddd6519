//! Upstream HTTP/1.1 connections owned by one client connection.
//!
//! A request from an HTTP/1.x client goes out on an upstream connection that belongs to that
//! client connection and is driven by its task: the request is written, the response read and
//! its body streamed back without waking another task or taking a lock shared with other
//! clients (a shared pool costs a task hop each way and a pool lock per request). Which
//! endpoint a request goes to is still chosen per request from the current snapshot, so an
//! endpoint that left rotation is never sent another request; the kept connections are keyed
//! by endpoint and reused only when the snapshot picks that endpoint again.

use std::{
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::{TrySendError, http1},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::snapshot::Snapshot;

/// How many idle upstream connections one client connection keeps (one per endpoint it was
/// sent to). A client whose requests spread over more endpoints than this uses the shared
/// pool for the others instead of connecting per request.
const MAX_IDLE: usize = 16;

/// One upstream connection: the handle requests are sent through and the connection itself,
/// polled by whoever holds it (the client connection's task).
pub struct Upstream {
    endpoint: SocketAddr,
    sender: http1::SendRequest<Incoming>,
    conn: http1::Connection<TokioIo<TcpStream>, Incoming>,
}

/// What a client connection has for one endpoint.
pub enum Slot {
    Idle(Box<Upstream>),
    /// Nothing kept, and room to keep a new connection.
    Free,
    /// Nothing kept and no room: use the shared pool.
    Full,
}

/// The idle upstream connections of one client connection.
#[derive(Default)]
pub struct Owned {
    // Only this client connection's task takes it (HTTP/1 requests are sequential), so it
    // is never contended; a mutex only because the connection's future must be `Send`.
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    // Boxed: a connection moves between this list, a request and a response body.
    #[allow(clippy::vec_box)]
    conns: Vec<Box<Upstream>>,
    /// The snapshot `conns` were last checked against (its address; only compared).
    snapshot: usize,
}

impl Owned {
    /// Takes the kept connection to `endpoint`. Connections to endpoints that are no longer
    /// ready in `snapshot` are closed first.
    pub fn take(&self, endpoint: SocketAddr, snapshot: &Snapshot) -> Slot {
        let Ok(mut idle) = self.idle.lock() else { return Slot::Full };
        let seen = std::ptr::from_ref(snapshot) as usize;
        if idle.snapshot != seen {
            idle.snapshot = seen;
            idle.conns.retain(|u| snapshot.ready_ips.contains(&u.endpoint.ip()));
        }
        match idle.conns.iter().position(|u| u.endpoint == endpoint) {
            Some(i) => Slot::Idle(idle.conns.swap_remove(i)),
            None if idle.conns.len() < MAX_IDLE => Slot::Free,
            None => Slot::Full,
        }
    }

    /// Keeps `upstream` for the next request to its endpoint.
    fn put(&self, upstream: Box<Upstream>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.conns.len() < MAX_IDLE
        {
            idle.conns.push(upstream);
        }
    }
}

impl Upstream {
    pub async fn connect(endpoint: SocketAddr, timeout: Duration) -> io::Result<Box<Upstream>> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
        Ok(Box::new(Upstream { endpoint, sender, conn }))
    }

    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// Waits until a kept connection can take a request; `false` when the upstream closed it
    /// (it may do so any time while it is idle).
    pub async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if Pin::new(&mut self.conn).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Sends `req` and drives the connection until the response's head arrives. When the
    /// error gives the request back, nothing of it reached the upstream.
    pub async fn send(
        &mut self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Incoming>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        let conn = &mut self.conn;
        let mut ended = false;
        poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if !ended && Pin::new(&mut *conn).poll(cx).is_ready() {
                // The connection is over; the response future now holds its error.
                ended = true;
                return response.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}

/// A response body read from an owned upstream connection, which it drives while it is
/// read and hands back to the client connection once the body is complete.
pub struct OwnedBody {
    body: Incoming,
    upstream: Option<Box<Upstream>>,
    owner: Arc<Owned>,
}

impl OwnedBody {
    pub fn new(body: Incoming, upstream: Box<Upstream>, owner: Arc<Owned>) -> Self {
        let mut this = OwnedBody { body, upstream: Some(upstream), owner };
        // An empty body (HEAD, 204, 304, Content-Length: 0) is never polled.
        if this.body.is_end_stream() {
            this.release();
        }
        this
    }

    fn release(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            self.owner.put(upstream);
        }
    }

    fn settle(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &frame {
            Some(Ok(_)) if !self.body.is_end_stream() => {}
            Some(Ok(_)) | None => self.release(),
            // The message broke off: the connection is not reusable.
            Some(Err(_)) => self.upstream = None,
        }
        Poll::Ready(frame)
    }
}

impl Body for OwnedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return this.settle(frame);
        }
        // Reading the body needs the connection polled: it moves bytes from the socket into
        // the body. Same task, so no wake-up crosses threads.
        if let Some(upstream) = this.upstream.as_mut()
            && Pin::new(&mut upstream.conn).poll(cx).is_ready()
        {
            // Closed after (or while) sending the body: whatever came is in the body already.
            this.upstream = None;
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => this.settle(frame),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
