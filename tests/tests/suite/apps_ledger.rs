//! The sig-apps ledger rows about the workload APIs themselves: the scale and status
//! subresources of Deployments, ReplicaSets and ReplicationControllers, their lifecycles as a
//! watch sees them, and PodDisruptionBudget collections and status. Each test runs the in-process
//! apiserver with the controllers the row needs and `fake_kubelet` marking pods Ready; no row
//! here needs a real node, except C142: a kubelet rejecting a pod whose hostPort is taken, on the
//! real cluster ([`crate::controllers::Cluster`]).
//!
//! Elsewhere: C132 and C137 (replicas answering through `pods/{name}/proxy`) in `proxy.rs`. Not
//! covered: C138 needs ResourceQuota, which is not served.

use std::fmt::Debug;
use std::time::Duration;

use e2e::eventually;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;

use crate::controllers::{Cluster, deployment, fake_kubelet, harness, replica_set, rolled_out};

/// A watch on the objects carrying a label, from the moment it was opened.
struct Watch<K> {
    events: BoxStream<'static, kube::Result<WatchEvent<K>>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Added,
    Modified,
    Deleted,
}

impl<K> Watch<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    async fn open(api: &Api<K>, labels: &str) -> Watch<K> {
        let list = api.list(&ListParams::default().labels(labels)).await.expect("list before the watch");
        let rv = list.metadata.resource_version.unwrap_or_default();
        let events = api.watch(&WatchParams::default().labels(labels).timeout(120), &rv).await.expect("watch").boxed();
        Watch { events }
    }

    /// The first `seen` event from now on whose object passes `check`; panics naming `what`
    /// after 30 s.
    async fn until(&mut self, what: &str, seen: Seen, check: impl Fn(&K) -> bool) -> K {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = self.events.next().await {
                let (kind, obj) = match event.expect("watch event") {
                    WatchEvent::Added(o) => (Seen::Added, o),
                    WatchEvent::Modified(o) => (Seen::Modified, o),
                    WatchEvent::Deleted(o) => (Seen::Deleted, o),
                    WatchEvent::Bookmark(_) => continue,
                    WatchEvent::Error(e) => panic!("watch error while waiting for {what}: {e:?}"),
                };
                if kind == seen && check(&obj) {
                    return Some(obj);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(obj)) => obj,
            Ok(None) => panic!("the watch ended before {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Reads `/status`, changes it and writes it back with PUT, again on a conflict with a
/// controller's own write.
async fn update_status<K>(api: &Api<K>, name: &str, change: impl Fn(&mut K)) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
{
    eventually(Duration::from_secs(10), &format!("{name}'s status updated"), || async {
        let mut obj = api.get_status(name).await.expect("get status");
        change(&mut obj);
        match api.replace_status(name, &PostParams::default(), &obj).await {
            Ok(updated) => Some(updated),
            Err(kube::Error::Api(e)) if e.code == 409 => None,
            Err(e) => panic!("update {name}'s status: {e}"),
        }
    })
    .await
}

fn labelled<K: kube::Resource>(mut obj: K, labels: &[(&str, &str)]) -> K {
    let map = obj.meta_mut().labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        map.insert(k.to_string(), v.to_string());
    }
    obj
}

/// The `type`s of an object's `status.conditions`, in order.
fn conditions_of<K: serde::Serialize>(obj: &K) -> Vec<String> {
    let v = serde_json::to_value(obj).expect("json");
    let list = v["status"]["conditions"].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(|c| c["type"].as_str().map(str::to_string)).collect()
}

fn images(pods: &[Pod]) -> Vec<String> {
    let mut out: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn c107_the_deployment_scale_subresource_reports_replicas_and_resizes_it_by_update_and_patch() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("scaled", 1, "httpd:2", serde_json::json!({})))
        .await
        .expect("create");
    rolled_out(&deployments, "scaled", 1).await;

    let mut scale = deployments.get_scale("scaled").await.expect("get scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let status = scale.status.clone().expect("scale status");
    assert_eq!((status.replicas, status.selector.as_deref()), (1, Some("app=scaled")));

    scale.spec.get_or_insert_with(Default::default).replicas = Some(2);
    let updated = deployments.replace_scale("scaled", &PostParams::default(), &scale).await.expect("update scale");
    assert_eq!(updated.spec.and_then(|s| s.replicas), Some(2));
    let d = deployments.get("scaled").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(2), "the update resized the Deployment");
    rolled_out(&deployments, "scaled", 2).await;

    let patch = serde_json::json!({"spec": {"replicas": 4}});
    deployments.patch_scale("scaled", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch scale");
    let d = deployments.get("scaled").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(4), "the patch resized the Deployment");
    rolled_out(&deployments, "scaled", 4).await;
    let scale = deployments.get_scale("scaled").await.expect("get scale");
    assert_eq!(scale.status.map(|s| s.replicas), Some(4));
}

#[tokio::test]
async fn c113_a_deployment_is_patched_scaled_has_its_status_updated_and_patched_and_is_deleted_under_a_watch() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let mut watch = Watch::open(&deployments, "test-deployment-static=true").await;
    let d = labelled(deployment("life", 2, "httpd:2", serde_json::json!({})), &[("test-deployment-static", "true")]);
    deployments.create(&PostParams::default(), &d).await.expect("create");
    watch.until("the Deployment added", Seen::Added, |_| true).await;
    watch
        .until("2 ready replicas", Seen::Modified, |d| {
            d.status.as_ref().is_some_and(|s| s.ready_replicas == Some(2) && s.available_replicas == Some(2))
        })
        .await;

    // A patch to labels, replicas and image rolls out to one pod of the new image.
    let patch = serde_json::json!({
        "metadata": {"labels": {"test-deployment": "patched"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "pause:3"}]}}}});
    deployments.patch("life", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch");
    watch
        .until("the patch rolled out", Seen::Modified, |d| {
            let labels = d.metadata.labels.clone().unwrap_or_default();
            let s = d.status.clone().unwrap_or_default();
            labels.get("test-deployment").map(String::as_str) == Some("patched")
                && d.metadata.generation == s.observed_generation
                && (s.replicas, s.updated_replicas, s.available_replicas) == (Some(1), Some(1), Some(1))
        })
        .await;
    eventually(Duration::from_secs(20), "one pause pod left", || async {
        let list = pods.list(&ListParams::default().labels("app=life")).await.ok()?.items;
        (images(&list) == ["pause:3"]).then_some(())
    })
    .await;
    let listed = deployments.list(&ListParams::default().labels("test-deployment=patched")).await.expect("list");
    assert_eq!(listed.items.len(), 1, "listed by the patched label");

    // Scaled through the subresource.
    let patch = serde_json::json!({"spec": {"replicas": 2}});
    deployments.patch_scale("life", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale");
    watch
        .until("2 ready replicas after the scale", Seen::Modified, |d| {
            d.status.as_ref().is_some_and(|s| s.ready_replicas == Some(2) && s.available_replicas == Some(2))
        })
        .await;

    // Status: update, read, patch.
    update_status(&deployments, "life", |d| {
        let s = d.status.get_or_insert_with(Default::default);
        s.conditions.get_or_insert_with(Vec::new).push(
            serde_json::from_value(serde_json::json!(
                {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}))
            .expect("condition"),
        );
    })
    .await;
    watch
        .until("the StatusUpdate condition", Seen::Modified, |d| conditions_of(d).iter().any(|c| c == "StatusUpdate"))
        .await;
    let read = deployments.get_status("life").await.expect("get status");
    assert!(conditions_of(&read).iter().any(|c| c == "StatusUpdate"), "{:?}", conditions_of(&read));
    let patch = serde_json::json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    deployments.patch_status("life", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch status");
    watch
        .until("the StatusPatched condition", Seen::Modified, |d| {
            let types = conditions_of(d);
            types.iter().any(|c| c == "StatusPatched") && types.iter().any(|c| c == "StatusUpdate")
        })
        .await;

    deployments
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("test-deployment-static=true"))
        .await
        .expect("delete collection");
    watch.until("the Deployment deleted", Seen::Deleted, |d| d.metadata.name.as_deref() == Some("life")).await;
}

#[tokio::test]
async fn c114_deployment_status_is_read_updated_and_patched_and_later_reads_show_it() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("stat", 1, "httpd:2", serde_json::json!({})))
        .await
        .expect("create");
    rolled_out(&deployments, "stat", 1).await;
    let read = deployments.get_status("stat").await.expect("get status");
    assert_eq!(read.status.and_then(|s| s.ready_replicas), Some(1));

    let updated = update_status(&deployments, "stat", |d| {
        d.spec.as_mut().expect("spec").replicas = Some(5);
        let s = d.status.get_or_insert_with(Default::default);
        s.conditions.get_or_insert_with(Vec::new).push(
            serde_json::from_value(serde_json::json!(
                {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}))
            .expect("condition"),
        );
    })
    .await;
    assert_eq!(updated.spec.and_then(|s| s.replicas), Some(1), "a /status write leaves the spec");
    let read = deployments.get("stat").await.expect("get");
    assert!(conditions_of(&read).iter().any(|c| c == "StatusUpdate"), "{:?}", conditions_of(&read));
    let mut changed = read.clone();
    changed.status.as_mut().expect("status").conditions = None;
    let replaced = deployments.replace("stat", &PostParams::default(), &changed).await.expect("replace");
    assert!(conditions_of(&replaced).iter().any(|c| c == "StatusUpdate"), "a main-resource write leaves the status");

    let patch = serde_json::json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    deployments.patch_status("stat", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch status");
    let read = deployments.get_status("stat").await.expect("get status");
    let types = conditions_of(&read);
    assert!(types.iter().any(|c| c == "StatusPatched") && types.iter().any(|c| c == "StatusUpdate"), "{types:?}");

    // The controller writing its own status later keeps the foreign conditions.
    deployments
        .patch("stat", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})))
        .await
        .expect("scale");
    let d = rolled_out(&deployments, "stat", 2).await;
    let types = conditions_of(&d);
    assert!(types.iter().any(|c| c == "StatusPatched") && types.iter().any(|c| c == "StatusUpdate"), "{types:?}");
}

