//! The data path: listeners that hand each TCP connection, or each UDP client flow, to one
//! ready endpoint of the Service port their frontend routes to.
//!
//! A listener reads the current [`RouteTable`] once per new connection or flow and never holds
//! it afterwards, so swapping the table changes where new connections go and leaves established
//! ones alone. A connection lives in its own task and outlives its listener.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::table::{Backend, Frontend, Protocol, RouteTable};

/// Buffer per direction of a relayed TCP connection: larger than tokio's 8 KiB default, which
/// costs throughput on bulk transfers.
const TCP_BUFFER: usize = 64 * 1024;
/// The largest UDP datagram.
const UDP_BUFFER: usize = 65_536;

/// Tunables of the data path.
#[derive(Debug, Clone)]
pub struct DataPathSettings {
    /// How long to wait for one endpoint to accept before trying the next.
    pub connect_timeout: Duration,
    /// A UDP flow with no packet either way for this long is forgotten.
    pub udp_idle_timeout: Duration,
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AbortOnDrop {
    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

fn socket_for(frontend: &Frontend, bind: SocketAddr) -> io::Result<Socket> {
    let domain = if bind.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let (ty, proto) = match frontend.protocol {
        Protocol::Tcp => (Type::STREAM, socket2::Protocol::TCP),
        Protocol::Udp => (Type::DGRAM, socket2::Protocol::UDP),
    };
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.set_reuse_address(true)?;
    // A ClusterIP may be bound before (or without) being on the service interface.
    if bind.is_ipv4() {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&bind.into())?;
    Ok(socket)
}

/// Opens a listener on `bind` serving `frontend` (its own address, or another one the kernel
/// redirects the frontend's traffic to) and starts serving it; dropping the handle closes it.
/// Returns the handle and the address actually bound (`bind` with port 0 gets a free port).
pub fn listen(
    frontend: Frontend,
    bind: SocketAddr,
    table: Arc<ArcSwap<RouteTable>>,
    settings: Arc<DataPathSettings>,
) -> io::Result<(AbortOnDrop, SocketAddr)> {
    let socket = socket_for(&frontend, bind)?;
    let bound = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("listener has no IP address"))?;
    let task = match frontend.protocol {
        Protocol::Tcp => {
            socket.listen(1024)?;
            let listener = TcpListener::from_std(socket.into())?;
            tokio::spawn(serve_tcp(listener, frontend, table, settings))
        }
        Protocol::Udp => {
            let udp = UdpSocket::from_std(socket.into())?;
            tokio::spawn(serve_udp(Arc::new(udp), frontend, table, settings))
        }
    };
    Ok((AbortOnDrop(task.abort_handle()), bound))
}

fn backend_for(table: &ArcSwap<RouteTable>, frontend: &Frontend) -> Option<Arc<Backend>> {
    table.load().routes.get(frontend).cloned()
}

async fn serve_tcp(
    listener: TcpListener,
    frontend: Frontend,
    table: Arc<ArcSwap<RouteTable>>,
    settings: Arc<DataPathSettings>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(frontend = %frontend.addr, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backend = backend_for(&table, &frontend);
        tokio::spawn(relay_tcp(client, peer, frontend, backend, settings.clone()));
    }
}

/// Closes a connection with a reset, as a refused connection looks to the client.
fn refuse(client: TcpStream) {
    // Zero linger makes close send RST; it cannot block since nothing is left to send.
    let _ = client.set_zero_linger();
    drop(client);
}

async fn relay_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    frontend: Frontend,
    backend: Option<Arc<Backend>>,
    settings: Arc<DataPathSettings>,
) {
    let Some(backend) = backend else {
        refuse(client);
        return;
    };
    let mut tried = Vec::new();
    let mut upstream = loop {
        let Some(endpoint) = backend.pick(peer.ip(), &tried) else {
            tracing::debug!(service = ?backend.key, frontend = %frontend.addr, %peer, "no ready endpoint left, refusing");
            refuse(client);
            return;
        };
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(err)) => tracing::debug!(%endpoint, %err, "endpoint refused, trying the next"),
            Err(_) => tracing::debug!(%endpoint, "endpoint did not answer in time, trying the next"),
        }
        tried.push(endpoint);
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(err) = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, TCP_BUFFER, TCP_BUFFER).await
    {
        tracing::debug!(frontend = %frontend.addr, %peer, %err, "connection ended with an error");
    }
}

/// One UDP client's flow to its endpoint.
struct Flow {
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    last_active: Arc<AtomicU64>,
    replies: AbortOnDrop,
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn open_flow(
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    endpoint: SocketAddr,
    epoch: Instant,
    idle: Duration,
) -> io::Result<Flow> {
    let bind: SocketAddr = if endpoint.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(endpoint).await?;
    let last_active = Arc::new(AtomicU64::new(millis_since(epoch)));
    let replies = {
        let (upstream, last_active) = (upstream.clone(), last_active.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; UDP_BUFFER];
            loop {
                match tokio::time::timeout(idle, upstream.recv(&mut buf)).await {
                    Ok(Ok(n)) => {
                        last_active.store(millis_since(epoch), Ordering::Relaxed);
                        let _ = listener.send_to(&buf[..n], client).await;
                    }
                    // ICMP unreachable and the like: let the next packet pick again.
                    Ok(Err(_)) => break,
                    Err(_) => {
                        let quiet = millis_since(epoch).saturating_sub(last_active.load(Ordering::Relaxed));
                        if Duration::from_millis(quiet) >= idle {
                            break;
                        }
                    }
                }
            }
        })
    };
    Ok(Flow { endpoint, upstream, last_active, replies: AbortOnDrop(replies.abort_handle()) })
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    frontend: Frontend,
    table: Arc<ArcSwap<RouteTable>>,
    settings: Arc<DataPathSettings>,
) {
    let epoch = Instant::now();
    // Owned by this task alone, so no lock; dropping it (the listener closing) ends every flow.
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut last_sweep = Instant::now();
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(frontend = %frontend.addr, %err, "udp receive failed");
                continue;
            }
        };
        if last_sweep.elapsed() > Duration::from_secs(1) {
            flows.retain(|_, f| !f.replies.is_finished());
            last_sweep = Instant::now();
        }
        let Some(backend) = backend_for(&table, &frontend) else {
            flows.remove(&client);
            continue;
        };
        // A flow follows its endpoint only while that endpoint stays ready, as conntrack
        // entries are flushed when an endpoint goes away.
        let usable = flows.get(&client).is_some_and(|f| !f.replies.is_finished() && backend.contains(f.endpoint));
        if !usable {
            flows.remove(&client);
            let Some(endpoint) = backend.pick(client.ip(), &[]) else { continue };
            match open_flow(socket.clone(), client, endpoint, epoch, settings.udp_idle_timeout).await {
                Ok(flow) => {
                    flows.insert(client, flow);
                }
                Err(err) => {
                    tracing::debug!(%endpoint, %err, "cannot open a udp flow");
                    continue;
                }
            }
        }
        if let Some(flow) = flows.get(&client) {
            flow.last_active.store(millis_since(epoch), Ordering::Relaxed);
            if let Err(err) = flow.upstream.send(&buf[..n]).await {
                tracing::debug!(endpoint = %flow.endpoint, %err, "udp send failed");
            }
        }
    }
}
