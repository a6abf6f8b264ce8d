//! The DaemonSet controller in-process against the in-memory apiserver, with Node objects made
//! through the API and no kubelet or scheduler: daemon pods stay pinned to their node by node
//! affinity (unbound), and the tests play the kubelet's part by patching pod status. Tests named
//! `cNNN_` cover the conformance ledger row of that id as far as it needs no real node.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::controllers::Harness;

/// The in-memory apiserver and the DaemonSet controller, in-process.
async fn harness() -> Harness {
    crate::controllers::harness(&["daemonset"]).await
}

impl Harness {
    /// Creates a Ready node with these labels and taints (`key=value:Effect`).
    async fn node(&self, name: &str, labels: &[(&str, &str)], taints: &[&str]) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let taints: Vec<serde_json::Value> = taints
            .iter()
            .map(|t| {
                let (kv, effect) = t.split_once(':').expect("key=value:Effect");
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                serde_json::json!({"key": k, "value": v, "effect": effect})
            })
            .collect();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
        .expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("create node");
        let ready = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "lastHeartbeatTime": jiff::Timestamp::now().to_string(),
            "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&ready)).await.expect("node ready");
    }

    fn sets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The live pods the DaemonSet owns, by the node they are pinned to.
    async fn by_node(&self, uid: &str) -> Option<BTreeMap<String, Vec<Pod>>> {
        let list = self.pods().list(&ListParams::default()).await.ok()?.items;
        let mut m: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for p in list {
            let owned =
                p.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true));
            if owned && p.metadata.deletion_timestamp.is_none() {
                m.entry(node_of(&p)).or_default().push(p);
            }
        }
        Some(m)
    }

    /// Waits until the DaemonSet has exactly one pod on each of `nodes` and none elsewhere.
    async fn wait_one_per_node(&self, uid: &str, nodes: &[&str]) -> BTreeMap<String, Pod> {
        eventually(Duration::from_secs(20), &format!("one daemon pod on each of {nodes:?}"), || async {
            let m = self.by_node(uid).await?;
            let placed: Vec<&str> = m.keys().map(String::as_str).collect();
            (placed == nodes && m.values().all(|v| v.len() == 1))
                .then(|| m.into_iter().map(|(n, mut v)| (n, v.remove(0))).collect())
        })
        .await
    }

    /// Marks the pod Running and Ready now.
    async fn ready(&self, name: &str) {
        let now = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
        let _ = self.pods().patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
    }

    /// Plays the kubelets: marks every live pod Running and Ready shortly after it appears
    /// (except those whose image says "never-ready", as an unpullable image would stay).
    fn fake_kubelet(&self) {
        let (pods, stop) = (self.pods(), self.stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                for p in pods.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
                    if ready || p.metadata.deletion_timestamp.is_some() || image_of(&p).contains("never-ready") {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

/// The node a daemon pod is bound or pinned to (by its `metadata.name` matchFields).
fn node_of(p: &Pod) -> String {
    let spec = p.spec.as_ref().expect("spec");
    if let Some(n) = spec.node_name.clone() {
        return n;
    }
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|s| s.node_selector_terms.clone())
        .unwrap_or_default();
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
        .unwrap_or_default()
}

fn image_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.containers[0].image.clone()).unwrap_or_default()
}

fn daemon_set(name: &str, pod_spec: serde_json::Value, strategy: serde_json::Value) -> DaemonSet {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "httpd:1"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), pod_spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}}, "updateStrategy": strategy,
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    }))
    .expect("daemon set")
}

async fn set_image(sets: &Api<DaemonSet>, name: &str, image: &str) {
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    sets.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await.expect("new image");
}

