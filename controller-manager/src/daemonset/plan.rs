//! The pure decisions of a DaemonSet sync: which nodes need a daemon pod and which pods must go
//! (upstream's `manage` / `podsShouldBeOnNode`), which old pods a rolling update replaces now
//! (`rollingUpdate`, with maxUnavailable or maxSurge), and the status.
//!
//! Revisions are told apart by the `controller-revision-hash` label: an FNV-1a hash of the pod
//! template and the collision count (this apiserver serves no ControllerRevisions, so the hash
//! stands alone), and by `pod-template-generation` as upstream also accepts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::eligibility::{Fit, add_daemon_tolerations, node_should_run_daemon_pod};
use crate::pods;

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The hash naming the DaemonSet's current template revision.
pub fn template_hash(ds: &DaemonSet) -> String {
    let template = ds.spec.as_ref().map(|s| &s.template);
    crate::hash::template_hash(&template, ds.status.as_ref().and_then(|s| s.collision_count))
}

/// The annotation upstream's apiserver keeps on a DaemonSet: the generation its template last
/// changed at.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The generation the `pod-template-generation` label carries: the annotation where the
/// apiserver sets it, else the DaemonSet's generation (a pod created at the current generation
/// has the current template either way).
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    let annotation = ds.metadata.annotations.as_ref().and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION));
    annotation.and_then(|g| g.parse().ok()).or(ds.metadata.generation)
}

/// Whether `pod` runs the DaemonSet's current template (by hash or by template generation).
pub fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(REVISION_HASH_LABEL) == Some(hash)
        || generation.is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(g.to_string().as_str()))
}

/// The daemon pod spec as it would be created (the template plus the daemon tolerations), which
/// decides node eligibility.
pub fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

pub fn min_ready(ds: &DaemonSet) -> Duration {
    Duration::from_secs(ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0).max(0) as u64)
}

/// The node's fit for every node, by name.
pub fn fits(ds: &DaemonSet, nodes: &[Arc<Node>]) -> BTreeMap<String, Fit> {
    let spec = daemon_pod_spec(ds);
    nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), node_should_run_daemon_pod(&spec, n))).collect()
}

fn created(p: &Pod) -> Option<Timestamp> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first (then by name, for a stable order).
fn oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
}

/// What `manage` must do this sync.
#[derive(Debug, Default, PartialEq)]
pub struct Manage {
    /// Nodes to create a daemon pod on.
    pub create: Vec<String>,
    /// Pods to delete: surplus, on nodes they no longer belong on, or Succeeded.
    pub delete: Vec<Arc<Pod>>,
    /// Failed pods, by node: deleted (and so replaced) unless their node is backing off.
    pub failed: Vec<(String, Arc<Pod>)>,
}

impl Manage {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.failed.is_empty()
    }
}

/// Whether the DaemonSet rolls out with surge (new pod before the old one goes).
pub fn allows_surge(ds: &DaemonSet) -> bool {
    let Some(s) = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()) else { return false };
    s.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate"
        && s.rolling_update.as_ref().and_then(|r| r.max_surge.as_ref()).is_some_and(|v| match v {
            IntOrString::Int(n) => *n > 0,
            IntOrString::String(p) => p.trim_end_matches('%').parse::<i64>().is_ok_and(|n| n > 0),
        })
}

