//! The answers, compared whole (rcode, flags, answer, authority and additional sections), for each
//! record type and each negative case; truncation; and random bytes through decode/answer/encode.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::answer::soa;
use super::wire::{self, Decoded};
use super::*;

fn service(namespace: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": namespace, "name": name}, "spec": spec})).expect("service")
}

fn slice(
    namespace: &str,
    service: &str,
    name: &str,
    ports: serde_json::Value,
    endpoints: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("slice")
}

fn fixture() -> Records {
    let services = vec![
        service("default", "kubernetes", json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]})),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.10", "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
        ),
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics", "port": 9090}]}),
        ),
        service("default", "db", json!({"clusterIP": "None", "ports": [{"name": "mysql", "port": 3306}]})),
        service("default", "ext", json!({"type": "ExternalName", "externalName": "example.com"})),
        service("default", "ext-in", json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"})),
        service("default", "ext-ip", json!({"type": "ExternalName", "externalName": "192.0.2.7"})),
        service(
            "default",
            "dual",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00::30"], "ports": [{"name": "http", "port": 80}]}),
        ),
        service("default", "empty", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})),
        service("default", "noports", json!({"clusterIP": "None"})),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            "web-abc",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}]),
            json!([
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": false}},
            ]),
        ),
        slice(
            "default",
            "db",
            "db-xyz",
            json!([{"name": "mysql", "port": 3306, "protocol": "TCP"}]),
            json!([
                {"addresses": ["10.244.1.10"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.11"], "hostname": "db-1"},
                {"addresses": ["10.244.2.12"], "hostname": "db-2", "conditions": {"ready": false}},
            ]),
        ),
        slice("default", "noports", "noports-1", json!([]), json!([{"addresses": ["10.244.3.3"]}])),
        slice("default", "gone", "gone-1", json!([]), json!([{"addresses": ["10.244.3.4"]}])),
    ];
    Records::build(&services, &slices, Zone::cluster_local())
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    message
}

fn local(records: &Records, query: &Message) -> Message {
    match answer(records, query) {
        Response::Local(message) => message,
        other => panic!("expected a local answer, got {other:?}"),
    }
}

fn a(owner: &str, ip: &str) -> Record {
    let data = match ip.parse::<IpAddr>().expect("ip") {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name(owner), TTL, data)
}

fn srv(owner: &str, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(name(owner), TTL, RData::SRV(SRV::new(0, weight, port, name(target))))
}

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), TTL, RData::CNAME(CNAME(name(target))))
}

fn ptr(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), TTL, RData::PTR(PTR(name(target))))
}

/// The expected response: authoritative, RD copied, the question echoed.
fn expected(
    q: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = true;
    m.metadata.response_code = rcode;
    m.queries = q.queries.clone();
    m.answers = answers;
    m.authorities = authorities;
    m.additionals = additionals;
    m
}

fn zone_soa(records: &Records) -> Record {
    soa(records, name("cluster.local."))
}

/// Asserts the answer to (`qname`, `qtype`) is exactly `answers`/`additionals` with NOERROR.
fn assert_answers(records: &Records, qname: &str, qtype: RecordType, answers: Vec<Record>, additionals: Vec<Record>) {
    let q = query(qname, qtype);
    assert_eq!(
        local(records, &q),
        expected(&q, ResponseCode::NoError, answers, vec![], additionals),
        "{qname} {qtype}"
    );
}

fn assert_nodata(records: &Records, qname: &str, qtype: RecordType) {
    let q = query(qname, qtype);
    let soa = zone_soa(records);
    assert_eq!(local(records, &q), expected(&q, ResponseCode::NoError, vec![], vec![soa], vec![]), "{qname} {qtype}");
}

fn assert_nxdomain(records: &Records, qname: &str, qtype: RecordType) {
    let q = query(qname, qtype);
    let soa = zone_soa(records);
    assert_eq!(local(records, &q), expected(&q, ResponseCode::NXDomain, vec![], vec![soa], vec![]), "{qname} {qtype}");
}

