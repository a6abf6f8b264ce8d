//! The scheduler's view of the cluster, kept up to date from watch events one change at a time:
//! every node with the pods placed on it (bound, or assumed while the binding is in flight),
//! so a scheduling cycle never rebuilds it. Pure: no I/O.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::{NodeInfo, PodInfo};

#[derive(Clone, Default)]
pub struct Cache {
    /// Every node, and nodes that are gone but still have pods on them ("ghosts", not in `order`).
    nodes: HashMap<String, NodeInfo>,
    /// The nodes that exist, in the order they arrived; scheduling cycles start at a rotating index.
    order: Vec<String>,
    known: HashSet<String>,
    /// uid -> node and pod of every pod placed (bound or assumed) and not finished.
    placed: HashMap<String, (String, Arc<PodInfo>)>,
    /// Label key -> value -> how many existing nodes have it (topology domains).
    domains: HashMap<String, HashMap<String, usize>>,
    /// uid -> node, bound by us but not yet seen bound.
    assumed: HashMap<String, String>,
    /// Placed pods with required anti-affinity, and with any pod (anti-)affinity.
    anti: HashSet<String>,
    affinity: HashSet<String>,
    /// Image name -> how many nodes have it.
    image_nodes: HashMap<String, usize>,
}

fn finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn bound_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

