//! What controllers read off pods: active or finished, ready and since when, available after
//! `minReadySeconds`; and the order in which upstream deletes surplus replicas.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Neither finished nor being deleted: counts toward replicas.
pub fn is_active(p: &Pod) -> bool {
    !matches!(phase(p), "Succeeded" | "Failed") && !is_terminating(p)
}

fn ready_condition(p: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

pub fn is_ready(p: &Pod) -> bool {
    ready_condition(p).is_some_and(|c| c.status == "True")
}

/// When the pod became ready (`None` if it is not).
pub fn ready_since(p: &Pod) -> Option<Timestamp> {
    ready_condition(p).filter(|c| c.status == "True").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
}

/// Ready for at least `min_ready` (upstream's IsPodAvailable).
pub fn is_available(p: &Pod, min_ready: Duration, now: Timestamp) -> bool {
    if !is_ready(p) {
        return false;
    }
    if min_ready.is_zero() {
        return true;
    }
    ready_since(p).is_some_and(|since| since + min_ready <= now)
}

/// How long until a ready pod becomes available (to requeue then), if it is not yet.
pub fn until_available(p: &Pod, min_ready: Duration, now: Timestamp) -> Option<Duration> {
    let since = ready_since(p)?;
    let at = since + min_ready;
    (at > now).then(|| Duration::try_from(at - now).unwrap_or_default())
}

fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten().map(|c| c.restart_count).sum()
}

fn created(p: &Pod) -> Option<Timestamp> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn node(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

/// Surplus pods to delete first, as upstream ranks them: not yet on a node; pending before
/// unknown before running; not ready before ready; more pods of the same owner on its node;
/// ready for less time; more restarts; newer.
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    let mut on_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        if !node(p).is_empty() {
            *on_node.entry(node(p).to_string()).or_default() += 1;
        }
    }
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let colocated = |p: &Pod| if node(p).is_empty() { 0 } else { on_node.get(node(p)).copied().unwrap_or(0) };
    pods.sort_by(|a, b| {
        (!node(a).is_empty())
            .cmp(&!node(b).is_empty())
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            .then_with(|| colocated(b).cmp(&colocated(a)))
            .then_with(|| match (ready_since(a), ready_since(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            })
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| created(b).cmp(&created(a)))
    });
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// A pod named `name` with this phase, node and readiness (ready since `ready_at`).
    pub fn pod(name: &str, phase: &str, node: &str, ready_at: Option<&str>) -> Arc<Pod> {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase}
        });
        if !node.is_empty() {
            v["spec"]["nodeName"] = serde_json::json!(node);
        }
        if let Some(at) = ready_at {
            v["status"]["conditions"] =
                serde_json::json!([{"type": "Ready", "status": "True", "lastTransitionTime": at}]);
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::pod;
    use super::*;

    #[test]
    fn surplus_pods_are_deleted_unscheduled_pending_unready_first() {
        let mut pods = vec![
            pod("running-ready-old", "Running", "n1", Some("2026-01-01T00:00:00Z")),
            pod("running-ready-new", "Running", "n2", Some("2026-01-01T01:00:00Z")),
            pod("running-unready", "Running", "n3", None),
            pod("pending-on-node", "Pending", "n4", None),
            pod("unscheduled", "Pending", "", None),
        ];
        deletion_order(&mut pods);
        let names: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect();
        assert_eq!(
            names,
            ["unscheduled", "pending-on-node", "running-unready", "running-ready-new", "running-ready-old"]
        );
    }

    #[test]
    fn doubled_up_nodes_lose_a_pod_first() {
        let at = Some("2026-01-01T00:00:00Z");
        let mut pods =
            vec![pod("alone", "Running", "n1", at), pod("a", "Running", "n2", at), pod("b", "Running", "n2", at)];
        deletion_order(&mut pods);
        assert_eq!(pods[2].metadata.name.as_deref(), Some("alone"));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", "Running", "n1", Some("2026-01-01T00:00:00Z"));
        let now: Timestamp = "2026-01-01T00:00:05Z".parse().expect("time");
        assert!(is_available(&p, Duration::ZERO, now));
        assert!(is_available(&p, Duration::from_secs(5), now));
        assert!(!is_available(&p, Duration::from_secs(10), now));
        assert_eq!(until_available(&p, Duration::from_secs(10), now), Some(Duration::from_secs(5)));
        assert!(!is_available(&pod("q", "Running", "n1", None), Duration::ZERO, now));
    }
}