#[test]
fn a_for_a_cluster_ip_service() {
    let r = fixture();
    let web = "web.default.svc.cluster.local.";
    assert_answers(&r, web, RecordType::A, vec![a(web, "10.96.0.20")], vec![]);
    assert_nodata(&r, web, RecordType::AAAA);
    let dual = "dual.default.svc.cluster.local.";
    assert_answers(&r, dual, RecordType::A, vec![a(dual, "10.96.0.30")], vec![]);
    assert_answers(&r, dual, RecordType::AAAA, vec![a(dual, "fd00::30")], vec![]);
}

#[test]
fn names_are_case_insensitive_and_answers_keep_the_query_case() {
    let r = fixture();
    let web = "WEB.Default.SVC.Cluster.LOCAL.";
    assert_answers(&r, web, RecordType::A, vec![a(web, "10.96.0.20")], vec![]);
    let db0 = "DB-0.db.DEFAULT.svc.cluster.local.";
    assert_answers(&r, db0, RecordType::A, vec![a(db0, "10.244.1.10")], vec![]);
}

#[test]
fn headless_services_answer_their_ready_endpoints() {
    let r = fixture();
    let db = "db.default.svc.cluster.local.";
    assert_answers(&r, db, RecordType::A, vec![a(db, "10.244.1.10"), a(db, "10.244.2.11")], vec![]);
    let db0 = "db-0.db.default.svc.cluster.local.";
    assert_answers(&r, db0, RecordType::A, vec![a(db0, "10.244.1.10")], vec![]);
    // Not ready: no record.
    assert_nxdomain(&r, "db-2.db.default.svc.cluster.local.", RecordType::A);
    // A headless Service without ready endpoints does not exist (as CoreDNS answers).
    assert_nxdomain(&r, "empty.default.svc.cluster.local.", RecordType::A);
    // A slice without ports still gives A records.
    let noports = "noports.default.svc.cluster.local.";
    assert_answers(&r, noports, RecordType::A, vec![a(noports, "10.244.3.3")], vec![]);
    assert_nodata(&r, noports, RecordType::SRV);
}

#[test]
fn endpoint_names_of_a_cluster_ip_service() {
    let r = fixture();
    let ep = "10-244-1-5.web.default.svc.cluster.local.";
    assert_answers(&r, ep, RecordType::A, vec![a(ep, "10.244.1.5")], vec![]);
    assert_nxdomain(&r, "10-244-1-6.web.default.svc.cluster.local.", RecordType::A);
}

#[test]
fn pod_records_insecure() {
    let r = fixture();
    let pod = "10-244-9-9.anyns.pod.cluster.local.";
    assert_answers(&r, pod, RecordType::A, vec![a(pod, "10.244.9.9")], vec![]);
    assert_nodata(&r, pod, RecordType::AAAA);
    let pod6 = "fd00--9.default.pod.cluster.local.";
    assert_answers(&r, pod6, RecordType::AAAA, vec![a(pod6, "fd00::9")], vec![]);
    assert_nxdomain(&r, "not-an-ip.default.pod.cluster.local.", RecordType::A);
    assert_nxdomain(&r, "x.10-244-9-9.default.pod.cluster.local.", RecordType::A);
    assert_nodata(&r, "default.pod.cluster.local.", RecordType::A);
    assert_nodata(&r, "pod.cluster.local.", RecordType::A);
}

