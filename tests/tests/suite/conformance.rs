//! Our own tests for the conformance-ledger rows (`../shared/reference/conformance-ledger.tsv`)
//! that the API server alone must satisfy, for the resources it serves. Each test is named after
//! its row. The shared lifecycle patches with a strategic merge patch, as the upstream tests do.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::client::{Client, Resp};
use e2e::etcd::Etcd;
use e2e::kubectl::Kubectl;
use e2e::server::{InProcess, Process};
use serde_json::{Value, json};

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

async fn cluster() -> (Etcd, InProcess) {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    (etcd, api)
}

fn ok(r: Resp, code: u16) -> Value {
    assert_eq!(r.status, code, "{}", r.text());
    r.json()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn rv(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_string()
}

/// The shared lifecycle many rows check: create, get, list by label, patch, update, watch sees
/// each change, deletecollection by label removes only the labelled objects.
async fn lifecycle(c: &Client, collection: &str, make: impl Fn(&str, bool) -> Value) {
    let created = ok(c.post(collection, &make("one", true)).await, 201);
    ok(c.post(collection, &make("unlabelled", false)).await, 201);
    let mut watch = c
        .stream(&format!("{collection}?watch=true&resourceVersion={}&labelSelector=e2e%3Dlifecycle", rv(&created)), &[])
        .await;
    assert_eq!(ok(c.get(&format!("{collection}/one")).await, 200)["metadata"]["uid"], created["metadata"]["uid"]);
    let listed = ok(c.get(&format!("{collection}?labelSelector=e2e%3Dlifecycle")).await, 200);
    assert_eq!(names(&listed), ["one"]);
    let patched = ok(
        c.patch(&format!("{collection}/one"), STRATEGIC, &json!({"metadata": {"labels": {"patched": "true"}}})).await,
        200,
    );
    assert_eq!(patched["metadata"]["labels"]["patched"], "true");
    let mut update = patched.clone();
    update["metadata"]["annotations"] = json!({"updated": "yes"});
    let updated = ok(c.put(&format!("{collection}/one"), &update).await, 200);
    assert_eq!(updated["metadata"]["annotations"]["updated"], "yes");
    assert_eq!(
        ok(c.get(&format!("{collection}?labelSelector=patched%3Dtrue")).await, 200)["items"].as_array().map(Vec::len),
        Some(1)
    );
    ok(c.request("DELETE", &format!("{collection}?labelSelector=e2e%3Dlifecycle"), &[], Vec::new()).await, 200);
    let left = names(&ok(c.get(collection).await, 200));
    assert!(left.contains(&"unlabelled".to_string()) && !left.contains(&"one".to_string()), "{left:?}");
    let mut types = Vec::new();
    while types.len() < 3 {
        let ev = watch.expect_event(10).await;
        types.push(ev["type"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(types, ["MODIFIED", "MODIFIED", "DELETED"]);
}

fn labels(label: bool) -> Value {
    if label { json!({"e2e": "lifecycle"}) } else { json!({}) }
}

#[tokio::test]
async fn c025_c027_aggregated_discovery_lists_every_served_resource() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let mut aggregated = BTreeSet::new();
    for path in ["/api", "/apis"] {
        let doc = c.get_accept(path, accept).await.json();
        for group in doc["items"].as_array().expect("items") {
            let g = group["metadata"]["name"].as_str().unwrap_or("").to_string();
            for version in group["versions"].as_array().expect("versions") {
                for r in version["resources"].as_array().expect("resources") {
                    aggregated.insert(format!(
                        "{g}/{}/{}",
                        version["version"].as_str().unwrap_or(""),
                        r["resource"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    let mut legacy = BTreeSet::new();
    let groups = c.get("/apis").await.json();
    let mut gvs = vec![("".to_string(), "/api/v1".to_string())];
    for g in groups["groups"].as_array().expect("groups") {
        for v in g["versions"].as_array().expect("versions") {
            gvs.push((
                g["name"].as_str().unwrap_or("").to_string(),
                format!("/apis/{}", v["groupVersion"].as_str().unwrap_or("")),
            ));
        }
    }
    for (g, path) in gvs {
        let list = c.get(&path).await.json();
        let version = list["groupVersion"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
        for r in list["resources"].as_array().expect("resources") {
            let name = r["name"].as_str().unwrap_or("");
            if !name.contains('/') {
                legacy.insert(format!("{g}/{version}/{name}"));
            }
        }
    }
    assert_eq!(aggregated, legacy, "aggregated and legacy discovery list the same resources");
    assert!(aggregated.len() >= 18);
}

#[tokio::test]
async fn c047_c048_every_group_version_lists_resources_and_its_preferred_version_is_served() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for g in c.get("/apis").await.json()["groups"].as_array().expect("groups") {
        let served: Vec<&str> =
            g["versions"].as_array().expect("versions").iter().filter_map(|v| v["groupVersion"].as_str()).collect();
        let preferred = g["preferredVersion"]["groupVersion"].as_str().expect("preferred");
        assert!(served.contains(&preferred), "{preferred} not among {served:?}");
        for gv in served {
            let list = c.get(&format!("/apis/{gv}")).await.json();
            assert_eq!(list["groupVersion"], gv);
            assert!(!list["resources"].as_array().expect("resources").is_empty(), "{gv} lists no resources");
        }
    }
}

#[tokio::test]
async fn c053_strict_field_validation_rejects_unknown_and_duplicate_fields_in_json_and_yaml() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let path = "/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict";
    let deploy = |extra: &str| {
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"strict"}},"spec":{{"replicas":1,{extra}"selector":{{"matchLabels":{{"a":"b"}}}},"template":{{"metadata":{{"labels":{{"a":"b"}}}},"spec":{{"containers":[{{"name":"c","image":"x"}}]}}}}}}}}"#
        )
    };
    let json_ct = [("content-type", "application/json")];
    let unknown = c.request("POST", path, &json_ct, deploy(r#""unknownField":"x","#).into_bytes()).await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.json()["message"].as_str().unwrap_or("").contains(r#"unknown field "spec.unknownField""#),
        "{}",
        unknown.text()
    );
    let duplicate = c.request("POST", path, &json_ct, deploy(r#""replicas":2,"#).into_bytes()).await;
    assert_eq!(duplicate.status, 400);
    assert!(
        duplicate.json()["message"].as_str().unwrap_or("").contains(r#"duplicate field "spec.replicas""#),
        "{}",
        duplicate.text()
    );
    let yaml_ct = [("content-type", "application/yaml")];
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\nbogus: 1\n";
    assert_eq!(
        c.request("POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", &yaml_ct, yaml.into())
            .await
            .status,
        400
    );
    let dup_yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: b\n  a: c\n";
    assert_eq!(
        c.request("POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", &yaml_ct, dup_yaml.into())
            .await
            .status,
        400
    );
    // Nothing was written.
    assert_eq!(c.get("/apis/apps/v1/namespaces/default/deployments/strict").await.status, 404);
}

#[tokio::test]
async fn c055_strict_field_validation_rejects_unknown_metadata_fields() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let r = c
        .post(
            "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            &json!({"metadata": {"name": "m", "unknownMeta": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"].as_str().unwrap_or("").contains(r#"unknown field "metadata.unknownMeta""#),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn c063_c064_c068_namespace_finalize_update_and_patch() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let ns = ok(c.post("/api/v1/namespaces", &json!({"metadata": {"name": "fin"}})).await, 201);
    let mut with = ns.clone();
    with["spec"]["finalizers"] = json!(["kubernetes", "e2e.example.com/fakeFinalizer"]);
    let r = ok(c.put("/api/v1/namespaces/fin/finalize", &with).await, 200);
    assert_eq!(r["spec"]["finalizers"], json!(["kubernetes", "e2e.example.com/fakeFinalizer"]));
    let mut without = r.clone();
    without["spec"]["finalizers"] = json!(["kubernetes"]);
    let r = ok(c.put("/api/v1/namespaces/fin/finalize", &without).await, 200);
    assert_eq!(r["spec"]["finalizers"], json!(["kubernetes"]));
    let mut update = r.clone();
    update["metadata"]["labels"]["e2e"] = json!("updated");
    assert_eq!(ok(c.put("/api/v1/namespaces/fin", &update).await, 200)["metadata"]["labels"]["e2e"], "updated");
    ok(
        c.patch("/api/v1/namespaces/fin", MERGE, &json!({"metadata": {"labels": {"testLabel": "testValue"}}})).await,
        200,
    );
    assert_eq!(ok(c.get("/api/v1/namespaces/fin").await, 200)["metadata"]["labels"]["testLabel"], "testValue");
}

#[tokio::test]
async fn c065_namespace_status_is_active_and_changes_only_through_status() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let ns = ok(c.post("/api/v1/namespaces", &json!({"metadata": {"name": "st"}})).await, 201);
    assert_eq!(ns["status"]["phase"], "Active");
    let cond = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from an e2e test"});
    let patched =
        ok(c.patch("/api/v1/namespaces/st/status", MERGE, &json!({"status": {"conditions": [cond]}})).await, 200);
    assert_eq!(patched["status"]["conditions"][0]["reason"], "E2E");
    let mut upd = patched.clone();
    upd["status"]["conditions"][0]["reason"] = json!("E2EUpdated");
    assert_eq!(
        ok(c.put("/api/v1/namespaces/st/status", &upd).await, 200)["status"]["conditions"][0]["reason"],
        "E2EUpdated"
    );
    let mut main = ok(c.get("/api/v1/namespaces/st").await, 200);
    main["status"]["phase"] = json!("Terminating");
    assert_eq!(
        ok(c.put("/api/v1/namespaces/st", &main).await, 200)["status"]["phase"],
        "Active",
        "the main resource ignores status"
    );
}

#[tokio::test]
async fn c081_chunked_lists_return_limit_items_a_continue_token_and_the_remaining_count() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for i in 0..11 {
        ok(
            c.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": format!("chunk-{i:02}")}}))
                .await,
            201,
        );
    }
    let first = ok(c.get("/api/v1/namespaces/default/configmaps?limit=4").await, 200);
    assert_eq!(names(&first).len(), 4);
    assert_eq!(first["metadata"]["remainingItemCount"], 7);
    let mut all = names(&first);
    let mut token = first["metadata"]["continue"].as_str().map(str::to_string);
    let list_rv = rv(&first).to_string();
    // A write between pages is not seen: every page comes from the first page's snapshot.
    ok(c.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "chunk-late"}})).await, 201);
    while let Some(t) = token {
        let page = ok(c.get(&format!("/api/v1/namespaces/default/configmaps?limit=4&continue={t}")).await, 200);
        assert_eq!(page["metadata"]["resourceVersion"], list_rv.as_str());
        all.extend(names(&page));
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(all, (0..11).map(|i| format!("chunk-{i:02}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn c082_a_continue_token_from_a_compacted_revision_gets_410_with_a_token_to_continue_inconsistently() {
    let (etcd, api) = cluster().await;
    let c = api.client();
    for i in 0..6 {
        ok(
            c.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": format!("cm-{i}")}})).await,
            201,
        );
    }
    let first = ok(c.get("/api/v1/namespaces/default/configmaps?limit=2").await, 200);
    let token = first["metadata"]["continue"].as_str().expect("continue").to_string();
    let latest = ok(c.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "cm-9"}})).await, 201);
    etcd.client().await.compact(rv(&latest).parse::<i64>().expect("rv"), None).await.expect("compact");
    let expired = c.get(&format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}")).await;
    assert_eq!(expired.status, 410);
    let st = expired.json();
    assert_eq!(st["reason"], "Expired");
    let inconsistent = st["metadata"]["continue"].as_str().expect("an inconsistent continue token").to_string();
    let mut rest = Vec::new();
    let mut t = Some(inconsistent);
    while let Some(tok) = t {
        let page = ok(c.get(&format!("/api/v1/namespaces/default/configmaps?limit=2&continue={tok}")).await, 200);
        rest.extend(names(&page));
        t = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(rest, ["cm-2", "cm-3", "cm-4", "cm-5", "cm-9"], "continues after the last key at the latest revision");
}

fn cm(name: &str, label: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"watch-this-configmap": label}}, "data": {"mutation": "0"}})
}

