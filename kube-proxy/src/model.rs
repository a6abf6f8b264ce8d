//! The proxy's plain view of Services and their endpoints.
//!
//! [`build`] turns the apiserver's `Service` and `EndpointSlice` objects into one [`ServicePort`] per
//! Service port, each carrying its endpoints. Everything the rule renderer needs is here, already
//! validated and defaulted, so the renderer never looks at API objects.
//!
//! Invariants:
//! - IPv4 only, like one upstream proxier instance per IP family: non-IPv4 cluster IPs, external
//!   IPs, ingress IPs and slices are ignored.
//! - Headless (`clusterIP: None`) and `ExternalName` Services, and Services without a cluster IP,
//!   produce nothing.
//! - Endpoints are unique by `ip:port` within a Service port and sorted by address then port.
//! - Bad input (an unparsable IP, a port out of range) drops that one item, never the whole set.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Session affinity timeout when the Service does not set one (3 hours, as upstream).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the API spelling; a missing value means TCP (the API default).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }

    /// The lower-case name iptables uses for `-p` and `-m`.
    pub fn as_iptables(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Which endpoints a kind of traffic may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Endpoints on any node.
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// One endpoint of a Service port, as one EndpointSlice entry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// The port from the slice whose name and protocol match the Service port.
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
    pub zone: Option<String>,
}

