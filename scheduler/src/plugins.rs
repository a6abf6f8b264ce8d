//! Filter and score plugins, each a pure function of the pod and one node, with upstream's names
//! and failure reasons (the reasons end up in FailedScheduling events).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::framework::{NodeInfo, PodInfo, host_ports};

/// Why a node does not fit: the reason as upstream words it.
pub type Reason = std::borrow::Cow<'static, str>;

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
pub fn node_resources_fit(pod: &PodInfo, n: &NodeInfo) -> Result<(), Vec<Reason>> {
    const INSUFFICIENT: [&str; 4] =
        ["Insufficient cpu", "Insufficient memory", "Insufficient ephemeral-storage", "Insufficient pods"];
    let mut reasons: Vec<Reason> = Vec::new();
    let pods_cap = n.allocatable.known[3] / 1000;
    if pods_cap > 0 && n.pods.len() as i128 + 1 > pods_cap {
        reasons.push("Too many pods".into());
    }
    // Pods are counted above, not requested.
    let known = pod.requests.known.iter().zip(n.allocatable.known).zip(n.requested.known).zip(INSUFFICIENT);
    for (((amount, allocatable), requested), reason) in known.take(3) {
        if *amount > 0 && *amount > allocatable - requested {
            reasons.push(reason.into());
        }
    }
    for (name, amount) in &pod.requests.other {
        if *amount > 0 && *amount > n.allocatable.get(name) - n.requested.get(name) {
            reasons.push(format!("Insufficient {name}").into());
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}

pub fn node_ports(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    if n.host_ports.is_empty() {
        return Ok(());
    }
    for (proto, ip, port) in host_ports(pod) {
        let clash = n
            .host_ports
            .keys()
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
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, n.labels()))
        && (fields.is_empty() || {
            let field_labels = BTreeMap::from([("metadata.name".to_string(), n.name().to_string())]);
            fields.iter().all(|r| requirement_matches(r, &field_labels))
        })
}

/// nodeSelector and required node affinity (terms are ORed, expressions ANDed).
pub fn node_affinity(pod: &Pod, n: &NodeInfo) -> Result<(), Reason> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    let labels = n.labels();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, n)));
    if selector_ok && affinity_ok { Ok(()) } else { Err("node(s) didn't match Pod's node affinity/selector".into()) }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
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
    for taint in n.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default() {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tols.iter().any(|t| tolerates(t, taint)) {
            let v = taint.value.clone().map(|v| format!(": {v}")).unwrap_or_default();
            return Err(format!("node(s) had untolerated taint {{{}{v}}}", taint.key).into());
        }
    }
    Ok(())
}

/// A node's verdict from one filter: why it does not fit, and whether evicting pods could
/// change that (upstream's Unschedulable vs UnschedulableAndUnresolvable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misfit {
    pub reasons: Vec<Reason>,
    pub resolvable: bool,
}

impl Misfit {
    pub fn unresolvable(r: Reason) -> Misfit {
        Misfit { reasons: vec![r], resolvable: false }
    }
    pub fn resolvable(r: Reason) -> Misfit {
        Misfit { reasons: vec![r], resolvable: true }
    }
}

/// The node-local filters in upstream's order; the reasons of the first that fails.
/// Which node-local filters a profile runs, looked up once rather than per node.
#[derive(Clone, Copy, Debug)]
pub struct NodeFilters {
    unschedulable: bool,
    node_name: bool,
    taints: bool,
    affinity: bool,
    ports: bool,
    fit: bool,
}

impl NodeFilters {
    pub fn new(enabled: impl Fn(&str) -> bool) -> NodeFilters {
        NodeFilters {
            unschedulable: enabled("NodeUnschedulable"),
            node_name: enabled("NodeName"),
            taints: enabled("TaintToleration"),
            affinity: enabled("NodeAffinity"),
            ports: enabled("NodePorts"),
            fit: enabled("NodeResourcesFit"),
        }
    }
}

/// The node-local filters, in upstream's order; the first that fails decides.
pub fn filter_node(pod: &PodInfo, n: &NodeInfo, on: NodeFilters) -> Result<(), Misfit> {
    let p = &pod.pod;
    if on.unschedulable {
        node_unschedulable(p, n).map_err(Misfit::unresolvable)?;
    }
    if on.node_name {
        node_name(p, n).map_err(Misfit::unresolvable)?;
    }
    if on.taints {
        taint_toleration(p, n).map_err(Misfit::unresolvable)?;
    }
    if on.affinity {
        node_affinity(p, n).map_err(Misfit::unresolvable)?;
    }
    if on.ports {
        node_ports(p, n).map_err(Misfit::resolvable)?;
    }
    if on.fit {
        node_resources_fit(pod, n).map_err(|reasons| Misfit { reasons, resolvable: true })?;
    }
    Ok(())
}

