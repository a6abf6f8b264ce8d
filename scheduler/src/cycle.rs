//! One scheduling cycle for one pod, as upstream runs it: pre-compute the cluster-wide state
//! (inter-pod affinity, topology spread), filter nodes from a rotating start until enough fit
//! (percentageOfNodesToScore), score the feasible ones with each enabled plugin, normalize,
//! weigh, and pick the best (ties at random). Pure: the cache in, a node name or the reasons out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::Rng;

use crate::cache::Cache;
use crate::config::Profile;
use crate::framework::{NodeInfo, PodInfo};
use crate::interpod::{InterPodScore, InterPodState, Namespaces, normalize_min_max};
use crate::plugins::{
    Misfit, NodeFilters, balanced_allocation_score, filter_node, fit_error, image_locality_score, intolerable_taints,
    normalize, preferred_node_affinity, resources_fit_score,
};
use crate::spread::SpreadState;

/// Why no node fits: upstream's message and each node's verdict (for preemption).
#[derive(Debug)]
pub struct FitFailure {
    pub message: String,
    pub misfits: HashMap<String, Misfit>,
}

/// Pods nominated to nodes by preemption, waiting for their victims to go: node -> pods.
pub type Nominated = HashMap<String, Vec<Arc<PodInfo>>>;

/// Upstream's numFeasibleNodesToFind: all nodes below 100; else the configured percentage, or
/// 50% minus 1% per 125 nodes (at least 5%), but never fewer than 100 nodes.
pub fn feasible_to_find(total: usize, percentage: Option<u32>) -> usize {
    const MIN: usize = 100;
    if total < MIN {
        return total;
    }
    let pct = match percentage.unwrap_or(0) {
        0 => (50 - (total / 125) as i64).max(5) as usize,
        p => p as usize,
    };
    if pct >= 100 {
        return total;
    }
    (total * pct / 100).max(MIN)
}

pub struct Ctx<'a> {
    pub cache: &'a Cache,
    pub profile: &'a Profile,
    /// The configuration's percentageOfNodesToScore when the profile has none.
    pub percentage: Option<u32>,
    pub nominated: &'a Nominated,
    pub namespaces: &'a Namespaces,
}

/// The cluster-wide state the filters need for one pod.
pub struct PreFilter {
    pub interpod: Option<InterPodState>,
    pub spread: Option<SpreadState>,
    node: NodeFilters,
    spread_filter: bool,
}

impl PreFilter {
    pub fn new(ctx: &Ctx, pod: &PodInfo) -> PreFilter {
        let interpod = ctx
            .profile
            .filter_enabled("InterPodAffinity")
            .then(|| InterPodState::new(pod, ctx.cache, ctx.namespaces))
            .filter(|s| !s.is_empty());
        let spread = (ctx.profile.filter_enabled("PodTopologySpread")
            || ctx.profile.weight("PodTopologySpread").is_some())
        .then(|| SpreadState::new(pod, ctx.cache))
        .filter(|s| s.has_hard() || s.has_soft());
        PreFilter {
            interpod,
            spread,
            node: NodeFilters::new(|name| ctx.profile.filter_enabled(name)),
            spread_filter: ctx.profile.filter_enabled("PodTopologySpread"),
        }
    }

    /// Every filter for one node in upstream's order (the first failure is the node's reason).
    pub fn filter(&self, ctx: &Ctx, pod: &PodInfo, n: &NodeInfo) -> Result<(), Misfit> {
        self.local(ctx, pod, n)?;
        self.cluster(n)
    }

    /// The node-local filters. Pods nominated to the node with at least the pod's priority
    /// count as if they were there already.
    fn local(&self, ctx: &Ctx, pod: &PodInfo, n: &NodeInfo) -> Result<(), Misfit> {
        let ahead: Vec<&Arc<PodInfo>> = match ctx.nominated.is_empty() {
            true => Vec::new(),
            false => ctx
                .nominated
                .get(n.name())
                .into_iter()
                .flatten()
                .filter(|p| p.uid != pod.uid && p.priority >= pod.priority)
                .collect(),
        };
        if ahead.is_empty() {
            return filter_node(pod, n, self.node);
        }
        let mut with = n.clone();
        for p in ahead {
            with.add(p.clone());
        }
        filter_node(pod, &with, self.node)
    }

    /// The filters that read the cycle's cluster-wide counts: a lookup per node.
    fn cluster(&self, n: &NodeInfo) -> Result<(), Misfit> {
        if self.spread_filter
            && let Some(s) = &self.spread
        {
            s.filter(n)?;
        }
        if let Some(s) = &self.interpod {
            s.filter(n)?;
        }
        Ok(())
    }

