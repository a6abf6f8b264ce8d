//! The controller-manager's controllers: component tests run them in-process against the
//! in-memory apiserver; end-to-end tests run the binary with kubelets and kubectl.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

/// The in-memory apiserver and the controllers named, in-process (through
/// `controller_manager::app::start`, as the binary runs them); shared by the controller test files.
pub(crate) struct Harness {
    pub(crate) client: kube::Client,
    pub(crate) stop: CancellationToken,
    pub(crate) api: e2e::server::InProcess,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    /// Pods in `default`, where these tests work.
    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }
}

pub(crate) async fn harness(controllers: &[&'static str]) -> Harness {
    harness_with(controllers, controller_manager::app::Flags::default()).await
}

pub(crate) async fn harness_with(controllers: &[&'static str], flags: controller_manager::app::Flags) -> Harness {
    harness_for(controllers, |_| flags).await
}

/// As [`harness_with`], with flags that name the apiserver's files (its certificate directory).
pub(crate) async fn harness_for(
    controllers: &[&'static str],
    flags: impl FnOnce(&e2e::server::InProcess) -> controller_manager::app::Flags,
) -> Harness {
    let storage = Arc::new(apiserver::storage::memory::MemoryStorage::new());
    let api = e2e::server::InProcess::start_on("", Some(storage), |_| {}).await;
    let flags = flags(&api);
    let client = api.endpoint.kube_client().await;
    let stop = CancellationToken::new();
    let enabled: BTreeSet<&'static str> = controllers.iter().copied().collect();
    tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move { controller_manager::app::start(client, &flags, &enabled, stop).await }
    });
    Harness { client, stop, api }
}

pub(crate) fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

pub(crate) fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .expect("replica set")
}

/// Waits until the set owns exactly `n` live pods and returns them.
pub(crate) async fn wait_owned(pods: &Api<Pod>, uid: &str, n: usize) -> Vec<Pod> {
    eventually(Duration::from_secs(20), &format!("{n} pods owned by the set"), || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let owned: Vec<Pod> = owned_by(&list, uid).into_iter().cloned().collect();
        (owned.len() == n).then_some(owned)
    })
    .await
}

#[tokio::test]
async fn c130_a_replica_set_creates_scales_adopts_releases_and_reports_status() {
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

/// Plays the kubelets' part for pods that no node runs: every live pod is marked Running and
/// Ready shortly after it appears (except those whose image says "never-ready").
pub(crate) fn fake_kubelet(client: kube::Client, stop: CancellationToken) {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        while !stop.is_cancelled() {
            if let Ok(list) = pods.list(&ListParams::default()).await {
                for p in list.items {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
                    let never = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers[0].image.as_deref())
                        .is_some_and(|i| i.contains("never-ready"));
                    if ready || never || p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                    let _ = pods
                        .patch_status(
                            p.metadata.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

pub(crate) fn deployment(name: &str, replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
    }))
    .expect("deployment")
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

fn revision(meta: &kube::api::ObjectMeta) -> String {
    meta.annotations.as_ref().and_then(|a| a.get("deployment.kubernetes.io/revision")).cloned().unwrap_or_default()
}

/// Waits for the rollout to finish as `kubectl rollout status` judges it.
pub(crate) async fn rolled_out(deployments: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(Duration::from_secs(30), &format!("{name} rolled out to {replicas}"), || async {
        let d = deployments.get(name).await.ok()?;
        let s = d.status.clone()?;
        let done = d.metadata.generation <= s.observed_generation
            && s.updated_replicas.unwrap_or(0) == replicas
            && s.replicas.unwrap_or(0) == replicas
            && s.available_replicas.unwrap_or(0) == replicas
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        done.then_some(d)
    })
    .await
}

#[tokio::test]
async fn a_deployment_rolls_out_keeps_availability_rolls_back_scales_and_pauses() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let strategy = serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    deployments.create(&PostParams::default(), &deployment("web", 3, "web:v1", strategy)).await.expect("create");
    let d = rolled_out(&deployments, "web", 3).await;
    assert_eq!(revision(&d.metadata), "1");
    let first = sets.list(&ListParams::default()).await.expect("sets").items;
    assert_eq!(first.len(), 1);
    let hash = first[0].metadata.labels.as_ref().expect("labels")["pod-template-hash"].clone();
    assert_eq!(first[0].metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
    assert_eq!(
        first[0].spec.as_ref().expect("spec").selector.match_labels.as_ref().expect("labels")["pod-template-hash"],
        hash
    );

    // A new image rolls out without ever dropping below 3 ready pods (maxUnavailable 0).
    let watching = CancellationToken::new();
    let lowest = tokio::spawn({
        let (pods, watching) = (pods.clone(), watching.clone());
        async move {
            let mut lowest = usize::MAX;
            while !watching.is_cancelled() {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                        })
                        .count();
                    lowest = lowest.min(ready);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lowest
        }
    });
    let image =
        |i: &str| serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image("web:v2"))).await.expect("v2");
    let d = rolled_out(&deployments, "web", 3).await;
    watching.cancel();
    assert!(lowest.await.expect("joined") >= 3, "never fewer ready pods than replicas - maxUnavailable");
    assert_eq!(revision(&d.metadata), "2");
    let all = sets.list(&ListParams::default()).await.expect("sets").items;
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|rs| image_of(rs) == "web:v1").expect("old set kept for history");
    assert_eq!(old.spec.as_ref().and_then(|s| s.replicas), Some(0));
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(h.client.clone(), "default");
    let scaling: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        scaling.iter().any(|m| m.starts_with("Scaled down replica set web-") && m.ends_with("to 0")),
        "{scaling:?}"
    );

    // Back to v1 (what `kubectl rollout undo` writes): the old set is reused as revision 3.
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image("web:v1"))).await.expect("undo");
    let d = rolled_out(&deployments, "web", 3).await;
    assert_eq!(revision(&d.metadata), "3");
    let all = sets.list(&ListParams::default()).await.expect("sets").items;
    assert_eq!(all.len(), 2, "no third set: the v1 set came back");
    let v1 = all.iter().find(|rs| image_of(rs) == "web:v1").expect("v1");
    assert_eq!(revision(&v1.metadata), "3");
    assert_eq!(v1.metadata.annotations.as_ref().expect("a")["deployment.kubernetes.io/revision-history"], "1");

    // Scaling resizes the current set.
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})))
        .await
        .expect("scale");
    rolled_out(&deployments, "web", 5).await;

    // Paused: a template change makes no new set until resumed.
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"paused": true}})))
        .await
        .expect("pause");
    eventually(Duration::from_secs(10), "Progressing DeploymentPaused", || async {
        let d = deployments.get("web").await.ok()?;
        d.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused"))
            .then_some(())
    })
    .await;
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image("web:v3"))).await.expect("v3");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!sets.list(&ListParams::default()).await.expect("sets").items.iter().any(|rs| image_of(rs) == "web:v3"));
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"paused": false}})))
        .await
        .expect("resume");
    let d = rolled_out(&deployments, "web", 5).await;
    assert_eq!(revision(&d.metadata), "4");
}