#[tokio::test]
async fn c088_c089_a_watch_restarted_from_a_resource_version_continues_from_exactly_there() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let created = ok(c.post(base, &cm("w", "x")).await, 201);
    let mut w = c.stream(&format!("{base}?watch=true&resourceVersion={}", rv(&created)), &[]).await;
    let m1 = ok(c.patch(&format!("{base}/w"), MERGE, &json!({"data": {"mutation": "1"}})).await, 200);
    let ev = w.expect_event(10).await;
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["metadata"]["resourceVersion"].as_str()),
        (Some("MODIFIED"), Some(rv(&m1).as_str()))
    );
    drop(w);
    // Changes while no watch is open are delivered by a watch restarted at the last version seen.
    let m2 = ok(c.patch(&format!("{base}/w"), MERGE, &json!({"data": {"mutation": "2"}})).await, 200);
    ok(c.delete(&format!("{base}/w")).await, 200);
    let mut w = c.stream(&format!("{base}?watch=true&resourceVersion={}", rv(&m1)), &[]).await;
    let ev = w.expect_event(10).await;
    assert_eq!((ev["type"].as_str(), ev["object"]["data"]["mutation"].as_str()), (Some("MODIFIED"), Some("2")));
    assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv(&m2).as_str());
    assert_eq!(w.expect_event(10).await["type"], "DELETED");
}

