//! Component tests: a pod worker against the in-memory runtime, with statuses and the final
//! delete captured in memory; and the CRI seam over a real unix socket.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use proto::cri as pb;
use tokio::sync::mpsc;

use super::env::NodeAllocatable;
use super::manager::{PodEvent, PodManager};
use super::source::MapSource;
use super::spec::SpecContext;
use super::worker::{NodeContext, PodApi, PodWorker, Update};
use crate::cri::Cri;
use crate::events::Recorder;
use crate::runtime::fake::FakeRuntime;

#[derive(Default)]
struct MemoryApi {
    statuses: Mutex<Vec<PodStatus>>,
    /// (pod name, status) in the order written.
    by_pod: Mutex<Vec<(String, PodStatus)>>,
    /// Names of the pods finally deleted.
    deleted: Mutex<Vec<String>>,
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

#[async_trait::async_trait]
impl PodApi for MemoryApi {
    async fn update_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), String> {
        self.statuses.lock().expect("lock").push(status.clone());
        self.by_pod.lock().expect("lock").push((name(pod), status.clone()));
        Ok(())
    }
    async fn delete_final(&self, pod: &Pod) -> Result<(), String> {
        self.deleted.lock().expect("lock").push(name(pod));
        Ok(())
    }
}

impl MemoryApi {
    fn last(&self) -> PodStatus {
        self.statuses.lock().expect("lock").last().cloned().unwrap_or_default()
    }

    fn last_of(&self, pod: &str) -> PodStatus {
        let all = self.by_pod.lock().expect("lock");
        all.iter().rev().find(|(n, _)| n == pod).map(|(_, s)| s.clone()).unwrap_or_default()
    }
}

struct Harness {
    runtime: Arc<FakeRuntime>,
    api: Arc<MemoryApi>,
    events: Recorder,
    tx: mpsc::UnboundedSender<Update>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
        "status": {"phase": "Pending"}
    }))
    .expect("pod")
}

