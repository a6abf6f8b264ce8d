//! InterPodAffinity: required affinity and anti-affinity of the pod, existing pods' required
//! anti-affinity against it (filter), and preferred terms both ways (score). As upstream, the
//! cluster-wide part is counted once per scheduling cycle into maps keyed by topology
//! (key, value), so checking one node is a few lookups.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::cache::Cache;
use crate::framework::{NodeInfo, PodInfo};
use crate::plugins::Misfit;

pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if !sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let v = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    })
}

/// `sel` with `key In/NotIn [the owner's value]` added for each of `keys` the owner has.
pub fn with_label_keys(sel: &LabelSelector, owner: &Pod, keys: &[String], operator: &str) -> LabelSelector {
    let mut sel = sel.clone();
    let labels = owner.metadata.labels.as_ref();
    for k in keys {
        if let Some(v) = labels.and_then(|l| l.get(k)) {
            sel.match_expressions.get_or_insert_with(Vec::new).push(LabelSelectorRequirement {
                key: k.clone(),
                operator: operator.into(),
                values: Some(vec![v.clone()]),
            });
        }
    }
    sel
}

/// Namespace name -> its labels, for namespace selectors.
pub type Namespaces = HashMap<String, BTreeMap<String, String>>;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A term resolved against the pod that wrote it: which namespaces and labels it selects.
#[derive(Debug)]
pub struct Term {
    pub topology_key: String,
    namespaces: Vec<String>,
    /// Namespace selector (an empty one selects every namespace).
    namespace_selector: Option<LabelSelector>,
    selector: Option<LabelSelector>,
    pub weight: i64,
}

impl Term {
    pub fn new(t: &PodAffinityTerm, owner: &Pod, weight: i64) -> Term {
        let mut selector = t.label_selector.clone();
        if let Some(s) = selector.as_mut() {
            *s = with_label_keys(s, owner, t.match_label_keys.as_deref().unwrap_or_default(), "In");
            *s = with_label_keys(s, owner, t.mismatch_label_keys.as_deref().unwrap_or_default(), "NotIn");
        }
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(owner.metadata.namespace.clone().unwrap_or_default());
        }
        Term {
            topology_key: t.topology_key.clone(),
            namespaces,
            namespace_selector: t.namespace_selector.clone(),
            selector,
            weight,
        }
    }

    /// Whether `other` is among the pods the term selects.
    pub fn selects(&self, other: &PodInfo, namespaces: &Namespaces) -> bool {
        let ns = other.namespace();
        let ns_ok = self.namespaces.iter().any(|n| n == ns)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, namespaces.get(ns).unwrap_or(&NO_LABELS)));
        ns_ok && self.selector.as_ref().is_some_and(|s| selector_matches(s, other.labels()))
    }
}

fn required_terms(pod: &Pod, anti: bool) -> Vec<Term> {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    } else {
        a.and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    };
    terms.into_iter().flatten().map(|t| Term::new(t, pod, 1)).collect()
}

fn preferred_terms(pod: &Pod, anti: bool) -> Vec<Term> {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
    } else {
        a.and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
    };
    terms.into_iter().flatten().map(|w| Term::new(&w.pod_affinity_term, pod, w.weight as i64)).collect()
}

/// Topology key -> value -> count (or weight).
#[derive(Default)]
struct Counts(HashMap<String, HashMap<String, i64>>);

impl Counts {
    fn add(&mut self, n: &NodeInfo, key: &str, by: i64) {
        if let Some(v) = n.label(key) {
            let values = match self.0.get_mut(key) {
                Some(values) => values,
                None => self.0.entry(key.to_string()).or_default(),
            };
            match values.get_mut(v) {
                Some(c) => *c += by,
                None => {
                    values.insert(v.to_string(), by);
                }
            }
        }
    }

    /// The count in `n`'s domain for `key`.
    fn at(&self, n: &NodeInfo, key: &str) -> i64 {
        n.label(key).and_then(|v| self.0.get(key)?.get(v)).copied().unwrap_or(0)
    }