    /// Whether the node passes every filter, the cheap cluster-wide lookups first (where a
    /// spread or affinity constraint rules out most nodes, most are rejected without the
    /// node-local filters). The verdict is [`PreFilter::filter`]'s; only the reason may differ.
    fn passes(&self, ctx: &Ctx, pod: &PodInfo, n: &NodeInfo) -> bool {
        self.cluster(n).is_ok() && self.local(ctx, pod, n).is_ok()
    }
}

/// Picks a node for `pod`. `start` is the rotating index where filtering begins; it advances
/// past the nodes this cycle looked at.
pub fn find_node(ctx: &Ctx, pod: &PodInfo, start: &mut usize) -> Result<String, FitFailure> {
    let total = ctx.cache.node_count();
    if total == 0 {
        return Err(FitFailure {
            message: "0/0 nodes are available: no nodes available to schedule pods.".into(),
            misfits: HashMap::new(),
        });
    }
    let pre = PreFilter::new(ctx, pod);
    let want = feasible_to_find(total, ctx.profile.percentage_of_nodes_to_score.or(ctx.percentage));
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut processed = 0;
    while processed < total && feasible.len() < want {
        let Some(n) = ctx.cache.node_at((*start + processed) % total) else { break };
        processed += 1;
        if pre.passes(ctx, pod, n) {
            feasible.push(n);
        }
    }
    *start = (*start + processed) % total;
    if feasible.is_empty() {
        // Every node was looked at and none fits: now say why, node by node, in upstream's order.
        let misfits: HashMap<String, Misfit> = ctx
            .cache
            .nodes()
            .filter_map(|n| pre.filter(ctx, pod, n).err().map(|m| (n.name().to_string(), m)))
            .collect();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for m in misfits.values() {
            for r in &m.reasons {
                *reasons.entry(r.to_string()).or_default() += 1;
            }
        }
        return Err(FitFailure { message: fit_error(total, &reasons), misfits });
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name().to_string());
    }
    let scores = score(ctx, &pre, pod, &feasible);
    let top = scores.iter().copied().max().unwrap_or(0);
    let ties: Vec<usize> = (0..feasible.len()).filter(|i| scores[*i] == top).collect();
    let pick = ties[rand::rng().random_range(0..ties.len())];
    Ok(feasible[pick].name().to_string())
}

