//! End to end: the apiserver's proxy subresources on a real cluster (etcd, the apiserver, one
//! kubelet on the host's dockerd, the scheduler and the controller-manager): `pods/proxy` and
//! `services/proxy` relay every method, path, query and body to `netexec:1.2` pods and bring
//! their answers back; `nodes/proxy` reaches the kubelet. Named after the conformance ledger
//! rows they cover.
//!
//! Host safety (DESIGN.md, "Safety rule"): the apiserver connects to this test's pod IPs only;
//! the sink routes of `deploy/prereqs.sh` (`pod_network_sink`) are ensured first, so a packet to
//! a pod address nobody owns dies on the local `kube-sink` bridge.

use std::process::Command;
use std::time::Duration;

use e2e::eventually;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

use crate::controllers::Cluster;

const IMAGE: &str = "netexec:1.2";

fn ensure_pod_network_sink() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let status = Command::new("bash")
        .args(["-c", ". deploy/prereqs.sh && pod_network_sink"])
        .current_dir(root)
        .status()
        .expect("bash runs");
    assert!(status.success(), "pod_network_sink failed");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The answer to one request through the apiserver: status, headers and body.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.body)
    }
}

async fn call(client: &kube::Client, method: &str, path: &str, body: &str) -> Answer {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "text/plain")
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let answer = async {
        let resp = client.send(req).await.expect("the apiserver answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    };
    match tokio::time::timeout(Duration::from_secs(20), answer).await {
        Ok(a) => a,
        Err(_) => panic!("{method} {path}: no answer within 20 s"),
    }
}

fn pod_template(app: &str) -> String {
    format!(
        r#"
    metadata: {{labels: {{app: {app}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: netexec
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        ports: [{{name: http, containerPort: 8080}}, {{name: udp, containerPort: 8081, protocol: UDP}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}"#
    )
}

/// The Ready pods labelled `app=<app>`, once there are `n` of them.
async fn ready_pods(client: &kube::Client, app: &str, n: usize) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(Duration::from_secs(120), &format!("{n} Ready {app} pods"), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (ready.len() == n).then_some(ready)
        }
    })
    .await
}

/// Each pod answers `/hostname` with its own name through `pods/<name>/proxy/hostname`.
async fn every_replica_serves_its_own_hostname(c: &Cluster, app: &str, pods: &[String]) {
    for pod in pods {
        let path = format!("/api/v1/namespaces/default/pods/{pod}/proxy/hostname");
        let got = eventually(Duration::from_secs(30), &format!("{pod} through the pod proxy"), || async {
            let a = call(&c.client, "GET", &path, "").await;
            (a.status == 200).then_some(a.body)
        })
        .await;
        assert_eq!(got, *pod, "{app}");
    }
}

#[tokio::test]
async fn c132_c137_every_replica_set_and_replication_controller_replica_serves_its_own_hostname_through_the_pod_proxy()
{
    if !is_root() {
        println!("skipped: the pod network sink needs root");
        return;
    }
    ensure_pod_network_sink();
    let c = Cluster::start().await;
    let yaml = format!(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: rs-host, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: rs-host}}}}
  template:{rs}
---
apiVersion: v1
kind: ReplicationController
metadata: {{name: rc-host, namespace: default}}
spec:
  replicas: 2
  selector: {{app: rc-host}}
  template:{rc}
"#,
        rs = pod_template("rs-host"),
        rc = pod_template("rc-host")
    );
    c.k.run_stdin(&["apply", "-f", "-"], &yaml).ok();
    let rs_pods = ready_pods(&c.client, "rs-host", 2).await;
    every_replica_serves_its_own_hostname(&c, "ReplicaSet", &rs_pods).await;
    let rc_pods = ready_pods(&c.client, "rc-host", 2).await;
    every_replica_serves_its_own_hostname(&c, "ReplicationController", &rc_pods).await;
    // kubectl reaches the same through the proxy.
    let raw =
        c.k.run(&["get", "--raw", &format!("/api/v1/namespaces/default/pods/{}:8080/proxy/hostname", rc_pods[0])]);
    assert_eq!(raw.ok().stdout.trim(), rc_pods[0]);
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// `method` through `base` (a `.../proxy` path) and `base` + `suffix`: netexec echoes the method,
/// the relayed target and the body.
async fn relays_every_method(client: &kube::Client, base: &str) {
    for method in METHODS {
        for (suffix, relayed) in [
            (String::new(), "/".to_string()),
            ("/".to_string(), "/".to_string()),
            (format!("/request/some/path/with/{method}"), format!("/request/some/path/with/{method}")),
        ] {
            let payload = if matches!(*method, "POST" | "PUT" | "PATCH" | "DELETE") { "payload" } else { "" };
            let path = format!("{base}{suffix}?q=a%20b&method={method}");
            let a = eventually(Duration::from_secs(30), &format!("{method} {path}"), || async {
                let a = call(client, method, &path, payload).await;
                (a.status == 200).then_some(a)
            })
            .await;
            assert_eq!(a.headers.get("x-netexec-method").and_then(|v| v.to_str().ok()), Some(*method), "{path}");
            if *method == "HEAD" {
                assert_eq!(a.body, "", "{path}");
            } else {
                assert_eq!(a.body, format!("{method} {relayed}?q=a%20b&method={method}\n{payload}"), "{path}");
            }
        }
    }
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

async fn echo_cluster() -> (Cluster, Vec<String>) {
    ensure_pod_network_sink();
    let c = Cluster::start().await;
    let yaml = format!(
        r#"
apiVersion: v1
kind: ReplicationController
metadata: {{name: echo, namespace: default}}
spec:
  replicas: 2
  selector: {{app: echo}}
  template:{t}
---{SERVICE}"#,
        t = pod_template("echo")
    );
    c.k.run_stdin(&["apply", "-f", "-"], &yaml).ok();
    let pods = ready_pods(&c.client, "echo", 2).await;
    (c, pods)
}

#[tokio::test]
async fn c199_c200_pods_proxy_and_services_proxy_relay_every_method_with_and_without_a_path() {
    if !is_root() {
        println!("skipped: the pod network sink needs root");
        return;
    }
    let (c, pods) = echo_cluster().await;
    let ns = "/api/v1/namespaces/default";
    relays_every_method(&c.client, &format!("{ns}/pods/{}:8080/proxy", pods[0])).await;
    relays_every_method(&c.client, &format!("{ns}/pods/{}/proxy", pods[1])).await;
    relays_every_method(&c.client, &format!("{ns}/services/echo/proxy")).await;
    relays_every_method(&c.client, &format!("{ns}/services/echo:http/proxy")).await;

    // Headers come back from the backend, with its status.
    let a = call(&c.client, "GET", &format!("{ns}/pods/{}:8080/proxy/nothing-here", pods[0]), "").await;
    assert_eq!((a.status, a.body.as_str()), (404, "not found"));
    assert_eq!(a.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/plain"));

    // Errors are Statuses: a missing pod 404, a closed port and a Service without endpoints 503
    // (asked through kubectl: kube-rs retries a 503 for minutes), a malformed id 400.
    let fails = |path: String, reason: &str, words: &str| {
        let run = c.k.run(&["get", "--raw", &path]);
        assert_ne!(run.code, 0, "{path}: {run:?}");
        let line = run.stderr.trim();
        assert!(line.contains(&format!("({reason})")) && line.contains(words), "{path}: {line}");
        assert_eq!(line.lines().count(), 1, "{path}: {line}");
    };
    fails(format!("{ns}/pods/missing/proxy/"), "NotFound", "pods \"missing\" not found");
    fails(format!("{ns}/pods/{}:9/proxy/", pods[0]), "ServiceUnavailable", "error trying to reach service: dial tcp");
    fails(format!("{ns}/services/empty/proxy/"), "ServiceUnavailable", "no endpoints available for service \"empty\"");
    fails(format!("{ns}/services/echo:nope/proxy/"), "ServiceUnavailable", "no service port \"nope\"");
    fails(format!("{ns}/services/ftp:echo:http/proxy/"), "BadRequest", "invalid service proxy id");

    // kubectl get --raw through both.
    let raw = c.k.run(&["get", "--raw", &format!("{ns}/services/echo:http/proxy/hostname")]).ok();
    assert!(pods.contains(&raw.stdout.trim().to_string()), "{raw:?}");
    let raw = c.k.run(&["get", "--raw", &format!("{ns}/pods/{}/proxy/echo?msg=hello", pods[1])]).ok();
    assert_eq!(raw.stdout.trim(), "hello");
}

#[tokio::test]
async fn c201_service_and_pod_proxy_by_named_port_and_scheme_and_node_proxy_logs_answer() {
    if !is_root() {
        println!("skipped: the pod network sink needs root");
        return;
    }
    let (c, pods) = echo_cluster().await;
    let ns = "/api/v1/namespaces/default";
    let get_ok = |path: String| {
        let client = c.client.clone();
        async move {
            eventually(Duration::from_secs(30), &path.clone(), || async {
                let a = call(&client, "GET", &path, "").await;
                (a.status == 200).then_some(a.body)
            })
            .await
        }
    };
    // Named ports, with and without the http scheme, and by number.
    for id in ["echo:http", "http:echo:http", "echo:80", "http:echo:"] {
        let body = get_ok(format!("{ns}/services/{id}/proxy/hostname")).await;
        assert!(pods.contains(&body), "{id}: {body}");
    }
    for pod in &pods {
        for id in [format!("{pod}:http"), format!("http:{pod}:http"), format!("http:{pod}:8080")] {
            assert_eq!(get_ok(format!("{ns}/pods/{id}/proxy/hostname")).await, *pod, "{id}");
        }
    }
    // https: the backend speaks plain HTTP, so the TLS handshake fails: the scheme was used.
    let run = c.k.run(&["get", "--raw", &format!("{ns}/services/https:echo:http/proxy/hostname")]);
    assert!(run.stderr.contains("(ServiceUnavailable)") && run.stderr.contains("TLS"), "{run:?}");

    // The node proxy reaches the kubelet (over its TLS, by name or with the https scheme).
    let node = &c.node.name;
    assert_eq!(c.k.run(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/healthz")]).ok().stdout.trim(), "ok");
    let port = c.node.port;
    assert_eq!(get_ok(format!("/api/v1/nodes/https:{node}:{port}/proxy/healthz")).await, "ok");
    let logs = c.k.run(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/logs/")]).ok().stdout;
    assert!(logs.starts_with("<pre>"), "{logs}");
    // Without the slash, the kubelet's redirect comes back moved under the proxy.
    let a = call(&c.client, "GET", &format!("/api/v1/nodes/{node}/proxy/logs"), "").await;
    assert_eq!(a.status, 301, "{a:?}");
    assert_eq!(
        a.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/nodes/{node}/proxy/logs/").as_str())
    );

    // Discovery lists the proxy subresources with upstream's verbs.
    let v1: serde_json::Value = serde_json::from_str(&call(&c.client, "GET", "/api/v1", "").await.body).expect("json");
    for sub in ["pods/proxy", "services/proxy", "nodes/proxy"] {
        let r = v1["resources"].as_array().and_then(|rs| rs.iter().find(|r| r["name"] == sub)).expect(sub);
        assert_eq!(r["verbs"], serde_json::json!(["create", "delete", "get", "patch", "update"]), "{sub}");
    }
}