#[tokio::test]
async fn c090_several_label_selected_watches_each_see_only_their_objects() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let mut wa =
        c.stream(&format!("{base}?watch=true&labelSelector=watch-this-configmap%3Dmultiple-watchers-A"), &[]).await;
    let mut wb =
        c.stream(&format!("{base}?watch=true&labelSelector=watch-this-configmap%3Dmultiple-watchers-B"), &[]).await;
    let mut wab = c.stream(&format!("{base}?watch=true&labelSelector=watch-this-configmap+in+%28multiple-watchers-A%2Cmultiple-watchers-B%29"), &[]).await;
    ok(c.post(base, &cm("a", "multiple-watchers-A")).await, 201);
    ok(c.patch(&format!("{base}/a"), MERGE, &json!({"data": {"mutation": "1"}})).await, 200);
    ok(c.post(base, &cm("b", "multiple-watchers-B")).await, 201);
    ok(c.delete(&format!("{base}/a")).await, 200);
    ok(c.delete(&format!("{base}/b")).await, 200);
    let mut seen_a = Vec::new();
    for _ in 0..3 {
        let ev = wa.expect_event(10).await;
        seen_a.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(seen_a, ["ADDED a", "MODIFIED a", "DELETED a"]);
    let mut seen_b = Vec::new();
    for _ in 0..2 {
        let ev = wb.expect_event(10).await;
        seen_b.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(seen_b, ["ADDED b", "DELETED b"]);
    let mut seen_ab = Vec::new();
    for _ in 0..5 {
        let ev = wab.expect_event(10).await;
        seen_ab.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(seen_ab, ["ADDED a", "MODIFIED a", "ADDED b", "DELETED a", "DELETED b"]);
}

#[tokio::test]
async fn c091_an_object_leaving_and_rejoining_a_label_selection_is_deleted_then_added() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let mut w = c
        .stream(&format!("{base}?watch=true&labelSelector=watch-this-configmap%3Dlabel-changed-and-restored"), &[])
        .await;
    ok(c.post(base, &cm("l", "label-changed-and-restored")).await, 201);
    ok(c.patch(&format!("{base}/l"), MERGE, &json!({"data": {"mutation": "1"}})).await, 200);
    ok(
        c.patch(&format!("{base}/l"), MERGE, &json!({"metadata": {"labels": {"watch-this-configmap": "wrong-value"}}}))
            .await,
        200,
    );
    ok(c.patch(&format!("{base}/l"), MERGE, &json!({"data": {"mutation": "2"}})).await, 200);
    ok(
        c.patch(
            &format!("{base}/l"),
            MERGE,
            &json!({"metadata": {"labels": {"watch-this-configmap": "label-changed-and-restored"}}}),
        )
        .await,
        200,
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = w.expect_event(10).await;
        seen.push(format!(
            "{} {}",
            ev["type"].as_str().unwrap_or(""),
            ev["object"]["data"]["mutation"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(seen, ["ADDED 0", "MODIFIED 1", "DELETED 1", "ADDED 2"]);
}

#[tokio::test]
async fn c092_watches_started_at_different_versions_see_the_same_order() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let start = ok(c.post(base, &json!({"metadata": {"name": "start"}})).await, 201);
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                let name = format!("c{}", i % 5);
                if c.post(base, &json!({"metadata": {"name": name}})).await.status == 409 {
                    c.delete(&format!("{base}/{name}")).await;
                }
            }
        })
    };
    let mut first = c.stream(&format!("{base}?watch=true&resourceVersion={}", rv(&start)), &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut events_first = Vec::new();
    writer.await.expect("writer");
    let end = ok(c.get(base).await, 200);
    let end_rv: i64 = rv(&end).parse().expect("rv");
    loop {
        let ev = first.expect_event(10).await;
        let r: i64 = ev["object"]["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("rv");
        events_first.push((r, ev["type"].as_str().unwrap_or("").to_string()));
        if r >= end_rv {
            break;
        }
    }
    // A second watch from the middle of the first one's history sees exactly its suffix.
    let (mid_rv, _) = events_first[events_first.len() / 2];
    let mut second = c.stream(&format!("{base}?watch=true&resourceVersion={mid_rv}"), &[]).await;
    let suffix: Vec<(i64, String)> = events_first.iter().filter(|(r, _)| *r > mid_rv).cloned().collect();
    for want in suffix {
        let ev = second.expect_event(10).await;
        let r: i64 = ev["object"]["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("rv");
        assert_eq!((r, ev["type"].as_str().unwrap_or("").to_string()), want);
    }
}

#[tokio::test]
async fn c093_version_major_and_minor_are_integers() {
    let (_etcd, api) = cluster().await;
    let v = api.client().get("/version").await.json();
    assert!(v["major"].as_str().and_then(|s| s.parse::<u32>().ok()).is_some());
    assert!(v["minor"].as_str().and_then(|s| s.parse::<u32>().ok()).is_some());
}

#[tokio::test]
async fn c099_cronjob_api_operations_with_status() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/apis/batch/v1/namespaces/default/cronjobs";
    let make = |name: &str, label: bool| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"schedule": "@every 1m",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    lifecycle(&c, base, make).await;
    let cj = ok(c.post(base, &make("status", false)).await, 201);
    let patched = ok(
        c.patch(
            &format!("{base}/status/status"),
            MERGE,
            &json!({"status": {"lastScheduleTime": "2026-01-01T00:00:00Z"}}),
        )
        .await,
        200,
    );
    assert_eq!(patched["status"]["lastScheduleTime"], "2026-01-01T00:00:00Z");
    assert_eq!(
        ok(c.get(&format!("{base}/status/status")).await, 200)["status"]["lastScheduleTime"],
        "2026-01-01T00:00:00Z"
    );
    let _ = cj;
}

#[tokio::test]
async fn c155_c156_serviceaccount_lifecycle() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/namespaces/default/serviceaccounts", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "automountServiceAccountToken": false})
    })
    .await;
}

