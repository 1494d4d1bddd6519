//! Streaming pod subresources over WebSocket: `exec` with the Kubernetes channel protocol
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io` which lacks the close-channel frame).
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error
//! (the final `metav1.Status`), 4 resize (`{"Width":w,"Height":h}`); in v5 `[255, ch]` closes
//! channel `ch` (kubectl sends `[255, 0]` when its stdin ends). The server ends with the
//! status on channel 3 and a close frame with code 1000.
//!
//! [`portforward`] serves `pods/portforward` with a SPDY/3.1 session over WebSocket.

use std::{pin::Pin, sync::Arc};

use axum::{
    extract::{
        FromRequestParts, Request,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
};
use berth_core::ApiError;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt, future::BoxFuture};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};

use crate::subresources::PodIo;

pub mod portforward;
pub mod spdy;
pub mod spdy_upgrade;

pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_CHANNEL: u8 = 255;

/// What `kubectl exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// `pods/attach`: connect to the container's own process instead of starting one.
    pub attach: bool,
}

/// A process started by [`PodIo::exec`]: its streams, a terminal resize hook, and its exit.
pub struct ExecIo {
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Called with (columns, rows).
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Resolves to the exit code, or to a message saying why the process could not be run.
    pub exit: BoxFuture<'static, Result<i32, String>>,
}

/// Serves `pods/exec`: checks the request, starts the process, then upgrades to WebSocket.
pub async fn exec(io: Arc<dyn PodIo>, pod: &Value, opts: ExecOptions, req: Request) -> Result<Response, ApiError> {
    if opts.command.is_empty() && !opts.attach {
        return Err(ApiError::bad_request("you must specify at least one command for the container"));
    }
    if !(opts.stdin || opts.stdout || opts.stderr) {
        return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    if opts.tty && opts.stderr {
        return Err(ApiError::bad_request("stdout and stderr are merged when tty is set; stderr must be false"));
    }
    if spdy_upgrade::is_spdy_upgrade(req.headers()) {
        let session = if opts.attach { io.attach(pod, &opts)? } else { io.exec(pod, &opts)? };
        return spdy_upgrade::exec(session, opts, req);
    }
    let (mut parts, _body) = req.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(|_| {
        ApiError::bad_request(format!(
            "exec needs an upgrade to WebSocket (subprotocol {V5_PROTOCOL}) or to {}",
            spdy_upgrade::SPDY_UPGRADE
        ))
    })?;
    let upgrade = upgrade.protocols([V5_PROTOCOL, V4_PROTOCOL]);
    let v5 = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(V5_PROTOCOL) => true,
        Some(_) => false,
        None => {
            return Err(ApiError::bad_request(format!(
                "unsupported streaming protocol: offer {V5_PROTOCOL} or {V4_PROTOCOL}"
            )));
        }
    };
    let session = if opts.attach { io.attach(pod, &opts)? } else { io.exec(pod, &opts)? };
    Ok(upgrade.on_upgrade(move |socket| pump_exec(socket, session, v5)))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut buf = BytesMut::with_capacity(data.len() + 1);
    buf.put_u8(channel);
    buf.put_slice(data);
    Message::Binary(buf.freeze())
}

/// The final status on the error channel, as kubelet writes it.
pub fn exit_status(result: &Result<i32, String>) -> Value {
    match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}),
    }
}

async fn copy_out(mut from: Pin<Box<dyn AsyncRead + Send>>, channel: u8, to: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // A terminal's controller side reports EIO once the process is gone: that is its end.
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the client's frames: stdin data, stdin close, resizes. Returns when the client
/// closes the socket or goes away.
async fn read_client(
    mut from: futures::stream::SplitStream<WebSocket>,
    mut stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    v5: bool,
) {
    while let Some(Ok(msg)) = from.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            Message::Text(text) => Bytes::from(text.as_str().as_bytes().to_vec()),
            Message::Close(_) => return,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let Some((&channel, payload)) = data.split_first() else { continue };
        match channel {
            STDIN => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(payload).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            RESIZE => {
                #[derive(serde::Deserialize)]
                struct Size {
                    #[serde(rename = "Width")]
                    width: u16,
                    #[serde(rename = "Height")]
                    height: u16,
                }
                match (serde_json::from_slice::<Size>(payload), &resize) {
                    (Ok(size), Some(resize)) => resize(size.width, size.height),
                    (Err(e), _) => tracing::debug!(error = %e, "bad resize message"),
                    _ => {}
                }
            }
            CLOSE_CHANNEL if v5 && payload.first() == Some(&STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    }
}

async fn pump_exec(socket: WebSocket, session: ExecIo, v5: bool) {
    let (mut sink, from_client) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.flush().await;
    });
    let ExecIo { stdin, stdout, stderr, resize, exit } = session;
    let copies: Vec<_> = [(stdout, STDOUT), (stderr, STDERR)]
        .into_iter()
        .filter_map(|(stream, ch)| stream.map(|s| copy_out(s, ch, out_tx.clone())))
        .collect();
    let finished = async {
        let (_, result) = futures::join!(futures::future::join_all(copies), exit);
        result
    };
    let client = read_client(from_client, stdin, resize, v5);
    tokio::pin!(client);
    let result = tokio::select! {
        result = finished => result,
        () = &mut client => {
            // The client went away: dropping the process future kills the runc client.
            tracing::debug!("exec client left before the process ended");
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let status = serde_json::to_vec(&exit_status(&result)).unwrap_or_default();
    let _ = out_tx.send(frame(ERROR, &status)).await;
    let _ = out_tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    drop(out_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_carries_the_code_as_kubectl_reads_it() {
        assert_eq!(exit_status(&Ok(0))["status"], "Success");
        let failed = exit_status(&Ok(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn frames_start_with_their_channel() {
        let Message::Binary(b) = frame(STDERR, b"oops") else { panic!("binary") };
        assert_eq!(&b[..], b"\x02oops");
    }
}
