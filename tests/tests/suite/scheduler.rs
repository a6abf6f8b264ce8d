//! End to end: etcd + the apiserver + kubelets on the host's dockerd + the scheduler binary,
//! driven by kubectl. Pods have no nodeName; the scheduler picks.

use std::process::{Child, Stdio};
use std::time::Duration;

use e2e::etcd::Etcd;
use e2e::eventually;
use e2e::kubectl::Kubectl;
use e2e::kubelet::Kubelet;
use e2e::server::Process;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

struct SchedulerProcess(Child);

impl SchedulerProcess {
    fn start(kubeconfig: &std::path::Path, log: &std::path::Path) -> SchedulerProcess {
        Self::start_with(kubeconfig, log, &[])
    }

    fn start_with(kubeconfig: &std::path::Path, log: &std::path::Path, extra: &[&str]) -> SchedulerProcess {
        let child = e2e::child_command(e2e::binary("scheduler"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
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
    let p = wait_pod(&pods, "huge", "unschedulable", unschedulable).await;
    let cond = condition(&p, "PodScheduled").expect("condition");
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some(
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: infra}. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is \
             not helpful for scheduling."
        ),
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
    let p = wait_pod(&pods, "s3", "unschedulable", unschedulable).await;
    let msg = condition(&p, "PodScheduled").and_then(|c| c.message.clone());
    assert_eq!(
        msg.as_deref(),
        Some(
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. preemption: 0/2 nodes are \
             available: 2 No preemption victims found for incoming pod."
        )
    );
    // Deleting one frees its node for the waiting pod.
    k.run(&["delete", "pod", "s1", "--timeout=60s"]).ok();
    let p = wait_pod(&pods, "s3", "bound after s1 went away", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), n1);
    drop((a, b));
}

fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn unschedulable(p: &Pod) -> bool {
    condition(p, "PodScheduled").is_some_and(|c| c.status == "False")
}

fn millicores(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => q.parse::<i64>().expect("cores") * 1000,
    }
}

/// Ledger C316 (basic preemption), C317 (preemption for a critical pod) and C318 (the
/// DisruptionTarget condition on the preempted pod): on a real node, a pod of a higher
/// PriorityClass that fits nowhere evicts a lower one and takes its place; a
/// system-cluster-critical pod then does the same to it.
#[tokio::test]
async fn c316_c317_c318_higher_priority_pods_preempt_lower_ones_which_get_a_disruption_target_condition() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let node = Kubelet::start(&api.endpoint, &[]).await;
    node.wait_ready(&client).await;
    let _sched = SchedulerProcess::start(&api.endpoint.kubeconfig, &node.dir.path().join("scheduler.log"));
    let k = Kubectl::new(&api.endpoint);
    k.run(&["create", "priorityclass", "low", "--value=1"]).ok();
    k.run(&["create", "priorityclass", "high", "--value=1000"]).ok();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let n = nodes.get(&node.name).await.expect("node");
    let alloc = n.status.and_then(|s| s.allocatable).and_then(|a| a.get("cpu").cloned()).expect("allocatable cpu");
    // Two of these never fit together.
    let share = format!("{}m", millicores(&alloc.0) * 6 / 10);
    let pod = |name: &str, ns: &str, class: &str, grace: u32| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  priorityClassName: {class}
  terminationGracePeriodSeconds: {grace}
  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"], resources: {{requests: {{cpu: "{share}"}}}}}}]
"#
        )
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    // `sleep` as PID 1 ignores SIGTERM: the victim stays Terminating for its 4 s grace period.
    k.run_stdin(&["apply", "-f", "-"], &pod("low", "default", "low", 4)).ok();
    let low = wait_pod(&pods, "low", "Running", running).await;
    assert_eq!(low.spec.as_ref().and_then(|s| s.priority), Some(1));
    k.run_stdin(&["apply", "-f", "-"], &pod("high", "default", "high", 1)).ok();
    let victim = wait_pod(&pods, "low", "DisruptionTarget and deletion", |p| {
        condition(p, "DisruptionTarget").is_some() && p.metadata.deletion_timestamp.is_some()
    })
    .await;
    let c = condition(&victim, "DisruptionTarget").expect("condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("PreemptionByScheduler")));
    assert!(victim.metadata.deletion_timestamp.is_some(), "the victim is being deleted");
    let high = wait_pod(&pods, "high", "nominated", |p| {
        p.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()) == Some(node.name.as_str())
    })
    .await;
    assert!(node_of(&high).is_empty(), "it waits for the victim to go before it is bound");
    let high = wait_pod(&pods, "high", "Running in the victim's place", running).await;
    assert_eq!(node_of(&high), node.name);
    let ev = k.run(&["get", "events", "--field-selector", "involvedObject.name=low", "-o", "wide"]).ok().stdout;
    assert!(ev.contains("Preempted") && ev.contains(&format!("on node {}", node.name)), "{ev}");
    // C317: the system class outranks every user class.
    k.run_stdin(&["apply", "-f", "-"], &pod("critical", "kube-system", "system-cluster-critical", 1)).ok();
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let critical = wait_pod(&system, "critical", "Running", running).await;
    assert_eq!(critical.spec.as_ref().and_then(|s| s.priority), Some(2_000_000_000));
    assert_eq!(node_of(&critical), node.name);
    eventually(Duration::from_secs(30), "high is gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("high").await.ok().flatten().is_none().then_some(()) }
    })
    .await;
    k.run(&["delete", "pod", "critical", "-n", "kube-system", "--timeout=60s"]).ok();
}

