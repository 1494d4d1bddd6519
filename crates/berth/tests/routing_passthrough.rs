//! WebSocket and gRPC through the router, as users of ingress controllers rely on them: a
//! WebSocket echo server (tokio-tungstenite) and a gRPC server (Debian's python3-grpcio,
//! `fixtures/grpc_echo.py`) on this machine, behind Services with hand-written
//! EndpointSlices, reached through one Ingress over plain HTTP (gRPC as h2c) and over TLS.
//! No pods, so no root needed. The Ingress also gets the router's address in its status, and
//! loses it when it moves to another IngressClass.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use berth_testkit::{Server, free_port, wait_for};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
};

/// The machine's primary address (what pods and nodes would use), loopback if it has none.
fn host_ip() -> IpAddr {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

/// A Service without selector whose one endpoint is `addr`, as a user writes it by hand.
fn manual_service(name: &str, port: u16, addr: SocketAddr, app_protocol: Option<&str>) -> String {
    let proto = app_protocol.map(|p| format!(", appProtocol: {p}")).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{port: {port}, targetPort: {target}{proto}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-manual
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{port: {target}{proto}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
"#,
        target = addr.port(),
        ip = addr.ip(),
    )
}

/// A CA and a certificate it signed for the test hosts, the latter as the Secret `pass-tls`;
/// returns the CA's PEM file.
fn make_tls_secret(s: &Server, dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Subjects must differ, or OpenSSL (the gRPC client's) takes the leaf for self-signed.
    ca_params.distinguished_name.push(DnType::CommonName, "berth test CA");
    let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["ws.example.test".to_owned(), "grpc.example.test".to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, "ws.example.test");
    let cert = params.signed_by(&key, &Issuer::new(ca_params, &ca_key)).expect("certificate");
    let ca = dir.join("ca.crt");
    let (crt, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&ca, ca_pem).expect("write CA");
    std::fs::write(&crt, cert.pem()).expect("write certificate");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    let (crt_s, key_s) = (crt.to_str().expect("utf-8 path"), key_file.to_str().expect("utf-8 path"));
    s.ok(&["create", "secret", "tls", "pass-tls", "--cert", crt_s, "--key", key_s]);
    ca
}

/// The status line of a plain `GET /` with `Host: host` to the router.
fn status(port: u16, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    String::from_utf8_lossy(&head[9..12]).parse().ok()
}

/// A WebSocket echo server: the first message tells what the upgrade request carried
/// (`X-Forwarded-For|X-Forwarded-Proto|Host|path`), then every message comes back as sent.
async fn websocket_echo(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let mut seen = String::new();
            #[allow(clippy::result_large_err)] // tungstenite's callback signature
            let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen =
                    format!("{}|{}|{}|{}", h("x-forwarded-for"), h("x-forwarded-proto"), h("host"), req.uri().path());
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
            if ws.send(Message::text(seen)).await.is_err() {
                return;
            }
            while let Some(Ok(msg)) = ws.next().await {
                let echo = match msg {
                    Message::Text(_) | Message::Binary(_) => msg,
                    // The library answers a Close on the next read, which then ends the stream.
                    _ => continue,
                };
                if ws.send(echo).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Talks to the echo server through the router over `stream`; returns the first message.
async fn websocket_session<S>(stream: S, host: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{host}/chat"), stream)
        .await
        .expect("WebSocket upgrade through the router");
    assert_eq!(resp.status(), 101);
    let first = match ws.next().await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("first message: {other:?}"),
    };
    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(ws.next().await.expect("echo").expect("echo"), Message::text("hello"));
    // Larger than any buffer on the way, so it crosses the splice in many pieces.
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send binary");
    assert_eq!(ws.next().await.expect("echo").expect("echo"), Message::binary(big));
    // Control frames pass too: the server's library answers a ping with a pong.
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    assert_eq!(ws.next().await.expect("pong").expect("pong"), Message::Pong(b"are you there".to_vec().into()));
    // A quiet connection stays up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ws.send(Message::text("still here")).await.expect("send after a pause");
    assert_eq!(ws.next().await.expect("echo").expect("echo"), Message::text("still here"));
    ws.close(None).await.expect("close");
    assert!(matches!(ws.next().await, Some(Ok(Message::Close(_))) | None), "close handshake answered");
    first
}

/// A TLS client trusting only `ca_pem`, offering `alpn`.
fn tls_connector(ca_pem: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(ca_pem).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.expect("PEM certificate")).expect("root certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The gRPC server of `fixtures/grpc_echo.py`, killed on drop.
struct GrpcServer(Child);

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpc_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc_echo.py")
}

/// Debian's python3, which has python3-grpcio (a python3 earlier on PATH may not).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

fn grpc_call(target: &str, authority: &str, ca: Option<&Path>) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(grpc_script()).args(["call", target, authority]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().expect("python3");
    assert!(out.status.success(), "gRPC client through {target}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

#[test]
fn websocket_and_grpc_pass_through_over_http_and_tls() {
    let http = free_port();
    let https = free_port();
    let s = Server::start(&[
        "--no-node",
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--https-listen",
        &format!("127.0.0.1:{https}"),
    ]);
    let ip = host_ip();
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let ws_listener = rt.block_on(tokio::net::TcpListener::bind((ip, 0))).expect("bind WebSocket server");
    let ws_addr = ws_listener.local_addr().expect("address");
    rt.spawn(websocket_echo(ws_listener));

    let grpc_addr = SocketAddr::new(ip, free_port());
    let mut child = Command::new(python())
        .arg(grpc_script())
        .args(["serve", &grpc_addr.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 gRPC server");
    let stdout = child.stdout.take().expect("stdout");
    let _grpc = GrpcServer(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("gRPC server output");
    assert_eq!(line.trim(), "ready", "gRPC server started (python3-grpcio from scripts/install-test-deps)");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = make_tls_secret(&s, dir.path());
    s.ok_stdin(&["apply", "-f", "-"], &manual_service("ws", 80, ws_addr, None));
    s.ok_stdin(&["apply", "-f", "-"], &manual_service("grpc", 50051, grpc_addr, Some("kubernetes.io/h2c")));
    s.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: passthrough}
spec:
  tls: [{hosts: [ws.example.test, grpc.example.test], secretName: pass-tls}]
  rules:
  - host: ws.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: ws, port: {number: 80}}}}]}
  - host: grpc.example.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: grpc, port: {number: 50051}}}}]}
