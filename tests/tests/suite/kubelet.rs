//! End to end: etcd + the apiserver + the kubelet binary on the host's dockerd, driven by real
//! kubectl. Pods are bound by setting `spec.nodeName` (no scheduler yet). Results from inside
//! containers come back through termination messages, which the kubelet reads from the file the
//! container wrote.

use std::time::Duration;

use e2e::etcd::Etcd;
use e2e::eventually;
use e2e::kubectl::Kubectl;
use e2e::kubelet::Kubelet;
use e2e::server::Process;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};
use kube::Api;

struct Cluster {
    kubelet: Kubelet,
    k: Kubectl,
    client: kube::Client,
    _api: Process,
    _etcd: Etcd,
}

async fn cluster(extra: &[&str]) -> Cluster {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let kubelet = Kubelet::start(&api.endpoint, extra).await;
    kubelet.wait_ready(&client).await;
    let k = Kubectl::new(&api.endpoint);
    Cluster { kubelet, k, client, _api: api, _etcd: etcd }
}

impl Cluster {
    fn apply(&self, yaml: &str) {
        let yaml = yaml.replace("NODE", &self.kubelet.name);
        self.k.run_stdin(&["apply", "-f", "-"], &yaml).ok();
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Waits until `check` holds for pod `name`, and returns the pod.
    async fn wait_pod(&self, name: &str, what: &str, secs: u64, check: impl Fn(&Pod) -> bool) -> Pod {
        let pods = self.pods();
        let what = format!("pod {name}: {what}");
        let result = tokio::time::timeout(Duration::from_secs(secs), async {
            loop {
                if let Ok(p) = pods.get(name).await
                    && check(&p)
                {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        match result {
            Ok(p) => p,
            Err(_) => {
                let p = pods.get(name).await.ok();
                panic!("timed out waiting for {what}; last status: {:#?}", p.and_then(|p| p.status));
            }
        }
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn statuses(p: &Pod) -> Vec<ContainerStatus> {
    p.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default()
}

fn status_of(p: &Pod, name: &str) -> ContainerStatus {
    statuses(p).into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no status for {name}"))
}

fn condition(p: &Pod, t: &str) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == t))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// The termination message of a finished container.
fn message(p: &Pod, container: &str) -> String {
    status_of(p, container).state.and_then(|s| s.terminated).and_then(|t| t.message).unwrap_or_default()
}

fn terminated_code(p: &Pod, container: &str) -> Option<i32> {
    status_of(p, container).state.and_then(|s| s.terminated).map(|t| t.exit_code)
}

#[tokio::test]
async fn kubelet_registers_a_ready_node_with_capacity_labels_taints_and_lease() {
    let c =
        cluster(&["--node-labels", "zone=test-a,tier=web", "--register-with-taints", "dedicated=e2e:PreferNoSchedule"])
            .await;
    let node: Node = Api::all(c.client.clone()).get(&c.kubelet.name).await.expect("node");
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("zone").map(String::as_str), Some("test-a"));
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&c.kubelet.name));
    assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    let spec = node.spec.clone().expect("spec");
    assert_eq!(spec.pod_cidr.as_deref(), Some(c.kubelet.pod_cidr.as_str()));
    let taint = &spec.taints.expect("taints")[0];
    assert_eq!(
        (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
        ("dedicated", Some("e2e"), "PreferNoSchedule")
    );
    let status = node.status.expect("status");
    let cap = status.capacity.expect("capacity");
    let cpus = std::thread::available_parallelism().expect("cpus").get().to_string();
    assert_eq!(cap["cpu"].0, cpus);
    assert_eq!(cap["pods"].0, "110");
    assert!(cap["memory"].0.ends_with("Ki"));
    let info = status.node_info.expect("node info");
    assert_eq!(info.kubelet_version, "v1.33.0");
    assert!(info.container_runtime_version.starts_with("docker://"), "{}", info.container_runtime_version);
    let conditions = status.conditions.expect("conditions");
    // DiskPressure is whatever this machine's disk says: under 10 % free is pressure, as upstream's
    // nodefs.available<10% (CI machines and long-lived build machines do get there).
    let df = std::process::Command::new("df").arg("-Pk").arg(c.kubelet.dir.path()).output().expect("df");
    let df = String::from_utf8_lossy(&df.stdout).to_string();
    let f: Vec<i64> = df.lines().nth(1).expect("df line").split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let short = f[2] * 10 < f[0];
    let disk = if short { "True" } else { "False" };
    for (t, want) in [("Ready", "True"), ("MemoryPressure", "False"), ("DiskPressure", disk), ("PIDPressure", "False")]
    {
        let cond = conditions.iter().find(|x| x.type_ == t).unwrap_or_else(|| panic!("{t}"));
        assert_eq!(cond.status, want, "{t}: {:?}", cond.message);
    }
    assert!(status.addresses.expect("addresses").iter().any(|a| a.type_ == "InternalIP"));
    // The images on the node, by tag, with sizes (what the scheduler's ImageLocality reads).
    let nodes: Api<Node> = Api::all(c.client.clone());
    let name = c.kubelet.name.clone();
    eventually(Duration::from_secs(30), "node.status.images to list busybox:latest with a size", || {
        let (nodes, name) = (nodes.clone(), name.clone());
        async move {
            let images = nodes.get(&name).await.ok()?.status?.images?;
            images
                .iter()
                .any(|i| i.names.iter().flatten().any(|n| n == "busybox:latest") && i.size_bytes > Some(0))
                .then_some(())
        }
    })
    .await;
    let lease: Lease = Api::namespaced(c.client.clone(), "kube-node-lease").get(&c.kubelet.name).await.expect("lease");
    let lspec = lease.spec.expect("lease spec");
    assert_eq!(lspec.holder_identity.as_deref(), Some(c.kubelet.name.as_str()));
    assert_eq!(lspec.lease_duration_seconds, Some(40));
    let first = lspec.renew_time.expect("renewed").0;
    // The lease is renewed every 10 s.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let name = c.kubelet.name.clone();
    eventually(Duration::from_secs(25), "the lease to be renewed", || {
        let leases = leases.clone();
        let name = name.clone();
        async move { (leases.get(&name).await.ok()?.spec?.renew_time?.0 > first).then_some(()) }
    })
    .await;
    let shown = c.k.run(&["get", "nodes"]).ok().stdout;
    assert!(shown.contains(&c.kubelet.name), "kubectl get nodes lists {}: {shown}", c.kubelet.name);
    assert!(shown.contains("Ready"), "kubectl get nodes shows a status: {shown}");
}

#[tokio::test]
async fn a_two_container_pod_talks_over_localhost_and_becomes_ready() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  nodeName: NODE
  containers:
  - name: server
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello-from-server > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
    livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
  - name: client
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "until wget -qO /tmp/got http://127.0.0.1:8080/index.html; do sleep 0.2; done; cat /tmp/got > /dev/termination-log; sleep 3600"]
"#,
    );
    let p = c.wait_pod("web", "Ready", 60, |p| condition(p, "Ready") == "True").await;
    assert_eq!(phase(&p), "Running");
    let st = p.status.clone().expect("status");
    let ip: std::net::Ipv4Addr = st.pod_ip.clone().expect("pod IP").parse().expect("IPv4");
    let prefix = c.kubelet.pod_cidr.trim_end_matches("0/24");
    assert!(ip.to_string().starts_with(prefix), "pod IP {ip} in {}", c.kubelet.pod_cidr);
    assert!(st.host_ip.is_some(), "hostIP is reported (C267)");
    assert!(st.start_time.is_some());
    for s in statuses(&p) {
        assert!(s.ready, "{} ready", s.name);
        assert_eq!(s.restart_count, 0);
        assert!(s.container_id.as_deref().is_some_and(|id| id.starts_with("docker://")));
    }
    for t in ["PodScheduled", "Initialized", "ContainersReady", "PodReadyToStartContainers"] {
        assert_eq!(condition(&p, t), "True", "{t}");
    }
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    // The client fetched the page over the pod's loopback; prove it from inside via docker.
    let client_id = status_of(&p, "client").container_id.expect("id").trim_start_matches("docker://").to_string();
    let out = std::process::Command::new("docker")
        .args(["exec", &client_id, "cat", "/tmp/got"])
        .output()
        .expect("docker exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello-from-server");
    let wide = c.k.run(&["get", "pod", "web", "-o", "wide"]).ok().stdout;
    assert!(wide.contains("2/2") && wide.contains("Running") && wide.contains(&c.kubelet.name), "{wide}");
    let events = c.k.run(&["get", "events", "--field-selector", "involvedObject.name=web"]).ok().stdout;
    for reason in ["Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "{reason} event in\n{events}");
    }
}