fn simulated_node(name: &str) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": format!("z{}", name.len() % 3)}},
        "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("node")
}

fn pending_pod(name: &str, scheduler: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m"}}}]}
    }))
    .expect("pod")
}

/// Two schedulers contend for the kube-system/kube-scheduler Lease: one binds, the other waits;
/// when the leader is killed the standby takes over within the lease duration. A second
/// profile name (another scheduler) binds only its own pods. Every pod is bound exactly once.
#[tokio::test]
async fn a_standby_scheduler_takes_over_when_the_leader_dies_and_a_second_scheduler_keeps_to_its_pods() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for i in 0..3 {
        nodes.create(&Default::default(), &simulated_node(&format!("sim-{i}"))).await.expect("node");
    }
    let fast =
        ["--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=500ms"];
    let log_dir = e2e::TempDir::new("sched-ha").expect("dir");
    let mut first = SchedulerProcess::start_with(
        &api.endpoint.kubeconfig,
        &log_dir.path().join("a.log"),
        &[&fast[..], &["--identity=a"]].concat(),
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "kube-system");
    let holder = |leases: Api<k8s_openapi::api::coordination::v1::Lease>| async move {
        leases.get_opt("kube-scheduler").await.ok().flatten().and_then(|l| l.spec?.holder_identity)
    };
    eventually(Duration::from_secs(20), "a leads", || {
        let leases = leases.clone();
        async move { (holder(leases).await.as_deref() == Some("a")).then_some(()) }
    })
    .await;
    let _second = SchedulerProcess::start_with(
        &api.endpoint.kubeconfig,
        &log_dir.path().join("b.log"),
        &[&fast[..], &["--identity=b"]].concat(),
    );
    let _other = SchedulerProcess::start_with(
        &api.endpoint.kubeconfig,
        &log_dir.path().join("other.log"),
        &["--scheduler-name=other", "--leader-elect-resource-name=other-scheduler", "--identity=o"],
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..5 {
        pods.create(&Default::default(), &pending_pod(&format!("before-{i}"), "default-scheduler")).await.expect("pod");
    }
    pods.create(&Default::default(), &pending_pod("for-other", "other")).await.expect("pod");
    pods.create(&Default::default(), &pending_pod("for-nobody", "nobody")).await.expect("pod");
    for i in 0..5 {
        wait_pod(&pods, &format!("before-{i}"), "bound", |p| !node_of(p).is_empty()).await;
    }
    wait_pod(&pods, "for-other", "bound by the other scheduler", |p| !node_of(p).is_empty()).await;
    assert_eq!(holder(leases.clone()).await.as_deref(), Some("a"), "b stood by");
    // The leader dies without giving up the lease.
    let _ = first.0.kill();
    let _ = first.0.wait();
    let killed = std::time::Instant::now();
    for i in 0..5 {
        pods.create(&Default::default(), &pending_pod(&format!("after-{i}"), "default-scheduler")).await.expect("pod");
    }
    for i in 0..5 {
        wait_pod(&pods, &format!("after-{i}"), "bound by the standby", |p| !node_of(p).is_empty()).await;
    }
    assert!(killed.elapsed() < Duration::from_secs(15), "took over in {:?}", killed.elapsed());
    let lease = leases.get("kube-scheduler").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    let p = pods.get("for-nobody").await.expect("pod");
    assert!(node_of(&p).is_empty(), "nobody serves that scheduler name");
    // One Scheduled event per pod: nothing was bound twice.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let all = events.list(&Default::default()).await.expect("events");
    let mut scheduled: std::collections::HashMap<String, usize> = Default::default();
    for e in all.items.iter().filter(|e| e.reason.as_deref() == Some("Scheduled")) {
        *scheduled.entry(e.involved_object.name.clone().unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(scheduled.len(), 11, "{scheduled:?}");
    assert!(scheduled.values().all(|c| *c == 1), "{scheduled:?}");
}

/// Component test: the scheduling loop in-process against the in-memory apiserver, 300
/// simulated nodes and 1,500 pods created at once: all bound, none of the nodes overcommitted,
/// and the load spread (every node used).
#[tokio::test]
async fn a_burst_of_pods_on_hundreds_of_nodes_is_bound_without_overcommitting() {
    let storage = std::sync::Arc::new(apiserver::storage::memory::MemoryStorage::new());
    let api = e2e::server::InProcess::start_on("", Some(storage), |_| {}).await;
    let client = api.endpoint.kube_client().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..300)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                nodes.create(&Default::default(), &simulated_node(&format!("n-{i:03}"))).await.expect("node");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    futures::stream::iter(0..1500)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(&Default::default(), &pending_pod(&format!("p-{i:04}"), "default-scheduler"))
                    .await
                    .expect("pod");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let mut config = scheduler::config::Config::default();
    config.leader_election.leader_elect = false;
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(scheduler::app::schedule(client.clone(), config, stop.clone().cancelled_owned()));
    let bound = eventually(Duration::from_secs(120), "1500 pods bound", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await.ok()?;
            let bound: Vec<String> = list.items.iter().map(node_of).filter(|n| !n.is_empty()).collect();
            (bound.len() == 1500).then_some(bound)
        }
    })
    .await;
    stop.cancel();
    task.await.expect("task").expect("scheduler ran");
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    for n in bound {
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(per_node.len(), 300, "every node used");
    // 4 cpu / 100m = 40 per node at most; least-allocated keeps them close to the mean of 5.
    assert!(per_node.values().all(|c| *c <= 40), "{per_node:?}");
    let max = per_node.values().max().copied().unwrap_or(0);
    assert!(max <= 12, "spread evenly: busiest node has {max}");
}

