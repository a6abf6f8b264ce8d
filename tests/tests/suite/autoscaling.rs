//! The HorizontalPodAutoscaler controller in-process against the in-memory apiserver: bounds
//! enforced on the target, and a target without metrics left alone with a condition saying so
//! (there are no kubelets here, so the metrics API has nothing to serve). End to end, the real
//! binaries under real load: the kubelet's usage through `metrics.k8s.io` drives the autoscaler
//! up, and idleness brings it back down.

use std::time::{Duration, Instant};

use e2e::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};

use crate::controllers::Cluster;

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

/// One replica burning a core in a shell loop, limited to 200m so three of them stay gentle on a
/// shared machine: 200m used of 100m requested is 200 % against the HPA's 50 %.
const BURN: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "while :; do :; done"]
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
"#;

/// Polls `check` every `every` until it holds, failing after `timeout` with what was last seen.
async fn poll<T>(timeout: Duration, every: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The current percentage in `kubectl get hpa`'s TARGETS column (`cpu: 200%/50%`, or
/// `200%/50%` from older kubectl), when it shows one against 50 %.
fn targets_percent(table: &str) -> Option<i64> {
    let cell = table.split_whitespace().find(|w| w.ends_with("%/50%"))?;
    cell.strip_suffix("%/50%")?.parse().ok()
}

#[tokio::test]
async fn an_hpa_scales_a_deployment_up_under_real_cpu_load_and_back_down() {
    let started = Instant::now();
    let c = Cluster::start_with(&[
        "--horizontal-pod-autoscaler-sync-period=2s",
        "--horizontal-pod-autoscaler-downscale-stabilization=5s",
    ])
    .await;
    let cluster_up = started.elapsed();
    let cm_log = || c.cm.log();
    c.k.run_stdin(&["apply", "-f", "-"], BURN).ok();
    c.k.run(&["autoscale", "deployment/burn", "--cpu-percent=50", "--min=1", "--max=3"]).ok();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.client.clone(), "default");
    let created = hpas.get("burn").await.expect("kubectl autoscale made an HPA");
    let spec = created.spec.expect("spec");
    let metric = spec.metrics.as_ref().and_then(|m| m.first()).and_then(|m| m.resource.as_ref()).expect("cpu");
    assert_eq!(
        (spec.min_replicas, spec.max_replicas, metric.name.as_str(), metric.target.average_utilization),
        (Some(1), 3, "cpu", Some(50))
    );

    // The kubelet's usage reaches kubectl top through metrics.k8s.io: well above the request.
    let top = poll(Duration::from_secs(30), Duration::from_secs(1), "kubectl top pod to show the load", || {
        let out = c.k.run(&["top", "pod", "-l", "app=burn", "--no-headers"]);
        let milli = out.stdout.split_whitespace().nth(1).and_then(|v| v.strip_suffix('m')?.parse::<i64>().ok());
        match milli {
            Some(m) if m >= 100 => Ok(out.stdout),
            _ => Err(format!("{out:?}")),
        }
    })
    .await;
    let loaded = started.elapsed();

    // The autoscaler reads it and scales the Deployment up.
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let scaled_up = eventually(Duration::from_secs(30), "the Deployment scaled above 1", || async {
        let n = deployments.get("burn").await.ok()?.spec?.replicas?;
        (n > 1).then_some(n)
    })
    .await;
    let up = started.elapsed();
    let table = poll(Duration::from_secs(10), Duration::from_secs(1), "TARGETS above 50%", || {
        let out = c.k.run(&["get", "hpa", "burn"]);
        match targets_percent(&out.stdout) {
            Some(p) if p > 50 => Ok(out.stdout),
            _ => Err(out.stdout),
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let rescaled = events.list(&ListParams::default()).await.expect("events").items;
    assert!(
        rescaled.iter().any(|e| e.reason.as_deref() == Some("SuccessfulRescale")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("cpu resource utilization (percentage of request) above target"))),
        "a SuccessfulRescale event for the CPU: {rescaled:?}"
    );

    // Load stops: every pod now sleeps, and after the 5 s window the autoscaler scales back to 1.
    let idle = r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","command":["sleep","3600"]}]}}}}"#;
    c.k.run(&["patch", "deployment/burn", "-p", idle]).ok();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let d = deployments.get("burn").await.ok();
            if d.and_then(|d| d.spec?.replicas) == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let hpa = hpas.get("burn").await.expect("hpa");
    assert!(result.is_ok(), "not scaled back to 1; hpa: {:?}\ncontroller-manager log:\n{}", hpa.status, cm_log());
    let down = started.elapsed();
    // The window held: the scale down came at least 5 s after the scale up (event times are whole
    // seconds, hence 4).
    let rescales = events.list(&ListParams::default()).await.expect("events").items;
    let rescale_at = |size: i32| {
        let prefix = format!("New size: {size};");
        rescales
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("SuccessfulRescale")
                    && e.message.as_deref().is_some_and(|m| m.starts_with(&prefix))
            })
            .and_then(|e| e.last_timestamp.clone())
            .unwrap_or_else(|| panic!("a SuccessfulRescale event to {size}: {rescales:?}"))
            .0
    };
    let held = rescale_at(1).duration_since(rescale_at(scaled_up));
    assert!(held >= jiff::SignedDuration::from_secs(4), "scaled down {held:?} after scaling up");
    let shown = c.k.run(&["get", "hpa", "burn"]).ok().stdout;
    assert!(targets_percent(&shown).is_some_and(|p| p < 50), "{shown}");
    eprintln!(
        "cluster up {cluster_up:?}; load seen by kubectl top {loaded:?}; scaled to {scaled_up} at {up:?}; back to 1 at {down:?} ({held:?} after the scale up)\n{top}{table}{shown}"
    );
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
}