#[tokio::test]
async fn c220_c221_c288_c289_c300_c302_c237_c239_c240_c241_env_from_config_maps_secrets_fields_and_expansion() {
    let c = cluster(&[]).await;
    c.k.run(&["create", "configmap", "cfg", "--from-literal=greeting=hi", "--from-literal=color=blue"]).ok();
    c.k.run(&["create", "secret", "generic", "sec", "--from-literal=password=s3cret", "--from-literal=user=admin"])
        .ok();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: env, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    resources: {requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 500m, memory: 64Mi}}
    command: ["sh", "-c", "echo \"$(GREETING) cmd\" > /dev/termination-log; env | grep -E '^(GREETING|PASS|CM_|SEC_|MSG|POD_|HOST_IP|CPU_|MEM_)' | sort >> /dev/termination-log"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: MSG, value: "$(GREETING)-$(PASS)-$$(GREETING)-$(UNDEFINED)"}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
    - {name: CPU_REQUEST, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
    - {name: MEM_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: MEM_REQUEST, valueFrom: {resourceFieldRef: {resource: requests.memory, divisor: 1Mi}}}
    envFrom:
    - {configMapRef: {name: cfg}, prefix: CM_}
    - {secretRef: {name: sec}, prefix: SEC_}
"#,
    );
    let p = c.wait_pod("env", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let msg = message(&p, "c");
    let uid = p.metadata.uid.clone().expect("uid");
    let host_ip = p.status.as_ref().and_then(|s| s.host_ip.clone()).expect("host ip");
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.first(), Some(&"hi cmd"), "C302: $(VAR) in the command expands\n{msg}");
    for want in [
        "GREETING=hi".to_string(),
        "PASS=s3cret".into(),
        "CM_greeting=hi".into(),
        "CM_color=blue".into(),
        "SEC_user=admin".into(),
        "SEC_password=s3cret".into(),
        "MSG=hi-s3cret-$(GREETING)-$(UNDEFINED)".into(),
        "POD_NAME=env".into(),
        "POD_NAMESPACE=default".into(),
        format!("POD_UID={uid}"),
        format!("HOST_IP={host_ip}"),
        "CPU_LIMIT=500".into(),
        "CPU_REQUEST=250".into(),
        "MEM_LIMIT=64".into(),
        "MEM_REQUEST=32".into(),
    ] {
        assert!(lines.contains(&want.as_str()), "{want} in\n{msg}");
    }
    assert!(lines.iter().any(|l| l.starts_with("POD_IP=10.244.")), "C241 pod IP\n{msg}");
}

#[tokio::test]
async fn c325_c327_c340_c345_c333_volumes_from_config_maps_secrets_downward_api_and_empty_dir() {
    let c = cluster(&[]).await;
    c.k.run(&["create", "configmap", "cfg", "--from-literal=data-1=value-1"]).ok();
    c.k.run(&["create", "secret", "generic", "sec", "--from-literal=password=s3cret"]).ok();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: vols, namespace: default, labels: {app: vols}}