#[tokio::test]
async fn c108_a_recreate_deployment_removes_every_old_pod_before_starting_new_ones() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let strategy = serde_json::json!({"type": "Recreate"});
    deployments.create(&PostParams::default(), &deployment("db", 2, "db:v1", strategy)).await.expect("create");
    rolled_out(&deployments, "db", 2).await;
    let watching = CancellationToken::new();
    let mixed = tokio::spawn({
        let (pods, watching) = (pods.clone(), watching.clone());
        async move {
            let mut mixed = false;
            while !watching.is_cancelled() {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    let images: BTreeSet<String> = list
                        .items
                        .iter()
                        .filter_map(|p| p.spec.as_ref().and_then(|s| s.containers[0].image.clone()))
                        .collect();
                    mixed |= images.len() > 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mixed
        }
    });
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:v2"}]}}}});
    deployments.patch("db", &PatchParams::default(), &Patch::Strategic(patch)).await.expect("v2");
    rolled_out(&deployments, "db", 2).await;
    watching.cancel();
    assert!(!mixed.await.expect("joined"), "old and new pods never existed together");
}

/// etcd, the apiserver, one kubelet on the host's dockerd, the scheduler and the
/// controller-manager binaries.
pub(crate) struct Cluster {
    pub(crate) client: kube::Client,
    pub(crate) k: e2e::kubectl::Kubectl,
    pub(crate) cm: e2e::server::Component,
    _scheduler: e2e::server::Component,
    pub(crate) node: e2e::kubelet::Kubelet,
    pub(crate) api: e2e::server::Process,
    _etcd: e2e::etcd::Etcd,
}

