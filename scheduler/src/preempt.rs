//! DefaultPreemption's choice, pure: for a pod that fits nowhere, find on each node where
//! evicting pods could help the fewest, least important pods whose removal makes it fit
//! (keeping back every pod it can, those protected by a PodDisruptionBudget first), then pick
//! the node as upstream does: fewest budget violations, lowest highest victim priority,
//! smallest priority sum, fewest victims.
//!
//! The dry run checks the node-local filters (resources, ports, ...) on a copy of the node;
//! when inter-pod (anti-)affinity or topology spread can be what keeps the pod off, it runs every
//! filter against a scratch copy of the cache with the victims removed, so evicting a
//! lower-priority pod that the pod's anti-affinity (or an existing pod's) rules out helps too.

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::cache::Cache;
use crate::cycle::{Ctx, FitFailure, PreFilter};
use crate::framework::{NodeInfo, PodInfo};
use crate::interpod::selector_matches;
use crate::plugins::{NodeFilters, filter_node};

#[derive(Debug)]
pub struct Victims {
    pub node: String,
    pub pods: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// Upstream looks at no more candidates than this once it has some.
const MAX_CANDIDATES: usize = 100;

/// A pod may preempt unless its policy says never, or it already waits on a node where a
/// lower-priority pod is on its way out (its earlier preemption is still in progress).
pub fn eligible(pod: &PodInfo, ctx: &Ctx) -> bool {
    if pod.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return false;
    }
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
    match nominated.and_then(|n| ctx.cache.node(n)) {
        Some(n) => !n.pods.iter().any(|p| p.terminating() && p.priority < pod.priority),
        None => true,
    }
}

/// Disruptions each budget still allows, by budget, as its status says.
struct Budgets<'a> {
    pdbs: &'a [&'a PodDisruptionBudget],
    allowed: Vec<i64>,
}

impl<'a> Budgets<'a> {
    fn new(pdbs: &'a [&'a PodDisruptionBudget]) -> Self {
        let allowed =
            pdbs.iter().map(|p| p.status.as_ref().map(|s| s.disruptions_allowed as i64).unwrap_or(0)).collect();
        Budgets { pdbs, allowed }
    }

    fn matching(&self, p: &PodInfo) -> Vec<usize> {
        self.pdbs
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.metadata.namespace.as_deref() == Some(p.namespace())
                    && b.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| {
                        // As in upstream's preemption, an empty selector protects nothing.
                        (s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                            || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty()))
                            && selector_matches(s, p.labels())
                    })
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Evicting `p` would break a budget (and, if so, counts it).
    fn violates(&mut self, p: &PodInfo) -> bool {
        let mut broke = false;
        for i in self.matching(p) {
            self.allowed[i] -= 1;
            if self.allowed[i] < 0 {
                broke = true;
            }
        }
        broke
    }
}

/// A dry run on one node: take pods off, put them back, ask whether the pod fits.
trait Trial {
    fn remove(&mut self, p: &Arc<PodInfo>);
    fn add(&mut self, p: &Arc<PodInfo>);
    fn fits(&self) -> bool;
}

/// Node-local filters on a copy of the node.
struct NodeTrial<'a> {
    ctx: &'a Ctx<'a>,
    pod: &'a PodInfo,
    node: NodeInfo,
}

impl Trial for NodeTrial<'_> {
    fn remove(&mut self, p: &Arc<PodInfo>) {
        self.node.remove(&p.uid);
    }
    fn add(&mut self, p: &Arc<PodInfo>) {
        self.node.add(p.clone());
    }
    fn fits(&self) -> bool {
        filter_node(self.pod, &self.node, NodeFilters::new(|name| self.ctx.profile.filter_enabled(name))).is_ok()
    }
}

/// Every filter, against a scratch cache (the cluster-wide counts change with the victims).
struct ClusterTrial<'a> {
    ctx: &'a Ctx<'a>,
    pod: &'a PodInfo,
    scratch: &'a mut Cache,
    node: String,
}

impl Trial for ClusterTrial<'_> {
    fn remove(&mut self, p: &Arc<PodInfo>) {
        self.scratch.remove_pod(&p.uid);
    }
    fn add(&mut self, p: &Arc<PodInfo>) {
        self.scratch.assume(p.clone(), &self.node);
    }
    fn fits(&self) -> bool {
        let ctx = Ctx { cache: self.scratch, ..*self.ctx };
        let Some(n) = self.scratch.node(&self.node) else { return false };
        PreFilter::new(&ctx, self.pod).filter(&ctx, self.pod, n).is_ok()
    }
}

