//! Berth's API server: the Kubernetes REST API over HTTPS on top of a [`berth_store::Store`].
//!
//! Code map: [`request`] parses paths; [`handlers`] authenticates and dispatches verbs;
//! [`objects`] holds the per-write rules (metadata, defaults, validation, deletion);
//! [`patch`], [`watch`], [`subresources`], [`crd`], [`discovery`] and [`table`] serve one
//! concern each; [`pki`] creates the credentials on first start.

pub mod admission;
pub mod cache;
pub mod crd;
pub mod discovery;
pub mod handlers;
pub mod metrics;
pub mod objects;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod request;
pub mod service_ranges;
pub mod stream;
pub mod subresources;
pub mod table;
pub mod watch;

use std::{net::SocketAddr, sync::Arc};

use berth_core::Registry;
use berth_store::DynStore;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use handlers::AppState;
pub use objects::Objects;
pub use service_ranges::ServiceRanges;
pub use subresources::{LogOptions, PodIo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("start-up: {0}")]
    Startup(#[from] berth_core::ApiError),
}

/// Default limit on request bodies (upstream's is 3 MiB for most writes).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
    /// `host:port` that clients use to reach the server.
    pub server_address: String,
}

/// Builds the shared state: registry, store, bootstrap objects and CRDs.
pub async fn build_state(
    store: DynStore,
    token: String,
    server_address: String,
    pod_io: Option<Arc<dyn PodIo>>,
    service_ranges: ServiceRanges,
) -> Result<handlers::Shared, Error> {
    let objects = Arc::new(Objects::with_service_ranges(store, Registry::with_builtins(), service_ranges));
    let api_port = server_address.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(6443);
    objects.bootstrap(api_port).await?;
    let state = Arc::new(AppState {
        objects,
        token,
        server_address,
        max_body_bytes: MAX_BODY_BYTES,
        pod_io,
        api_metrics: metrics::ApiMetrics::default(),
    });
    crd::load_all(&state).await?;
    Ok(state)
}

pub fn router(state: handlers::Shared) -> axum::Router {
    axum::Router::new().fallback(handlers::handle).with_state(state)
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, Error> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| Error::Tls(e.to_string()))?
        .ok_or_else(|| Error::Tls("no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds the listener; call [`serve`] to accept connections.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })
}

/// Serves HTTPS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: &ServerConfig,
    state: handlers::Shared,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let acceptor = tls_acceptor(&config.cert_pem, &config.key_pem)?;
    let app = router(state);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
    Ok(())
}