/// The apiserver's service account key, which the controller-manager signs ServiceAccount token
/// Secrets with (`--service-account-private-key-file`, as `deploy/local-up.sh` passes it).
fn sa_key(api: &e2e::server::Process) -> String {
    api.dir.path().join("pki").join("sa.key").display().to_string()
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    /// The cluster with extra controller-manager flags.
    pub(crate) async fn start_with(cm_extra: &[&str]) -> Cluster {
        let etcd = e2e::etcd::Etcd::start().await;
        let api = e2e::server::Process::start(&etcd.endpoint(), &[]).await;
        let client = api.endpoint.kube_client().await;
        let node = e2e::kubelet::Kubelet::start(&api.endpoint, &[]).await;
        node.wait_ready(&client).await;
        let kc = &api.endpoint.kubeconfig;
        let scheduler = e2e::server::Component::start("scheduler", kc, &node.dir.path().join("scheduler.log"), &[]);
        let cm_log = node.dir.path().join("cm.log");
        let key = sa_key(&api);
        let mut flags = vec!["--service-account-private-key-file", key.as_str()];
        flags.extend_from_slice(cm_extra);
        let cm = e2e::server::Component::start("controller-manager", kc, &cm_log, &flags);
        let k = e2e::kubectl::Kubectl::new(&api.endpoint);
        Cluster { client, k, cm, _scheduler: scheduler, node, api, _etcd: etcd }
    }

    fn restart_controller_manager(&mut self) {
        self.cm.kill();
        let log = self.node.dir.path().join("cm-2.log");
        let key = sa_key(&self.api);
        let flags = ["--service-account-private-key-file", key.as_str()];
        self.cm = e2e::server::Component::start("controller-manager", &self.api.endpoint.kubeconfig, &log, &flags);
    }

    /// `kubectl rollout status`, which must say the rollout finished.
    fn rollout_status(&self, name: &str) {
        let out = self.k.run(&["rollout", "status", &format!("deployment/{name}"), "--timeout=90s"]);
        assert!(
            out.code == 0 && out.stdout.contains("successfully rolled out"),
            "rollout status: {out:?}\ncontroller-manager log:\n{}",
            self.cm.log()
        );
    }
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: web, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#;

fn images_of_live_pods(pods: &[Pod]) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.containers[0].image.clone()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn kubectl_rollout_status_history_undo_restart_and_scale_work_on_a_real_cluster() {
    let c = Cluster::start().await;
    c.k.run_stdin(&["apply", "-f", "-"], WEB).ok();
    c.rollout_status("web");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    assert_eq!(
        images_of_live_pods(&pods.list(&ListParams::default()).await.expect("pods").items),
        ["busybox", "busybox"]
    );

    c.k.run(&["set", "image", "deployment/web", "web=busybox:1.36"]).ok();
    c.k.run(&["annotate", "deployment/web", "kubernetes.io/change-cause=to 1.36"]).ok();
    c.rollout_status("web");
    let history = c.k.run(&["rollout", "history", "deployment/web"]).ok().stdout;
    assert!(history.contains("1 ") && history.contains("2 ") && history.contains("to 1.36"), "{history}");
    let rs = c.k.run(&["get", "rs", "-l", "app=web", "-o", "wide"]).ok().stdout;
    assert_eq!(rs.lines().count(), 3, "a header and two ReplicaSets: {rs}");

    c.k.run(&["rollout", "undo", "deployment/web"]).ok();
    c.rollout_status("web");
    let d = c.k.run(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"]).ok().stdout;
    assert_eq!(d.trim(), "busybox 3");
    eventually(Duration::from_secs(60), "only busybox pods left", || async {
        let live = images_of_live_pods(&pods.list(&ListParams::default()).await.ok()?.items);
        (live == ["busybox", "busybox"]).then_some(())
    })
    .await;

    c.k.run(&["rollout", "restart", "deployment/web"]).ok();
    c.rollout_status("web");
    c.k.run(&["scale", "deployment/web", "--replicas=3"]).ok();
    c.rollout_status("web");
    let shown = c.k.run(&["get", "deployment", "web"]).ok().stdout;
    assert!(shown.contains("3/3"), "{shown}");
}

#[tokio::test]
async fn a_controller_manager_killed_mid_rollout_resumes_without_duplicate_pods() {
    let mut c = Cluster::start().await;
    c.k.run_stdin(&["apply", "-f", "-"], &WEB.replace("replicas: 2", "replicas: 4")).ok();
    c.rollout_status("web");
    c.k.run(&["set", "image", "deployment/web", "web=busybox:1.36"]).ok();
    // Kill it as soon as the new ReplicaSet exists, then start a fresh one.
    let sets: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    eventually(Duration::from_secs(30), "the new ReplicaSet", || async {
        (sets.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    c.restart_controller_manager();
    c.rollout_status("web");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    eventually(Duration::from_secs(60), "exactly 4 live pods, all new", || async {
        let live = images_of_live_pods(&pods.list(&ListParams::default()).await.ok()?.items);
        (live == vec!["busybox:1.36".to_string(); 4]).then_some(())
    })
    .await;
    assert_eq!(sets.list(&ListParams::default()).await.expect("sets").items.len(), 2, "no duplicate ReplicaSet");
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(Duration::from_secs(20), &format!("{name} gone"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_garbage_collector_deletes_in_the_background_orphans_and_deletes_in_the_foreground() {
    let h = harness(&["replicaset", "deployment", "garbagecollector"]).await;
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");

    // Background: the set goes at once, its pods after it.
    let rs = sets.create(&PostParams::default(), &replica_set("bg", 2)).await.expect("create");
    let uid = rs.metadata.uid.clone().expect("uid");
    wait_owned(&pods, &uid, 2).await;
    sets.delete("bg", &DeleteParams::background()).await.expect("delete");
    eventually(Duration::from_secs(20), "the pods of bg collected", || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let left = list.iter().filter(|p| p.metadata.owner_references.iter().flatten().any(|r| r.uid == uid)).count();
        (left == 0).then_some(())
    })
    .await;

    // Orphan: the set goes, its pods stay without the reference.
    let rs = sets.create(&PostParams::default(), &replica_set("or", 2)).await.expect("create");
    let uid = rs.metadata.uid.clone().expect("uid");
    let kept: Vec<String> = wait_owned(&pods, &uid, 2).await.into_iter().filter_map(|p| p.metadata.name).collect();
    sets.delete("or", &DeleteParams::orphan()).await.expect("delete");
    gone(&sets, "or").await;
    for name in &kept {
        let p = pods.get(name).await.expect("the pod stays");
        assert!(p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()), "{:?}", p.metadata.owner_references);
    }

    // Foreground: the Deployment waits for its set, which waits for its pods.
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("fg", 2, "fg:v1", serde_json::json!({})))
        .await
        .expect("create");
    eventually(Duration::from_secs(20), "2 pods of fg", || async {
        let list = pods.list(&ListParams::default().labels("app=fg")).await.ok()?.items;
        (list.len() == 2).then_some(())
    })
    .await;
    deployments.delete("fg", &DeleteParams::foreground()).await.expect("delete");
    gone(&deployments, "fg").await;
    assert!(sets.list(&ListParams::default().labels("app=fg")).await.expect("sets").items.is_empty());
    assert!(
        pods.list(&ListParams::default().labels("app=fg")).await.expect("pods").items.is_empty(),
        "the pods went first"
    );
}

#[tokio::test]
async fn c066_c067_deleting_a_namespace_deletes_everything_in_it_then_the_namespace() {
    let h = harness(&["replicaset", "namespace", "garbagecollector"]).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "doomed"}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(h.client.clone(), "doomed");
    let cm =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "settings"}, "data": {"a": "b"}})).expect("cm");
    cms.create(&PostParams::default(), &cm).await.expect("configmap");
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "doomed");
    let mut rs = replica_set("app", 2);
    rs.metadata.namespace = Some("doomed".into());
    sets.create(&PostParams::default(), &rs).await.expect("rs");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "doomed");
    eventually(Duration::from_secs(20), "the set's pods", || async {
        (pods.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    namespaces.delete("doomed", &DeleteParams::default()).await.expect("delete");
    gone(&namespaces, "doomed").await;
    assert!(cms.list(&ListParams::default()).await.expect("list").items.is_empty());
    assert!(pods.list(&ListParams::default()).await.expect("list").items.is_empty());
}

#[tokio::test]
async fn c152_every_namespace_gets_a_default_service_account_and_the_root_ca_config_map() {
    let dir = e2e::TempDir::new("root-ca").expect("dir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n").expect("ca");
    let flags = controller_manager::app::Flags { root_ca_file: Some(ca), ..Default::default() };
    let h = harness_with(&["serviceaccount", "root-ca-cert-publisher"], flags).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": "team"}})).expect("ns");
    namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(h.client.clone(), "team");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(h.client.clone(), "team");
    let has_default = || async { accounts.get_opt("default").await.ok()?.map(|_| ()) };
    eventually(Duration::from_secs(10), "the default ServiceAccount", has_default).await;
    let ca_data = || async {
        let cm = cms.get_opt("kube-root-ca.crt").await.ok()??;
        cm.data?.get("ca.crt").filter(|c| c.contains("TEST")).map(|_| ())
    };
    eventually(Duration::from_secs(10), "kube-root-ca.crt with the CA", ca_data).await;
    // Both come back when deleted; the ConfigMap is restored when edited.
    accounts.delete("default", &DeleteParams::default()).await.expect("delete");
    eventually(Duration::from_secs(10), "the default ServiceAccount again", has_default).await;
    cms.patch("kube-root-ca.crt", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"ca.crt": "x"}})))
        .await
        .expect("edit");
    eventually(Duration::from_secs(10), "kube-root-ca.crt restored", ca_data).await;
    // The system namespaces have them too.
    let system: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(h.client.clone(), "kube-system");
    eventually(Duration::from_secs(10), "kube-system's default ServiceAccount", || async {
        system.get_opt("default").await.ok()?.map(|_| ())
    })
    .await;
}

