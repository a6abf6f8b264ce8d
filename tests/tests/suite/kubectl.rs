//! Real kubectl (and the official Python client) against the real apiserver binary on real etcd.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use e2e::etcd::Etcd;
use e2e::kubectl::{Kubectl, python};
use e2e::server::Process;
use serde_json::Value;

fn manifest(name: &str) -> String {
    format!("{}/manifests/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The lines of a kubectl table, split on runs of spaces.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect())
        .filter(|r: &Vec<String>| !r.is_empty())
        .collect()
}

#[tokio::test]
async fn kubectl_creates_lists_labels_annotates_and_deletes() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let k = Kubectl::new(&api.endpoint);

    // The dispatcher picks the kubectl matching the server's minor version.
    let v: Value = serde_json::from_str(&k.run(&["version", "-o", "json"]).ok().stdout).expect("version json");
    assert_eq!(v["serverVersion"]["minor"], "33");
    assert_eq!(v["clientVersion"]["minor"], "33", "the dispatcher ran kubectl 1.33");

    let resources = k.run(&["api-resources"]).ok().stdout;
    assert!(
        resources
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["deployments", "deploy", "apps/v1", "true", "Deployment"]),
        "{resources}"
    );

    let created = k.run(&["create", "-f", &manifest("demo.yaml")]).ok().stdout;
    for line in
        ["namespace/demo created", "configmap/settings created", "deployment.apps/web created", "service/web created"]
    {
        assert!(created.contains(line), "{line} missing from:\n{created}");
    }

    let deploy = rows(&k.run(&["get", "deploy", "-n", "demo"]).ok().stdout);
    assert_eq!(deploy[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(deploy[1][..4], ["web", "0/2", "0", "0"]);
    let wide = rows(&k.run(&["get", "deploy", "web", "-n", "demo", "-o", "wide"]).ok().stdout);
    assert_eq!(wide[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(wide[1][5..], ["server", "busybox:1.36", "app=web"]);
    let svc = rows(&k.run(&["get", "svc", "-n", "demo"]).ok().stdout);
    assert_eq!(svc[1][..2], ["web", "ClusterIP"]);
    assert!(svc[1][2].starts_with("10."), "an address from the service range: {:?}", svc[1]);
    assert_eq!(svc[1][3..5], ["<none>", "80/TCP"]);

    let yaml = k.run(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]).ok().stdout;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("generation: 1") && yaml.contains("maxSurge: 25%"),
        "{yaml}"
    );
    let json: Value =
        serde_json::from_str(&k.run(&["get", "cm", "settings", "-n", "demo", "-o", "json"]).ok().stdout).expect("json");
    assert_eq!(json["data"]["greeting"], "hello");

    let all = rows(&k.run(&["get", "cm", "-A"]).ok().stdout);
    assert_eq!(all[0][..2], ["NAMESPACE", "NAME"]);
    assert!(all.iter().any(|r| r[..2] == ["demo", "settings"]), "{all:?}");
    let labelled = rows(&k.run(&["get", "cm", "-n", "demo", "-l", "app=demo", "--show-labels"]).ok().stdout);
    assert_eq!(labelled[0].last().map(String::as_str), Some("LABELS"));
    assert_eq!(labelled[1].last().map(String::as_str), Some("app=demo"));
    assert_eq!(labelled.len(), 2);

    assert!(
        k.run(&["label", "cm", "settings", "-n", "demo", "tier=backend"])
            .ok()
            .stdout
            .contains("configmap/settings labeled")
    );
    let tiered = k.run(&["get", "cm", "-n", "demo", "-l", "tier=backend", "-o", "name"]).ok().stdout;
    assert_eq!(tiered.trim(), "configmap/settings");
    assert!(
        k.run(&["annotate", "cm", "settings", "-n", "demo", "note=kept"])
            .ok()
            .stdout
            .contains("configmap/settings annotated")
    );
    let note =
        k.run(&["get", "cm", "settings", "-n", "demo", "-o", "jsonpath={.metadata.annotations.note}"]).ok().stdout;
    assert_eq!(note, "kept");

    let raw: Value = serde_json::from_str(&k.run(&["get", "--raw", "/api"]).ok().stdout).expect("raw json");
    assert_eq!(raw["versions"][0], "v1");

    let missing = k.run(&["get", "cm", "nope", "-n", "demo"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{}",
        missing.stderr
    );

    assert!(k.run(&["delete", "deploy", "web", "-n", "demo"]).ok().stdout.contains("deployment.apps \"web\" deleted"));
    assert!(k.run(&["delete", "cm", "settings", "-n", "demo"]).ok().stdout.contains("configmap \"settings\" deleted"));
    let gone = k.run(&["get", "deploy", "-n", "demo"]).ok();
    assert!(gone.stderr.contains("No resources found in demo namespace."), "{}", gone.stderr);
    // Without the namespace controller (controller-manager) the namespace stays Terminating.
    k.run(&["delete", "ns", "demo", "--wait=false"]).ok();
    let ns = rows(&k.run(&["get", "ns", "demo"]).ok().stdout);
    assert_eq!(ns[1][..2], ["demo", "Terminating"]);
    let refused = k
        .run(&["create", "configmap", "late", "-n", "demo", "--from-literal=a=b", "--dry-run=client", "-o", "yaml"])
        .ok()
        .stdout;
    let refused = k.run_stdin(&["create", "-f", "-"], &refused);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("because it is being terminated"), "{}", refused.stderr);
}

#[tokio::test]
async fn kubectl_get_watch_prints_later_changes() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let k = Kubectl::new(&api.endpoint);
    let mut child = k.spawn(&["get", "configmaps", "-n", "default", "-w"]);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Give kubectl time to list and start watching, then change things.
    std::thread::sleep(Duration::from_secs(2));
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  a: b\n";
    k.run_stdin(&["create", "-f", "-"], cm).ok();
    k.run(&["label", "cm", "watched", "x=y"]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.iter().filter(|l: &&String| l.starts_with("watched")).count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("kubectl get -w printed only {seen:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn every_installed_kubectl_version_gets_and_creates() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let installed: Vec<&str> = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
        .into_iter()
        .filter(|m| Kubectl::available(m))
        .collect();
    assert!(!installed.is_empty(), "no pinned kubectl.1.NN is installed; this test needs at least one");
    for minor in installed {
        let k = Kubectl::version(minor, &api.endpoint);
        let ns = rows(&k.run(&["get", "namespaces"]).ok().stdout);
        assert_eq!(ns[0], ["NAME", "STATUS", "AGE"], "kubectl {minor}");
        assert!(ns.iter().any(|r| r[..2] == ["kube-system", "Active"]), "kubectl {minor}: {ns:?}");
        let name = format!("cm-{}", minor.replace('.', "-"));
        let doc = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"{minor}\"\n");
        // kubectl 1.27 and 1.28 learn from the protobuf /openapi/v2 that the server validates;
        // 1.29+ from /openapi/v3. Both then send fieldValidation=Strict.
        let out = k.run_stdin(&["create", "-f", "-"], &doc).ok().stdout;
        assert!(out.contains(&format!("configmap/{name} created")), "kubectl {minor}: {out}");
        let got: Value = serde_json::from_str(&k.run(&["get", "cm", &name, "-o", "json"]).ok().stdout).expect("json");
        assert_eq!(got["data"]["v"], minor);
        let bad =
            k.run_stdin(&["create", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n");
        assert_ne!(bad.code, 0, "kubectl {minor} must reject an unknown field");
        assert!(bad.stderr.contains("unknown field \"bogus\""), "kubectl {minor}: {}", bad.stderr);
        let applied = k.run_stdin(&["apply", "-f", "-"], &doc.replace(&name, &format!("{name}-applied"))).ok().stdout;
        assert!(applied.contains("created"), "kubectl {minor} apply with default validation: {applied}");
        let changed = doc
            .replace(&name, &format!("{name}-applied"))
            .replace(&format!("v: \"{minor}\""), "v: changed\n  extra: \"1\"");
        let reapplied = k.run_stdin(&["apply", "-f", "-"], &changed).ok().stdout;
        assert!(reapplied.contains("configured"), "kubectl {minor} re-apply: {reapplied}");
        let got: Value =
            serde_json::from_str(&k.run(&["get", "cm", &format!("{name}-applied"), "-o", "json"]).ok().stdout)
                .expect("json");
        assert_eq!(got["data"], serde_json::json!({"v": "changed", "extra": "1"}), "kubectl {minor}");
    }
}

const PYTHON_CLIENT: &str = r#"
import json, sys, threading, time
from kubernetes import client, config, watch
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
out = {"minor": client.VersionApi().get_code().minor}
out["namespaces"] = sorted(n.metadata.name for n in v1.list_namespace().items)
v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"a": "b"}), data={"k": "v"}))
out["listed"] = [c.metadata.name for c in v1.list_namespaced_config_map("default", label_selector="a=b").items]
def later():
    time.sleep(1)
    v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-later")))
