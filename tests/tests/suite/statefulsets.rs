//! The StatefulSet controller in-process against the in-memory apiserver. No kubelet runs: the
//! tests mark pods Running and Ready by patching their status, by hand where order matters, or
//! through a tiny fake kubelet that readies every pod. Tests named `cNNN_` cover the conformance
//! ledger row of that id as far as it needs no real node.

use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::controllers::Harness;

/// The in-memory apiserver and the StatefulSet controller, in-process; with `kubelet`, a fake
/// kubelet readies every pod.
async fn harness(kubelet: bool) -> Harness {
    let h = crate::controllers::harness(&["statefulset"]).await;
    if kubelet {
        fake_kubelet(h.client.clone(), h.stop.clone());
    }
    h
}

/// Marks every live pod Running and Ready, as a kubelet would once its containers run.
fn fake_kubelet(client: kube::Client, stop: CancellationToken) {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        while !stop.is_cancelled() {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list.items {
                    if is_ready(&p) || p.metadata.deletion_timestamp.is_some() || phase(&p) == "Failed" {
                        continue;
                    }
                    let _ = set_ready(&pods, p.metadata.name.as_deref().unwrap_or_default(), true).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) -> Result<Pod, kube::Error> {
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": status, "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

fn stateful_set(name: &str, replicas: i32, image: &str, extra: serde_json::Value) -> StatefulSet {
    let mut v = serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": "nginx",
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, x) in extra {
            spec.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("stateful set")
}

/// The names of the live (not terminating) pods, sorted.
async fn live(pods: &Api<Pod>) -> Vec<String> {
    let mut names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

async fn wait_live(pods: &Api<Pod>, want: &[&str]) {
    eventually(Duration::from_secs(20), &format!("live pods {want:?}"), || async {
        (live(pods).await == want).then_some(())
    })
    .await;
}

/// Checks that the live pods stay `want` for a while (the controller is waiting).
async fn stays(pods: &Api<Pod>, want: &[&str]) {
    for _ in 0..10 {
        assert_eq!(live(pods).await, want);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.containers[0].image.clone()).unwrap_or_default()
}

fn revision(p: &Pod) -> String {
    p.metadata.labels.as_ref().and_then(|l| l.get("controller-revision-hash").cloned()).unwrap_or_default()
}

async fn set_image(sets: &Api<StatefulSet>, name: &str, image: &str) {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    sets.patch(name, &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("new image");
}

async fn patch_spec(sets: &Api<StatefulSet>, name: &str, spec: serde_json::Value) {
    sets.patch(name, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": spec }))).await.expect("patch");
}

/// Waits for the pods `web-0..n` to all run `image`, be ready, and returns them in order.
async fn rolled(pods: &Api<Pod>, set: &str, images: &[&str]) -> Vec<Pod> {
    eventually(Duration::from_secs(30), &format!("pods at images {images:?}"), || async {
        let mut out = Vec::new();
        for (i, want) in images.iter().enumerate() {
            let p = pods.get_opt(&format!("{set}-{i}")).await.ok()??;
            (p.metadata.deletion_timestamp.is_none() && image(&p) == *want && is_ready(&p)).then_some(())?;
            out.push(p);
        }
        Some(out)
    })
    .await
}

#[tokio::test]
async fn c141_ordered_ready_creates_pods_in_order_and_deletes_in_reverse_halting_while_one_is_unhealthy() {
    let h = harness(false).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 3, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");

    wait_live(&pods, &["web-0"]).await;
    stays(&pods, &["web-0"]).await;
    set_ready(&pods, "web-0", true).await.expect("ready");
    wait_live(&pods, &["web-0", "web-1"]).await;
    stays(&pods, &["web-0", "web-1"]).await;
    set_ready(&pods, "web-1", true).await.expect("ready");
    wait_live(&pods, &["web-0", "web-1", "web-2"]).await;
    set_ready(&pods, "web-2", true).await.expect("ready");

    // The stable identity: name, labels, hostname and subdomain, owner.
    let p = pods.get("web-1").await.expect("web-1");
    let labels = p.metadata.labels.clone().expect("labels");
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    let spec = p.spec.clone().expect("spec");
    assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-1"), Some("nginx")));
    let set = sets.get("web").await.expect("set");
    let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(Some(&owner.uid), set.metadata.uid.as_ref());

    let status = eventually(Duration::from_secs(10), "status: 3 ready", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3) && s.available_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!((status.replicas, status.current_replicas, status.updated_replicas), (3, Some(3), Some(3)));
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.update_revision.as_deref(), Some(revision(&p).as_str()));
    assert_eq!(status.observed_generation, Some(1));

    // Scaling down halts while a pod is unhealthy...
    set_ready(&pods, "web-0", false).await.expect("unready");
    // The controller has seen it (pods and sets are separate watches, so wait before scaling).
    eventually(Duration::from_secs(10), "status: 2 ready", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(())
    })
    .await;
    patch_spec(&sets, "web", serde_json::json!({"replicas": 1})).await;
    stays(&pods, &["web-0", "web-1", "web-2"]).await;
    // ...and then goes from the highest ordinal, one at a time.
    set_ready(&pods, "web-0", true).await.expect("ready");
    wait_live(&pods, &["web-0", "web-1"]).await;
    wait_live(&pods, &["web-0"]).await;

    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let messages = eventually(Duration::from_secs(10), "the create and delete events", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let m: Vec<String> = list.into_iter().filter_map(|e| e.message).collect();
        (m.iter().any(|m| m.starts_with("delete Pod web-1"))).then_some(m)
    })
    .await;
    assert!(messages.contains(&"create Pod web-0 in StatefulSet web successful".to_string()), "{messages:?}");
    assert!(messages.contains(&"delete Pod web-2 in StatefulSet web successful".to_string()), "{messages:?}");
}

#[tokio::test]
async fn c140_parallel_creates_and_deletes_all_pods_at_once_even_while_unready() {
    let h = harness(false).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let parallel = serde_json::json!({"podManagementPolicy": "Parallel"});
    sets.create(&PostParams::default(), &stateful_set("web", 3, "nginx:1", parallel)).await.expect("create");
    wait_live(&pods, &["web-0", "web-1", "web-2"]).await;
    patch_spec(&sets, "web", serde_json::json!({"replicas": 1})).await;
    wait_live(&pods, &["web-0"]).await;
    eventually(Duration::from_secs(10), "status.replicas 1", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.replicas == 1 && s.ready_replicas == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deleted_or_failed_pod_comes_back_with_its_name() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 2, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    let before = rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;

    pods.delete("web-1", &DeleteParams::default()).await.expect("delete");
    let after = rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    assert_ne!(after[1].metadata.uid, before[1].metadata.uid, "web-1 is a new pod");

    let failed = serde_json::json!({"status": {"phase": "Failed", "conditions": []}});
    pods.patch_status("web-0", &PatchParams::default(), &Patch::Merge(&failed)).await.expect("fail");
    let again = rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    assert_ne!(again[0].metadata.uid, after[0].metadata.uid, "web-0 is a new pod");

    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "a RecreatingFailedPod event", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter().any(|e| e.reason.as_deref() == Some("RecreatingFailedPod")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn c145_rolling_update_with_partition_updates_only_ordinals_at_or_above_it() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let strategy = serde_json::json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
    sets.create(&PostParams::default(), &stateful_set("web", 3, "nginx:1", strategy)).await.expect("create");
    let old = rolled(&pods, "web", &["nginx:1", "nginx:1", "nginx:1"]).await;

    set_image(&sets, "web", "nginx:2").await;
    let now = rolled(&pods, "web", &["nginx:1", "nginx:1", "nginx:2"]).await;
    assert_eq!(revision(&now[0]), revision(&old[0]));
    assert_ne!(revision(&now[2]), revision(&old[2]));
    let status = eventually(Duration::from_secs(10), "status: 1 updated", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.updated_replicas == Some(1) && s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.current_revision.as_deref(), Some(revision(&old[0]).as_str()));
    assert_eq!(status.update_revision.as_deref(), Some(revision(&now[2]).as_str()));
    assert_eq!(status.current_replicas, Some(2));
    stays(&pods, &["web-0", "web-1", "web-2"]).await;
    assert_eq!(image(&pods.get("web-1").await.expect("web-1")), "nginx:1", "below the partition");

    // A pod below the partition comes back at the current revision.
    pods.delete("web-0", &DeleteParams::default()).await.expect("delete");
    let back = rolled(&pods, "web", &["nginx:1", "nginx:1", "nginx:2"]).await;
    assert_ne!(back[0].metadata.uid, now[0].metadata.uid);
    assert_eq!(revision(&back[0]), revision(&old[0]));

    // Lowering the partition finishes the rollout; the current revision catches up.
    patch_spec(&sets, "web", serde_json::json!({"updateStrategy": {"rollingUpdate": {"partition": 0}}})).await;
    let done = rolled(&pods, "web", &["nginx:2", "nginx:2", "nginx:2"]).await;
    eventually(Duration::from_secs(10), "currentRevision = updateRevision", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.current_revision.as_deref() == Some(revision(&done[0]).as_str()) && s.current_replicas == Some(3))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn c146_rolling_update_replaces_pods_from_the_highest_and_reverting_is_the_old_revision() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 3, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    let old = rolled(&pods, "web", &["nginx:1", "nginx:1", "nginx:1"]).await;
    set_image(&sets, "web", "nginx:2").await;
    // Watched through the rollout, the updated pods are always the highest ordinals.
    eventually(Duration::from_secs(30), "all pods at nginx:2", || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let mut at: Vec<(String, bool)> = list
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), image(p) == "nginx:2"))
            .collect();
        at.sort();
        let first_updated = at.iter().position(|(_, updated)| *updated).unwrap_or(at.len());
        assert!(at[first_updated..].iter().all(|(_, updated)| *updated), "updated out of order: {at:?}");
        (at.len() == 3 && first_updated == 0).then_some(())
    })
    .await;
    rolled(&pods, "web", &["nginx:2", "nginx:2", "nginx:2"]).await;
    set_image(&sets, "web", "nginx:1").await;
    let back = rolled(&pods, "web", &["nginx:1", "nginx:1", "nginx:1"]).await;
    assert_eq!(revision(&back[0]), revision(&old[0]), "the reverted template is the first revision");
    eventually(Duration::from_secs(10), "status at the first revision", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.update_revision.as_deref() == Some(revision(&old[0]).as_str())
            && s.current_revision == s.update_revision
            && s.updated_replicas == Some(3))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn on_delete_updates_a_pod_only_when_it_is_deleted() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let strategy = serde_json::json!({"updateStrategy": {"type": "OnDelete"}});
    sets.create(&PostParams::default(), &stateful_set("web", 2, "nginx:1", strategy)).await.expect("create");
    rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    set_image(&sets, "web", "nginx:2").await;
    eventually(Duration::from_secs(10), "a new update revision", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.update_revision != s.current_revision && s.observed_generation == Some(2)).then_some(())
    })
    .await;
    stays(&pods, &["web-0", "web-1"]).await;
    rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    pods.delete("web-1", &DeleteParams::default()).await.expect("delete");
    rolled(&pods, "web", &["nginx:1", "nginx:2"]).await;
}

