//! UDP conntrack entries that would keep sending packets to the wrong place after a change.
//!
//! UDP has no connection to end, so the kernel keeps using a conntrack entry as long as packets
//! flow. Two cases break a Service (as upstream's proxier handles them):
//! - a UDP Service port gets its first endpoint: earlier packets were rejected and left entries
//!   that do not DNAT, so clients that keep sending would never reach the new endpoint;
//! - an endpoint goes away: entries still DNAT to it, so packets go to a dead address.
//!
//! [`targets`] is pure (previous and next Service ports in, what to delete out);
//! [`Conntrack::clear`] runs `conntrack -D` for each, and if the tool is missing says so once.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::{Protocol, ServicePort};

/// A set of conntrack entries to delete.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// UDP entries whose original destination is `ip:port` (a Service address).
    Destination { ip: Ipv4Addr, port: u16 },
    /// UDP entries to node port `port` on any node address.
    NodePort { port: u16 },
    /// UDP entries to Service address `ip` that were DNATed to endpoint `endpoint`.
    Nat { ip: Ipv4Addr, endpoint: Ipv4Addr },
    /// UDP entries to node port `port` that were DNATed to endpoint `endpoint`.
    NodePortNat { port: u16, endpoint: Ipv4Addr },
}

impl Target {
    /// The `conntrack -D` arguments that delete these entries.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        match self {
            Target::Destination { ip, port } => {
                args.extend(["--orig-dst".into(), ip.to_string(), "--dport".into(), port.to_string()])
            }
            Target::NodePort { port } => args.extend(["--dport".into(), port.to_string()]),
            Target::Nat { ip, endpoint } => {
                args.extend(["--orig-dst".into(), ip.to_string(), "--dst-nat".into(), endpoint.to_string()])
            }
            Target::NodePortNat { port, endpoint } => {
                args.extend(["--dport".into(), port.to_string(), "--dst-nat".into(), endpoint.to_string()])
            }
        }
        args
    }
}

type Key<'a> = (&'a str, &'a str, &'a str, Protocol);

fn key(sp: &ServicePort) -> Key<'_> {
    (&sp.namespace, &sp.name, &sp.port_name, sp.protocol)
}

/// Every address a Service port answers on, besides node ports.
fn service_ips(sp: &ServicePort) -> impl Iterator<Item = Ipv4Addr> + '_ {
    std::iter::once(sp.cluster_ip).chain(sp.external_ips.iter().copied()).chain(sp.load_balancer_ips.iter().copied())
}

fn ready_endpoints(sp: &ServicePort) -> BTreeSet<(Ipv4Addr, u16)> {
    sp.endpoints.iter().filter(|e| e.ready).map(|e| (e.ip, e.port)).collect()
}

/// The conntrack entries to delete after the rules for `next` replaced those for `prev`, sorted
/// and without duplicates. Only UDP Service ports count.
pub fn targets(prev: &[ServicePort], next: &[ServicePort]) -> Vec<Target> {
    let before: HashMap<Key, &ServicePort> =
        prev.iter().filter(|sp| sp.protocol == Protocol::Udp).map(|sp| (key(sp), sp)).collect();
    let after: HashMap<Key, &ServicePort> =
        next.iter().filter(|sp| sp.protocol == Protocol::Udp).map(|sp| (key(sp), sp)).collect();
    let mut out = BTreeSet::new();

    // Gained its first ready endpoint (or is new with endpoints): earlier packets were rejected.
    for (k, sp) in &after {
        let had = before.get(k).is_some_and(|old| !ready_endpoints(old).is_empty());
        if had || ready_endpoints(sp).is_empty() {
            continue;
        }
        for ip in service_ips(sp) {
            out.insert(Target::Destination { ip, port: sp.port });
        }
        if let Some(port) = sp.node_port {
            out.insert(Target::NodePort { port });
        }
    }

    // Endpoints no longer ready (or the Service port gone): entries DNATed to them are dead.
    for (k, old) in &before {
        let now = after.get(k).map(|sp| ready_endpoints(sp)).unwrap_or_default();
        for (ip, port) in ready_endpoints(old) {
            if now.contains(&(ip, port)) {
                continue;
            }
            for svc_ip in service_ips(old) {
                out.insert(Target::Nat { ip: svc_ip, endpoint: ip });
            }
            if let Some(node_port) = old.node_port {
                out.insert(Target::NodePortNat { port: node_port, endpoint: ip });
            }
        }
    }
    out.into_iter().collect()
}

/// Runs `conntrack`; remembers whether it said the tool is missing.
#[derive(Debug, Default)]
pub struct Conntrack {
    warned_missing: AtomicBool,
}

