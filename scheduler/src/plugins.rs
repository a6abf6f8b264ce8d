//! Filter and score plugins, each a pure function of the pod and one node, with upstream's names
//! and failure reasons (the reasons end up in FailedScheduling events).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::framework::{NodeInfo, host_ports, pod_requests};

/// Why a node does not fit: the reason as upstream words it.
pub type Reason = String;

pub fn node_unschedulable(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    let unschedulable = n.node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let tolerated = tolerations(pod).iter().any(|t| {
        t.key.as_deref() == Some("node.kubernetes.io/unschedulable")
            && (t.operator.as_deref() == Some("Exists"))
            && t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "NoSchedule")
    });
    if unschedulable && !tolerated { Err("node(s) were unschedulable".into()) } else { Ok(()) }
}

pub fn node_name(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|s| !s.is_empty()) {
        Some(want) if want != n.name() => Err("node(s) didn't match the requested node name".into()),
        _ => Ok(()),
    }
}

/// Requests against allocatable: cpu, memory, ephemeral-storage, pods and extended resources.
pub fn node_resources_fit(pod: &Pod, n: &NodeInfo) -> Result<(), Vec<Reason>> {
    let want = pod_requests(pod);
    let alloc = n.allocatable();
    let mut reasons = Vec::new();
    let pods_cap = alloc.get("pods") / 1000;
    if pods_cap > 0 && n.pods.len() as i128 + 1 > pods_cap {
        reasons.push("Too many pods".to_string());
    }
    for (name, amount) in &want.0 {
        if *amount <= 0 {
            continue;
        }
        let free = alloc.get(name) - n.requested.get(name);
        if *amount > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}

pub fn node_ports(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    for (proto, ip, port) in host_ports(pod) {
        let clash = n
            .host_ports
            .iter()
            .any(|(p, i, h)| *p == proto && *h == port && (i == &ip || i == "0.0.0.0" || ip == "0.0.0.0"));
        if clash {
            return Err("node(s) didn't have free ports for the requested pod ports".into());
        }
    }
    Ok(())
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => matches!((v.and_then(|v| num(v)), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((v.and_then(|v| num(v)), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

fn term_matches(t: &NodeSelectorTerm, n: &NodeInfo) -> bool {
    let labels = n.node.metadata.labels.clone().unwrap_or_default();
    let exprs = t.match_expressions.clone().unwrap_or_default();
    let fields = t.match_fields.clone().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let field_labels = BTreeMap::from([("metadata.name".to_string(), n.name().to_string())]);
    exprs.iter().all(|r| requirement_matches(r, &labels))
        && fields.iter().all(|r| requirement_matches(r, &field_labels))
}

/// nodeSelector and required node affinity (terms are ORed, expressions ANDed).
pub fn node_affinity(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    let spec = pod.spec.clone().unwrap_or_default();
    let labels = n.node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec.node_selector.clone().unwrap_or_default().iter().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .and_then(|a| a.node_affinity)
        .and_then(|na| na.required_during_scheduling_ignored_during_execution);
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, n)));
    if selector_ok && affinity_ok { Ok(()) } else { Err("node(s) didn't match Pod's node affinity/selector".into()) }
}

fn tolerations(pod: &Pod) -> Vec<Toleration> {
    pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default()
}

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty())
        && e != taint.effect
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// NoSchedule and NoExecute taints must be tolerated.
pub fn taint_toleration(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    let tols = tolerations(pod);
    for taint in n.node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default() {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tols.iter().any(|t| tolerates(t, &taint)) {
            let v = taint.value.clone().map(|v| format!(": {v}")).unwrap_or_default();
            return Err(format!("node(s) had untolerated taint {{{}{v}}}", taint.key));
        }
    }
    Ok(())
}

/// Every filter; the reasons of the first that fails.
pub fn filter(pod: &Pod, n: &NodeInfo) -> Result<(), Vec<Reason>> {
    node_unschedulable(pod, n).map_err(|r| vec![r])?;
    node_name(pod, n).map_err(|r| vec![r])?;
    taint_toleration(pod, n).map_err(|r| vec![r])?;
    node_affinity(pod, n).map_err(|r| vec![r])?;
    node_ports(pod, n).map_err(|r| vec![r])?;
    node_resources_fit(pod, n)
}

/// LeastAllocated (weight 1) and BalancedAllocation (weight 1) over cpu and memory, and
/// TaintToleration (weight 3) for PreferNoSchedule, each 0..=100 as upstream.
pub fn score(pod: &Pod, n: &NodeInfo) -> i64 {
    let want = pod_requests(pod);
    let alloc = n.allocatable();
    let mut fractions = Vec::new();
    let mut least = 0i128;
    for r in ["cpu", "memory"] {
        let cap = alloc.get(r);
        // Upstream counts 100m cpu / 200Mi memory for pods that request nothing.
        let default = if r == "cpu" { 100 } else { 200 * (1 << 20) * 1000 };
        let asked = if want.get(r) > 0 { want.get(r) } else { default };
        let used = n.requested.get(r) + asked;
        if cap <= 0 {
            continue;
        }
        least += ((cap - used).max(0) * 100) / cap;
        fractions.push((used as f64 / cap as f64).min(1.0));
    }
    let least = least / 2;
    let balanced = match fractions.as_slice() {
        [a, b] => ((1.0 - (a - b).abs()) * 100.0) as i128,
        _ => 100,
    };
    let tols = tolerations(pod);
    let intolerable = n
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t)))
        .count() as i128;
    let taint_score = if intolerable == 0 { 100 } else { 0 };
    (least + balanced + 3 * taint_score) as i64
}

