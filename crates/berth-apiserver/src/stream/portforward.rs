//! `pods/portforward`: a SPDY/3.1 session (see [`super::spdy`]) carried in the binary
//! messages of a WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`, as kubectl 1.30+
//! speaks it. For each local connection kubectl opens an `error` and a `data` stream sharing
//! a `requestID`; the data stream is piped to `podIP:port` and a failure to connect is
//! written to the error stream.

use std::{collections::HashMap, net::IpAddr};

use axum::{
    extract::{
        FromRequestParts, Request,
        ws::{Message, WebSocketUpgrade},
    },
    response::Response,
};
use berth_core::ApiError;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use super::spdy::{Codec, Frame, RST_CANCEL, RST_PROTOCOL_ERROR};

pub const PORT_FORWARD_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Serves `pods/portforward` for a running pod with an IP.
pub async fn port_forward(pod: &Value, req: Request) -> Result<Response, ApiError> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let ip: IpAddr = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have an IP address yet")))?;
    if super::spdy_upgrade::is_spdy_upgrade(req.headers()) {
        return Ok(plain_spdy(req, ip));
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(|_| {
        ApiError::bad_request(format!(
            "port-forward needs an upgrade to WebSocket (subprotocol {PORT_FORWARD_PROTOCOL}) or to SPDY/3.1"
        ))
    })?;
    let upgrade = upgrade.protocols([PORT_FORWARD_PROTOCOL]);
    if upgrade.selected_protocol().is_none() {
        return Err(ApiError::bad_request(format!("unsupported streaming protocol: offer {PORT_FORWARD_PROTOCOL}")));
    }
    Ok(upgrade.on_upgrade(move |socket| {
        let (mut sink, from_client) = socket.split();
        let incoming = from_client.filter_map(|msg| async move {
            match msg {
                Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
                Ok(Message::Close(_)) | Err(_) => Some(Err(())),
                Ok(_) => None,
            }
        });
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if sink.send(Message::Binary(bytes)).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        serve_session(Box::pin(incoming), tx, ip)
    }))
}

/// `Upgrade: SPDY/3.1` on the HTTP/1.1 connection itself (kubectl before 1.31): the same
/// session on the raw upgraded bytes.
fn plain_spdy(mut req: Request, ip: IpAddr) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        let (read_half, mut write_half) = tokio::io::split(upgraded);
        let incoming = futures::stream::unfold(read_half, |mut r| async move {
            let mut chunk = vec![0u8; 32 * 1024];
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok::<Bytes, ()>(Bytes::from(chunk)), r))
                }
            }
        });
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write_half.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = write_half.shutdown().await;
        });
        serve_session(Box::pin(incoming), tx, ip).await;
    });
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
    headers.insert("X-Stream-Protocol-Version", http::HeaderValue::from_static("portforward.k8s.io"));
    resp
}

/// What the session loop hears from the per-connection tasks.
enum Outgoing {
    Frame(Frame),
}

struct DataStream {
    to_pod: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<()>,
}