spec:
  nodeName: NODE
  containers:
  - name: writer
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo shared > /shared/from-writer; sleep 3600"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: reader
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "sleep 3600"]
    volumeMounts:
    - {name: shared, mountPath: /shared}
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: pod, mountPath: /etc/pod}
    - {name: mem, mountPath: /mem}
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec, defaultMode: 0400}}
  - name: pod
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
"#,
    );
    let p = c.wait_pod("vols", "Running", 60, |p| phase(p) == "Running").await;
    let reader = status_of(&p, "reader").container_id.expect("id").trim_start_matches("docker://").to_string();
    let sh = |script: &str| {
        let out = std::process::Command::new("docker")
            .args(["exec", &reader, "sh", "-c", script])
            .output()
            .expect("docker exec");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    eventually(Duration::from_secs(10), "C345: the writer's file in the shared emptyDir", || {
        let got = sh("cat /shared/from-writer 2>/dev/null");
        async move { (got == "shared").then_some(()) }
    })
    .await;
    assert_eq!(sh("cat /etc/cfg/data-1"), "value-1", "C325");
    assert_eq!(sh("stat -L -c %a /etc/cfg/data-1"), "644", "C325 default mode");
    assert_eq!(sh("cat /etc/sec/password"), "s3cret");
    assert_eq!(sh("stat -L -c %a /etc/sec/password"), "400", "C327 defaultMode");
    assert_eq!(sh("cat /etc/pod/name"), "vols", "C340");
    assert_eq!(sh("cat /etc/pod/labels"), "app=\"vols\"");
    assert!(sh("mount").lines().any(|l| l.contains(" /mem ") && l.contains("tmpfs")), "medium Memory is a tmpfs");
    assert!(sh("touch /etc/cfg/x 2>&1; echo $?").ends_with('1'), "configMap volumes are read-only");
    // C333: the file follows the ConfigMap.
    c.k.run(&["patch", "configmap", "cfg", "-p", r#"{"data":{"data-1":"value-2"}}"#]).ok();
    eventually(Duration::from_secs(30), "C333: the updated ConfigMap in the volume", || {
        let got = sh("cat /etc/cfg/data-1");
        async move { (got == "value-2").then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn c232_c250_restart_policies_crash_loop_backoff_and_exit_reasons() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: always-crash, namespace: default}
spec:
  nodeName: NODE
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo dying; exit 3"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: never-fails, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 7"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: onfailure-succeeds, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: OnFailure
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 0"]}]
"#,
    );
    let p = c.wait_pod("never-fails", "Failed", 60, |p| phase(p) == "Failed").await;
    let term = status_of(&p, "c").state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(term.exit_code, 7);
    assert_eq!(term.reason.as_deref(), Some("Error"), "C250: a non-empty reason");
    assert_eq!(status_of(&p, "c").restart_count, 0);
    let p = c.wait_pod("onfailure-succeeds", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(terminated_code(&p, "c"), Some(0));
    assert_eq!(condition(&p, "Ready"), "False");
    let p = c
        .wait_pod("always-crash", "CrashLoopBackOff after two restarts", 90, |p| {
            let s = statuses(p);
            s.first().is_some_and(|s| {
                s.restart_count >= 2
                    && s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            })
        })
        .await;
    assert_eq!(phase(&p), "Running", "a crash-looping Always pod stays Running");
    let last = status_of(&p, "c").last_state.and_then(|l| l.terminated).expect("last state");
    assert_eq!(last.exit_code, 3);
    let events = c.k.run(&["get", "events", "--field-selector", "involvedObject.name=always-crash"]).ok().stdout;
    assert!(events.contains("BackOff"), "{events}");
    // C249: a pod that always fails can still be deleted.
    c.k.run(&["delete", "pod", "always-crash", "--timeout=60s"]).ok();
}

#[tokio::test]
async fn c279_c275_liveness_probes_restart_only_unhealthy_containers() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: sick, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/health; sleep 3; rm -f /tmp/health; sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/health]}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: healthy, namespace: default}
spec:
  nodeName: NODE
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/health; sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/health]}, initialDelaySeconds: 1, periodSeconds: 1, failureThreshold: 1}
"#,
    );
    let p = c
        .wait_pod("sick", "restarted by its liveness probe", 60, |p| {
            statuses(p).first().is_some_and(|s| s.restart_count >= 1)
        })
        .await;
    let events = c.k.run(&["get", "events", "--field-selector", "involvedObject.name=sick"]).ok().stdout;
    assert!(events.contains("Unhealthy") && events.contains("Liveness probe failed"), "{events}");
    assert!(events.contains("Killing"), "{events}");
    drop(p);
    let healthy = c.wait_pod("healthy", "Running", 30, |p| phase(p) == "Running").await;
    assert_eq!(status_of(&healthy, "c").restart_count, 0, "C275: a passing probe restarts nothing");
}

