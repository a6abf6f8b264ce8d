//! Filters that look at other pods across the cluster: InterPodAffinity (required affinity and
//! anti-affinity, and existing pods' anti-affinity against the new pod) and PodTopologySpread
//! (DoNotSchedule). Pure functions of the pod, the candidate node and every node's pods.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::framework::NodeInfo;
use crate::plugins::Reason;

pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.clone().unwrap_or_default();
    if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    sel.match_expressions.clone().unwrap_or_default().iter().all(|e| {
        let v = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    })
}

fn labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

fn ns(p: &Pod) -> String {
    p.metadata.namespace.clone().unwrap_or_default()
}

/// Whether `other` is one of the pods `term` (written in `owner`'s namespace) selects.
fn term_selects(term: &PodAffinityTerm, owner: &Pod, other: &Pod) -> bool {
    let namespaces = term.namespaces.clone().unwrap_or_default();
    let ns_ok = if namespaces.is_empty() { ns(other) == ns(owner) } else { namespaces.contains(&ns(other)) };
    ns_ok && term.label_selector.as_ref().is_some_and(|s| selector_matches(s, &labels(other)))
}

fn topology(n: &NodeInfo, key: &str) -> Option<String> {
    n.node.metadata.labels.as_ref().and_then(|l| l.get(key).cloned())
}

/// Nodes in the same topology domain as `n` for `key`.
fn same_domain<'a>(nodes: &'a [NodeInfo], n: &NodeInfo, key: &str) -> impl Iterator<Item = &'a NodeInfo> {
    let value = topology(n, key);
    nodes.iter().filter(move |o| value.is_some() && topology(o, key) == value)
}

/// Checked in upstream's order: the pod's affinity, its anti-affinity, then existing pods'
/// anti-affinity against it.
pub fn inter_pod_affinity(pod: &Pod, n: &NodeInfo, nodes: &[NodeInfo]) -> Result<(), Reason> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.clone()).unwrap_or_default();
    if let Some(a) = affinity.pod_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution) {
        for t in a {
            let here = same_domain(nodes, n, &t.topology_key).any(|o| o.pods.iter().any(|p| term_selects(&t, pod, p)));
            // The first pod of a group that selects itself may go anywhere the key exists.
            let anywhere = nodes.iter().any(|o| o.pods.iter().any(|p| term_selects(&t, pod, p)));
            let first = !anywhere && term_selects(&t, pod, pod) && topology(n, &t.topology_key).is_some();
            if !here && !first {
                return Err("node(s) didn't match pod affinity rules".into());
            }
        }
    }
    if let Some(aa) = affinity.pod_anti_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution) {
        for t in aa {
            if same_domain(nodes, n, &t.topology_key).any(|o| o.pods.iter().any(|p| term_selects(&t, pod, p))) {
                return Err("node(s) didn't match pod anti-affinity rules".into());
            }
        }
    }
    // Existing pods whose anti-affinity rejects the new one.
    for other_node in nodes {
        for other in &other_node.pods {
            let terms = other
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default();
            for t in terms {
                if term_selects(&t, other, pod)
                    && topology(other_node, &t.topology_key).is_some()
                    && topology(other_node, &t.topology_key) == topology(n, &t.topology_key)
                {
                    return Err("node(s) didn't satisfy existing pods anti-affinity rules".into());
                }
            }
        }
    }
    Ok(())
}

