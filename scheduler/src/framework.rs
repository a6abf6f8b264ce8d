//! What the plugins see: a pod's resource requests summed as upstream sums them, and each node
//! with what its pods (bound or assumed) already use.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Node, Pod};

use quantity::parse_milli;

/// Resources in thousandths (cpu in millicores, memory in milli-bytes, and so on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i128>);

impl Resources {
    pub fn get(&self, name: &str) -> i128 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    pub fn max_with(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    fn of(map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
        Resources(
            map.clone().unwrap_or_default().iter().filter_map(|(k, q)| Some((k.clone(), parse_milli(&q.0)?))).collect(),
        )
    }
}

fn container_requests(c: &Container) -> Resources {
    let r = c.resources.clone().unwrap_or_default();
    // Requests default to limits (the apiserver does this too; be safe for raw objects).
    let mut req = Resources::of(&r.limits);
    for (k, v) in Resources::of(&r.requests).0 {
        req.0.insert(k, v);
    }
    req
}

/// What a pod asks of a node, as upstream computes it: the sum of app containers and
/// sidecars, or the largest init container with the sidecars started before it, whichever is
/// larger per resource; plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.clone().unwrap_or_default() {
        let r = container_requests(&c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            total.add(&r);
        } else {
            let mut at = sidecars.clone();
            at.add(&r);
            init_peak.max_with(&at);
        }
    }
    total.max_with(&init_peak);
    if let Some(o) = &spec.overhead {
        total.add(&Resources::of(&Some(o.clone())));
    }
    total
}

/// A node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Node,
    pub requested: Resources,
    pub pods: Vec<Pod>,
    /// (protocol, hostIP, hostPort) in use.
    pub host_ports: HashSet<(String, String, i32)>,
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        NodeInfo { node, requested: Resources::default(), pods: Vec::new(), host_ports: HashSet::new() }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub fn allocatable(&self) -> Resources {
        Resources::of(&self.node.status.as_ref().and_then(|s| s.allocatable.clone()))
    }

    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(&pod_requests(pod));
        for (proto, ip, port) in host_ports(pod) {
            self.host_ports.insert((proto, ip, port));
        }
        self.pods.push(pod.clone());
    }
}

/// The host ports a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            Some((p.protocol.unwrap_or_else(|| "TCP".into()), p.host_ip.unwrap_or_else(|| "0.0.0.0".into()), hp))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sum_containers_and_take_the_init_peak() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [
                {"name": "big-init", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}
            ],
            "overhead": {"cpu": "10m"}
        }}))
        .expect("pod");
        let r = pod_requests(&pod);
        // The init container (2 cpu, before the sidecar starts) beats 0.5+0.25+0.1 cpu.
        assert_eq!(r.get("cpu"), 2000 + 10);
        assert_eq!(r.get("memory"), (1i128 << 30) * 1000);
    }
}