#[tokio::test]
async fn c226_graceful_delete_runs_the_pre_stop_hook_then_removes_the_pod() {
    let c = cluster(&[]).await;
    let marks = c.kubelet.dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: graceful, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'echo term >> /marks/events; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{name: marks, mountPath: /marks}]
    lifecycle:
      preStop: {exec: {command: ["sh", "-c", "echo prestop >> /marks/events"]}}
  volumes: [{name: marks, hostPath: {path: MARKS, type: Directory}}]
"#
    .replace("MARKS", &marks.to_string_lossy());
    c.apply(&yaml);
    c.wait_pod("graceful", "Running", 60, |p| phase(p) == "Running").await;
    c.k.run(&["delete", "pod", "graceful", "--timeout=60s"]).ok();
    let events = std::fs::read_to_string(marks.join("events")).unwrap_or_default();
    assert_eq!(events, "prestop\nterm\n", "preStop ran, then SIGTERM");
    assert!(c.pods().get_opt("graceful").await.expect("get").is_none(), "the kubelet removed the pod object");
    let name = c.kubelet.name.clone();
    eventually(Duration::from_secs(20), "the pod's containers to be removed from Docker", || {
        let gone = !Kubelet::containers_of(&name).iter().any(|(n, _, _)| n.contains("_graceful_"));
        async move { gone.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_kubelet_restart_keeps_containers_running_and_removes_orphans() {
    let mut c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: keep, namespace: default}
spec:
  nodeName: NODE
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: default}
spec:
  nodeName: NODE
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#,
    );
    let before = c.wait_pod("keep", "Running", 60, |p| phase(p) == "Running").await;
    c.wait_pod("orphan", "Running", 60, |p| phase(p) == "Running").await;
    let id = status_of(&before, "c").container_id.expect("id");
    c.kubelet.stop();
    // While the kubelet is down the pod is force-deleted: its containers become orphans.
    c.k.run(&["delete", "pod", "orphan", "--grace-period=0", "--force"]).ok();
    assert!(c.kubelet.containers().iter().any(|(n, _, _)| n.contains("_orphan_")), "containers outlive the kubelet");
    c.kubelet.restart();
    let name = c.kubelet.name.clone();
    eventually(Duration::from_secs(60), "the orphan's containers to be removed", || {
        let gone = !Kubelet::containers_of(&name).iter().any(|(n, _, _)| n.contains("_orphan_"));
        async move { gone.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = c.pods().get("keep").await.expect("pod");
    assert_eq!(status_of(&after, "c").container_id.expect("id"), id, "the same container, adopted");
    assert_eq!(status_of(&after, "c").restart_count, 0);
    assert_eq!(phase(&after), "Running");
    let running: Vec<_> = c.kubelet.containers().into_iter().filter(|(n, _, _)| n.contains("_keep_")).collect();
    assert_eq!(running.len(), 2, "one sandbox and one container, no duplicates: {running:?}");
}

#[tokio::test]
async fn c244_c246_init_containers_run_in_order_and_a_failing_one_fails_a_never_pod() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: inits, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  initContainers:
  - {name: first, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo first >> /work/order"], volumeMounts: [{name: w, mountPath: /work}]}
  - {name: second, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo second >> /work/order"], volumeMounts: [{name: w, mountPath: /work}]}
  containers:
  - {name: app, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo app >> /work/order; cat /work/order > /dev/termination-log"], volumeMounts: [{name: w, mountPath: /work}]}
  volumes: [{name: w, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: init-fails, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  initContainers:
  - {name: bad, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "exit 1"]}
  containers:
  - {name: app, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
"#,
    );
    let p = c.wait_pod("inits", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(message(&p, "app"), "first\nsecond\napp\n");
    assert_eq!(condition(&p, "Initialized"), "True");
    let inits = p.status.as_ref().and_then(|s| s.init_container_statuses.clone()).expect("init statuses");
    assert!(
        inits.iter().all(|s| s.state.as_ref().and_then(|st| st.terminated.as_ref()).is_some_and(|t| t.exit_code == 0))
    );
    let p = c.wait_pod("init-fails", "Failed", 60, |p| phase(p) == "Failed").await;
    let app = status_of(&p, "app");
    assert!(app.state.and_then(|s| s.waiting).is_some(), "C246: the app container never started");
    assert_eq!(condition(&p, "Initialized"), "False");
}

#[tokio::test]
async fn c228_c229_c230_c251_c252_c253_termination_messages_read_only_root_and_hosts() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: msg-file, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, terminationMessagePath: /dev/custom-log, command: ["sh", "-c", "echo -n DONE > /dev/custom-log"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: msg-logs-fail, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, terminationMessagePolicy: FallbackToLogsOnError, command: ["sh", "-c", "echo line-one; echo DONE; exit 1"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: msg-logs-ok, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, terminationMessagePolicy: FallbackToLogsOnError, command: ["sh", "-c", "echo DONE"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: rofs, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  hostAliases: [{ip: "123.45.67.89", hostnames: [foo.example, bar.example]}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    securityContext: {readOnlyRootFilesystem: true}
    command: ["sh", "-c", "if echo x > /file 2>/dev/null; then echo writable; else echo readonly; fi > /dev/termination-log; cat /etc/hosts >> /dev/termination-log"]
"#,
    );
    let p = c.wait_pod("msg-file", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(message(&p, "c"), "DONE", "C229");
    let p = c.wait_pod("msg-logs-fail", "Failed", 60, |p| phase(p) == "Failed").await;
    assert_eq!(message(&p, "c"), "line-one\nDONE\n", "C230");
    let p = c.wait_pod("msg-logs-ok", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(message(&p, "c"), "", "C228");
    let p = c.wait_pod("rofs", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let m = message(&p, "c");
    assert!(m.starts_with("readonly\n"), "C251\n{m}");
    assert!(m.contains("# Kubernetes-managed hosts file."), "C253\n{m}");
    assert!(m.contains("123.45.67.89\tfoo.example\tbar.example"), "C252\n{m}");
    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod ip");
    assert!(m.contains(&format!("{ip}\trofs")), "the pod's own name\n{m}");
}

#[tokio::test]
async fn image_pull_policies_report_err_image_never_pull_and_image_pull_backoff() {
    let c = cluster(&[]).await;
    // The "registry" is a closed loopback port: nothing leaves the machine.
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: never, namespace: default}
spec:
  nodeName: NODE
  containers: [{name: c, image: "local/absent:1", imagePullPolicy: Never}]
---
apiVersion: v1
kind: Pod
metadata: {name: unpullable, namespace: default}
spec:
  nodeName: NODE
  containers: [{name: c, image: "127.0.0.1:1/absent:1", imagePullPolicy: IfNotPresent}]
"#,
    );
    let reason = |p: &Pod| {
        statuses(p)
            .first()
            .and_then(|s| s.state.clone())
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .unwrap_or_default()
    };
    c.wait_pod("never", "ErrImageNeverPull", 60, |p| reason(p) == "ErrImageNeverPull").await;
    c.wait_pod("unpullable", "ErrImagePull", 60, |p| reason(p) == "ErrImagePull" || reason(p) == "ImagePullBackOff")
        .await;
    c.wait_pod("unpullable", "ImagePullBackOff", 60, |p| reason(p) == "ImagePullBackOff").await;
    let p = c.pods().get("unpullable").await.expect("pod");
    assert_eq!(phase(&p), "Pending");
}

#[tokio::test]
async fn oom_killed_containers_are_reported_as_oom_killed() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hog, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    resources: {limits: {memory: 16Mi}}
    command: ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"]
"#,
    );
    let p = c.wait_pod("hog", "Failed", 60, |p| phase(p) == "Failed").await;
    let t = status_of(&p, "c").state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
}

#[tokio::test]
async fn bad_kubelet_flags_are_one_line_errors() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(e2e::binary("kubelet")).args(args).output().expect("runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_string())
    };
    let (ok, err) = run(&[]);
    assert!(!ok);
    assert_eq!(err, "kubelet: --kubeconfig is required (standalone mode without an apiserver is not supported)");
    let (ok, err) = run(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert!(!ok);
    assert!(err.starts_with("kubelet: --kubeconfig /nonexistent/kubeconfig:") && err.lines().count() == 1, "{err}");
}

#[tokio::test]
async fn c248_kubectl_logs_follow_tail_timestamps_previous_and_container_choice() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: talker, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - {name: a, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; sleep 3; echo four"]}
  - {name: b, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo from-b; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: default}
spec:
  nodeName: NODE
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo run-at-$(date +%s%N); sleep 1; exit 1"]}
"#,
    );
    c.wait_pod("talker", "Running", 60, |p| phase(p) == "Running").await;
    // Follow: everything so far, then the rest as it is written, ending when the container does.
    let followed = c.k.run(&["logs", "-f", "talker", "-c", "a"]).ok().stdout;
    assert_eq!(followed, "one\ntwo\nthree\nfour\n", "C248: stdout and stderr, in order");
    assert_eq!(c.k.run(&["logs", "talker", "-c", "a", "--tail=2"]).ok().stdout, "three\nfour\n");
    assert_eq!(c.k.run(&["logs", "talker", "-c", "a", "--limit-bytes=6"]).ok().stdout, "one\ntw");
    let stamped = c.k.run(&["logs", "talker", "-c", "b", "--timestamps"]).ok().stdout;
    let (ts, text) = stamped.trim_end().split_once(' ').expect("timestamp and text");
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{stamped}");
    assert_eq!(text, "from-b");
    // kubectl picks the first container itself ("Defaulted container"); the API asks for one.
    assert!(c.k.run(&["logs", "talker"]).ok().stderr.contains("Defaulted container \"a\""));
    let ambiguous = c.k.run(&["get", "--raw", "/api/v1/namespaces/default/pods/talker/log"]);
    assert_ne!(ambiguous.code, 0);
    assert!(
        ambiguous.stderr.contains("a container name must be specified for pod talker, choose one of: [a b]"),
        "{}",
        ambiguous.stderr
    );
    let bad = c.k.run(&["logs", "talker", "-c", "nope"]);
    assert!(bad.stderr.contains("container nope is not valid for pod talker"), "{}", bad.stderr);

    c.wait_pod("crasher", "restarted once", 60, |p| statuses(p).first().is_some_and(|s| s.restart_count >= 1)).await;
    let previous = c.k.run(&["logs", "crasher", "--previous"]).ok().stdout;
    assert!(previous.starts_with("run-at-"), "{previous}");
    eventually(Duration::from_secs(20), "the current run's log to differ from the previous", || {
        let current = c.k.run(&["logs", "crasher"]).stdout;
        let previous = previous.clone();
        async move { (current.starts_with("run-at-") && current != previous).then_some(()) }
    })
    .await;
}

/// Runs `kubectl exec` checks against a running pod `shell` with kubectl `k`.
fn exec_checks(k: &Kubectl, how: &str) {
    let out = k.run(&["exec", "shell", "--", "echo", "hello"]).ok();
    assert_eq!(out.stdout, "hello\n", "{how}");
    let split = k.run(&["exec", "shell", "--", "sh", "-c", "echo out; sleep 0.2; echo err >&2"]).ok();
    assert_eq!((split.stdout.as_str(), split.stderr.as_str()), ("out\n", "err\n"), "{how}");
    let failed = k.run(&["exec", "shell", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.code, 3, "{how}: the command's exit code\n{}", failed.stderr);
    assert!(failed.stderr.contains("command terminated with exit code 3"), "{how}: {}", failed.stderr);
    let piped = k.run_stdin(&["exec", "-i", "shell", "--", "sh", "-c", "cat; echo done"], "line one\nline two\n");
    assert_eq!(piped.code, 0, "{how}: {}", piped.stderr);
    assert_eq!(piped.stdout, "line one\nline two\ndone\n", "{how}");
}

#[tokio::test]
async fn c270_kubectl_exec_over_websocket_and_spdy_with_exit_codes_stdin_and_cp() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#,
    );
    c.wait_pod("shell", "Running", 60, |p| phase(p) == "Running").await;
    exec_checks(&c.k, "WebSocket v5 (kubectl 1.33)");
    let endpoint_kubeconfig = c.k.kubeconfig().to_path_buf();
    let spdy = Kubectl::with_kubeconfig("kubectl", &endpoint_kubeconfig)
        .with_env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    exec_checks(&spdy, "SPDY/3.1 (WebSockets off)");
    if Kubectl::available("1.27") {
        exec_checks(
            &Kubectl::with_kubeconfig(&Kubectl::versioned_binary("1.27"), &endpoint_kubeconfig),
            "kubectl 1.27 (SPDY only)",
        );
    }
    // kubectl cp is tar over exec, both ways.
    let dir = e2e::TempDir::new("cp").expect("dir");
    let src = dir.path().join("payload.txt");
    let content: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&src, &content).expect("write");
    c.k.run(&["cp", &src.to_string_lossy(), "shell:/tmp/payload.txt"]).ok();
    let size = c.k.run(&["exec", "shell", "--", "wc", "-c", "/tmp/payload.txt"]).ok().stdout;
    assert!(size.starts_with(&content.len().to_string()), "{size}");
    let back = dir.path().join("back.txt");
    c.k.run(&["cp", "shell:/tmp/payload.txt", &back.to_string_lossy()]).ok();
    assert_eq!(std::fs::read_to_string(&back).expect("copied back"), content);
}

/// Reads an HTTP response from 127.0.0.1:`port` (through kubectl port-forward).
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn kubectl_port_forward_reaches_the_pod_over_websocket_and_spdy() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo forwarded-ok > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
"#,
    );
    c.wait_pod("web", "Ready", 60, |p| condition(p, "Ready") == "True").await;
    let kubeconfig = c.k.kubeconfig().to_path_buf();
    let mut variants = vec![
        ("SPDY in WebSocket (kubectl 1.33)", Kubectl::with_kubeconfig("kubectl", &kubeconfig)),
        (
            "raw SPDY",
            Kubectl::with_kubeconfig("kubectl", &kubeconfig).with_env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
        ),
    ];
    if Kubectl::available("1.27") {
        variants.push(("kubectl 1.27", Kubectl::with_kubeconfig(&Kubectl::versioned_binary("1.27"), &kubeconfig)));
    }
    for (how, k) in variants {
        let port = e2e::free_port();
        let mut child = k.spawn(&["port-forward", "pod/web", &format!("{port}:8080")]);
        let got =
            eventually(Duration::from_secs(20), &format!("{how}: a response through port-forward"), || async move {
                http_get(port, "/index.html").await.filter(|r| r.contains("forwarded-ok"))
            })
            .await;
        assert!(got.starts_with("HTTP/1.0 200") || got.starts_with("HTTP/1.1 200"), "{how}: {got}");
        // A second connection over the same session.
        assert!(
            http_get(port, "/index.html").await.is_some_and(|r| r.contains("forwarded-ok")),
            "{how}: second connection"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn kubectl_attach_streams_a_running_containers_output() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"]}]
"#,
    );
    c.wait_pod("ticker", "Running", 60, |p| phase(p) == "Running").await;
    let mut child = c.k.spawn(&["attach", "ticker"]);
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.starts_with("tick-"))
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line).await.expect("attach output in time").expect("join");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.is_some_and(|l| l.starts_with("tick-")));
}

#[tokio::test]
async fn c292_c295_c296_c297_security_context_users_groups_and_privileges() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: as-nobody, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, securityContext: {runAsUser: 65534}, command: ["sh", "-c", "id -u > /dev/termination-log"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: container-ids, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, securityContext: {runAsUser: 1001, runAsGroup: 2002}, command: ["sh", "-c", "echo $(id -u):$(id -g) > /dev/termination-log"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod-ids, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  securityContext: {runAsUser: 1001, runAsGroup: 2002, supplementalGroups: [3003]}
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo $(id -u):$(id -g):$(id -G) > /dev/termination-log"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: caps, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    securityContext: {capabilities: {drop: [ALL], add: [NET_ADMIN]}, allowPrivilegeEscalation: false}
    command: ["sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status > /dev/termination-log; ip link add dummy0 type bridge 2>/dev/null && echo created >> /dev/termination-log || echo refused >> /dev/termination-log"]
---
apiVersion: v1
kind: Pod
metadata: {name: unprivileged, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, securityContext: {privileged: false}, command: ["sh", "-c", "ip link add dummy0 type bridge 2>/dev/null && echo created > /dev/termination-log || echo refused > /dev/termination-log"]}]
"#,
    );
    let done = |name: &'static str| c.wait_pod(name, "Succeeded", 60, |p| phase(p) == "Succeeded");
    assert_eq!(message(&done("as-nobody").await, "c").trim(), "65534", "C292");
    assert_eq!(message(&done("container-ids").await, "c").trim(), "1001:2002", "C295");
    let m = message(&done("pod-ids").await, "c");
    assert!(m.trim().starts_with("1001:2002:") && m.contains("3003"), "C296 {m}");
    let m = message(&done("caps").await, "c");
    // NET_ADMIN only: bit 12.
    assert!(m.contains("CapEff:\t0000000000001000"), "{m}");
    assert!(m.contains("NoNewPrivs:\t1"), "C297: no_new_privs\n{m}");
    assert!(m.trim_end().ends_with("created"), "NET_ADMIN lets it make a link\n{m}");
    assert_eq!(message(&done("unprivileged").await, "c").trim(), "refused", "C293");
}

#[tokio::test]
async fn a_projected_service_account_token_authenticates_as_the_pods_service_account() {
    let c = cluster(&[]).await;
    c.k.run(&["create", "serviceaccount", "robot"]).ok();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: tokened, namespace: default}
spec:
  nodeName: NODE
  serviceAccountName: robot
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token > /dev/termination-log; echo >> /dev/termination-log; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace >> /dev/termination-log"]
    volumeMounts: [{name: api, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}]
  volumes:
  - name: api
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
"#,
    );
    let p = c.wait_pod("tokened", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let m = message(&p, "c");
    let mut lines = m.lines();
    let token = lines.next().expect("token").to_string();
    assert_eq!(lines.next(), Some("default"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let review =
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let out = c.k.run_stdin(&["create", "--validate=false", "-f", "-", "-o", "json"], &review.to_string()).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["status"]["authenticated"], true, "{v}");
    assert_eq!(v["status"]["user"]["username"], "system:serviceaccount:default:robot");
    assert_eq!(v["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"][0], "tokened", "{v}");
}

#[tokio::test]
async fn kubectl_top_reads_node_and_pod_usage_from_the_kubelets() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: burner, namespace: default, labels: {app: burn}}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    resources: {limits: {cpu: 200m, memory: 64Mi}}
    command: ["sh", "-c", "x=$(head -c 8000000 /dev/zero | tr '\\0' a); while true; do :; done"]
