//! One HTTP/1.1 connection per simulated client, over TLS (Berth) or plain TCP (etcd's gateway,
//! busybox httpd). Each client owns its connection, as `wrk` or a separate kubectl would.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where requests go and how to authenticate.
pub struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    token: Option<String>,
}

impl Endpoint {
    /// An HTTPS endpoint trusting only `ca_pem`, sending `token` as a bearer token if given.
    pub fn tls(addr: SocketAddr, ca_pem: &[u8], token: Option<String>) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.context("parsing the CA certificate")?)?;
        }
        if roots.is_empty() {
            anyhow::bail!("no CA certificate found");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only: every simulated client gets its own connection, none are multiplexed.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::IpAddress(addr.ip().into());
        Ok(Self { addr, tls: Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)), token })
    }

    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None, token: None }
    }

    pub async fn connect(self: &Arc<Self>) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.context("TLS handshake")?;
                handshake(stream).await?
            }
            None => handshake(tcp).await?,
        };
        Ok(Conn { sender, endpoint: Arc::clone(self) })
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // The connection ends when its client is dropped or the server goes away; both are normal here.
        let _ = connection.await;
    });
    Ok(sender)
}

/// What one request sends.
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub accept: Option<&'static str>,
    pub body: Bytes,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: Method::GET, path: path.into(), content_type: None, accept: None, body: Bytes::new() }
    }

    pub fn json(method: Method, path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self { method, path: path.into(), content_type: Some("application/json"), accept: None, body: body.into() }
    }

    pub fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    pub fn with_accept(mut self, accept: &'static str) -> Self {
        self.accept = Some(accept);
        self
    }
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    endpoint: Arc<Endpoint>,
}

impl Conn {
    /// Sends a request and returns the response with its body still streaming.
    pub async fn send(&mut self, req: &Req) -> Result<Response<Incoming>> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&req.path)
            .header(header::HOST, self.endpoint.addr.to_string());
        if let Some(token) = &self.endpoint.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(content_type) = req.content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder = builder.header(header::ACCEPT, req.accept.unwrap_or("application/json"));
        let request = builder.body(Full::new(req.body.clone()))?;
        self.sender.ready().await.context("connection closed")?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Sends a request and reads the whole response body.
    pub async fn call(&mut self, req: &Req) -> Result<(StatusCode, Bytes)> {
        let response = self.send(req).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Like `call`, but any status other than 2xx is an error carrying the body.
    pub async fn call_ok(&mut self, req: &Req) -> Result<Bytes> {
        let (status, body) = self.call(req).await?;
        if !status.is_success() {
            return Err(anyhow!("{} {} answered {status}: {}", req.method, req.path, String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }
}
