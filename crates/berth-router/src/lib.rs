//! Berth's HTTP router: serves `networking.k8s.io/v1` Ingresses (IngressClass `berth`) and
//! `berth.dev/v1` Routes on the machine's HTTP and HTTPS ports, straight to the ready
//! endpoints of their Services.
//!
//! Everything it knows comes from watches through the API (kube-rs reflectors). After any
//! change a new [`snapshot::Snapshot`] is built and swapped in atomically; requests read the
//! snapshot of the moment, so reconfiguring never touches established connections.

mod fast;
mod owned;
pub mod proxy;
pub mod route;
pub mod snapshot;
pub mod tls;
mod watch;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use proxy::Timeouts;
pub use snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("API: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("starting the router's threads: {0}")]
    Thread(std::io::Error),
}

/// How the router is set up.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Plain HTTP listener; `None` for none.
    pub http: Option<SocketAddr>,
    /// HTTPS listener; `None` for none.
    pub https: Option<SocketAddr>,
    /// Suffix of generated Route hosts (`<machine-ip>.nip.io` by default).
    pub route_suffix: String,
    pub timeouts: Timeouts,
    /// The machine's address: what Ingress status shows when a listener binds every address.
    pub address: Option<IpAddr>,
    /// Threads serving connections, each running its own single-threaded event loop (at least 1).
    pub threads: usize,
}

/// A running router's view, shared with the node agent so that a terminating pod is taken
/// out of rotation before it is stopped.
#[derive(Clone)]
pub struct RouterHandle {
    snapshot: Arc<ArcSwap<Snapshot>>,
    applied: tokio::sync::watch::Receiver<u64>,
}

impl RouterHandle {
    /// Waits until no EndpointSlice lists `ip` as ready and the router has applied that, or
    /// until `limit` passes.
    pub async fn wait_out_of_rotation(&self, ip: IpAddr, limit: Duration) {
        let mut applied = self.applied.clone();
        let deadline = tokio::time::Instant::now() + limit;
        while self.snapshot.load().ready_ips.contains(&ip) {
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// The snapshot in use right now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// Binds the listeners (so that a taken port fails `berth server` at once), installs the
/// Route CRD and the IngressClass, and starts watching; serves until `stop`.
pub async fn start(
    client: kube::Client,
    config: RouterConfig,
    stop: CancellationToken,
) -> Result<RouterHandle, RouterError> {
    let http = match config.http {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| RouterError::Listen { addr, source })?),
        None => None,
    };
    let https = match config.https {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| RouterError::Listen { addr, source })?),
        None => None,
    };
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    watch::install(&client).await?;
    let naming = route::HostNaming {
        suffix: config.route_suffix.clone(),
        http_port: http.as_ref().and_then(|l| l.local_addr().ok()).map_or(80, |a| a.port()),
    };
    // Ingresses show where the router answers: its listener's address, or the machine's when it
    // listens on all of them; nothing when it does not listen at all.
    let published = [http.as_ref(), https.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|l| l.local_addr().ok())
        .and_then(|a| if a.ip().is_unspecified() { config.address } else { Some(a.ip()) });
    let (applied_tx, applied) = tokio::sync::watch::channel(0u64);
    tokio::spawn(watch::run(client, Arc::clone(&snapshot), naming, published, applied_tx, stop.clone()));
    let proxy = Arc::new(proxy::Proxy::new(Arc::clone(&snapshot), config.timeouts));
    let tls = match https {
        Some(_) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(Arc::clone(&snapshot))?))),
        None => None,
    };
    for (listener, scheme) in [(&http, "HTTP"), (&https, "HTTPS")] {
        if let Some(l) = listener {
            tracing::info!(addr = ?l.local_addr().ok(), threads = config.threads, "router serving {scheme}");
        }
    }
    // The listeners leave this runtime: connections are served on the router's own threads.
    let listen = |l: Option<TcpListener>| -> Result<Option<std::net::TcpListener>, RouterError> {
        l.map(|l| {
            let addr = l.local_addr().map_err(RouterError::Thread)?;
            l.into_std().map_err(|source| RouterError::Listen { addr, source })
        })
        .transpose()
    };
    let (http, https) = (listen(http)?, listen(https)?);
    for i in 0..config.threads.max(1) {
        let clone = |l: &Option<std::net::TcpListener>| l.as_ref().map(|l| l.try_clone()).transpose();
        let (http, https) = (clone(&http).map_err(RouterError::Thread)?, clone(&https).map_err(RouterError::Thread)?);
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RouterError::Thread)?;
        let (proxy, tls, stop) = (Arc::clone(&proxy), tls.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("berth-router-{i}"))
            .spawn(move || runtime.block_on(serve_thread(http, https, tls, proxy, stop)))
            .map_err(RouterError::Thread)?;
    }
    Ok(RouterHandle { snapshot, applied })
}

/// One router thread: accepts on both listeners (each thread holds a copy of them, the kernel
/// hands each new connection to one) and serves every connection it accepted, so that a
/// request never crosses threads; ends with `stop` (connections still open end with it).
async fn serve_thread(
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: Arc<proxy::Proxy>,
    stop: CancellationToken,
) {
    for (listener, tls) in [(http, None), (https, tls)] {
        let Some(listener) = listener else { continue };
        match TcpListener::from_std(listener) {
            Ok(listener) => drop(tokio::spawn(serve(listener, tls, Arc::clone(&proxy), stop.clone()))),
            Err(e) => tracing::error!(error = %e, "router cannot watch its listener"),
        }
    }
    stop.cancelled().await;
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: Arc<proxy::Proxy>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "router accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => fast::serve(stream, peer, "http", proxy).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    // HTTP/2 (chosen by ALPN) is hyper's; HTTP/1 starts on the fast path.
                    Ok(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                        serve_connection(TokioIo::new(stream), peer, "https", proxy).await
                    }
                    Ok(stream) => fast::serve(stream, peer, "https", proxy).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, peer: SocketAddr, scheme: &'static str, proxy: Arc<proxy::Proxy>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Upstream connections of this client connection, used while it speaks HTTP/1.x.
    let owned = Arc::new(owned::Owned::default());
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = Arc::clone(&proxy);
        let owned = (req.version() <= http::Version::HTTP_11).then(|| Arc::clone(&owned));
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer, scheme, owned.as_ref()).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