/// Whether inter-pod (anti-)affinity or topology spread can be what keeps `pod` off a node.
fn cluster_wide(ctx: &Ctx, pod: &PodInfo) -> bool {
    pod.has_affinity
        || pod.pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).is_some_and(|c| !c.is_empty())
        || ctx.cache.pods_with_required_anti_affinity().next().is_some()
}

/// The fewest pods to evict from the trial's node so that the pod fits, or none if evicting
/// every lower-priority pod would not be enough. The trial is left as it was found.
fn victims_on(
    trial: &mut impl Trial,
    node: &NodeInfo,
    pod: &PodInfo,
    pdbs: &[&PodDisruptionBudget],
) -> Option<Victims> {
    let mut lower: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
    if lower.is_empty() {
        return None;
    }
    for p in &lower {
        trial.remove(p);
    }
    if !trial.fits() {
        for p in &lower {
            trial.add(p);
        }
        return None;
    }
    // Most important first: higher priority, then the one that started earlier.
    let started = |p: &PodInfo| p.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| started(a).cmp(&started(b))));
    let mut budgets = Budgets::new(pdbs);
    let (protected, free): (Vec<_>, Vec<_>) = lower.into_iter().partition(|p| !budgets.matching(p).is_empty());
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    let guarded = protected.into_iter().map(|p| (p, true));
    for (p, is_guarded) in guarded.chain(free.into_iter().map(|p| (p, false))) {
        trial.add(&p);
        if trial.fits() {
            continue;
        }
        trial.remove(&p);
        if is_guarded && budgets.violates(&p) {
            pdb_violations += 1;
        }
        victims.push(p);
    }
    for p in &victims {
        trial.add(p);
    }
    Some(Victims { node: node.name().to_string(), pods: victims, pdb_violations })
}