#[tokio::test]
async fn c143_the_scale_subresource_reports_and_changes_the_replicas() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 1, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    rolled(&pods, "web", &["nginx:1"]).await;
    let scale = sets.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let patch = serde_json::json!({"spec": {"replicas": 2}});
    sets.patch_scale("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch scale");
    rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    eventually(Duration::from_secs(10), "status.replicas 2 in the scale", || async {
        let s = sets.get_scale("web").await.ok()?;
        (s.status?.replicas == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_orphan_with_a_member_name_is_adopted_and_others_are_left_alone() {
    let h = harness(false).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    for name in ["web-0", "stray"] {
        let orphan: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &orphan).await.expect("orphan");
    }
    let set = sets
        .create(&PostParams::default(), &stateful_set("web", 1, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    let uid = set.metadata.uid.clone().expect("uid");
    eventually(Duration::from_secs(10), "web-0 adopted", || async {
        let p = pods.get("web-0").await.ok()?;
        p.metadata.owner_references?.iter().any(|r| r.uid == uid && r.controller == Some(true)).then_some(())
    })
    .await;
    stays(&pods, &["stray", "web-0"]).await;
    let stray = pods.get("stray").await.expect("stray");
    assert!(stray.metadata.owner_references.is_none_or(|r| r.is_empty()), "not a member by name");
}

#[tokio::test]
async fn ordered_ready_waits_min_ready_seconds_before_the_next_pod() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let slow = serde_json::json!({"minReadySeconds": 2});
    sets.create(&PostParams::default(), &stateful_set("web", 2, "nginx:1", slow)).await.expect("create");
    rolled(&pods, "web", &["nginx:1"]).await;
    let ready_at = std::time::Instant::now();
    let s = sets.get("web").await.expect("set").status.unwrap_or_default();
    assert_eq!(s.available_replicas.unwrap_or(0), 0, "ready, not yet available");
    rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    // Readiness times are kept to the second, so "2 s after" may be as little as just over 1 s.
    assert!(
        ready_at.elapsed() >= Duration::from_millis(900),
        "web-1 came {:?} after web-0 was ready",
        ready_at.elapsed()
    );
    eventually(Duration::from_secs(10), "2 available", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.available_replicas == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_lost_its_identity_label_gets_it_back() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 1, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    let before = rolled(&pods, "web", &["nginx:1"]).await;
    let strip = serde_json::json!({"metadata": {"labels": {"statefulset.kubernetes.io/pod-name": null}}});
    pods.patch("web-0", &PatchParams::default(), &Patch::Merge(&strip)).await.expect("strip");
    let p = eventually(Duration::from_secs(10), "the pod-name label back", || async {
        let p = pods.get("web-0").await.ok()?;
        let labels = p.metadata.labels.clone()?;
        (labels.get("statefulset.kubernetes.io/pod-name").map(String::as_str) == Some("web-0")).then_some(p)
    })
    .await;
    assert_eq!(p.metadata.uid, before[0].metadata.uid, "the same pod, not a new one");
}

#[tokio::test]
async fn c147_the_status_subresource_is_read_updated_and_patched_and_the_controller_keeps_conditions() {
    let h = harness(true).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &stateful_set("web", 1, "nginx:1", serde_json::json!({})))
        .await
        .expect("create");
    rolled(&pods, "web", &["nginx:1"]).await;
    eventually(Duration::from_secs(10), "ready in the status", || async {
        let s = sets.get_status("web").await.ok()?.status?;
        (s.ready_replicas == Some(1)).then_some(())
    })
    .await;
    let mut set = sets.get_status("web").await.expect("get status");
    let status = set.status.get_or_insert_with(Default::default);
    status.conditions = Some(vec![
        serde_json::from_value(serde_json::json!(
        {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}))
        .expect("condition"),
    ]);
    sets.replace_status("web", &PostParams::default(), &set).await.expect("update status");
    let patch = serde_json::json!({"status": {"conditions": [
        {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"},
        {"type": "StatusPatched", "status": "True"}]}});
    sets.patch_status("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch status");
    // A change that makes the controller write the status again.
    patch_spec(&sets, "web", serde_json::json!({"replicas": 2})).await;
    rolled(&pods, "web", &["nginx:1", "nginx:1"]).await;
    let s = eventually(Duration::from_secs(10), "status for 2 replicas", || async {
        let s = sets.get_status("web").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(s)
    })
    .await;
    let types: Vec<String> = s.conditions.unwrap_or_default().into_iter().map(|c| c.type_).collect();
    assert_eq!(types, ["StatusUpdate", "StatusPatched"]);
}

#[tokio::test]
async fn c144_stateful_sets_are_listed_by_label_patched_and_deleted_as_a_collection() {
    let h = harness(false).await;
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    for name in ["a", "b"] {
        let mut s = stateful_set(name, 0, "nginx:1", serde_json::json!({}));
        s.metadata.labels = Some([("e2e".to_string(), "sts".to_string())].into());
        sets.create(&PostParams::default(), &s).await.expect("create");
    }
    let by_label = ListParams::default().labels("e2e=sts");
    assert_eq!(sets.list(&by_label).await.expect("list").items.len(), 2);
    let patch = serde_json::json!({"metadata": {"labels": {"patched": "yes"}}});
    sets.patch("a", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    let patched = sets.list(&ListParams::default().labels("patched=yes")).await.expect("list").items;
    assert_eq!(patched.len(), 1);
    sets.delete_collection(&DeleteParams::default(), &by_label).await.expect("deletecollection");
    eventually(Duration::from_secs(10), "no sets left", || async {
        sets.list(&by_label).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}

/// Claims named `data-<set>-<n>`, as (name, phase, volume), sorted.
async fn claims(h: &Harness) -> Vec<(String, String, String)> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), "default");
    let mut out: Vec<(String, String, String)> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
            let volume = c.spec.and_then(|s| s.volume_name).unwrap_or_default();
            (c.metadata.name.unwrap_or_default(), phase, volume)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn volume_claim_templates_give_each_pod_its_own_bound_claim_deleted_on_scale_down_as_the_policy_says() {
    let dir = e2e::TempDir::new("hostpath-pv").expect("dir");
    let flags = controller_manager::app::Flags {
        enable_hostpath_provisioner: true,
        hostpath_provisioner_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let h =
        crate::controllers::harness_with(&["statefulset", "persistentvolume-binder", "garbagecollector"], flags).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let classes: Api<StorageClass> = Api::all(h.client.clone());
    let class = serde_json::json!({"metadata": {"name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "kubernetes.io/host-path"});
    classes.create(&PostParams::default(), &serde_json::from_value(class).expect("class")).await.expect("class");
    let sets: Api<StatefulSet> = Api::namespaced(h.client.clone(), "default");
    let set = stateful_set(
        "db",
        2,
        "httpd:1",
        serde_json::json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}),
    );
    sets.create(&PostParams::default(), &set).await.expect("create");

    // Each pod mounts its own claim; each claim is bound to a volume made for it.
    let bound = eventually(Duration::from_secs(20), "two bound claims", || async {
        let c = claims(&h).await;
        (c.len() == 2 && c.iter().all(|(_, phase, v)| phase == "Bound" && !v.is_empty())).then_some(c)
    })
    .await;
    assert_eq!(bound.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["data-db-0", "data-db-1"]);
    let pods = h.pods();
    let pod = eventually(Duration::from_secs(10), "db-1", || async { pods.get("db-1").await.ok() }).await;
    let volume = pod.spec.and_then(|s| s.volumes).unwrap_or_default().into_iter().find(|v| v.name == "data");
    assert_eq!(volume.and_then(|v| v.persistent_volume_claim).map(|c| c.claim_name).as_deref(), Some("data-db-1"));
    let volumes: Api<PersistentVolume> = Api::all(h.client.clone());
    let pv = volumes.get(&bound[1].2).await.expect("volume");
    let spec = pv.spec.clone().expect("spec");
    assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
    assert!(spec.host_path.expect("hostPath").path.starts_with(&dir.path().to_string_lossy().into_owned()));
    assert_eq!(pv.status.and_then(|s| s.phase).as_deref(), Some("Bound"));

    // whenScaled: Delete — the claim of the pod a scale-down removes goes with it, and its
    // volume (reclaim policy Delete) after it.
    sets.patch("db", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})))
        .await
        .expect("scale");
    eventually(Duration::from_secs(20), "data-db-1 and its volume gone", || async {
        let c = claims(&h).await;
        let gone = volumes.get_opt(&bound[1].2).await.ok()?.is_none();
        (c.len() == 1 && c[0].0 == "data-db-0" && gone).then_some(())
    })
    .await;

    // Scaling up again makes a new claim for ordinal 1; the kept claim of ordinal 0 is reused.
    sets.patch("db", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})))
        .await
        .expect("scale up");
    let again = eventually(Duration::from_secs(20), "two bound claims again", || async {
        let c = claims(&h).await;
        (c.len() == 2 && c.iter().all(|(_, phase, _)| phase == "Bound")).then_some(c)
    })
    .await;
    assert_eq!(again[0], bound[0], "ordinal 0 kept its claim and volume");

    // A claim nothing can serve stays Pending with an event saying why.
    let api: Api<PersistentVolumeClaim> = Api::namespaced(h.client.clone(), "default");
    let orphan: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({"metadata": {"name": "nowhere"},
        "spec": {"storageClassName": "missing", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .expect("claim");
    api.create(&PostParams::default(), &orphan).await.expect("claim");
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "a FailedBinding event", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedBinding") && e.involved_object.name.as_deref() == Some("nowhere")
            })
            .then_some(())
    })
    .await;
    assert_eq!(api.get("nowhere").await.expect("claim").status.and_then(|s| s.phase).as_deref(), Some("Pending"));
}
