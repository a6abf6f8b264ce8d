//! End to end: etcd + the apiserver + kubelets on the host's dockerd + the scheduler binary,
//! driven by kubectl. Pods have no nodeName; the scheduler picks.

use std::process::{Child, Stdio};
use std::time::Duration;

use e2e::etcd::Etcd;
use e2e::eventually;
use e2e::kubectl::Kubectl;
use e2e::kubelet::Kubelet;
use e2e::server::Process;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

struct SchedulerProcess(Child);

impl SchedulerProcess {
    fn start(kubeconfig: &std::path::Path, log: &std::path::Path) -> SchedulerProcess {
        let child = e2e::child_command(e2e::binary("scheduler"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("scheduler starts");
        SchedulerProcess(child)
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let pods = pods.clone();
    let name = name.to_string();
    let check = &check;
    eventually(Duration::from_secs(60), &format!("pod {name}: {what}"), || {
        let pods = pods.clone();
        let name = name.clone();
        async move { pods.get(&name).await.ok().filter(|p| check(p)) }
    })
    .await
}

#[tokio::test]
async fn pods_land_by_selectors_taints_and_requests_and_wait_for_a_fitting_node() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let a = Kubelet::start(
        &api.endpoint,
        &["--node-labels", "zone=a", "--register-with-taints", "dedicated=infra:NoSchedule"],
    )
    .await;
    let b = Kubelet::start(&api.endpoint, &["--node-labels", "zone=b"]).await;
    a.wait_ready(&client).await;
    b.wait_ready(&client).await;
    let log = a.dir.path().join("scheduler.log");
    let _sched = SchedulerProcess::start(&api.endpoint.kubeconfig, &log);
    let k = Kubectl::new(&api.endpoint);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"], resources: {requests: {cpu: 100m}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: tolerant}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {zone: a}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"], resources: {requests: {cpu: "100"}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: wants-c}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {zone: c}
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#;
    k.run_stdin(&["apply", "-f", "-"], manifest).ok();
    // The taint keeps `plain` off node a; it runs on b.
    let p =
        wait_pod(&pods, "plain", "Running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .await;
    assert_eq!(node_of(&p), b.name);
    let p = wait_pod(&pods, "tolerant", "bound", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), a.name, "selector plus toleration");
    let p = wait_pod(&pods, "huge", "unschedulable", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
    })
    .await;
    let cond = p
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("condition");
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: infra}."),
    );
    let events = k.run(&["get", "events", "--field-selector", "involvedObject.name=huge"]).ok().stdout;
    assert!(events.contains("FailedScheduling"), "{events}");
    // A node that fits arrives: the waiting pod goes there without anyone asking again.
    let c = Kubelet::start(&api.endpoint, &["--node-labels", "zone=c"]).await;
    let p = wait_pod(&pods, "wants-c", "bound to the new node", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), c.name);
    wait_pod(&pods, "wants-c", "Running", |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .await;
    let ev = k.run(&["get", "events", "--field-selector", "involvedObject.name=plain"]).ok().stdout;
    assert!(
        ev.contains("Scheduled") && ev.contains(&format!("Successfully assigned default/plain to {}", b.name)),
        "{ev}"
    );
    k.run(&["delete", "pod", "--all", "--timeout=60s"]).ok();
}

#[tokio::test]
async fn required_anti_affinity_spreads_pods_one_per_node() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let a = Kubelet::start(&api.endpoint, &[]).await;
    let b = Kubelet::start(&api.endpoint, &[]).await;
    a.wait_ready(&client).await;
    b.wait_ready(&client).await;
    let _sched = SchedulerProcess::start(&api.endpoint.kubeconfig, &a.dir.path().join("scheduler.log"));
    let k = Kubectl::new(&api.endpoint);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let one = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: spread}}}}
spec:
  terminationGracePeriodSeconds: 1
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {{matchLabels: {{app: spread}}}}
        topologyKey: kubernetes.io/hostname
  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}}]
"#
        )
    };
    for name in ["s1", "s2", "s3"] {
        k.run_stdin(&["apply", "-f", "-"], &one(name)).ok();
        // One at a time, so the third is the one left over.
        if name != "s3" {
            wait_pod(&pods, name, "bound", |p| !node_of(p).is_empty()).await;
        }
    }
    let n1 = node_of(&pods.get("s1").await.expect("s1"));
    let n2 = node_of(&pods.get("s2").await.expect("s2"));
    assert_ne!(n1, n2, "one per node");
    let p = wait_pod(&pods, "s3", "unschedulable", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False"))
    })
    .await;
    let msg = p
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.message);
    assert_eq!(msg.as_deref(), Some("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."));
    // Deleting one frees its node for the waiting pod.
    k.run(&["delete", "pod", "s1", "--timeout=60s"]).ok();
    let p = wait_pod(&pods, "s3", "bound after s1 went away", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), n1);
    drop((a, b));
}