/// `whenUnsatisfiable: DoNotSchedule` constraints: placing the pod on `n` must keep
/// (its domain's matching pods + 1) - (the emptiest domain's) within `maxSkew`.
/// `eligible` are the nodes the pod could go to by its node selector and affinity.
pub fn pod_topology_spread(pod: &Pod, n: &NodeInfo, eligible: &[&NodeInfo]) -> Result<(), Reason> {
    let constraints = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.clone()).unwrap_or_default();
    for c in constraints.iter().filter(|c| c.when_unsatisfiable == "DoNotSchedule") {
        let Some(domain) = topology(n, &c.topology_key) else {
            return Err("node(s) didn't match pod topology spread constraints (missing required label)".into());
        };
        let mut counts: HashMap<String, i64> = HashMap::new();
        for o in eligible {
            let Some(d) = topology(o, &c.topology_key) else { continue };
            let matching = o
                .pods
                .iter()
                .filter(|p| {
                    ns(p) == ns(pod) && c.label_selector.as_ref().is_some_and(|s| selector_matches(s, &labels(p)))
                })
                .count() as i64;
            *counts.entry(d).or_default() += matching;
        }
        let self_match = c.label_selector.as_ref().is_some_and(|s| selector_matches(s, &labels(pod))) as i64;
        let min = counts.values().copied().min().unwrap_or(0);
        let here = counts.get(&domain).copied().unwrap_or(0);
        if here + self_match - min > c.max_skew as i64 {
            return Err("node(s) didn't match pod topology spread constraints".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, zone: &str, pods: &[Pod]) -> NodeInfo {
        let mut n = NodeInfo::new(
            serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}}}))
                .expect("node"),
        );
        for p in pods {
            n.add_pod(p);
        }
        n
    }

    fn pod(labels: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c"}]);
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "spec": spec}),
        )
        .expect("pod")
    }

    fn web() -> Pod {
        pod(serde_json::json!({"app": "web"}), serde_json::json!({}))
    }

    #[test]
    fn anti_affinity_spreads_by_hostname_and_zone() {
        let nodes = vec![node("n1", "a", &[web()]), node("n2", "a", &[]), node("n3", "b", &[])];
        let by_host = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        assert!(inter_pod_affinity(&by_host, &nodes[0], &nodes).is_err());
        assert!(inter_pod_affinity(&by_host, &nodes[1], &nodes).is_ok());
        let by_zone = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        assert_eq!(
            inter_pod_affinity(&by_zone, &nodes[1], &nodes),
            Err("node(s) didn't match pod anti-affinity rules".into())
        );
        assert!(inter_pod_affinity(&by_zone, &nodes[2], &nodes).is_ok());
    }

    #[test]
    fn affinity_follows_the_group_and_the_first_pod_goes_anywhere() {
        let with_db = vec![
            node("n1", "a", &[pod(serde_json::json!({"app": "db"}), serde_json::json!({}))]),
            node("n2", "b", &[]),
        ];
        let near_db = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(inter_pod_affinity(&near_db, &with_db[0], &with_db).is_ok());
        assert_eq!(
            inter_pod_affinity(&near_db, &with_db[1], &with_db),
            Err("node(s) didn't match pod affinity rules".into())
        );
        let empty = vec![node("n1", "a", &[]), node("n2", "b", &[])];
        let self_group = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(inter_pod_affinity(&self_group, &empty[1], &empty).is_ok());
    }

    #[test]
    fn existing_anti_affinity_keeps_new_pods_away() {
        let loner = pod(
            serde_json::json!({"app": "loner"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        let nodes = vec![node("n1", "a", &[loner]), node("n2", "a", &[])];
        assert_eq!(
            inter_pod_affinity(&web(), &nodes[0], &nodes),
            Err("node(s) didn't satisfy existing pods anti-affinity rules".into())
        );
        assert!(inter_pod_affinity(&web(), &nodes[1], &nodes).is_ok());
    }

    #[test]
    fn topology_spread_keeps_the_skew() {
        let nodes = [node("n1", "a", &[web(), web()]), node("n2", "b", &[web()]), node("n3", "c", &[])];
        let eligible: Vec<&NodeInfo> = nodes.iter().collect();
        let spread = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        );
        assert!(pod_topology_spread(&spread, &nodes[0], &eligible).is_err(), "2+1-0 > 1");
        assert!(pod_topology_spread(&spread, &nodes[1], &eligible).is_err(), "1+1-0 > 1");
        assert!(pod_topology_spread(&spread, &nodes[2], &eligible).is_ok());
        let unlabeled = NodeInfo::new(
            serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": "x"}})).expect("node"),
        );
        assert!(pod_topology_spread(&spread, &unlabeled, &eligible).is_err());
    }
}