fn budget(name: &str, app: &str) -> PodDisruptionBudget {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"e2e": "pdb-collection"}},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}}))
    .expect("pdb")
}

#[tokio::test]
async fn c115_budgets_are_listed_across_namespaces_and_deleted_as_a_collection() {
    let h = harness(&["disruption"]).await;
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    for ns in ["pdb-a", "pdb-b"] {
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
        namespaces.create(&PostParams::default(), &obj).await.expect("namespace");
    }
    let in_a: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "pdb-a");
    let in_b: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "pdb-b");
    for name in ["one", "two", "three"] {
        in_a.create(&PostParams::default(), &budget(name, "x")).await.expect("pdb");
    }
    in_b.create(&PostParams::default(), &budget("other", "x")).await.expect("pdb");
    let unlabelled = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "plain"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}}}))
    .expect("pdb");
    in_a.create(&PostParams::default(), &unlabelled).await.expect("pdb");

    let everywhere: Api<PodDisruptionBudget> = Api::all(h.client.clone());
    let by_label = ListParams::default().labels("e2e=pdb-collection");
    let names = |list: Vec<PodDisruptionBudget>| {
        let mut v: Vec<String> = list
            .into_iter()
            .map(|b| format!("{}/{}", b.metadata.namespace.unwrap_or_default(), b.metadata.name.unwrap_or_default()))
            .collect();
        v.sort();
        v
    };
    let listed = names(everywhere.list(&by_label).await.expect("list").items);
    assert_eq!(listed, ["pdb-a/one", "pdb-a/three", "pdb-a/two", "pdb-b/other"]);

    in_a.delete_collection(&DeleteParams::default(), &by_label).await.expect("delete collection");
    let left = names(everywhere.list(&ListParams::default()).await.expect("list").items);
    assert_eq!(left, ["pdb-a/plain", "pdb-b/other"], "only pdb-a's labelled budgets went");
}

