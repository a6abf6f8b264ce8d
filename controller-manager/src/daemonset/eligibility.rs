//! Which nodes a DaemonSet's pod belongs on, decided as upstream's `NodeShouldRunDaemonPod`:
//! the template's `nodeName` (if any), `nodeSelector` and required node affinity must match the
//! node, and the pod (with the tolerations every daemon pod gets) must tolerate the node's
//! NoSchedule and NoExecute taints. A pod already running stays while only NoSchedule taints are
//! untolerated; an untolerated NoExecute taint or a selector mismatch removes it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint,
    Toleration,
};

/// The field a daemon pod's node affinity pins it to its node with.
pub const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether a daemon pod should be created on a node (`run`) and whether one already there may
/// stay (`keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub run: bool,
    pub keep: bool,
}

/// The tolerations upstream adds to every daemon pod: it must survive a node that is not ready,
/// unreachable, under resource pressure or cordoned (and, for host-network pods, without a pod
/// network yet).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(format!("node.kubernetes.io/{key}")),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut all = vec![
        exists("not-ready", "NoExecute"),
        exists("unreachable", "NoExecute"),
        exists("disk-pressure", "NoSchedule"),
        exists("memory-pressure", "NoSchedule"),
        exists("pid-pressure", "NoSchedule"),
        exists("unschedulable", "NoSchedule"),
    ];
    if host_network {
        all.push(exists("network-unavailable", "NoSchedule"));
    }
    all
}

/// Adds the daemon tolerations to `spec`, replacing any the user wrote with the same key,
/// operator, value and effect.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let extra = daemon_tolerations(spec.host_network == Some(true));
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    tolerations.retain(|t| {
        !extra.iter().any(|e| {
            e.key == t.key
                && e.effect == t.effect
                && e.operator.as_deref() == Some(t.operator.as_deref().unwrap_or("Equal"))
                && t.value.as_deref().unwrap_or_default().is_empty()
        })
    });
    tolerations.extend(extra);
    spec.tolerations = Some(tolerations);
}

/// Whether `t` tolerates `taint` (an empty effect tolerates every effect; an empty key with
/// `Exists` tolerates every key).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key && t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn requirement_matches_labels(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(|v| number(v)), values) else { return false };
            let Some(want) = number(want) else { return false };
            if r.operator == "Gt" { have > want } else { have < want }
        }
        _ => false,
    }
}

fn requirement_matches_name(r: &NodeSelectorRequirement, name: &str) -> bool {
    if r.key != NODE_NAME_FIELD {
        return false;
    }
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => values.iter().any(|v| v == name),
        "NotIn" => values.iter().all(|v| v != name),
        _ => false,
    }
}

/// A term matches when all its requirements do; a term with none matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    (!exprs.is_empty() || !fields.is_empty())
        && exprs.iter().all(|r| requirement_matches_labels(r, &labels))
        && fields.iter().all(|r| requirement_matches_name(r, name))
}

/// Whether a node selector (its terms ORed) matches `node`.
pub fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector.node_selector_terms.iter().any(|t| term_matches(t, node))
}

fn required_affinity(spec: &PodSpec) -> Option<&NodeSelector> {
    spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()
}

/// Whether the pod's `nodeName`, `nodeSelector` and required node affinity allow `node`.
pub fn selects_node(spec: &PodSpec, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != name) {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    required_affinity(spec).is_none_or(|s| node_selector_matches(s, node))
}

/// Upstream's NodeShouldRunDaemonPod for a daemon pod spec (tolerations already added).
pub fn node_should_run_daemon_pod(spec: &PodSpec, node: &Node) -> Fit {
    if !selects_node(spec, node) {
        return Fit { run: false, keep: false };
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effect: &str| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|taint| taint.effect == effect && !tolerations.iter().any(|t| tolerates(t, taint)))
    };
    let no_execute = untolerated("NoExecute");
    Fit { run: !no_execute && !untolerated("NoSchedule"), keep: !no_execute }
}

/// Pins `spec` to `node` as upstream does: the required node affinity becomes a single term
/// matching the node's name (the selector was already checked against the node).
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
}

