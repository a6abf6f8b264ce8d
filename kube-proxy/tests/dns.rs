//! The cluster DNS on real sockets: served on 127.0.0.1 (an ephemeral port) over UDP and TCP,
//! forwarding to a fake upstream resolver on another loopback port. No packet leaves the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_proxy::dns::{DnsServer, Records, SharedRecords, Upstream, Zone};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

fn services() -> Vec<Service> {
    let web = json!({"metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}});
    let ext = json!({"metadata": {"namespace": "default", "name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}});
    vec![serde_json::from_value(web).expect("web"), serde_json::from_value(ext).expect("ext")]
}

fn slices() -> Vec<EndpointSlice> {
    let slice = json!({"metadata": {"namespace": "default", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}]});
    vec![serde_json::from_value(slice).expect("slice")]
}

fn query(id: u16, name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    message
}

fn with_edns(mut message: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    message.set_edns(edns);
    message
}

fn ipv4s(message: &Message) -> Vec<String> {
    addresses(&message.answers)
}

fn addresses(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// A resolver on 127.0.0.1 that knows `example.com.` (one A record) and `big.example.` (60 A
/// records: too big for 512 bytes, so over UDP it answers with TC and nothing else) and counts the
/// queries it gets.
struct FakeUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn fake_answer(query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = query.queries.clone();
    let Some(question) = query.queries.first() else { return reply };
    let name = question.name().to_lowercase().to_ascii();
    let count = match (name.as_str(), question.query_type()) {
        ("example.com.", RecordType::A) => 1,
        ("big.example.", RecordType::A) => 60,
        ("example.com." | "big.example.", _) => 0,
        _ => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            0
        }
    };
    for i in 0..count {
        let ip = std::net::Ipv4Addr::new(192, 0, 2, 1 + i as u8);
        reply.answers.push(Record::from_rdata(question.name().clone(), 60, RData::A(A(ip))));
    }
    reply
}

async fn fake_upstream() -> FakeUpstream {
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream udp");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).await.expect("bind upstream tcp");
    let queries = Arc::new(AtomicUsize::new(0));
    let counter = queries.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
            let mut reply = fake_answer(&query);
            let mut bytes = reply.to_vec().expect("encode");
            if bytes.len() > 512 {
                reply.answers.clear();
                reply.metadata.truncation = true;
                bytes = reply.to_vec().expect("encode");
            }
            let _ = udp.send_to(&bytes, peer).await;
        }
    });
    let counter = queries.clone();
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                while let Ok(len) = stream.read_u16().await {
                    let mut buf = vec![0u8; usize::from(len)];
                    if stream.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let Ok(query) = Message::from_vec(&buf) else { return };
                    let bytes = fake_answer(&query).to_vec().expect("encode");
                    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&bytes);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeUpstream { addr, queries, tasks: vec![udp_task, tcp_task] }
}

struct Running {
    addr: SocketAddr,
    records: SharedRecords,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn start(upstream: Vec<SocketAddr>, timeout: Duration) -> Running {
    let records = SharedRecords::new(Records::build(&services(), &slices(), Zone::cluster_local()));
    let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind dns");
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let upstream = Upstream::new(upstream).with_timeout(timeout);
    let (shared, token) = (records.clone(), stop.clone());
    let task = tokio::spawn(async move {
        server.run(shared, upstream, token).await.expect("serve");
    });
    Running { addr, records, stop, task }
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("server stops").expect("server task");
    }
}

/// One query over UDP; `None` when nothing comes back within `wait`.
async fn udp_exchange(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    Some(buf[..len].to_vec())
}

async fn udp_query(server: SocketAddr, message: &Message) -> Message {
    let bytes = udp_exchange(server, &message.to_vec().expect("encode"), WAIT).await.expect("a UDP reply");
    let reply = Message::from_vec(&bytes).expect("decode reply");
    assert_eq!(reply.metadata.id, message.metadata.id);
    reply
}

/// Several queries on one TCP connection, answered in order.
async fn tcp_queries(server: SocketAddr, messages: &[Message]) -> Vec<Message> {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let mut replies = Vec::new();
    for message in messages {
        let bytes = message.to_vec().expect("encode");
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.expect("write");
        let len = tokio::time::timeout(WAIT, stream.read_u16()).await.expect("reply in time").expect("length");
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.expect("body");
        let reply = Message::from_vec(&buf).expect("decode reply");
        assert_eq!(reply.metadata.id, message.metadata.id);
        replies.push(reply);
    }
    replies
}

#[tokio::test]
async fn dns_answers_from_the_records_over_udp_and_tcp() {
    let upstream = fake_upstream().await;
    let dns = start(vec![upstream.addr], Duration::from_secs(2)).await;

    let reply = udp_query(dns.addr, &query(1, "web.default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!((reply.metadata.response_code, reply.metadata.authoritative), (ResponseCode::NoError, true));
    assert_eq!(ipv4s(&reply), ["10.96.0.20"]);
    assert_eq!(reply.answers[0].ttl, 5);

    let reply = udp_query(dns.addr, &query(2, "Missing.Default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(reply.authorities[0].data, RData::SOA(_)));

    let replies = tcp_queries(
        dns.addr,
        &[
            query(3, "web.default.svc.cluster.local.", RecordType::A),
            query(4, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
            query(5, "20.0.96.10.in-addr.arpa.", RecordType::PTR),
            query(6, "99.0.96.10.in-addr.arpa.", RecordType::PTR),
        ],
    )
    .await;
    assert_eq!(ipv4s(&replies[0]), ["10.96.0.20"]);
    assert!(matches!(&replies[1].answers[0].data, RData::SRV(srv) if srv.port == 80));
    assert_eq!(addresses(&replies[1].additionals), ["10.96.0.20"]);
    assert!(matches!(&replies[2].answers[0].data, RData::PTR(p) if p.0.to_ascii() == "web.default.svc.cluster.local."));
    assert_eq!(replies[3].metadata.response_code, ResponseCode::NXDomain);

    // New records are answered as soon as they are swapped in.
    let mut services = services();
    let api: Service = serde_json::from_value(json!({"metadata": {"namespace": "shop", "name": "api"},
        "spec": {"clusterIP": "10.96.5.5", "ports": [{"port": 8080}]}}))
    .expect("api");
    services.push(api);
    dns.records.replace(Records::build(&services, &slices(), Zone::cluster_local()));
    let reply = udp_query(dns.addr, &query(7, "api.shop.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(ipv4s(&reply), ["10.96.5.5"]);

    // Nothing in the cluster's zones went upstream.
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 0);
    dns.shutdown().await;
}

#[tokio::test]
async fn dns_other_names_are_forwarded_upstream() {
    let upstream = fake_upstream().await;
    let dns = start(vec![upstream.addr], Duration::from_secs(2)).await;

    let reply = udp_query(dns.addr, &query(0xbeef, "example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ipv4s(&reply), ["192.0.2.1"]);

    let reply = udp_query(dns.addr, &query(11, "nowhere.example.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    // An ExternalName: the CNAME, then the target's address from upstream.
    let reply = udp_query(dns.addr, &query(12, "ext.default.svc.cluster.local.", RecordType::A)).await;
    assert!(matches!(&reply.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com."));
    assert_eq!(ipv4s(&reply), ["192.0.2.1"]);

    // Upstream truncates big.example over UDP; the server asks again over TCP, and sends the
    // whole answer to a client whose EDNS payload size takes it...
    let reply = udp_query(dns.addr, &with_edns(query(13, "big.example.", RecordType::A), 4096)).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(ipv4s(&reply).len(), 60);
    // ...truncates it for a client without EDNS (512 bytes)...
    let reply = udp_query(dns.addr, &query(14, "big.example.", RecordType::A)).await;
    assert!(reply.metadata.truncation);
    assert!(ipv4s(&reply).len() < 60);
    // ...which then asks over TCP.
    let replies = tcp_queries(dns.addr, &[query(15, "big.example.", RecordType::A)]).await;
    assert!(!replies[0].metadata.truncation);
    assert_eq!(ipv4s(&replies[0]).len(), 60);

    assert!(upstream.queries.load(Ordering::SeqCst) >= 6);
    dns.shutdown().await;
}

#[tokio::test]
async fn dns_servfail_when_no_upstream_answers() {
    // A loopback port nobody listens on: the resolver never answers.
    let closed = UdpSocket::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let dns = start(vec![closed], Duration::from_millis(300)).await;
    let reply = udp_query(dns.addr, &query(21, "example.com.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // Names in the zone still answer.
    let reply = udp_query(dns.addr, &query(22, "web.default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(ipv4s(&reply), ["10.96.0.20"]);
    dns.shutdown().await;
}

#[tokio::test]
async fn dns_malformed_packets_are_dropped_or_get_formerr() {
    let upstream = fake_upstream().await;
    let dns = start(vec![upstream.addr], Duration::from_secs(2)).await;
    assert_eq!(udp_exchange(dns.addr, &[0xde, 0xad, 0xbe], Duration::from_millis(300)).await, None);
    let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let bytes = udp_exchange(dns.addr, &packet, WAIT).await.expect("FORMERR");
    let reply = Message::from_vec(&bytes).expect("decode");
    assert_eq!((reply.metadata.id, reply.metadata.response_code), (0x1234, ResponseCode::FormErr));
    // The server still answers afterwards.
    let reply = udp_query(dns.addr, &query(31, "web.default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(ipv4s(&reply), ["10.96.0.20"]);
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 0);
    dns.shutdown().await;
}
