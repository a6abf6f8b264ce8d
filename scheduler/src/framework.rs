//! What the plugins see: each pod with its requests summed once as upstream sums them
//! ([`PodInfo`]), and each node with what its pods (bound, assumed or nominated) already use
//! ([`NodeInfo`]), both kept up to date incrementally by the cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};

use quantity::parse_milli;

/// Resources in thousandths (cpu in millicores, memory in milli-bytes, and so on). The four
/// every pod and node has are fields, so the filters read them without looking a name up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// cpu, memory, ephemeral-storage, pods (in [`KNOWN`]'s order).
    pub known: [i128; 4],
    /// Extended resources and anything else, by name.
    pub other: BTreeMap<String, i128>,
}

/// The resources kept as fields, in their order in [`Resources::known`].
pub const KNOWN: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pods"];

fn slot(name: &str) -> Option<usize> {
    KNOWN.iter().position(|k| *k == name)
}

impl Resources {
    pub fn get(&self, name: &str) -> i128 {
        match slot(name) {
            Some(i) => self.known[i],
            None => self.other.get(name).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: &str, v: i128) {
        match slot(name) {
            Some(i) => self.known[i] = v,
            None => {
                self.other.insert(name.to_string(), v);
            }
        }
    }

    /// Every resource named here (the known ones when non-zero), with its amount.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        KNOWN
            .iter()
            .zip(self.known)
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| (*k, v))
            .chain(self.other.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    fn merge(&mut self, other: &Resources, f: impl Fn(i128, i128) -> i128) {
        for (a, b) in self.known.iter_mut().zip(other.known) {
            *a = f(*a, b);
        }
        for (k, v) in &other.other {
            let e = self.other.entry(k.clone()).or_default();
            *e = f(*e, *v);
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.merge(other, |a, b| a + b)
    }

    pub fn sub(&mut self, other: &Resources) {
        self.merge(other, |a, b| a - b)
    }

    pub fn max_with(&mut self, other: &Resources) {
        self.merge(other, i128::max)
    }

    fn of(map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (k, q) in map.into_iter().flatten() {
            if let Some(v) = parse_milli(&q.0) {
                r.set(k, v);
            }
        }
        r
    }
}

fn container_requests(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    // Requests default to limits (the apiserver does this too; be safe for raw objects).
    let mut req = Resources::of(r.and_then(|r| r.limits.as_ref()));
    for (k, v) in Resources::of(r.and_then(|r| r.requests.as_ref())).iter() {
        req.set(k, v);
    }
    req
}

/// What scoring counts for a container that asks for nothing: 100m cpu, 200Mi memory.
pub const DEFAULT_CPU: i128 = 100;
pub const DEFAULT_MEMORY: i128 = 200 * (1 << 20) * 1000;

fn non_zero(r: &Resources) -> Resources {
    let cpu = if r.get("cpu") > 0 { r.get("cpu") } else { DEFAULT_CPU };
    let memory = if r.get("memory") > 0 { r.get("memory") } else { DEFAULT_MEMORY };
    Resources { known: [cpu, memory, 0, 0], other: BTreeMap::new() }
}

/// What a pod asks of a node, as upstream computes it: the sum of app containers and
/// sidecars, or the largest init container with the sidecars started before it, whichever is
/// larger per resource; plus the pod overhead. With `non_zero`, containers that ask for no cpu
/// or memory count the scoring defaults instead.
fn requests(pod: &Pod, with_defaults: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources::default() };
    let of = |c: &Container| if with_defaults { non_zero(&container_requests(c)) } else { container_requests(c) };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&of(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
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
        total.add(&Resources::of(Some(o)));
    }
    total
}

/// A pod and what the plugins ask of it, computed once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Pod,
    pub uid: String,
    pub requests: Resources,
    /// cpu and memory with the scoring defaults for containers that ask for nothing.
    pub non_zero: Resources,
    pub host_ports: Vec<(String, String, i32)>,
    pub priority: i32,
    /// Its required anti-affinity terms, resolved against it once.
    pub anti_terms: Vec<crate::interpod::Term>,
    /// Has any pod affinity or anti-affinity (required or preferred).
    pub has_affinity: bool,
}