#[tokio::test]
async fn c177_c178_core_event_lifecycle_and_deletecollection() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/namespaces/default/events", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Test", "message": "lifecycle", "type": "Normal", "count": 1,
            "series": {"count": 1, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}})
    })
    .await;
    let across = ok(c.get("/api/v1/events?labelSelector=e2e%3Dlifecycle").await, 200);
    assert!(names(&across).is_empty());
}

#[tokio::test]
async fn c189_c212_c215_the_kubernetes_service_has_endpoints_and_an_endpointslice() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let services = ok(c.get("/api/v1/services").await, 200);
    assert!(
        services["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["metadata"]["name"] == "kubernetes" && s["metadata"]["namespace"] == "default")
    );
    let port = api.running.addr.port() as i64;
    let ep = ok(c.get("/api/v1/namespaces/default/endpoints/kubernetes").await, 200);
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], port);
    let slices = ok(c.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes").await, 200);
    let slice = &slices["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], port);
    assert_eq!(slice["endpoints"][0]["addresses"][0], ep["subsets"][0]["addresses"][0]["ip"]);
}

#[tokio::test]
async fn c190_endpointslice_api() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["1.2.3.4"]}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    })
    .await;
}

#[tokio::test]
async fn c193_ingress_api_with_status() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let make = |name: &str, label: bool| json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"defaultBackend": {"service": {"name": "default-backend", "port": {"number": 8080}}}}});
    lifecycle(&c, base, make).await;
    ok(c.post(base, &make("st", false)).await, 201);
    let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": "169.1.1.1"}]}}});
    assert_eq!(
        ok(c.patch(&format!("{base}/st/status"), MERGE, &lb).await, 200)["status"]["loadBalancer"]["ingress"][0]["ip"],
        "169.1.1.1"
    );
}

#[tokio::test]
async fn c194_ingress_class_api() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    // Discovery: the group, its version, and the cluster-scoped resource in it.
    let groups = ok(c.get("/apis").await, 200);
    let networking = groups["groups"].as_array().expect("groups").iter().find(|g| g["name"] == "networking.k8s.io");
    assert_eq!(networking.expect("networking.k8s.io")["preferredVersion"]["groupVersion"], "networking.k8s.io/v1");
    let resources = ok(c.get("/apis/networking.k8s.io/v1").await, 200);
    let classes = resources["resources"].as_array().expect("resources").iter().find(|r| r["name"] == "ingressclasses");
    let classes = classes.expect("ingressclasses in discovery");
    assert_eq!((&classes["kind"], &classes["namespaced"]), (&json!("IngressClass"), &json!(false)));
    for verb in ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"] {
        assert!(classes["verbs"].as_array().expect("verbs").contains(&json!(verb)), "{verb}");
    }

    let base = "/apis/networking.k8s.io/v1/ingressclasses";
    let make = |name: &str, label: bool| json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"controller": "example.com/e2e"}});
    lifecycle(&c, base, make).await;

    // spec.controller is required and fixed once created; parameters may change.
    let r = c.post(base, &json!({"metadata": {"name": "bare"}, "spec": {}})).await;
    assert_eq!((r.status, r.json()["details"]["causes"][0]["field"].as_str()), (422, Some("spec.controller")));
    let created = ok(c.post(base, &make("fixed", false)).await, 201);
    let mut moved = created.clone();
    moved["spec"]["controller"] = json!("example.com/other");
    let r = c.put(&format!("{base}/fixed"), &moved).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("field is immutable"), "{}", r.text());
    let params = json!({"spec": {"parameters": {"apiGroup": "k8s.example.com", "kind": "Config", "name": "p"}}});
    let patched = ok(c.patch(&format!("{base}/fixed"), MERGE, &params).await, 200);
    assert_eq!(patched["spec"]["parameters"]["scope"], "Cluster", "parameters default to cluster scope");
    assert_eq!(patched["metadata"]["generation"], 2, "a spec change bumps the generation");

    // kubectl's columns.
    let table = c.get_accept(&format!("{base}/fixed"), "application/json;as=Table;v=v1;g=meta.k8s.io").await.json();
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().expect("columns").iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(columns, ["Name", "Controller", "Parameters", "Age"]);
    assert_eq!(
        table["rows"][0]["cells"].as_array().expect("cells")[..3],
        [json!("fixed"), json!("example.com/e2e"), json!("Config.k8s.example.com/p")]
    );
    ok(c.request("DELETE", &format!("{base}/fixed"), &[], Vec::new()).await, 200);
    assert_eq!(c.get(&format!("{base}/fixed")).await.status, 404);
}