impl Endpoint {
    /// `ip:port`, the form used in DNAT targets, comments and chain-name hashes.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// One port of one Service, with the endpoints that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The Service port's name; empty for an unnamed single port.
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress` IPs the proxy should capture (ipMode VIP or unset).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `loadBalancerSourceRanges`: when set, only these sources may use the load-balancer IPs.
    pub load_balancer_source_ranges: Vec<Ipv4Cidr>,
    /// `Some(timeout seconds)` for `sessionAffinity: ClientIP`.
    pub session_affinity_timeout: Option<u32>,
    pub internal_traffic_policy: TrafficPolicy,
    /// Already narrowed as upstream does: `Local` only counts for NodePort and LoadBalancer
    /// Services and Services with external IPs.
    pub external_traffic_policy: TrafficPolicy,
    /// Answered by the proxy's HTTP health server, not by rules (beyond a filter ACCEPT).
    pub health_check_node_port: Option<u16>,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// The Service port's identity, `ns/svc:port` (or `ns/svc` for an unnamed port).
    pub fn port_name_string(&self) -> String {
        ServicePortName { namespace: &self.namespace, name: &self.name, port: &self.port_name }.to_string()
    }

    /// Whether any traffic arrives from outside: a node port, an external IP or a load-balancer IP.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }
}

/// An IPv4 network such as `10.244.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network with host bits cleared; `None` if `prefix` is over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then(|| Ipv4Cidr { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
}

/// The netmask of a prefix length; prefixes over 32 count as 32.
fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;

    /// Accepts `a.b.c.d/n`, or a bare address meaning `/32`.
    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let (ip, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("invalid IPv4 CIDR {s:?}"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("invalid IPv4 CIDR {s:?}"))?;
        Ipv4Cidr::new(ip, prefix).ok_or_else(|| format!("invalid IPv4 CIDR {s:?}"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

struct ServicePortName<'a> {
    namespace: &'a str,
    name: &'a str,
    port: &'a str,
}

impl fmt::Display for ServicePortName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// All Service ports of `services`, each with its endpoints from `slices`, sorted by namespace,
/// name, port name and protocol.
pub fn build(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServicePort> {
    // (namespace, service name) -> its slices, sorted by slice name so dedup is stable.
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        by_service.entry((ns, svc.as_str())).or_default().push(slice);
    }
    for list in by_service.values_mut() {
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    let mut out = Vec::new();
    for service in services {
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let svc_slices = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
        out.extend(service_ports(service, svc_slices));
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(&b.namespace, &b.name, &b.port_name, b.protocol))
    });
    out
}

/// The Service ports of one Service; `slices` must be that Service's slices (any order).
pub fn service_ports(service: &Service, slices: &[&EndpointSlice]) -> Vec<ServicePort> {
    let Some(spec) = service.spec.as_ref() else { return Vec::new() };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if type_ == "ExternalName" {
        return Vec::new();
    }
    let Some(cluster_ip) = ipv4_cluster_ip(spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref()) else {
        return Vec::new();
    };
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let external_ips = parse_ipv4s(spec.external_ips.iter().flatten().map(String::as_str));
    let load_balancer_ips = if type_ == "LoadBalancer" {
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        // ipMode Proxy means the load balancer delivers to the node itself; the proxy must not
        // short-circuit the address.
        parse_ipv4s(
            ingress
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
                .filter_map(|i| i.ip.as_deref()),
        )
    } else {
        Vec::new()
    };
    let load_balancer_source_ranges: Vec<Ipv4Cidr> = if type_ == "LoadBalancer" {
        spec.load_balancer_source_ranges.iter().flatten().filter_map(|r| r.trim().parse().ok()).collect()
    } else {
        Vec::new()
    };
    let session_affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    let internal_traffic_policy = policy(spec.internal_traffic_policy.as_deref());
    let may_be_external = matches!(type_, "NodePort" | "LoadBalancer") || !external_ips.is_empty();
    let external_traffic_policy =
        if may_be_external { policy(spec.external_traffic_policy.as_deref()) } else { TrafficPolicy::Cluster };
    let health_check_node_port = if type_ == "LoadBalancer" && external_traffic_policy == TrafficPolicy::Local {
        spec.health_check_node_port.and_then(port_number)
    } else {
        None
    };

    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let (Some(protocol), Some(port)) = (Protocol::parse(sp.protocol.as_deref()), port_number(sp.port)) else {
            continue;
        };
        let port_name = sp.name.clone().unwrap_or_default();
        let endpoints = endpoints_for(slices, &port_name, protocol);
        out.push(ServicePort {
            namespace: namespace.clone(),
            name: name.clone(),
            port_name,
            protocol,
            cluster_ip,
            port,
            node_port: sp.node_port.and_then(port_number),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            load_balancer_source_ranges: load_balancer_source_ranges.clone(),
            session_affinity_timeout,
            internal_traffic_policy,
            external_traffic_policy,
            health_check_node_port,
            endpoints,
        });
    }
    out
}

/// The endpoints of one Service port: every slice entry whose slice has a port with the same name
/// and protocol. Entries missing conditions count as ready and serving (the API's rule); when two
/// slices list the same `ip:port`, the first by slice name wins unless a later one is on a named
/// node and the first is not.
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut sorted: Vec<&EndpointSlice> = slices.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut found: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in sorted {
        if slice.address_type != "IPv4" {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(port) = port.and_then(|p| p.port).and_then(port_number) else { continue };
        for ep in &slice.endpoints {
            // Upstream uses the first address only; the others are alternates of the same pod.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let endpoint = Endpoint {
                ip,
                port,
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
            };
            match found.get(&(ip, port)) {
                Some(old) if old.node_name.is_some() || endpoint.node_name.is_none() => {}
                _ => {
                    found.insert((ip, port), endpoint);
                }
            }
        }
    }
    found.into_values().collect()
}

fn ipv4_cluster_ip(cluster_ip: Option<&str>, cluster_ips: Option<&[String]>) -> Option<Ipv4Addr> {
    // "None" (headless) and "" (not allocated yet) both fail to parse and so produce nothing.
    cluster_ips.into_iter().flatten().map(String::as_str).chain(cluster_ip).find_map(|ip| ip.parse::<Ipv4Addr>().ok())
}

fn parse_ipv4s<'a>(ips: impl Iterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = ips.filter_map(|ip| ip.parse().ok()).collect();
    out.dedup();
    out
}

fn policy(s: Option<&str>) -> TrafficPolicy {
    if s == Some("Local") { TrafficPolicy::Local } else { TrafficPolicy::Cluster }
}