/// A running pod with an IP, labelled app=`app`, serving on a container port named http.
async fn serving_pod(pods: &Api<Pod>, name: &str, app: &str, ip: &str, ready: bool) {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &p).await.expect("pod");
    set_ready(pods, name, ip, ready).await;
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
}

fn slice_summary(slices: &[EndpointSlice]) -> Vec<(usize, Vec<(String, bool)>)> {
    let mut v: Vec<(usize, Vec<(String, bool)>)> = slices
        .iter()
        .map(|s| {
            let mut eps: Vec<(String, bool)> = s
                .endpoints
                .iter()
                .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready) == Some(true)))
                .collect();
            eps.sort();
            (s.ports.iter().flatten().filter_map(|p| p.port).next().unwrap_or(0) as usize, eps)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn c188_c191_services_get_endpoints_and_endpoint_slices_that_follow_their_pods() {
    let flags = controller_manager::app::Flags { max_endpoints_per_slice: 2, ..Default::default() };
    let h = harness_with(&["endpoint", "endpointslice", "endpointslicemirroring", "garbagecollector"], flags).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(h.client.clone(), "default");
    serving_pod(&pods, "a", "web", "10.244.0.2", true).await;
    serving_pod(&pods, "b", "web", "10.244.0.3", true).await;
    serving_pod(&pods, "c", "web", "10.244.0.4", false).await;
    serving_pod(&pods, "other", "db", "10.244.0.9", true).await;
    let svc: Service =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .expect("service");
    services.create(&PostParams::default(), &svc).await.expect("service");
    let web_slices = ListParams::default().labels("kubernetes.io/service-name=web");
    eventually(Duration::from_secs(10), "Endpoints with 2 ready and 1 unready", || async {
        let e = endpoints.get_opt("web").await.ok()??;
        let s = e.subsets?.first()?.clone();
        let ready: Vec<String> = s.addresses.iter().flatten().map(|a| a.ip.clone()).collect();
        let unready: Vec<String> = s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()).collect();
        (ready == ["10.244.0.2", "10.244.0.3"] && unready == ["10.244.0.4"] && s.ports?[0].port == 8080).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "slices of at most 2 endpoints with conditions", || async {
        let list = slices.list(&web_slices).await.ok()?.items;
        let want = vec![
            (8080, vec![("10.244.0.2".to_string(), true), ("10.244.0.3".to_string(), true)]),
            (8080, vec![("10.244.0.4".to_string(), false)]),
        ];
        (slice_summary(&list) == want).then_some(list)
    })
    .await;
    let list = slices.list(&web_slices).await.expect("slices").items;
    for s in &list {
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
        assert_eq!(labels["tier"], "front", "the Service's labels are copied");
        assert_eq!(s.metadata.owner_references.as_ref().expect("owner")[0].kind, "Service");
    }

    // c becomes ready, a goes: both follow.
    set_ready(&pods, "c", "10.244.0.4", true).await;
    pods.delete("a", &DeleteParams::default().grace_period(0)).await.expect("delete");
    eventually(Duration::from_secs(10), "b and c ready in one slice", || async {
        let list = slices.list(&web_slices).await.ok()?.items;
        let want = vec![(8080, vec![("10.244.0.3".to_string(), true), ("10.244.0.4".to_string(), true)])];
        (slice_summary(&list) == want).then_some(())
    })
    .await;

    // Endpoints written by hand for a Service without a selector are mirrored.
    let manual: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "external"},
        "spec": {"ports": [{"port": 5432}]}}))
    .expect("service");
    services.create(&PostParams::default(), &manual).await.expect("service");
    let ep: Endpoints = serde_json::from_value(serde_json::json!({"metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]}))
    .expect("endpoints");
    endpoints.create(&PostParams::default(), &ep).await.expect("endpoints");
    let mirrored = ListParams::default().labels("kubernetes.io/service-name=external");
    eventually(Duration::from_secs(10), "the mirrored slice", || async {
        let list = slices.list(&mirrored).await.ok()?.items;
        let s = list.first()?;
        let managed = s.metadata.labels.as_ref()?.get("endpointslice.kubernetes.io/managed-by")?.clone();
        (managed == "endpointslicemirroring-controller.k8s.io"
            && slice_summary(&list) == vec![(5432, vec![("192.0.2.10".to_string(), true)])])
        .then_some(())
    })
    .await;
    let kubernetes = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    assert!(
        slices
            .list(&kubernetes)
            .await
            .expect("slices")
            .items
            .iter()
            .all(|s| s.metadata.name.as_deref() == Some("kubernetes")),
        "the apiserver's own Endpoints are not mirrored (skip-mirror)"
    );

    // Deleting the Service removes its Endpoints and (through the owner) its slices.
    services.delete("web", &DeleteParams::default()).await.expect("delete");
    gone(&endpoints, "web").await;
    eventually(Duration::from_secs(20), "web's slices collected", || async {
        slices.list(&web_slices).await.ok()?.items.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs_and_silent_nodes_become_unknown_tainted_and_drained() {
    let flags = controller_manager::app::Flags {
        allocate_node_cidrs: true,
        node_monitor_grace_period: Duration::from_secs(2),
        node_monitor_period: Duration::from_millis(200),
        ..Default::default()
    };
    let h = harness_with(&["nodeipam", "nodelifecycle"], flags).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(h.client.clone());
    let node = |name: &str, cidr: Option<&str>| -> k8s_openapi::api::core::v1::Node {
        let now = jiff::Timestamp::now().to_string();
        let mut n = serde_json::json!({"metadata": {"name": name}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
        if let Some(c) = cidr {
            n["spec"] = serde_json::json!({"podCIDR": c, "podCIDRs": [c]});
        }
        serde_json::from_value(n).expect("node")
    };
    nodes.create(&PostParams::default(), &node("taken", Some("10.244.0.0/24"))).await.expect("node");
    for name in ["n1", "n2", "n3"] {
        nodes.create(&PostParams::default(), &node(name, None)).await.expect("node");
    }
    let cidrs = eventually(Duration::from_secs(10), "every node with a pod CIDR", || async {
        let list = nodes.list(&ListParams::default()).await.ok()?.items;
        let cidrs: BTreeSet<String> = list.iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.clone()).collect();
        (cidrs.len() == 4).then_some(cidrs)
    })
    .await;
    assert_eq!(
        cidrs,
        BTreeSet::from(["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"].map(String::from))
    );

    // Pods on n1: one tolerates the unreachable taint for 1 s, one forever, one has the 300 s
    // the apiserver gives every pod.
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let pod = |name: &str, tolerations: serde_json::Value| -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name},
            "spec": {"nodeName": "n1", "tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod")
    };
    let brief = serde_json::json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]);
    pods.create(&PostParams::default(), &pod("brief", brief)).await.expect("pod");
    pods.create(&PostParams::default(), &pod("forever", serde_json::json!([{"operator": "Exists"}])))
        .await
        .expect("pod");
    pods.create(&PostParams::default(), &pod("default", serde_json::json!([]))).await.expect("pod");
    let defaulted = pods.get("default").await.expect("pod");
    let tolerations = defaulted.spec.and_then(|s| s.tolerations).unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable") && t.toleration_seconds == Some(300))
    );

    // Nobody renews n1..n3: after the grace period they are Unknown and tainted unreachable.
    eventually(Duration::from_secs(15), "n1 Unknown and tainted unreachable:NoExecute", || async {
        let n = nodes.get("n1").await.ok()?;
        let ready = n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")?;
        let tainted =
            n.spec?.taints?.iter().any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute");
        (ready.status == "Unknown" && ready.reason.as_deref() == Some("NodeStatusUnknown") && tainted).then_some(())
    })
    .await;
    let evicted = |name: &'static str| {
        let pods = pods.clone();
        async move {
            match pods.get_opt(name).await.ok()? {
                None => Some(()),
                Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
            }
        }
    };
    eventually(Duration::from_secs(10), "brief evicted", || evicted("brief")).await;
    for name in ["forever", "default"] {
        let p = pods.get(name).await.expect("still there");
        assert!(p.metadata.deletion_timestamp.is_none(), "{name} tolerates the taint for longer");
    }
}