#[tokio::test]
async fn c119_budget_status_is_updated_and_patched() {
    let h = harness(&["disruption"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let pods = h.pods();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "guarded", "labels": {"app": "guarded"}},
        "spec": {"containers": [{"name": "c", "image": "httpd:2"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("pod");
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "default");
    budgets.create(&PostParams::default(), &budget("guard", "guarded")).await.expect("pdb");
    eventually(Duration::from_secs(10), "the budget counts the ready pod", || async {
        let s = budgets.get_status("guard").await.ok()?.status?;
        (s.observed_generation == Some(1) && s.current_healthy == 1 && s.disruptions_allowed == 0).then_some(())
    })
    .await;

    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let updated = update_status(&budgets, "guard", |b| {
        b.spec.as_mut().expect("spec").min_available = Some(IntOrString::Int(0));
        b.status.get_or_insert_with(Default::default).disrupted_pods =
            Some([("guarded".to_string(), now.clone())].into());
    })
    .await;
    let disrupted = |b: &PodDisruptionBudget| {
        b.status.as_ref().and_then(|s| s.disrupted_pods.clone()).unwrap_or_default().into_keys().collect::<Vec<_>>()
    };
    assert_eq!(disrupted(&updated), ["guarded"]);
    let min = updated.spec.and_then(|s| s.min_available);
    assert_eq!(min, Some(IntOrString::Int(1)), "a /status write leaves the spec");
    let read = budgets.get_status("guard").await.expect("get status");
    assert_eq!(disrupted(&read), ["guarded"], "the update is visible on a later read");

    let patch = serde_json::json!({"status": {"disruptedPods": {"guarded": null}}});
    let patched =
        budgets.patch_status("guard", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch status");
    assert!(disrupted(&patched).is_empty(), "{:?}", patched.status);
    let read = budgets.get_status("guard").await.expect("get status");
    assert!(disrupted(&read).is_empty(), "the patch is visible on a later read: {:?}", read.status);
    assert_eq!(read.status.map(|s| s.current_healthy), Some(1), "the controller's fields stay");
}

#[tokio::test]
async fn c128_a_replica_set_runs_its_pod_is_replaced_to_two_and_patched() {
    let h = harness(&["replicaset"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let pods = h.pods();
    let mut watch = Watch::open(&sets, "test-rs=e2e").await;
    sets.create(&PostParams::default(), &labelled(replica_set("rs", 1), &[("test-rs", "e2e")])).await.expect("create");
    let ready = |n: i32| {
        move |rs: &ReplicaSet| rs.status.as_ref().is_some_and(|s| s.ready_replicas == Some(n) && s.replicas == n)
    };
    watch.until("1 ready replica", Seen::Modified, ready(1)).await;

    let mut rs = sets.get("rs").await.expect("get");
    rs.spec.as_mut().expect("spec").replicas = Some(2);
    let replaced = sets.replace("rs", &PostParams::default(), &rs).await.expect("replace");
    assert_eq!(replaced.spec.and_then(|s| s.replicas), Some(2));
    watch.until("2 ready replicas", Seen::Modified, ready(2)).await;

    let patch = serde_json::json!({
        "metadata": {"labels": {"test-rs-patched": "true"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "pause:3"}]}}}});
    sets.patch("rs", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch");
    let seen = watch
        .until("the patch with 3 ready replicas", Seen::Modified, |rs| {
            rs.metadata.labels.as_ref().is_some_and(|l| l.contains_key("test-rs-patched")) && ready(3)(rs)
        })
        .await;
    let image = seen.spec.and_then(|s| s.template?.spec?.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("pause:3"));
    // A ReplicaSet does not replace its running pods for a new template; the third pod is new.
    let list = pods.list(&ListParams::default().labels("app=rs")).await.expect("pods").items;
    assert_eq!(images(&list), ["busybox", "busybox", "pause:3"]);
}

#[tokio::test]
async fn c129_the_replica_set_scale_subresource_reports_replicas_and_resizes_it_by_update_and_patch() {
    let h = harness(&["replicaset"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &replica_set("sc", 1)).await.expect("create");
    let ready = |n: i32| {
        let sets = sets.clone();
        async move {
            eventually(Duration::from_secs(20), &format!("{n} ready replicas"), || async {
                let s = sets.get("sc").await.ok()?.status?;
                (s.replicas == n && s.ready_replicas == Some(n)).then_some(())
            })
            .await
        }
    };
    ready(1).await;
    let mut scale = sets.get_scale("sc").await.expect("get scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let status = scale.status.clone().expect("scale status");
    assert_eq!((status.replicas, status.selector.as_deref()), (1, Some("app=sc")));

    scale.spec.get_or_insert_with(Default::default).replicas = Some(2);
    sets.replace_scale("sc", &PostParams::default(), &scale).await.expect("update scale");
    match sets.replace_scale("sc", &PostParams::default(), &scale).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        other => panic!("a scale update at a stale resourceVersion must conflict: {other:?}"),
    }
    let rs = sets.get("sc").await.expect("get");
    assert_eq!(rs.spec.and_then(|s| s.replicas), Some(2), "the update resized the ReplicaSet");
    ready(2).await;

    let patch = serde_json::json!({"spec": {"replicas": 4}});
    sets.patch_scale("sc", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch scale");
    let rs = sets.get("sc").await.expect("get");
    assert_eq!(rs.spec.and_then(|s| s.replicas), Some(4), "the patch resized the ReplicaSet");
    ready(4).await;
    let scale = sets.get_scale("sc").await.expect("get scale");
    assert_eq!(scale.status.map(|s| s.replicas), Some(4));
}

#[tokio::test]
async fn c131_replica_sets_are_listed_by_label_and_deleted_as_a_collection() {
    let h = harness(&["replicaset"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let mut watch = Watch::open(&sets, "e2e=rs-collection").await;
    for name in ["first", "second"] {
        let rs = labelled(replica_set(name, 1), &[("e2e", "rs-collection")]);
        sets.create(&PostParams::default(), &rs).await.expect("create");
    }
    sets.create(&PostParams::default(), &replica_set("kept", 1)).await.expect("create");
    let by_label = ListParams::default().labels("e2e=rs-collection");
    eventually(Duration::from_secs(20), "both labelled sets ready", || async {
        let list = sets.list(&by_label).await.ok()?.items;
        let ready = list.iter().filter(|rs| rs.status.as_ref().is_some_and(|s| s.ready_replicas == Some(1)));
        (ready.count() == 2).then_some(())
    })
    .await;
    let mut listed: Vec<String> =
        sets.list(&by_label).await.expect("list").items.into_iter().filter_map(|rs| rs.metadata.name).collect();
    listed.sort();
    assert_eq!(listed, ["first", "second"]);

    sets.delete_collection(&DeleteParams::default(), &by_label).await.expect("delete collection");
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let rs = watch.until("a labelled set deleted", Seen::Deleted, |_| true).await;
        deleted.push(rs.metadata.name.unwrap_or_default());
    }
    deleted.sort();
    assert_eq!(deleted, ["first", "second"]);
    assert!(sets.list(&by_label).await.expect("list").items.is_empty());
    assert!(sets.get_opt("kept").await.expect("get").is_some(), "an unlabelled set stays");
}

#[tokio::test]
async fn c133_replica_set_status_is_read_updated_and_patched_and_later_reads_show_it() {
    let h = harness(&["replicaset"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    sets.create(&PostParams::default(), &replica_set("st", 1)).await.expect("create");
    eventually(Duration::from_secs(20), "1 ready replica", || async {
        (sets.get_status("st").await.ok()?.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;

    let updated = update_status(&sets, "st", |rs| {
        rs.spec.as_mut().expect("spec").replicas = Some(5);
        let s = rs.status.get_or_insert_with(Default::default);
        s.conditions.get_or_insert_with(Vec::new).push(
            serde_json::from_value(serde_json::json!(
                {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}))
            .expect("condition"),
        );
    })
    .await;
    assert_eq!(updated.spec.and_then(|s| s.replicas), Some(1), "a /status write leaves the spec");
    let read = sets.get("st").await.expect("get");
    assert_eq!(conditions_of(&read), ["StatusUpdate"]);
    let mut changed = read.clone();
    changed.status.as_mut().expect("status").conditions = None;
    let replaced = sets.replace("st", &PostParams::default(), &changed).await.expect("replace");
    assert_eq!(conditions_of(&replaced), ["StatusUpdate"], "a main-resource write leaves the status");

    let patch = serde_json::json!({"status": {"conditions": [{"type": "StatusPatched", "status": "True"}]}});
    sets.patch_status("st", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch status");
    let read = sets.get_status("st").await.expect("get status");
    assert_eq!(conditions_of(&read), ["StatusUpdate", "StatusPatched"], "merged by type, the new one appended");

    // The controller's next status write keeps them.
    sets.patch("st", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})))
        .await
        .expect("scale");
    let read = eventually(Duration::from_secs(20), "2 ready replicas", || async {
        let rs = sets.get_status("st").await.ok()?;
        (rs.status.as_ref()?.ready_replicas == Some(2)).then_some(rs)
    })
    .await;
    assert_eq!(conditions_of(&read), ["StatusUpdate", "StatusPatched"]);
}

#[tokio::test]
async fn c139_a_replication_controller_is_created_patched_scaled_status_updated_and_deleted_under_a_watch() {
    let h = harness(&["replicationcontroller"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let rcs: Api<ReplicationController> = Api::namespaced(h.client.clone(), "default");
    let mut watch = Watch::open(&rcs, "test-rc-static=true").await;
    let rc: ReplicationController = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rc", "labels": {"test-rc-static": "true"}},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "rc"}},
            "spec": {"containers": [{"name": "c", "image": "httpd:2"}]}}}}))
    .expect("rc");
    rcs.create(&PostParams::default(), &rc).await.expect("create");
    watch.until("the RC added", Seen::Added, |_| true).await;
    let ready = |n: i32| {
        move |rc: &ReplicationController| {
            rc.status.as_ref().is_some_and(|s| s.replicas == n && s.ready_replicas == Some(n))
        }
    };
    watch.until("1 ready replica", Seen::Modified, ready(1)).await;
    let read = rcs.get("rc").await.expect("get");
    assert_eq!(
        read.spec.and_then(|s| s.selector).map(|s| s.into_iter().collect::<Vec<_>>()),
        Some(vec![("app".to_string(), "rc".to_string())])
    );

    let patch = serde_json::json!({"metadata": {"labels": {"test-rc": "patched"}}});
    rcs.patch("rc", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    watch
        .until("the patched label", Seen::Modified, |rc| {
            rc.metadata.labels.as_ref().is_some_and(|l| l.get("test-rc").map(String::as_str) == Some("patched"))
        })
        .await;

    // A status patch is seen, and the controller then puts the counts it observes back.
    let patch = serde_json::json!({"status": {"readyReplicas": 0, "availableReplicas": 0}});
    rcs.patch_status("rc", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch status");
    watch
        .until("readyReplicas 0 from the status patch", Seen::Modified, |rc| {
            rc.status.as_ref().is_some_and(|s| s.ready_replicas.unwrap_or(0) == 0)
        })
        .await;
    watch.until("readyReplicas 1 again from the controller", Seen::Modified, ready(1)).await;
    let status = rcs.get_status("rc").await.expect("get status").status.expect("status");
    assert_eq!(status.ready_replicas, Some(1));

    update_status(&rcs, "rc", |rc| {
        let s = rc.status.get_or_insert_with(Default::default);
        s.conditions.get_or_insert_with(Vec::new).push(
            serde_json::from_value(serde_json::json!(
                {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}))
            .expect("condition"),
        );
    })
    .await;
    watch
        .until("the StatusUpdate condition", Seen::Modified, |rc| conditions_of(rc).iter().any(|c| c == "StatusUpdate"))
        .await;

    let mut scale = rcs.get_scale("rc").await.expect("get scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    scale.spec.get_or_insert_with(Default::default).replicas = Some(2);
    rcs.replace_scale("rc", &PostParams::default(), &scale).await.expect("update scale");
    watch.until("2 ready replicas after the scale", Seen::Modified, ready(2)).await;

    rcs.delete_collection(&DeleteParams::default(), &ListParams::default().labels("test-rc-static=true"))
        .await
        .expect("delete collection");
    watch.until("the RC deleted", Seen::Deleted, |rc| rc.metadata.name.as_deref() == Some("rc")).await;
}

/// Ledger C142: a pod holds a hostPort on the node; a StatefulSet's pod pinned to that node asks
/// for the same port. The kubelet rejects it (Failed, reason NodePorts), the controller deletes
/// and recreates it, again and again, until the holder is gone and `ss-0` runs and answers on
/// the port.
#[tokio::test]
async fn c142_a_stateful_pod_the_node_rejects_for_a_taken_host_port_is_recreated_until_it_runs() {
    let c = Cluster::start().await;
    let port = e2e::free_port();
    let node = c.node.name.clone();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let spec = |container: &str| {
        serde_json::json!({"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": container, "image": "netexec:1.2", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080, "hostPort": port}]}]})
    };
    let holder: Pod =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "test-pod"}, "spec": spec("holder")}))
            .expect("pod");
    pods.create(&PostParams::default(), &holder).await.expect("holder");
    let running = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let p = pods.get_opt(name).await.ok()??;
            (p.metadata.deletion_timestamp.is_none() && p.status.as_ref()?.phase.as_deref() == Some("Running"))
                .then_some(p)
        }
    };
    eventually(Duration::from_secs(60), "test-pod Running", || running("test-pod")).await;

    let set = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ss"},
        "spec": {"replicas": 1, "serviceName": "test", "selector": {"matchLabels": {"app": "ss"}},
            "template": {"metadata": {"labels": {"app": "ss"}}, "spec": spec("webserver")}}});
    c.k.run_stdin(&["apply", "-f", "-"], &set.to_string()).ok();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(c.client.clone(), "default");
    eventually(Duration::from_secs(60), "ss-0 rejected for its port at least twice, and recreated", || async {
        let (mut rejected, mut recreated) = (0, false);
        for e in events.list(&ListParams::default()).await.ok()?.items {
            let about_ss0 = e.involved_object.name.as_deref() == Some("ss-0");
            match e.reason.as_deref() {
                Some("NodePorts") if about_ss0 && e.involved_object.kind.as_deref() == Some("Pod") => {
                    rejected += e.count.unwrap_or(1);
                }
                Some("RecreatingFailedPod") => recreated = true,
                _ => {}
            }
        }
        (rejected >= 2 && recreated).then_some(())
    })
    .await;
    let p = running("ss-0").await;
    assert!(p.is_none(), "ss-0 cannot run while test-pod holds the port: {p:?}");

    pods.delete("test-pod", &DeleteParams::default()).await.expect("delete the holder");
    let ss0 = eventually(Duration::from_secs(90), "ss-0 Running once the port is free", || running("ss-0")).await;
    let restarts = ss0.status.and_then(|s| s.container_statuses).unwrap_or_default();
    assert!(restarts.iter().all(|s| s.restart_count == 0), "{restarts:?}");
    let addr = format!("127.0.0.1:{port}");
    let answer = eventually(Duration::from_secs(30), "ss-0 answering on the host port", || {
        crate::endpoints_ledger::http_hostname(&addr)
    })
    .await;
    assert_eq!(answer, "ss-0");
    c.k.run(&["delete", "statefulset", "ss", "--timeout=60s"]).ok();
    c.k.run(&["delete", "pod", "--all", "--timeout=60s"]).ok();
}