"#,
    );
    c.wait_pod("burner", "Running", 60, |p| phase(p) == "Running").await;
    let k = &c.k;
    // Two scrapes give a CPU rate.
    let usage = eventually(Duration::from_secs(40), "pod metrics with CPU use", || async move {
        let out = k.run(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let cpu = v["containers"][0]["usage"]["cpu"].as_str()?.trim_end_matches('n').parse::<u64>().ok()?;
        (cpu > 50_000_000).then_some(v)
    })
    .await;
    assert_eq!(usage["kind"], "PodMetrics");
    let cpu: u64 =
        usage["containers"][0]["usage"]["cpu"].as_str().expect("cpu").trim_end_matches('n').parse().expect("n");
    assert!(cpu < 300_000_000, "the 200m limit holds: {cpu}n");
    let mem: u64 =
        usage["containers"][0]["usage"]["memory"].as_str().expect("memory").trim_end_matches("Ki").parse().expect("Ki");
    assert!(mem > 4 * 1024, "the 8 MB the shell holds shows: {mem}Ki");
    let top = c.k.run(&["top", "pod", "-l", "app=burn"]).ok().stdout;
    assert!(top.contains("burner") && top.contains("CPU(cores)"), "{top}");
    let nodes = c.k.run(&["top", "node"]).ok().stdout;
    assert!(nodes.contains(&c.kubelet.name) && nodes.contains("MEMORY"), "{nodes}");
}