/// Ledger C310 (resource limits), C311 (node selector matching a fresh label), C312 (node
/// selector matching nothing) and C313 (same hostPort and protocol, one on 0.0.0.0, never on one
/// node), on a real node with kubectl.
#[tokio::test]
async fn c310_c311_c312_c313_requests_selectors_and_host_ports_decide_where_pods_go() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let node = Kubelet::start(&api.endpoint, &[]).await;
    node.wait_ready(&client).await;
    let _sched = SchedulerProcess::start(&api.endpoint.kubeconfig, &node.dir.path().join("scheduler.log"));
    let k = Kubectl::new(&api.endpoint);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let alloc = nodes.get(&node.name).await.expect("node").status.and_then(|s| s.allocatable).expect("allocatable");
    let cpu = millicores(&alloc["cpu"].0);
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra}  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600']}}]\n"
        )
    };
    let with_cpu = |name: &str, m: i64| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600'], resources: {{requests: {{cpu: {m}m}}, limits: {{cpu: {m}m}}}}}}]\n"
        )
    };
    // C310: 70% fits; another 70% does not.
    k.run_stdin(&["apply", "-f", "-"], &with_cpu("fits", cpu * 7 / 10)).ok();
    let p = wait_pod(&pods, "fits", "bound", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), node.name);
    k.run_stdin(&["apply", "-f", "-"], &with_cpu("too-much", cpu * 7 / 10)).ok();
    let p = wait_pod(&pods, "too-much", "unschedulable", unschedulable).await;
    let msg = condition(&p, "PodScheduled").and_then(|c| c.message.clone()).unwrap_or_default();
    assert!(msg.starts_with("0/1 nodes are available: 1 Insufficient cpu."), "{msg}");
    // C312: a selector nobody matches keeps the pod pending with a FailedScheduling event.
    k.run_stdin(&["apply", "-f", "-"], &pod("picky", "  nodeSelector: {label: nonempty}\n")).ok();
    wait_pod(&pods, "picky", "unschedulable", unschedulable).await;
    let ev = k.run(&["get", "events", "--field-selector", "involvedObject.name=picky"]).ok().stdout;
    assert!(ev.contains("FailedScheduling") && ev.contains("didn't match Pod's node affinity/selector"), "{ev}");
    // C311: label the node; a pod selecting that label lands there (and the waiting one too).
    k.run(&["label", "node", &node.name, "label=nonempty"]).ok();
    k.run_stdin(&["apply", "-f", "-"], &pod("labelled", "  nodeSelector: {label: nonempty}\n")).ok();
    let p = wait_pod(&pods, "labelled", "bound", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), node.name);
    let p = wait_pod(&pods, "picky", "bound after the label", |p| !node_of(p).is_empty()).await;
    assert_eq!(node_of(&p), node.name);
    // C313: port 54321/TCP on 0.0.0.0 and on 127.0.0.1 clash; the second waits.
    let port = |ip: &str| {
        format!(
            "  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, '3600'], ports: [{{containerPort: 8080, hostPort: 54321, hostIP: '{ip}', protocol: TCP}}]}}]\n"
        )
    };
    let ported = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{}",
            port(ip)
        )
    };
    k.run_stdin(&["apply", "-f", "-"], &ported("any-ip", "0.0.0.0")).ok();
    wait_pod(&pods, "any-ip", "bound", |p| !node_of(p).is_empty()).await;
    k.run_stdin(&["apply", "-f", "-"], &ported("loopback", "127.0.0.1")).ok();
    let p = wait_pod(&pods, "loopback", "unschedulable", unschedulable).await;
    let msg = condition(&p, "PodScheduled").and_then(|c| c.message.clone()).unwrap_or_default();
    assert!(msg.contains("1 node(s) didn't have free ports for the requested pod ports"), "{msg}");
    k.run(&["delete", "pod", "--all", "--timeout=60s"]).ok();
}