/// Owner references by hand, for the garbage collector rows.
fn owned_config_map(name: &str, owners: &[(&str, &str, &str)]) -> k8s_openapi::api::core::v1::ConfigMap {
    let refs: Vec<serde_json::Value> = owners
        .iter()
        .map(|(kind, name, uid)| serde_json::json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": true}))
        .collect();
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "ownerReferences": refs}})).expect("configmap")
}

#[tokio::test]
async fn c059_c060_cycles_do_not_block_collection_and_a_live_second_owner_keeps_a_dependent() {
    let h = harness(&["garbagecollector"]).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let uid = |cm: &k8s_openapi::api::core::v1::ConfigMap| cm.metadata.uid.clone().expect("uid");
    // A cycle a -> b -> c -> a (each owned by the previous).
    let a = cms.create(&PostParams::default(), &owned_config_map("a", &[])).await.expect("a");
    let b =
        cms.create(&PostParams::default(), &owned_config_map("b", &[("ConfigMap", "a", &uid(&a))])).await.expect("b");
    let c =
        cms.create(&PostParams::default(), &owned_config_map("c", &[("ConfigMap", "b", &uid(&b))])).await.expect("c");
    let refs = serde_json::json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": uid(&c)}]}});
    cms.patch("a", &PatchParams::default(), &Patch::Merge(&refs)).await.expect("close the cycle");
    cms.delete("a", &DeleteParams::background()).await.expect("delete a");
    for name in ["a", "b", "c"] {
        gone(&cms, name).await;
    }
    // Two owners; one deleted in the foreground: the dependent stays, untouched.
    let o1 = cms.create(&PostParams::default(), &owned_config_map("owner-1", &[])).await.expect("o1");
    let o2 = cms.create(&PostParams::default(), &owned_config_map("owner-2", &[])).await.expect("o2");
    cms.create(
        &PostParams::default(),
        &owned_config_map("shared", &[("ConfigMap", "owner-1", &uid(&o1)), ("ConfigMap", "owner-2", &uid(&o2))]),
    )
    .await
    .expect("shared");
    cms.delete("owner-1", &DeleteParams::foreground()).await.expect("delete owner-1");
    gone(&cms, "owner-1").await;
    let shared = cms.get("shared").await.expect("the dependent with a live owner stays");
    assert!(shared.metadata.deletion_timestamp.is_none());
    let owners: Vec<String> = shared.metadata.owner_references.iter().flatten().map(|r| r.name.clone()).collect();
    assert_eq!(owners, ["owner-2"], "the reference to the deleted owner is dropped");
}

