//! PodTopologySpread: `DoNotSchedule` constraints filter, `ScheduleAnyway` ones score. Matching
//! pods are counted per domain once per cycle, over the nodes the constraint includes (the
//! pod's node affinity honoured and taints ignored by default, as upstream), so a node check is
//! one lookup.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::Cache;
use crate::framework::{NodeInfo, PodInfo};
use crate::interpod::{selector_matches, with_label_keys};
use crate::plugins::{MAX_SCORE, Misfit, node_affinity, taint_toleration};

struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: Option<i64>,
    selector: Option<LabelSelector>,
    honor_affinity: bool,
    honor_taints: bool,
    /// The pod itself matches the selector (it adds one to its domain).
    self_match: i64,
    /// Domain -> matching pods (domains without any may be left out).
    counts: HashMap<String, i64>,
    /// How many domains there are.
    domains: usize,
    /// The emptiest domain's count, once counted.
    min: i64,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &PodInfo) -> Constraint {
        let selector = c
            .label_selector
            .as_ref()
            .map(|s| with_label_keys(s, &pod.pod, c.match_label_keys.as_deref().unwrap_or_default(), "In"));
        let self_match = selector.as_ref().is_some_and(|s| selector_matches(s, pod.labels())) as i64;
        Constraint {
            key: c.topology_key.clone(),
            max_skew: c.max_skew as i64,
            min_domains: c.min_domains.map(i64::from),
            selector,
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            self_match,
            counts: HashMap::new(),
            domains: 0,
            min: 0,
        }
    }

    fn includes(&self, pod: &PodInfo, n: &NodeInfo) -> bool {
        (!self.honor_affinity || node_affinity(&pod.pod, n).is_ok())
            && (!self.honor_taints || taint_toleration(&pod.pod, n).is_ok())
    }

    fn matches(&self, pod: &PodInfo, p: &PodInfo) -> bool {
        !p.terminating()
            && p.namespace() == pod.namespace()
            && self.selector.as_ref().is_some_and(|s| selector_matches(s, p.labels()))
    }

    fn matching(&self, pod: &PodInfo, n: &NodeInfo) -> i64 {
        n.pods.iter().filter(|p| self.matches(pod, p)).count() as i64
    }

    /// The emptiest domain's count (0 while a domain has none, or there are fewer than
    /// minDomains).
    fn emptiest(&self) -> i64 {
        if self.min_domains.is_some_and(|m| (self.domains as i64) < m) || self.counts.len() < self.domains {
            return 0;
        }
        self.counts.values().copied().min().unwrap_or(0)
    }
}

/// One cycle's counts for one pod.
pub struct SpreadState {
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
}

fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
        .collect()
}

fn requires_node_affinity(pod: &PodInfo) -> bool {
    let spec = pod.pod.spec.as_ref();
    spec.and_then(|s| s.node_selector.as_ref()).is_some_and(|s| !s.is_empty())
        || spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|na| na.required_during_scheduling_ignored_during_execution.is_some())
}

/// Counts over every node that has all the constraints' keys and is included by each. When
/// every node with the key is included (one key, no node affinity to honour, taints ignored),
/// the domains come from the cache's label index and only the placed pods are visited, so a
/// cycle costs O(pods) rather than O(nodes).
fn count(cs: &mut [Constraint], pod: &PodInfo, cache: &Cache) {
    if cs.is_empty() {
        return;
    }
    let one_key = cs.iter().all(|c| c.key == cs[0].key);
    let every_node = cs.iter().all(|c| !(c.honor_taints || c.honor_affinity && requires_node_affinity(pod)));
    if one_key && every_node {
        for c in cs.iter_mut() {
            c.domains = cache.domains(&c.key).map_or(0, |d| d.len());
            for (n, p) in cache.placed_pods() {
                if c.matches(pod, p)
                    && let Some(d) = n.label(&c.key)
                    && cache.node(n.name()).is_some()
                {
                    add(&mut c.counts, d, 1);
                }
            }
            c.min = c.emptiest();
        }
        return;
    }
    for n in cache.nodes() {
        if !cs.iter().all(|c| n.label(&c.key).is_some()) {
            continue;
        }
        for c in cs.iter_mut() {
            if !c.includes(pod, n) {
                continue;
            }
            let m = c.matching(pod, n);
            if let Some(d) = n.label(&c.key) {
                add(&mut c.counts, d, m);
            }
        }
    }
    for c in cs.iter_mut() {
        c.domains = c.counts.len();
        c.min = c.emptiest();
    }
}

/// Adds to a domain's count, allocating its name only the first time.
fn add(counts: &mut HashMap<String, i64>, domain: &str, by: i64) {
    match counts.get_mut(domain) {
        Some(v) => *v += by,
        None => {
            counts.insert(domain.to_string(), by);
        }
    }
}

impl SpreadState {
    pub fn new(pod: &PodInfo, cache: &Cache) -> SpreadState {
        let mut hard = constraints(pod, "DoNotSchedule");
        let mut soft = constraints(pod, "ScheduleAnyway");
        count(&mut hard, pod, cache);
        count(&mut soft, pod, cache);
        SpreadState { hard, soft }
    }

    pub fn has_hard(&self) -> bool {
        !self.hard.is_empty()
    }

    pub fn has_soft(&self) -> bool {
        !self.soft.is_empty()
    }