fn start(p: Pod) -> Harness {
    let dir =
        std::env::temp_dir().join(format!("kubelet-worker-{}-{}", std::process::id(), crate::runtime::now_nanos()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n").expect("resolv");
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("busybox");
    let api = Arc::new(MemoryApi::default());
    let events = Recorder::new(None, "n1");
    let ctx = context(&dir, &runtime, &api, &events);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(PodWorker::new(ctx, p).run(rx));
    Harness { runtime, api, events, tx, _dir: TempDir(dir) }
}

fn context(
    dir: &std::path::Path,
    runtime: &Arc<FakeRuntime>,
    api: &Arc<MemoryApi>,
    events: &Recorder,
) -> Arc<NodeContext> {
    Arc::new(NodeContext {
        host_ip: "192.0.2.2".into(),
        cri: Cri::new(runtime.clone()),
        source: Arc::new(MapSource::default()),
        api: api.clone(),
        events: events.clone(),
        spec: SpecContext {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: dir.join("logs"),
            root_dir: dir.join("root"),
            host_resolv: dir.join("resolv.conf"),
            node_memory_bytes: 1 << 30,
        },
        allocatable: NodeAllocatable { cpu_milli: 2000, memory_bytes: 1 << 30, ephemeral_storage_bytes: 1 << 34 },
        resync: Duration::from_millis(100),
        images: Default::default(),
    })
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn phase(s: &PodStatus) -> String {
    s.phase.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_pod_runs_restarts_after_a_crash_and_backs_off_on_the_second() {
    let h = start(pod(
        serde_json::json!({"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]}),
    ));
    until("Running", || phase(&h.api.last()) == "Running").await;
    let calls = h.runtime.calls();
    assert!(calls.iter().any(|c| c.starts_with("RunPodSandbox p")), "{calls:?}");
    assert!(calls.iter().any(|c| c == "CreateContainer c"), "{calls:?}");
    let st = h.api.last();
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.2"));
    assert_eq!(st.host_ip.as_deref(), Some("192.0.2.2"));

    // First crash: restarted at once.
    let (first, _) = h.runtime.containers_named("c").pop().expect("container");
    h.runtime.exit(&first, 1, false);
    until("a second instance", || h.runtime.containers_named("c").len() == 2).await;
    until("restartCount 1", || {
        h.api.last().container_statuses.unwrap_or_default().first().is_some_and(|s| s.restart_count == 1)
    })
    .await;

    // Second crash: CrashLoopBackOff (10 s) with the crash as lastState.
    let (second, _) = h.runtime.containers_named("c").pop().expect("container");
    h.runtime.exit(&second, 2, false);
    until("CrashLoopBackOff", || {
        h.api.last().container_statuses.unwrap_or_default().first().is_some_and(|s| {
            s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
                && s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some_and(|t| t.exit_code == 2)
        })
    })
    .await;
    assert_eq!(h.runtime.containers_named("c").len(), 2, "no third start during backoff");
    assert!(h.events.recorded().iter().any(|(_, r, _)| r == "BackOff"));
}

#[tokio::test]
async fn oom_kills_are_reported_and_never_pods_finish() {
    let h = start(pod(
        serde_json::json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never"}]}),
    ));
    until("Running", || phase(&h.api.last()) == "Running").await;
    let (id, _) = h.runtime.containers_named("c").pop().expect("container");
    h.runtime.exit(&id, 137, true);
    until("Failed", || phase(&h.api.last()) == "Failed").await;
    let t = h.api.last().container_statuses.unwrap_or_default()[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    until("the sandbox stopped to free its IP", || h.runtime.calls().iter().any(|c| c.starts_with("StopPodSandbox")))
        .await;
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_and_its_object_removed() {
    let p = pod(
        serde_json::json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]}),
    );
    let h = start(p.clone());
    until("Running", || phase(&h.api.last()) == "Running").await;
    let mut deleting = p;
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    deleting.metadata.deletion_grace_period_seconds = Some(1);
    h.tx.send(Update::Pod(Box::new(deleting))).expect("send");
    until("the final delete", || !h.api.deleted.lock().expect("lock").is_empty()).await;
    let calls = h.runtime.calls();
    let stop = calls.iter().position(|c| c.starts_with("StopContainer")).expect("stopped");
    let remove = calls.iter().position(|c| c.starts_with("RemovePodSandbox")).expect("removed");
    assert!(stop < remove, "{calls:?}");
    assert!(h.events.recorded().iter().any(|(_, r, m)| r == "Killing" && m == "Stopping container c"));
}

#[tokio::test]
async fn a_missing_config_map_holds_the_container_with_create_container_config_error() {
    let h = start(pod(
        serde_json::json!({"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]}]}),
    ));
    until("CreateContainerConfigError", || {
        h.api.last().container_statuses.unwrap_or_default().first().is_some_and(|s| {
            s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                == Some("CreateContainerConfigError")
        })
    })
    .await;
    assert_eq!(phase(&h.api.last()), "Pending");
    assert!(h.runtime.containers_named("c").is_empty());
}

#[tokio::test]
async fn the_cri_seam_works_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("kubelet-cri-{}", std::process::id()));
    let socket = dir.join("cri.sock");
    let runtime = Arc::new(FakeRuntime::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let socket = socket.clone();
        let runtime = runtime.clone();
        tokio::spawn(async move {
            crate::cri::serve(runtime, &socket, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    let mut cri = None;
    for _ in 0..100 {
        if let Ok(c) = Cri::connect(&format!("unix://{}", socket.display())).await {
            cri = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cri = cri.expect("connected");
    let v = cri.version(pb::VersionRequest::default()).await.expect("version");
    assert_eq!(v.runtime_name, "fake");
    let id = cri
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pb::PodSandboxConfig {
                metadata: Some(pb::PodSandboxMetadata {
                    name: "p".into(),
                    uid: "u".into(),
                    namespace: "ns".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .expect("sandbox")
        .pod_sandbox_id;
    let listed = cri.list_pod_sandbox(pb::ListPodSandboxRequest { filter: None }).await.expect("list").items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    let err = cri
        .container_status(pb::ContainerStatusRequest { container_id: "nope".into(), verbose: false })
        .await
        .expect_err("missing");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let _ = stop_tx.send(());
    server.await.expect("join").expect("served");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_missing_config_map_volume_is_a_failed_mount_and_starts_nothing() {
    let h = start(pod(serde_json::json!({
        "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent", "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "absent"}}]
    })));
    until("a FailedMount event", || {
        h.events.recorded().iter().any(|(t, r, m)| {
            t == "Warning"
                && r == "FailedMount"
                && m == "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found"
        })
    })
    .await;
    assert!(
        h.runtime.calls().iter().all(|c| !c.starts_with("RunPodSandbox")),
        "no sandbox before the volumes are ready"
    );
    assert_eq!(phase(&h.api.last()), "Pending");
}

#[tokio::test]
async fn a_stale_watch_event_does_not_bring_a_finished_pod_back() {
    // A failed init container fails a Never pod; only the plan knows, not the containers.
    let p = pod(serde_json::json!({"restartPolicy": "Never",
        "initContainers": [{"name": "init", "image": "busybox", "imagePullPolicy": "IfNotPresent"}],
        "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]}));
    let h = start(p.clone());
    until("the init container", || !h.runtime.containers_named("init").is_empty()).await;
    let (id, _) = h.runtime.containers_named("init").pop().expect("container");
    h.runtime.exit(&id, 1, false);
    until("Failed", || phase(&h.api.last()) == "Failed").await;
    let reported = h.api.statuses.lock().expect("lock").len();
    // The watch delivers the pod as it was before our update (still Pending).
    h.tx.send(Update::Pod(Box::new(p))).expect("send");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after: Vec<String> = h.api.statuses.lock().expect("lock")[reported..].iter().map(phase).collect();
    assert!(after.iter().all(|ph| ph == "Failed"), "no status but Failed after the stale event: {after:?}");
}

/// A pod manager fed by hand: the events it would get from the pod watch.
fn manager(dir: &std::path::Path) -> (Arc<FakeRuntime>, Arc<MemoryApi>, Recorder, mpsc::UnboundedSender<PodEvent>) {
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("busybox");
    let api = Arc::new(MemoryApi::default());
    let events = Recorder::new(None, "n1");
    let (tx, rx) = mpsc::unbounded_channel();
    let m = PodManager::new(context(dir, &runtime, &api, &events));
    tokio::spawn(m.run(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), std::future::pending()));
    (runtime, api, events, tx)
}

fn host_port_pod(name: &str, created: &str, host_port: i32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "creationTimestamp": created},
        "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 80, "hostPort": host_port}]}]},
        "status": {"phase": "Pending"}
    }))
    .expect("pod")
}

#[tokio::test]
async fn a_pod_whose_host_port_is_taken_is_rejected_and_the_port_is_free_again_once_its_holder_finishes() {
    let dir =
        std::env::temp_dir().join(format!("kubelet-admit-{}-{}", std::process::id(), crate::runtime::now_nanos()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("resolv.conf"), "nameserver 192.0.2.53\n").expect("resolv");
    let _cleanup = TempDir(dir.clone());
    let (runtime, api, events, tx) = manager(&dir);
    let send = |e: PodEvent| tx.send(e).expect("send");
    // Listed newest first: admission waits for the whole list and goes oldest first.
    send(PodEvent::Apply(Box::new(host_port_pod("newer", "2026-01-01T00:00:02Z", 8080))));
    send(PodEvent::Apply(Box::new(host_port_pod("older", "2026-01-01T00:00:01Z", 8080))));
    send(PodEvent::Apply(Box::new(host_port_pod("elsewhere", "2026-01-01T00:00:03Z", 8081))));
    send(PodEvent::Synced);
    until("older Running", || phase(&api.last_of("older")) == "Running").await;
    until("elsewhere Running", || phase(&api.last_of("elsewhere")) == "Running").await;
    until("newer Failed", || phase(&api.last_of("newer")) == "Failed").await;
    let rejected = api.last_of("newer");
    assert_eq!(rejected.reason.as_deref(), Some("NodePorts"));
    assert!(rejected.message.as_deref().is_some_and(|m| m.starts_with("Pod was rejected: ")), "{rejected:?}");
    assert!(events.recorded().iter().any(|(_, r, _)| r == "NodePorts"));
    assert!(runtime.calls().iter().all(|c| !c.starts_with("RunPodSandbox newer")), "{:?}", runtime.calls());

    // Deleted gracefully (as a StatefulSet deletes a failed pod), the rejected pod is removed at once.
    let mut deleting = host_port_pod("newer", "2026-01-01T00:00:02Z", 8080);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
    send(PodEvent::Apply(Box::new(deleting.clone())));
    until("newer finally deleted", || api.deleted.lock().expect("lock").contains(&"newer".to_string())).await;
    send(PodEvent::Delete(Box::new(deleting)));

    // Its replacement is rejected while older holds the port, and admitted after older finished.
    send(PodEvent::Apply(Box::new(host_port_pod("again", "2026-01-01T00:00:04Z", 8080))));
    until("again Failed", || phase(&api.last_of("again")) == "Failed").await;
    let mut finished = host_port_pod("older", "2026-01-01T00:00:01Z", 8080);
    finished.status = serde_json::from_value(serde_json::json!({"phase": "Succeeded"})).expect("status");
    send(PodEvent::Apply(Box::new(finished)));
    send(PodEvent::Apply(Box::new(host_port_pod("third", "2026-01-01T00:00:05Z", 8080))));
    until("third Running", || phase(&api.last_of("third")) == "Running").await;
}
