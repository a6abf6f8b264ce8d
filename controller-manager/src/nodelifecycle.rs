//! Node lifecycle: a node whose kubelet stops renewing its Lease (and posting status) for
//! `--node-monitor-grace-period` has its conditions set to Unknown ("Kubelet stopped posting
//! node status."), its pods marked not ready, and a NodeNotReady event. Taints follow the
//! Ready condition: `node.kubernetes.io/not-ready` (False) or `node.kubernetes.io/unreachable`
//! (Unknown), NoSchedule and NoExecute. Pods on a node with a NoExecute taint they do not
//! tolerate are deleted at once; those tolerating it for `tolerationSeconds` are deleted when
//! that runs out (the apiserver gives every pod 300 s for these two taints).
//!
//! Staleness is judged by this controller's own clock: it notes when it last saw the
//! heartbeat change, so clock skew between nodes does not matter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::events::{Recorder, reference};
use crate::informer::Informer;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn ready_status(n: &Node) -> &str {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str())
}

/// Pure: the node's taints with the not-ready/unreachable ones matching its Ready condition.
pub fn taints_for(n: &Node, now: Timestamp) -> Vec<Taint> {
    let current = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let key = match ready_status(n) {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut out: Vec<Taint> = current.iter().filter(|t| t.key != NOT_READY && t.key != UNREACHABLE).cloned().collect();
    if let Some(k) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let kept = current.iter().find(|t| t.key == k && t.effect == effect).cloned();
            out.push(kept.unwrap_or_else(|| Taint {
                key: k.into(),
                effect: effect.into(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
                value: None,
            }));
        }
    }
    out
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match t.operator.as_deref() {
        Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    };
    effect_ok && key_ok
}

/// Pure: when a pod on a node with these taints must go: `Some(now)`-or-earlier at once,
/// `Some(t)` when its tolerations run out, `None` if it may stay.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        // Any toleration without a time tolerates it forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching.iter().filter_map(|t| t.toleration_seconds).min().unwrap_or(0).max(0);
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let due = added + Duration::from_secs(secs as u64);
        at = Some(at.map_or(due, |a: Timestamp| a.min(due)));
    }
    at
}

pub struct NodeLifecycleController {
    client: kube::Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    events: Recorder,
    grace: Duration,
    period: Duration,
    /// Node -> (last heartbeat seen, when this controller saw it change).
    seen: Mutex<HashMap<String, (Option<Timestamp>, Instant)>>,
}

impl NodeLifecycleController {
    pub fn new(
        client: kube::Client,
        nodes: &Informer<Node>,
        leases: &Informer<Lease>,
        pods: &Informer<Pod>,
        events: Recorder,
        grace: Duration,
        period: Duration,
    ) -> Arc<NodeLifecycleController> {
        Arc::new(NodeLifecycleController {
            client,
            nodes: nodes.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
            events,
            grace,
            period,
            seen: Mutex::default(),
        })
    }

    /// Looks at every node each `--node-monitor-period` until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
            for node in self.nodes.list_all() {
                if let Err(e) = self.monitor(&node).await {
                    tracing::warn!(node = ?node.metadata.name, error = %e, "Node monitoring failed; retrying");
                }
            }
        }
    }

    fn heartbeat(&self, n: &Node) -> Option<Timestamp> {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        let lease = self.leases.get("kube-node-lease", name).and_then(|l| l.spec.clone()?.renew_time).map(|t| t.0);
        let status = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        lease.max(status)
    }

    async fn monitor(&self, node: &Node) -> Result<(), kube::Error> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now();
        let beat = self.heartbeat(node);
        let stale = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let entry = seen.entry(name.clone()).or_insert((beat, Instant::now()));
            if entry.0 != beat {
                *entry = (beat, Instant::now());
            }
            entry.1.elapsed() > self.grace
        };
        if stale && ready_status(node) != "Unknown" {
            let conditions: Vec<NodeCondition> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .iter()
                .map(|t| {
                    let old = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == *t));
                    NodeCondition {
                        type_: t.to_string(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusUnknown".into()),
                        message: Some("Kubelet stopped posting node status.".into()),
                        last_heartbeat_time: old.and_then(|c| c.last_heartbeat_time.clone()),
                        last_transition_time: Some(Time(now)),
                    }
                })
                .collect();
            let patch = serde_json::json!({"status": {"conditions": conditions}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            tracing::info!(node = %name, "Node stopped posting status; marked Unknown");
            self.events.normal(reference(node), "NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
            self.mark_pods_not_ready(&name).await;
            return Ok(());
        }
        let taints = taints_for(node, now);
        if node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default() != taints {
            let patch = serde_json::json!({"spec": {"taints": taints}, "metadata": {"resourceVersion": node.metadata.resource_version}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.evict(&name, &taints, now).await;
        Ok(())
    }

    async fn mark_pods_not_ready(&self, node: &str) {
        for p in
            self.pods.list_all().iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready {
                continue;
            }
            let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "lastTransitionTime": Time(Timestamp::now())}]}});
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or_default());
            let _ = api
                .patch_status(
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await;
        }
    }

    async fn evict(&self, node: &str, taints: &[Taint], now: Timestamp) {
        if !taints.iter().any(|t| t.effect == "NoExecute") {
            return;
        }
        for p in
            self.pods.list_all().iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        {
            if p.metadata.deletion_timestamp.is_some() || eviction_time(p, taints, now).is_none_or(|at| at > now) {
                continue;
            }
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let condition = serde_json::json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": Time(now)}]}});
            let _ = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&condition)).await;
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    self.events.normal(
                        reference(p.as_ref()),
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{name}"),
                    );
                }
                Err(e) => tracing::warn!(pod = %name, error = %e, "Could not evict a pod"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
        .expect("node")
    }

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let keys = |ts: Vec<Taint>| ts.into_iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>();
        let user = serde_json::json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]);
        assert_eq!(keys(taints_for(&node("True", user.clone()), t0())), ["dedicated:NoSchedule"]);
        assert_eq!(
            keys(taints_for(&node("False", user.clone()), t0())),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        let unreachable = taints_for(&node("Unknown", serde_json::json!([])), t0());
        assert_eq!(
            keys(unreachable.clone()),
            ["node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
        );
        assert!(unreachable[1].time_added.is_some() && unreachable[0].time_added.is_none());
    }

    #[test]
    fn pods_go_when_their_tolerations_run_out() {
        let taint =
            Taint { key: UNREACHABLE.into(), effect: "NoExecute".into(), time_added: Some(Time(t0())), value: None };
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}),
            )
            .expect("pod")
        };
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        assert_eq!(
            eviction_time(&pod(serde_json::json!([])), std::slice::from_ref(&taint), now),
            Some(now),
            "not tolerated: at once"
        );
        let five_minutes = pod(
            serde_json::json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_time(&five_minutes, std::slice::from_ref(&taint), now),
            Some("2026-01-01T00:05:00Z".parse().expect("time"))
        );
        let forever = pod(serde_json::json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, &[taint], now), None);
    }
}
