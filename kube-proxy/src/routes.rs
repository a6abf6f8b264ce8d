//! Cross-node pod routes (host-gw): each other Node's `spec.podCIDR` via that Node's InternalIP,
//! so pod-to-pod traffic crosses nodes with pod IPs kept (DESIGN.md decision 6). The FORWARD
//! accept for the cluster CIDR that this traffic also needs is in the rules (KUBE-FORWARD).
//!
//! Ownership: our routes carry `proto 250`; only those are ever replaced or deleted. A pod CIDR
//! that already has a route of another owner (the local pod bridge, an operator's route) is left
//! alone, and so is a Node whose InternalIP is one of this host's addresses (several test nodes
//! on one host share its addresses and have their own bridges).
//!
//! [`desired`] and [`plan`] are pure; [`Routes`] runs `ip route`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use crate::iptables::IptablesError;
use crate::model::Ipv4Cidr;

/// The `ip route` protocol number marking routes this proxy owns.
pub const ROUTE_PROTO: &str = "250";

/// `cidr via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRoute {
    pub cidr: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// The routes this node wants: every other Node with an IPv4 pod CIDR and an IPv4 InternalIP
/// that is not one of `local` (this host's addresses), sorted.
pub fn desired(nodes: &[Node], own: &str, local: &[Ipv4Addr]) -> Vec<PodRoute> {
    let mut out: BTreeSet<PodRoute> = BTreeSet::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own) {
            continue;
        }
        let spec = node.spec.as_ref();
        let cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        let cidr = cidrs
            .iter()
            .map(String::as_str)
            .chain(spec.and_then(|s| s.pod_cidr.as_deref()))
            .find_map(|c| c.parse::<Ipv4Cidr>().ok());
        let via = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok());
        if let (Some(cidr), Some(via)) = (cidr, via)
            && !local.contains(&via)
        {
            out.insert(PodRoute { cidr, via });
        }
    }
    out.into_iter().collect()
}

/// What to change: (replace, delete). `ours` are the routes we hold now; `taken` are the
/// destinations that have a route of another owner, which we never touch.
pub fn plan(ours: &[PodRoute], wanted: &[PodRoute], taken: &[Ipv4Cidr]) -> (Vec<PodRoute>, Vec<PodRoute>) {
    let wanted: Vec<PodRoute> = wanted.iter().filter(|r| !taken.contains(&r.cidr)).copied().collect();
    let replace = wanted.iter().filter(|r| !ours.contains(r)).copied().collect();
    let delete = ours.iter().filter(|r| !wanted.contains(r)).copied().collect();
    (replace, delete)
}

/// The routes of `ip -4 route show` output: (ours, destinations held by others).
pub fn parse_routes(shown: &str) -> (Vec<PodRoute>, Vec<Ipv4Cidr>) {
    let mut ours = Vec::new();
    let mut taken = Vec::new();
    for line in shown.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(cidr) = words.first().and_then(|d| d.parse::<Ipv4Cidr>().ok()) else { continue };
        let mine = words.windows(2).any(|w| w[0] == "proto" && w[1] == ROUTE_PROTO);
        let via = words.windows(2).find(|w| w[0] == "via").and_then(|w| w[1].parse::<Ipv4Addr>().ok());
        match (mine, via) {
            (true, Some(via)) => ours.push(PodRoute { cidr, via }),
            _ => taken.push(cidr),
        }
    }
    (ours, taken)
}

/// Runs `ip`, on the host or inside a network namespace (tests).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    netns: Option<String>,
}

impl Routes {
    pub fn host() -> Routes {
        Routes::default()
    }

    pub fn in_netns(name: &str) -> Routes {
        Routes { netns: Some(name.to_string()) }
    }