/// Debian's docker-registry on a loopback port, requiring a password (htpasswd, bcrypt).
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: e2e::TempDir,
}

impl Registry {
    async fn start(user: &str, password: &str) -> Registry {
        let dir = e2e::TempDir::new_in("registry", Some(std::env::temp_dir())).expect("dir");
        let port = e2e::free_port();
        let hash = std::process::Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils)");
        std::fs::write(dir.path().join("htpasswd"), hash.stdout).expect("htpasswd file");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: e2e\n    path: {d}/htpasswd\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let child = e2e::child_command("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        eventually(Duration::from_secs(20), "the registry to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Registry { child, port, dir }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .arg("--config")
            .arg(self.dir.path().join("docker-config"))
            .args(args)
            .output()
            .expect("docker")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever the test pulled or tagged from this registry goes too, pass or fail.
        let image = format!("127.0.0.1:{}/private/busybox:e2e", self.port);
        let _ = std::process::Command::new("docker").args(["rmi", "-f", &image]).output();
    }
}

#[tokio::test]
async fn image_pull_secrets_authenticate_to_a_private_registry() {
    let reg = Registry::start("tester", "s3cret").await;
    let image = format!("127.0.0.1:{}/private/busybox:e2e", reg.port);
    // The login lands in this test's own docker config directory.
    let login = reg.docker(&["login", &format!("127.0.0.1:{}", reg.port), "-u", "tester", "-p", "s3cret"]);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    assert!(reg.docker(&["tag", "busybox:latest", &image]).status.success());
    let push = reg.docker(&["push", &image]);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    assert!(reg.docker(&["rmi", &image]).status.success(), "only the registry has it now");

    let c = cluster(&[]).await;
    c.k.run(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server=127.0.0.1:{}", reg.port),
        "--docker-username=tester",
        "--docker-password=s3cret",
    ])
    .ok();
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: with-secret, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{name: regcred}]
  containers: [{name: c, image: IMAGE, imagePullPolicy: Always, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: without-secret, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: IMAGE, imagePullPolicy: Always, command: ["sleep", "3600"]}]