/// The node a daemon pod is on or meant for: its `nodeName`, or, before the scheduler binds it,
/// the node its affinity pins it to (as upstream's GetTargetNodeName).
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &required_affinity(spec)?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        (r.key == NODE_NAME_FIELD && r.operator == "In" && values.len() == 1).then(|| values[0].as_str())
    })
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// A node with these labels and taints (`key=value:Effect` or `key:Effect`).
    pub fn node(name: &str, labels: &[(&str, &str)], taints: &[&str]) -> Node {
        let taints: Vec<serde_json::Value> = taints
            .iter()
            .map(|t| {
                let (kv, effect) = t.split_once(':').expect("key:Effect");
                match kv.split_once('=') {
                    Some((k, v)) => serde_json::json!({"key": k, "value": v, "effect": effect}),
                    None => serde_json::json!({"key": kv, "effect": effect}),
                }
            })
            .collect();
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints}
        }))
        .expect("node")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::node;
    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        let mut s: PodSpec = serde_json::from_value(v).expect("spec");
        add_daemon_tolerations(&mut s);
        s
    }

    fn plain() -> PodSpec {
        spec(serde_json::json!({"containers": [{"name": "c", "image": "busybox"}]}))
    }

    #[test]
    fn an_untainted_node_runs_the_daemon_pod() {
        assert_eq!(node_should_run_daemon_pod(&plain(), &node("n1", &[], &[])), Fit { run: true, keep: true });
    }

    #[test]
    fn a_node_selector_or_required_affinity_limits_the_nodes() {
        let s = spec(serde_json::json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        assert!(node_should_run_daemon_pod(&s, &node("a", &[("disk", "ssd")], &[])).run);
        assert_eq!(node_should_run_daemon_pod(&s, &node("b", &[], &[])), Fit { run: false, keep: false });
        let s = spec(serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchExpressions": [{"key": "cpus", "operator": "Gt", "values": ["8"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]}]}}}}));
        assert!(selects_node(&s, &node("x", &[("zone", "b")], &[])), "first term");
        assert!(selects_node(&s, &node("y", &[("cpus", "16")], &[])), "second term");
        assert!(!selects_node(&s, &node("z", &[("cpus", "4"), ("zone", "c")], &[])));
        assert!(selects_node(&s, &node("special", &[], &[])), "by name");
    }

    #[test]
    fn an_untolerated_no_schedule_taint_blocks_new_pods_but_keeps_running_ones() {
        let tainted = node("n", &[], &["dedicated=infra:NoSchedule"]);
        assert_eq!(node_should_run_daemon_pod(&plain(), &tainted), Fit { run: false, keep: true });
        let tolerant = spec(serde_json::json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}));
        assert_eq!(node_should_run_daemon_pod(&tolerant, &tainted), Fit { run: true, keep: true });
        let wrong_value = node("n", &[], &["dedicated=db:NoSchedule"]);
        assert!(!node_should_run_daemon_pod(&tolerant, &wrong_value).run);
    }

    #[test]
    fn an_untolerated_no_execute_taint_removes_the_pod() {
        let n = node("n", &[], &["evict:NoExecute"]);
        assert_eq!(node_should_run_daemon_pod(&plain(), &n), Fit { run: false, keep: false });
        let all = spec(serde_json::json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert_eq!(node_should_run_daemon_pod(&all, &n), Fit { run: true, keep: true }, "tolerates everything");
    }

    #[test]
    fn daemon_pods_tolerate_not_ready_unreachable_pressure_and_cordoned_nodes() {
        let n = node(
            "n",
            &[],
            &[
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/pid-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
            ],
        );
        assert_eq!(node_should_run_daemon_pod(&plain(), &n), Fit { run: true, keep: true });
        let no_network = node("n", &[], &["node.kubernetes.io/network-unavailable:NoSchedule"]);
        assert!(!node_should_run_daemon_pod(&plain(), &no_network).run);
        let host = spec(serde_json::json!({"containers": [], "hostNetwork": true}));
        assert!(node_should_run_daemon_pod(&host, &no_network).run, "host-network pods need no pod network");
        let not_ready = plain().tolerations.expect("tolerations");
        assert!(not_ready.iter().all(|t| t.toleration_seconds.is_none()));
    }

    #[test]
    fn adding_daemon_tolerations_twice_adds_them_once() {
        let mut s = plain();
        let n = s.tolerations.as_ref().map(Vec::len);
        add_daemon_tolerations(&mut s);
        assert_eq!(s.tolerations.as_ref().map(Vec::len), n);
    }

    #[test]
    fn a_pinned_pod_targets_its_node_until_bound() {
        let mut s = spec(serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}));
        pin_to_node(&mut s, "n7");
        let mut pod = Pod { spec: Some(s), ..Default::default() };
        assert_eq!(target_node(&pod), Some("n7"));
        assert!(selects_node(pod.spec.as_ref().expect("spec"), &node("n7", &[], &[])));
        assert!(!selects_node(pod.spec.as_ref().expect("spec"), &node("n8", &[("zone", "a")], &[])));
        if let Some(s) = pod.spec.as_mut() {
            s.node_name = Some("bound".into());
        }
        assert_eq!(target_node(&pod), Some("bound"));
    }
}