#[tokio::test]
async fn c210_c211_service_status_lifecycle_and_deletecollection() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/services";
    let make = |name: &str, label: bool| json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
    lifecycle(&c, base, make).await;
    let svc = ok(c.post(base, &make("status", false)).await, 201);
    let mut w = c.stream(&format!("{base}?watch=true&resourceVersion={}", rv(&svc)), &[]).await;
    let cond = json!({"status": {"conditions": [{"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let patched = ok(c.patch(&format!("{base}/status/status"), MERGE, &cond).await, 200);
    assert_eq!(patched["status"]["conditions"][0]["reason"], "E2E");
    assert_eq!(w.expect_event(10).await["object"]["status"]["conditions"][0]["reason"], "E2E");
}

fn pv(name: &str, label: bool) -> Value {
    json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"capacity": {"storage": "1Gi"},
        "accessModes": ["ReadWriteOnce"], "hostPath": {"path": format!("/tmp/e2e-pv-{name}")}, "storageClassName": "manual"}})
}

fn pvc(name: &str, label: bool) -> Value {
    json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "manual"}})
}

#[tokio::test]
async fn c363_persistent_volumes_and_claims_lifecycle() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/persistentvolumes", pv).await;
    lifecycle(&c, "/api/v1/namespaces/default/persistentvolumeclaims", pvc).await;
    // New objects start Pending with upstream's defaults.
    let v = ok(c.post("/api/v1/persistentvolumes", &pv("defaults", false)).await, 201);
    assert_eq!(
        (v["status"]["phase"].as_str(), v["spec"]["persistentVolumeReclaimPolicy"].as_str()),
        (Some("Pending"), Some("Retain"))
    );
    let claim = ok(c.post("/api/v1/namespaces/default/persistentvolumeclaims", &pvc("defaults", false)).await, 201);
    assert_eq!(
        (claim["status"]["phase"].as_str(), claim["spec"]["volumeMode"].as_str()),
        (Some("Pending"), Some("Filesystem"))
    );
    // A claim's spec is fixed once created, except its storage request.
    let mut grown = claim.clone();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    ok(c.put("/api/v1/namespaces/default/persistentvolumeclaims/defaults", &grown).await, 200);
    let modes = json!({"spec": {"accessModes": ["ReadWriteMany"]}});
    let refused = c.patch("/api/v1/namespaces/default/persistentvolumeclaims/defaults", MERGE, &modes).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    // Bad input gets field causes: no volume source, no capacity, unknown access mode.
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"accessModes": ["Sometimes"]}});
    let r = c.post("/api/v1/persistentvolumes", &bad).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let fields: BTreeSet<String> = r.json()["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["field"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["spec".to_string(), "spec.accessModes".to_string(), "spec.capacity.storage".to_string()])
    );
}

#[tokio::test]
async fn c362_persistent_volume_and_claim_status_can_be_read_patched_and_updated() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    // A volume's status carries reason and message, a claim's carries conditions.
    let cond = |m: &str| json!([{"type": "E2E", "status": "True", "reason": "E2E", "message": m}]);
    for (base, make, field) in [
        ("/api/v1/persistentvolumes", pv as fn(&str, bool) -> Value, "message"),
        ("/api/v1/namespaces/default/persistentvolumeclaims", pvc, "conditions"),
    ] {
        let text = |m: &str| if field == "message" { json!(m) } else { cond(m) };
        ok(c.post(base, &make("st", true)).await, 201);
        assert_eq!(names(&ok(c.get(&format!("{base}?labelSelector=e2e%3Dlifecycle")).await, 200)), ["st"]);
        let status = ok(c.get(&format!("{base}/st/status")).await, 200);
        assert_eq!(status["status"]["phase"], "Pending");
        let patch = json!({"status": {field: text("patched by the e2e test")}});
        let patched = ok(c.patch(&format!("{base}/st/status"), MERGE, &patch).await, 200);
        assert_eq!(patched["status"][field], text("patched by the e2e test"));
        let mut updated = patched.clone();
        updated["status"][field] = text("updated by the e2e test");
        updated["spec"]["accessModes"] = json!(["ReadOnlyMany"]); // ignored: only status changes here
        let updated = ok(c.put(&format!("{base}/st/status"), &updated).await, 200);
        assert_eq!(updated["status"][field], text("updated by the e2e test"));
        assert_eq!(ok(c.get(&format!("{base}/st")).await, 200)["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    }
}

#[tokio::test]
async fn controller_revisions_and_storage_classes_are_served_with_their_immutable_fields() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/apis/apps/v1/namespaces/default/controllerrevisions";
    lifecycle(&c, base, |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "data": {"spec": {"template": {}}}, "revision": 1})
    })
    .await;
    let rev = ok(c.post(base, &json!({"metadata": {"name": "fixed"}, "data": {"a": 1}, "revision": 2})).await, 201);
    let mut changed = rev.clone();
    changed["data"] = json!({"a": 2});
    assert_eq!(c.put(&format!("{base}/fixed"), &changed).await.status, 422);
    changed["data"] = rev["data"].clone();
    changed["revision"] = json!(3);
    assert_eq!(ok(c.put(&format!("{base}/fixed"), &changed).await, 200)["revision"], 3);

    let sc = ok(
        c.post(
            "/apis/storage.k8s.io/v1/storageclasses",
            &json!({"metadata": {"name": "local"}, "provisioner": "kubernetes.io/host-path"}),
        )
        .await,
        201,
    );
    assert_eq!((sc["reclaimPolicy"].as_str(), sc["volumeBindingMode"].as_str()), (Some("Delete"), Some("Immediate")));
    let r = c.patch("/apis/storage.k8s.io/v1/storageclasses/local", MERGE, &json!({"provisioner": "other"})).await;
    assert_eq!(r.status, 422, "{}", r.text());
}

#[tokio::test]
async fn c219_endpoints_lifecycle() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/namespaces/default/endpoints", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "subsets": [{"addresses": [{"ip": "10.0.0.24"}], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]})
    })
    .await;
}

#[tokio::test]
async fn c222_c290_configmaps_and_secrets_with_an_empty_key_are_rejected() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let r = c
        .post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "empty"}, "data": {"": "value"}}))
        .await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (422, Some("Invalid")));
    let r = c
        .post("/api/v1/namespaces/default/secrets", &json!({"metadata": {"name": "empty"}, "data": {"": "dmFsdWU="}}))
        .await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (422, Some("Invalid")));
}

