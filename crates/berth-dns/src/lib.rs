//! Berth's cluster DNS, served in process with hickory's server: names under the cluster
//! domain come from the Services and EndpointSlices this crate watches (see [`zone`]);
//! every other query is forwarded to the upstream resolvers, its answer relayed unchanged.
//! It listens on the cluster DNS Service's address (`kube-dns` in `kube-system`), which the
//! service proxy keeps on its interface, so pods reach it without any rule. When another
//! program already holds port 53 there (a resolver listening on `0.0.0.0:53`), it binds a free
//! port on the same address instead and the service proxy sends port 53 to it ([`Listeners`]).

pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use berth_watch::watch;
use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use zone::{Lookup, Zone};

/// Time to live of cluster answers (as CoreDNS's kubernetes plugin).
const TTL: u32 = 5;

/// How the DNS server runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster DNS Service's address and port (what pods' resolv.conf names).
    pub listen: SocketAddr,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// Resolvers for every other name, tried in order.
    pub upstream: Vec<SocketAddr>,
}

/// Why the DNS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening sockets could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A watch or the server ended.
    #[error("cluster DNS: {0} stopped")]
    Stopped(&'static str),
}

/// The upstream resolvers of this machine: the nameservers of `/etc/resolv.conf`, where a
/// loopback stub (systemd-resolved's 127.0.0.53) is replaced by the servers it forwards to
/// (`/run/systemd/resolve/resolv.conf`), since pods cannot reach the host's loopback.
pub fn host_upstreams() -> Vec<SocketAddr> {
    let parse = |text: &str| -> Vec<IpAddr> {
        text.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).filter_map(|v| v.trim().parse().ok()).collect()
    };
    let main = std::fs::read_to_string("/etc/resolv.conf").map(|t| parse(&t)).unwrap_or_default();
    let mut out: Vec<IpAddr> = main.iter().copied().filter(|ip| !ip.is_loopback()).collect();
    if out.is_empty() {
        out = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
            .map(|t| parse(&t))
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .collect();
    }
    if out.is_empty() {
        // The host answers itself (a loopback stub with nothing behind it we can read):
        // forwarding from this process to it still works.
        out = main;
    }
    out.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect()
}

fn freebind_socket(addr: SocketAddr, ty: socket2::Type) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, ty, None)?;
    socket.set_reuse_address(true)?;
    // The address appears on the service interface when the proxy syncs it.
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if ty == socket2::Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// The UDP and TCP sockets cluster DNS answers on, bound before the server starts so the
/// service proxy can be told where they are.
#[derive(Debug)]
pub struct Listeners {
    udp: socket2::Socket,
    tcp: socket2::Socket,
}

impl Listeners {
    /// Binds `addr` for UDP and for TCP. A protocol whose port another program holds (on
    /// Linux a listening `0.0.0.0:53` forbids binding `addr` itself) gets a free port on the
    /// same address instead; [`Listeners::local_addrs`] then says where, for the Service rules.
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let bind = |ty| match freebind_socket(addr, ty) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let socket = freebind_socket(SocketAddr::new(addr.ip(), 0), ty);
                if socket.is_ok() {
                    let protocol = if ty == socket2::Type::DGRAM { "UDP" } else { "TCP" };
                    tracing::warn!(%addr, protocol, error = %e, "another program holds the cluster DNS port: answering on a free port that the Service rules send it to");
                }
                socket
            }
            other => other,
        };
        let listen_err = |source| Error::Listen { addr, source };
        Ok(Listeners {
            udp: bind(socket2::Type::DGRAM).map_err(listen_err)?,
            tcp: bind(socket2::Type::STREAM).map_err(listen_err)?,
        })
    }

    /// The address each protocol is bound to.
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        let addr = |s: &socket2::Socket| {
            s.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("not an inet socket"))
        };
        Ok((addr(&self.udp)?, addr(&self.tcp)?))
    }
}