impl PodInfo {
    pub fn new(pod: Pod) -> PodInfo {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let anti_terms = affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .map(|t| crate::interpod::Term::new(t, &pod, 1))
            .collect();
        let has_affinity = affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        PodInfo {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            requests: requests(&pod, false),
            non_zero: requests(&pod, true),
            host_ports: host_ports(&pod),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            anti_terms,
            has_affinity,
            pod,
        }
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

/// A node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// (protocol, hostIP, hostPort) in use, with how many pods use each.
    pub host_ports: HashMap<(String, String, i32), u32>,
    /// Image name (every name the node reports for it, normalized) -> size in bytes.
    pub images: HashMap<String, i64>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        let mut n = NodeInfo {
            node: Arc::new(Node::default()),
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            host_ports: HashMap::new(),
            images: HashMap::new(),
        };
        n.set_node(node);
        n
    }

    /// A new version of the node object; what is placed on it stays.
    pub fn set_node(&mut self, node: Node) {
        let status = node.status.as_ref();
        self.allocatable = Resources::of(status.and_then(|s| s.allocatable.as_ref()));
        self.images = status
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| {
                let size = i.size_bytes.unwrap_or(0);
                i.names.iter().flatten().map(move |n| (crate::plugins::normalized_image(n), size))
            })
            .collect();
        self.node = Arc::new(node);
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub fn add(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        for hp in &p.host_ports {
            *self.host_ports.entry(hp.clone()).or_default() += 1;
        }
        self.pods.push(p);
    }

    /// Takes the pod with this uid off the node; false if it was not here.
    pub fn remove(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        for hp in &p.host_ports {
            if let Some(c) = self.host_ports.get_mut(hp) {
                *c -= 1;
                if *c == 0 {
                    self.host_ports.remove(hp);
                }
            }
        }
        true
    }

    /// For tables: places a pod given as an object.
    #[cfg(test)]
    pub fn add_pod(&mut self, pod: &Pod) {
        self.add(Arc::new(PodInfo::new(pod.clone())));
    }
}

/// The host ports a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always")))
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                hp,
            ))
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
        let r = PodInfo::new(pod.clone()).requests;
        // The init container (2 cpu, before the sidecar starts) beats 0.5+0.25+0.1 cpu.
        assert_eq!(r.get("cpu"), 2000 + 10);
        assert_eq!(r.get("memory"), (1i128 << 30) * 1000);
        // Scoring counts 100m and 200Mi for a container that asks for nothing.
        let empty: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "1"}}}]}}))
        .expect("pod");
        let info = PodInfo::new(empty);
        assert_eq!((info.non_zero.get("cpu"), info.non_zero.get("memory")), (1100, 2 * DEFAULT_MEMORY));
        assert_eq!(info.requests.get("memory"), 0);
    }

    #[test]
    fn removing_a_pod_gives_back_what_it_used() {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).expect("node");
        let mut n = NodeInfo::new(node);
        let pod = |uid: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"uid": uid}, "spec": {"containers": [
                {"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}],
                 "resources": {"requests": {"cpu": "1"}}}]}}))
            .expect("pod")
        };
        n.add_pod(&pod("a"));
        n.add_pod(&pod("b"));
        assert_eq!(n.requested.get("cpu"), 2000);
        assert!(n.remove("a"));
        assert!(!n.remove("a"));
        assert_eq!(n.requested.get("cpu"), 1000);
        assert_eq!(n.host_ports.len(), 1);
        assert!(n.remove("b"));
        assert!(n.host_ports.is_empty());
        assert_eq!(n.non_zero_requested.get("memory"), 0);
    }
}
