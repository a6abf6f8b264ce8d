//! The DNS server: UDP and TCP on one address, answering from [`SharedRecords`] and forwarding
//! the rest upstream. In-zone queries are answered inline on the receive loop (no task, no lock held
//! across an await); only forwarded queries get a task, bounded in number.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DnsError;
use super::answer::{Response, answer, reply_to};
use super::records::{Records, SharedRecords};
use super::upstream::Upstream;
use super::wire::{self, Decoded};

/// A TCP connection with no query for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded queries in flight at once; more are dropped (the client retries).
const MAX_FORWARDS: usize = 1024;
/// TCP connections open at once; more are closed at once.
const MAX_TCP_CONNECTIONS: usize = 256;

/// Serve DNS on `bind` (UDP and TCP) until `stop` is cancelled: answers from `records`, other
/// names forwarded to `upstream` (the node's resolvers, see [`super::read_resolv_conf`]; `bind`
/// itself is left out so a resolv.conf naming this server does not loop).
pub async fn serve(
    bind: SocketAddr,
    records: SharedRecords,
    mut upstream: Vec<SocketAddr>,
    stop: CancellationToken,
) -> Result<(), DnsError> {
    upstream.retain(|server| *server != bind);
    DnsServer::bind(bind).await?.run(records, Upstream::new(upstream), stop).await
}

/// Bound UDP and TCP sockets on the same address, not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
}

impl DnsServer {
    /// Bind UDP and TCP on `addr`. With port 0, UDP picks a free port and TCP takes the same one
    /// (a few tries, in case that TCP port is taken).
    pub async fn bind(addr: SocketAddr) -> Result<DnsServer, DnsError> {
        let bind_error = |source| DnsError::Bind { addr, source };
        let mut attempts = if addr.port() == 0 { 10 } else { 1 };
        loop {
            attempts -= 1;
            let udp = UdpSocket::bind(addr).await.map_err(bind_error)?;
            let local = udp.local_addr().map_err(bind_error)?;
            match TcpListener::bind(local).await {
                Ok(tcp) => return Ok(DnsServer { udp: Arc::new(udp), tcp, local }),
                Err(source) if attempts == 0 => return Err(bind_error(source)),
                Err(_) => continue,
            }
        }
    }

    /// The address both sockets listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve until `stop` is cancelled, then wait for open connections and forwards to end.
    pub async fn run(
        self,
        records: SharedRecords,
        upstream: Upstream,
        stop: CancellationToken,
    ) -> Result<(), DnsError> {
        let DnsServer { udp, tcp, local } = self;
        tracing::info!(addr = %local, upstream = ?upstream.servers(), "Serving cluster DNS");
        let tracker = TaskTracker::new();
        let forwards = Arc::new(Semaphore::new(MAX_FORWARDS));
        let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                received = udp.recv_from(&mut buf) => {
                    let Ok((len, peer)) = received else { continue };
                    let packet = buf.get(..len).unwrap_or_default();
                    match step(packet, &records.current(), None) {
                        Step::Reply(bytes) => {
                            let _ = udp.send_to(&bytes, peer).await;
                        }
                        Step::Drop => {}
                        Step::Upstream(pending) => {
                            let Ok(permit) = forwards.clone().try_acquire_owned() else { continue };
                            let (udp, upstream, stop) = (udp.clone(), upstream.clone(), stop.clone());
                            tracker.spawn(async move {
                                tokio::select! {
                                    _ = stop.cancelled() => {}
                                    bytes = pending.finish(&upstream) => {
                                        if let Some(bytes) = bytes {
                                            let _ = udp.send_to(&bytes, peer).await;
                                        }
                                    }
                                }
                                drop(permit);
                            });
                        }
                    }
                }
                accepted = tcp.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let Ok(permit) = connections.clone().try_acquire_owned() else { continue };
                    let (records, upstream, stop) = (records.clone(), upstream.clone(), stop.clone());
                    tracker.spawn(async move {
                        serve_tcp(stream, records, upstream, stop).await;
                        drop(permit);
                    });
                }
            }
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

