//! Forwarding names outside the cluster's zones to the node's resolvers: UDP with a timeout,
//! again over TCP when the UDP reply is truncated, each resolver in turn.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout, timeout_at};

use super::wire;

/// How long one resolver gets to answer, per transport.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolvers queries outside the zone go to, tried in order.
#[derive(Debug, Clone)]
pub struct Upstream {
    servers: Arc<[SocketAddr]>,
    timeout: Duration,
}

/// A reply from upstream: its bytes (id already the client's) and the parsed message.
#[derive(Debug, Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub message: Message,
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>) -> Upstream {
        Upstream { servers: servers.into(), timeout: DEFAULT_TIMEOUT }
    }

    /// The same resolvers with another per-attempt timeout.
    pub fn with_timeout(self, timeout: Duration) -> Upstream {
        Upstream { timeout, ..self }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Send `query` to each resolver in turn until one answers; `None` when none does (the caller
    /// answers SERVFAIL). The query goes out under a fresh random id; the reply carries `query`'s.
    pub async fn exchange(&self, query: &Message) -> Option<Reply> {
        for server in self.servers.iter() {
            let mut outgoing = query.clone();
            outgoing.metadata.id = rand::random();
            let Ok(bytes) = outgoing.to_vec() else { return None };
            let reply = match self.exchange_udp(*server, &bytes, &outgoing).await {
                Some(reply) if reply.message.metadata.truncation => {
                    self.exchange_tcp(*server, &bytes, &outgoing).await.or(Some(reply))
                }
                other => other,
            };
            if let Some(mut reply) = reply {
                wire::set_id(&mut reply.bytes, query.metadata.id);
                reply.message.metadata.id = query.metadata.id;
                return Some(reply);
            }
            tracing::debug!(%server, "Upstream resolver did not answer");
        }
        None
    }

    async fn exchange_udp(&self, server: SocketAddr, bytes: &[u8], sent: &Message) -> Option<Reply> {
        let local: SocketAddr = match server.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.ok()?;
        socket.connect(server).await.ok()?;
        socket.send(bytes).await.ok()?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = vec![0u8; usize::from(u16::MAX)];
        loop {
            let len = timeout_at(deadline, socket.recv(&mut buf)).await.ok()?.ok()?;
            if let Some(reply) = matching_reply(&buf[..len], sent) {
                return Some(reply);
            }
        }
    }

    async fn exchange_tcp(&self, server: SocketAddr, bytes: &[u8], sent: &Message) -> Option<Reply> {
        let exchange = async {
            let mut stream = TcpStream::connect(server).await.ok()?;
            let len = u16::try_from(bytes.len()).ok()?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(bytes);
            stream.write_all(&framed).await.ok()?;
            let len = stream.read_u16().await.ok()?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.ok()?;
            matching_reply(&buf, sent)
        };
        timeout(self.timeout, exchange).await.ok()?
    }
}

/// `bytes` parsed, if it is the reply to `sent` (same id and question).
fn matching_reply(bytes: &[u8], sent: &Message) -> Option<Reply> {
    let message = Message::from_vec(bytes).ok()?;
    let same_question = message.queries.len() == sent.queries.len()
        && message
            .queries
            .iter()
            .zip(&sent.queries)
            .all(|(a, b)| a.query_type() == b.query_type() && a.name().to_lowercase() == b.name().to_lowercase());
    (message.metadata.id == sent.metadata.id && same_question).then(|| Reply { bytes: bytes.to_vec(), message })
}

/// The `nameserver` addresses of a resolv.conf text, port 53 (an IPv6 zone such as `%eth0` is
/// dropped; lines that do not parse are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let address = words.next()?;
            let address = address.split('%').next().unwrap_or(address);
            let ip: IpAddr = address.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The node's resolvers, from a resolv.conf file (normally `/etc/resolv.conf`).
pub async fn read_resolv_conf(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    let text = tokio::fs::read_to_string(path).await?;
    Ok(parse_resolv_conf(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.1\nnameserver  fe80::1%eth0\n\
                    nameserver not-an-ip\noptions ndots:5\n  nameserver 127.0.0.53\n";
        let expected: Vec<SocketAddr> =
            ["192.0.2.1:53", "[fe80::1]:53", "127.0.0.53:53"].iter().map(|a| a.parse().expect("address")).collect();
        assert_eq!(parse_resolv_conf(text), expected);
        assert!(parse_resolv_conf("").is_empty());
    }
}