    /// Placing the pod on `n` must keep (its domain's matching pods + 1) - (the emptiest
    /// domain's) within `maxSkew` for every `DoNotSchedule` constraint.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Misfit> {
        for c in &self.hard {
            let Some(domain) = n.label(&c.key) else {
                return Err(Misfit::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)".into(),
                ));
            };
            let here = c.counts.get(domain).copied().unwrap_or(0);
            if here + c.self_match - c.min > c.max_skew {
                return Err(Misfit::resolvable("node(s) didn't match pod topology spread constraints".into()));
            }
        }
        Ok(())
    }

    /// Raw `ScheduleAnyway` scores for the feasible nodes (lower is better; `None` for a node
    /// without the keys), then normalized as upstream: 100 x (max + min - s) / max.
    pub fn scores(&self, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
        let raw: Vec<Option<f64>> = feasible
            .iter()
            .map(|n| {
                let mut s = 0.0;
                for c in &self.soft {
                    let domain = n.label(&c.key)?;
                    let (count, domains) = if c.key == "kubernetes.io/hostname" {
                        (c.matching(pod, n), feasible.len())
                    } else {
                        (c.counts.get(domain).copied().unwrap_or(0), c.domains)
                    };
                    let weight = ((domains + 2) as f64).ln();
                    s += count as f64 * weight + (c.max_skew - 1) as f64;
                }
                Some(s)
            })
            .collect();
        let valid = raw.iter().flatten().copied();
        let max = valid.clone().fold(f64::MIN, f64::max).round() as i64;
        let min = valid.fold(f64::MAX, f64::min).round() as i64;
        raw.iter()
            .map(|s| match s {
                None => 0,
                Some(_) if max <= 0 => MAX_SCORE,
                Some(s) => MAX_SCORE * (max + min - s.round() as i64) / max,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{place, pod, web};
    use k8s_openapi::api::core::v1::Node;

    fn cache(nodes: &[(&str, Option<&str>, usize)]) -> Cache {
        let mut c = Cache::default();
        for (name, zone, webs) in nodes {
            let mut labels = serde_json::json!({"kubernetes.io/hostname": name});
            if let Some(z) = zone {
                labels["zone"] = serde_json::json!(z);
            }
            c.set_node(
                serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
                    .expect("node"),
            );
            for i in 0..*webs {
                place(&mut c, name, &web(), format!("{name}-{i}"));
            }
        }
        c
    }

    fn spread(when: &str, extra: serde_json::Value) -> PodInfo {
        let mut c = serde_json::json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        PodInfo::new(pod(serde_json::json!({"app": "web"}), serde_json::json!({"topologySpreadConstraints": [c]})))
    }

    #[test]
    fn do_not_schedule_keeps_the_skew() {
        let c = cache(&[("n1", Some("a"), 2), ("n2", Some("b"), 1), ("n3", Some("c"), 0), ("x", None, 0)]);
        let p = spread("DoNotSchedule", serde_json::json!({}));
        let s = SpreadState::new(&p, &c);
        let verdict = |n: &str| s.filter(c.node(n).expect("node")).map_err(|m| m.reasons[0].clone());
        assert!(verdict("n1").is_err(), "2+1-0 > 1");
        assert!(verdict("n2").is_err(), "1+1-0 > 1");
        assert!(verdict("n3").is_ok());
        assert_eq!(
            verdict("x"),
            Err("node(s) didn't match pod topology spread constraints (missing required label)".into())
        );
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let c = cache(&[("n1", Some("a"), 1), ("n2", Some("b"), 1)]);
        let plain = spread("DoNotSchedule", serde_json::json!({}));
        assert!(SpreadState::new(&plain, &c).filter(c.node("n1").expect("n1")).is_ok(), "1+1-1 <= 1");
        let three = spread("DoNotSchedule", serde_json::json!({"minDomains": 3}));
        assert!(SpreadState::new(&three, &c).filter(c.node("n1").expect("n1")).is_err(), "global min is 0");
    }

    #[test]
    fn node_affinity_limits_the_domains_counted() {
        let c = cache(&[("n1", Some("a"), 1), ("n2", Some("b"), 0)]);
        let mut p = spread("DoNotSchedule", serde_json::json!({}));
        p.pod.spec.get_or_insert_default().node_selector = Some([("zone".to_string(), "a".to_string())].into());
        let p = PodInfo::new(p.pod);
        let s = SpreadState::new(&p, &c);
        assert!(s.filter(c.node("n1").expect("n1")).is_ok(), "zone b is not a domain the pod could use");
        let ignore = spread("DoNotSchedule", serde_json::json!({"nodeAffinityPolicy": "Ignore"}));
        let mut ignore_pod = ignore.pod.clone();
        ignore_pod.spec.get_or_insert_default().node_selector = Some([("zone".to_string(), "a".to_string())].into());
        let s = SpreadState::new(&PodInfo::new(ignore_pod), &c);
        assert!(s.filter(c.node("n1").expect("n1")).is_err(), "with Ignore zone b counts (0)");
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let c = cache(&[("n1", Some("a"), 3), ("n2", Some("b"), 1), ("n3", Some("c"), 0), ("x", None, 0)]);
        let p = spread("ScheduleAnyway", serde_json::json!({}));
        let s = SpreadState::new(&p, &c);
        assert!(!s.has_hard() && s.has_soft());
        let nodes: Vec<&NodeInfo> = ["n1", "n2", "n3", "x"].iter().map(|n| c.node(n).expect("node")).collect();
        let scores = s.scores(&p, &nodes);
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[3], 0, "a node without the key scores nothing");
    }
}