#[tokio::test]
async fn c056_c061_deleting_a_deployment_in_the_background_collects_its_sets_and_pods_and_orphan_keeps_them() {
    let h = harness(&["replicaset", "deployment", "garbagecollector"]).await;
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    for name in ["bg", "orphan"] {
        deployments
            .create(&PostParams::default(), &deployment(name, 2, "x:v1", serde_json::json!({})))
            .await
            .expect("create");
    }
    for name in ["bg", "orphan"] {
        let selector = ListParams::default().labels(&format!("app={name}"));
        eventually(Duration::from_secs(20), &format!("2 pods of {name}"), || async {
            (pods.list(&selector).await.ok()?.items.len() == 2).then_some(())
        })
        .await;
    }
    deployments.delete("bg", &DeleteParams::background()).await.expect("delete");
    eventually(Duration::from_secs(20), "bg's set and pods collected", || async {
        let selector = ListParams::default().labels("app=bg");
        (sets.list(&selector).await.ok()?.items.is_empty() && pods.list(&selector).await.ok()?.items.is_empty())
            .then_some(())
    })
    .await;
    deployments.delete("orphan", &DeleteParams::orphan()).await.expect("delete");
    gone(&deployments, "orphan").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let selector = ListParams::default().labels("app=orphan");
    let left = sets.list(&selector).await.expect("sets").items;
    assert_eq!(left.len(), 1, "the set stays");
    assert!(left[0].metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()), "without its owner reference");
    assert_eq!(pods.list(&selector).await.expect("pods").items.len(), 2, "and so do its pods");
}

#[tokio::test]
async fn c109_c110_c111_c112_rolling_updates_adopt_clean_up_scale_proportionally_and_roll_over() {
    let h = harness(&["replicaset", "deployment"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(h.client.clone(), "default");
    // C109: a matching ReplicaSet made beforehand is adopted (it runs the same template).
    let mut pre = replica_set("web", 2);
    pre.spec.as_mut().expect("spec").template.as_mut().expect("t").spec.as_mut().expect("s").containers[0].image =
        Some("web:v1".into());
    pre.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    sets.create(&PostParams::default(), &pre).await.expect("orphan set");
    let mut d = deployment("web", 2, "web:v1", serde_json::json!({}));
    d.spec.as_mut().expect("spec").revision_history_limit = Some(1);
    deployments.create(&PostParams::default(), &d).await.expect("create");
    rolled_out(&deployments, "web", 2).await;
    let adopted = sets.get("web").await.expect("the orphan set");
    assert_eq!(adopted.metadata.owner_references.as_ref().map(|r| r[0].kind.as_str()), Some("Deployment"));

    // C110: after three more rollouts only revisionHistoryLimit (1) old sets remain.
    let image =
        |i: &str| serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    for v in ["web:v2", "web:v3", "web:v4"] {
        deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image(v))).await.expect("rollout");
        rolled_out(&deployments, "web", 2).await;
    }
    eventually(Duration::from_secs(20), "one old set kept", || async {
        let all = sets.list(&ListParams::default()).await.ok()?.items;
        (all.len() == 2).then_some(())
    })
    .await;

    // C112: a rollout that cannot finish (its pods never become ready) is rolled over by the
    // next template; the stuck set goes to zero.
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(image("web:never-ready-1")))
        .await
        .expect("stuck");
    eventually(Duration::from_secs(20), "the stuck set surged", || async {
        let all = sets.list(&ListParams::default()).await.ok()?.items;
        all.iter()
            .any(|rs| image_of(rs) == "web:never-ready-1" && rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .then_some(())
    })
    .await;
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(image("web:v5"))).await.expect("rollover");
    rolled_out(&deployments, "web", 2).await;
    let size_of = |all: &[ReplicaSet], image: &str| {
        all.iter().find(|rs| image_of(rs) == image).and_then(|rs| rs.spec.as_ref()?.replicas)
    };
    let all = sets.list(&ListParams::default()).await.expect("sets").items;
    assert_eq!(size_of(&all, "web:never-ready-1"), Some(0));

    // C111: 10 replicas (surge 3, unavailable 2) stuck mid-rollout at 8 old + 5 new; resized to
    // 20, the 10 extra go 6 to the old set and 4 to the new, in proportion.
    let ten = serde_json::json!({"spec": {"replicas": 10, "strategy": {"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&ten)).await.expect("resize");
    rolled_out(&deployments, "web", 10).await;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(image("web:never-ready-2")))
        .await
        .expect("stuck");
    eventually(Duration::from_secs(20), "8 old and 5 new", || async {
        let all = sets.list(&ListParams::default()).await.ok()?.items;
        (size_of(&all, "web:v5") == Some(8) && size_of(&all, "web:never-ready-2") == Some(5)).then_some(())
    })
    .await;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 20}})))
        .await
        .expect("scale");
    eventually(Duration::from_secs(20), "14 old and 9 new", || async {
        let all = sets.list(&ListParams::default()).await.ok()?.items;
        (size_of(&all, "web:v5") == Some(14) && size_of(&all, "web:never-ready-2") == Some(9)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn jobs_run_to_completion_or_fail_at_their_backoff_limit_on_a_real_cluster() {
    let c = Cluster::start().await;
    let jobs = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: ok}
spec:
  completions: 2
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo done"]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: bad}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 3"]}]
"#;
    c.k.run_stdin(&["apply", "-f", "-"], jobs).ok();
    let waited = c.k.run(&["wait", "--for=condition=Complete", "job/ok", "--timeout=90s"]);
    assert_eq!(waited.code, 0, "{waited:?}\n{}", c.cm.log());
    let ok = c.k.run(&["get", "job", "ok", "-o", "jsonpath={.status.succeeded}"]).ok().stdout;
    assert_eq!(ok, "2");
    let logs = c.k.run(&["logs", "-l", "job-name=ok"]).ok().stdout;
    assert_eq!(logs.lines().filter(|l| *l == "done").count(), 2, "{logs}");
    let failed = c.k.run(&["wait", "--for=condition=Failed", "job/bad", "--timeout=120s"]);
    assert_eq!(failed.code, 0, "{failed:?}\n{}", c.cm.log());
    let reason =
        c.k.run(&[
            "get",
            "job",
            "bad",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason} {.status.failed}",
        ])
        .ok()
        .stdout;
    assert_eq!(reason, "BackoffLimitExceeded 2");
}

