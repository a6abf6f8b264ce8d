//! The zone the cluster DNS is authoritative for: the cluster domain, plus the reverse zones of the
//! Service and pod CIDRs (a PTR query there is never forwarded upstream).

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::Name;

use super::DnsError;

/// The cluster domain and the IPv4 networks whose reverse names are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The cluster domain, lower case and fully qualified (`cluster.local.`).
    pub(super) name: Name,
    /// `ns.dns.<zone>`, the SOA's primary name server.
    pub(super) mname: Name,
    /// `hostmaster.<zone>`, the SOA's mailbox.
    pub(super) rname: Name,
    pub(super) reverse_nets: Vec<ReverseNet>,
}

impl Zone {
    /// A zone for `domain` (`cluster.local`) that also answers the reverse names inside `reverse_nets`
    /// (the Service and pod CIDRs), NXDOMAIN for unknown addresses there.
    pub fn new(domain: &str, reverse_nets: Vec<ReverseNet>) -> Result<Zone, DnsError> {
        let invalid = |_| DnsError::InvalidZone(domain.to_string());
        let mut name = Name::from_ascii(domain).map_err(invalid)?.to_lowercase();
        name.set_fqdn(true);
        if name.is_root() {
            return Err(DnsError::InvalidZone(domain.to_string()));
        }
        let mname = Name::from_ascii("ns.dns").map_err(invalid)?.append_domain(&name).map_err(invalid)?;
        let rname = Name::from_ascii("hostmaster").map_err(invalid)?.append_domain(&name).map_err(invalid)?;
        Ok(Zone { name, mname, rname, reverse_nets })
    }

    /// `cluster.local` with this project's Service CIDR `10.96.0.0/12` and pod CIDR `10.244.0.0/16`.
    pub fn cluster_local() -> Zone {
        let nets = vec![
            ReverseNet { addr: Ipv4Addr::new(10, 96, 0, 0), prefix: 12 },
            ReverseNet { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 },
        ];
        Zone::new("cluster.local", nets).unwrap_or_else(|_| unreachable_zone())
    }

    /// The cluster domain (`cluster.local.`).
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The reverse network containing `ip`, if any.
    pub(super) fn reverse_net_of(&self, ip: IpAddr) -> Option<&ReverseNet> {
        match ip {
            IpAddr::V4(v4) => self.reverse_nets.iter().find(|net| net.contains(v4)),
            IpAddr::V6(_) => None,
        }
    }
}

/// `cluster.local` always parses; this only keeps `cluster_local` free of unwrap.
fn unreachable_zone() -> Zone {
    let name = Name::root();
    Zone { mname: name.clone(), rname: name.clone(), name, reverse_nets: Vec::new() }
}

/// An IPv4 network such as `10.96.0.0/12` whose reverse names the cluster DNS owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseNet {
    addr: Ipv4Addr,
    prefix: u8,
}

impl ReverseNet {
    /// The network with host bits cleared; `None` when `prefix` is over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<ReverseNet> {
        (prefix <= 32).then(|| ReverseNet { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the reverse name made of `octets` (most significant first, fewer than four) lies inside
    /// this network's reverse zone or above it (an empty non-terminal such as `10.in-addr.arpa`).
    pub(super) fn covers_prefix(&self, octets: &[u8]) -> bool {
        let net = self.addr.octets();
        let whole = usize::from(self.prefix / 8);
        octets.iter().enumerate().all(|(i, octet)| {
            if i < whole {
                net[i] == *octet
            } else if i == whole && !self.prefix.is_multiple_of(8) {
                let keep = 8 - self.prefix % 8;
                (octet >> keep) == (net[i] >> keep)
            } else {
                true
            }
        })
    }

    /// The reverse zone at the octet boundary at or above this network: `10.in-addr.arpa.` for
    /// `10.96.0.0/12`, `244.10.in-addr.arpa.` for `10.244.0.0/16`. Owner of the SOA in negative answers.
    pub(super) fn zone_name(&self) -> Name {
        let octets = self.addr.octets();
        let whole = usize::from(self.prefix / 8);
        let mut text = String::new();
        for octet in octets[..whole.min(4)].iter().rev() {
            text.push_str(&format!("{octet}."));
        }
        text.push_str("in-addr.arpa.");
        Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

impl std::str::FromStr for ReverseNet {
    type Err = DnsError;

    /// Accepts `a.b.c.d/n`.
    fn from_str(s: &str) -> Result<ReverseNet, DnsError> {
        let invalid = || DnsError::InvalidCidr(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        ReverseNet::new(ip, prefix).ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_nets() {
        let svc: ReverseNet = "10.96.0.0/12".parse().expect("cidr");
        assert!(svc.contains(Ipv4Addr::new(10, 111, 255, 1)));
        assert!(!svc.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(svc.zone_name().to_ascii(), "10.in-addr.arpa.");
        assert!(svc.covers_prefix(&[10]));
        assert!(svc.covers_prefix(&[10, 100]));
        assert!(!svc.covers_prefix(&[10, 200]));
        assert!(!svc.covers_prefix(&[11]));
        let pods: ReverseNet = "10.244.0.0/16".parse().expect("cidr");
        assert_eq!(pods.zone_name().to_ascii(), "244.10.in-addr.arpa.");
        assert!("10.0.0.0".parse::<ReverseNet>().is_err());
        assert!("10.0.0.0/33".parse::<ReverseNet>().is_err());
    }

    #[test]
    fn zone_names() {
        let zone = Zone::new("Cluster.Local", Vec::new()).expect("zone");
        assert_eq!(zone.name().to_ascii(), "cluster.local.");
        assert_eq!(zone.mname.to_ascii(), "ns.dns.cluster.local.");
        assert_eq!(zone.rname.to_ascii(), "hostmaster.cluster.local.");
        assert!(Zone::new(".", Vec::new()).is_err());
        assert_eq!(Zone::cluster_local().name().to_ascii(), "cluster.local.");
    }
}
