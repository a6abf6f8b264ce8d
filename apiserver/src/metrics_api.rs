//! `metrics.k8s.io/v1beta1` (`kubectl top`, the autoscaler): node and pod usage, read on demand
//! from each node's kubelet (`/stats/summary`, with the apiserver's kubelet client certificate),
//! where upstream runs metrics-server behind the aggregator. Nodes whose kubelet does not answer
//! within a few seconds are left out, as metrics-server leaves out nodes it cannot scrape.
//!
//! A CPU rate needs two samples, so the kubelet has none for a container on its first scrape.
//! Nodes and pods without one are left out (as metrics-server leaves them out) rather than
//! reported at zero: the autoscaler treats a pod without metrics as missing (at target when
//! scaling down), but a pod at zero as idle, and would scale down on pods that just started.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::{BodyExt, Empty};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::handler::State;
use crate::rest::ListOptions;
use crate::selectors::Selectors;

async fn summary(tls: Arc<rustls::ClientConfig>, ip: String, port: u16) -> Result<Value, String> {
    let fetch = async {
        let mut sender = crate::podproxy::kubelet_connection(tls, &ip, port).await?;
        let req = Request::get("/stats/summary")
            .header("host", format!("{ip}:{port}"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("kubelet answered {}", resp.status()));
        }
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.map_err(|_| "timeout".to_string())?
}

/// The CPU rate, when the kubelet has one.
fn cpu(v: &Value) -> Option<String> {
    v["usageNanoCores"].as_u64().map(|n| format!("{n}n"))
}

fn memory(v: &Value) -> String {
    format!("{}Ki", v["workingSetBytes"].as_u64().unwrap_or(0) / 1024)
}

/// Every node's summary (those that answered), with the node object.
async fn summaries(state: &Arc<State>) -> ApiResult<Vec<(Value, Value)>> {
    let tls = state
        .kubelet_tls
        .clone()
        .ok_or_else(|| ApiError::ServiceUnavailable("no kubelet client certificate is configured".into()))?;
    let nodes_info =
        state.registry.by_plural("", "nodes").cloned().ok_or_else(|| ApiError::Internal("nodes".into()))?;
    let nodes = state
        .store
        .list(
            &nodes_info,
            "",
            &ListOptions {
                selectors: Selectors::default(),
                limit: 0,
                continue_token: None,
                resource_version: None,
                resource_version_match: None,
            },
        )
        .await?;
    let mut fetches = Vec::new();
    for item in nodes.items {
        let node = item.value()?;
        let address = crate::podproxy::kubelet_address(&node);
        if let Some((ip, port)) = address {
            let tls = tls.clone();
            fetches.push(async move { (node, summary(tls, ip, port).await) });
        }
    }
    let results = futures::future::join_all(fetches).await;
    Ok(results.into_iter().filter_map(|(n, s)| s.ok().map(|s| (n, s))).collect())
}

/// The node's metrics, or None until the kubelet has a CPU rate for it.
fn node_metrics(node: &Value, s: &Value) -> Option<Value> {
    let n = &s["node"];
    Some(json!({
        "metadata": {
            "name": node["metadata"]["name"],
            "creationTimestamp": node["metadata"]["creationTimestamp"],
            "labels": node["metadata"]["labels"],
        },
        "timestamp": n["cpu"]["time"],
        "window": "10s",
        "usage": {"cpu": cpu(&n["cpu"])?, "memory": memory(&n["memory"])},
    }))
}

/// The pod's metrics, or None until the kubelet has a CPU rate for every container.
fn pod_metrics(p: &Value) -> Option<Value> {
    let containers = p["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Some(json!({"name": c["name"], "usage": {"cpu": cpu(&c["cpu"])?, "memory": memory(&c["memory"])}})))
        .collect::<Option<Vec<_>>>()?;
    Some(json!({
        "metadata": {"name": p["podRef"]["name"], "namespace": p["podRef"]["namespace"], "creationTimestamp": p["startTime"]},
        "timestamp": p["cpu"]["time"],
        "window": "10s",
        "containers": containers,
    }))
}

/// GET/LIST of `nodes` and `pods` in metrics.k8s.io. `labels` filters by the object's labels
/// (pods: the pod's labels from the store).
pub async fn serve(
    state: &Arc<State>,
    plural: &str,
    ns: &str,
    name: Option<&str>,
    labels: &crate::selectors::LabelSelector,
) -> ApiResult<Value> {
    let all = summaries(state).await?;
    let items: Vec<Value> = if plural == "nodes" {
        all.iter().filter_map(|(n, s)| node_metrics(n, s)).filter(|m| labels.matches(m)).collect()
    } else {
        let pods_info =
            state.registry.by_plural("", "pods").cloned().ok_or_else(|| ApiError::Internal("pods".into()))?;
        let mut out = Vec::new();
        for (_, s) in &all {
            for p in s["pods"].as_array().cloned().unwrap_or_default() {
                let pns = p["podRef"]["namespace"].as_str().unwrap_or("");
                if !ns.is_empty() && pns != ns {
                    continue;
                }
                let Some(mut m) = pod_metrics(&p) else { continue };
                // Labels come from the pod object (the kubelet does not report them).
                if let Ok(kv) = state.store.get(&pods_info, pns, p["podRef"]["name"].as_str().unwrap_or("")).await
                    && let Ok(pod) = serde_json::from_slice::<Value>(&kv.value)
                {
                    m["metadata"]["labels"] = pod["metadata"]["labels"].clone();
                }
                if labels.matches(&m) {
                    out.push(m);
                }
            }
        }
        out
    };
    let kind = if plural == "nodes" { "NodeMetrics" } else { "PodMetrics" };
    if let Some(name) = name {
        let mut found = items.into_iter().find(|m| m["metadata"]["name"] == name).ok_or_else(|| {
            ApiError::NotFound { message: format!("{plural}.metrics.k8s.io \"{name}\" not found"), details: None }
        })?;
        found["kind"] = json!(kind);
        found["apiVersion"] = json!("metrics.k8s.io/v1beta1");
        return Ok(found);
    }
    Ok(json!({"kind": format!("{kind}List"), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, nanocores: Option<u64>) -> Value {
        let mut cpu = json!({"time": "2026-01-01T00:00:00Z", "usageCoreNanoSeconds": 5_000_000_000u64});
        if let Some(n) = nanocores {
            cpu["usageNanoCores"] = json!(n);
        }
        json!({"name": name, "cpu": cpu, "memory": {"workingSetBytes": 4096}})
    }

    fn pod(containers: Vec<Value>) -> Value {
        json!({"podRef": {"name": "p", "namespace": "ns"}, "cpu": {"time": "2026-01-01T00:00:00Z"}, "containers": containers})
    }

    #[test]
    fn pods_are_reported_only_once_every_container_has_a_cpu_rate() {
        let m = pod_metrics(&pod(vec![container("a", Some(200_000_000)), container("b", Some(0))])).expect("metrics");
        assert_eq!(m["containers"][0]["usage"], json!({"cpu": "200000000n", "memory": "4Ki"}));
        assert_eq!(m["containers"][1]["usage"]["cpu"], "0n", "an idle container is measured at zero");
        assert_eq!(pod_metrics(&pod(vec![container("a", Some(200_000_000)), container("b", None)])), None);
    }

    #[test]
    fn nodes_are_reported_only_once_they_have_a_cpu_rate() {
        let node = json!({"metadata": {"name": "n"}});
        let summary = |n: Option<u64>| json!({"node": container("n", n)});
        assert_eq!(node_metrics(&node, &summary(Some(5))).map(|m| m["usage"]["cpu"].clone()), Some(json!("5n")));
        assert_eq!(node_metrics(&node, &summary(None)), None);
    }
}