#[tokio::test]
async fn c223_configmap_lifecycle() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(
        &c,
        "/api/v1/namespaces/default/configmaps",
        |name, label| json!({"metadata": {"name": name, "labels": labels(label)}, "data": {"valueName": "value"}}),
    )
    .await;
}

#[tokio::test]
async fn c254_lease_api() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/apis/coordination.k8s.io/v1/namespaces/default/leases", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "spec": {"holderIdentity": "holder", "leaseDurationSeconds": 30,
            "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:10.000000Z", "leaseTransitions": 0}})
    })
    .await;
    let lease = ok(c.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/unlabelled").await, 200);
    assert_eq!(lease["spec"]["renewTime"], "2026-01-01T00:00:10.000000Z", "MicroTime keeps its microseconds");
}

#[tokio::test]
async fn c257_node_lifecycle() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/nodes", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "status": {"capacity": {"cpu": "2"}}})
    })
    .await;
    let node = ok(c.get("/api/v1/nodes/unlabelled").await, 200);
    assert_eq!(node["status"]["capacity"]["cpu"], "2", "a node is created with the status its kubelet reports");
}

#[tokio::test]
async fn c261_a_pod_with_equal_requests_and_limits_is_guaranteed() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let res = json!({"limits": {"cpu": "100m", "memory": "100Mi"}, "requests": {"cpu": "100m", "memory": "100Mi"}});
    let pod = ok(c.post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "qos"}, "spec": {"containers": [{"name": "agnhost", "image": "agnhost", "resources": res}]}})).await, 201);
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
}

#[tokio::test]
async fn c291_secret_patching() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    lifecycle(&c, "/api/v1/namespaces/default/secrets", |name, label| {
        json!({"metadata": {"name": name, "labels": labels(label)}, "data": {"key": "dmFsdWU="}, "type": "Opaque"})
    })
    .await;
    let patched = ok(
        c.patch("/api/v1/namespaces/default/secrets/unlabelled", MERGE, &json!({"data": {"key": "bmV3"}})).await,
        200,
    );
    assert_eq!(patched["data"]["key"], "bmV3");
}

#[tokio::test]
async fn c315_priorityclass_endpoints_list_and_change_mutable_fields_but_refuse_value_changes() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let mut created = Vec::new();
    for (name, value) in [("p1", 1), ("p2", 2)] {
        created.push(ok(c.post(base, &json!({"metadata": {"name": name}, "value": value})).await, 201));
    }
    // Immutable: a patch (as upstream computes it, strategic) and an update changing the value.
    let r = c.patch(&format!("{base}/p1"), STRATEGIC, &json!({"value": 10})).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (422, Some("Invalid")), "{}", r.text());
    assert_eq!(r.json()["details"]["causes"][0]["field"], "value");
    let mut changed = created[1].clone();
    changed["value"] = json!(20);
    let r = c.put(&format!("{base}/p2"), &changed).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (422, Some("Invalid")), "{}", r.text());
    // Mutable: the description, by patch and by update.
    ok(c.patch(&format!("{base}/p1"), STRATEGIC, &json!({"description": "updated description"})).await, 200);
    let mut described = created[1].clone();
    described["description"] = json!("updated description");
    ok(c.put(&format!("{base}/p2"), &described).await, 200);
    let listed = names(&ok(c.get(base).await, 200));
    for name in ["p1", "p2", "system-cluster-critical", "system-node-critical"] {
        assert!(listed.contains(&name.to_string()), "{name} missing from {listed:?}");
    }
    for (name, value) in [("p1", 1), ("p2", 2)] {
        let live = ok(c.get(&format!("{base}/{name}")).await, 200);
        assert_eq!((&live["value"], &live["description"]), (&json!(value), &json!("updated description")));
    }
}

#[tokio::test]
async fn c332_c400_immutable_configmaps_and_secrets_refuse_data_changes_but_allow_labels_and_delete() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for (path, body, data_patch) in [
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "imm"}, "data": {"a": "1"}, "immutable": true}),
            json!({"data": {"a": "2"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": "imm"}, "data": {"a": "MQ=="}, "immutable": true}),
            json!({"data": {"a": "Mg=="}}),
        ),
    ] {
        ok(c.post(path, &body).await, 201);
        assert_eq!(c.patch(&format!("{path}/imm"), MERGE, &data_patch).await.status, 422);
        assert_eq!(c.patch(&format!("{path}/imm"), MERGE, &json!({"immutable": false})).await.status, 422);
        ok(c.patch(&format!("{path}/imm"), MERGE, &json!({"metadata": {"labels": {"ok": "yes"}}})).await, 200);
        ok(c.delete(&format!("{path}/imm")).await, 200);
    }
}

// ---- sig-cli rows that need only the API server ----
// kubectl blocks its test's thread, so these run the apiserver as its own process.

async fn kubectl_cluster() -> (Etcd, Process) {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    (etcd, api)
}

fn kubectl_json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.run(&all).ok().stdout;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
async fn c159_c160_c169_kubectl_api_versions_cluster_info_and_version() {
    let (_etcd, api) = kubectl_cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let versions = k.run(&["api-versions"]).ok().stdout;
    assert!(versions.lines().any(|l| l == "v1"), "{versions}");
    let info = k.run(&["cluster-info"]).ok().stdout;
    assert!(info.contains("Kubernetes control plane") && info.contains(&api.endpoint.url), "{info}");
    let v = kubectl_json(&k, &["version"]);
    let server = &v["serverVersion"];
    assert_eq!((server["major"].as_str(), server["minor"].as_str()), (Some("1"), Some("33")));
    for f in ["gitVersion", "gitCommit", "buildDate", "goVersion", "platform"] {
        assert!(server[f].as_str().is_some_and(|s| !s.is_empty()), "{f} in {server}");
    }
}

