//! `pods/exec` for clients that upgrade the HTTP/1.1 connection itself to SPDY/3.1
//! (`Upgrade: SPDY/3.1`, kubectl before 1.30 and client-go's SPDY executor). The session
//! uses the frame codec in [`super::spdy`], written here because no crate speaks SPDY.
//!
//! The client opens one stream per channel, naming it in the `streamType` header: `error`,
//! then `stdin`, `stdout`, `stderr` and `resize` as asked. Once all of them are open the
//! process runs; its output goes out as DATA frames, the client's stdin DATA (FIN at its
//! end) goes in, `resize` carries JSON sizes one per line, and at the end the final
//! `metav1.Status` is written on `error` (protocol `v4.channel.k8s.io`) and the session ends.

use std::{collections::HashMap, pin::Pin};

use axum::{body::Body, extract::Request, response::Response};
use berth_core::ApiError;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};

use super::{ExecIo, ExecOptions, exit_status, spdy::Codec, spdy::Frame};

pub const SPDY_UPGRADE: &str = "SPDY/3.1";
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// The only remote-command protocol served over plain SPDY (kubectl 1.27+ offers it first).
const V4: &str = "v4.channel.k8s.io";

/// Whether the request asks to upgrade to SPDY/3.1 rather than WebSocket.
pub fn is_spdy_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(SPDY_UPGRADE))
}

/// Answers `101 Switching Protocols` and serves the exec session on the upgraded connection.
pub fn exec(session: ExecIo, opts: ExecOptions, mut req: Request) -> Result<Response, ApiError> {
    let offered: Vec<String> = req
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    if !offered.iter().any(|p| p == V4) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: protocol {V4} was not offered (offered: {})",
            offered.join(", ")
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), session, opts).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(V4));
    Ok(resp)
}

/// Copies one process output into DATA frames on `stream_id`, ending with FIN.
async fn copy_out(mut from: Pin<Box<dyn AsyncRead + Send>>, stream_id: u32, to: mpsc::Sender<Frame>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = Frame::Data { stream_id, fin: false, data: Bytes::copy_from_slice(&buf[..n]) };
                if to.send(data).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.send(Frame::Data { stream_id, fin: true, data: Bytes::new() }).await;
}

async fn serve<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, session: ExecIo, opts: ExecOptions) {
    let (mut read_half, mut write_half) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    // One writer owns the compression context, so header blocks stay in order.
    let writer = tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(frame) = out_rx.recv().await {
            let mut buf = BytesMut::new();
            if codec.encode(&frame, &mut buf).is_err() || write_half.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    });

    let mut wanted: Vec<&str> = vec!["error"];
    for (on, name) in [(opts.stdin, "stdin"), (opts.stdout, "stdout"), (opts.stderr, "stderr"), (opts.tty, "resize")] {
        if on {
            wanted.push(name);
        }
    }
    let ExecIo { stdin, stdout, stderr, resize, exit } = session;
    let mut pending = Some((stdout, stderr, exit));
    let mut stdin = stdin;
    let mut streams: HashMap<String, u32> = HashMap::new();
    let mut resize_buf: Vec<u8> = Vec::new();
    let mut finished: Option<tokio::task::JoinHandle<()>> = None;
    let mut codec = Codec::new();
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 32 * 1024];
    'session: loop {
        let n = match read_half.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "bad SPDY stream from exec client");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, .. } => {
                    let kind = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("streamtype"))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    if out_tx.send(Frame::SynReply { stream_id, fin: false, headers: Vec::new() }).await.is_err() {
                        break 'session;
                    }
                    streams.insert(kind, stream_id);
                }
                Frame::Data { stream_id, fin, data } => {
                    if Some(&stream_id) == streams.get("stdin") {
                        if let Some(w) = stdin.as_mut()
                            && !data.is_empty()
                            && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                        {
                            stdin = None;
                        }
                        if fin && let Some(mut w) = stdin.take() {
                            let _ = w.shutdown().await;
                        }
                    } else if Some(&stream_id) == streams.get("resize") {
                        resize_buf.extend_from_slice(&data);
                        while let Some(end) = resize_buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = resize_buf.drain(..=end).collect();
                            #[derive(serde::Deserialize)]
                            struct Size {
                                #[serde(rename = "Width")]
                                width: u16,
                                #[serde(rename = "Height")]
                                height: u16,
                            }
                            if let (Ok(size), Some(resize)) = (serde_json::from_slice::<Size>(&line), &resize) {
                                resize(size.width, size.height);
                            }
                        }
                    }
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                _ => {}
            }
        }
        // Every channel the client asked for is open: run the process's side.
        if wanted.iter().all(|w| streams.contains_key(*w))
            && let Some((stdout, stderr, exit)) = pending.take()
        {
            let error_id = streams.get("error").copied().unwrap_or_default();
            let copies: Vec<_> = [(stdout, "stdout"), (stderr, "stderr")]
                .into_iter()
                .filter_map(|(s, name)| Some(copy_out(s?, *streams.get(name)?, out_tx.clone())))
                .collect();
            let out = out_tx.clone();
            finished = Some(tokio::spawn(async move {
                let (_, result) = futures::join!(futures::future::join_all(copies), exit);
                let status = serde_json::to_vec(&exit_status(&result)).unwrap_or_default();
                let _ = out.send(Frame::Data { stream_id: error_id, fin: true, data: Bytes::from(status) }).await;
                let _ = out.send(Frame::GoAway { last_stream_id: 0 }).await;
            }));
        }
        if finished.as_ref().is_some_and(|f| f.is_finished()) {
            break;
        }
    }
    // The client left (or the process ended and we said so): dropping the exit future of a
    // process still running kills its runc client.
    if let Some(mut f) = finished
        && tokio::time::timeout(std::time::Duration::from_secs(5), &mut f).await.is_err()
    {
        f.abort();
    }
    drop(out_tx);
    let _ = writer.await;
}