/// Serves cluster DNS on `listeners` until a watch stops or the future is dropped.
pub async fn run(client: Client, config: DnsConfig, listeners: Listeners) -> Result<(), Error> {
    let listen_err = |source| Error::Listen { addr: config.listen, source };
    let (udp_addr, tcp_addr) = listeners.local_addrs().map_err(listen_err)?;
    let udp = tokio::net::UdpSocket::from_std(listeners.udp.into()).map_err(listen_err)?;
    let tcp = tokio::net::TcpListener::from_std(listeners.tcp.into()).map_err(listen_err)?;

    let zone = Arc::new(ArcSwap::from_pointee(Zone { domain: config.domain.clone(), ..Zone::default() }));
    let changed = Arc::new(Notify::new());
    let (services, services_watch) = watch(Api::<Service>::all(client.clone()), changed.clone());
    let (slices, slices_watch) = watch(Api::<EndpointSlice>::all(client), changed.clone());
    let builder = {
        let zone = zone.clone();
        let domain = config.domain.clone();
        async move {
            let _ = futures::join!(services.wait_until_ready(), slices.wait_until_ready());
            loop {
                zone.store(Arc::new(zone::build(&domain, &services.state(), &slices.state())));
                changed.notified().await;
            }
        }
    };

    let handler = Handler { zone, upstream: config.upstream.clone() };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 65_535);
    tracing::info!(listen = %config.listen, udp = %udp_addr, tcp = %tcp_addr, upstream = ?config.upstream, "cluster DNS started");
    tokio::select! {
        _ = services_watch => Err(Error::Stopped("service watch")),
        _ = slices_watch => Err(Error::Stopped("endpointslice watch")),
        () = builder => Err(Error::Stopped("zone builder")),
        _ = server.block_until_done() => Err(Error::Stopped("server")),
    }
}

struct Handler {
    zone: Arc<ArcSwap<Zone>>,
    upstream: Vec<SocketAddr>,
}

fn name(text: &str) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The records answering `qtype` at `qname` from a cluster entry.
fn records(qname: &Name, qtype: RecordType, entry: &zone::Entry) -> Vec<Record> {
    let mut out = Vec::new();
    if let Some(target) = entry.cname.as_deref().and_then(name) {
        out.push(Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target))));
        return out;
    }
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        for ip in &entry.a {
            out.push(Record::from_rdata(qname.clone(), TTL, RData::A(A(*ip))));
        }
    }
    if matches!(qtype, RecordType::SRV | RecordType::ANY) {
        for (port, target) in &entry.srv {
            if let Some(target) = name(target) {
                out.push(Record::from_rdata(qname.clone(), TTL, RData::SRV(SRV::new(0, 100, *port, target))));
            }
        }
    }
    out
}

impl Handler {
    /// Sends the query to each upstream in turn; the first reply wins.
    async fn forward(&self, request: &Request) -> Option<Message> {
        for upstream in &self.upstream {
            let reply = match request.protocol() {
                Protocol::Tcp => forward_tcp(*upstream, request.as_slice()).await,
                _ => forward_udp(*upstream, request.as_slice()).await,
            };
            match reply {
                Ok(bytes) => match Message::from_vec(&bytes) {
                    Ok(message) => return Some(message),
                    Err(err) => tracing::debug!(%upstream, %err, "unreadable upstream reply"),
                },
                Err(err) => tracing::debug!(%upstream, %err, "upstream did not answer"),
            }
        }
        None
    }
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
    buf.truncate(n);
    Ok(buf)
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await?;
        let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(query).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))?
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            return send(&mut response, builder.build_no_records(metadata), &request.metadata).await;
        };
        let qname: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let zone = self.zone.load();
        match zone.lookup(&qname.to_ascii()) {
            Lookup::Found(entry) => {
                metadata.authoritative = true;
                let answers = entry.map(|e| records(&qname, qtype, e)).unwrap_or_default();
                let message = builder.build(metadata, answers.iter(), [], [], []);
                send(&mut response, message, &request.metadata).await
            }
            Lookup::NxDomain => {
                metadata.authoritative = true;
                metadata.response_code = ResponseCode::NXDomain;
                send(&mut response, builder.build_no_records(metadata), &request.metadata).await
            }
            Lookup::NotOurs => match self.forward(request).await {
                Some(reply) => {
                    metadata.response_code = reply.metadata.response_code;
                    metadata.truncation = reply.metadata.truncation;
                    metadata.authentic_data = reply.metadata.authentic_data;
                    let message = builder.build(
                        metadata,
                        reply.answers.iter(),
                        reply.authorities.iter(),
                        [],
                        reply.additionals.iter(),
                    );
                    send(&mut response, message, &request.metadata).await
                }
                None => {
                    metadata.response_code = ResponseCode::ServFail;
                    send(&mut response, builder.build_no_records(metadata), &request.metadata).await
                }
            },
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match response.send_response(message).await {
        Ok(info) => info,
        Err(err) => {
            tracing::debug!(%err, "cannot send a DNS response");
            let mut metadata = Metadata::response_from_request(request);
            metadata.response_code = ResponseCode::ServFail;
            hickory_proto::op::Header { metadata, counts: Default::default() }.into()
        }
    }
}
