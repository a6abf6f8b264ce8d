//! The answer to one query, from the records alone: pure, no IO. Mirrors how CoreDNS's kubernetes
//! plugin answers (`pods insecure`, TTL 5 s); names outside the cluster's zones come back as
//! [`Response::Forward`] for the server to send upstream.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::records::{PortEntry, Records, ServiceKind};

/// TTL of every record served from the zone (CoreDNS's default), and the SOA minimum.
pub const TTL: u32 = 5;
/// The UDP payload size this server advertises in its EDNS OPT record.
pub const EDNS_PAYLOAD: u16 = 1232;
/// How many in-zone CNAMEs are followed before giving up (loops between ExternalName Services).
const MAX_CNAME_DEPTH: usize = 8;
/// The TXT answer for `dns-version.<zone>` (the Kubernetes DNS schema version).
const SCHEMA_VERSION: &str = "1.1.0";

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The complete answer, from the records.
    Local(Message),
    /// The name is outside the cluster's zones: send the query upstream and relay the reply.
    Forward,
    /// The answer holds a CNAME (an ExternalName Service) to a name outside the zone: resolve `target`
    /// for `query_type` upstream and append those answers to `message`'s, as CoreDNS does. If
    /// upstream fails, `message` alone (the CNAME) is the answer.
    Chase { message: Message, target: Name, query_type: RecordType },
}

/// The answer to `query` from `records`. Pure: names in the cluster zone and in the reverse zones
/// of the Service and pod CIDRs are answered here; everything else is [`Response::Forward`].
pub fn answer(records: &Records, query: &Message) -> Response {
    let mut response = reply_to(query);
    if query.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Response::Local(response);
    }
    let [question] = query.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Response::Local(response);
    };
    let lower = question.name().to_lowercase();
    let qtype = question.query_type();
    let in_zone = records.zone.name.zone_of(&lower);
    if (in_zone || is_reverse(&lower)) && !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
        if !in_zone {
            return Response::Forward;
        }
        response.metadata.response_code = ResponseCode::Refused;
        return Response::Local(response);
    }
    if in_zone {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            response.metadata.response_code = ResponseCode::Refused;
            return Response::Local(response);
        }
        response.metadata.authoritative = true;
        return in_zone_answer(records, question.name(), &lower, qtype, response);
    }
    match reverse_answer(records, question.name(), &lower, qtype, response) {
        Some(response) => Response::Local(response),
        None => Response::Forward,
    }
}

/// An empty response to `query`: same id, opcode, question, RD and CD bits, and an OPT record when
/// the query had one.
pub fn reply_to(query: &Message) -> Message {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.checking_disabled = query.metadata.checking_disabled;
    response.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.edns = Some(edns);
    }
    response
}

/// Where a name in the zone points: an address (with the port, for SRV) or another name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(Name),
}

/// One thing a name resolves to, as CoreDNS's `msg.Service`.
#[derive(Debug, Clone)]
struct Item {
    host: Host,
    /// `None` for an endpoint of a slice without ports (an A record but no SRV).
    port: Option<u16>,
    /// The name this item is published under: the SRV target, the owner of the additional A record.
    target: Name,
}

enum Lookup {
    NxDomain,
    /// The name exists; no items means NODATA for every type.
    Found(Vec<Item>),
}