#[tokio::test]
async fn c117_c118_budgets_get_their_status_from_the_healthy_pods_and_the_owners_scale() {
    let h = harness(&["replicaset", "deployment", "disruption"]).await;
    fake_kubelet(h.client.clone(), h.stop.clone());
    let deployments: Api<Deployment> = Api::namespaced(h.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("guarded", 3, "x:v1", serde_json::json!({})))
        .await
        .expect("create");
    rolled_out(&deployments, "guarded", 3).await;
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(h.client.clone(), "default");
    let budget = |name: &str, spec: serde_json::Value| {
        let mut spec = spec;
        spec["selector"] = serde_json::json!({"matchLabels": {"app": "guarded"}});
        serde_json::from_value::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
            serde_json::json!({"metadata": {"name": name}, "spec": spec}),
        )
        .expect("pdb")
    };
    budgets.create(&PostParams::default(), &budget("min", serde_json::json!({"minAvailable": 2}))).await.expect("pdb");
    budgets
        .create(&PostParams::default(), &budget("max", serde_json::json!({"maxUnavailable": "34%"})))
        .await
        .expect("pdb");
    let status_of = |name: &'static str| {
        let budgets = budgets.clone();
        async move {
            let s = budgets.get(name).await.ok()?.status?;
            let c = s.conditions.as_ref()?.first()?.clone();
            Some((s.current_healthy, s.desired_healthy, s.expected_pods, s.disruptions_allowed, c.status, c.reason))
        }
    };
    eventually(Duration::from_secs(10), "min: 3 healthy, 2 desired, 1 allowed", || async {
        (status_of("min").await? == (3, 2, 3, 1, "True".into(), "SufficientPods".into())).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "max: 34% of 3 rounds up to 2 unavailable", || async {
        (status_of("max").await? == (3, 1, 3, 2, "True".into(), "SufficientPods".into())).then_some(())
    })
    .await;
    // C117: an update is processed again; no room left makes DisruptionAllowed False.
    budgets
        .patch("min", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 3}})))
        .await
        .expect("patch");
    eventually(Duration::from_secs(10), "min: no disruption allowed", || async {
        (status_of("min").await? == (3, 3, 3, 0, "False".into(), "InsufficientPods".into())).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_daemon_set_runs_on_the_node_through_the_scheduler_and_rolls_out() {
    let c = Cluster::start().await;
    let ds = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: agent, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#;
    c.k.run_stdin(&["apply", "-f", "-"], ds).ok();
    let out = c.k.run(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    assert!(out.code == 0 && out.stdout.contains("successfully rolled out"), "{out:?}\n{}", c.cm.log());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let list = pods.list(&ListParams::default().labels("app=agent")).await.expect("pods").items;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].spec.as_ref().and_then(|s| s.node_name.as_deref()), Some(c.node.name.as_str()));
    c.k.run(&["set", "image", "daemonset/agent", "agent=busybox:1.36"]).ok();
    let out = c.k.run(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    assert!(out.code == 0 && out.stdout.contains("successfully rolled out"), "{out:?}\n{}", c.cm.log());
    eventually(Duration::from_secs(60), "one agent pod, the new image", || async {
        let live = images_of_live_pods(&pods.list(&ListParams::default().labels("app=agent")).await.ok()?.items);
        (live == ["busybox:1.36"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stateful_set_starts_its_pods_in_order_with_stable_names_and_scales_down_from_the_top() {
    let c = Cluster::start().await;
    let manifest = r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: db, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#;
    c.k.run_stdin(&["apply", "-f", "-"], manifest).ok();
    let out = c.k.run(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", c.cm.log());
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let p0 = pods.get("db-0").await.expect("db-0");
    let p1 = pods.get("db-1").await.expect("db-1");
    let started = |p: &Pod| p.metadata.creation_timestamp.clone().expect("created").0;
    assert!(started(&p0) <= started(&p1), "db-0 first");
    // The pod's hostname is its name, under the headless Service's subdomain.
    let hostname = c.k.run(&["exec", "db-0", "--", "hostname"]).ok().stdout;
    assert_eq!(hostname.trim(), "db-0");
    assert_eq!(p0.spec.as_ref().and_then(|s| s.subdomain.as_deref()), Some("db"));
    // The headless Service's Endpoints carry the hostnames.
    let endpoints: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    eventually(Duration::from_secs(30), "db's endpoints with hostnames", || async {
        let e = endpoints.get_opt("db").await.ok()??;
        let mut names: Vec<String> =
            e.subsets?.iter().flat_map(|s| s.addresses.iter().flatten()).filter_map(|a| a.hostname.clone()).collect();
        names.sort();
        (names == ["db-0", "db-1"]).then_some(())
    })
    .await;
    let uid0 = p0.metadata.uid.clone();
    c.k.run(&["scale", "statefulset/db", "--replicas=1"]).ok();
    eventually(Duration::from_secs(60), "db-1 gone, the same db-0 kept", || async {
        let p1 = pods.get_opt("db-1").await.ok()?;
        let p0 = pods.get_opt("db-0").await.ok()??;
        (p1.is_none() && p0.metadata.uid == uid0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn c057_c134_c135_c136_replication_controllers_adopt_scale_release_and_are_collected() {
    let h = harness(&["replicationcontroller", "garbagecollector"]).await;
    let rcs: Api<k8s_openapi::api::core::v1::ReplicationController> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    // C134: an ownerless pod the selector matches is adopted.
    let orphan: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-adoption", "labels": {"name": "pod-adoption"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &orphan).await.expect("orphan");
    // The pod and the RC reach the controller on two watches, in either order. Should the RC come
    // first, it creates a pod, adopts the orphan when it arrives and deletes the newer of the two:
    // the orphan must be older by a whole second (creation timestamps have seconds only), as
    // upstream's test gets by waiting for the pod to run first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rc: k8s_openapi::api::core::v1::ReplicationController = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pod-adoption"},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"name": "pod-adoption"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .expect("rc");
    let rc = rcs.create(&PostParams::default(), &rc).await.expect("rc");
    let spec = rc.spec.clone().expect("spec");
    assert_eq!(
        spec.selector.as_ref().map(|s| s["name"].as_str()),
        Some("pod-adoption"),
        "selector defaulted from the template"
    );
    let uid = rc.metadata.uid.clone().expect("uid");
    eventually(Duration::from_secs(10), "the orphan adopted", || async {
        let p = pods.get("pod-adoption").await.ok()?;
        let r = p.metadata.owner_references?.into_iter().next()?;
        (r.kind == "ReplicationController" && r.uid == uid).then_some(())
    })
    .await;
    // C135: the scale subresource resizes it.
    let scale = rcs.get_scale("pod-adoption").await.expect("scale");
    assert_eq!(scale.status.as_ref().and_then(|s| s.selector.clone()).as_deref(), Some("name=pod-adoption"));
    rcs.patch_scale(
        "pod-adoption",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("scale");
    let owned = wait_owned(&pods, &uid, 2).await;
    eventually(Duration::from_secs(10), "status.replicas 2", || async {
        (rcs.get("pod-adoption").await.ok()?.status?.replicas == 2).then_some(())
    })
    .await;
    // C136: relabelled out of the selector, a pod is released (and replaced).
    let released = owned[0].metadata.name.clone().expect("name");
    pods.patch(
        &released,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"name": "gone"}}})),
    )
    .await
    .expect("relabel");
    eventually(Duration::from_secs(10), "released", || async {
        let p = pods.get(&released).await.ok()?;
        p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()).then_some(())
    })
    .await;
    wait_owned(&pods, &uid, 2).await;
    // C057: deleted in the background, its pods are collected.
    rcs.delete("pod-adoption", &DeleteParams::background()).await.expect("delete");
    eventually(Duration::from_secs(20), "the rc's pods collected", || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        owned_by(&list, &uid).is_empty().then_some(())
    })
    .await;
    assert!(pods.get_opt(&released).await.expect("get").is_some(), "the released pod stays");
}

#[tokio::test]
async fn c058_c062_a_foreground_deleted_rc_waits_for_its_pods_and_an_orphaned_one_leaves_them() {
    type Rc = k8s_openapi::api::core::v1::ReplicationController;
    let h = harness(&["replicationcontroller", "garbagecollector"]).await;
    let rcs: Api<Rc> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let rc = |name: &str| -> Rc {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"rc": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
        .expect("rc")
    };
    let fg = rcs.create(&PostParams::default(), &rc("fg")).await.expect("fg");
    let orphan = rcs.create(&PostParams::default(), &rc("orphan")).await.expect("orphan");
    let fg_pods = wait_owned(&pods, fg.metadata.uid.as_deref().expect("uid"), 3).await;
    let orphan_uid = orphan.metadata.uid.clone().expect("uid");
    wait_owned(&pods, &orphan_uid, 3).await;

    // C058: one pod holds a finalizer, so it outlives the others; the RC must outlive it.
    let held = fg_pods[0].metadata.name.clone().expect("name");
    let hold = serde_json::json!({"metadata": {"finalizers": ["e2e.rkube.dev/hold"]}});
    pods.patch(&held, &PatchParams::default(), &Patch::Merge(&hold)).await.expect("hold");
    rcs.delete("fg", &DeleteParams::foreground()).await.expect("delete fg");
    eventually(Duration::from_secs(20), "fg's other pods gone, the held one terminating", || async {
        let list = pods.list(&ListParams::default().labels("rc=fg")).await.ok()?.items;
        (list.len() == 1 && list[0].metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = rcs.get("fg").await.expect("the rc stays while a pod of it is left");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(waiting.metadata.finalizers.iter().flatten().any(|f| f == "foregroundDeletion"), "{:?}", waiting.metadata);
    pods.patch(&held, &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})))
        .await
        .expect("release");
    gone(&rcs, "fg").await;
    assert!(pods.list(&ListParams::default().labels("rc=fg")).await.expect("pods").items.is_empty());

    // C062: orphaned, the pods stay and lose their owner reference.
    rcs.delete("orphan", &DeleteParams::orphan()).await.expect("delete orphan");
    gone(&rcs, "orphan").await;
    eventually(Duration::from_secs(10), "3 ownerless pods of orphan", || async {
        let list = pods.list(&ListParams::default().labels("rc=orphan")).await.ok()?.items;
        let free = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
        let free = free.filter(|p| p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()));
        (free.count() == 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.list(&ListParams::default().labels("rc=orphan")).await.expect("pods").items.len(), 3);
}

#[tokio::test]
async fn a_repeated_event_is_counted_on_the_first_instead_of_written_again() {
    let h = harness(&[]).await;
    let recorder = controller_manager::events::Recorder::new(h.client.clone());
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "noisy"}})).expect("cm"),
        )
        .await
        .expect("configmap");
    for _ in 0..3 {
        recorder.warning(controller_manager::events::reference(&cm), "Repeated", "the same thing again".into());
    }
    recorder.normal(controller_manager::events::reference(&cm), "Other", "something else".into());
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "one Repeated event with count 3, one Other", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let mine: Vec<_> = list.iter().filter(|e| e.involved_object.name.as_deref() == Some("noisy")).collect();
        let repeated: Vec<_> = mine.iter().filter(|e| e.reason.as_deref() == Some("Repeated")).collect();
        (mine.len() == 2 && repeated.len() == 1 && repeated[0].count == Some(3)).then_some(())
    })
    .await;
}