#[tokio::test]
async fn c162_kubectl_diff_reports_an_image_change_through_a_server_side_dry_run() {
    let (_etcd, api) = kubectl_cluster().await;
    let k = Kubectl::new(&api.endpoint);
    let deploy = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: httpd-deployment\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: httpd\n  template:\n    metadata:\n      labels:\n        app: httpd\n    spec:\n      containers:\n      - name: httpd\n        image: {image}\n"
        )
    };
    k.run_stdin(&["apply", "-f", "-"], &deploy("httpd:2.4.38-alpine")).ok();
    let before = kubectl_json(&k, &["get", "deployment", "httpd-deployment"]);
    let diff = k.run_stdin(&["diff", "-f", "-"], &deploy("busybox:1.36"));
    assert_eq!(diff.code, 1, "kubectl diff exits 1 when there are differences: {}", diff.stderr);
    let changed = |sign: char, image: &str| {
        diff.stdout.lines().any(|l| l.starts_with(sign) && l.trim_end().ends_with(&format!("image: {image}")))
    };
    assert!(changed('-', "httpd:2.4.38-alpine") && changed('+', "busybox:1.36"), "{}", diff.stdout);
    let after = kubectl_json(&k, &["get", "deployment", "httpd-deployment"]);
    assert_eq!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"], "a dry run writes nothing");
    assert_eq!(k.run_stdin(&["diff", "-f", "-"], &deploy("httpd:2.4.38-alpine")).code, 0, "no difference");
}

#[tokio::test]
async fn c164_c166_c167_c168_kubectl_run_label_replace_and_server_side_dry_run_patch() {
    let (_etcd, api) = kubectl_cluster().await;
    let k = Kubectl::new(&api.endpoint);
    // C167: run --restart=Never makes one pod with the image.
    k.run(&["run", "e2e-test-httpd-pod", "--restart=Never", "--image=httpd:2.4.38-alpine"]).ok();
    let pod = kubectl_json(&k, &["get", "pod", "e2e-test-httpd-pod"]);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(pod["spec"]["containers"][0]["image"], "httpd:2.4.38-alpine");

    // C164: label, select by it, remove it.
    k.run(&["label", "pods", "e2e-test-httpd-pod", "testing-label=testing-label-value"]).ok();
    let sel = k.run(&["get", "pods", "-l", "testing-label=testing-label-value", "-o", "name"]).ok().stdout;
    assert_eq!(sel.trim(), "pod/e2e-test-httpd-pod");
    k.run(&["label", "pods", "e2e-test-httpd-pod", "testing-label-"]).ok();
    assert!(
        kubectl_json(&k, &["get", "pod", "e2e-test-httpd-pod"])["metadata"]["labels"].get("testing-label").is_none()
    );

    // C168: a server-side dry-run patch answers the change and stores nothing.
    let patch = r#"{"spec":{"containers":[{"name":"e2e-test-httpd-pod","image":"busybox:1.36"}]}}"#;
    let dry = kubectl_json(&k, &["patch", "pod", "e2e-test-httpd-pod", "-p", patch, "--dry-run=server"]);
    assert_eq!(dry["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(
        kubectl_json(&k, &["get", "pod", "e2e-test-httpd-pod"])["spec"]["containers"][0]["image"],
        "httpd:2.4.38-alpine"
    );

    // C166: replace with a new image.
    let mut pod = kubectl_json(&k, &["get", "pod", "e2e-test-httpd-pod"]);
    pod["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    k.run_stdin(&["replace", "-f", "-"], &pod.to_string()).ok();
    assert_eq!(
        kubectl_json(&k, &["get", "pod", "e2e-test-httpd-pod"])["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
}

#[tokio::test]
async fn c170_c171_kubectl_proxy_on_a_unix_socket_and_on_port_zero() {
    use std::io::{BufRead, BufReader, Read, Write};
    let (_etcd, api) = kubectl_cluster().await;
    let k = Kubectl::new(&api.endpoint);
    // Port 0: kubectl picks one and says which.
    let mut child = k.spawn(&["proxy", "--port=0"]);
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    assert!(line.starts_with("Starting to serve on 127.0.0.1:"), "{line}");
    let body = http_get(&addr, "/api");
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("\"versions\":[\"v1\"]"), "{body}");

    // A unix socket.
    let dir = e2e::TempDir::new("proxy").expect("dir");
    let sock = dir.path().join("kubectl.sock");
    let mut child = k.spawn(&["proxy", &format!("--unix-socket={}", sock.display())]);
    let mut tries = 0;
    while !sock.exists() && tries < 100 {
        std::thread::sleep(Duration::from_millis(100));
        tries += 1;
    }
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("socket");
    s.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"versions\":[\"v1\"]"), "{resp}");
}

/// A plain HTTP/1.1 GET to `addr` (host:port), the body as text.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("response");
    resp
}

/// An `events.k8s.io/v1` Event as the upstream events e2e test makes it.
fn v1_event(ns: &str, name: &str, label: bool) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "labels": if label { json!({"test-event": "true"}) } else { json!({}) }},
        "regarding": {"namespace": ns},
        "eventTime": "2017-09-19T13:49:16.000000Z",
        "note": format!("This is {name}"), "action": "Do", "reason": "Test", "type": "Normal",
        "reportingController": "test-controller", "reportingInstance": "test-node"
    })
}