    /// Summed over every key: the counts of `n`'s domains.
    fn sum_at(&self, n: &NodeInfo) -> i64 {
        self.0.iter().filter_map(|(k, values)| values.get(n.label(k)?)).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The filter's view of the cluster for one pod.
pub struct InterPodState {
    affinity: Vec<Term>,
    anti_affinity: Vec<Term>,
    /// (key, value) -> pods matching every required affinity term there.
    affinity_counts: Counts,
    anti_affinity_counts: Counts,
    /// (key, value) -> existing pods whose required anti-affinity selects the pod there.
    existing_anti: Counts,
    /// The pod satisfies its own affinity terms (the first of a group may go anywhere).
    self_match: bool,
}

impl InterPodState {
    pub fn new(pod: &PodInfo, cache: &Cache, namespaces: &Namespaces) -> InterPodState {
        let affinity = required_terms(&pod.pod, false);
        let anti_affinity = required_terms(&pod.pod, true);
        let mut existing_anti = Counts::default();
        for (n, other) in cache.pods_with_required_anti_affinity() {
            for t in &other.anti_terms {
                if t.selects(pod, namespaces) {
                    existing_anti.add(n, &t.topology_key, 1);
                }
            }
        }
        let (mut affinity_counts, mut anti_affinity_counts) = (Counts::default(), Counts::default());
        if !affinity.is_empty() || !anti_affinity.is_empty() {
            for (n, other) in cache.placed_pods() {
                if !affinity.is_empty() && affinity.iter().all(|t| t.selects(other, namespaces)) {
                    for t in &affinity {
                        affinity_counts.add(n, &t.topology_key, 1);
                    }
                }
                for t in anti_affinity.iter().filter(|t| t.selects(other, namespaces)) {
                    anti_affinity_counts.add(n, &t.topology_key, 1);
                }
            }
        }
        let self_match = affinity.iter().all(|t| t.selects(pod, namespaces));
        InterPodState { affinity, anti_affinity, affinity_counts, anti_affinity_counts, existing_anti, self_match }
    }

    /// Whether anything can reject a node (else the filter is skipped).
    pub fn is_empty(&self) -> bool {
        self.affinity.is_empty() && self.anti_affinity.is_empty() && self.existing_anti.is_empty()
    }

    /// Checked in upstream's order: the pod's affinity, its anti-affinity, then existing pods'
    /// anti-affinity against it.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Misfit> {
        if !self.affinity.is_empty() {
            let here = self.affinity.iter().all(|t| self.affinity_counts.at(n, &t.topology_key) > 0);
            let has_keys = self.affinity.iter().all(|t| n.label(&t.topology_key).is_some());
            let first = self.affinity_counts.is_empty() && self.self_match && has_keys;
            if !here && !first {
                return Err(Misfit::unresolvable("node(s) didn't match pod affinity rules".into()));
            }
        }
        if self.anti_affinity.iter().any(|t| self.anti_affinity_counts.at(n, &t.topology_key) > 0) {
            return Err(Misfit::resolvable("node(s) didn't match pod anti-affinity rules".into()));
        }
        if self.existing_anti.sum_at(n) > 0 {
            return Err(Misfit::resolvable("node(s) didn't satisfy existing pods anti-affinity rules".into()));
        }
        Ok(())
    }
}

/// The score's view: (key, value) -> the weights that pull the pod toward (or, negative, away
/// from) that domain, from its preferred terms and other pods' terms about it.
pub struct InterPodScore {
    weights: Counts,
}

/// Upstream's weight for existing pods' required affinity toward the new pod.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

impl InterPodScore {
    pub fn new(pod: &PodInfo, cache: &Cache, namespaces: &Namespaces) -> InterPodScore {
        let preferred = preferred_terms(&pod.pod, false);
        let preferred_anti = preferred_terms(&pod.pod, true);
        let mut weights = Counts::default();
        let mut visit = |n: &NodeInfo, other: &PodInfo| {
            for t in &preferred {
                if t.selects(other, namespaces) {
                    weights.add(n, &t.topology_key, t.weight);
                }
            }
            for t in &preferred_anti {
                if t.selects(other, namespaces) {
                    weights.add(n, &t.topology_key, -t.weight);
                }
            }
            if !other.has_affinity {
                return;
            }
            for t in required_terms(&other.pod, false) {
                if t.selects(pod, namespaces) {
                    weights.add(n, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
            }
            for t in preferred_terms(&other.pod, false) {
                if t.selects(pod, namespaces) {
                    weights.add(n, &t.topology_key, t.weight);
                }
            }
            for t in preferred_terms(&other.pod, true) {
                if t.selects(pod, namespaces) {
                    weights.add(n, &t.topology_key, -t.weight);
                }
            }
        };
        if preferred.is_empty() && preferred_anti.is_empty() {
            for (n, other) in cache.pods_with_affinity() {
                visit(n, other);
            }
        } else {
            for (n, other) in cache.placed_pods() {
                visit(n, other);
            }
        }
        InterPodScore { weights }
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    pub fn raw(&self, n: &NodeInfo) -> i64 {
        self.weights.sum_at(n)
    }
}

/// Scales raw scores that may be negative to 0..=100 between the smallest and the largest.
pub fn normalize_min_max(scores: &mut [i64]) {
    let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
    for s in scores.iter_mut() {
        *s = if max > min { 100 * (*s - min) / (max - min) } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{place, pod, web};
    use k8s_openapi::api::core::v1::Node;

    fn cache(nodes: &[(&str, &str, Vec<Pod>)]) -> Cache {
        let mut c = Cache::default();
        for (i, (name, zone, pods)) in nodes.iter().enumerate() {
            c.set_node(
                serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}}}))
                    .expect("node"),
            );
            for (j, p) in pods.iter().enumerate() {
                place(&mut c, name, p, format!("{i}-{j}"));
            }
        }
        c
    }