"#
    .replace("IMAGE", &image);
    c.apply(&yaml);
    let waiting = |p: &Pod| {
        statuses(p)
            .first()
            .and_then(|s| s.state.clone())
            .and_then(|s| s.waiting)
            .map(|w| (w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    };
    let p = c
        .wait_pod("without-secret", "ErrImagePull without credentials", 60, |p| {
            waiting(p).is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await;
    drop(p);
    c.wait_pod("with-secret", "Running with the pull secret", 60, |p| phase(p) == "Running").await;
    let events = c.k.run(&["get", "events", "--field-selector", "involvedObject.name=with-secret"]).ok().stdout;
    assert!(events.contains("Successfully pulled image"), "{events}");
    c.k.run(&["delete", "pod", "with-secret", "without-secret", "--timeout=60s"]).ok();
}

#[tokio::test]
async fn c265_pods_get_service_environment_variables() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: fooservice, namespace: default}
spec:
  selector: {name: server}
  ports: [{name: http, port: 8765, targetPort: 8080}]
"#,
    );
    let ip = eventually(Duration::from_secs(10), "the ClusterIP", || {
        let out = c.k.run(&["get", "service", "fooservice", "-o", "jsonpath={.spec.clusterIP}"]).stdout;
        async move { (!out.is_empty()).then_some(out) }
    })
    .await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: env-reader, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "env | grep -E '^(FOOSERVICE|KUBERNETES)_' | sort > /dev/termination-log"]}]
"#,
    );
    let p = c.wait_pod("env-reader", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let m = message(&p, "c");
    for want in [
        format!("FOOSERVICE_SERVICE_HOST={ip}"),
        "FOOSERVICE_SERVICE_PORT=8765".to_string(),
        "FOOSERVICE_SERVICE_PORT_HTTP=8765".to_string(),
        format!("FOOSERVICE_PORT=tcp://{ip}:8765"),
        format!("FOOSERVICE_PORT_8765_TCP=tcp://{ip}:8765"),
        "FOOSERVICE_PORT_8765_TCP_PROTO=tcp".to_string(),
        "FOOSERVICE_PORT_8765_TCP_PORT=8765".to_string(),
        format!("FOOSERVICE_PORT_8765_TCP_ADDR={ip}"),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".to_string(),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
    ] {
        assert!(m.lines().any(|l| l == want), "{want} in\n{m}");
    }
}

#[tokio::test]
async fn a_kubelet_runs_pods_through_a_cri_runtime_on_a_unix_socket() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let client = api.endpoint.kube_client().await;
    let kubelet = Kubelet::start_with_remote_runtime(&api.endpoint).await;
    kubelet.wait_ready(&client).await;
    let c = Cluster { kubelet, k: Kubectl::new(&api.endpoint), client, _api: api, _etcd: etcd };
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "echo via-socket; sleep 3600"]}]
"#,
    );
    c.wait_pod("remote", "Running", 60, |p| phase(p) == "Running").await;
    let node: Node = Api::all(c.client.clone()).get(&c.kubelet.name).await.expect("node");
    assert!(
        node.status.and_then(|s| s.node_info).is_some_and(|i| i.container_runtime_version.starts_with("docker://"))
    );
    assert_eq!(c.k.run(&["logs", "remote"]).ok().stdout, "via-socket\n");
    assert_eq!(c.k.run(&["exec", "remote", "--", "echo", "exec-via-socket"]).ok().stdout, "exec-via-socket\n");
    c.k.run(&["delete", "pod", "remote", "--timeout=60s"]).ok();
}

