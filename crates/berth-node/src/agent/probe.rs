//! Startup, readiness and liveness probes (httpGet over HTTP or HTTPS, tcpSocket, exec, grpc)
//! with upstream's timing fields and defaults. One task per running container attempt; it reports threshold
//! crossings to the pod worker and an `Unhealthy` event for every failed probe.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::events::EventSink;
use crate::runtime::{ContainerHandle, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeKind {
    fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// What a probe task tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSignal {
    /// The startup probe passed (or there is none): the container counts as started.
    Started,
    Ready(bool),
    /// Liveness or startup failed past its threshold: the container must be restarted.
    Failed {
        kind: ProbeKind,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    pub container: String,
    pub attempt: u32,
    pub signal: ProbeSignal,
}

/// Upstream defaults for unset fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |value: Option<i32>, default: u64| Duration::from_secs(value.map_or(default, |v| v.max(0) as u64));
        let count = |value: Option<i32>, default: u32| value.map_or(default, |v| v.max(1) as u32);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Everything a probe needs to reach its container.
#[derive(Clone)]
pub struct ProbeContext {
    pub runtime: Arc<Runtime>,
    pub handle: ContainerHandle,
    pub container: Container,
    pub pod_ip: Ipv4Addr,
    pub pod_ref: ObjectReference,
    pub events: EventSink,
    pub updates: mpsc::Sender<ProbeUpdate>,
}

/// Aborts the probe task when the container attempt it watches is done with.
pub struct ProbeTask(tokio::task::JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(context: ProbeContext) -> ProbeTask {
    ProbeTask(tokio::spawn(run(context)))
}

async fn send(context: &ProbeContext, signal: ProbeSignal) {
    let update =
        ProbeUpdate { container: context.container.name.clone(), attempt: context.handle.record.attempt, signal };
    let _ = context.updates.send(update).await;
}

async fn run(context: ProbeContext) {
    if let Some(startup) = context.container.startup_probe.clone()
        && let Err(message) = until_threshold(&context, &startup, ProbeKind::Startup).await
    {
        send(&context, ProbeSignal::Failed { kind: ProbeKind::Startup, message }).await;
        return;
    }
    send(&context, ProbeSignal::Started).await;
    let readiness = async {
        match context.container.readiness_probe.clone() {
            Some(probe) => watch_readiness(&context, &probe).await,
            None => send(&context, ProbeSignal::Ready(true)).await,
        }
    };
    let liveness = async {
        if let Some(probe) = context.container.liveness_probe.clone()
            && let Err(message) = until_threshold(&context, &probe, ProbeKind::Liveness).await
        {
            send(&context, ProbeSignal::Failed { kind: ProbeKind::Liveness, message }).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// Startup: probes until success (Ok) or `failureThreshold` failures in a row (Err).
/// Liveness: probes forever while healthy; Err after `failureThreshold` failures in a row.
async fn until_threshold(context: &ProbeContext, probe: &Probe, kind: ProbeKind) -> Result<(), String> {
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0;
    let mut successes = 0;
    loop {
        match check(context, probe, timing.timeout).await {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if kind == ProbeKind::Startup && successes >= timing.success_threshold {
                    return Ok(());
                }
            }
            Err(message) => {
                successes = 0;
                failures += 1;
                unhealthy(context, kind, &message);
                if failures >= timing.failure_threshold {
                    return Err(message);
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

async fn watch_readiness(context: &ProbeContext, probe: &Probe) {
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    // Nothing reported yet: the worker may hold either value (it keeps the last reported
    // readiness of a container it found again after a restart).
    let mut reported: Option<bool> = None;
    let (mut successes, mut failures) = (0, 0);
    let first_check = tokio::time::Instant::now();
    let mut rechecks = Rechecks::default();
    loop {
        let next = tokio::time::Instant::now() + timing.period;
        let mut result = check(context, probe, timing.timeout).await;
        // Until the first verdict, a failed check is retried within the period (see
        // `quick_recheck`); a success there stands for this period's check.
        if let Err(message) = &result
            && reported.is_none()
            && timing.success_threshold == 1
        {
            if rechecks.first_failure.is_empty() {
                rechecks.first_failure.clone_from(message);
            }
            if quick_recheck(context, probe, next, &mut rechecks).await {
                result = Ok(());
            }
        }
        match result {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if reported != Some(true) && successes >= timing.success_threshold {
                    if reported.is_none() {
                        tracing::debug!(
                            target: "berth_node::runtime",
                            container = %context.handle.record.id,
                            since_first_check_ms = first_check.elapsed().as_secs_f64() * 1e3,
                            rechecks = rechecks.checks,
                            longest_recheck_ms = rechecks.longest.as_secs_f64() * 1e3,
                            first_failure = %rechecks.first_failure,
                            "first readiness probe success"
                        );
                    }
                    reported = Some(true);
                    send(context, ProbeSignal::Ready(true)).await;
                }
            }
            Err(message) => {
                successes = 0;
                failures += 1;
                unhealthy(context, ProbeKind::Readiness, &message);
                if reported != Some(false) && failures >= timing.failure_threshold {
                    reported = Some(false);
                    send(context, ProbeSignal::Ready(false)).await;
                }
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

/// A container's first readiness check usually runs before its program listens: upstream
/// would then wait a whole period (at least a second) to check again. Berth re-checks a
/// quarter of a millisecond later, then spaced by an eighth of the time waited so far (a
/// check costs a refused connection while nothing listens), until the period is over: a pod
/// is Ready at most about an eighth of its own start time after it serves. Only a container
/// with no readiness verdict yet is re-checked this way, and the re-checks count towards no
/// threshold and raise no event, so the probe's documented behaviour is otherwise unchanged.
async fn quick_recheck(
    context: &ProbeContext,
    probe: &Probe,
    until: tokio::time::Instant,
    rechecks: &mut Rechecks,
) -> bool {
    let began = tokio::time::Instant::now();
    loop {
        let delay = recheck_delay(began.elapsed());
        let at = tokio::time::Instant::now() + delay;
        if at >= until {
            tracing::debug!(
                target: "berth_node::runtime",
                container = %context.handle.record.id,
                checks = rechecks.checks,
                longest_ms = rechecks.longest.as_secs_f64() * 1e3,
                last_failure = %rechecks.last_failure,
                "quick readiness re-checks found no success within the period"
            );
            return false;
        }
        sleep_fine(delay).await;
        let checked = tokio::time::Instant::now();
        let result = check(context, probe, until - at).await;
        rechecks.checks += 1;
        rechecks.longest = rechecks.longest.max(checked.elapsed());
        match result {
            Ok(()) => return true,
            Err(message) => rechecks.last_failure = message,
        }
    }
}

/// What a container's quick re-checks did, for the debug log (a pod Ready late: did the
/// program start late, or did a check hang?).
#[derive(Debug, Default)]
struct Rechecks {
    checks: u32,
    longest: Duration,
    first_failure: String,
    last_failure: String,
}

/// The wait before the next quick re-check, `waited` after the first failed check.
fn recheck_delay(waited: Duration) -> Duration {
    (waited / 8).max(FIRST_RECHECK)
}

const FIRST_RECHECK: Duration = Duration::from_micros(250);

/// Sleeps `delay` to within microseconds: tokio's timer rounds up to whole milliseconds, which
/// would add a millisecond on average to when a starting pod is seen serving. A one-shot
/// timerfd, waited on through the runtime's reactor; tokio's timer if that cannot be made.
async fn sleep_fine(delay: Duration) {
    use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
    let timer = || -> std::io::Result<_> {
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        let value = Timespec { tv_sec: delay.as_secs() as i64, tv_nsec: i64::from(delay.subsec_nanos()).max(1) };
        let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
        rustix::time::timerfd_settime(
            &fd,
            TimerfdTimerFlags::empty(),
            &Itimerspec { it_interval: zero, it_value: value },
        )?;
        crate::runtime::watch_fd(fd)
    };
    match timer() {
        Ok(fd) => {
            if fd.readable().await.is_err() {
                tokio::time::sleep(delay).await;
            }
        }
        Err(_) => tokio::time::sleep(delay).await,
    }
}

fn unhealthy(context: &ProbeContext, kind: ProbeKind, message: &str) {
    context.events.warning(&context.pod_ref, "Unhealthy", format!("{} probe failed: {message}", kind.label()));
}

fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).map_err(|_| format!("invalid port number: {number}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("couldn't find port: {name} in container {}", container.name)),
    }
}

/// Runs the probe once: Ok on success, Err with upstream-like wording otherwise.
pub async fn check(context: &ProbeContext, probe: &Probe, timeout: Duration) -> Result<(), String> {
    if let Some(action) = &probe.http_get {
        let port = resolve_port(&context.container, &action.port)?;
        let host = action.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| context.pod_ip.to_string());
        let path = action.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".to_owned());
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        let tls = action.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        let headers: Vec<(String, String)> =
            action.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let url = format!("{}://{host}:{port}{path}", if tls { "https" } else { "http" });
        return match tokio::time::timeout(timeout, http_status(&host, port, &path, &headers, tls)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(error)) => Err(format!("Get \"{url}\": {error}")),
            Err(_) => Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    if let Some(action) = &probe.tcp_socket {
        let port = resolve_port(&context.container, &action.port)?;
        let host = action.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| context.pod_ip.to_string());
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("dial tcp {host}:{port}: connect: {error}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(action) = &probe.exec {
        let command = action.command.clone().unwrap_or_default();
        return match context.runtime.exec_sync(&context.handle, &command, timeout).await {
            Ok(output) if output.timed_out => Err(format!("command {command:?} timed out")),
            Ok(output) if output.exit_code == 0 => Ok(()),
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.output).trim().to_owned();
                Err(if text.is_empty() {
                    format!("command {command:?} exited with {}", output.exit_code)
                } else {
                    text
                })
            }
            Err(error) => Err(error.to_string()),
        };
    }
    if let Some(action) = &probe.grpc {
        let port = u16::try_from(action.port).map_err(|_| format!("invalid port number: {}", action.port))?;
        let service = action.service.clone().unwrap_or_default();
        let host = context.pod_ip.to_string();
        return match tokio::time::timeout(timeout, grpc_health(&host, port, &service)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timeout: health rpc did not complete within {timeout:?}")),
        };
    }
    Err("probe has no handler".to_owned())
}

/// A minimal HTTP/1.1 GET returning the status code; over TLS without verifying the
/// server's certificate when `tls`, as upstream's prober does.
async fn http_status(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    tls: bool,
) -> std::io::Result<u16> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    if !tls {
        return request_status(stream, host, port, path, headers).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio_rustls::TlsConnector::from(insecure_tls()?).connect(name, stream).await?;
    request_status(stream, host, port, path, headers).await
}

async fn request_status<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("Host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("User-Agent") {
        request.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !has("Accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response"))
}

/// Upstream's prober skips certificate verification (`InsecureSkipVerify`): probes check
/// liveness, not identity, and pods mostly serve self-signed certificates.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_tls() -> std::io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// The gRPC health checking protocol's `ServingStatus` names.
fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".to_owned(),
        1 => "SERVING".to_owned(),
        2 => "NOT_SERVING".to_owned(),
        3 => "SERVICE_UNKNOWN".to_owned(),
        other => other.to_string(),
    }
}

/// gRPC status code names, for messages.
fn grpc_code_name(code: &str) -> &str {
    match code {
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "7" => "PermissionDenied",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        other => other,
    }
}

/// Reads a protobuf varint at the start of `bytes`: (value, length).
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The `status` field (1) of a `grpc.health.v1.HealthCheckResponse`; absent means 0.
fn health_status(message: &[u8]) -> Option<u64> {
    let mut rest = message;
    let mut status = 0;
    while !rest.is_empty() {
        let (key, used) = varint(rest)?;
        rest = &rest[used..];
        match key & 7 {
            0 => {
                let (value, used) = varint(rest)?;
                if key >> 3 == 1 {
                    status = value;
                }
                rest = &rest[used..];
            }
            2 => {
                let (len, used) = varint(rest)?;
                let end = used.checked_add(usize::try_from(len).ok()?)?;
                rest = rest.get(end..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

/// One call of `grpc.health.v1.Health/Check` over cleartext HTTP/2 (as upstream's prober:
/// no TLS). The two tiny messages are encoded here by hand; a protobuf toolchain for one
/// string field and one enum would be far larger than this.
async fn grpc_health(host: &str, port: u16, service: &str) -> Result<(), String> {
    let address = format!("{host}:{port}");
    let connect_failed =
        |error: &dyn std::fmt::Display| format!("timeout: failed to connect service {address:?}: {error}");
    let rpc_failed = |error: &dyn std::fmt::Display| format!("error: health rpc probe failed: {error}");
    let tcp = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| connect_failed(&e))?;
    let (client, connection) = h2::client::handshake(tcp).await.map_err(|e| connect_failed(&e))?;
    let connection = tokio::spawn(connection);
    let _stop = AbortOnDrop(connection);
    let mut client = client.ready().await.map_err(|e| rpc_failed(&e))?;
    // HealthCheckRequest { string service = 1; }, behind gRPC's 5-byte message prefix.
    let service = service.as_bytes();
    let mut message = Vec::with_capacity(service.len() + 12);
    if !service.is_empty() {
        message.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            message.push((len as u8) | 0x80);
            len >>= 7;
        }
        message.push(len as u8);
        message.extend_from_slice(service);
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len()).map_err(|e| rpc_failed(&e))?.to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.32")
        .body(())
        .map_err(|e| rpc_failed(&e))?;
    let (response, mut body_out) = client.send_request(request, false).map_err(|e| rpc_failed(&e))?;
    body_out.send_data(bytes::Bytes::from(frame), true).map_err(|e| rpc_failed(&e))?;
    let (parts, mut body) = response.await.map_err(|e| rpc_failed(&e))?.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| rpc_failed(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|e| rpc_failed(&e))?;
    // A failed call may answer with headers only ("trailers-only").
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let code = field("grpc-status").unwrap_or_else(|| "2".to_owned());
    if code != "0" {
        let description = field("grpc-message").unwrap_or_default();
        if code == "12" {
            return Err(format!(
                "this server doesn't implement the grpc health protocol (grpc.health.v1.Health): {description}"
            ));
        }
        return Err(rpc_failed(&format!("rpc error: code = {} desc = {description}", grpc_code_name(&code))));
    }
    let status = data.get(5..).and_then(health_status).ok_or_else(|| rpc_failed(&"malformed HealthCheckResponse"))?;
    if status == 1 {
        Ok(())
    } else {
        Err(format!("service unhealthy (responded with {:?})", serving_status_name(status)))
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn timing_defaults_match_upstream() {
        let timing = Timing::of(&Probe::default());
        assert_eq!(timing.period, Duration::from_secs(10));
        assert_eq!(timing.timeout, Duration::from_secs(1));
        assert_eq!((timing.success_threshold, timing.failure_threshold), (1, 3));
        assert_eq!(timing.initial_delay, Duration::ZERO);
    }

    #[test]
    fn named_ports_resolve() {
        let container = Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&container, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(resolve_port(&container, &IntOrString::Int(81)), Ok(81));
        assert!(resolve_port(&container, &IntOrString::String("grpc".into())).is_err());
    }

    #[test]
    fn health_responses_decode() {
        assert_eq!(health_status(&[0x08, 0x01]), Some(1));
        assert_eq!(health_status(&[]), Some(0));
        assert_eq!(health_status(&[0x12, 0x01, 0x41, 0x08, 0x02]), Some(2));
        assert_eq!(health_status(&[0x08]), None);
        assert_eq!(serving_status_name(2), "NOT_SERVING");
    }

    #[tokio::test]
    async fn http_status_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let n = socket.read(&mut request).await.unwrap();
            socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let code =
            http_status("127.0.0.1", port, "/healthz", &[("X-Probe".into(), "yes".into())], false).await.unwrap();
        assert_eq!(code, 503);
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("X-Probe: yes\r\n") && request.contains("User-Agent: kube-probe/"));
    }

    #[test]
    fn quick_rechecks_start_at_a_quarter_millisecond_and_grow_with_the_wait() {
        assert_eq!(recheck_delay(Duration::ZERO), Duration::from_micros(250));
        assert_eq!(recheck_delay(Duration::from_millis(1)), Duration::from_micros(250));
        assert_eq!(recheck_delay(Duration::from_millis(4)), Duration::from_micros(500));
        assert_eq!(recheck_delay(Duration::from_millis(80)), Duration::from_millis(10));
        // About 60 checks in a one-second period at most.
        let (mut waited, mut checks) = (Duration::ZERO, 0);
        while waited < Duration::from_secs(1) {
            waited += recheck_delay(waited);
            checks += 1;
        }
        assert!(checks < 90, "{checks} re-checks in a second");
    }

    #[tokio::test]
    async fn fine_sleeps_never_end_early() {
        for micros in [1, 250, 1_500] {
            let began = std::time::Instant::now();
            sleep_fine(Duration::from_micros(micros)).await;
            let slept = began.elapsed();
            assert!(slept >= Duration::from_micros(micros), "{micros} us: slept {slept:?}");
        }
    }
}