    fn check(p: &Pod, c: &Cache, node: &str) -> Result<(), String> {
        let info = PodInfo::new(p.clone());
        InterPodState::new(&info, c, &Namespaces::new())
            .filter(c.node(node).expect("node"))
            .map_err(|m| m.reasons[0].to_string())
    }

    #[test]
    fn anti_affinity_spreads_by_hostname_and_zone() {
        let c = cache(&[("n1", "a", vec![web()]), ("n2", "a", vec![]), ("n3", "b", vec![])]);
        let by_host = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        assert!(check(&by_host, &c, "n1").is_err());
        assert!(check(&by_host, &c, "n2").is_ok());
        let by_zone = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        assert_eq!(check(&by_zone, &c, "n2"), Err("node(s) didn't match pod anti-affinity rules".into()));
        assert!(check(&by_zone, &c, "n3").is_ok());
    }

    #[test]
    fn affinity_follows_the_group_and_the_first_pod_goes_anywhere() {
        let with_db = cache(&[
            ("n1", "a", vec![pod(serde_json::json!({"app": "db"}), serde_json::json!({}))]),
            ("n2", "b", vec![]),
        ]);
        let near_db = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(check(&near_db, &with_db, "n1").is_ok());
        assert_eq!(check(&near_db, &with_db, "n2"), Err("node(s) didn't match pod affinity rules".into()));
        let empty = cache(&[("n1", "a", vec![]), ("n2", "b", vec![])]);
        let self_group = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(check(&self_group, &empty, "n2").is_ok());
        assert!(check(&near_db, &empty, "n2").is_err(), "a pod that does not match its own terms waits");
    }

    #[test]
    fn when_both_sides_repel_the_pods_own_rule_is_the_reason_as_upstream() {
        let mutual = || {
            pod(
                serde_json::json!({"app": "web"}),
                serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            )
        };
        let c = cache(&[("n1", "a", vec![mutual()])]);
        assert_eq!(check(&mutual(), &c, "n1"), Err("node(s) didn't match pod anti-affinity rules".into()));
    }

    #[test]
    fn existing_anti_affinity_keeps_new_pods_away() {
        let loner = pod(
            serde_json::json!({"app": "loner"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        let c = cache(&[("n1", "a", vec![loner]), ("n2", "a", vec![])]);
        assert_eq!(check(&web(), &c, "n1"), Err("node(s) didn't satisfy existing pods anti-affinity rules".into()));
        assert!(check(&web(), &c, "n2").is_ok());
    }

    #[test]
    fn terms_select_by_namespace_and_match_label_keys() {
        let mut other_ns = web();
        other_ns.metadata.namespace = Some("other".into());
        let c = cache(&[("n1", "a", vec![other_ns]), ("n2", "b", vec![])]);
        let same_ns = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
        );
        assert!(check(&same_ns, &c, "n1").is_ok(), "only the pod's own namespace by default");
        let all_ns = pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {}, "topologyKey": "zone"}]}}}),
        );
        assert!(check(&all_ns, &c, "n1").is_err(), "an empty namespace selector selects every namespace");
        let v1 = pod(serde_json::json!({"app": "web", "rev": "1"}), serde_json::json!({}));
        let c = cache(&[("n1", "a", vec![v1]), ("n2", "b", vec![])]);
        let v2 = pod(
            serde_json::json!({"app": "web", "rev": "2"}),
            serde_json::json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev"], "topologyKey": "zone"}]}}}),
        );
        assert!(check(&v2, &c, "n1").is_ok(), "matchLabelKeys: only pods of the same revision repel");
    }

    #[test]
    fn preferred_terms_pull_and_push() {
        let db = pod(serde_json::json!({"app": "db"}), serde_json::json!({}));
        let c = cache(&[("n1", "a", vec![db]), ("n2", "b", vec![web()]), ("n3", "c", vec![])]);
        let p = PodInfo::new(pod(
            serde_json::json!({"app": "web"}),
            serde_json::json!({"affinity": {
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                    "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5,
                    "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}}]}}}),
        ));
        let s = InterPodScore::new(&p, &c, &Namespaces::new());
        let mut raw: Vec<i64> = ["n1", "n2", "n3"].iter().map(|n| s.raw(c.node(n).expect("node"))).collect();
        assert_eq!(raw, vec![10, -5, 0]);
        normalize_min_max(&mut raw);
        assert_eq!(raw, vec![100, 0, 33]);
    }
}