/// Upstream's manage: for each node, from the daemon pods on it (`by_node`, deleting pods
/// included), the pods to create and delete.
pub fn manage(
    fits: &BTreeMap<String, Fit>,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    generation: Option<i64>,
    surge: bool,
    min_ready: Duration,
    now: Timestamp,
) -> Manage {
    let mut plan = Manage::default();
    let none = Vec::new();
    for (node, fit) in fits {
        let pods = by_node.get(node).unwrap_or(&none);
        if fit.run && pods.is_empty() {
            plan.create.push(node.clone());
        } else if fit.keep {
            let mut running = Vec::new();
            for p in pods.iter().filter(|p| !pods::is_terminating(p)) {
                match pods::phase(p) {
                    "Failed" => plan.failed.push((node.clone(), p.clone())),
                    "Succeeded" => plan.delete.push(p.clone()),
                    _ => running.push(p.clone()),
                }
            }
            oldest_first(&mut running);
            if surge && running.len() > 1 {
                // Keep the oldest updated pod and, until it is available, the oldest old one.
                let new = running.iter().position(|p| is_updated(p, hash, generation));
                let keep_old = new.is_none_or(|i| !pods::is_available(&running[i], min_ready, now));
                let old = keep_old.then(|| running.iter().position(|p| !is_updated(p, hash, generation))).flatten();
                for (i, p) in running.iter().enumerate() {
                    if Some(i) != new && Some(i) != old {
                        plan.delete.push(p.clone());
                    }
                }
            } else {
                plan.delete.extend(running.into_iter().skip(1));
            }
        } else {
            plan.delete.extend(pods.iter().filter(|p| !pods::is_terminating(p)).cloned());
        }
    }
    // Pods still waiting for a node that is gone (bound ones are the pod GC's).
    for (node, pods) in by_node {
        if !fits.contains_key(node) {
            let unbound =
                |p: &&Arc<Pod>| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
            plan.delete.extend(pods.iter().filter(|p| !pods::is_terminating(p)).filter(unbound).cloned());
        }
    }
    plan
}

/// `value` (absolute or a percentage of `of`, rounded up) as a count.
fn scaled(value: Option<&IntOrString>, of: usize, default: usize) -> usize {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0) as usize,
        Some(IntOrString::String(p)) => {
            let pct = p.trim_end_matches('%').parse::<usize>().unwrap_or(0);
            (pct * of).div_ceil(100)
        }
    }
}

/// maxSurge and maxUnavailable as counts for `desired` nodes; both zero means one unavailable.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: usize) -> (usize, usize) {
    let rolling = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), desired, 0);
    let unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// What a rolling update step does: old pods to delete and (with surge) nodes to give a new pod.
#[derive(Debug, Default, PartialEq)]
pub struct Rolling {
    pub delete: Vec<Arc<Pod>>,
    pub create: Vec<String>,
}

/// A node's updated daemon pod and its old one, each if any.
type UpdatedAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// The updated and old daemon pods on a node, or `None` if it has more than one of either.
fn updated_and_old(pods: &[Arc<Pod>], hash: &str, generation: Option<i64>) -> Option<UpdatedAndOld> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| pods::is_active(p)) {
        let slot = if is_updated(p, hash, generation) { &mut new } else { &mut old };
        if slot.replace(p.clone()).is_some() {
            return None;
        }
    }
    Some((new, old))
}

/// Upstream's rollingUpdate over the nodes that have daemon pods: without surge, old
/// pods are deleted (unavailable ones at once, available ones while fewer than maxUnavailable
/// nodes are unavailable) and `manage` recreates them; with surge, new pods are created beside
/// old ones (within maxSurge) and an old pod goes once its node's new pod is available.
pub fn rolling_update(
    ds: &DaemonSet,
    fits: &BTreeMap<String, Fit>,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Rolling {
    let generation = template_generation(ds);
    let min_ready = min_ready(ds);
    let available = |p: &Pod| pods::is_available(p, min_ready, now);
    let desired = fits.values().filter(|f| f.run).count();
    let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired);
    // As upstream, the nodes that have daemon pods: `manage` has already given every node
    // that should run one its pod, and a node that may not get one must not hold the rollout.
    let nodes = by_node.iter();
    let mut plan = Rolling::default();
    if max_surge == 0 {
        let (mut unavailable, mut at_once, mut candidates) = (0, Vec::new(), Vec::new());
        for (_, pods) in nodes {
            match updated_and_old(pods, hash, generation) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => unavailable += usize::from(!available(&new)),
                Some((None, Some(old))) if !available(&old) => at_once.push(old),
                Some((None, Some(old))) => candidates.push(old),
            }
        }
        let room = max_unavailable.saturating_sub(unavailable).min(candidates.len());
        plan.delete = at_once;
        plan.delete.extend(candidates.into_iter().take(room));
    } else {
        let (mut surging, mut at_once, mut candidates) = (0, Vec::new(), Vec::new());
        for (node, pods) in nodes {
            match updated_and_old(pods, hash, generation) {
                None => surging += 1,
                Some((_, None)) => {}
                Some((None, Some(old))) if !available(&old) => at_once.push(node.clone()),
                Some((None, Some(_))) => candidates.push(node.clone()),
                Some((Some(new), Some(_))) if !available(&new) => surging += 1,
                Some((Some(_), Some(old))) => plan.delete.push(old),
            }
        }
        let room = max_surge.saturating_sub(surging).min(candidates.len());
        plan.create = at_once;
        plan.create.extend(candidates.into_iter().take(room));
    }
    plan
}

