//! The HorizontalPodAutoscaler controller in-process against the in-memory apiserver: bounds
//! enforced on the target, and a target without metrics left alone with a condition saying so
//! (there are no kubelets here, so the metrics API has nothing to serve).

use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};

/// The in-memory apiserver and the autoscaler, re-evaluating every second.
async fn start() -> crate::controllers::Harness {
    let flags = controller_manager::app::Flags {
        horizontal_pod_autoscaler_sync_period: Duration::from_secs(1),
        ..Default::default()
    };
    crate::controllers::harness_with(&["horizontalpodautoscaling"], flags).await
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m"}}}]}}}
    }))
    .expect("deployment")
}

fn hpa(min: i32, max: i32) -> HorizontalPodAutoscaler {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": min, "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}
    }))
    .expect("hpa")
}

fn condition(h: &HorizontalPodAutoscaler, t: &str) -> Option<(String, String)> {
    h.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn an_autoscaler_brings_a_target_above_its_maximum_down_to_it_and_says_so() {
    let h = start().await;
    let client = h.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment(5)).await.expect("deployment");
    hpas.create(&PostParams::default(), &hpa(1, 3)).await.expect("hpa");
    eventually(Duration::from_secs(20), "deployment scaled to 3", || async {
        (deployments.get("web").await.ok()?.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "hpa status", || async {
        let h = hpas.get("web").await.ok()?;
        let s = h.status.clone()?;
        (s.desired_replicas == 3
            && s.last_scale_time.is_some()
            && condition(&h, "AbleToScale") == Some(("True".into(), "SucceededRescale".into())))
        .then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually(Duration::from_secs(20), "SuccessfulRescale event", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .any(|e| {
                e.reason.as_deref() == Some("SuccessfulRescale")
                    && e.message.as_deref()
                        == Some("New size: 3; reason: Current number of replicas above Spec.MaxReplicas")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_autoscaler_without_metrics_reports_it_and_leaves_the_target_alone() {
    let h = start().await;
    let client = h.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    deployments.create(&PostParams::default(), &deployment(2)).await.expect("deployment");
    hpas.create(&PostParams::default(), &hpa(1, 10)).await.expect("hpa");
    eventually(Duration::from_secs(20), "ScalingActive False", || async {
        let h = hpas.get("web").await.ok()?;
        (condition(&h, "ScalingActive") == Some(("False".into(), "FailedGetResourceMetric".into()))
            && h.status?.current_replicas == Some(2))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deployments.get("web").await.expect("get").spec.and_then(|s| s.replicas), Some(2));
}