threading.Thread(target=later).start()
seen = []
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=15):
    seen.append([ev["type"], ev["object"].metadata.name])
    if ev["object"].metadata.name == "py-later":
        w.stop()
out["watched"] = seen
deleted = v1.delete_namespaced_config_map("py-cm", "default")
out["deleted"] = deleted["status"] if isinstance(deleted, dict) else deleted.status
print(json.dumps(out))
"#;

#[tokio::test]
async fn the_python_client_lists_watches_creates_and_deletes() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let run = python(PYTHON_CLIENT, &api.endpoint, &[]).ok();
    let out: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(out["minor"], "33");
    assert_eq!(out["namespaces"], serde_json::json!(["default", "kube-node-lease", "kube-public", "kube-system"]));
    assert_eq!(out["listed"], serde_json::json!(["py-cm"]));
    let watched: Vec<(String, String)> = serde_json::from_value(out["watched"].clone()).expect("pairs");
    assert!(watched.contains(&("ADDED".into(), "py-cm".into())), "initial state first: {watched:?}");
    assert_eq!(watched.last(), Some(&("ADDED".into(), "py-later".into())));
    assert_eq!(out["deleted"], "Success");
}

#[tokio::test]
async fn sigterm_stops_the_apiserver_cleanly() {
    let etcd = Etcd::start().await;
    let mut api = Process::start(&etcd.endpoint(), &[]).await;
    let status = api.terminate().expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}; log:\n{}", api.log());
}

