//! The pod garbage collector, every 20 s as upstream's:
//!
//! - pods bound to a node that no longer exists are deleted (after the node has been missing
//!   for one more round, so a node being re-registered is not raced);
//! - pods being deleted that were never scheduled are deleted at once (no kubelet will);
//! - finished pods (Succeeded/Failed) beyond `--terminated-pod-gc-threshold` are deleted,
//!   oldest first (0 turns this off).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use tokio_util::sync::CancellationToken;

use crate::informer::Informer;
use crate::pods;

/// Pure: the pods to delete, given the nodes that exist and those that were missing last round.
pub fn plan(
    all: &[Arc<Pod>],
    nodes: &HashSet<String>,
    missing_before: &HashSet<String>,
    threshold: usize,
) -> Vec<Arc<Pod>> {
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    let mut out: Vec<Arc<Pod>> = Vec::new();
    for p in all {
        let n = node(p);
        if n.is_empty() {
            if pods::is_terminating(p) {
                out.push(p.clone());
            }
        } else if !nodes.contains(&n) && missing_before.contains(&n) {
            out.push(p.clone());
        }
    }
    if threshold > 0 {
        let mut finished: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| matches!(pods::phase(p), "Succeeded" | "Failed") && !pods::is_terminating(p))
            .collect();
        if finished.len() > threshold {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let extra = finished.len() - threshold;
            for p in finished.into_iter().take(extra) {
                if !out.iter().any(|o| o.metadata.uid == p.metadata.uid) {
                    out.push(p.clone());
                }
            }
        }
    }
    out
}

pub struct PodGc {
    client: kube::Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    threshold: usize,
    missing: Mutex<HashSet<String>>,
}

impl PodGc {
    pub fn new(client: kube::Client, pods: &Informer<Pod>, nodes: &Informer<Node>, threshold: usize) -> Arc<PodGc> {
        Arc::new(PodGc { client, pods: pods.clone(), nodes: nodes.clone(), threshold, missing: Mutex::default() })
    }

    pub async fn run(self: Arc<Self>, period: Duration, stop: CancellationToken) {
        tokio::join!(self.pods.synced(), self.nodes.synced());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            self.round().await;
        }
    }

    async fn round(&self) {
        let nodes: HashSet<String> = self.nodes.list_all().iter().filter_map(|n| n.metadata.name.clone()).collect();
        let all = self.pods.list_all();
        let missing_before = self.missing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let victims = plan(&all, &nodes, &missing_before, self.threshold);
        let missing_now: HashSet<String> = all
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .filter(|n| !n.is_empty() && !nodes.contains(n))
            .collect();
        *self.missing.lock().unwrap_or_else(|e| e.into_inner()) = missing_now;
        for p in victims {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            match api.delete(name, &DeleteParams::default().grace_period(0)).await {
                Ok(_) => tracing::info!(pod = %name, namespace = %ns, "Garbage-collected a pod"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "Could not garbage-collect a pod"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, extra: serde_json::Value) -> Arc<Pod> {
        let mut meta = serde_json::json!({"name": name, "uid": name, "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len() % 10)});
        if let (Some(m), Some(e)) = (meta.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": meta,
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}}))
            .expect("pod"),
        )
    }

    fn names(v: Vec<Arc<Pod>>) -> Vec<String> {
        v.iter().filter_map(|p| p.metadata.name.clone()).collect()
    }

    #[test]
    fn orphaned_unscheduled_terminating_and_surplus_finished_pods_go() {
        let nodes: HashSet<String> = ["n1".to_string()].into();
        let all = vec![
            pod("fine", "n1", "Running", serde_json::json!({})),
            pod("orphan", "gone", "Running", serde_json::json!({})),
            pod("stuck", "", "Pending", serde_json::json!({"deletionTimestamp": "2026-01-01T00:00:00Z"})),
        ];
        assert_eq!(names(plan(&all, &nodes, &HashSet::new(), 0)), ["stuck"], "the node must be missing two rounds");
        let missing: HashSet<String> = ["gone".to_string()].into();
        assert_eq!(names(plan(&all, &nodes, &missing, 0)), ["orphan", "stuck"]);
        let done =
            vec![pod("a", "n1", "Succeeded", serde_json::json!({})), pod("bbb", "n1", "Failed", serde_json::json!({}))];
        assert_eq!(
            names(plan(&done, &nodes, &HashSet::new(), 1)),
            ["a"],
            "the oldest finished pod beyond the threshold"
        );
        assert!(plan(&done, &nodes, &HashSet::new(), 0).is_empty(), "0 turns it off");
    }
}
