//! The controller-manager's controllers: component tests run them in-process against the
//! in-memory apiserver; end-to-end tests run the binary with kubelets and kubectl.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

/// The in-memory apiserver and the controllers named, in-process.
struct Harness {
    client: kube::Client,
    stop: CancellationToken,
    _api: e2e::server::InProcess,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn harness(controllers: &[&'static str]) -> Harness {
    let storage = Arc::new(apiserver::storage::memory::MemoryStorage::new());
    let api = e2e::server::InProcess::start_on("", Some(storage), |_| {}).await;
    let client = api.endpoint.kube_client().await;
    let flags = controller_manager::app::Flags::default();
    let stop = CancellationToken::new();
    let enabled: BTreeSet<&'static str> = controllers.iter().copied().collect();
    tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move { controller_manager::app::start(client, &flags, &enabled, stop).await }
    });
    Harness { client, stop, _api: api }
}

fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("replica set")
}

/// Waits until the set owns exactly `n` live pods and returns them.
async fn wait_owned(pods: &Api<Pod>, uid: &str, n: usize) -> Vec<Pod> {
    eventually(Duration::from_secs(20), &format!("{n} pods owned by the set"), || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let owned: Vec<Pod> = owned_by(&list, uid).into_iter().cloned().collect();
        (owned.len() == n).then_some(owned)
    })
    .await
}

#[tokio::test]
async fn a_replica_set_creates_scales_adopts_releases_and_reports_status() {
    let h = harness(&["replicaset"]).await;
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let rs = sets.create(&PostParams::default(), &replica_set("web", 3)).await.expect("create");
    let uid = rs.metadata.uid.clone().expect("uid");
    let created = wait_owned(&pods, &uid, 3).await;
    for p in &created {
        assert!(p.metadata.name.as_deref().is_some_and(|n| n.starts_with("web-")), "{:?}", p.metadata.name);
        assert_eq!(p.metadata.labels.as_ref().expect("labels")["app"], "web");
    }
    eventually(Duration::from_secs(10), "status.replicas 3", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.replicas == 3 && s.observed_generation == Some(1)).then_some(())
    })
    .await;

    // Readiness shows in the status.
    let ready = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let first = created[0].metadata.name.clone().expect("name");
    pods.patch_status(&first, &PatchParams::default(), &Patch::Merge(&ready)).await.expect("ready");
    eventually(Duration::from_secs(10), "readyReplicas 1, availableReplicas 1", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(1) && s.available_replicas == Some(1)).then_some(())
    })
    .await;

    // Scaling down deletes the unready pods first.
    sets.patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})))
        .await
        .expect("scale");
    let left = wait_owned(&pods, &uid, 1).await;
    assert_eq!(left[0].metadata.name.as_deref(), Some(first.as_str()), "the ready pod stays");

    // An orphan the selector matches is adopted (and, being one too many, a pod goes).
    let orphan: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &orphan).await.expect("orphan");
    eventually(Duration::from_secs(10), "the orphan adopted", || async {
        let p = pods.get_opt("stray").await.ok()?;
        // Adopted, then maybe deleted as the surplus: either way the set took it.
        match p {
            None => Some(()),
            Some(p) => owned_by(std::slice::from_ref(&p), &uid).first().map(|_| ()),
        }
    })
    .await;
    wait_owned(&pods, &uid, 1).await;

    // A pod relabelled out of the selector is released, and replaced.
    let current = wait_owned(&pods, &uid, 1).await;
    let name = current[0].metadata.name.clone().expect("name");
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "debug"}}})),
    )
    .await
    .expect("relabel");
    eventually(Duration::from_secs(10), "the relabelled pod released", || async {
        let p = pods.get(&name).await.ok()?;
        p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()).then_some(())
    })
    .await;
    let replacement = wait_owned(&pods, &uid, 1).await;
    assert_ne!(replacement[0].metadata.name.as_deref(), Some(name.as_str()));

    // Deleting the set with orphan propagation leaves its pods; nothing recreates them.
    sets.delete("web", &DeleteParams::orphan()).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pods.get_opt(replacement[0].metadata.name.as_deref().expect("name")).await.expect("get").is_some());
}

#[tokio::test]
async fn a_replica_set_records_successful_create_events() {
    let h = harness(&["replicaset"]).await;
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &replica_set("ev", 2)).await.expect("create");
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "two SuccessfulCreate events", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let n = list
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("SuccessfulCreate")
                    && e.involved_object.kind.as_deref() == Some("ReplicaSet")
                    && e.message.as_deref().is_some_and(|m| m.starts_with("Created pod: ev-"))
            })
            .count();
        (n == 2).then_some(())
    })
    .await;
}