#[tokio::test]
async fn bad_flags_are_one_line_and_exit_64() {
    let out = std::process::Command::new(e2e::binary("apiserver"))
        .args(["--service-cluster-ip-range", "not-a-cidr"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("apiserver: --service-cluster-ip-range"), "{err}");
}

#[tokio::test]
async fn components_not_built_yet_refuse_to_run() {
    let out = std::process::Command::new(e2e::binary("ctl")).output().expect("runs");
    assert!(!out.status.success(), "ctl must not pretend to work");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented"), "ctl");
}

#[tokio::test]
async fn the_controller_manager_refuses_a_bad_configuration_in_one_line() {
    for (args, says) in [
        (vec![], "--kubeconfig is required"),
        (vec!["--kubeconfig", "/nonexistent", "--controllers", "*,nope"], "unknown controller \"nope\""),
        (
            vec![
                "--kubeconfig",
                "/nonexistent",
                "--allocate-node-cidrs",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--node-cidr-mask-size",
                "8",
            ],
            "--node-cidr-mask-size 8",
        ),
    ] {
        let out = std::process::Command::new(e2e::binary("controller-manager")).args(&args).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn the_memory_backend_serves_the_api_without_etcd() {
    // No etcd at all: the in-memory storage (for tests and simulations) answers on its own.
    let api = Process::start("http://127.0.0.1:1", &["--storage-backend", "memory"]).await;
    let c = api.endpoint.client();
    assert_eq!(
        c.post("/api/v1/namespaces/default/configmaps", &serde_json::json!({"metadata": {"name": "m"}})).await.status,
        201
    );
    assert_eq!(c.get("/api/v1/namespaces/default/configmaps/m").await.status, 200);
    let mut w = c.stream("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0", &[]).await;
    assert_eq!(w.expect_event(10).await["object"]["metadata"]["name"], "m");
}

#[tokio::test]
async fn kubectl_explain_describes_fields_from_the_openapi_schemas() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    for minor in ["1.27", "1.33"] {
        if !Kubectl::available(minor) {
            continue;
        }
        let k = Kubectl::version(minor, &api.endpoint);
        let out = k.run(&["explain", "deployment.spec.replicas"]).ok().stdout;
        assert!(out.contains("GROUP:") || out.contains("KIND:"), "{out}");
        assert!(out.contains("replicas") && out.contains("<integer>"), "{out}");
        assert!(out.to_lowercase().contains("number of desired pods"), "{out}");
        let pods = k.run(&["explain", "pods.spec.containers"]).ok().stdout;
        assert!(pods.contains("image") && pods.contains("<string>"), "{pods}");
        let recursive = k.run(&["explain", "configmap", "--recursive"]).ok().stdout;
        assert!(recursive.contains("data") && recursive.contains("metadata"), "{recursive}");
        let missing = k.run(&["explain", "deployment.spec.nope"]);
        assert_ne!(missing.code, 0);
    }
}

#[tokio::test]
async fn kubectl_creates_priority_classes_and_pods_get_their_priority() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let k = Kubectl::new(&api.endpoint);
    let out = k.run(&["create", "priorityclass", "high", "--value=1000", "--description=important"]).ok().stdout;
    assert!(out.contains("priorityclass.scheduling.k8s.io/high created"), "{out}");
    let pcs = rows(&k.run(&["get", "priorityclasses"]).ok().stdout);
    assert_eq!(pcs[0], ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]);
    let row = |name: &str| pcs.iter().find(|r| r[0] == name).cloned().unwrap_or_else(|| panic!("{name}: {pcs:?}"));
    assert_eq!(row("high")[1..3], ["1000", "false"]);
    assert_eq!(row("high")[4], "PreemptLowerPriority");
    assert_eq!(row("system-node-critical")[1], "2000001000");
    assert_eq!(row("system-cluster-critical")[1], "2000000000");

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: urgent\nspec:\n  priorityClassName: high\n  containers:\n  - name: c\n    image: busybox\n";
    k.run_stdin(&["create", "-f", "-"], pod).ok();
    let priority = k.run(&["get", "pod", "urgent", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"]).ok();
    assert_eq!(priority.stdout, "1000 PreemptLowerPriority");
    let refused = k.run_stdin(&["create", "-f", "-"], &pod.replace("urgent", "lost").replace("high", "nope"));
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("no PriorityClass with name nope was found"), "{}", refused.stderr);
    let kept = k.run(&["delete", "pc", "system-node-critical"]);
    assert_ne!(kept.code, 0);
    assert!(kept.stderr.contains("cannot be deleted"), "{}", kept.stderr);
}

#[tokio::test]
async fn kubectl_autoscale_creates_an_autoscaling_v2_horizontal_pod_autoscaler() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let k = Kubectl::new(&api.endpoint);
    k.run(&["create", "deployment", "web", "--image=busybox"]).ok();
    k.run(&["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=50"]).ok();
    let hpa: Value = serde_json::from_str(&k.run(&["get", "hpa", "web", "-o", "json"]).ok().stdout).expect("json");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!((hpa["spec"]["minReplicas"].as_i64(), hpa["spec"]["maxReplicas"].as_i64()), (Some(2), Some(5)));
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
    let table = k.run(&["get", "hpa"]).ok().stdout;
    let row = rows(&table).into_iter().nth(1).expect("a row");
    assert_eq!(row[..5], ["web", "Deployment/web", "cpu: <unknown>/50%", "2", "5"], "{table}");
    // Without metrics the default is 80 % CPU; maxReplicas below minReplicas is refused.
    let bad = k.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, minReplicas: 3, maxReplicas: 2}\n",
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("must be greater than or equal to `minReplicas`"), "{}", bad.stderr);
}
