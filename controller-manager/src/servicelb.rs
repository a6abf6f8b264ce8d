//! A built-in load-balancer controller (`service-lb-controller`, the name upstream gives the
//! cloud provider's), like k3s's ServiceLB: every `type: LoadBalancer` Service without a
//! `loadBalancerClass` gets `status.loadBalancer.ingress`, and kube-proxy on every node answers
//! on those addresses (its rules match the ingress IPs and forward to the Service's endpoints).
//!
//! - With `--load-balancer-ip-pool <CIDR>` each Service gets an address of its own from the
//!   pool (`spec.loadBalancerIP` when it names a free pool address), kept as long as it stays
//!   a LoadBalancer; the pool's network must reach the nodes (on one machine: routed locally).
//! - Without a pool the addresses are the Ready nodes' InternalIPs, as ServiceLB does.
//!
//! A Service that stops being a LoadBalancer loses its ingress; an exhausted pool leaves it
//! pending with a `SyncLoadBalancerFailed` event.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::workqueue::WorkQueue;

/// Addresses of a CIDR that can be handed out (network and broadcast left out when there are
/// more than two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    first: u32,
    last: u32,
}

impl Pool {
    pub fn parse(cidr: &str) -> Result<Pool, String> {
        let (ip, bits) = cidr.split_once('/').ok_or_else(|| format!("--load-balancer-ip-pool {cidr:?}: not a CIDR"))?;
        let ip: Ipv4Addr =
            ip.parse().map_err(|_| format!("--load-balancer-ip-pool {cidr:?}: only IPv4 is supported"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("--load-balancer-ip-pool {cidr:?}: bad prefix"))?;
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        let base = u32::from(ip) & mask;
        let top = base | !mask;
        let (first, last) = if top - base >= 3 { (base + 1, top - 1) } else { (base, top) };
        Ok(Pool { first, last })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// `wanted` when it is a free pool address, else the lowest free one.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(w) = wanted.filter(|w| self.contains(*w) && !used.contains(w)) {
            return Some(w);
        }
        (self.first..=self.last).map(Ipv4Addr::from).find(|ip| !used.contains(ip))
    }
}

fn is_balanced(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Ready nodes' InternalIPs, sorted.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| node_ready(n) && n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| {
            n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The ingress addresses `svc` should have; `Err` when the pool has none left.
pub fn desired(
    svc: &Service,
    pool: Option<&Pool>,
    others: &[Arc<Service>],
    nodes: &[Arc<Node>],
) -> Result<Vec<String>, String> {
    if !is_balanced(svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Vec::new());
    }
    let Some(pool) = pool else { return Ok(node_addresses(nodes)) };
    let current: Vec<Ipv4Addr> = ingress_ips(svc).iter().filter_map(|i| i.parse().ok()).collect();
    let uid = svc.metadata.uid.as_deref();
    let used: BTreeSet<Ipv4Addr> = others
        .iter()
        .filter(|o| o.metadata.uid.as_deref() != uid && is_balanced(o))
        .flat_map(|o| ingress_ips(o))
        .filter_map(|i| i.parse().ok())
        .collect();
    let wanted: Option<Ipv4Addr> =
        svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).and_then(|i| i.parse().ok());
    // Keep what it has (unless it asks for another address now).
    if let Some(ip) = current.iter().find(|ip| pool.contains(**ip) && !used.contains(ip))
        && wanted.is_none_or(|w| w == *ip)
    {
        return Ok(vec![ip.to_string()]);
    }
    pool.allocate(&used, wanted)
        .map(|ip| vec![ip.to_string()])
        .ok_or_else(|| "the load-balancer IP pool is exhausted".into())
}

pub struct ServiceLbController {
    client: kube::Client,
    services: Informer<Service>,
    nodes: Informer<Node>,
    pool: Option<Pool>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
}

