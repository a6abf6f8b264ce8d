//! The client libraries users run against Kubernetes, unchanged: kube-rs (Rust) and the official
//! Python client, through their typical flows: list, watch and resume from a resourceVersion,
//! create, replace, JSON / merge / strategic patches, server-side apply (also on `/status`),
//! scale and delete.

use e2e::etcd::Etcd;
use e2e::kubectl::python;
use e2e::server::{InProcess, Process};
use serde_json::{Value, json};

#[tokio::test]
async fn kube_rs_typical_flows_work_unchanged() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let client = api.endpoint.kube_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "kube", "labels": {"app": "x"}}, "data": {"a": "1"}}))
            .expect("cm");
    let created = cms.create(&PostParams::default(), &cm).await.expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");

    // Replace with the read resourceVersion; a stale one is a 409.
    let mut replaced = created.clone();
    replaced.data = Some([("a".to_string(), "2".to_string())].into());
    cms.replace("kube", &PostParams::default(), &replaced).await.expect("replace");
    let mut stale = created.clone();
    stale.data = Some([("a".to_string(), "3".to_string())].into());
    match cms.replace("kube", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Every patch type.
    let pp = PatchParams::default();
    cms.patch("kube", &pp, &Patch::Merge(json!({"data": {"m": "merge"}}))).await.expect("merge");
    cms.patch("kube", &pp, &Patch::Strategic(json!({"data": {"s": "strategic"}}))).await.expect("strategic");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "json"}])).expect("jp");
    let patched = cms.patch("kube", &pp, &Patch::Json::<()>(jp)).await.expect("json patch");
    let data = patched.data.clone().expect("data");
    assert_eq!((data["m"].as_str(), data["s"].as_str(), data["j"].as_str()), ("merge", "strategic", "json"));

    // Server-side apply, as controllers use it: a conflict, then forced.
    let ssa = PatchParams::apply("kube-rs-test");
    let applied: Value =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube"}, "data": {"a": "from-apply"}});
    match cms.patch("kube", &ssa, &Patch::Apply(&applied)).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected an apply conflict, got {other:?}"),
    }
    let forced = cms.patch("kube", &ssa.clone().force(), &Patch::Apply(&applied)).await.expect("forced apply");
    assert_eq!(forced.data.as_ref().and_then(|d| d.get("a")).map(String::as_str), Some("from-apply"));
    let managers: Vec<String> =
        forced.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"kube-rs-test".to_string()), "{managers:?}");

    // Watch from the first resourceVersion: every later change, in order; then resume.
    let mut events = cms.watch(&WatchParams::default().timeout(5), &rv).await.expect("watch").boxed();
    let mut seen = Vec::new();
    let mut last_rv = rv.clone();
    while let Some(ev) = events.try_next().await.expect("event") {
        if let WatchEvent::Modified(c) = ev {
            last_rv = c.metadata.resource_version.clone().expect("rv");
            seen.push(c.data.unwrap_or_default().get("a").cloned().unwrap_or_default());
        }
        if seen.len() == 5 {
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("2"), "replace comes first: {seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("from-apply"));
    assert_eq!(last_rv, forced.metadata.resource_version.clone().expect("rv"));
    cms.delete("kube", &DeleteParams::default()).await.expect("delete");
    let mut resumed = cms.watch(&WatchParams::default().timeout(5), &last_rv).await.expect("resume").boxed();
    match resumed.try_next().await.expect("event") {
        Some(WatchEvent::Deleted(c)) => assert_eq!(c.metadata.name.as_deref(), Some("kube")),
        other => panic!("expected the delete after resuming, got {other:?}"),
    }
    assert!(cms.list(&ListParams::default().labels("app=x")).await.expect("list").items.is_empty());

    // A Deployment: apply creates it, scale reads and writes it, status takes applies.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    let created =
        deploys.patch("web", &PatchParams::apply("deployer"), &Patch::Apply(&d)).await.expect("create on apply");
    assert_eq!(created.metadata.generation, Some(1));
    let scale = deploys.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .expect("scale patch");
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "status": {"observedGeneration": 2, "replicas": 3}});
    let st = deploys
        .patch_status("web", &PatchParams::apply("status-writer"), &Patch::Apply(&status))
        .await
        .expect("status apply");
    assert_eq!(st.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(st.status.and_then(|s| s.replicas), Some(3));
    let d = deploys.get("web").await.expect("get");
    let entries: Vec<(String, String)> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.subresource.unwrap_or_default()))
        .collect();
    assert!(entries.contains(&("status-writer".into(), "status".into())), "{entries:?}");
}

const PYTHON_FLOWS: &str = r#"
import json, sys
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
out = {}
cm = v1.create_namespaced_config_map("default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py"), data={"a": "1"}))
rv = cm.metadata.resource_version
cm.data["a"] = "2"
v1.replace_namespaced_config_map("py", "default", cm)
try:
    v1.replace_namespaced_config_map("py", "default", cm)
    out["stale"] = "accepted"
except ApiException as e:
    out["stale"] = e.status
v1.patch_namespaced_config_map("py", "default", {"data": {"m": "merge"}}, _content_type="application/merge-patch+json")
v1.patch_namespaced_config_map("py", "default", {"data": {"s": "strategic"}})
v1.patch_namespaced_config_map("py", "default", [{"op": "add", "path": "/data/j", "value": "json"}])
applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py"}, "data": {"a": "applied"}}
try:
    v1.patch_namespaced_config_map("py", "default", applied, field_manager="py-ssa", _content_type="application/apply-patch+yaml")
    out["conflict"] = "none"
except ApiException as e:
    out["conflict"] = [e.status, json.loads(e.body)["details"]["causes"][0]["field"]]
final = v1.patch_namespaced_config_map("py", "default", applied, field_manager="py-ssa", force=True, _content_type="application/apply-patch+yaml")
out["data"] = final.data
out["managers"] = sorted(m.manager for m in final.metadata.managed_fields)
seen = []
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5):
    seen.append([ev["type"], ev["object"].metadata.name])
    if len(seen) == 5:
        w.stop()
out["watched"] = seen
d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pyweb"}, "spec": {"replicas": 1,
     "selector": {"matchLabels": {"app": "pyweb"}}, "template": {"metadata": {"labels": {"app": "pyweb"}},
     "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
apps.patch_namespaced_deployment("pyweb", "default", d, field_manager="py-ssa", _content_type="application/apply-patch+yaml")
apps.patch_namespaced_deployment_scale("pyweb", "default", {"spec": {"replicas": 2}})
out["replicas"] = apps.read_namespaced_deployment_scale("pyweb", "default").spec.replicas
deleted = v1.delete_namespaced_config_map("py", "default")
out["deleted"] = deleted["status"] if isinstance(deleted, dict) else deleted.status
print(json.dumps(out))
"#;

#[tokio::test]
async fn the_python_client_typical_flows_work_unchanged() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let run = python(PYTHON_FLOWS, &api.endpoint, &[]).ok();
    let out: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(out["stale"], 409);
    assert_eq!(out["conflict"], json!([409, ".data.a"]));
    assert_eq!(out["data"], json!({"a": "applied", "m": "merge", "s": "strategic", "j": "json"}));
    assert!(out["managers"].as_array().is_some_and(|m| m.contains(&json!("py-ssa"))), "{out}");
    assert_eq!(out["watched"].as_array().map(Vec::len), Some(5), "{out}");
    assert!(out["watched"].as_array().is_some_and(|w| w.iter().all(|e| e[0] == "MODIFIED")), "{out}");
    assert_eq!(out["replicas"], 2);
    assert_eq!(out["deleted"], "Success");
}