#[test]
fn srv_for_named_ports() {
    let r = fixture();
    let web = "web.default.svc.cluster.local.";
    let owner = "_http._tcp.web.default.svc.cluster.local.";
    assert_answers(&r, owner, RecordType::SRV, vec![srv(owner, 100, 80, web)], vec![a(web, "10.96.0.20")]);
    // Without the port labels: every port, weight shared, the address once.
    assert_answers(
        &r,
        web,
        RecordType::SRV,
        vec![srv(web, 50, 80, web), srv(web, 50, 9090, web)],
        vec![a(web, "10.96.0.20")],
    );
    // Headless: one SRV per endpoint, targets named by hostname.
    let owner = "_mysql._tcp.db.default.svc.cluster.local.";
    let (db0, db1) = ("db-0.db.default.svc.cluster.local.", "db-1.db.default.svc.cluster.local.");
    assert_answers(
        &r,
        owner,
        RecordType::SRV,
        vec![srv(owner, 50, 3306, db0), srv(owner, 50, 3306, db1)],
        vec![a(db0, "10.244.1.10"), a(db1, "10.244.2.11")],
    );
    // The wrong protocol or an unknown port name: no such name.
    assert_nxdomain(&r, "_http._udp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_nxdomain(&r, "_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    // The SRV name has an A record too (the Service's), as in CoreDNS.
    let owner = "_http._tcp.web.default.svc.cluster.local.";
    assert_answers(&r, owner, RecordType::A, vec![a(owner, "10.96.0.20")], vec![]);
}

#[test]
fn external_name_is_a_cname_resolved_upstream() {
    let r = fixture();
    let ext = "ext.default.svc.cluster.local.";
    assert_answers(&r, ext, RecordType::CNAME, vec![cname(ext, "example.com.")], vec![]);
    let q = query(ext, RecordType::A);
    let message = expected(&q, ResponseCode::NoError, vec![cname(ext, "example.com.")], vec![], vec![]);
    assert_eq!(answer(&r, &q), Response::Chase { message, target: name("example.com."), query_type: RecordType::A });
    // A target inside the zone is followed here.
    let ext_in = "ext-in.default.svc.cluster.local.";
    let web = "web.default.svc.cluster.local.";
    assert_answers(&r, ext_in, RecordType::A, vec![cname(ext_in, web), a(web, "10.96.0.20")], vec![]);
    // An IP address as external name serves nothing.
    assert_nxdomain(&r, "ext-ip.default.svc.cluster.local.", RecordType::A);
    // No endpoint names under an ExternalName.
    assert_nxdomain(&r, "x.ext.default.svc.cluster.local.", RecordType::A);
    // A ClusterIP Service has no CNAME.
    assert_nodata(&r, web, RecordType::CNAME);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let r = fixture();
    let q = "20.0.96.10.in-addr.arpa.";
    assert_answers(&r, q, RecordType::PTR, vec![ptr(q, "web.default.svc.cluster.local.")], vec![]);
    let q = "10.1.244.10.in-addr.arpa.";
    assert_answers(&r, q, RecordType::PTR, vec![ptr(q, "db-0.db.default.svc.cluster.local.")], vec![]);
    let q = "5.1.244.10.in-addr.arpa.";
    assert_answers(&r, q, RecordType::PTR, vec![ptr(q, "10-244-1-5.web.default.svc.cluster.local.")], vec![]);
    let q = "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_answers(&r, q, RecordType::PTR, vec![ptr(q, "dual.default.svc.cluster.local.")], vec![]);
    // Unknown addresses in the Service CIDR: NXDOMAIN, never forwarded.
    let q = query("99.0.96.10.in-addr.arpa.", RecordType::PTR);
    let soa = soa(&r, name("10.in-addr.arpa."));
    assert_eq!(local(&r, &q), expected(&q, ResponseCode::NXDomain, vec![], vec![soa.clone()], vec![]));
    // A known address asked for another type: NODATA.
    let q = query("20.0.96.10.in-addr.arpa.", RecordType::A);
    assert_eq!(local(&r, &q), expected(&q, ResponseCode::NoError, vec![], vec![soa], vec![]));
    // Above an address, inside the Service CIDR's reverse zone: NODATA; the reverse root is not ours.
    let q = query("96.10.in-addr.arpa.", RecordType::PTR);
    let reverse_soa = super::answer::soa(&r, name("10.in-addr.arpa."));
    assert_eq!(local(&r, &q), expected(&q, ResponseCode::NoError, vec![], vec![reverse_soa], vec![]));
    assert_eq!(answer(&r, &query("in-addr.arpa.", RecordType::PTR)), Response::Forward);
    // Outside the cluster's networks: forwarded.
    assert_eq!(answer(&r, &query("8.8.8.8.in-addr.arpa.", RecordType::PTR)), Response::Forward);
    assert_eq!(answer(&r, &query("1.0.0.127.in-addr.arpa.", RecordType::PTR)), Response::Forward);
}

#[test]
fn apex_soa_ns_and_schema_version() {
    let r = fixture();
    let zone = "cluster.local.";
    assert_answers(&r, zone, RecordType::SOA, vec![zone_soa(&r)], vec![]);
    let ns = Record::from_rdata(name(zone), TTL, RData::NS(NS(name("ns.dns.cluster.local."))));
    assert_answers(&r, zone, RecordType::NS, vec![ns], vec![a("ns.dns.cluster.local.", "10.96.0.10")]);
    let q = "dns-version.cluster.local.";
    let txt = Record::from_rdata(name(q), TTL, RData::TXT(TXT::new(vec!["1.1.0".to_string()])));
    assert_answers(&r, q, RecordType::TXT, vec![txt], vec![]);
    let soa = zone_soa(&r);
    match soa.data {
        RData::SOA(data) => {
            assert_eq!(data.mname.to_ascii(), "ns.dns.cluster.local.");
            assert_eq!(data.rname.to_ascii(), "hostmaster.cluster.local.");
            assert_eq!((data.refresh, data.retry, data.expire, data.minimum), (7200, 1800, 86400, 5));
        }
        other => panic!("not an SOA: {other:?}"),
    }
    assert_eq!(soa.ttl, 5);
}

#[test]
fn negative_answers() {
    let r = fixture();
    // NODATA: names that exist, with nothing of the type asked.
    assert_nodata(&r, "cluster.local.", RecordType::A);
    assert_nodata(&r, "svc.cluster.local.", RecordType::A);
    assert_nodata(&r, "default.svc.cluster.local.", RecordType::A);
    assert_nodata(&r, "web.default.svc.cluster.local.", RecordType::TXT);
    assert_nodata(&r, "web.default.svc.cluster.local.", RecordType::PTR);
    assert_nodata(&r, "web.default.svc.cluster.local.", RecordType::MX);
    assert_nodata(&r, "dns-version.cluster.local.", RecordType::A);
    // NXDOMAIN: names that do not exist.
    assert_nxdomain(&r, "nosuch.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&r, "missing.default.svc.cluster.local.", RecordType::A);
    assert_nxdomain(&r, "missing.default.svc.cluster.local.", RecordType::SRV);
    assert_nxdomain(&r, "foo.cluster.local.", RecordType::A);
    assert_nxdomain(&r, "web.default.foo.cluster.local.", RecordType::A);
    assert_nxdomain(&r, "a.b.c.web.default.svc.cluster.local.", RecordType::A);
    // A slice whose Service is gone names nothing.
    assert_nxdomain(&r, "gone.default.svc.cluster.local.", RecordType::A);
}

#[test]
fn other_names_are_forwarded_and_bad_queries_refused() {
    let r = fixture();
    assert_eq!(answer(&r, &query("example.com.", RecordType::A)), Response::Forward);
    assert_eq!(answer(&r, &query("local.", RecordType::A)), Response::Forward);

    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(local(&r, &q).metadata.response_code, ResponseCode::NotImp);

    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.add_query(Query::query(name("db.default.svc.cluster.local."), RecordType::A));
    assert_eq!(local(&r, &q).metadata.response_code, ResponseCode::FormErr);

    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(local(&r, &q).metadata.response_code, ResponseCode::Refused);

    let q = query("cluster.local.", RecordType::AXFR);
    assert_eq!(local(&r, &q).metadata.response_code, ResponseCode::Refused);
}

#[test]
fn edns_is_answered_with_edns() {
    let r = fixture();
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    let response = local(&r, &q);
    assert_eq!(response.edns.as_ref().map(|e| e.max_payload()), Some(answer::EDNS_PAYLOAD));
    assert_eq!(wire::udp_limit(&q), 4096);
    assert_eq!(wire::udp_limit(&query("x.", RecordType::A)), 512);
}

#[test]
fn rebuilding_records_is_seen_by_readers() {
    let shared = SharedRecords::new(Records::empty(Zone::cluster_local()));
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(local(&shared.current(), &q).metadata.response_code, ResponseCode::NXDomain);
    shared.replace(fixture());
    assert_eq!(local(&shared.current(), &q).answers.len(), 1);
}

/// A headless Service with `n` ready endpoints.
fn many(n: u8) -> Records {
    let services =
        vec![service("default", "many", json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}))];
    let endpoints: Vec<serde_json::Value> = (0..n).map(|i| json!({"addresses": [format!("10.244.7.{i}")]})).collect();
    let slices = vec![slice("default", "many", "many-1", json!([{"name": "http", "port": 80}]), json!(endpoints))];
    Records::build(&services, &slices, Zone::cluster_local())
}