#[tokio::test]
async fn c176_an_events_v1_event_is_read_patched_updated_deleted_and_is_the_same_object_as_the_core_event() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let v1 = "/apis/events.k8s.io/v1/namespaces/default/events";
    let core = "/api/v1/namespaces/default/events";
    let created = ok(c.post(v1, &v1_event("default", "event-test", true)).await, 201);
    assert_eq!(
        (created["apiVersion"].as_str(), created["note"].as_str()),
        (Some("events.k8s.io/v1"), Some("This is event-test"))
    );
    let got = ok(c.get(&format!("{v1}/event-test")).await, 200);
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        names(&ok(c.get("/apis/events.k8s.io/v1/events?labelSelector=test-event%3Dtrue").await, 200)),
        ["event-test"]
    );

    // The same object through the core API, under the core names.
    let as_core = ok(c.get(&format!("{core}/event-test")).await, 200);
    assert_eq!(as_core["apiVersion"], "v1");
    assert_eq!(as_core["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(as_core["message"], "This is event-test");
    assert_eq!(as_core["reportingComponent"], "test-controller");
    assert_eq!(as_core["involvedObject"]["namespace"], "default");

    let patched =
        ok(c.patch(&format!("{v1}/event-test"), MERGE, &json!({"note": "This is a test event - patched"})).await, 200);
    assert_eq!(patched["note"], "This is a test event - patched");
    let mut update = patched.clone();
    update["series"] = json!({"count": 100, "lastObservedTime": "2017-09-19T13:50:16.000000Z"});
    let updated = ok(c.put(&format!("{v1}/event-test"), &update).await, 200);
    assert_eq!(updated["series"]["count"], 100);
    assert_eq!(ok(c.get(&format!("{core}/event-test")).await, 200)["series"]["count"], 100);
    // What happened is fixed; a series of one is no series.
    let mut changed = updated.clone();
    changed["reason"] = json!("Other");
    assert_eq!(c.put(&format!("{v1}/event-test"), &changed).await.status, 422);
    let bad = c.patch(&format!("{v1}/event-test"), MERGE, &json!({"series": {"count": 1}})).await;
    assert_eq!(bad.status, 422, "{}", bad.text());

    // A core event (as a kubelet writes it) is listed by the new API under the new names.
    let kubelet = json!({"metadata": {"name": "from-core"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started", "message": "Started container c", "type": "Normal", "count": 2,
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:09Z"});
    ok(c.post(core, &kubelet).await, 201);
    let seen = ok(c.get(&format!("{v1}/from-core")).await, 200);
    assert_eq!((seen["note"].as_str(), seen["deprecatedCount"].as_i64()), (Some("Started container c"), Some(2)));
    assert_eq!(seen["regarding"]["name"], "p");
    assert_eq!(seen["deprecatedSource"]["component"], "kubelet");
    let selected = ok(c.get(&format!("{v1}?fieldSelector=regarding.name%3Dp")).await, 200);
    assert_eq!(names(&selected), ["from-core"]);

    // Creates through the new API must say what the new API requires.
    let mut incomplete = v1_event("default", "incomplete", false);
    incomplete.as_object_mut().expect("object").remove("reportingController");
    incomplete["deprecatedCount"] = json!(3);
    let refused = c.post(v1, &incomplete).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    let causes: Vec<String> = refused.json()["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str().map(str::to_string))
        .collect();
    assert_eq!(causes, ["reportingController", "deprecatedCount"]);

    ok(c.request("DELETE", &format!("{v1}/event-test"), &[], Vec::new()).await, 200);
    assert_eq!(c.get(&format!("{core}/event-test")).await.status, 404);
    assert_eq!(names(&ok(c.get(v1).await, 200)), ["from-core"]);
}

#[tokio::test]
async fn c175_events_v1_are_listed_across_namespaces_and_removed_with_deletecollection() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let all = "/apis/events.k8s.io/v1/events?labelSelector=test-event%3Dtrue";
    for i in 1..=3 {
        let path = "/apis/events.k8s.io/v1/namespaces/default/events";
        ok(c.post(path, &v1_event("default", &format!("event-{i}"), true)).await, 201);
    }
    ok(c.post("/apis/events.k8s.io/v1/namespaces/default/events", &v1_event("default", "kept", false)).await, 201);
    let listed = ok(c.get(all).await, 200);
    assert_eq!(listed["kind"], "EventList");
    assert_eq!(names(&listed), ["event-1", "event-2", "event-3"]);
    let mut watch = c.stream(&format!("{all}&watch=true&resourceVersion={}", rv(&listed)), &[]).await;
    ok(
        c.request(
            "DELETE",
            "/apis/events.k8s.io/v1/namespaces/default/events?labelSelector=test-event%3Dtrue",
            &[],
            Vec::new(),
        )
        .await,
        200,
    );
    assert!(names(&ok(c.get(all).await, 200)).is_empty());
    assert_eq!(names(&ok(c.get("/api/v1/namespaces/default/events").await, 200)), ["kept"]);
    for _ in 0..3 {
        let ev = watch.expect_event(10).await;
        assert_eq!(ev["type"], "DELETED");
        assert_eq!(ev["object"]["apiVersion"], "events.k8s.io/v1", "watch events are in the watched API's form");
    }
}

/// kube-rs's event `Recorder` writes `events.k8s.io/v1` (a create, then merge patches of the
/// series); kubectl shows the result as the core Events it reads.
#[tokio::test]
async fn events_a_kube_rs_recorder_publishes_are_what_kubectl_shows() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (_etcd, api) = kubectl_cluster().await;
    let client = api.endpoint.kube_client().await;
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(&Default::default(), &serde_json::from_value(json!({"metadata": {"name": "watched"}})).expect("cm"))
        .await
        .expect("configmap");
    let reporter = Reporter { controller: "example.com/operator".into(), instance: Some("operator-0".into()) };
    let recorder = Recorder::new(client, reporter);
    let event = Event {
        type_: EventType::Warning,
        reason: "Reconciled".into(),
        note: Some("the config drifted".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    for _ in 0..3 {
        recorder.publish(&event, &reference).await.expect("publish");
    }
    let k = Kubectl::new(&api.endpoint);
    let events = kubectl_json(&k, &["get", "events", "--field-selector", "involvedObject.name=watched"]);
    let items = events["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one event with a series: {events}");
    assert_eq!(items[0]["message"], "the config drifted");
    assert_eq!(items[0]["series"]["count"], 3);
    assert_eq!(items[0]["reportingComponent"], "example.com/operator");
    let table = k.run(&["get", "events"]).ok().stdout;
    assert!(
        table.contains("Warning") && table.contains("Reconciled") && table.contains("configmap/watched"),
        "{table}"
    );
    let v1 = k.run(&["get", "events.v1.events.k8s.io"]).ok().stdout;
    assert!(v1.contains("Reconciled") && v1.contains("the config drifted"), "{v1}");
    let described = k.run(&["describe", "configmap", "watched"]).ok().stdout;
    assert!(described.contains("Reconciled") && described.contains("the config drifted"), "{described}");
}