/// Every node-local filter (tables).
#[cfg(test)]
pub fn filter(pod: &Pod, n: &NodeInfo) -> Result<(), Vec<String>> {
    filter_node(&PodInfo::new(pod.clone()), n, NodeFilters::new(|_| true))
        .map_err(|m| m.reasons.iter().map(|r| r.to_string()).collect())
}

/// How NodeResourcesFit scores: upstream's LeastAllocated (the default) or MostAllocated, with
/// per-resource weights.
#[derive(Clone, Debug, PartialEq)]
pub struct FitScoring {
    pub most_allocated: bool,
    pub resources: Vec<(String, i64)>,
}

impl Default for FitScoring {
    fn default() -> Self {
        FitScoring { most_allocated: false, resources: vec![("cpu".into(), 1), ("memory".into(), 1)] }
    }
}

pub const MAX_SCORE: i64 = 100;

/// NodeResourcesFit's score, 0..=100.
pub fn resources_fit_score(pod: &PodInfo, n: &NodeInfo, how: &FitScoring) -> i64 {
    let (mut sum, mut weights) = (0i128, 0i128);
    for (r, w) in &how.resources {
        let cap = n.allocatable.get(r);
        // cpu and memory count what empty containers would get; others what is asked.
        let (used, asked) = if r == "cpu" || r == "memory" {
            (n.non_zero_requested.get(r), pod.non_zero.get(r))
        } else {
            (n.requested.get(r), pod.requests.get(r))
        };
        if cap <= 0 || (asked == 0 && !(r == "cpu" || r == "memory")) {
            continue;
        }
        let requested = used + asked;
        let s = if how.most_allocated {
            (requested.min(cap) * 100) / cap
        } else if requested > cap {
            0
        } else {
            ((cap - requested) * 100) / cap
        };
        sum += s * *w as i128;
        weights += *w as i128;
    }
    if weights == 0 { 0 } else { (sum / weights) as i64 }
}

/// NodeResourcesBalancedAllocation: 100 x (1 - the standard deviation of the requested
/// fractions of cpu and memory), on actual requests.
pub fn balanced_allocation_score(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let mut fractions = Vec::new();
    for r in ["cpu", "memory"] {
        let cap = n.allocatable.get(r);
        if cap <= 0 {
            continue;
        }
        let used = n.requested.get(r) + pod.requests.get(r);
        fractions.push((used as f64 / cap as f64).min(1.0));
    }
    let std = match fractions.as_slice() {
        [a, b] => (a - b).abs() / 2.0,
        _ => 0.0,
    };
    ((1.0 - std) * MAX_SCORE as f64) as i64
}

/// TaintToleration's raw score: how many PreferNoSchedule taints the pod does not tolerate
/// (fewer is better; normalized reversed).
pub fn intolerable_taints(pod: &Pod, n: &NodeInfo) -> i64 {
    let tols = tolerations(pod);
    n.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

/// NodeAffinity's raw score: the weights of the preferred terms the node matches.
pub fn preferred_node_affinity(pod: &Pod, n: &NodeInfo) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, n))
        .map(|t| t.weight as i64)
        .sum()
}

/// Names as the kubelet reports them: a missing tag means `:latest`, Docker Hub's prefix optional.
pub fn normalized_image(name: &str) -> String {
    let name = name.strip_prefix("docker.io/library/").or_else(|| name.strip_prefix("docker.io/")).unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') { name.to_string() } else { format!("{name}:latest") }
}

/// ImageLocality: the sizes of the pod's images already on the node, scaled by how many nodes
/// have them, between 23 MB and 1000 MB per container.
pub fn image_locality_score(pod: &Pod, n: &NodeInfo, spread: &dyn Fn(&str) -> usize, total_nodes: usize) -> i64 {
    const MB: i64 = 1024 * 1024;
    let Some(spec) = pod.spec.as_ref() else { return 0 };
    let containers: Vec<&str> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.image.as_deref())
        .collect();
    if containers.is_empty() || total_nodes == 0 {
        return 0;
    }
    let mut sum = 0i64;
    for image in &containers {
        let image = normalized_image(image);
        if let Some(size) = n.images.get(&image) {
            sum += (*size as f64 * spread(&image) as f64 / total_nodes as f64) as i64;
        }
    }
    let (min, max) = (23 * MB, 1000 * MB * containers.len() as i64);
    let sum = sum.clamp(min, max);
    MAX_SCORE * (sum - min) / (max - min)
}