    async fn ip(&self, args: &[&str]) -> Result<String, IptablesError> {
        let mut cmd = tokio::process::Command::new("ip");
        if let Some(ns) = &self.netns {
            cmd.args(["netns", "exec", ns, "ip"]);
        }
        let out = cmd
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| IptablesError::Spawn { program: "ip".into(), source })?;
        if !out.status.success() {
            return Err(IptablesError::Failed {
                program: format!("ip {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// This host's IPv4 addresses.
    pub async fn local_addresses(&self) -> Result<Vec<Ipv4Addr>, IptablesError> {
        let shown = self.ip(&["-4", "-o", "addr", "show"]).await?;
        Ok(shown
            .lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "inet")?;
                words.get(at + 1)?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    /// Makes our routes exactly `wanted` (minus destinations of other owners).
    pub async fn sync(&self, wanted: &[PodRoute]) -> Result<(), IptablesError> {
        let (ours, taken) = parse_routes(&self.ip(&["-4", "route", "show"]).await?);
        let (replace, delete) = plan(&ours, wanted, &taken);
        for r in wanted.iter().filter(|r| taken.contains(&r.cidr)) {
            tracing::debug!(cidr = %r.cidr, via = %r.via, "Not routing a pod CIDR that already has a route");
        }
        for r in &delete {
            self.ip(&["route", "del", &r.cidr.to_string(), "via", &r.via.to_string(), "proto", ROUTE_PROTO]).await?;
            tracing::info!(cidr = %r.cidr, via = %r.via, "Removed pod route");
        }
        for r in &replace {
            self.ip(&["route", "replace", &r.cidr.to_string(), "via", &r.via.to_string(), "proto", ROUTE_PROTO])
                .await?;
            tracing::info!(cidr = %r.cidr, via = %r.via, "Added pod route to another node");
        }
        Ok(())
    }

    /// Removes every route we own (`--cleanup`).
    pub async fn cleanup(&self) -> Result<usize, IptablesError> {
        let (ours, _) = parse_routes(&self.ip(&["-4", "route", "show"]).await?);
        for r in &ours {
            self.ip(&["route", "del", &r.cidr.to_string(), "via", &r.via.to_string(), "proto", ROUTE_PROTO]).await?;
        }
        Ok(ours.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, internal_ip: Option<&str>) -> Node {
        let mut addresses = vec![serde_json::json!({"type": "Hostname", "address": name})];
        if let Some(ip) = internal_ip {
            addresses.push(serde_json::json!({"type": "InternalIP", "address": ip}));
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": addresses},
        }))
        .expect("node")
    }

    fn route(cidr: &str, via: &str) -> PodRoute {
        PodRoute { cidr: cidr.parse().expect("cidr"), via: via.parse().expect("ip") }
    }

    #[test]
    fn every_other_node_with_a_pod_cidr_and_an_internal_ip_gets_a_route() {
        let nodes = [
            node("me", Some("10.244.1.0/24"), Some("172.30.0.11")),
            node("b", Some("10.244.2.0/24"), Some("172.30.0.12")),
            node("no-cidr", None, Some("172.30.0.13")),
            node("no-ip", Some("10.244.4.0/24"), None),
            // Another kubelet on this very host (the tests run several): its pods are local.
            node("same-host", Some("10.244.5.0/24"), Some("172.30.0.11")),
        ];
        let local = ["172.30.0.11".parse().expect("ip")];
        assert_eq!(desired(&nodes, "me", &local), [route("10.244.2.0/24", "172.30.0.12")]);
    }

    #[test]
    fn only_our_routes_change_and_taken_destinations_are_left_alone() {
        let ours = [route("10.244.2.0/24", "172.30.0.12"), route("10.244.3.0/24", "172.30.0.13")];
        let wanted = [
            route("10.244.2.0/24", "172.30.0.12"),
            route("10.244.3.0/24", "172.30.0.23"),
            route("10.244.9.0/24", "172.30.0.19"),
        ];
        let taken = ["10.244.9.0/24".parse().expect("cidr")];
        let (replace, delete) = plan(&ours, &wanted, &taken);
        assert_eq!(replace, [route("10.244.3.0/24", "172.30.0.23")]);
        assert_eq!(delete, [route("10.244.3.0/24", "172.30.0.13")]);
    }

    #[test]
    fn route_listings_split_into_ours_and_others() {
        let shown = "default via 192.0.2.1 dev eth0\n\
                     10.244.0.0/16 dev kube-sink scope link\n\
                     10.244.2.0/24 via 172.30.0.12 dev eth0 proto 250\n\
                     10.244.7.0/24 dev kpods-x proto kernel scope link src 10.244.7.1\n";
        let (ours, taken) = parse_routes(shown);
        assert_eq!(ours, [route("10.244.2.0/24", "172.30.0.12")]);
        let taken: Vec<String> = taken.iter().map(ToString::to_string).collect();
        assert_eq!(taken, ["10.244.0.0/16", "10.244.7.0/24"]);
    }
}