/// Upstream's summary: "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match ...".
pub fn fit_error(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(json: serde_json::Value) -> NodeInfo {
        let mut base = serde_json::json!({"metadata": {"name": "n1", "labels": {"zone": "a", "size": "4"}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"}}});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        NodeInfo::new(serde_json::from_value::<Node>(base).expect("node"))
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn c(cpu: &str) -> serde_json::Value {
        serde_json::json!({"name": "c", "resources": {"requests": {"cpu": cpu}}})
    }

    #[test]
    fn filters() {
        let plain = node(serde_json::json!({}));
        type Case = (&'static str, Pod, NodeInfo, Result<(), Vec<String>>);
        let cases: Vec<Case> = vec![
            ("fits", pod(serde_json::json!({"containers": [c("1")]})), plain.clone(), Ok(())),
            (
                "too much cpu",
                pod(serde_json::json!({"containers": [c("3")]})),
                plain.clone(),
                Err(vec!["Insufficient cpu".into()]),
            ),
            (
                "cordoned",
                pod(serde_json::json!({"containers": [c("1")]})),
                node(serde_json::json!({"spec": {"unschedulable": true}})),
                Err(vec!["node(s) were unschedulable".into()]),
            ),
            (
                "selector",
                pod(serde_json::json!({"nodeSelector": {"zone": "b"}, "containers": [c("1")]})),
                plain.clone(),
                Err(vec!["node(s) didn't match Pod's node affinity/selector".into()]),
            ),
            (
                "affinity Gt",
                pod(
                    serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["2"]}]}]}}}, "containers": [c("1")]}),
                ),
                plain.clone(),
                Ok(()),
            ),
            (
                "affinity NotIn",
                pod(
                    serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}, "containers": [c("1")]}),
                ),
                plain.clone(),
                Err(vec!["node(s) didn't match Pod's node affinity/selector".into()]),
            ),
            (
                "untolerated taint",
                pod(serde_json::json!({"containers": [c("1")]})),
                node(serde_json::json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}})),
                Err(vec!["node(s) had untolerated taint {gpu: yes}".into()]),
            ),
            (
                "tolerated taint",
                pod(serde_json::json!({"tolerations": [{"key": "gpu", "operator": "Exists"}], "containers": [c("1")]})),
                node(serde_json::json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}})),
                Ok(()),
            ),
            (
                "prefer-no-schedule does not filter",
                pod(serde_json::json!({"containers": [c("1")]})),
                node(serde_json::json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}})),
                Ok(()),
            ),
        ];
        for (name, p, n, want) in cases {
            assert_eq!(filter(&p, &n), want, "{name}");
        }
    }

    #[test]
    fn placed_pods_count_against_the_node() {
        let mut n = node(serde_json::json!({}));
        let p = pod(serde_json::json!({"containers": [c("1")], "hostNetwork": true}));
        let ported =
            pod(serde_json::json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        n.add_pod(&p);
        n.add_pod(&ported);
        assert_eq!(filter(&p, &n), Ok(()), "1 + 1 cpu of 2");
        assert_eq!(node_ports(&ported, &n), Err("node(s) didn't have free ports for the requested pod ports".into()));
        n.add_pod(&p);
        assert_eq!(filter(&p, &n), Err(vec!["Too many pods".into(), "Insufficient cpu".into()]));
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let empty = node(serde_json::json!({}));
        let mut busy = node(serde_json::json!({}));
        busy.add_pod(&pod(serde_json::json!({"containers": [c("1500m")]})));
        let p = pod(serde_json::json!({"containers": [c("100m")]}));
        assert!(score(&p, &empty) > score(&p, &busy));
        let tainted = node(serde_json::json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}));
        assert!(score(&p, &empty) > score(&p, &tainted));
    }

    #[test]
    fn fit_errors_read_like_upstream() {
        let reasons = BTreeMap::from([
            ("Insufficient cpu".to_string(), 1),
            ("node(s) didn't match Pod's node affinity/selector".to_string(), 2),
        ]);
        assert_eq!(
            fit_error(3, &reasons),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
