//! The Eviction API with the disruption controller keeping PodDisruptionBudget status, as a
//! user of `kubectl drain` meets them: an eviction the budget does not allow is refused with
//! 429 until the budget is relaxed.

use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};

async fn ready_pod(pods: &Api<Pod>, name: &str) {
    let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"app": "guarded"}},
        "spec": {"containers": [{"name": "c", "image": "pause"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("pod");
    let now = jiff::Timestamp::now().to_string();
    let status = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("ready");
}

/// Posts an Eviction for `name` and returns the HTTP status (raw, as kubectl drain sends it:
/// kube-rs would retry a 429 itself).
async fn evict(c: &e2e::client::Client, name: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}});
    let r = c.post(&format!("/api/v1/namespaces/default/pods/{name}/eviction"), &body).await;
    (r.status, r.json())
}

#[tokio::test]
async fn c116_an_eviction_is_blocked_until_the_budget_is_updated_to_allow_it() {
    let h = crate::controllers::harness(&["disruption"]).await;
    let pods = h.pods();
    for name in ["g-0", "g-1", "g-2"] {
        ready_pod(&pods, name).await;
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({"metadata": {"name": "guard"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .expect("pdb");
    budgets.create(&PostParams::default(), &pdb).await.expect("pdb");
    let allowed = |n: i32| {
        let budgets = budgets.clone();
        async move {
            let s = budgets.get("guard").await.ok()?.status?;
            (s.observed_generation.is_some() && s.current_healthy == 3 && s.disruptions_allowed == n).then_some(())
        }
    };
    eventually(Duration::from_secs(10), "the budget observed with no disruption allowed", || allowed(0)).await;
    let c = h.api.client();
    let (code, status) = evict(&c, "g-0").await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (429, Some("TooManyRequests")),
        "minAvailable 3 of 3 refuses: {status}"
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert!(pods.get_opt("g-0").await.expect("get").is_some(), "the refused pod stays");

    // Relaxing the budget lets exactly one eviction through.
    budgets
        .patch("guard", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 2}})))
        .await
        .expect("relax");
    eventually(Duration::from_secs(10), "one disruption allowed", || allowed(1)).await;
    let (code, status) = evict(&c, "g-0").await;
    assert_eq!(code, 201, "the eviction is allowed now: {status}");
    eventually(Duration::from_secs(10), "g-0 gone", || async {
        pods.get_opt("g-0").await.ok()?.is_none_or(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    assert_eq!(evict(&c, "g-1").await.0, 429, "the budget's one disruption is spent");
}
