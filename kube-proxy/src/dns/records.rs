//! What the cluster DNS knows: Services and their ready endpoints, reduced to lower-case names and
//! addresses. Built whole from the watch caches on every change and swapped in ([`SharedRecords`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::zone::Zone;

/// The label an EndpointSlice carries naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every name the zone answers, built from the Services and EndpointSlices of the watch caches.
#[derive(Debug, Clone)]
pub struct Records {
    pub(super) zone: Zone,
    /// The SOA serial: when these records were built (seconds since the epoch), as CoreDNS uses the
    /// time of the last change.
    pub(super) serial: u32,
    /// By (namespace, name), lower case.
    pub(super) services: HashMap<(String, String), ServiceEntry>,
    /// Namespaces that hold at least one Service: `<ns>.svc.<zone>` is NODATA there, NXDOMAIN elsewhere.
    pub(super) namespaces: HashSet<String>,
    /// Reverse names: a Service's cluster IP names the Service (the first Service by namespace and
    /// name if several); otherwise every ready endpoint with that address names its endpoint record.
    pub(super) ptr: HashMap<IpAddr, Vec<Name>>,
    /// The cluster IPs of `kube-system/kube-dns`, the address of `ns.dns.<zone>`.
    pub(super) dns_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub(super) struct ServiceEntry {
    pub(super) kind: ServiceKind,
    pub(super) ports: Vec<PortEntry>,
    /// One entry per EndpointSlice of the Service.
    pub(super) slices: Vec<SliceEntry>,
    /// `<svc>.<ns>.svc.<zone>`.
    pub(super) fqdn: Name,
}

#[derive(Debug, Clone)]
pub(super) enum ServiceKind {
    /// The Service's cluster IPs (both families for dual-stack).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: names resolve to the ready endpoints.
    Headless,
    /// `type: ExternalName`; `None` when the external name is an IP address or not a valid name
    /// (CoreDNS serves nothing for those).
    ExternalName(Option<Name>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortEntry {
    /// Lower case; empty for an unnamed port.
    pub(super) name: String,
    /// Lower case: `tcp`, `udp`, `sctp`.
    pub(super) protocol: String,
    pub(super) port: u16,
}

#[derive(Debug, Clone)]
pub(super) struct SliceEntry {
    /// Empty when the slice declares no ports: its endpoints still have A records, but no SRV.
    pub(super) ports: Vec<PortEntry>,
    /// Ready endpoints only (a missing condition counts as ready), one entry per address.
    pub(super) endpoints: Vec<EndpointEntry>,
}

#[derive(Debug, Clone)]
pub(super) struct EndpointEntry {
    pub(super) ip: IpAddr,
    /// The endpoint's label under its Service: its hostname, else its address with dashes.
    pub(super) label: String,
    /// `<label>.<svc>.<ns>.svc.<zone>`.
    pub(super) fqdn: Name,
}

impl Records {
    /// No Services: only the zone's apex exists.
    pub fn empty(zone: Zone) -> Records {
        Records::build(&[], &[], zone)
    }

    /// The records for these Services and EndpointSlices (everything in the watch caches; slices
    /// whose Service is unknown are ignored). Pure, O(objects); call it again after any change.
    pub fn build(services: &[Service], slices: &[EndpointSlice], zone: Zone) -> Records {
        let serial = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs() as u32);
        let mut entries: BTreeMap<(String, String), ServiceEntry> = BTreeMap::new();
        let mut namespaces = HashSet::new();
        let mut dns_ips = Vec::new();
        for service in services {
            let (Some(namespace), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
                continue;
            };
            let key = (namespace.to_ascii_lowercase(), name.to_ascii_lowercase());
            let Ok(fqdn) =
                Name::from_ascii(format!("{}.{}.svc", key.1, key.0)).and_then(|n| n.append_domain(&zone.name))
            else {
                continue;
            };
            let Some(spec) = &service.spec else { continue };
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                let target = spec.external_name.as_deref().filter(|n| n.parse::<IpAddr>().is_err()).and_then(|n| {
                    let mut name = Name::from_ascii(n).ok()?;
                    name.set_fqdn(true);
                    (!name.is_root()).then_some(name)
                });
                ServiceKind::ExternalName(target)
            } else if spec.cluster_ip.as_deref() == Some("None") {
                ServiceKind::Headless
            } else {
                let ips: Vec<IpAddr> = match &spec.cluster_ips {
                    Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                    _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
                };
                ServiceKind::ClusterIp(ips)
            };
            if key == ("kube-system".to_string(), "kube-dns".to_string())
                && let ServiceKind::ClusterIp(ips) = &kind
            {
                dns_ips = ips.clone();
            }
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.as_deref().unwrap_or("").to_ascii_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            namespaces.insert(key.0.clone());
            entries.insert(key, ServiceEntry { kind, ports, slices: Vec::new(), fqdn });
        }

        let mut sorted_slices: Vec<&EndpointSlice> = slices.iter().collect();
        sorted_slices
            .sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
        for slice in sorted_slices {
            let Some(namespace) = &slice.metadata.namespace else { continue };
            let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            let key = (namespace.to_ascii_lowercase(), service.to_ascii_lowercase());
            let Some(entry) = entries.get_mut(&key) else { continue };
            let ports = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.as_deref().unwrap_or("").to_ascii_lowercase(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            let mut endpoints = Vec::new();
            for endpoint in &slice.endpoints {
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else { continue };
                    let label = match endpoint.hostname.as_deref() {
                        Some(hostname) if !hostname.is_empty() => hostname.to_ascii_lowercase(),
                        _ => dashed(ip),
                    };
                    let Ok(fqdn) = Name::from_ascii(&label).and_then(|n| n.append_domain(&entry.fqdn)) else {
                        continue;
                    };
                    endpoints.push(EndpointEntry { ip, label, fqdn });
                }
            }
            entry.slices.push(SliceEntry { ports, endpoints });
        }

        let mut ptr: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut by_cluster_ip: HashMap<IpAddr, Name> = HashMap::new();
        for entry in entries.values() {
            if let ServiceKind::ClusterIp(ips) = &entry.kind {
                for ip in ips {
                    by_cluster_ip.entry(*ip).or_insert_with(|| entry.fqdn.clone());
                }
            }
        }
        for entry in entries.values() {
            for endpoint in entry.slices.iter().flat_map(|s| &s.endpoints) {
                if !by_cluster_ip.contains_key(&endpoint.ip) {
                    let names = ptr.entry(endpoint.ip).or_default();
                    if !names.contains(&endpoint.fqdn) {
                        names.push(endpoint.fqdn.clone());
                    }
                }
            }
        }
        for (ip, name) in by_cluster_ip {
            ptr.insert(ip, vec![name]);
        }

        Records { zone, serial, services: entries.into_iter().collect(), namespaces, ptr, dns_ips }
    }

    /// The zone these records answer for.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The SOA serial (the build time, seconds since the epoch).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many Services the records hold.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

/// An address with its dots (or colons) replaced by dashes: `10-244-1-5`, as CoreDNS names an
/// endpoint without a hostname.
pub(super) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The records the DNS server answers from, swapped whole when the watch caches change. Cheap to
/// clone (one `Arc`); readers never wait for a rebuild, only for the pointer swap.
#[derive(Debug, Clone)]
pub struct SharedRecords(Arc<RwLock<Arc<Records>>>);

impl SharedRecords {
    pub fn new(records: Records) -> SharedRecords {
        SharedRecords(Arc::new(RwLock::new(Arc::new(records))))
    }

    /// Publish a new set of records (from [`Records::build`]); queries in flight finish on the old one.
    pub fn replace(&self, records: Records) {
        let mut guard = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Arc::new(records);
    }

    /// The records queries are answered from now.
    pub fn current(&self) -> Arc<Records> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}
