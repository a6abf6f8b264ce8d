//! Cluster DNS, served by every node's kube-proxy from its watch caches, so names keep resolving
//! while the apiserver is briefly unreachable (the caches keep their last state).
//!
//! It answers as CoreDNS's kubernetes plugin does (`pods insecure`, TTL 5 s) for the zone
//! (`cluster.local`): A/AAAA for `<svc>.<ns>.svc.<zone>` (the cluster IPs, or a headless Service's
//! ready endpoints), `<endpoint>.<svc>.<ns>.svc.<zone>` (an endpoint's hostname, else its address with
//! dashes), `<a-b-c-d>.<ns>.pod.<zone>`, SRV for `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (and the
//! plain Service name, for all ports) with the targets' addresses as additional records, an
//! ExternalName's CNAME (its target resolved upstream), PTR for cluster IPs and ready endpoint
//! addresses, SOA and NS at the apex, NXDOMAIN/NODATA with the SOA. Other names go to the node's
//! resolvers (never names in the zone, nor reverse names in the Service and pod CIDRs).
//!
//! - [`zone`]: the zone's name and reverse networks.
//! - [`records`]: [`Records::build`] from Services and EndpointSlices; [`SharedRecords`] to swap them.
//! - [`answer`]: the pure answer to one query.
//! - [`wire`]: decoding (FORMERR) and encoding within a size limit (TC).
//! - [`upstream`]: forwarding, and resolv.conf.
//! - [`server`]: UDP and TCP.
//!
//! Wiring: build `SharedRecords::new(Records::empty(zone))`, spawn
//! [`serve`]`(bind, shared.clone(), read_resolv_conf("/etc/resolv.conf"), stop)`, and after every
//! change in the Service or EndpointSlice caches (at most every few hundred milliseconds is plenty)
//! call `shared.replace(Records::build(&services, &slices, zone.clone()))` with the caches' contents.

pub mod answer;
pub mod records;
pub mod server;
pub mod upstream;
pub mod wire;
pub mod zone;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use answer::{Response, TTL, answer};
pub use records::{Records, SharedRecords};
pub use server::{DnsServer, resolve, serve};
pub use upstream::{Upstream, parse_resolv_conf, read_resolv_conf};
pub use zone::{ReverseNet, Zone};

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {0:?}")]
    InvalidZone(String),
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    #[error("binding DNS on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
