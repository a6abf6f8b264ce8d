//! The node's cluster DNS as part of the proxy: the server (`dns`) fed from the proxy's own
//! caches on every sync, and its place in the cluster: the `kube-dns` Service in kube-system
//! (selector-less, at `--cluster-dns-ip`, `internalTrafficPolicy: Local`) and one EndpointSlice per
//! node (`kube-dns-<node>`, owned by the Node) naming this node's DNS. Pods' resolv.conf points
//! at the Service IP; the proxy's rules send each node's queries to its own DNS, so a node keeps
//! resolving while the apiserver or other nodes are away.

use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::app::DnsSettings;
use crate::dns::{self, Records, SharedRecords};

pub const SERVICE: &str = "kube-dns";
pub const NAMESPACE: &str = "kube-system";
const MANAGER: &str = "kube-proxy";

pub fn slice_name(node: &str) -> String {
    format!("kube-dns-{node}")
}

/// The kube-dns Service every node's proxy makes sure exists.
pub fn service(ip: Ipv4Addr) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": SERVICE, "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "ClusterDNS"}},
        "spec": {"clusterIP": ip.to_string(), "internalTrafficPolicy": "Local", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}
    }))
    .unwrap_or_default()
}

/// This node's endpoint of the kube-dns Service.
pub fn slice(node: &Node, addr: SocketAddr) -> EndpointSlice {
    let name = node.metadata.name.clone().unwrap_or_default();
    let owner =
        node.metadata.uid.as_ref().map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]));
    let mut v = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name(&name), "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE, "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [addr.ip().to_string()], "nodeName": name,
            "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": addr.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": addr.port(), "protocol": "TCP"}]
    });
    if let Some(o) = owner {
        v["metadata"]["ownerReferences"] = o;
    }
    serde_json::from_value(v).unwrap_or_default()
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()
}

pub struct ClusterDns {
    settings: DnsSettings,
    client: kube::Client,
    records: SharedRecords,
    serving: Option<SocketAddr>,
    /// The last bind failure, so it is logged once rather than on every sync.
    failed: Option<String>,
    stop: CancellationToken,
}

impl ClusterDns {
    pub fn new(settings: DnsSettings, client: kube::Client, stop: CancellationToken) -> ClusterDns {
        let records = SharedRecords::new(Records::empty(settings.zone.clone()));
        ClusterDns { settings, client, records, serving: None, failed: None, stop }
    }

    /// On every proxy sync: the records from the caches, the server once the node's address is
    /// known, and the Service and this node's EndpointSlice as they should be.
    pub async fn sync(&mut self, services: &[Service], slices: &[EndpointSlice], node: Option<&Node>) {
        self.records.replace(Records::build(services, slices, self.settings.zone.clone()));
        if self.serving.is_none() {
            self.start(node).await;
        }
        let (Some(addr), Some(node)) = (self.serving, node) else { return };
        let has_service = services
            .iter()
            .any(|s| s.metadata.namespace.as_deref() == Some(NAMESPACE) && s.metadata.name.as_deref() == Some(SERVICE));
        if !has_service {
            let api: Api<Service> = Api::namespaced(self.client.clone(), NAMESPACE);
            match api.create(&PostParams::default(), &service(self.settings.service_ip)).await {
                Ok(_) => tracing::info!(ip = %self.settings.service_ip, "Created the kube-dns Service"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => tracing::warn!(error = %e, "Could not create the kube-dns Service"),
            }
        }
        let want = slice(node, addr);
        let have = slices
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(NAMESPACE) && s.metadata.name == want.metadata.name);
        let same = have.is_some_and(|h| h.endpoints == want.endpoints && h.ports == want.ports);
        if !same {
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), NAMESPACE);
            let name = want.metadata.name.clone().unwrap_or_default();
            let params = PatchParams::apply(MANAGER).force();
            if let Err(e) = api.patch(&name, &params, &Patch::Apply(&want)).await {
                tracing::warn!(error = %e, "Could not publish this node's DNS endpoint");
            }
        }
    }

    async fn start(&mut self, node: Option<&Node>) {
        let Some(ip) = self.settings.ip.or_else(|| node.and_then(internal_ip)) else { return };
        let addr = SocketAddr::from((ip, self.settings.port));
        let upstream = match &self.settings.upstream {
            Some(u) => u.clone(),
            None => dns::read_resolv_conf(std::path::Path::new("/etc/resolv.conf")).await.unwrap_or_default(),
        };
        match dns::DnsServer::bind(addr).await {
            Ok(server) => {
                let local = server.local_addr();
                tracing::info!(%local, upstream = ?upstream, "Serving cluster DNS");
                let (records, stop) = (self.records.clone(), self.stop.clone());
                let upstream: Vec<SocketAddr> = upstream.into_iter().filter(|u| *u != local).collect();
                tokio::spawn(async move {
                    if let Err(e) = server.run(records, dns::Upstream::new(upstream), stop).await {
                        tracing::error!(error = %e, "Cluster DNS stopped");
                    }
                });
                self.serving = Some(local);
            }
            Err(e) => {
                let why = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
                if self.failed.as_ref() != Some(&why) {
                    tracing::error!(error = %why, "Cluster DNS cannot start; retrying on the next sync");
                    self.failed = Some(why);
                }
            }
        }
    }

    /// The address the DNS answers on, once it does.
    pub fn serving(&self) -> Option<SocketAddr> {
        self.serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_slice_names_the_node_and_its_dns_port_for_both_protocols() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "uid": "u1"}})).expect("node");
        let s = slice(&node, "192.0.2.7:5353".parse().expect("addr"));
        assert_eq!(s.metadata.name.as_deref(), Some("kube-dns-n1"));
        assert_eq!(s.metadata.labels.clone().unwrap_or_default()["kubernetes.io/service-name"], "kube-dns");
        let e = &s.endpoints[0];
        assert_eq!((e.addresses[0].as_str(), e.node_name.as_deref()), ("192.0.2.7", Some("n1")));
        let ports: Vec<(Option<i32>, Option<String>)> =
            s.ports.unwrap_or_default().into_iter().map(|p| (p.port, p.protocol)).collect();
        assert_eq!(ports, [(Some(5353), Some("UDP".into())), (Some(5353), Some("TCP".into()))]);
        assert_eq!(s.metadata.owner_references.expect("owner")[0].uid, "u1");
    }

    #[test]
    fn the_service_is_local_at_the_cluster_dns_ip() {
        let s = service(Ipv4Addr::new(10, 96, 0, 10));
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
        assert!(spec.selector.is_none(), "its endpoints are the nodes' DNS, not pods");
    }
}