#[tokio::test]
async fn c104_a_daemon_set_runs_one_pod_per_node_and_replaces_a_deleted_one() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    h.node("n2", &[], &[]).await;
    let ds = h
        .sets()
        .create(&PostParams::default(), &daemon_set("agent", serde_json::json!({}), serde_json::json!({})))
        .await
        .expect("create");
    let uid = ds.metadata.uid.clone().expect("uid");
    let pods = h.wait_one_per_node(&uid, &["n1", "n2"]).await;
    for p in pods.values() {
        assert!(p.metadata.name.as_deref().is_some_and(|n| n.starts_with("agent-")), "{:?}", p.metadata.name);
        let labels = p.metadata.labels.clone().expect("labels");
        assert!(labels.contains_key("controller-revision-hash") && labels.contains_key("pod-template-generation"));
        assert!(p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(), "left to the scheduler");
        let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).expect("tolerations");
        assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")));
    }

    // A new node gets its pod.
    h.node("n3", &[], &[]).await;
    let pods = h.wait_one_per_node(&uid, &["n1", "n2", "n3"]).await;

    // Status follows readiness.
    for p in pods.values() {
        h.ready(p.metadata.name.as_deref().expect("name")).await;
    }
    eventually(Duration::from_secs(10), "3 desired, scheduled, ready, available and updated", || async {
        let s = h.sets().get("agent").await.ok()?.status?;
        (s.desired_number_scheduled == 3
            && s.current_number_scheduled == 3
            && s.number_ready == 3
            && s.number_available == Some(3)
            && s.updated_number_scheduled == Some(3)
            && s.number_unavailable.is_none()
            && s.number_misscheduled == 0
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;

    // A deleted daemon pod is replaced on its node.
    let victim = pods["n2"].metadata.name.clone().expect("name");
    h.pods().delete(&victim, &DeleteParams::default()).await.expect("delete");
    let after = h.wait_one_per_node(&uid, &["n1", "n2", "n3"]).await;
    assert_ne!(after["n2"].metadata.name.as_deref(), Some(victim.as_str()));

    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "SuccessfulCreate events", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let n = list
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("SuccessfulCreate")
                    && e.involved_object.kind.as_deref() == Some("DaemonSet")
            })
            .count();
        (n >= 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn c103_daemon_pods_follow_the_node_selector_as_node_labels_change() {
    let h = harness().await;
    h.node("blue", &[("color", "blue")], &[]).await;
    h.node("green", &[("color", "green")], &[]).await;
    let ds = daemon_set("picky", serde_json::json!({"nodeSelector": {"color": "blue"}}), serde_json::json!({}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &["blue"]).await;
    eventually(Duration::from_secs(10), "desiredNumberScheduled 1", || async {
        let s = h.sets().get("picky").await.ok()?.status?;
        (s.desired_number_scheduled == 1 && s.current_number_scheduled == 1).then_some(())
    })
    .await;

    // Relabelling moves the daemon pod: green gains one, blue loses its.
    let nodes: Api<Node> = Api::all(h.client.clone());
    let label = |c: &str| serde_json::json!({"metadata": {"labels": {"color": c}}});
    nodes.patch("green", &PatchParams::default(), &Patch::Merge(label("blue"))).await.expect("label green");
    h.wait_one_per_node(&uid, &["blue", "green"]).await;
    nodes.patch("blue", &PatchParams::default(), &Patch::Merge(label("red"))).await.expect("label blue");
    h.wait_one_per_node(&uid, &["green"]).await;
}

#[tokio::test]
async fn a_tainted_node_gets_no_daemon_pod_unless_the_template_tolerates_the_taint() {
    let h = harness().await;
    h.node("plain", &[], &[]).await;
    h.node("infra", &[], &["dedicated=infra:NoSchedule"]).await;
    let plain = daemon_set("plain", serde_json::json!({}), serde_json::json!({}));
    let plain_uid = h.sets().create(&PostParams::default(), &plain).await.expect("create").metadata.uid.expect("uid");
    let tolerant = daemon_set(
        "tolerant",
        serde_json::json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}),
        serde_json::json!({}),
    );
    let tolerant_uid =
        h.sets().create(&PostParams::default(), &tolerant).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&tolerant_uid, &["infra", "plain"]).await;
    h.wait_one_per_node(&plain_uid, &["plain"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.wait_one_per_node(&plain_uid, &["plain"]).await;

    // A NoExecute taint no daemon pod tolerates evicts the running ones.
    let nodes: Api<Node> = Api::all(h.client.clone());
    let taint = serde_json::json!({"spec": {"taints": [{"key": "evict", "value": "", "effect": "NoExecute"}]}});
    nodes.patch("plain", &PatchParams::default(), &Patch::Merge(taint)).await.expect("taint");
    h.wait_one_per_node(&plain_uid, &[]).await;
    h.wait_one_per_node(&tolerant_uid, &["infra"]).await;
}

#[tokio::test]
async fn c105_a_rolling_update_replaces_pods_node_by_node_within_max_unavailable() {
    let h = harness().await;
    let names = ["n1", "n2", "n3", "n4"];
    for n in names {
        h.node(n, &[], &[]).await;
    }
    h.fake_kubelet();
    let ds = daemon_set(
        "roll",
        serde_json::json!({}),
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
    );
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &names).await;
    eventually(Duration::from_secs(10), "all 4 available", || async {
        let s = h.sets().get("roll").await.ok()?.status?;
        (s.number_available == Some(4)).then_some(())
    })
    .await;

    set_image(&h.sets(), "roll", "httpd:2").await;
    let mut worst = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = h.by_node(&uid).await.expect("pods");
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let down = names.iter().filter(|n| !m.get(**n).is_some_and(|v| v.iter().any(ready))).count();
        worst = worst.max(down);
        let done = names
            .iter()
            .all(|n| m.get(*n).is_some_and(|v| v.len() == 1 && image_of(&v[0]) == "httpd:2" && ready(&v[0])));
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "rollout did not finish: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(worst <= 1, "at most maxUnavailable (1) nodes without a ready pod, saw {worst}");
    eventually(Duration::from_secs(10), "status: 4 updated", || async {
        let s = h.sets().get("roll").await.ok()?.status?;
        (s.updated_number_scheduled == Some(4) && s.observed_generation == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_on_delete_daemon_set_replaces_a_pod_only_once_it_is_deleted() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    h.node("n2", &[], &[]).await;
    h.fake_kubelet();
    let ds = daemon_set("manual", serde_json::json!({}), serde_json::json!({"type": "OnDelete"}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    let before = h.wait_one_per_node(&uid, &["n1", "n2"]).await;
    set_image(&h.sets(), "manual", "httpd:2").await;
    eventually(Duration::from_secs(10), "observedGeneration 2, none updated", || async {
        let s = h.sets().get("manual").await.ok()?.status?;
        (s.observed_generation == Some(2) && s.updated_number_scheduled.is_none()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let same = h.wait_one_per_node(&uid, &["n1", "n2"]).await;
    for n in ["n1", "n2"] {
        assert_eq!(same[n].metadata.uid, before[n].metadata.uid, "OnDelete keeps the old pod on {n}");
    }

    h.pods()
        .delete(before["n1"].metadata.name.as_deref().expect("name"), &DeleteParams::default())
        .await
        .expect("delete");
    let (_, n2) = eventually(Duration::from_secs(10), "n1 replaced with the new template", || async {
        let m = h.by_node(&uid).await?;
        let (n1, n2) = (m.get("n1")?, m.get("n2")?);
        (n1.len() == 1 && n2.len() == 1 && image_of(&n1[0]) == "httpd:2").then(|| (n1[0].clone(), n2[0].clone()))
    })
    .await;
    assert_eq!(image_of(&n2), "httpd:1");
    assert_eq!(n2.metadata.uid, before["n2"].metadata.uid);
}

#[tokio::test]
async fn c101_a_failed_daemon_pod_is_deleted_and_replaced() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    let ds = daemon_set("phoenix", serde_json::json!({}), serde_json::json!({}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    let first = h.wait_one_per_node(&uid, &["n1"]).await;
    let name = first["n1"].metadata.name.clone().expect("name");
    let failed = serde_json::json!({"status": {"phase": "Failed"}});
    h.pods().patch_status(&name, &PatchParams::default(), &Patch::Merge(&failed)).await.expect("fail");
    eventually(Duration::from_secs(15), "a new pod replaces the failed one", || async {
        let m = h.by_node(&uid).await?;
        let v = m.get("n1")?;
        (v.len() == 1 && v[0].metadata.name.as_deref() != Some(name.as_str())).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "a FailedDaemonPod event", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter().any(|e| e.reason.as_deref() == Some("FailedDaemonPod")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn c102_rolling_back_from_a_broken_image_keeps_the_pods_never_updated() {
    let h = harness().await;
    let names = ["n1", "n2", "n3"];
    for n in names {
        h.node(n, &[], &[]).await;
    }
    h.fake_kubelet();
    let ds = daemon_set("back", serde_json::json!({}), serde_json::json!({}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &names).await;
    let before = eventually(Duration::from_secs(10), "all 3 available", || async {
        let s = h.sets().get("back").await.ok()?.status?;
        (s.number_available == Some(3)).then_some(())?;
        h.by_node(&uid).await
    })
    .await;

    // The broken image replaces one pod (maxUnavailable 1) and the rollout stalls there.
    set_image(&h.sets(), "back", "never-ready:1").await;
    let broken = eventually(Duration::from_secs(10), "one pod on the broken image", || async {
        let m = h.by_node(&uid).await?;
        let broken: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.iter().any(|p| image_of(p) == "never-ready:1"))
            .map(|(n, _)| n.clone())
            .collect();
        (broken.len() == 1).then(|| broken[0].clone())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = h.by_node(&uid).await.expect("pods");
    let on_broken = m.values().flatten().filter(|p| image_of(p) == "never-ready:1").count();
    assert_eq!(on_broken, 1, "the rollout waits for the unavailable node");

    // Rolling back: the broken pod is replaced; the others are never restarted.
    set_image(&h.sets(), "back", "httpd:1").await;
    let after = eventually(Duration::from_secs(15), "every node back on httpd:1", || async {
        let m = h.by_node(&uid).await?;
        names.iter().all(|n| m.get(*n).is_some_and(|v| v.len() == 1 && image_of(&v[0]) == "httpd:1")).then_some(m)
    })
    .await;
    for n in names.iter().filter(|n| **n != broken) {
        assert_eq!(after[*n][0].metadata.uid, before[*n][0].metadata.uid, "{n} kept its pod");
    }
}

#[tokio::test]
async fn a_surge_rolling_update_starts_the_new_pod_before_stopping_the_old_one() {
    let h = harness().await;
    let names = ["n1", "n2", "n3"];
    for n in names {
        h.node(n, &[], &[]).await;
    }
    h.fake_kubelet();
    let ds = daemon_set(
        "surge",
        serde_json::json!({}),
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
    );
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &names).await;
    eventually(Duration::from_secs(10), "all 3 available", || async {
        let s = h.sets().get("surge").await.ok()?.status?;
        (s.number_available == Some(3)).then_some(())
    })
    .await;

    set_image(&h.sets(), "surge", "httpd:2").await;
    let (mut most_pods, mut doubled) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = h.by_node(&uid).await.expect("pods");
        assert!(names.iter().all(|n| m.contains_key(*n)), "a node was left without a daemon pod: {m:?}");
        most_pods = most_pods.max(m.values().map(Vec::len).sum::<usize>());
        doubled = doubled.max(m.values().filter(|v| v.len() > 1).count());
        let done = names.iter().all(|n| m.get(*n).is_some_and(|v| v.len() == 1 && image_of(&v[0]) == "httpd:2"));
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "rollout did not finish: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(doubled <= 1, "at most maxSurge (1) nodes with two pods, saw {doubled}");
    assert!(most_pods <= 4);
}

#[tokio::test]
async fn c106_the_status_subresource_reads_updates_and_patches_and_the_controller_keeps_conditions() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    let ds = daemon_set("stat", serde_json::json!({}), serde_json::json!({}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &["n1"]).await;
    eventually(Duration::from_secs(10), "status from the controller", || async {
        let ds = h.sets().get_status("stat").await.ok()?;
        (ds.status.as_ref()?.desired_number_scheduled == 1).then_some(ds)
    })
    .await;

    // Update: a condition added to the whole status (read again on a conflict with the
    // controller's own write).
    let condition = k8s_openapi::api::apps::v1::DaemonSetCondition {
        type_: "StatusUpdate".into(),
        status: "True".into(),
        reason: Some("E2E".into()),
        message: Some("set by the test".into()),
        last_transition_time: None,
    };
    eventually(Duration::from_secs(10), "status updated", || async {
        let mut ds = h.sets().get_status("stat").await.ok()?;
        ds.status.get_or_insert_default().conditions = Some(vec![condition.clone()]);
        h.sets().replace_status("stat", &PostParams::default(), &ds).await.ok()
    })
    .await;

    // Patch: another condition, merged.
    let patch = serde_json::json!({"status": {"conditions": [
        {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "set by the test"},
        {"type": "StatusPatched", "status": "True"}]}});
    h.sets().patch_status("stat", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch status");

    // A new node makes the controller write status again; the conditions stay.
    h.node("n2", &[], &[]).await;
    eventually(Duration::from_secs(10), "desired 2 with both conditions kept", || async {
        let s = h.sets().get_status("stat").await.ok()?.status?;
        let types: Vec<String> = s.conditions.iter().flatten().map(|c| c.type_.clone()).collect();
        (s.desired_number_scheduled == 2 && types == ["StatusUpdate", "StatusPatched"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn c100_daemon_sets_are_listed_by_label_and_removed_by_delete_collection() {
    let h = harness().await;
    for name in ["one", "two"] {
        let mut ds = daemon_set(name, serde_json::json!({}), serde_json::json!({}));
        ds.metadata.labels = Some([("e2e".to_string(), "collection".to_string())].into());
        h.sets().create(&PostParams::default(), &ds).await.expect("create");
    }
    h.sets()
        .create(&PostParams::default(), &daemon_set("other", serde_json::json!({}), serde_json::json!({})))
        .await
        .expect("create");
    let selected = ListParams::default().labels("e2e=collection");
    assert_eq!(h.sets().list(&selected).await.expect("list").items.len(), 2);
    h.sets().delete_collection(&DeleteParams::default(), &selected).await.expect("delete collection");
    eventually(Duration::from_secs(10), "only the unlabelled DaemonSet left", || async {
        let names: Vec<String> = h
            .sets()
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        (names == ["other"]).then_some(())
    })
    .await;
}

fn revisions(h: &Harness) -> Api<ControllerRevision> {
    Api::namespaced(h.client.clone(), "default")
}

/// The DaemonSet's revisions, as (revision number, name), sorted.
async fn owned_revisions(h: &Harness, uid: &str) -> Vec<(i64, String)> {
    let list = revisions(h).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let mut owned: Vec<(i64, String)> = list
        .into_iter()
        .filter(|r| r.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true)))
        .map(|r| (r.revision, r.metadata.name.unwrap_or_default()))
        .collect();
    owned.sort();
    owned
}

#[tokio::test]
async fn c094_controller_revisions_of_a_daemon_set_support_every_verb_and_numbering_reaches_three() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    h.fake_kubelet();
    let ds = daemon_set("cr", serde_json::json!({}), serde_json::json!({}));
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &["n1"]).await;

    // Listed by the template's label, with the pods' hash, owned by the DaemonSet.
    let by_label = ListParams::default().labels("app=cr");
    let initial = eventually(Duration::from_secs(10), "the first revision", || async {
        let mut l = revisions(&h).list(&by_label).await.ok()?.items;
        (l.len() == 1).then(|| l.remove(0))
    })
    .await;
    assert_eq!(initial.revision, 1);
    let pod_hash = h.by_node(&uid).await.expect("pods")["n1"][0].metadata.labels.clone().expect("labels")
        ["controller-revision-hash"]
        .clone();
    assert_eq!(initial.metadata.labels.clone().expect("labels")["controller-revision-hash"], pod_hash);
    assert_eq!(initial.metadata.name.clone().expect("name"), format!("cr-{pod_hash}"));

    // Patch, create, update, delete.
    let patch = serde_json::json!({"metadata": {"labels": {"e2e": "patched"}}});
    let patched = revisions(&h)
        .patch(initial.metadata.name.as_deref().expect("name"), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch revision");
    assert_eq!(patched.metadata.labels.clone().expect("labels")["e2e"], "patched");
    let mut copy = ControllerRevision {
        metadata: kube::api::ObjectMeta {
            name: Some("cr-e2e-copy".into()),
            labels: initial.metadata.labels.clone(),
            owner_references: initial.metadata.owner_references.clone(),
            ..Default::default()
        },
        data: initial.data.clone(),
        revision: initial.revision + 1,
    };
    copy = revisions(&h).create(&PostParams::default(), &copy).await.expect("create revision");
    revisions(&h)
        .delete(initial.metadata.name.as_deref().expect("name"), &DeleteParams::default())
        .await
        .expect("delete the first");
    copy.metadata.labels.get_or_insert_with(Default::default).insert("e2e".into(), "updated".into());
    let copy = revisions(&h).replace("cr-e2e-copy", &PostParams::default(), &copy).await.expect("update");
    assert_eq!(copy.metadata.labels.clone().expect("labels")["e2e"], "updated");
    // The copy holds the current template: no new revision is made for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(owned_revisions(&h, &uid).await, [(2, "cr-e2e-copy".to_string())]);

    // A template change makes revision 3.
    set_image(&h.sets(), "cr", "httpd:2").await;
    let after = eventually(Duration::from_secs(10), "revision 3", || async {
        let owned = owned_revisions(&h, &uid).await;
        (owned.last().map(|r| r.0) == Some(3)).then_some(owned)
    })
    .await;
    assert_eq!(after.len(), 2, "{after:?}");

    // Deleted as a collection by label.
    revisions(&h).delete_collection(&DeleteParams::default(), &by_label).await.expect("deletecollection");
    eventually(Duration::from_secs(10), "the collection gone", || async {
        let owned = owned_revisions(&h, &uid).await;
        // The controller writes the current revision back; the copy stays gone.
        (!owned.iter().any(|(_, n)| n == "cr-e2e-copy")).then_some(())
    })
    .await;
}

// kubectl blocks its thread; the in-process apiserver answers on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_history_and_undo_of_a_daemon_set_use_its_revisions() {
    let h = harness().await;
    h.node("n1", &[], &[]).await;
    h.fake_kubelet();
    let mut ds = daemon_set("hist", serde_json::json!({}), serde_json::json!({}));
    ds.spec.as_mut().expect("spec").revision_history_limit = Some(2);
    let uid = h.sets().create(&PostParams::default(), &ds).await.expect("create").metadata.uid.expect("uid");
    h.wait_one_per_node(&uid, &["n1"]).await;
    for image in ["httpd:2", "httpd:3", "httpd:4"] {
        set_image(&h.sets(), "hist", image).await;
        eventually(Duration::from_secs(15), &format!("the pod on {image}"), || async {
            let m = h.by_node(&uid).await?;
            m.get("n1").is_some_and(|v| v.len() == 1 && image_of(&v[0]) == image).then_some(())
        })
        .await;
    }
    // revisionHistoryLimit 2: the current revision and two before it.
    let owned = eventually(Duration::from_secs(10), "history trimmed to 2 old revisions", || async {
        let owned = owned_revisions(&h, &uid).await;
        (owned.len() == 3).then_some(owned)
    })
    .await;
    assert_eq!(owned.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3, 4]);

    let k = e2e::kubectl::Kubectl::new(&h.api.endpoint);
    let history = k.run(&["rollout", "history", "daemonset/hist"]).ok().stdout;
    let numbers: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["2", "3", "4"], "{history}");
    let rev3 = k.run(&["rollout", "history", "daemonset/hist", "--revision=3"]).ok().stdout;
    assert!(rev3.contains("httpd:3"), "{rev3}");

    // Undo goes back to revision 3, which becomes revision 5; the pod follows.
    let undo = k.run(&["rollout", "undo", "daemonset/hist"]).ok().stdout;
    assert!(undo.contains("rolled back"), "{undo}");
    eventually(Duration::from_secs(15), "the pod back on httpd:3", || async {
        let m = h.by_node(&uid).await?;
        m.get("n1").is_some_and(|v| v.len() == 1 && image_of(&v[0]) == "httpd:3").then_some(())
    })
    .await;
    let owned = eventually(Duration::from_secs(10), "revision 3 renumbered to 5", || async {
        let owned = owned_revisions(&h, &uid).await;
        (owned.last().map(|r| r.0) == Some(5)).then_some(owned)
    })
    .await;
    assert_eq!(owned.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 4, 5], "no copy of revision 3: {owned:?}");
    let undo_to = k.run(&["rollout", "undo", "daemonset/hist", "--to-revision=2"]).ok().stdout;
    assert!(undo_to.contains("rolled back"), "{undo_to}");
    eventually(Duration::from_secs(15), "the pod on httpd:2", || async {
        let m = h.by_node(&uid).await?;
        m.get("n1").is_some_and(|v| v.len() == 1 && image_of(&v[0]) == "httpd:2").then_some(())
    })
    .await;
}