/// One TCP connection: 2-byte length-framed queries, answered in order, until idle or closed.
async fn serve_tcp(mut stream: TcpStream, records: SharedRecords, upstream: Upstream, stop: CancellationToken) {
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            let mut packet = vec![0u8; usize::from(len)];
            stream.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        let packet = tokio::select! {
            _ = stop.cancelled() => return,
            read = tokio::time::timeout(TCP_IDLE_TIMEOUT, read) => match read {
                Ok(Ok(packet)) => packet,
                _ => return,
            },
        };
        let reply = match step(&packet, &records.current(), Some(usize::from(u16::MAX))) {
            Step::Reply(bytes) => Some(bytes),
            Step::Drop => None,
            Step::Upstream(pending) => tokio::select! {
                _ = stop.cancelled() => return,
                bytes = pending.finish(&upstream) => bytes,
            },
        };
        let Some(bytes) = reply else { continue };
        let Ok(len) = u16::try_from(bytes.len()) else { continue };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

enum Step {
    Reply(Vec<u8>),
    Drop,
    Upstream(Box<Pending>),
}

/// A query that needs upstream before it can be answered.
struct Pending {
    query: Message,
    limit: usize,
    chase: Option<(Message, Name, RecordType)>,
}

/// Decode and answer a packet from the records; `limit` is the response size limit (`None`: UDP,
/// from the query's EDNS payload size).
fn step(packet: &[u8], records: &Records, limit: Option<usize>) -> Step {
    let query = match wire::decode(packet) {
        Decoded::Query(query) => query,
        Decoded::Malformed(bytes) => return Step::Reply(bytes),
        Decoded::Drop => return Step::Drop,
    };
    let limit = limit.unwrap_or_else(|| wire::udp_limit(&query));
    match answer(records, &query) {
        Response::Local(message) => wire::encode(&message, limit).map_or(Step::Drop, Step::Reply),
        Response::Forward => Step::Upstream(Box::new(Pending { query, limit, chase: None })),
        Response::Chase { message, target, query_type } => {
            Step::Upstream(Box::new(Pending { query, limit, chase: Some((message, target, query_type)) }))
        }
    }
}

impl Pending {
    async fn finish(self, upstream: &Upstream) -> Option<Vec<u8>> {
        match self.chase {
            None => match upstream.exchange(&self.query).await {
                Some(reply) if reply.bytes.len() <= self.limit => Some(reply.bytes),
                Some(reply) => wire::encode(&reply.message, self.limit),
                None => wire::encode(&server_failure(&self.query), self.limit),
            },
            Some((message, target, query_type)) => {
                let message = chase(message, target, query_type, upstream).await;
                wire::encode(&message, self.limit)
            }
        }
    }
}

/// The full answer to `query`, with upstream for what the records do not hold: the same answer the
/// server sends, before size limits.
pub async fn resolve(records: &Records, query: &Message, upstream: &Upstream) -> Message {
    match answer(records, query) {
        Response::Local(message) => message,
        Response::Forward => match upstream.exchange(query).await {
            Some(reply) => reply.message,
            None => server_failure(query),
        },
        Response::Chase { message, target, query_type } => chase(message, target, query_type, upstream).await,
    }
}

/// `message` with upstream's answers for `target` appended (the CNAME stays alone if upstream fails).
async fn chase(mut message: Message, target: Name, query_type: RecordType, upstream: &Upstream) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(target, query_type));
    if let Some(reply) = upstream.exchange(&query).await
        && reply.message.metadata.response_code == ResponseCode::NoError
    {
        message.answers.extend(reply.message.answers);
    }
    message
}

fn server_failure(query: &Message) -> Message {
    let mut response = reply_to(query);
    response.metadata.response_code = ResponseCode::ServFail;
    response
}