impl Conntrack {
    /// Deletes the entries of each target. Failures are logged, never returned: a stale UDP
    /// entry degrades one flow, it must not stop the rules from being applied.
    pub async fn clear(&self, targets: &[Target]) {
        for t in targets {
            let args = t.args();
            match tokio::process::Command::new("conntrack").args(&args).output().await {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !self.warned_missing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "The conntrack tool is missing; stale UDP conntrack entries are not removed \
                             (install the conntrack package)"
                        );
                    }
                    return;
                }
                Err(e) => tracing::warn!(error = %e, args = ?args, "Could not run conntrack"),
                // Exit status 1 with "0 flow entries have been deleted" is the common case.
                Ok(out)
                    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("0 flow entries") =>
                {
                    tracing::warn!(
                        args = ?args,
                        stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                        "Could not delete conntrack entries"
                    )
                }
                Ok(_) => tracing::debug!(args = ?args, "Deleted conntrack entries"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{Slice, Svc};
    use crate::model::{ServicePort, build};

    fn ports(svc: Svc, slice: Option<Slice>) -> Vec<ServicePort> {
        build(&[svc.0], &slice.map(|s| vec![s.0]).unwrap_or_default())
    }

    fn dns() -> Svc {
        Svc::new("ns1", "dns", "10.96.0.10").port("dns", "UDP", 53, None)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_udp_service_gaining_its_first_endpoint_clears_entries_to_its_addresses() {
        let prev = ports(dns(), None);
        let next = ports(dns(), Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 5353).ep("10.244.0.2", "n")));
        assert_eq!(targets(&prev, &next), [Target::Destination { ip: ip("10.96.0.10"), port: 53 }]);
        assert_eq!(targets(&prev, &next)[0].args(), ["-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--dport", "53"]);
    }

    #[test]
    fn a_new_udp_node_port_service_with_endpoints_also_clears_its_node_port() {
        let svc = Svc::new("ns1", "dns", "10.96.0.10")
            .type_("NodePort")
            .port("dns", "UDP", 53, Some(30053))
            .external_ips(&["192.0.2.7"]);
        let next = ports(svc, Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53).ep("10.244.0.2", "n")));
        assert_eq!(
            targets(&[], &next),
            [
                Target::Destination { ip: ip("10.96.0.10"), port: 53 },
                Target::Destination { ip: ip("192.0.2.7"), port: 53 },
                Target::NodePort { port: 30053 },
            ]
        );
    }

    #[test]
    fn a_removed_endpoint_clears_entries_nated_to_it() {
        let slice = |ips: &[&str]| {
            ips.iter().fold(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53), |s, ip| s.ep(ip, "n"))
        };
        let prev = ports(dns(), Some(slice(&["10.244.0.2", "10.244.0.3"])));
        let next = ports(dns(), Some(slice(&["10.244.0.3"])));
        assert_eq!(targets(&prev, &next), [Target::Nat { ip: ip("10.96.0.10"), endpoint: ip("10.244.0.2") }]);
        assert_eq!(
            targets(&prev, &next)[0].args(),
            ["-D", "-p", "udp", "--orig-dst", "10.96.0.10", "--dst-nat", "10.244.0.2"]
        );
    }

    #[test]
    fn an_endpoint_going_unready_counts_as_removed() {
        let prev = ports(dns(), Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53).ep("10.244.0.2", "n")));
        let next = ports(
            dns(),
            Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53).ep_with(
                "10.244.0.2",
                "n",
                (false, false, true),
            )),
        );
        assert_eq!(targets(&prev, &next), [Target::Nat { ip: ip("10.96.0.10"), endpoint: ip("10.244.0.2") }]);
    }

    #[test]
    fn a_deleted_node_port_service_clears_every_endpoint_on_both_paths() {
        let svc = Svc::new("ns1", "dns", "10.96.0.10").type_("NodePort").port("dns", "UDP", 53, Some(30053));
        let prev = ports(svc, Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53).ep("10.244.0.2", "n")));
        assert_eq!(
            targets(&prev, &[]),
            [
                Target::Nat { ip: ip("10.96.0.10"), endpoint: ip("10.244.0.2") },
                Target::NodePortNat { port: 30053, endpoint: ip("10.244.0.2") },
            ]
        );
    }

    #[test]
    fn tcp_services_and_unchanged_udp_services_need_nothing() {
        let web = Svc::new("ns1", "web", "10.96.0.11").port("http", "TCP", 80, None);
        let prev = ports(web, None);
        let web = Svc::new("ns1", "web", "10.96.0.11").port("http", "TCP", 80, None);
        let next = ports(web, Some(Slice::new("ns1", "web-1", "web").port("http", "TCP", 80).ep("10.244.0.2", "n")));
        assert!(targets(&prev, &next).is_empty());
        assert!(targets(&next, &prev).is_empty());
        let same = ports(dns(), Some(Slice::new("ns1", "dns-1", "dns").port("dns", "UDP", 53).ep("10.244.0.2", "n")));
        assert!(targets(&same, &same).is_empty());
    }
}