impl ServiceLbController {
    pub fn new(
        client: kube::Client,
        services: &Informer<Service>,
        nodes: &Informer<Node>,
        pool: Option<Pool>,
        events: Recorder,
    ) -> Arc<ServiceLbController> {
        let c = Arc::new(ServiceLbController {
            client,
            services: services.clone(),
            nodes: nodes.clone(),
            pool,
            queue: Arc::new(WorkQueue::default()),
            events,
        });
        let w: Weak<ServiceLbController> = Arc::downgrade(&c);
        services.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            if let Some(s) = new.or(old) {
                c.queue.add(key_of(s.as_ref()));
            }
            // A Service leaving frees its pool address for one waiting.
            if c.pool.is_some() && new.is_none_or(|n| !is_balanced(n)) && old.is_some_and(|o| is_balanced(o)) {
                for s in c.services.list_all() {
                    if is_balanced(&s) && ingress_ips(&s).is_empty() {
                        c.queue.add(key_of(s.as_ref()));
                    }
                }
            }
        });
        let w = Arc::downgrade(&c);
        nodes.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            if c.pool.is_some() {
                return;
            }
            let addr = |n: Option<&Arc<Node>>| n.map(|n| node_addresses(std::slice::from_ref(n)));
            if addr(old) == addr(new) {
                return;
            }
            for s in c.services.list_all() {
                if is_balanced(&s) {
                    c.queue.add(key_of(s.as_ref()));
                }
            }
        });
        c
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        tokio::join!(self.services.synced(), self.nodes.synced());
        let (ns, name) = split_key(key);
        let Some(svc) = self.services.get(ns, name) else { return Ok(None) };
        let want = match desired(&svc, self.pool.as_ref(), &self.services.list_all(), &self.nodes.list_all()) {
            Ok(w) => w,
            Err(why) => {
                self.events.warning(
                    reference(svc.as_ref()),
                    "SyncLoadBalancerFailed",
                    format!("Error syncing load balancer: {why}"),
                );
                return Ok(None);
            }
        };
        if want == ingress_ips(&svc) {
            return Ok(None);
        }
        let ingress: Vec<serde_json::Value> = want.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"status": {"loadBalancer": if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) }}});
        // A merge patch cannot remove a list's items one by one: replace the whole status field.
        let patch = if ingress.is_empty() { json!({"status": {"loadBalancer": {"ingress": null}}}) } else { patch };
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        }
        if !want.is_empty() {
            self.events.normal(
                reference(svc.as_ref()),
                "EnsuredLoadBalancer",
                format!("Ensured load balancer at {}", want.join(", ")),
            );
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, uid: &str, ty: &str, lb_ip: Option<&str>, ingress: &[&str]) -> Arc<Service> {
        let ingress: Vec<serde_json::Value> = ingress.iter().map(|i| json!({"ip": i})).collect();
        let mut spec = json!({"type": ty, "ports": [{"port": 80}]});
        if let Some(ip) = lb_ip {
            spec["loadBalancerIP"] = json!(ip);
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": uid},
                "spec": spec, "status": {"loadBalancer": {"ingress": ingress}}}))
            .expect("service"),
        )
    }

    fn node(name: &str, ip: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "status": {
                "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .expect("node"),
        )
    }

    #[test]
    fn the_pool_leaves_out_network_and_broadcast_and_hands_out_the_lowest_free_address() {
        let pool = Pool::parse("192.0.2.0/30").expect("pool");
        let used = BTreeSet::from(["192.0.2.1".parse().expect("ip")]);
        assert_eq!(pool.allocate(&used, None), Some("192.0.2.2".parse().expect("ip")));
        assert_eq!(
            pool.allocate(&BTreeSet::from(["192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip")]), None),
            None
        );
        assert!(Pool::parse("nonsense").is_err() && Pool::parse("fd00::/64").is_err());
    }

    #[test]
    fn each_service_gets_its_own_address_keeps_it_and_may_ask_for_one() {
        let pool = Pool::parse("192.0.2.0/29").expect("pool");
        let a = svc("a", "1", "LoadBalancer", None, &["192.0.2.1"]);
        let b = svc("b", "2", "LoadBalancer", None, &[]);
        let all = vec![a.clone(), b.clone()];
        assert_eq!(desired(&a, Some(&pool), &all, &[]), Ok(vec!["192.0.2.1".to_string()]), "a keeps its address");
        assert_eq!(desired(&b, Some(&pool), &all, &[]), Ok(vec!["192.0.2.2".to_string()]));
        let asks = svc("c", "3", "LoadBalancer", Some("192.0.2.5"), &[]);
        assert_eq!(desired(&asks, Some(&pool), &all, &[]), Ok(vec!["192.0.2.5".to_string()]));
        let taken = svc("d", "4", "LoadBalancer", Some("192.0.2.1"), &[]);
        assert_eq!(
            desired(&taken, Some(&pool), &all, &[]),
            Ok(vec!["192.0.2.2".to_string()]),
            "a taken address is not given twice"
        );
    }

    #[test]
    fn without_a_pool_the_ready_nodes_answer_and_other_types_get_nothing() {
        let nodes = vec![node("n2", "10.0.0.2", true), node("n1", "10.0.0.1", true), node("n3", "10.0.0.3", false)];
        let lb = svc("a", "1", "LoadBalancer", None, &[]);
        assert_eq!(desired(&lb, None, &[], &nodes), Ok(vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()]));
        let plain = svc("b", "2", "ClusterIP", None, &["10.0.0.1"]);
        assert_eq!(
            desired(&plain, None, &[], &nodes),
            Ok(vec![]),
            "a Service that stopped being a LoadBalancer loses its ingress"
        );
    }

    #[test]
    fn an_exhausted_pool_is_an_error() {
        let pool = Pool::parse("192.0.2.7/32").expect("pool");
        let a = svc("a", "1", "LoadBalancer", None, &["192.0.2.7"]);
        let b = svc("b", "2", "LoadBalancer", None, &[]);
        assert!(desired(&b, Some(&pool), &[a, b.clone()], &[]).is_err());
    }
}