#[test]
fn udp_responses_are_truncated_to_whole_records() {
    let r = many(100);
    let q = query("many.default.svc.cluster.local.", RecordType::A);
    let full = local(&r, &q);
    assert_eq!(full.answers.len(), 100);

    let bytes = wire::encode(&full, wire::udp_limit(&q)).expect("encode");
    assert!(bytes.len() <= 512);
    let truncated = Message::from_vec(&bytes).expect("decode");
    assert!(truncated.metadata.truncation);
    assert!(!truncated.answers.is_empty() && truncated.answers.len() < 100);
    assert_eq!(truncated.answers[..], full.answers[..truncated.answers.len()]);
    // One more record would not have fitted.
    let mut bigger = truncated.clone();
    bigger.answers = full.answers[..truncated.answers.len() + 1].to_vec();
    assert!(bigger.to_vec().expect("encode").len() > 512);

    // Within the client's EDNS payload size, nothing is cut.
    let bytes = wire::encode(&full, 4096).expect("encode");
    let whole = Message::from_vec(&bytes).expect("decode");
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 100);

    // A limit too small for any answer: the question alone, TC set.
    let bytes = wire::encode(&full, 60).expect("encode");
    let empty = Message::from_vec(&bytes).expect("decode");
    assert!(empty.metadata.truncation && empty.answers.is_empty());
}