fn port_number(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServicePort as ApiServicePort, ServiceSpec,
        ServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint as ApiEndpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A Service builder for tests.
    pub(crate) struct Svc(pub(crate) Service);

    impl Svc {
        pub(crate) fn new(ns: &str, name: &str, cluster_ip: &str) -> Svc {
            Svc(Service {
                metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
                spec: Some(ServiceSpec {
                    cluster_ip: Some(cluster_ip.into()),
                    cluster_ips: Some(vec![cluster_ip.into()]),
                    type_: Some("ClusterIP".into()),
                    ..Default::default()
                }),
                status: None,
            })
        }
        fn spec(&mut self) -> &mut ServiceSpec {
            self.0.spec.get_or_insert_with(Default::default)
        }
        pub(crate) fn port(mut self, name: &str, protocol: &str, port: i32, node_port: Option<i32>) -> Svc {
            let p = ApiServicePort {
                name: (!name.is_empty()).then(|| name.into()),
                protocol: Some(protocol.into()),
                port,
                node_port,
                ..Default::default()
            };
            self.spec().ports.get_or_insert_with(Vec::new).push(p);
            self
        }
        pub(crate) fn type_(mut self, t: &str) -> Svc {
            self.spec().type_ = Some(t.into());
            self
        }
        pub(crate) fn affinity(mut self, timeout: Option<i32>) -> Svc {
            let spec = self.spec();
            spec.session_affinity = Some("ClientIP".into());
            spec.session_affinity_config =
                timeout.map(|t| SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(t) }) });
            self
        }
        pub(crate) fn itp_local(mut self) -> Svc {
            self.spec().internal_traffic_policy = Some("Local".into());
            self
        }
        pub(crate) fn etp_local(mut self, health_check_node_port: Option<i32>) -> Svc {
            self.spec().external_traffic_policy = Some("Local".into());
            self.spec().health_check_node_port = health_check_node_port;
            self
        }
        pub(crate) fn external_ips(mut self, ips: &[&str]) -> Svc {
            self.spec().external_ips = Some(ips.iter().map(|s| s.to_string()).collect());
            self
        }
        pub(crate) fn source_ranges(mut self, ranges: &[&str]) -> Svc {
            self.spec().load_balancer_source_ranges = Some(ranges.iter().map(|s| s.to_string()).collect());
            self
        }
        pub(crate) fn ingress(mut self, ips: &[(&str, Option<&str>)]) -> Svc {
            let ingress = ips
                .iter()
                .map(|(ip, mode)| LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: mode.map(String::from),
                    ..Default::default()
                })
                .collect();
            self.0.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }),
                ..Default::default()
            });
            self
        }
    }

    /// An EndpointSlice builder for tests.
    pub(crate) struct Slice(pub(crate) EndpointSlice);

    impl Slice {
        pub(crate) fn new(ns: &str, name: &str, service: &str) -> Slice {
            Slice(EndpointSlice {
                metadata: ObjectMeta {
                    namespace: Some(ns.into()),
                    name: Some(name.into()),
                    labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: Vec::new(),
                ports: None,
            })
        }
        pub(crate) fn port(mut self, name: &str, protocol: &str, port: i32) -> Slice {
            self.0.ports.get_or_insert_with(Vec::new).push(EndpointPort {
                name: Some(name.into()),
                protocol: Some(protocol.into()),
                port: Some(port),
                ..Default::default()
            });
            self
        }
        /// An endpoint with explicit (ready, serving, terminating) conditions.
        pub(crate) fn ep_with(mut self, ip: &str, node: &str, conditions: (bool, bool, bool)) -> Slice {
            let (ready, serving, terminating) = conditions;
            self.0.endpoints.push(ApiEndpoint {
                addresses: vec![ip.into()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                node_name: Some(node.into()),
                zone: Some("zone-a".into()),
                ..Default::default()
            });
            self
        }
        pub(crate) fn ep(self, ip: &str, node: &str) -> Slice {
            self.ep_with(ip, node, (true, true, false))
        }
    }

    #[test]
    fn builds_one_service_port_per_port_with_matching_endpoints() {
        let svc = Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).port("dns", "UDP", 53, None);
        let slice = Slice::new("ns1", "web-abc", "web")
            .port("http", "TCP", 8080)
            .port("dns", "UDP", 5353)
            .ep("10.244.0.3", "node-a")
            .ep("10.244.0.2", "node-b");
        let ports = build(&[svc.0], &[slice.0]);
        assert_eq!(ports.len(), 2);
        // Sorted by port name: "dns" before "http".
        assert_eq!(ports[0].port_name, "dns");
        assert_eq!(ports[0].protocol, Protocol::Udp);
        assert_eq!(
            ports[0].endpoints.iter().map(Endpoint::addr).collect::<Vec<_>>(),
            ["10.244.0.2:5353", "10.244.0.3:5353"]
        );
        assert_eq!(ports[1].port_name_string(), "ns1/web:http");
        assert_eq!(ports[1].cluster_ip, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(ports[1].endpoints[0].addr(), "10.244.0.2:8080");
        assert_eq!(ports[1].endpoints[0].node_name.as_deref(), Some("node-b"));
        assert_eq!(ports[1].endpoints[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(ports[1].session_affinity_timeout, None);
    }

    #[test]
    fn headless_and_external_name_services_produce_nothing() {
        let headless = Svc::new("ns1", "h", "None").port("", "TCP", 80, None);
        let mut external = Svc::new("ns1", "e", "").port("", "TCP", 80, None).type_("ExternalName");
        external.spec().external_name = Some("example.com".into());
        let no_ip = Svc::new("ns1", "pending", "").port("", "TCP", 80, None);
        let slice = Slice::new("ns1", "h-1", "h").port("", "TCP", 80).ep("10.244.0.2", "n");
        assert!(build(&[headless.0, external.0, no_ip.0], &[slice.0]).is_empty());
    }

    #[test]
    fn endpoints_come_from_every_slice_of_the_service_deduplicated() {
        let svc = Svc::new("ns1", "web", "10.96.0.10").port("", "TCP", 80, None);
        let a = Slice::new("ns1", "web-a", "web").port("", "TCP", 80).ep("10.244.0.2", "n1").ep("10.244.0.3", "n1");
        // Same ip:port again in a second slice, plus one new endpoint.
        let b = Slice::new("ns1", "web-b", "web").port("", "TCP", 80).ep("10.244.0.3", "n1").ep("10.244.0.4", "n2");
        // Another Service's slice and another namespace's slice must not leak in.
        let other = Slice::new("ns1", "db-a", "db").port("", "TCP", 80).ep("10.244.0.9", "n1");
        let other_ns = Slice::new("ns2", "web-a", "web").port("", "TCP", 80).ep("10.244.0.8", "n1");
        let ports = build(&[svc.0], &[b.0, a.0, other.0, other_ns.0]);
        let addrs: Vec<String> = ports[0].endpoints.iter().map(Endpoint::addr).collect();
        assert_eq!(addrs, ["10.244.0.2:80", "10.244.0.3:80", "10.244.0.4:80"]);
    }

    #[test]
    fn slice_port_is_matched_by_name_and_protocol() {
        let svc = Svc::new("ns1", "web", "10.96.0.10").port("p", "TCP", 80, None);
        let wrong_proto = Slice::new("ns1", "web-a", "web").port("p", "UDP", 80).ep("10.244.0.2", "n1");
        let wrong_name = Slice::new("ns1", "web-b", "web").port("q", "TCP", 80).ep("10.244.0.3", "n1");
        let ports = build(&[svc.0], &[wrong_proto.0, wrong_name.0]);
        assert!(ports[0].endpoints.is_empty());
    }

    #[test]
    fn conditions_default_as_the_api_says() {
        let svc = Svc::new("ns1", "web", "10.96.0.10").port("", "TCP", 80, None);
        let mut slice = Slice::new("ns1", "web-a", "web").port("", "TCP", 80).ep("10.244.0.2", "n1");
        slice.0.endpoints[0].conditions = None;
        slice = slice.ep_with("10.244.0.3", "n1", (false, true, true));
        let mut not_ready = slice.0.endpoints[1].clone();
        not_ready.addresses = vec!["10.244.0.4".into()];
        not_ready.conditions = Some(EndpointConditions { ready: Some(false), serving: None, terminating: None });
        slice.0.endpoints.push(not_ready);
        let eps = &build(&[svc.0], &[slice.0])[0].endpoints;
        assert_eq!((eps[0].ready, eps[0].serving, eps[0].terminating), (true, true, false));
        assert_eq!((eps[1].ready, eps[1].serving, eps[1].terminating), (false, true, true));
        assert_eq!((eps[2].ready, eps[2].serving, eps[2].terminating), (false, false, false));
    }

    #[test]
    fn ipv6_and_garbage_are_skipped_without_failing_the_rest() {
        let svc =
            Svc::new("ns1", "web", "10.96.0.10").port("", "TCP", 80, None).external_ips(&["fd00::1", "1.2.3.4", "x"]);
        let mut v6 = Slice::new("ns1", "web-6", "web").port("", "TCP", 80).ep("fd00::5", "n1");
        v6.0.address_type = "IPv6".into();
        let bad = Slice::new("ns1", "web-a", "web").port("", "TCP", 80).ep("not-an-ip", "n1").ep("10.244.0.2", "n1");
        let ports = build(&[svc.0], &[v6.0, bad.0]);
        assert_eq!(ports[0].external_ips, [Ipv4Addr::new(1, 2, 3, 4)]);
        assert_eq!(ports[0].endpoints.len(), 1);
    }

    #[test]
    fn dual_stack_service_uses_its_ipv4_cluster_ip() {
        let mut svc = Svc::new("ns1", "web", "fd00::10").port("", "TCP", 80, None);
        svc.spec().cluster_ips = Some(vec!["fd00::10".into(), "10.96.0.20".into()]);
        assert_eq!(build(&[svc.0], &[])[0].cluster_ip, Ipv4Addr::new(10, 96, 0, 20));
    }

    #[test]
    fn session_affinity_defaults_to_three_hours() {
        let a = Svc::new("ns1", "a", "10.96.0.10").port("", "TCP", 80, None).affinity(None);
        let b = Svc::new("ns1", "b", "10.96.0.11").port("", "TCP", 80, None).affinity(Some(60));
        let ports = build(&[a.0, b.0], &[]);
        assert_eq!(ports[0].session_affinity_timeout, Some(10800));
        assert_eq!(ports[1].session_affinity_timeout, Some(60));
    }

    #[test]
    fn load_balancer_fields_follow_the_service_type() {
        let lb = Svc::new("ns1", "lb", "10.96.0.10")
            .type_("LoadBalancer")
            .port("", "TCP", 80, Some(30080))
            .etp_local(Some(32000))
            .itp_local()
            .ingress(&[("192.0.2.10", None), ("192.0.2.11", Some("Proxy")), ("192.0.2.12", Some("VIP"))]);
        // A ClusterIP Service with a stale ingress status and an ETP that does not apply.
        let cip = Svc::new("ns1", "cip", "10.96.0.11")
            .port("", "TCP", 80, None)
            .etp_local(Some(32001))
            .ingress(&[("192.0.2.20", None)]);
        let ports = build(&[lb.0, cip.0], &[]);
        let cip = &ports[0];
        assert!(cip.load_balancer_ips.is_empty());
        assert_eq!(cip.external_traffic_policy, TrafficPolicy::Cluster);
        assert_eq!(cip.health_check_node_port, None);
        let lb = &ports[1];
        assert_eq!(lb.load_balancer_ips, [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 12)]);
        assert_eq!(lb.node_port, Some(30080));
        assert_eq!(lb.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(lb.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(lb.health_check_node_port, Some(32000));
        assert!(lb.externally_accessible());
    }
}