/// Serves one SPDY session: `incoming` yields the client's bytes (an `Err` ends the
/// session), encoded frames go to `to_client`.
async fn serve_session(
    mut from_client: impl futures::Stream<Item = Result<Bytes, ()>> + Unpin,
    to_client: mpsc::Sender<Bytes>,
    pod_ip: IpAddr,
) {
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(64);
    // One writer owns the compression context, so header blocks stay in order.
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(Outgoing::Frame(frame)) = out_rx.recv().await {
            let mut buf = BytesMut::new();
            if let Err(e) = codec.encode(&frame, &mut buf) {
                tracing::debug!(error = %e, "encoding a SPDY frame");
                continue;
            }
            if to_client.send(buf.freeze()).await.is_err() {
                return;
            }
        }
    });
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    let mut data_streams: HashMap<u32, DataStream> = HashMap::new();
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    'session: while let Some(Ok(bytes)) = from_client.next().await {
        buf.extend_from_slice(&bytes);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad SPDY stream from port-forward client");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, .. } => {
                    let header =
                        |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
                    let reply = Frame::SynReply { stream_id, fin: false, headers: Vec::new() };
                    if out_tx.send(Outgoing::Frame(reply)).await.is_err() {
                        break 'session;
                    }
                    let request_id = header("requestid").unwrap_or_default();
                    match header("streamtype").as_deref() {
                        Some("error") => {
                            error_streams.insert(request_id, stream_id);
                        }
                        Some("data") => {
                            let Some(port) = header("port").and_then(|p| p.parse::<u16>().ok()) else {
                                let rst = Frame::RstStream { stream_id, status: RST_PROTOCOL_ERROR };
                                let _ = out_tx.send(Outgoing::Frame(rst)).await;
                                continue;
                            };
                            let error_stream = error_streams.get(&request_id).copied();
                            let (to_pod, rx) = mpsc::channel::<Bytes>(16);
                            let task = tokio::spawn(pipe(pod_ip, port, stream_id, error_stream, rx, out_tx.clone()));
                            data_streams.insert(stream_id, DataStream { to_pod: Some(to_pod), task });
                        }
                        _ => {
                            let rst = Frame::RstStream { stream_id, status: RST_PROTOCOL_ERROR };
                            let _ = out_tx.send(Outgoing::Frame(rst)).await;
                        }
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(stream) = data_streams.get_mut(&stream_id) {
                        if !data.is_empty()
                            && let Some(tx) = &stream.to_pod
                            && tx.send(data).await.is_err()
                        {
                            stream.to_pod = None;
                        }
                        if fin {
                            // The client's half is done: the pod sees end-of-file.
                            stream.to_pod = None;
                        }
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(stream) = data_streams.remove(&stream_id) {
                        stream.task.abort();
                    }
                    error_streams.retain(|_, id| *id != stream_id);
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(Outgoing::Frame(Frame::Ping { id })).await;
                }
                Frame::GoAway { .. } => break 'session,
                Frame::SynReply { .. } | Frame::WindowUpdate { .. } | Frame::Other { .. } => {}
            }
        }
    }
    for (_, stream) in data_streams {
        stream.task.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}

/// Connects to the pod's port and copies both ways until the pod's side ends.
async fn pipe(
    pod_ip: IpAddr,
    port: u16,
    stream_id: u32,
    error_stream: Option<u32>,
    mut from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Outgoing>,
) {
    let conn = match TcpStream::connect((pod_ip, port)).await {
        Ok(conn) => conn,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod_ip}: {e}");
            tracing::debug!(%message, "port-forward");
            if let Some(error_id) = error_stream {
                let data = Frame::Data { stream_id: error_id, fin: true, data: Bytes::from(message) };
                let _ = out.send(Outgoing::Frame(data)).await;
            }
            let _ = out.send(Outgoing::Frame(Frame::RstStream { stream_id, status: RST_CANCEL })).await;
            return;
        }
    };
    let (mut pod_read, mut pod_write) = conn.into_split();
    let upstream = async move {
        while let Some(chunk) = from_client.recv().await {
            if pod_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = pod_write.shutdown().await;
    };
    let downstream = {
        let out = out.clone();
        async move {
            let mut chunk = vec![0u8; 32 * 1024];
            loop {
                match pod_read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = Frame::Data { stream_id, fin: false, data: Bytes::copy_from_slice(&chunk[..n]) };
                        if out.send(Outgoing::Frame(data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = out.send(Outgoing::Frame(Frame::Data { stream_id, fin: true, data: Bytes::new() })).await;
        }
    };
    // The forward ends when the pod's side ends, as in containerd's port-forward; a client
    // that half-closes first only shuts down the pod's write side.
    tokio::pin!(upstream, downstream);
    tokio::select! {
        () = &mut downstream => {}
        () = &mut upstream => downstream.await,
    }
    // kubectl closes the local connection only once the error stream has ended too, as
    // kubelet closes both streams when a forward ends.
    if let Some(error_id) = error_stream {
        let _ = out.send(Outgoing::Frame(Frame::Data { stream_id: error_id, fin: true, data: Bytes::new() })).await;
    }
}