#[tokio::test]
async fn c303_sidecars_startup_probes_host_network_and_sub_paths() {
    let c = cluster(&[]).await;
    c.k.run(&["create", "configmap", "app", "--from-literal=app.conf=setting=on"]).ok();
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: with-sidecar, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: busybox
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "sleep 2; echo side-ready > /shared/side; sleep 3600"]
    startupProbe: {exec: {command: [test, -f, /shared/side]}, periodSeconds: 1, failureThreshold: 30}
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /shared/side > /dev/termination-log; cat /etc/app.conf >> /dev/termination-log; echo >> /dev/termination-log; echo x > /data/f; ls /shared/per-pod/ >> /dev/termination-log"]
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts:
    - {name: shared, mountPath: /shared}
    - {name: cfg, mountPath: /etc/app.conf, subPath: app.conf}
    - {name: shared, mountPath: /data, subPathExpr: "per-pod/$(POD_NAME)"}
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: cfg, configMap: {name: app}}
---
apiVersion: v1
kind: Pod
metadata: {name: on-host, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  hostNetwork: true
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "if ip link show kube-sink >/dev/null 2>&1; then echo host-netns; else echo pod-netns; fi > /dev/termination-log"]}]
"#,
    );
    let p = c.wait_pod("with-sidecar", "Succeeded", 90, |p| phase(p) == "Succeeded").await;
    assert_eq!(
        message(&p, "main"),
        "side-ready\nsetting=on\nwith-sidecar\n",
        "the sidecar started (its startup probe passed) before main ran; subPath and subPathExpr mounts"
    );
    let p = c.wait_pod("on-host", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    assert_eq!(message(&p, "c").trim(), "host-netns");
    let st = p.status.clone().expect("status");
    assert_eq!(st.pod_ip, st.host_ip, "a hostNetwork pod's IP is the node's");
}

#[tokio::test]
async fn kubectl_exec_with_a_terminal_allocates_a_tty_in_the_container() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: term, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}]
"#,
    );
    c.wait_pod("term", "Running", 60, |p| phase(p) == "Running").await;
    // `script` gives kubectl a terminal, so `-it` really asks for a TTY (and sends its size).
    let kubeconfig = c.k.kubeconfig().to_string_lossy().into_owned();
    let out = std::process::Command::new("script")
        .args(["-qec", "kubectl exec -it term -- sh -c 'tty; stty size; exit 4'", "/dev/null"])
        .env("KUBECONFIG", &kubeconfig)
        .env("COLUMNS", "91")
        .env("LINES", "27")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "a TTY in the container:\n{text}");
    assert_eq!(out.status.code(), Some(4), "the exit code comes through the TTY session too:\n{text}");
}

#[tokio::test]
async fn c224_post_start_hooks_run_and_pod_veths_have_hairpin_mode_on() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: hooked, namespace: default}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    workingDir: /tmp
    command: ["sh", "-c", "sleep 3600"]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "pwd > /tmp/poststart"]}}
"#,
    );
    let p = c.wait_pod("hooked", "Running", 60, |p| phase(p) == "Running").await;
    let id = status_of(&p, "c").container_id.expect("id").trim_start_matches("docker://").to_string();
    let out = std::process::Command::new("docker")
        .args(["exec", &id, "cat", "/tmp/poststart"])
        .output()
        .expect("docker exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/tmp", "C224: the hook ran, in the workingDir");
    // The pod's host-side veth lets the pod reach itself through a Service (hairpin).
    let sandbox = c
        .kubelet
        .containers()
        .into_iter()
        .find(|(n, _, _)| n.starts_with("k8s_POD_hooked_"))
        .map(|(_, id, _)| id)
        .expect("sandbox");
    let pid = String::from_utf8_lossy(
        &std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &sandbox])
            .output()
            .expect("inspect")
            .stdout,
    )
    .trim()
    .to_string();
    let iflink = std::fs::read_to_string(format!("/proc/{pid}/root/sys/class/net/eth0/iflink")).expect("iflink");
    let veth = std::fs::read_dir("/sys/class/net")
        .expect("sys")
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("ifindex")).is_ok_and(|i| i.trim() == iflink.trim()))
        .expect("the host veth");
    let hairpin = eventually(Duration::from_secs(10), "hairpin_mode on the pod's veth", || {
        let path = veth.path().join("brport/hairpin_mode");
        async move { std::fs::read_to_string(path).ok().filter(|v| v.trim() == "1") }
    })
    .await;
    assert_eq!(hairpin.trim(), "1");
}

#[tokio::test]
async fn c186_a_custom_dns_config_is_the_pods_resolv_conf() {
    let c = cluster(&[]).await;
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: dns-custom, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  dnsPolicy: None
  dnsConfig:
    nameservers: ["1.1.1.1"]
    searches: ["resolv.conf.local"]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "cat /etc/resolv.conf > /dev/termination-log"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns-cluster, namespace: default}
spec:
  nodeName: NODE
  restartPolicy: Never
  dnsConfig:
    searches: ["extra.example"]
    options: [{name: ndots, value: "3"}]
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: ["sh", "-c", "cat /etc/resolv.conf > /dev/termination-log"]}]
"#,
    );
    let p = c.wait_pod("dns-custom", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let conf = message(&p, "c");
    let lines: Vec<&str> = conf.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    assert_eq!(lines, ["nameserver 1.1.1.1", "search resolv.conf.local", "options ndots:2 edns0"], "{conf}");
    // ClusterFirst plus a dnsConfig: the cluster's server and search path, the extras appended,
    // the option overriding the default ndots:5.
    let p = c.wait_pod("dns-cluster", "Succeeded", 60, |p| phase(p) == "Succeeded").await;
    let conf = message(&p, "c");
    assert!(conf.contains("nameserver 10.96.0.10"), "{conf}");
    assert!(
        conf.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && conf.contains("extra.example"),
        "{conf}"
    );
    assert!(conf.contains("ndots:3") && !conf.contains("ndots:5"), "{conf}");
}