/// Upstream's status: per node that should run the pod, whether one is scheduled there and
/// whether the oldest is ready, available and updated; pods on other nodes are misscheduled
/// (pods on nodes that no longer exist are not counted).
pub fn calculate_status(
    ds: &DaemonSet,
    fits: &BTreeMap<String, Fit>,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = min_ready(ds);
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
    for (node, pods) in by_node {
        let mut pods: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| !(pods::is_terminating(p) && matches!(pods::phase(p), "Failed" | "Succeeded")))
            .cloned()
            .collect();
        if pods.is_empty() {
            continue;
        }
        let Some(fit) = fits.get(node) else { continue };
        if fit.run {
            current += 1;
            oldest_first(&mut pods);
            let oldest = &pods[0];
            if pods::is_ready(oldest) {
                ready += 1;
                available += i32::from(pods::is_available(oldest, min_ready, now));
            }
            updated += i32::from(is_updated(oldest, hash, template_generation(ds)));
        } else {
            misscheduled += 1;
        }
    }
    desired += fits.values().filter(|f| f.run).count() as i32;
    let old = ds.status.clone().unwrap_or_default();
    let nonzero = |n: i32| (n > 0).then_some(n);
    DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: nonzero(available),
        number_unavailable: nonzero(desired - available),
        updated_number_scheduled: nonzero(updated),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// A DaemonSet "ds" (generation 2) with this update strategy.
    pub fn daemon_set(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ds", "namespace": "ns", "uid": "ds-uid", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .expect("daemon set")
    }

    /// A daemon pod on `node` of revision `hash`, phase and readiness as given.
    pub fn daemon_pod(name: &str, node: &str, hash: &str, phase: &str, ready: bool, created: &str) -> Arc<Pod> {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "creationTimestamp": created, "labels": {"app": "web", REVISION_HASH_LABEL: hash}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase}
        });
        if ready {
            v["status"]["conditions"] =
                serde_json::json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{daemon_pod, daemon_set};
    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-01T00:01:00Z";

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().expect("time")
    }

    fn fits_of(nodes: &[(&str, bool, bool)]) -> BTreeMap<String, Fit> {
        nodes.iter().map(|(n, run, keep)| (n.to_string(), Fit { run: *run, keep: *keep })).collect()
    }

    fn by_node(pods: &[Arc<Pod>]) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut m: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            let node = super::super::eligibility::target_node(p).unwrap_or_default();
            m.entry(node.to_string()).or_default().push(p.clone());
        }
        m
    }

    /// The pod pinned to its node by affinity instead of bound to it.
    fn unbound(p: Arc<Pod>) -> Arc<Pod> {
        let mut p = (*p).clone();
        if let Some(s) = p.spec.as_mut() {
            let node = s.node_name.take().unwrap_or_default();
            super::super::eligibility::pin_to_node(s, &node);
        }
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or_default()).collect()
    }

    #[test]
    fn the_hash_changes_with_the_template_and_the_collision_count() {
        let a = daemon_set(serde_json::json!({}));
        let mut b = a.clone();
        assert_eq!(template_hash(&a), template_hash(&b));
        if let Some(s) = b.spec.as_mut() {
            s.template.metadata.get_or_insert_default().labels.get_or_insert_default().insert("v".into(), "2".into());
        }
        assert_ne!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c.status = Some(DaemonSetStatus { collision_count: Some(1), ..Default::default() });
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(template_hash(&a).chars().all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)));
    }

    #[test]
    fn a_pod_is_updated_by_its_hash_or_its_template_generation() {
        let mut ds = daemon_set(serde_json::json!({}));
        let h = template_hash(&ds);
        assert!(is_updated(&daemon_pod("p", "n", &h, "Running", true, T0), &h, template_generation(&ds)));
        let mut by_generation = (*daemon_pod("q", "n", "other", "Running", true, T0)).clone();
        by_generation.metadata.labels.get_or_insert_default().insert(TEMPLATE_GENERATION_LABEL.into(), "2".into());
        assert!(is_updated(&by_generation, &h, template_generation(&ds)));
        ds.metadata.annotations = Some([(TEMPLATE_GENERATION_ANNOTATION.to_string(), "1".to_string())].into());
        assert!(!is_updated(&by_generation, &h, template_generation(&ds)), "the annotation wins");
    }

    #[test]
    fn manage_creates_on_empty_eligible_nodes_and_deletes_surplus_and_misplaced_pods() {
        let pods = vec![
            daemon_pod("keep", "n2", "h", "Running", true, T0),
            daemon_pod("dup", "n2", "h", "Running", true, T1),
            daemon_pod("misplaced", "n3", "h", "Running", true, T0),
            daemon_pod("tolerated-stays", "n4", "h", "Running", true, T0),
            daemon_pod("node-gone-bound", "n9", "h", "Running", true, T0),
            unbound(daemon_pod("node-gone-unbound", "n8", "h", "Pending", false, T0)),
        ];
        let fits = fits_of(&[("n1", true, true), ("n2", true, true), ("n3", false, false), ("n4", false, true)]);
        let plan = manage(&fits, &by_node(&pods), "h", None, false, Duration::ZERO, now());
        assert_eq!(plan.create, ["n1"]);
        assert_eq!(names(&plan.delete), ["dup", "misplaced", "node-gone-unbound"], "bound pods are the pod GC's");
        assert!(plan.failed.is_empty());
    }

    #[test]
    fn failed_pods_are_reported_and_not_replaced_in_the_same_sync() {
        let pods = vec![
            daemon_pod("dead", "n1", "h", "Failed", false, T0),
            daemon_pod("done", "n2", "h", "Succeeded", false, T0),
        ];
        let fits = fits_of(&[("n1", true, true), ("n2", true, true)]);
        let plan = manage(&fits, &by_node(&pods), "h", None, false, Duration::ZERO, now());
        assert!(plan.create.is_empty(), "the replacement comes once the failed pod is gone");
        assert_eq!(
            plan.failed.iter().map(|(n, p)| (n.as_str(), p.metadata.name.as_deref())).collect::<Vec<_>>(),
            [("n1", Some("dead"))]
        );
        assert_eq!(names(&plan.delete), ["done"]);
    }

    #[test]
    fn with_surge_an_old_pod_stays_beside_its_new_pod_until_that_is_available() {
        let old = daemon_pod("old", "n1", "old", "Running", true, T0);
        let fits = fits_of(&[("n1", true, true)]);
        let unready = daemon_pod("new", "n1", "h", "Running", false, T1);
        let plan = manage(&fits, &by_node(&[old.clone(), unready]), "h", None, true, Duration::ZERO, now());
        assert!(plan.is_empty(), "{plan:?}");
        let ready = daemon_pod("new", "n1", "h", "Running", true, T1);
        let plan = manage(&fits, &by_node(&[old, ready]), "h", None, true, Duration::ZERO, now());
        assert_eq!(names(&plan.delete), ["old"]);
    }

    #[test]
    fn max_unavailable_is_absolute_or_a_percentage_rounded_up_and_never_both_zero() {
        let ds = |ru: serde_json::Value| daemon_set(serde_json::json!({"type": "RollingUpdate", "rollingUpdate": ru}));
        assert_eq!(surge_and_unavailable(&daemon_set(serde_json::json!({})), 10), (0, 1));
        assert_eq!(surge_and_unavailable(&ds(serde_json::json!({"maxUnavailable": 3})), 10), (0, 3));
        assert_eq!(surge_and_unavailable(&ds(serde_json::json!({"maxUnavailable": "25%"})), 10), (0, 3));
        assert_eq!(surge_and_unavailable(&ds(serde_json::json!({"maxUnavailable": 0, "maxSurge": "10%"})), 10), (1, 0));
        assert_eq!(surge_and_unavailable(&ds(serde_json::json!({"maxUnavailable": 0, "maxSurge": 0})), 10), (0, 1));
    }

    #[test]
    fn a_rolling_update_deletes_old_pods_within_max_unavailable_unavailable_ones_first() {
        let ds = daemon_set(serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}));
        let h = template_hash(&ds);
        let fits = fits_of(&[
            ("n1", true, true),
            ("n2", true, true),
            ("n3", true, true),
            ("n4", true, true),
            ("n5", true, true),
        ]);
        let pods = vec![
            daemon_pod("new-unready", "n1", &h, "Running", false, T1),
            daemon_pod("old-unready", "n2", "old", "Running", false, T0),
            daemon_pod("old-a", "n3", "old", "Running", true, T0),
            daemon_pod("old-b", "n4", "old", "Running", true, T0),
            daemon_pod("new-ready", "n5", &h, "Running", true, T1),
        ];
        let plan = rolling_update(&ds, &fits, &by_node(&pods), &h, now());
        // n1 is unavailable: one more old pod may go, besides the unavailable old one.
        assert_eq!(names(&plan.delete), ["old-unready", "old-a"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_tainted_node_without_a_daemon_pod_does_not_hold_the_rollout() {
        let ds = daemon_set(serde_json::json!({"type": "RollingUpdate"}));
        let h = template_hash(&ds);
        let fits = fits_of(&[("tainted", false, true), ("n2", true, true)]);
        let pods = vec![daemon_pod("old", "n2", "old", "Running", true, T0)];
        assert_eq!(names(&rolling_update(&ds, &fits, &by_node(&pods), &h, now()).delete), ["old"]);
    }

    #[test]
    fn a_rolling_update_waits_while_max_unavailable_nodes_are_down() {
        let ds = daemon_set(serde_json::json!({"type": "RollingUpdate"}));
        let h = template_hash(&ds);
        let fits = fits_of(&[("n1", true, true), ("n2", true, true)]);
        let pods = vec![
            daemon_pod("old", "n2", "old", "Running", true, T0),
            daemon_pod("new-starting", "n1", &h, "Pending", false, T1),
        ];
        assert!(rolling_update(&ds, &fits, &by_node(&pods), &h, now()).delete.is_empty(), "n1 is not available yet");
    }

    #[test]
    fn a_surge_rolling_update_creates_beside_old_pods_then_deletes_them() {
        let ds = daemon_set(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        );
        let h = template_hash(&ds);
        let fits = fits_of(&[("n1", true, true), ("n2", true, true), ("n3", true, true)]);
        let pods = vec![
            daemon_pod("old-1", "n1", "old", "Running", true, T0),
            daemon_pod("old-2", "n2", "old", "Running", true, T0),
            daemon_pod("old-3", "n3", "old", "Running", false, T0),
        ];
        let plan = rolling_update(&ds, &fits, &by_node(&pods), &h, now());
        assert_eq!(plan.create, ["n3", "n1"], "the unavailable node at once, then one within maxSurge");
        let mut pods = pods;
        pods.push(daemon_pod("new-1", "n1", &h, "Running", true, T1));
        let plan = rolling_update(&ds, &fits, &by_node(&pods), &h, now());
        assert_eq!(names(&plan.delete), ["old-1"]);
        assert_eq!(plan.create, ["n3", "n2"]);
    }

    #[test]
    fn status_counts_scheduled_misscheduled_ready_available_and_updated_nodes() {
        let mut ds = daemon_set(serde_json::json!({}));
        if let Some(s) = ds.spec.as_mut() {
            s.min_ready_seconds = Some(7200);
        }
        let h = template_hash(&ds);
        let fits = fits_of(&[("n1", true, true), ("n2", true, true), ("n3", true, true), ("n4", false, false)]);
        let pods = vec![
            daemon_pod("a", "n1", &h, "Running", true, T0),
            daemon_pod("b", "n2", "old", "Running", false, T0),
            daemon_pod("c", "n4", &h, "Running", true, T0),
        ];
        let s = calculate_status(&ds, &fits, &by_node(&pods), &h, now());
        assert_eq!((s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled), (3, 2, 1));
        assert_eq!(s.number_ready, 1);
        assert_eq!(s.number_available, None, "ready for one hour of the two needed");
        assert_eq!(s.number_unavailable, Some(3));
        assert_eq!(s.updated_number_scheduled, Some(1));
        assert_eq!(s.observed_generation, Some(2));
        ds.spec.as_mut().expect("spec").min_ready_seconds = None;
        let s = calculate_status(&ds, &fits, &by_node(&pods), &h, now());
        assert_eq!((s.number_available, s.number_unavailable), (Some(1), Some(2)));
    }
}