"#,
    );
    // Routed once the router answers neither "no route" nor "no endpoints".
    for host in ["ws.example.test", "grpc.example.test"] {
        wait_for(&format!("{host} routed"), Duration::from_secs(30), || {
            status(http, host).filter(|c| *c != 404 && *c != 503)
        });
    }

    // The Ingress shows where the router answers, in kubectl's ADDRESS column.
    wait_for("Ingress address", Duration::from_secs(30), || {
        let out = s.ok(&["get", "ingress", "passthrough", "--no-headers"]);
        (out.split_whitespace().nth(3) == Some("127.0.0.1")).then_some(())
    });

    // WebSocket over plain HTTP, then over TLS with the Secret's certificate.
    let first = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.expect("connect");
        websocket_session(tcp, "ws.example.test").await
    });
    assert_eq!(first, "127.0.0.1|http|ws.example.test|/chat", "the upstream saw the client, scheme, host and path");
    let first = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https)).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("ws.example.test").expect("name");
        // Browsers open WebSockets on HTTP/1.1 connections.
        let tls = tls_connector(&ca, &[b"http/1.1"]).connect(name, tcp).await.expect("TLS with the Secret's CA");
        websocket_session(tls, "ws.example.test").await
    });
    assert_eq!(first, "127.0.0.1|https|ws.example.test|/chat");

    // gRPC: unary with metadata and trailers, 1 MiB messages, server and bidirectional
    // streaming, an error status; as h2c on the HTTP port and over TLS (ALPN h2).
    let want = serde_json::json!({
        "unary": "hello|127.0.0.1",
        "initial": "yes",
        "trailer": "done",
        "big": (1 << 20) + "|127.0.0.1".len(),
        "stream": ["0", "1", "2", "3", "4"],
        "bidi": ["A", "B", "C"],
        "fail": ["NOT_FOUND", "no such thing"],
    });
    assert_eq!(grpc_call(&format!("127.0.0.1:{http}"), "grpc.example.test", None), want, "gRPC over h2c");
    assert_eq!(grpc_call(&format!("127.0.0.1:{https}"), "grpc.example.test", Some(&ca)), want, "gRPC over TLS");
}

#[test]
fn ingress_address_follows_its_class() {
    let http = free_port();
    let s = Server::start(&["--no-node", "--http-listen", &format!("127.0.0.1:{http}")]);
    s.ok_stdin(&["apply", "-f", "-"], &manual_service("web", 80, SocketAddr::new(host_ip(), free_port()), None));
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: site}\nspec:\n  ingressClassName: berth\n  defaultBackend: {service: {name: web, port: {number: 80}}}\n",
    );
    // kubectl's ADDRESS column (NAME CLASS HOSTS ADDRESS PORTS AGE).
    let address = || s.ok(&["get", "ingress", "site", "--no-headers"]).split_whitespace().nth(3).map(str::to_owned);
    wait_for("Ingress address", Duration::from_secs(30), || (address().as_deref() == Some("127.0.0.1")).then_some(()));

    // Moved to a class this router does not own: the address it wrote is taken back.
    s.ok(&["patch", "ingress", "site", "--type", "merge", "-p", r#"{"spec":{"ingressClassName":"other"}}"#]);
    wait_for("Ingress address cleared", Duration::from_secs(30), || {
        let lb = s.json(&["get", "ingress", "site"])["status"]["loadBalancer"]["ingress"].clone();
        lb.as_array().is_none_or(Vec::is_empty).then_some(())
    });
    assert_ne!(address().as_deref(), Some("127.0.0.1"));

    // Back to berth: published again.
    s.ok(&["patch", "ingress", "site", "--type", "merge", "-p", r#"{"spec":{"ingressClassName":"berth"}}"#]);
    wait_for("Ingress address again", Duration::from_secs(30), || {
        (address().as_deref() == Some("127.0.0.1")).then_some(())
    });
}