/// Each enabled score plugin over the feasible nodes, normalized to 0..=100, weighed and summed.
pub fn score(ctx: &Ctx, pre: &PreFilter, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
    let mut total = vec![0i64; feasible.len()];
    let all = |f: &dyn Fn(&NodeInfo) -> i64| -> Vec<i64> { feasible.iter().map(|n| f(n)).collect() };
    for (plugin, weight) in &ctx.profile.scores {
        let scores = match *plugin {
            "NodeResourcesFit" => all(&|n| resources_fit_score(pod, n, &ctx.profile.fit)),
            "NodeResourcesBalancedAllocation" => all(&|n| balanced_allocation_score(pod, n)),
            "ImageLocality" => {
                let nodes = ctx.cache.node_count();
                all(&|n| image_locality_score(&pod.pod, n, &|i| ctx.cache.image_spread(i), nodes))
            }
            "TaintToleration" => {
                let mut s = all(&|n| intolerable_taints(&pod.pod, n));
                normalize(&mut s, true);
                s
            }
            "NodeAffinity" => {
                let mut s = all(&|n| preferred_node_affinity(&pod.pod, n));
                normalize(&mut s, false);
                s
            }
            "InterPodAffinity" => {
                let state = InterPodScore::new(pod, ctx.cache, ctx.namespaces);
                if state.is_empty() {
                    continue;
                }
                let mut s = all(&|n| state.raw(n));
                normalize_min_max(&mut s);
                s
            }
            "PodTopologySpread" => match &pre.spread {
                Some(s) if s.has_soft() => s.scores(pod, feasible),
                _ => continue,
            },
            _ => continue,
        };
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn how_many_nodes_a_cycle_looks_for() {
        assert_eq!(feasible_to_find(50, None), 50);
        assert_eq!(feasible_to_find(1000, None), 420, "50 - 1000/125 = 42%");
        assert_eq!(feasible_to_find(5000, None), 500, "50 - 40 = 10%");
        assert_eq!(feasible_to_find(6000, None), 300, "at least 5%");
        assert_eq!(feasible_to_find(1000, Some(5)), 100, "never fewer than 100");
        assert_eq!(feasible_to_find(1000, Some(100)), 1000);
    }

    fn cluster(n: usize) -> Cache {
        let mut c = Cache::default();
        for i in 0..n {
            c.set_node(
                serde_json::from_value::<Node>(serde_json::json!({
                    "metadata": {"name": format!("n{i}"), "labels": {"zone": format!("z{}", i % 3)}},
                    "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
                .expect("node"),
            );
        }
        c
    }

    fn pod(uid: &str, cpu: &str) -> PodInfo {
        PodInfo::new(
            serde_json::from_value::<Pod>(serde_json::json!({"metadata": {"name": uid, "uid": uid, "namespace": "d"},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
            .expect("pod"),
        )
    }

    fn ctx<'a>(cache: &'a Cache, profile: &'a Profile, nominated: &'a Nominated) -> Ctx<'a> {
        Ctx { cache, profile, percentage: None, nominated, namespaces: Box::leak(Box::default()) }
    }

    #[test]
    fn a_burst_of_assumed_pods_spreads_and_never_overcommits() {
        let mut c = cluster(300);
        let profile = Profile::default_named("default-scheduler");
        let nominated = Nominated::new();
        let mut start = 0;
        // 300 nodes x 4 cpu: 1200 pods of 1 cpu fit exactly; the next one does not.
        for i in 0..1200 {
            let p = Arc::new(pod(&format!("p{i}"), "1"));
            let node = find_node(&ctx(&c, &profile, &nominated), &p, &mut start).expect("fits");
            c.assume(p, &node);
        }
        for n in c.nodes() {
            assert_eq!(n.requested.get("cpu"), 4000, "{} is full, not over", n.name());
        }
        let err = find_node(&ctx(&c, &profile, &nominated), &pod("late", "1"), &mut start).expect_err("full");
        assert_eq!(err.message, "0/300 nodes are available: 300 Insufficient cpu.");
        assert_eq!(err.misfits.len(), 300);
        assert!(err.misfits.values().all(|m| m.resolvable));
    }

    #[test]
    fn the_emptiest_node_wins_and_nominated_pods_hold_their_place() {
        let mut c = cluster(3);
        for (i, node) in ["n0", "n1"].iter().enumerate() {
            c.assume(Arc::new(pod(&format!("old{i}"), "2")), node);
        }
        let profile = Profile::default_named("default-scheduler");
        let none = Nominated::new();
        let mut start = 0;
        assert_eq!(find_node(&ctx(&c, &profile, &none), &pod("p", "1"), &mut start).expect("fits"), "n2");
        let mut nominated = Nominated::new();
        let mut high = pod("high", "4");
        high.priority = 10;
        nominated.insert("n2".into(), vec![Arc::new(high)]);
        let got = find_node(&ctx(&c, &profile, &nominated), &pod("p", "1"), &mut start).expect("fits");
        assert_ne!(got, "n2", "n2's room is promised to a higher-priority pod");
    }

    #[test]
    fn a_node_failing_several_filters_is_reported_by_the_first_in_upstream_order() {
        // n0 (zone z0) is full and already has a matching pod, so both NodeResourcesFit and the
        // spread constraint reject it; the scan checks the spread first, the message must not.
        let mut c = cluster(3);
        let spreading = |uid: &str, cpu: &str| {
            PodInfo::new(
                serde_json::from_value::<Pod>(serde_json::json!({
                    "metadata": {"name": uid, "uid": uid, "namespace": "d", "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}))
                .expect("pod"),
            )
        };
        c.assume(Arc::new(spreading("full", "4")), "n0");
        c.assume(Arc::new(pod("busy1", "4")), "n1");
        c.assume(Arc::new(pod("busy2", "4")), "n2");
        let profile = Profile::default_named("default-scheduler");
        let none = Nominated::new();
        let err = find_node(&ctx(&c, &profile, &none), &spreading("p", "1"), &mut 0).expect_err("nothing fits");
        assert_eq!(err.message, "0/3 nodes are available: 3 Insufficient cpu.");
        assert!(err.misfits.values().all(|m| m.resolvable));
        // With room on n0 only the spread rejects it, and n1/n2 (zones without a web pod) fit.
        let mut c = cluster(3);
        c.assume(Arc::new(spreading("one", "1")), "n0");
        for _ in 0..20 {
            let got = find_node(&ctx(&c, &profile, &none), &spreading("p", "1"), &mut 0).expect("fits");
            assert_ne!(got, "n0", "zone z0 already has one more than the others");
        }
    }

    #[test]
    fn a_disabled_filter_does_not_filter() {
        let mut c = cluster(1);
        c.assume(Arc::new(pod("big", "4")), "n0");
        let mut profile = Profile::default_named("x");
        let none = Nominated::new();
        assert!(find_node(&ctx(&c, &profile, &none), &pod("p", "1"), &mut 0).is_err());
        profile.filters.retain(|f| *f != "NodeResourcesFit");
        assert_eq!(find_node(&ctx(&c, &profile, &none), &pod("p", "1"), &mut 0).expect("fits"), "n0");
    }
}