/// Where to preempt, and whom.
pub fn select(ctx: &Ctx, pod: &PodInfo, failure: &FitFailure, pdbs: &[&PodDisruptionBudget]) -> Option<Victims> {
    let mut candidates: Vec<Victims> = Vec::new();
    // One scratch copy of the cache for every node's dry run, only when it matters.
    let mut scratch = cluster_wide(ctx, pod).then(|| ctx.cache.clone());
    for n in ctx.cache.nodes() {
        if failure.misfits.get(n.name()).is_some_and(|m| !m.resolvable) {
            continue;
        }
        let found = match scratch.as_mut() {
            Some(scratch) => {
                victims_on(&mut ClusterTrial { ctx, pod, scratch, node: n.name().to_string() }, n, pod, pdbs)
            }
            None => victims_on(&mut NodeTrial { ctx, pod, node: n.clone() }, n, pod, pdbs),
        };
        if let Some(v) = found.filter(|v| !v.pods.is_empty()) {
            candidates.push(v);
            if candidates.len() >= MAX_CANDIDATES {
                break;
            }
        }
    }
    let offset = |p: i32| p as i128 + (1i128 << 31);
    candidates.into_iter().min_by(|a, b| {
        let highest = |v: &Victims| v.pods.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
        let sum = |v: &Victims| v.pods.iter().map(|p| offset(p.priority)).sum::<i128>();
        a.pdb_violations
            .cmp(&b.pdb_violations)
            .then(highest(a).cmp(&highest(b)))
            .then(sum(a).cmp(&sum(b)))
            .then(a.pods.len().cmp(&b.pods.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::config::Profile;
    use crate::cycle::{Nominated, find_node};
    use k8s_openapi::api::core::v1::{Node, Pod};

    fn cluster(nodes: &[&str]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(
                serde_json::from_value::<Node>(serde_json::json!({"metadata": {"name": n},
                    "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
                .expect("node"),
            );
        }
        c
    }

    fn pod(name: &str, cpu: &str, priority: i32, app: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            serde_json::from_value::<Pod>(serde_json::json!({
                "metadata": {"name": name, "uid": name, "namespace": "d", "labels": {"app": app}},
                "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
            .expect("pod"),
        ))
    }

    fn run(c: &Cache, p: &PodInfo, pdbs: &[&PodDisruptionBudget]) -> Option<(String, Vec<String>, usize)> {
        let profile = Profile::default_named("default-scheduler");
        let nominated = Nominated::new();
        let ctx = Ctx {
            cache: c,
            profile: &profile,
            percentage: None,
            nominated: &nominated,
            namespaces: &Default::default(),
        };
        let failure = find_node(&ctx, p, &mut 0).expect_err("fits nowhere");
        let v = select(&ctx, p, &failure, pdbs)?;
        let mut names: Vec<String> = v.pods.iter().map(|p| p.uid.clone()).collect();
        names.sort();
        Some((v.node, names, v.pdb_violations))
    }

    #[test]
    fn evicting_a_pod_that_anti_affinity_rules_out_makes_room() {
        let mut c = Cache::default();
        c.set_node(
            serde_json::from_value::<Node>(
                serde_json::json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
            )
            .expect("node"),
        );
        let with_anti = |name: &str, priority: i32, app: &str, away_from: &str| {
            Arc::new(PodInfo::new(
                serde_json::from_value::<Pod>(serde_json::json!({
                    "metadata": {"name": name, "uid": name, "namespace": "d", "labels": {"app": app}},
                    "spec": {"priority": priority, "containers": [{"name": "c"}],
                        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                            {"labelSelector": {"matchLabels": {"app": away_from}}, "topologyKey": "kubernetes.io/hostname"}]}}}}))
                .expect("pod"),
            ))
        };
        // The incoming pod's own anti-affinity rules out the low-priority pod's node.
        c.assume(pod("blocker", "1", 1, "x"), "a");
        let high = with_anti("high", 10, "y", "x");
        assert_eq!(run(&c, &high, &[]), Some(("a".into(), vec!["blocker".into()], 0)));
        // An existing low-priority pod's anti-affinity rules the incoming pod out.
        let mut c2 = Cache::default();
        c2.set_node(
            serde_json::from_value::<Node>(
                serde_json::json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}),
            )
            .expect("node"),
        );
        c2.assume(with_anti("grumpy", 1, "x", "y"), "a");
        c2.assume(pod("bystander", "1", 1, "z"), "a");
        assert_eq!(
            run(&c2, &pod("high", "1", 10, "y"), &[]),
            Some(("a".into(), vec!["grumpy".into()], 0)),
            "only grumpy goes"
        );
    }

    #[test]
    fn the_fewest_least_important_pods_make_room() {
        let mut c = cluster(&["a", "b"]);
        for p in [pod("a-low", "2", 1, "x"), pod("a-mid", "2", 5, "x")] {
            c.assume(p, "a");
        }
        for p in [pod("b-low1", "1", 1, "x"), pod("b-low2", "1", 1, "x"), pod("b-mid", "2", 5, "x")] {
            c.assume(p, "b");
        }
        let high = pod("high", "2", 10, "y");
        // a: evict a-low (priority 1). b: evicting b-low1 and b-low2 (two pods of 1) also works,
        // but one victim beats two at the same highest priority.
        assert_eq!(run(&c, &high, &[]), Some(("a".into(), vec!["a-low".into()], 0)));
        let higher_needed = pod("big", "4", 10, "y");
        let (_, victims, _) = run(&c, &higher_needed, &[]).expect("preempts");
        assert_eq!(victims.len(), 2, "all of a node's pods: {victims:?}");
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let mut c = cluster(&["a"]);
        c.assume(pod("same", "4", 10, "x"), "a");
        assert_eq!(run(&c, &pod("p", "1", 10, "y"), &[]), None);
        let never = {
            let mut p = pod("never", "1", 100, "y").pod.clone();
            p.spec.get_or_insert_default().preemption_policy = Some("Never".into());
            PodInfo::new(p)
        };
        let profile = Profile::default_named("default-scheduler");
        let nominated = Nominated::new();
        let ctx = Ctx {
            cache: &c,
            profile: &profile,
            percentage: None,
            nominated: &nominated,
            namespaces: &Default::default(),
        };
        assert!(!eligible(&never, &ctx));
    }

    #[test]
    fn budgets_steer_preemption_to_unprotected_pods() {
        let mut c = cluster(&["a", "b"]);
        c.assume(pod("a-guarded", "4", 1, "guarded"), "a");
        c.assume(pod("b-plain", "4", 2, "plain"), "b");
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "g", "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}, "minAvailable": 1},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
        .expect("pdb");
        let high = pod("high", "2", 10, "y");
        assert_eq!(run(&c, &high, &[]), Some(("a".into(), vec!["a-guarded".into()], 0)), "lowest priority");
        assert_eq!(
            run(&c, &high, &[&pdb]),
            Some(("b".into(), vec!["b-plain".into()], 0)),
            "the budget outweighs priority"
        );
    }
}