fn in_zone_answer(records: &Records, qname: &Name, lower: &Name, qtype: RecordType, mut response: Message) -> Response {
    let Some(base) = relative_labels(lower, &records.zone.name) else {
        return Response::Local(negative(records, response, ResponseCode::NXDomain));
    };
    let base: Vec<&str> = base.iter().map(String::as_str).collect();
    match base.as_slice() {
        [] => {
            match qtype {
                RecordType::SOA => response.answers.push(soa(records, records.zone.name.clone())),
                RecordType::NS => {
                    let ns = NS(records.zone.mname.clone());
                    response.answers.push(Record::from_rdata(qname.clone(), TTL, RData::NS(ns)));
                    for ip in &records.dns_ips {
                        response.additionals.push(address(records.zone.mname.clone(), *ip));
                    }
                }
                _ => return Response::Local(negative(records, response, ResponseCode::NoError)),
            }
            return Response::Local(response);
        }
        ["dns-version"] => {
            if qtype != RecordType::TXT {
                return Response::Local(negative(records, response, ResponseCode::NoError));
            }
            let txt = TXT::new(vec![SCHEMA_VERSION.to_string()]);
            response.answers.push(Record::from_rdata(qname.clone(), TTL, RData::TXT(txt)));
            return Response::Local(response);
        }
        ["ns", "dns"] => {
            let items = records
                .dns_ips
                .iter()
                .map(|ip| Item { host: Host::Ip(*ip), port: None, target: records.zone.mname.clone() })
                .collect();
            return typed_answer(records, qname, qtype, items, response);
        }
        _ => {}
    }
    match lookup(records, &base, lower) {
        Lookup::NxDomain => Response::Local(negative(records, response, ResponseCode::NXDomain)),
        Lookup::Found(items) => typed_answer(records, qname, qtype, items, response),
    }
}

/// The records of type `qtype` for a name that exists and resolves to `items`.
fn typed_answer(
    records: &Records,
    qname: &Name,
    qtype: RecordType,
    items: Vec<Item>,
    mut response: Message,
) -> Response {
    match qtype {
        RecordType::A | RecordType::AAAA => {
            let mut chase = None;
            address_answers(records, qname, qtype, &items, 0, &mut response.answers, &mut chase);
            if response.answers.is_empty() {
                return Response::Local(negative(records, response, ResponseCode::NoError));
            }
            match chase {
                Some(target) => Response::Chase { message: response, target, query_type: qtype },
                None => Response::Local(response),
            }
        }
        RecordType::CNAME => {
            for item in &items {
                if let Host::Name(target) = &item.host {
                    response.answers.push(cname(qname.clone(), target.clone()));
                }
            }
            if response.answers.is_empty() {
                return Response::Local(negative(records, response, ResponseCode::NoError));
            }
            Response::Local(response)
        }
        RecordType::SRV => {
            srv_answers(qname, &items, &mut response);
            if response.answers.is_empty() {
                return Response::Local(negative(records, response, ResponseCode::NoError));
            }
            Response::Local(response)
        }
        _ => Response::Local(negative(records, response, ResponseCode::NoError)),
    }
}

/// A or AAAA records for `owner`, following CNAMEs inside the zone; a CNAME leaving the zone is
/// left in `chase` for the server to resolve upstream.
fn address_answers(
    records: &Records,
    owner: &Name,
    qtype: RecordType,
    items: &[Item],
    depth: usize,
    answers: &mut Vec<Record>,
    chase: &mut Option<Name>,
) {
    let mut seen = HashSet::new();
    for item in items {
        match &item.host {
            Host::Ip(ip) => {
                let family_matches =
                    matches!((qtype, ip), (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_)));
                if family_matches && seen.insert(*ip) {
                    answers.push(address(owner.clone(), *ip));
                }
            }
            Host::Name(target) => {
                if target.to_lowercase() == owner.to_lowercase() {
                    continue;
                }
                answers.push(cname(owner.clone(), target.clone()));
                if !records.zone.name.zone_of(target) {
                    *chase = Some(target.clone());
                    continue;
                }
                if depth >= MAX_CNAME_DEPTH {
                    continue;
                }
                let lower = target.to_lowercase();
                let Some(base) = relative_labels(&lower, &records.zone.name) else { continue };
                let base: Vec<&str> = base.iter().map(String::as_str).collect();
                if let Lookup::Found(next) = lookup(records, &base, &lower) {
                    address_answers(records, target, qtype, &next, depth + 1, answers, chase);
                }
            }
        }
    }
}