#[test]
fn additional_records_go_first_and_without_tc() {
    let r = many(20);
    let q = query("_http._tcp.many.default.svc.cluster.local.", RecordType::SRV);
    let full = local(&r, &q);
    assert_eq!((full.answers.len(), full.additionals.len()), (20, 20));
    let full_len = full.to_vec().expect("encode").len();
    let mut without = full.clone();
    without.additionals.clear();
    let without_extra = without.to_vec().expect("encode").len();
    assert!(without_extra < full_len);
    let bytes = wire::encode(&full, without_extra).expect("encode");
    let m = Message::from_vec(&bytes).expect("decode");
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (20, 0));
}

#[test]
fn malformed_packets_get_formerr_or_are_dropped() {
    // Too short for a header: dropped.
    assert!(matches!(wire::decode(&[1, 2, 3]), Decoded::Drop));
    // A header claiming one question, then garbage: FORMERR with the query's id.
    let packet = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let Decoded::Malformed(bytes) = wire::decode(&packet) else { panic!("expected FORMERR") };
    let m = Message::from_vec(&bytes).expect("decode");
    assert_eq!((m.metadata.id, m.metadata.response_code), (0x1234, ResponseCode::FormErr));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    // Responses are never answered.
    let mut response = query("example.com.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(matches!(wire::decode(&response.to_vec().expect("encode")), Decoded::Drop));
}

/// A small xorshift generator: reproducible random bytes without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Everything a received packet goes through, on random and mutated packets: no panic.
#[test]
fn random_bytes_never_panic() {
    let r = fixture();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = [
        ("web.default.svc.cluster.local.", RecordType::A),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("ext.default.svc.cluster.local.", RecordType::A),
        ("20.0.96.10.in-addr.arpa.", RecordType::PTR),
        ("db.default.svc.cluster.local.", RecordType::AAAA),
    ]
    .iter()
    .map(|(n, t)| query(n, *t).to_vec().expect("encode"))
    .collect();
    let run = |packet: &[u8]| {
        if let Decoded::Query(q) = wire::decode(packet) {
            let limit = wire::udp_limit(&q);
            match answer(&r, &q) {
                Response::Local(m) | Response::Chase { message: m, .. } => {
                    let _ = wire::encode(&m, limit);
                }
                Response::Forward => {}
            }
        }
    };
    for _ in 0..20_000 {
        let len = (rng.next() % 300) as usize;
        let packet: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        run(&packet);
    }
    for i in 0..20_000 {
        let mut packet = seeds[i % seeds.len()].clone();
        for _ in 0..=(rng.next() % 4) {
            let at = (rng.next() as usize) % packet.len();
            packet[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            packet.truncate((rng.next() as usize) % packet.len());
        }
        run(&packet);
    }
}