impl Cache {
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// Existing nodes in arrival order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.order.iter().filter_map(|n| self.nodes.get(n))
    }

    pub fn node_at(&self, i: usize) -> Option<&NodeInfo> {
        self.order.get(i).and_then(|n| self.nodes.get(n))
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|_| self.known.contains(name))
    }

    /// The node a pod is placed on (bound or assumed).
    pub fn placement(&self, uid: &str) -> Option<&str> {
        self.placed.get(uid).map(|(n, _)| n.as_str())
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains_key(uid)
    }

    pub fn image_spread(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Placed pods with required anti-affinity terms, with their nodes.
    pub fn pods_with_required_anti_affinity(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.pods_in(&self.anti)
    }

    /// Placed pods with any pod affinity or anti-affinity, with their nodes.
    pub fn pods_with_affinity(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.pods_in(&self.affinity)
    }

    fn pods_in<'a>(&'a self, uids: &'a HashSet<String>) -> impl Iterator<Item = (&'a NodeInfo, &'a Arc<PodInfo>)> {
        uids.iter().filter_map(|uid| {
            let (node, p) = self.placed.get(uid)?;
            Some((self.nodes.get(node)?, p))
        })
    }

    /// Every placed pod with its node (ghost nodes included).
    pub fn placed_pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.placed.values().filter_map(|(node, p)| Some((self.nodes.get(node)?, p)))
    }

    /// How many existing nodes carry label `key`, by value.
    pub fn domains(&self, key: &str) -> Option<&HashMap<String, usize>> {
        self.domains.get(key)
    }

    fn count_labels(&mut self, name: &str, by: isize) {
        let Some(labels) = self.nodes.get(name).and_then(|n| n.node.metadata.labels.as_ref()) else { return };
        for (k, v) in labels {
            let values = self.domains.entry(k.clone()).or_default();
            let c = values.entry(v.clone()).or_default();
            *c = c.saturating_add_signed(by);
            if *c == 0 {
                values.remove(v);
                if values.is_empty() {
                    self.domains.remove(k);
                }
            }
        }
    }

    pub fn set_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if self.known.contains(&name) {
            self.count_labels(&name, -1);
        }
        match self.nodes.get_mut(&name) {
            Some(info) => {
                for image in info.images.keys() {
                    if let Some(c) = self.image_nodes.get_mut(image) {
                        *c -= 1;
                    }
                }
                info.set_node(node);
            }
            None => {
                self.nodes.insert(name.clone(), NodeInfo::new(node));
            }
        }
        if let Some(info) = self.nodes.get(&name) {
            for image in info.images.keys() {
                *self.image_nodes.entry(image.clone()).or_default() += 1;
            }
        }
        self.image_nodes.retain(|_, c| *c > 0);
        self.count_labels(&name, 1);
        if self.known.insert(name.clone()) {
            self.order.push(name);
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if self.known.remove(name) {
            self.count_labels(name, -1);
            self.order.retain(|n| n != name);
        }
        if let Some(info) = self.nodes.get(name) {
            for image in info.images.keys() {
                if let Some(c) = self.image_nodes.get_mut(image) {
                    *c -= 1;
                }
            }
            self.image_nodes.retain(|_, c| *c > 0);
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    fn place(&mut self, info: Arc<PodInfo>, node: &str) {
        let uid = info.uid.clone();
        let info_for_index = info.clone();
        if !info.anti_terms.is_empty() {
            self.anti.insert(uid.clone());
        }
        if info.has_affinity {
            self.affinity.insert(uid.clone());
        }
        let n = self.nodes.entry(node.to_string()).or_insert_with(|| {
            let mut ghost = Node::default();
            ghost.metadata.name = Some(node.to_string());
            NodeInfo::new(ghost)
        });
        n.add(info);
        self.placed.insert(uid, (node.to_string(), info_for_index));
    }

    fn unplace(&mut self, uid: &str) {
        let Some((node, _)) = self.placed.remove(uid) else { return };
        self.anti.remove(uid);
        self.affinity.remove(uid);
        if let Some(n) = self.nodes.get_mut(&node) {
            n.remove(uid);
            if n.pods.is_empty() && !self.known.contains(&node) {
                self.nodes.remove(&node);
            }
        }
    }

    /// A pod as the watch shows it now.
    pub fn observe_pod(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            return;
        }
        if finished(pod) {
            self.assumed.remove(&uid);
            self.unplace(&uid);
            return;
        }
        match bound_node(pod) {
            Some(node) => {
                self.assumed.remove(&uid);
                self.unplace(&uid);
                self.place(Arc::new(PodInfo::new(pod.clone())), node);
            }
            // Pending: an assumed placement stays until the binding shows up or fails.
            None if self.assumed.contains_key(&uid) => {}
            None => self.unplace(&uid),
        }
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.assumed.remove(uid);
        self.unplace(uid);
    }

    /// The binding is on its way: count the pod on `node` from now on.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: &str) {
        let uid = info.uid.clone();
        self.unplace(&uid);
        self.place(info, node);
        self.assumed.insert(uid, node.to_string());
    }

    /// The binding failed: the pod is not on the node after all.
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid).is_some() {
            self.unplace(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, images: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"images": images.iter().map(|i| serde_json::json!({"names": [i], "sizeBytes": 1000})).collect::<Vec<_>>()}}))
        .expect("node")
    }

    fn pod(uid: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": uid, "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": phase}}))
        .expect("pod")
    }

    fn cpu(c: &Cache, node: &str) -> i128 {
        c.nodes.get(node).map(|n| n.requested.get("cpu")).unwrap_or(-1)
    }

    #[test]
    fn pods_are_counted_where_they_are_bound_or_assumed_until_they_finish() {
        let mut c = Cache::default();
        c.set_node(node("a", &["img:1"]));
        c.set_node(node("b", &["img:1", "img:2"]));
        assert_eq!(c.image_spread("img:1"), 2);
        assert_eq!(c.domains("kubernetes.io/hostname").map(|d| d.len()), Some(2));
        c.observe_pod(&pod("p1", Some("a"), "Running"));
        assert_eq!(cpu(&c, "a"), 1000);
        c.assume(Arc::new(PodInfo::new(pod("p2", None, "Pending"))), "b");
        c.observe_pod(&pod("p2", None, "Pending"));
        assert_eq!(cpu(&c, "b"), 1000, "an assumed pod stays while its update shows no node yet");
        c.observe_pod(&pod("p2", Some("a"), "Pending"));
        assert!(!c.is_assumed("p2"));
        assert_eq!((cpu(&c, "a"), cpu(&c, "b")), (2000, 0), "the binding the watch shows wins");
        c.assume(Arc::new(PodInfo::new(pod("p3", None, "Pending"))), "b");
        c.forget("p3");
        assert_eq!(cpu(&c, "b"), 0);
        c.observe_pod(&pod("p1", Some("a"), "Succeeded"));
        assert_eq!(cpu(&c, "a"), 1000);
        c.remove_pod("p2");
        assert_eq!(cpu(&c, "a"), 0);
    }

    #[test]
    fn a_removed_node_keeps_its_pods_until_they_go() {
        let mut c = Cache::default();
        c.set_node(node("a", &["img:1"]));
        c.observe_pod(&pod("p1", Some("a"), "Running"));
        c.remove_node("a");
        assert_eq!(c.node_count(), 0);
        assert!(c.node("a").is_none());
        assert_eq!(c.image_spread("img:1"), 0);
        assert!(c.domains("kubernetes.io/hostname").is_none(), "a gone node is no domain");
        assert_eq!(cpu(&c, "a"), 1000, "ghost keeps the pod");
        c.remove_pod("p1");
        assert!(!c.nodes.contains_key("a"));
        c.observe_pod(&pod("p9", Some("later"), "Running"));
        c.set_node(node("later", &[]));
        assert_eq!(cpu(&c, "later"), 1000, "pods bound before their node arrived count");
    }
}