/// SRV records for `qname`, with the targets' addresses in the additional section. Every item
/// has priority 0 and an equal share of weight 100 (at least 1), as CoreDNS computes it.
fn srv_answers(qname: &Name, items: &[Item], response: &mut Message) {
    let share = (100 / items.len().max(1)).max(1);
    let weight = u16::try_from(share).unwrap_or(1);
    let mut seen_srv = HashSet::new();
    let mut seen_extra = HashSet::new();
    for item in items {
        let Some(port) = item.port else { continue };
        let target = match &item.host {
            Host::Ip(_) => item.target.clone(),
            Host::Name(name) => name.clone(),
        };
        if seen_srv.insert((target.clone(), port)) {
            let srv = SRV::new(0, weight, port, target.clone());
            response.answers.push(Record::from_rdata(qname.clone(), TTL, RData::SRV(srv)));
        }
        if let Host::Ip(ip) = item.host
            && seen_extra.insert((target.clone(), ip))
        {
            response.additionals.push(address(target, ip));
        }
    }
}

/// What a name below the zone resolves to. `base` is the lower-case labels left of the zone.
fn lookup(records: &Records, base: &[&str], lower: &Name) -> Lookup {
    let Some((&kind, rest)) = base.split_last() else { return Lookup::Found(Vec::new()) };
    if kind != "svc" && kind != "pod" {
        return Lookup::NxDomain;
    }
    let Some((&namespace, rest)) = rest.split_last() else { return Lookup::Found(Vec::new()) };
    if kind == "pod" {
        // `pods insecure`: any address-shaped name answers with that address. We watch no
        // Namespaces, so unlike CoreDNS every namespace counts as existing here.
        return match rest {
            [] => Lookup::Found(Vec::new()),
            [pod] => match pod_ip(pod) {
                Some(ip) => Lookup::Found(vec![Item { host: Host::Ip(ip), port: None, target: lower.clone() }]),
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        };
    }
    if !records.namespaces.contains(namespace) {
        return Lookup::NxDomain;
    }
    let Some((&service, rest)) = rest.split_last() else { return Lookup::Found(Vec::new()) };
    let (endpoint, port, protocol) = match rest {
        [] => (None, "", ""),
        [endpoint] => (Some(*endpoint), "", ""),
        [port, protocol] => (None, strip_underscore(port), strip_underscore(protocol)),
        _ => return Lookup::NxDomain,
    };
    let Some(entry) = records.services.get(&(namespace.to_string(), service.to_string())) else {
        return Lookup::NxDomain;
    };
    let port_matches =
        |p: &PortEntry| (port.is_empty() || port == p.name) && (protocol.is_empty() || protocol == p.protocol);
    let mut items = Vec::new();
    match &entry.kind {
        ServiceKind::ExternalName(target) => {
            if let (None, Some(target)) = (endpoint, target) {
                items.push(Item { host: Host::Name(target.clone()), port: Some(0), target: entry.fqdn.clone() });
            }
        }
        ServiceKind::ClusterIp(ips) if endpoint.is_none() => {
            for p in entry.ports.iter().filter(|p| port_matches(p)) {
                for ip in ips {
                    items.push(Item { host: Host::Ip(*ip), port: Some(p.port), target: entry.fqdn.clone() });
                }
            }
        }
        ServiceKind::ClusterIp(_) | ServiceKind::Headless => {
            let no_port = PortEntry { name: String::new(), protocol: String::new(), port: 0 };
            for slice in &entry.slices {
                for ep in &slice.endpoints {
                    if endpoint.is_some_and(|label| label != ep.label) {
                        continue;
                    }
                    if slice.ports.is_empty() {
                        if port_matches(&no_port) {
                            items.push(Item { host: Host::Ip(ep.ip), port: None, target: ep.fqdn.clone() });
                        }
                        continue;
                    }
                    for p in slice.ports.iter().filter(|p| port_matches(p)) {
                        items.push(Item { host: Host::Ip(ep.ip), port: Some(p.port), target: ep.fqdn.clone() });
                    }
                }
            }
        }
    }
    if items.is_empty() { Lookup::NxDomain } else { Lookup::Found(items) }
}

/// `10-244-1-5` -> 10.244.1.5; `fd00--1` -> fd00::1 (CoreDNS's rule: three dashes and no `--` is IPv4).
fn pod_ip(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

fn strip_underscore(label: &str) -> &str {
    label.strip_prefix('_').unwrap_or(label)
}

/// The labels of `name` left of `zone`, or `None` when one is not UTF-8.
fn relative_labels(name: &Name, zone: &Name) -> Option<Vec<String>> {
    let keep = usize::from(name.num_labels()).saturating_sub(usize::from(zone.num_labels()));
    name.iter().take(keep).map(|label| std::str::from_utf8(label).ok().map(str::to_string)).collect()
}

fn is_reverse(lower: &Name) -> bool {
    let labels: Vec<&[u8]> = lower.iter().collect();
    matches!(labels.as_slice(), [.., b"in-addr", b"arpa"] | [.., b"ip6", b"arpa"])
}

/// PTR answers for reverse names: known addresses answer with their names, unknown addresses in
/// the Service and pod CIDRs NXDOMAIN; `None` means the name is not ours (forward it).
fn reverse_answer(
    records: &Records,
    qname: &Name,
    lower: &Name,
    qtype: RecordType,
    mut response: Message,
) -> Option<Message> {
    let labels: Vec<&[u8]> = lower.iter().collect();
    let (ip, soa_owner) = match labels.as_slice() {
        [octets @ .., b"in-addr", b"arpa"] => {
            let mut parsed = Vec::with_capacity(4);
            for label in octets.iter().rev() {
                parsed.push(std::str::from_utf8(label).ok()?.parse::<u8>().ok()?);
            }
            if parsed.len() != 4 {
                let net = records
                    .zone
                    .reverse_nets
                    .iter()
                    .find(|net| !parsed.is_empty() && parsed.len() < 4 && net.covers_prefix(&parsed))?;
                response.metadata.authoritative = true;
                response.authorities.push(soa(records, net.zone_name()));
                return Some(response);
            }
            let ip = IpAddr::V4(Ipv4Addr::new(parsed[0], parsed[1], parsed[2], parsed[3]));
            let owner = records.zone.reverse_net_of(ip).map(|net| net.zone_name());
            (ip, owner.or_else(|| Name::from_ascii("in-addr.arpa.").ok())?)
        }
        [.., b"ip6", b"arpa"] => {
            let net = lower.parse_arpa_name().ok()?;
            if net.prefix_len() != 128 {
                return None;
            }
            (net.addr(), Name::from_ascii("ip6.arpa.").ok()?)
        }
        _ => return None,
    };
    response.metadata.authoritative = true;
    match records.ptr.get(&ip) {
        Some(names) => {
            if qtype == RecordType::PTR {
                for name in names {
                    response.answers.push(Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(name.clone()))));
                }
            } else {
                response.authorities.push(soa(records, soa_owner));
            }
            Some(response)
        }
        None if records.zone.reverse_net_of(ip).is_some() => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa(records, soa_owner));
            Some(response)
        }
        None => None,
    }
}

/// NXDOMAIN (`rcode`) or NODATA (`NoError`): no answers, the zone's SOA in the authority section.
fn negative(records: &Records, mut response: Message, rcode: ResponseCode) -> Message {
    response.metadata.response_code = rcode;
    response.answers.clear();
    response.additionals.clear();
    response.authorities = vec![soa(records, records.zone.name.clone())];
    response
}

/// The SOA record, as CoreDNS builds it: `ns.dns.<zone> hostmaster.<zone> <serial> 7200 1800 86400 5`.
pub(super) fn soa(records: &Records, owner: Name) -> Record {
    let zone = &records.zone;
    let soa = SOA::new(zone.mname.clone(), zone.rname.clone(), records.serial, 7200, 1800, 86400, TTL);
    Record::from_rdata(owner, TTL, RData::SOA(soa))
}

fn address(owner: Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner, TTL, data)
}

fn cname(owner: Name, target: Name) -> Record {
    Record::from_rdata(owner, TTL, RData::CNAME(CNAME(target)))
}