/// Scales raw scores to 0..=100 by the largest (upstream's DefaultNormalizeScore), reversed
/// when lower is better.
pub fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        *s = match (max, reverse) {
            (0, true) => MAX_SCORE,
            (0, false) => 0,
            (m, false) => MAX_SCORE * *s / m,
            (m, true) => MAX_SCORE - MAX_SCORE * *s / m,
        };
    }
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

    /// Upstream's NodePorts rule (C192, C313): a hostPort clashes only with the same port and
    /// protocol on the same hostIP, and 0.0.0.0 (or no hostIP) overlaps every address.
    #[test]
    fn host_ports_clash_only_on_the_same_protocol_and_an_overlapping_host_ip() {
        let ported = |ip: &str, proto: &str| {
            let mut port = serde_json::json!({"containerPort": 80, "hostPort": 54321, "protocol": proto});
            if !ip.is_empty() {
                port["hostIP"] = serde_json::json!(ip);
            }
            pod(serde_json::json!({"containers": [{"name": "c", "ports": [port]}]}))
        };
        let clash = Err("node(s) didn't have free ports for the requested pod ports".into());
        /// (case, the placed pod's (hostIP, protocol), the new pod's, the verdict)
        type Case = (&'static str, (&'static str, &'static str), (&'static str, &'static str), Result<(), Reason>);
        let cases: Vec<Case> = vec![
            ("different hostIPs", ("127.0.0.1", "TCP"), ("192.0.2.2", "TCP"), Ok(())),
            ("different protocols", ("192.0.2.2", "TCP"), ("192.0.2.2", "UDP"), Ok(())),
            ("different protocols on every address", ("", "TCP"), ("0.0.0.0", "UDP"), Ok(())),
            ("same hostIP and protocol", ("127.0.0.1", "UDP"), ("127.0.0.1", "UDP"), clash.clone()),
            ("placed on every address", ("0.0.0.0", "TCP"), ("127.0.0.1", "TCP"), clash.clone()),
            ("asking for every address", ("127.0.0.1", "TCP"), ("", "TCP"), clash.clone()),
        ];
        for (name, (placed_ip, placed_proto), (ip, proto), want) in cases {
            let mut n = node(serde_json::json!({}));
            n.add_pod(&ported(placed_ip, placed_proto));
            assert_eq!(node_ports(&ported(ip, proto), &n), want, "{name}");
        }
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let empty = node(serde_json::json!({}));
        let mut busy = node(serde_json::json!({}));
        busy.add_pod(&pod(serde_json::json!({"containers": [c("1500m")]})));
        let p = PodInfo::new(pod(serde_json::json!({"containers": [c("100m")]})));
        let least = FitScoring::default();
        let most = FitScoring { most_allocated: true, ..Default::default() };
        assert!(resources_fit_score(&p, &empty, &least) > resources_fit_score(&p, &busy, &least));
        assert!(resources_fit_score(&p, &empty, &most) < resources_fit_score(&p, &busy, &most));
        // cpu 0.1/2 vs memory 200Mi/4Gi (the pod asks no memory: 0) on the empty node.
        assert_eq!(balanced_allocation_score(&p, &empty), 97);
        let tainted = node(serde_json::json!({"spec": {"taints": [{"key": "x", "effect": "PreferNoSchedule"}]}}));
        assert_eq!((intolerable_taints(&p.pod, &empty), intolerable_taints(&p.pod, &tainted)), (0, 1));
        let mut raw = vec![0, 1, 2];
        normalize(&mut raw, true);
        assert_eq!(raw, vec![100, 50, 0]);
    }

    #[test]
    fn preferred_node_affinity_adds_the_weights_of_matching_terms() {
        let n = node(serde_json::json!({}));
        let p = pod(
            serde_json::json!({"containers": [c("1")], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 7, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
                {"weight": 11, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}}
            ]}}}),
        );
        assert_eq!(preferred_node_affinity(&p, &n), 16);
    }

    #[test]
    fn image_locality_prefers_nodes_that_have_the_images_widely() {
        let with = node(serde_json::json!({"status": {"allocatable": {"cpu": "2"},
            "images": [{"names": ["docker.io/library/big:1"], "sizeBytes": 600i64 << 20}]}}));
        let without = node(serde_json::json!({}));
        let p = pod(serde_json::json!({"containers": [{"name": "c", "image": "big:1"}]}));
        let everywhere = |_: &str| 2;
        assert_eq!(normalized_image("docker.io/library/big:1"), "big:1");
        assert_eq!(normalized_image("registry.k8s.io/pause"), "registry.k8s.io/pause:latest");
        assert_eq!(image_locality_score(&p, &without, &everywhere, 2), 0);
        // 600 MB present on both of 2 nodes: (600-23)/(1000-23) of 100.
        assert_eq!(image_locality_score(&p, &with, &everywhere, 2), 59);
        assert!(image_locality_score(&p, &with, &|_| 1, 4) < 59, "rarer images count less");
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
