//! `metrics.k8s.io/v1beta1` (`kubectl top`, the autoscaler): node and pod usage, read on demand
//! from each node's kubelet (`/stats/summary`, with the apiserver's kubelet client certificate),
//! where upstream runs metrics-server behind the aggregator. Nodes whose kubelet does not answer
//! within a few seconds are left out, as metrics-server leaves out nodes it cannot scrape.

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

fn cpu(v: &Value) -> String {
    format!("{}n", v["usageNanoCores"].as_u64().unwrap_or(0))
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

fn node_metrics(node: &Value, s: &Value) -> Value {
    let n = &s["node"];
    json!({
        "metadata": {
            "name": node["metadata"]["name"],
            "creationTimestamp": node["metadata"]["creationTimestamp"],
            "labels": node["metadata"]["labels"],
        },
        "timestamp": n["cpu"]["time"],
        "window": "10s",
        "usage": {"cpu": cpu(&n["cpu"]), "memory": memory(&n["memory"])},
    })
}

fn pod_metrics(p: &Value) -> Value {
    json!({
        "metadata": {"name": p["podRef"]["name"], "namespace": p["podRef"]["namespace"], "creationTimestamp": p["startTime"]},
        "timestamp": p["cpu"]["time"],
        "window": "10s",
        "containers": p["containers"].as_array().cloned().unwrap_or_default().iter().map(|c| json!({
            "name": c["name"],
            "usage": {"cpu": cpu(&c["cpu"]), "memory": memory(&c["memory"])},
        })).collect::<Vec<_>>(),
    })
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
        all.iter().map(|(n, s)| node_metrics(n, s)).filter(|m| labels.matches(m)).collect()
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
                let mut m = pod_metrics(&p);
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
