//! The REST verbs against the in-memory storage: the same code path as with etcd, minus the
//! network. The etcd-backed integration tests in `tests/` repeat the storage-sensitive parts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::codec::{BodyFormat, decode_body};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::storage::memory::MemoryStorage;

struct Fixture {
    store: Arc<Store>,
    mem: MemoryStorage,
}

impl Fixture {
    async fn new() -> Fixture {
        let mem = MemoryStorage::new();
        let mut store = Store::new(Arc::new(mem.clone()), Arc::new(Registry::builtin()));
        store.bookmark_interval = Duration::from_millis(100);
        let f = Fixture { store: Arc::new(store), mem };
        for ns in ["default", "other"] {
            f.create("namespaces", "", json!({"metadata": {"name": ns}})).await.expect("namespace");
        }
        f
    }

    fn info(&self, plural: &str) -> Arc<ResourceInfo> {
        let reg = &self.store.registry;
        reg.all().iter().find(|r| r.plural == plural).cloned().unwrap_or_else(|| panic!("{plural} not served"))
    }

    async fn create(&self, plural: &str, ns: &str, obj: Value) -> ApiResult<Value> {
        self.create_with(plural, ns, obj, &WriteOptions::default()).await.map(|w| w.object)
    }

    async fn create_with(&self, plural: &str, ns: &str, obj: Value, opts: &WriteOptions) -> ApiResult<Written> {
        let body = decode_body(obj.to_string().as_bytes(), BodyFormat::Json)?;
        self.store.create(&self.info(plural), ns, body, opts).await
    }

    async fn update(&self, plural: &str, ns: &str, sub: Option<&str>, obj: Value) -> ApiResult<Value> {
        let name = meta::name(&obj).to_string();
        let body = decode_body(obj.to_string().as_bytes(), BodyFormat::Json)?;
        self.store.update(&self.info(plural), ns, &name, sub, body, &WriteOptions::default()).await.map(|w| w.object)
    }

    async fn get(&self, plural: &str, ns: &str, name: &str) -> ApiResult<Value> {
        self.store.get_value(&self.info(plural), ns, name).await
    }

    async fn patch(&self, plural: &str, ns: &str, name: &str, kind: PatchKind, patch: Value) -> ApiResult<Value> {
        let body = patch.to_string();
        let p = Patch { kind, body: body.as_bytes() };
        self.store.patch(&self.info(plural), ns, name, None, p, &WriteOptions::default()).await.map(|w| w.object)
    }

    async fn delete(&self, plural: &str, ns: &str, name: &str) -> ApiResult<Deleted> {
        self.store.delete(&self.info(plural), ns, name, &DeleteOptions::default()).await
    }

    async fn list(&self, plural: &str, ns: &str, opts: ListOptions) -> ApiResult<(Vec<String>, ListResult)> {
        let r = self.store.list(&self.info(plural), ns, &opts).await?;
        let names = r.items.iter().map(|i| meta::name(&i.value().expect("value")).to_string()).collect();
        Ok((names, r))
    }
}

fn rv(obj: &Value) -> i64 {
    meta::meta_str(obj, "resourceVersion").parse().expect("numeric resourceVersion")
}

fn cm(name: &str) -> Value {
    json!({"metadata": {"name": name}, "data": {"k": "v"}})
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}})
}

#[tokio::test]
async fn create_sets_server_owned_metadata() {
    let f = Fixture::new().await;
    let obj = f
        .create(
            "configmaps",
            "default",
            json!({"metadata": {"name": "a", "uid": "fake", "creationTimestamp": null}, "data": {}}),
        )
        .await
        .expect("created");
    assert_eq!(obj["kind"], "ConfigMap");
    assert_eq!(obj["apiVersion"], "v1");
    assert_eq!(obj["metadata"]["namespace"], "default");
    assert_ne!(obj["metadata"]["uid"], "fake");
    assert_eq!(obj["metadata"]["uid"].as_str().map(str::len), Some(36));
    assert!(obj["metadata"]["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(rv(&obj) > 0);
    assert!(obj["metadata"].get("generation").is_none(), "configmaps do not track generation");
    let stored = f.get("configmaps", "default", "a").await.expect("get");
    assert_eq!(stored, obj, "what create returned is what is stored");
}

#[tokio::test]
async fn create_conflicts_and_namespace_rules() {
    let f = Fixture::new().await;
    f.create("configmaps", "default", cm("a")).await.expect("created");
    let err = f.create("configmaps", "default", cm("a")).await.expect_err("exists");
    assert_eq!((err.code(), err.reason()), (409, "AlreadyExists"));
    let err = f.create("configmaps", "missing", cm("a")).await.expect_err("no namespace");
    assert_eq!(err.to_string(), "namespaces \"missing\" not found");
    let err = f
        .create("configmaps", "default", json!({"metadata": {"name": "a", "namespace": "other"}}))
        .await
        .expect_err("ns");
    assert_eq!(err.code(), 400);
    let err = f.create("configmaps", "default", json!({"metadata": {"name": "Bad_Name"}})).await.expect_err("invalid");
    assert_eq!((err.code(), err.reason()), (422, "Invalid"));
    let err = f.create("configmaps", "default", json!({"metadata": {}})).await.expect_err("no name");
    assert!(err.to_string().contains("metadata.name: Required value"), "{err}");
}

#[tokio::test]
async fn generate_name_appends_five_safe_characters() {
    let f = Fixture::new().await;
    let obj = f.create("configmaps", "default", json!({"metadata": {"generateName": "web-"}})).await.expect("created");
    let name = meta::name(&obj);
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn terminating_namespaces_refuse_new_objects() {
    let f = Fixture::new().await;
    match f.delete("namespaces", "", "other").await.expect("delete") {
        Deleted::Pending(ns) => {
            assert_eq!(ns["status"]["phase"], "Terminating");
            assert!(meta::is_deleting(&ns));
        }
        Deleted::Gone(_) => panic!("namespace with the kubernetes finalizer must wait"),
    }
    let err = f.create("configmaps", "other", cm("a")).await.expect_err("terminating");
    assert_eq!(err.code(), 403);
    assert!(err.to_string().contains("because it is being terminated"), "{err}");
    // The namespace controller empties spec.finalizers through /finalize; then it is gone.
    let mut ns = f.get("namespaces", "", "other").await.expect("get");
    ns["spec"]["finalizers"] = json!([]);
    f.update("namespaces", "", Some("finalize"), ns).await.expect("finalized");
    assert_eq!(f.get("namespaces", "", "other").await.expect_err("gone").code(), 404);
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let f = Fixture::new().await;
    let created = f.create("configmaps", "default", cm("a")).await.expect("created");
    let mut first = created.clone();
    first["data"]["k"] = json!("1");
    let updated = f.update("configmaps", "default", None, first).await.expect("update");
    assert!(rv(&updated) > rv(&created));
    let mut stale = created.clone();
    stale["data"]["k"] = json!("2");
    let err = f.update("configmaps", "default", None, stale).await.expect_err("stale");
    assert_eq!((err.code(), err.reason()), (409, "Conflict"));
    assert!(err.to_string().contains("the object has been modified"), "{err}");
    // Without a resourceVersion the update is unconditional.
    let mut blind = cm("a");
    blind["data"]["k"] = json!("3");
    let updated = f.update("configmaps", "default", None, blind).await.expect("unconditional");
    assert_eq!(updated["data"]["k"], "3");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"], "uid carried over");
    assert_eq!(updated["metadata"]["creationTimestamp"], created["metadata"]["creationTimestamp"]);
}

#[tokio::test]
async fn unchanged_update_writes_nothing() {
    let f = Fixture::new().await;
    let created = f.create("configmaps", "default", cm("a")).await.expect("created");
    let same = f.update("configmaps", "default", None, created.clone()).await.expect("update");
    assert_eq!(rv(&same), rv(&created));
}

#[tokio::test]
async fn generation_moves_with_spec_only_and_status_has_its_own_door() {
    let f = Fixture::new().await;
    let d = f.create("deployments", "default", deployment("web", 1)).await.expect("created");
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d.get("status").is_none(), "status starts empty");
    // Labels are metadata: no bump.
    let mut labelled = d.clone();
    labelled["metadata"]["labels"] = json!({"x": "y"});
    let labelled = f.update("deployments", "default", None, labelled).await.expect("labels");
    assert_eq!(labelled["metadata"]["generation"], 1);
    // Status through the main resource is ignored.
    let mut sneaky = labelled.clone();
    sneaky["status"] = json!({"replicas": 9});
    let ignored = f.update("deployments", "default", None, sneaky).await.expect("no-op");
    assert!(ignored.get("status").is_none());
    assert_eq!(rv(&ignored), rv(&labelled), "ignoring status left nothing to write");
    // Spec change bumps.
    let mut scaled = ignored.clone();
    scaled["spec"]["replicas"] = json!(3);
    let scaled = f.update("deployments", "default", None, scaled).await.expect("scaled");
    assert_eq!(scaled["metadata"]["generation"], 2);
    // The status subresource takes status and nothing else.
    let mut status = scaled.clone();
    status["status"] = json!({"replicas": 3, "observedGeneration": 2});
    status["spec"]["replicas"] = json!(7);
    status["metadata"]["labels"] = json!({"changed": "yes"});
    let after = f.update("deployments", "default", Some("status"), status).await.expect("status");
    assert_eq!(after["status"]["observedGeneration"], 2);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["metadata"]["labels"], json!({"x": "y"}));
    assert_eq!(after["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_one_is_removed() {
    let f = Fixture::new().await;
    let obj = f
        .create("configmaps", "default", json!({"metadata": {"name": "a", "finalizers": ["example.com/hold"]}}))
        .await
        .expect("created");
    let Deleted::Pending(marked) = f.delete("configmaps", "default", "a").await.expect("delete") else {
        panic!("finalizer must hold the object");
    };
    assert!(meta::is_deleting(&marked));
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
    // Deleting again changes nothing.
    let Deleted::Pending(again) = f.delete("configmaps", "default", "a").await.expect("delete") else { panic!() };
    assert_eq!(again["metadata"]["deletionTimestamp"], marked["metadata"]["deletionTimestamp"]);
    // Updates cannot clear the deletion timestamp.
    let mut undelete = marked.clone();
    meta::meta_mut(&mut undelete).remove("deletionTimestamp");
    undelete["data"] = json!({"x": "1"});
    let still = f.update("configmaps", "default", None, undelete).await.expect("update");
    assert!(meta::is_deleting(&still));
    let mut release = still.clone();
    release["metadata"]["finalizers"] = json!([]);
    f.update("configmaps", "default", None, release).await.expect("released");
    assert_eq!(f.get("configmaps", "default", "a").await.expect_err("gone").code(), 404);
    let _ = obj;
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let f = Fixture::new().await;
    let obj = f.create("configmaps", "default", cm("a")).await.expect("created");
    let info = f.info("configmaps");
    let wrong_uid = DeleteOptions { precondition_uid: Some("nope".into()), ..Default::default() };
    let err = f.store.delete(&info, "default", "a", &wrong_uid).await.expect_err("uid");
    assert_eq!(err.code(), 409);
    assert!(err.to_string().contains("Precondition failed: UID in precondition: nope"), "{err}");
    let wrong_rv = DeleteOptions { precondition_resource_version: Some("1".into()), ..Default::default() };
    assert_eq!(f.store.delete(&info, "default", "a", &wrong_rv).await.expect_err("rv").code(), 409);
    let dry = DeleteOptions { dry_run: true, ..Default::default() };
    f.store.delete(&info, "default", "a", &dry).await.expect("dry run");
    assert!(f.get("configmaps", "default", "a").await.is_ok(), "dry run deletes nothing");
    let right = DeleteOptions { precondition_uid: Some(meta::uid(&obj).into()), ..Default::default() };
    assert!(matches!(f.store.delete(&info, "default", "a", &right).await.expect("deleted"), Deleted::Gone(_)));
    assert_eq!(f.delete("configmaps", "default", "a").await.expect_err("gone").code(), 404);
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_and_duplicate_fields_and_warn_reports_them() {
    let f = Fixture::new().await;
    let body = json!({"metadata": {"name": "a"}, "data": {}, "bogus": 1});
    let err = f.create("configmaps", "default", body.clone()).await.expect_err("strict");
    assert_eq!(err.to_string(), "strict decoding error: unknown field \"bogus\"");
    let warn = WriteOptions { field_validation: FieldValidation::Warn, ..Default::default() };
    let w = f.create_with("configmaps", "default", body, &warn).await.expect("warn");
    assert_eq!(w.warnings, vec!["unknown field \"bogus\""]);
    assert!(w.object.get("bogus").is_none(), "unknown fields never reach storage");
    let dup = decode_body(br#"{"metadata":{"name":"b","name":"c"}}"#, BodyFormat::Json).expect("parses");
    let err = f.store.create(&f.info("configmaps"), "default", dup, &WriteOptions::default()).await.expect_err("dup");
    assert_eq!(err.to_string(), "strict decoding error: duplicate field \"metadata.name\"");
}

#[tokio::test]
async fn wrong_types_and_kinds_are_bad_requests() {
    let f = Fixture::new().await;
    let err =
        f.create("deployments", "default", json!({"metadata": {"name": "a"}, "spec": {"replicas": "three"}})).await;
    let err = err.expect_err("type");
    assert_eq!(err.code(), 400);
    assert!(err.to_string().contains("spec.replicas"), "{err}");
    let err = f
        .create("configmaps", "default", json!({"kind": "Secret", "metadata": {"name": "a"}}))
        .await
        .expect_err("kind");
    assert_eq!(err.to_string(), "the kind in the data (Secret) does not match the expected kind (ConfigMap)");
    let err = f.create("configmaps", "default", json!({"apiVersion": "v2", "metadata": {"name": "a"}})).await;
    assert!(err.expect_err("version").to_string().contains("does not match the expected API version (v1)"));
    let err = f.create("configmaps", "default", json!([1, 2])).await.expect_err("array");
    assert_eq!(err.code(), 400);
}

#[tokio::test]
async fn merge_and_json_patches_apply_to_the_latest_object() {
    let f = Fixture::new().await;
    let created =
        f.create("configmaps", "default", json!({"metadata": {"name": "a"}, "data": {"a": "1", "b": "2"}})).await;
    let created = created.expect("created");
    let merged = f
        .patch(
            "configmaps",
            "default",
            "a",
            PatchKind::Merge,
            json!({"metadata": {"labels": {"x": "y"}}, "data": {"a": null, "c": "3"}}),
        )
        .await
        .expect("merge");
    assert_eq!(merged["data"], json!({"b": "2", "c": "3"}));
    assert_eq!(merged["metadata"]["labels"]["x"], "y");
    let patched = f
        .patch("configmaps", "default", "a", PatchKind::Json, json!([{"op": "test", "path": "/data/b", "value": "2"}, {"op": "replace", "path": "/data/b", "value": "20"}]))
        .await
        .expect("json patch");
    assert_eq!(patched["data"]["b"], "20");
    let err = f
        .patch("configmaps", "default", "a", PatchKind::Json, json!([{"op": "test", "path": "/data/b", "value": "2"}]))
        .await
        .expect_err("test fails");
    assert_eq!(err.code(), 422);
    // kubectl makes a JSON patch conditional by replacing the resourceVersion.
    let stale = json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": meta::meta_str(&created, "resourceVersion")}, {"op": "replace", "path": "/data/b", "value": "x"}]);
    let err = f.patch("configmaps", "default", "a", PatchKind::Json, stale).await.expect_err("precondition");
    assert_eq!(err.code(), 409);
    assert_eq!(f.get("configmaps", "default", "a").await.expect("get")["data"]["b"], "20", "nothing half-written");
    let err = f.patch("configmaps", "default", "missing", PatchKind::Merge, json!({})).await.expect_err("404");
    assert_eq!(err.code(), 404);
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page_with_continue_tokens() {
    let f = Fixture::new().await;
    for (i, tier) in ["front", "back", "front", "back", "front"].iter().enumerate() {
        f.create("configmaps", "default", json!({"metadata": {"name": format!("cm-{i}"), "labels": {"tier": tier}}}))
            .await
            .expect("created");
    }
    f.create("configmaps", "other", json!({"metadata": {"name": "elsewhere", "labels": {"tier": "front"}}}))
        .await
        .expect("c");
    let info = f.info("configmaps");
    let sel = |l: &str, fs: &str| Selectors {
        labels: LabelSelector::parse(l).expect("labels"),
        fields: FieldSelector::parse(fs, &info).expect("fields"),
    };
    let (names, _) = f
        .list("configmaps", "default", ListOptions { selectors: sel("tier=front", ""), ..Default::default() })
        .await
        .expect("l");
    assert_eq!(names, ["cm-0", "cm-2", "cm-4"]);
    let (names, _) = f
        .list("configmaps", "", ListOptions { selectors: sel("tier=front", ""), ..Default::default() })
        .await
        .expect("l");
    assert_eq!(names.len(), 4, "all namespaces");
    let (names, _) = f
        .list("configmaps", "", ListOptions { selectors: sel("", "metadata.namespace=other"), ..Default::default() })
        .await
        .expect("l");
    assert_eq!(names, ["elsewhere"]);
    let (names, _) = f
        .list("configmaps", "default", ListOptions { selectors: sel("", "metadata.name=cm-3"), ..Default::default() })
        .await
        .expect("l");
    assert_eq!(names, ["cm-3"]);

    // Paging: two at a time, stable across writes made in between.
    let (page1, r1) =
        f.list("configmaps", "default", ListOptions { limit: 2, ..Default::default() }).await.expect("p1");
    assert_eq!(page1, ["cm-0", "cm-1"]);
    let token = r1.continue_token.clone().expect("more pages");
    f.create("configmaps", "default", json!({"metadata": {"name": "cm-9"}})).await.expect("late");
    let (page2, r2) = f
        .list("configmaps", "default", ListOptions { limit: 2, continue_token: Some(token), ..Default::default() })
        .await
        .expect("p2");
    assert_eq!(page2, ["cm-2", "cm-3"]);
    assert_eq!(r2.revision, r1.revision, "all pages come from one snapshot");
    let (page3, r3) = f
        .list(
            "configmaps",
            "default",
            ListOptions { limit: 2, continue_token: r2.continue_token, ..Default::default() },
        )
        .await
        .expect("p3");
    assert_eq!(page3, ["cm-4"], "cm-9 was created after the snapshot");
    assert!(r3.continue_token.is_none());
    // Paging with a selector fills pages with matches.
    let (p, r) = f
        .list("configmaps", "default", ListOptions { limit: 2, selectors: sel("tier=back", ""), ..Default::default() })
        .await
        .expect("sel page");
    assert_eq!(p, ["cm-1", "cm-3"]);
    let (rest, _) = f
        .list(
            "configmaps",
            "default",
            ListOptions {
                limit: 2,
                selectors: sel("tier=back", ""),
                continue_token: r.continue_token,
                ..Default::default()
            },
        )
        .await
        .expect("rest");
    assert!(rest.is_empty());
    let err = f
        .list("configmaps", "default", ListOptions { continue_token: Some("garbage".into()), ..Default::default() })
        .await;
    assert_eq!(err.expect_err("bad token").code(), 400);
}

#[tokio::test]
async fn list_resource_version_semantics() {
    let f = Fixture::new().await;
    let a = f.create("configmaps", "default", cm("a")).await.expect("a");
    f.create("configmaps", "default", cm("b")).await.expect("b");
    let exact = ListOptions {
        resource_version: Some(meta::meta_str(&a, "resourceVersion").into()),
        resource_version_match: Some("Exact".into()),
        ..Default::default()
    };
    let (names, r) = f.list("configmaps", "default", exact).await.expect("exact");
    assert_eq!(names, ["a"], "the list as it was at a's revision");
    assert_eq!(r.revision, rv(&a));
    let future = ListOptions { resource_version: Some("999999".into()), ..Default::default() };
    assert_eq!(f.list("configmaps", "default", future).await.expect_err("future").code(), 504);
    let any = ListOptions { resource_version: Some("0".into()), ..Default::default() };
    assert_eq!(f.list("configmaps", "default", any).await.expect("any").0.len(), 2);
    f.mem.compact(rv(&a) + 1);
    let gone = ListOptions {
        resource_version: Some(rv(&a).to_string()),
        resource_version_match: Some("Exact".into()),
        ..Default::default()
    };
    assert_eq!(f.list("configmaps", "default", gone).await.expect_err("compacted").code(), 410);
    let bad = ListOptions { resource_version_match: Some("Exact".into()), ..Default::default() };
    assert_eq!(f.list("configmaps", "default", bad).await.expect_err("no rv").code(), 400);
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<WatchItem>) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("event in time").expect("stream open")
}

fn event(item: WatchItem) -> (EventType, String, i64) {
    match item {
        WatchItem::Event(t, o) => (t, meta::name(&o).to_string(), rv(&o)),
        other => panic!("expected an event, got {other:?}"),
    }
}

fn watch_opts(rv: Option<String>) -> WatchOptions {
    WatchOptions { resource_version: rv, timeout: Duration::from_secs(30), ..Default::default() }
}

#[tokio::test]
async fn watch_from_a_revision_sees_every_later_change_in_order() {
    let f = Fixture::new().await;
    let a = f.create("configmaps", "default", cm("a")).await.expect("a");
    let mut rx = f.store.watch(f.info("configmaps"), "default", watch_opts(Some(rv(&a).to_string()))).await.expect("w");
    let mut changed = a.clone();
    changed["data"]["k"] = json!("2");
    let changed = f.update("configmaps", "default", None, changed).await.expect("update");
    f.create("configmaps", "other", cm("elsewhere")).await.expect("other ns");
    f.create("configmaps", "default", cm("b")).await.expect("b");
    f.delete("configmaps", "default", "a").await.expect("delete");
    let (t, n, r) = event(next(&mut rx).await);
    assert_eq!((t, n.as_str(), r), (EventType::Modified, "a", rv(&changed)));
    assert_eq!(event(next(&mut rx).await).0, EventType::Added);
    let (t, n, r) = event(next(&mut rx).await);
    assert_eq!((t, n.as_str()), (EventType::Deleted, "a"));
    assert!(r > rv(&changed), "DELETED carries the deletion's revision");
}

#[tokio::test]
async fn watch_without_revision_starts_with_the_current_state() {
    let f = Fixture::new().await;
    f.create("configmaps", "default", cm("a")).await.expect("a");
    f.create("configmaps", "default", cm("b")).await.expect("b");
    let mut rx = f.store.watch(f.info("configmaps"), "default", watch_opts(None)).await.expect("w");
    assert_eq!(event(next(&mut rx).await).1, "a");
    assert_eq!(event(next(&mut rx).await).1, "b");
    f.create("configmaps", "default", cm("c")).await.expect("c");
    let (t, n, _) = event(next(&mut rx).await);
    assert_eq!((t, n.as_str()), (EventType::Added, "c"));
}

#[tokio::test]
async fn watch_with_selector_sees_objects_enter_and_leave_the_selection() {
    let f = Fixture::new().await;
    let info = f.info("configmaps");
    let opts = WatchOptions {
        selectors: Selectors { labels: LabelSelector::parse("app=web").expect("sel"), ..Default::default() },
        ..watch_opts(Some("0".into()))
    };
    let mut rx = f.store.watch(info, "default", opts).await.expect("w");
    let plain = f.create("configmaps", "default", cm("a")).await.expect("a");
    let mut labelled = plain.clone();
    labelled["metadata"]["labels"] = json!({"app": "web"});
    let labelled = f.update("configmaps", "default", None, labelled).await.expect("label");
    let mut unlabelled = labelled.clone();
    unlabelled["metadata"]["labels"] = json!({"app": "db"});
    f.update("configmaps", "default", None, unlabelled).await.expect("unlabel");
    let (t, _, r) = event(next(&mut rx).await);
    assert_eq!((t, r), (EventType::Added, rv(&labelled)), "entering the selection is an ADDED");
    let (t, _, r) = event(next(&mut rx).await);
    assert_eq!(t, EventType::Deleted, "leaving the selection is a DELETED");
    assert!(r > rv(&labelled));
}

#[tokio::test]
async fn send_initial_events_ends_with_a_marked_bookmark_and_idle_watches_get_bookmarks() {
    let f = Fixture::new().await;
    f.create("configmaps", "default", cm("a")).await.expect("a");
    let opts = WatchOptions { allow_bookmarks: true, send_initial_events: Some(true), ..watch_opts(None) };
    let mut rx = f.store.watch(f.info("configmaps"), "default", opts).await.expect("w");
    assert_eq!(event(next(&mut rx).await).1, "a");
    match next(&mut rx).await {
        WatchItem::Bookmark { initial_events_end: true, .. } => {}
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    match next(&mut rx).await {
        WatchItem::Bookmark { initial_events_end: false, revision } => assert!(revision > 0),
        other => panic!("expected a periodic bookmark, got {other:?}"),
    }
    let no_bookmarks = WatchOptions { send_initial_events: Some(true), ..watch_opts(None) };
    let err = f.store.watch(f.info("configmaps"), "default", no_bookmarks).await.expect_err("needs bookmarks");
    assert_eq!(err.code(), 422);
}

#[tokio::test]
async fn watch_from_a_compacted_revision_reports_expired() {
    let f = Fixture::new().await;
    let a = f.create("configmaps", "default", cm("a")).await.expect("a");
    f.create("configmaps", "default", cm("b")).await.expect("b");
    f.mem.compact(rv(&a) + 1);
    let mut rx = f.store.watch(f.info("configmaps"), "default", watch_opts(Some(rv(&a).to_string()))).await.expect("w");
    match next(&mut rx).await {
        WatchItem::Error(e) => assert_eq!((e.code(), e.reason()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(rx.recv().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn watch_ends_at_its_timeout() {
    let f = Fixture::new().await;
    let opts = WatchOptions { timeout: Duration::from_millis(200), ..watch_opts(None) };
    let mut rx = f.store.watch(f.info("configmaps"), "default", opts).await.expect("w");
    let ended = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("ends by itself");
    assert!(ended.is_none());
}

#[tokio::test]
async fn concurrent_updates_never_lose_a_write() {
    let f = Fixture::new().await;
    f.create("configmaps", "default", json!({"metadata": {"name": "counter"}, "data": {}})).await.expect("c");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = f.store.clone();
        let info = f.info("configmaps");
        tasks.push(tokio::spawn(async move {
            let body = json!({"data": {format!("k{i}"): "v"}}).to_string();
            let p = Patch { kind: PatchKind::Merge, body: body.as_bytes() };
            store.patch(&info, "default", "counter", None, p, &WriteOptions::default()).await.expect("patch");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let obj = f.get("configmaps", "default", "counter").await.expect("get");
    assert_eq!(obj["data"].as_object().map(|m| m.len()), Some(20));
}

#[tokio::test]
async fn create_on_update_kinds_accept_put_for_missing_objects() {
    let f = Fixture::new().await;
    let lease = json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}});
    f.update("leases", "default", None, lease).await.expect("PUT creates a lease");
    let err = f.update("configmaps", "default", None, cm("missing")).await.expect_err("404");
    assert_eq!(err.code(), 404);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let f = Fixture::new().await;
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    let w = f.create_with("configmaps", "default", cm("a"), &dry).await.expect("dry");
    assert_eq!(w.object["metadata"]["namespace"], "default");
    assert_eq!(f.get("configmaps", "default", "a").await.expect_err("not written").code(), 404);
}

#[tokio::test]
async fn selector_pages_resume_after_the_last_key_examined_whether_kept_or_skipped() {
    let f = Fixture::new().await;
    // Alternate matching and non-matching objects so pages end on both kinds.
    // More objects than one storage read fetches, so a page spans several reads.
    for i in 0..600 {
        let labels = if i % 3 == 0 { json!({"pick": "no"}) } else { json!({"pick": "yes"}) };
        f.create("configmaps", "default", json!({"metadata": {"name": format!("cm-{i:03}"), "labels": labels}}))
            .await
            .expect("c");
    }
    for limit in [1, 2, 7, 300, 399] {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let opts = ListOptions {
                limit,
                continue_token: token.take(),
                selectors: Selectors { labels: LabelSelector::parse("pick=yes").expect("sel"), ..Default::default() },
                ..Default::default()
            };
            let (names, r) = f.list("configmaps", "default", opts).await.expect("page");
            assert!(names.len() <= limit);
            seen.extend(names);
            match r.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let want: Vec<String> = (0..600).filter(|i| i % 3 != 0).map(|i| format!("cm-{i:03}")).collect();
        assert_eq!(seen, want, "limit {limit}");
    }
}

fn scheduled_pod(name: &str, grace: Option<i64>) -> Value {
    let mut spec = json!({"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]});
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec})
}

async fn delete_with(f: &Fixture, plural: &str, name: &str, opts: DeleteOptions) -> ApiResult<Deleted> {
    f.store.delete(&f.info(plural), "default", name, &opts).await
}

#[tokio::test]
async fn scheduled_pods_terminate_gracefully_and_force_deletion_ends_them() {
    let f = Fixture::new().await;
    f.create("pods", "default", scheduled_pod("p", Some(40))).await.expect("pod");
    let Deleted::Pending(p) = f.delete("pods", "default", "p").await.expect("delete") else {
        panic!("must wait for the kubelet")
    };
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 40);
    let deadline = meta::parse_time(meta::meta_str(&p, "deletionTimestamp")).expect("timestamp");
    let left = deadline.as_second() - jiff::Timestamp::now().as_second();
    assert!((35..=41).contains(&left), "deadline {left}s away");
    // A shorter grace period moves the deadline earlier; a longer one does not move it back.
    let Deleted::Pending(shorter) =
        delete_with(&f, "pods", "p", DeleteOptions { grace_period_seconds: Some(5), ..Default::default() })
            .await
            .expect("d")
    else {
        panic!()
    };
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    let Deleted::Pending(longer) =
        delete_with(&f, "pods", "p", DeleteOptions { grace_period_seconds: Some(60), ..Default::default() })
            .await
            .expect("d")
    else {
        panic!()
    };
    assert_eq!(longer["metadata"]["deletionTimestamp"], shorter["metadata"]["deletionTimestamp"]);
    // The kubelet (or --force --grace-period=0) finishes it.
    let gone = delete_with(&f, "pods", "p", DeleteOptions { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .expect("d");
    assert!(matches!(gone, Deleted::Gone(_)));
    assert_eq!(f.get("pods", "default", "p").await.expect_err("gone").code(), 404);
}

#[tokio::test]
async fn the_final_delete_ends_a_pod_whose_grace_period_already_ran_out() {
    let f = Fixture::new().await;
    f.create("pods", "default", scheduled_pod("p", Some(1))).await.expect("pod");
    assert!(matches!(f.delete("pods", "default", "p").await.expect("delete"), Deleted::Pending(_)));
    // The kubelet took longer than the 1 s grace period to stop the containers.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let gone = delete_with(&f, "pods", "p", DeleteOptions { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .expect("d");
    assert!(matches!(gone, Deleted::Gone(_)), "{gone:?}");
    assert_eq!(f.get("pods", "default", "p").await.expect_err("gone").code(), 404);
}

#[tokio::test]
async fn unscheduled_and_finished_pods_go_at_once() {
    let f = Fixture::new().await;
    f.create(
        "pods",
        "default",
        json!({"metadata": {"name": "u"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .await
    .expect("pod");
    assert!(matches!(f.delete("pods", "default", "u").await.expect("d"), Deleted::Gone(_)));
    let done = f.create("pods", "default", scheduled_pod("done", None)).await.expect("pod");
    let mut status = done.clone();
    status["status"]["phase"] = json!("Succeeded");
    f.update("pods", "default", Some("status"), status).await.expect("status");
    assert!(matches!(f.delete("pods", "default", "done").await.expect("d"), Deleted::Gone(_)));
}

#[tokio::test]
async fn foreground_and_orphan_deletion_leave_a_finalizer_for_the_garbage_collector() {
    let f = Fixture::new().await;
    for name in ["fg", "orph", "bg"] {
        f.create("configmaps", "default", cm(name)).await.expect("c");
    }
    let Deleted::Pending(fg) = delete_with(
        &f,
        "configmaps",
        "fg",
        DeleteOptions { propagation: Propagation::Foreground, ..Default::default() },
    )
    .await
    .expect("d") else {
        panic!()
    };
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(meta::is_deleting(&fg));
    let Deleted::Pending(orph) =
        delete_with(&f, "configmaps", "orph", DeleteOptions { propagation: Propagation::Orphan, ..Default::default() })
            .await
            .expect("d")
    else {
        panic!()
    };
    assert_eq!(orph["metadata"]["finalizers"], json!(["orphan"]));
    assert!(matches!(f.delete("configmaps", "default", "bg").await.expect("d"), Deleted::Gone(_)));
    // The collector removes its finalizer; the object then goes.
    let mut done = orph.clone();
    done["metadata"]["finalizers"] = json!([]);
    f.update("configmaps", "default", None, done).await.expect("finalized");
    assert_eq!(f.get("configmaps", "default", "orph").await.expect_err("gone").code(), 404);
}

#[tokio::test]
async fn scale_reads_and_writes_replicas_with_preconditions() {
    let f = Fixture::new().await;
    f.create("deployments", "default", deployment("web", 2)).await.expect("d");
    let info = f.info("deployments");
    let scale = f.store.get_scale(&info, "default", "web").await.expect("scale");
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some(2), Some("app=web")));
    let patch =
        ParsedPatch::parse(&Patch { kind: PatchKind::Merge, body: br#"{"spec":{"replicas":5}}"# }).expect("parse");
    let after = f
        .store
        .update_scale(&info, "default", "web", subresources::ScaleChange::Patch(patch), &WriteOptions::default())
        .await
        .expect("patched");
    assert_eq!(after["spec"]["replicas"], 5);
    let d = f.get("deployments", "default", "web").await.expect("get");
    assert_eq!((d["spec"]["replicas"].as_i64(), d["metadata"]["generation"].as_i64()), (Some(5), Some(2)));
    let mut stale = scale.clone();
    stale["spec"]["replicas"] = json!(1);
    let err = f
        .store
        .update_scale(&info, "default", "web", subresources::ScaleChange::Replace(stale), &WriteOptions::default())
        .await
        .expect_err("stale");
    assert_eq!(err.code(), 409);
    let mut negative = after.clone();
    negative["spec"]["replicas"] = json!(-1);
    let err = f
        .store
        .update_scale(&info, "default", "web", subresources::ScaleChange::Replace(negative), &WriteOptions::default())
        .await
        .expect_err("negative");
    assert_eq!(err.code(), 422);
}

#[tokio::test]
async fn binding_assigns_a_node_once_and_marks_the_pod_scheduled() {
    let f = Fixture::new().await;
    f.create(
        "pods",
        "default",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .await
    .expect("pod");
    let pods = f.info("pods");
    let binding = json!({"metadata": {"name": "p", "annotations": {"scheduler/reason": "fit"}}, "target": {"kind": "Node", "name": "n1"}});
    f.store.bind(&pods, "default", "p", &binding, false).await.expect("bound");
    let pod = f.get("pods", "default", "p").await.expect("pod");
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["metadata"]["annotations"]["scheduler/reason"], "fit");
    assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(pod["status"]["conditions"][0]["status"], "True");
    let again = f
        .store
        .bind(&pods, "default", "p", &json!({"target": {"name": "n2"}}), false)
        .await
        .expect_err("bound already");
    assert_eq!(again.code(), 409);
    assert!(again.to_string().contains("already assigned to node \"n1\""), "{again}");
    let err = f.store.bind(&pods, "default", "p", &json!({"target": {}}), false).await.expect_err("no target");
    assert_eq!(err.code(), 422);
}

async fn pdb(f: &Fixture, allowed: i64, observed: bool) {
    let created = f
        .create("poddisruptionbudgets", "default", json!({"metadata": {"name": "budget"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}))
        .await
        .expect("pdb");
    let mut status = created.clone();
    status["status"] = json!({"disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2, "observedGeneration": if observed { 1 } else { 0 }});
    f.update("poddisruptionbudgets", "default", Some("status"), status).await.expect("status");
}

async fn running(f: &Fixture, name: &str) {
    let pod = f.create("pods", "default", scheduled_pod(name, Some(0))).await.expect("pod");
    let mut status = pod.clone();
    status["status"]["phase"] = json!("Running");
    f.update("pods", "default", Some("status"), status).await.expect("running");
}

#[tokio::test]
async fn eviction_respects_the_disruption_budget() {
    let f = Fixture::new().await;
    let pods = f.info("pods");
    running(&f, "a").await;
    running(&f, "b").await;
    pdb(&f, 1, true).await;
    f.store.evict(&pods, "default", "a", &DeleteOptions::default(), false).await.expect("one disruption is allowed");
    assert_eq!(f.get("pods", "default", "a").await.expect_err("evicted").code(), 404);
    let budget = f.get("poddisruptionbudgets", "default", "budget").await.expect("pdb");
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    assert!(budget["status"]["disruptedPods"]["a"].is_string());
    let err =
        f.store.evict(&pods, "default", "b", &DeleteOptions::default(), false).await.expect_err("budget exhausted");
    assert_eq!((err.code(), err.reason()), (429, "TooManyRequests"));
    assert!(f.get("pods", "default", "b").await.is_ok(), "the pod stays");
}

#[tokio::test]
async fn eviction_waits_for_an_unobserved_budget_and_ignores_budgets_for_pending_pods() {
    let f = Fixture::new().await;
    let pods = f.info("pods");
    running(&f, "a").await;
    pdb(&f, 5, false).await;
    let err =
        f.store.evict(&pods, "default", "a", &DeleteOptions::default(), false).await.expect_err("not processed yet");
    assert_eq!(err.code(), 429);
    assert!(
        err.to_status()["details"]["causes"][0]["message"].as_str().unwrap_or("").contains("still being processed")
    );
    f.create("pods", "default", json!({"metadata": {"name": "pending", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .await
        .expect("pod");
    f.store
        .evict(&pods, "default", "pending", &DeleteOptions::default(), false)
        .await
        .expect("pending pods need no budget");
    let dry = f.store.evict(&pods, "default", "a", &DeleteOptions::default(), true).await;
    assert_eq!(dry.expect_err("still refused in a dry run").code(), 429);
}

fn svc(name: &str, ty: &str, extra: Value) -> Value {
    let mut s = json!({"metadata": {"name": name}, "spec": {"type": ty, "selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}});
    if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    s
}

async fn allocation_keys(f: &Fixture, prefix: &str) -> Vec<String> {
    f.mem
        .list(prefix, None, 0, 0)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|kv| kv.key.trim_start_matches(prefix).to_string())
        .collect()
}

#[tokio::test]
async fn services_get_a_cluster_ip_from_the_range_and_node_ports_when_they_need_them() {
    let f = Fixture::new().await;
    let s = f.create("services", "default", svc("web", "ClusterIP", json!({}))).await.expect("svc");
    let ip: std::net::Ipv4Addr = s["spec"]["clusterIP"].as_str().expect("ip").parse().expect("an IP");
    assert!(
        f.store.ranges.service_ips.to_string() == "10.96.0.0/12"
            && (u32::from(ip) >> 20) == (u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20),
        "{ip}"
    );
    assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(
        (s["spec"]["ipFamilies"].clone(), s["spec"]["ipFamilyPolicy"].clone()),
        (json!(["IPv4"]), json!("SingleStack"))
    );
    assert!(s["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(allocation_keys(&f, "/registry/ranges/serviceips/").await, [ip.to_string()]);
    let np = f.create("services", "default", svc("np", "NodePort", json!({}))).await.expect("svc");
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().expect("node port");
    assert!((30000..=32767).contains(&port));
    let headless =
        f.create("services", "default", svc("hl", "ClusterIP", json!({"clusterIP": "None"}))).await.expect("svc");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let ext = f
        .create(
            "services",
            "default",
            json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        )
        .await
        .expect("svc");
    assert!(ext["spec"].get("clusterIP").is_none());
    assert_eq!(
        allocation_keys(&f, "/registry/ranges/serviceips/").await.len(),
        2,
        "headless and ExternalName take no address"
    );
}

#[tokio::test]
async fn a_local_load_balancer_gets_a_health_check_node_port_until_it_is_local_no_more() {
    let f = Fixture::new().await;
    let lb = f
        .create("services", "default", svc("lb", "LoadBalancer", json!({"externalTrafficPolicy": "Local"})))
        .await
        .expect("lb");
    let hc = lb["spec"]["healthCheckNodePort"].as_i64().expect("health-check node port");
    let np = lb["spec"]["ports"][0]["nodePort"].as_i64().expect("node port");
    assert!((30000..=32767).contains(&hc) && hc != np);
    let mut keys = allocation_keys(&f, "/registry/ranges/servicenodeports/").await;
    keys.sort();
    let mut want = vec![hc.to_string(), np.to_string()];
    want.sort();
    assert_eq!(keys, want);
    let plain = f.create("services", "default", svc("plain", "LoadBalancer", json!({}))).await.expect("lb");
    assert!(plain["spec"].get("healthCheckNodePort").is_none(), "Cluster policy: no health check");
    let taken = f
        .create(
            "services",
            "default",
            svc("dup", "LoadBalancer", json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": hc})),
        )
        .await
        .expect_err("taken");
    assert!(taken.to_string().contains("spec.healthCheckNodePort"), "{taken}");
    // Back to Cluster: the port is released.
    let mut cluster = f.get("services", "default", "lb").await.expect("lb");
    cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let cluster = f.update("services", "default", None, cluster).await.expect("update");
    assert!(cluster["spec"].get("healthCheckNodePort").is_none());
    assert!(!allocation_keys(&f, "/registry/ranges/servicenodeports/").await.contains(&hc.to_string()));
}

#[tokio::test]
async fn requested_addresses_and_ports_must_be_free_and_in_range() {
    let f = Fixture::new().await;
    f.create(
        "services",
        "default",
        svc("a", "NodePort", json!({"clusterIP": "10.96.7.7", "ports": [{"port": 80, "nodePort": 30080}]})),
    )
    .await
    .expect("a");
    let taken = f
        .create("services", "default", svc("b", "ClusterIP", json!({"clusterIP": "10.96.7.7"})))
        .await
        .expect_err("taken");
    assert_eq!(taken.code(), 422);
    assert!(taken.to_string().contains("provided IP is already allocated"), "{taken}");
    let outside = f
        .create("services", "default", svc("c", "ClusterIP", json!({"clusterIP": "192.168.1.1"})))
        .await
        .expect_err("outside");
    assert!(outside.to_string().contains("is not in the valid range"), "{outside}");
    let port = f
        .create("services", "default", svc("d", "NodePort", json!({"ports": [{"port": 80, "nodePort": 30080}]})))
        .await
        .expect_err("port");
    assert!(port.to_string().contains("provided port is already allocated"), "{port}");
    let low = f
        .create("services", "default", svc("e", "NodePort", json!({"ports": [{"port": 80, "nodePort": 80}]})))
        .await
        .expect_err("range");
    assert!(low.to_string().contains("30000-32767"), "{low}");
    // Failed creates leave nothing behind.
    assert_eq!(allocation_keys(&f, "/registry/ranges/serviceips/").await, ["10.96.7.7"]);
    assert_eq!(allocation_keys(&f, "/registry/ranges/servicenodeports/").await, ["30080"]);
    // Deleting frees them for the next Service.
    f.delete("services", "default", "a").await.expect("delete");
    assert!(allocation_keys(&f, "/registry/ranges/serviceips/").await.is_empty());
    f.create(
        "services",
        "default",
        svc("b", "NodePort", json!({"clusterIP": "10.96.7.7", "ports": [{"port": 80, "nodePort": 30080}]})),
    )
    .await
    .expect("reused");
}

#[tokio::test]
async fn concurrent_creates_never_share_an_address_or_port() {
    let f = Fixture::new().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = f.store.clone();
        let info = f.info("services");
        tasks.push(tokio::spawn(async move {
            let body = svc(&format!("s{i}"), "NodePort", json!({}));
            let decoded = decode_body(body.to_string().as_bytes(), BodyFormat::Json).expect("json");
            store.create(&info, "default", decoded, &WriteOptions::default()).await.expect("create").object
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for t in tasks {
        let s = t.await.expect("task");
        assert!(ips.insert(s["spec"]["clusterIP"].as_str().expect("ip").to_string()));
        assert!(ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().expect("port")));
    }
    assert_eq!((ips.len(), ports.len()), (40, 40));
}

#[tokio::test]
async fn type_changes_allocate_and_release() {
    let f = Fixture::new().await;
    let np = f.create("services", "default", svc("s", "NodePort", json!({}))).await.expect("svc");
    let ip = np["spec"]["clusterIP"].clone();
    // As kubectl apply sends it: no clusterIP, no nodePort; the address is kept, the port freed.
    let as_cluster_ip =
        f.update("services", "default", None, svc("s", "ClusterIP", json!({}))).await.expect("to ClusterIP");
    assert_eq!(as_cluster_ip["spec"]["clusterIP"], ip);
    assert!(as_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    assert!(allocation_keys(&f, "/registry/ranges/servicenodeports/").await.is_empty());
    let back = f.update("services", "default", None, svc("s", "NodePort", json!({}))).await.expect("to NodePort");
    assert!(back["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    let ext = json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    let ext = f.update("services", "default", None, ext).await.expect("to ExternalName");
    assert!(ext["spec"].get("clusterIP").is_none_or(|ip| ip == ""));
    assert!(allocation_keys(&f, "/registry/ranges/serviceips/").await.is_empty());
    assert!(allocation_keys(&f, "/registry/ranges/servicenodeports/").await.is_empty());
    // A ClusterIP Service may not carry a node port.
    let mut bad = svc("t", "ClusterIP", json!({}));
    bad["spec"]["ports"][0]["nodePort"] = json!(30001);
    assert_eq!(f.create("services", "default", bad).await.expect_err("nodePort on ClusterIP").code(), 422);
}

#[tokio::test]
async fn repair_restores_missing_keys_and_frees_abandoned_ones() {
    let f = Fixture::new().await;
    let s = f.create("services", "default", svc("s", "NodePort", json!({}))).await.expect("svc");
    let ip = s["spec"]["clusterIP"].as_str().expect("ip").to_string();
    let key = format!("/registry/ranges/serviceips/{ip}");
    let kv = f.mem.get(&key).await.expect("get").expect("key");
    f.mem.delete(&key, kv.mod_revision).await.expect("lose the key");
    let old = json!({"service": "default/gone", "allocatedAt": "2020-01-01T00:00:00Z"}).to_string();
    f.mem.create("/registry/ranges/serviceips/10.100.0.9", old.into_bytes()).await.expect("stale");
    let fresh = json!({"service": "default/in-flight", "allocatedAt": meta::now()}).to_string();
    f.mem.create("/registry/ranges/serviceips/10.100.0.10", fresh.into_bytes()).await.expect("fresh");
    f.store.repair_allocations().await.expect("repair");
    let keys = allocation_keys(&f, "/registry/ranges/serviceips/").await;
    assert!(keys.contains(&ip), "the Service's address is claimed again");
    assert!(!keys.contains(&"10.100.0.9".to_string()), "an old abandoned key is freed");
    assert!(keys.contains(&"10.100.0.10".to_string()), "a young key may belong to a create in flight");
}

// ---- managedFields and server-side apply ----

fn by(manager: &str) -> WriteOptions {
    WriteOptions { field_manager: Some(manager.into()), ..Default::default() }
}

impl Fixture {
    async fn apply(
        &self,
        plural: &str,
        name: &str,
        sub: Option<&str>,
        config: &str,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let p = Patch { kind: PatchKind::Apply, body: config.as_bytes() };
        self.store.patch(&self.info(plural), "default", name, sub, p, opts).await
    }
}

fn manager_names(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}/{}", e["manager"].as_str().unwrap_or(""), e["operation"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn every_write_records_its_manager_and_the_fields_it_set() {
    let f = Fixture::new().await;
    let created = f.create_with("configmaps", "default", cm("c"), &by("creator")).await.expect("create").object;
    assert_eq!(manager_names(&created), vec!["creator/Update"]);
    assert_eq!(created["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:data": {".": {}, "f:k": {}}}));
    let info = f.info("configmaps");
    let mut changed = created.clone();
    changed["data"]["k"] = json!("v2");
    let body = decode_body(changed.to_string().as_bytes(), BodyFormat::Json).expect("body");
    let updated = f.store.update(&info, "default", "c", None, body, &by("editor")).await.expect("update").object;
    assert_eq!(manager_names(&updated), vec!["creator/Update", "editor/Update"]);
    assert_eq!(updated["metadata"]["managedFields"][1]["fieldsV1"], json!({"f:data": {"f:k": {}}}));
    // A write that changes nothing neither records nor stores anything.
    let body = decode_body(updated.to_string().as_bytes(), BodyFormat::Json).expect("body");
    let same = f.store.update(&info, "default", "c", None, body, &by("idle")).await.expect("no-op").object;
    assert_eq!(rv(&same), rv(&updated));
}

#[tokio::test]
async fn apply_creates_updates_and_reports_conflicts_as_upstream() {
    let f = Fixture::new().await;
    let cfg = |v: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: \"{v}\"\n");
    let created = f.apply("configmaps", "ssa", None, &cfg("1"), &by("alice")).await.expect("create on apply");
    assert!(created.created);
    assert_eq!(manager_names(&created.object), vec!["alice/Apply"]);
    assert_eq!(created.object["metadata"]["managedFields"][0]["fieldsV1"], json!({"f:data": {"f:k": {}}}));
    assert_eq!(meta::namespace(&created.object), "default");

    let again = f.apply("configmaps", "ssa", None, &cfg("1"), &by("alice")).await.expect("same again");
    assert!(!again.created);
    assert_eq!(rv(&again.object), rv(&created.object), "an apply that changes nothing writes nothing");

    let err = f.apply("configmaps", "ssa", None, &cfg("2"), &by("bob")).await.expect_err("conflict");
    let status = err.to_status();
    assert_eq!((status["code"].as_i64(), status["reason"].as_str()), (Some(409), Some("Conflict")));
    assert_eq!(status["message"], "Apply failed with 1 conflict: conflict with \"alice\": .data.k");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".data.k"})
    );

    let forced = WriteOptions { force: true, ..by("bob") };
    let taken = f.apply("configmaps", "ssa", None, &cfg("2"), &forced).await.expect("forced").object;
    assert_eq!(taken["data"]["k"], "2");
    assert_eq!(manager_names(&taken), vec!["bob/Apply"], "alice kept nothing, so her entry is gone");
}

#[tokio::test]
async fn apply_refuses_what_upstream_refuses_and_dry_run_stores_nothing() {
    let f = Fixture::new().await;
    let bad = [
        ("kind: ConfigMap\nmetadata:\n  name: x\n", "no apiVersion"),
        ("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"y\"}}", "name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  managedFields: [{}]\n", "managedFields"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n", "unknown field"),
        ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n", "kind"),
    ];
    for (cfg, why) in bad {
        let err = f.apply("configmaps", "x", None, cfg, &by("m")).await.expect_err(why);
        assert_eq!(err.code(), 400, "{why}: {err}");
    }
    let no_key = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n      - image: nginx\n";
    let err = f.apply("deployments", "x", None, no_key, &by("m")).await.expect_err("no container name");
    assert!(err.to_string().contains("omits key field \"name\""), "{err}");

    let dry = WriteOptions { dry_run: true, ..by("m") };
    let cfg = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n";
    assert!(f.apply("configmaps", "x", None, cfg, &dry).await.expect("dry").created);
    assert_eq!(f.get("configmaps", "default", "x").await.expect_err("not stored").code(), 404);
}

#[tokio::test]
async fn apply_to_status_owns_status_only_and_a_partial_deployment_config_keeps_the_rest() {
    let f = Fixture::new().await;
    f.create_with("deployments", "default", deployment("web", 1), &by("kubectl-create")).await.expect("create");
    let status =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nstatus:\n  replicas: 1\n  readyReplicas: 1\n";
    let w = f.apply("deployments", "web", Some("status"), status, &by("ctrl")).await.expect("status apply").object;
    assert_eq!(w["status"]["readyReplicas"], 1);
    let entry =
        w["metadata"]["managedFields"].as_array().expect("entries").iter().find(|e| e["manager"] == "ctrl").cloned();
    let entry = entry.expect("ctrl entry");
    assert_eq!((entry["operation"].as_str(), entry["subresource"].as_str()), (Some("Apply"), Some("status")));
    assert_eq!(entry["fieldsV1"], json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}}));

    // An apply naming only the replicas changes only them: no selector or template is made up.
    let scale = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
    let w =
        f.apply("deployments", "web", None, scale, &by("autoscaler")).await.expect_err("replicas are kubectl-create's");
    assert_eq!(w.code(), 409);
    let w = f
        .apply("deployments", "web", None, scale, &WriteOptions { force: true, ..by("autoscaler") })
        .await
        .expect("forced")
        .object;
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["spec"]["selector"], deployment("web", 1)["spec"]["selector"]);
    assert_eq!(w["spec"]["template"]["spec"]["containers"][0]["name"], "c");
    assert_eq!(w["metadata"]["generation"], 2);
}

// ---- priority classes and priority admission ----

fn priority_class(name: &str, value: i64, extra: Value) -> Value {
    let mut pc = json!({"metadata": {"name": name}, "value": value});
    if let (Some(m), Some(e)) = (pc.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    pc
}

fn pod_with(name: &str, spec: Value) -> Value {
    let mut pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    if let (Some(m), Some(e)) = (pod["spec"].as_object_mut(), spec.as_object()) {
        m.extend(e.clone());
    }
    pod
}

const PC: &str = "priorityclasses";

#[tokio::test]
async fn a_named_priority_class_sets_the_pods_priority_and_preemption_policy() {
    let f = Fixture::new().await;
    f.create(PC, "", priority_class("high", 1000, json!({"preemptionPolicy": "Never"}))).await.expect("class");
    let pod = f.create("pods", "default", pod_with("p", json!({"priorityClassName": "high"}))).await.expect("pod");
    assert_eq!((&pod["spec"]["priority"], &pod["spec"]["preemptionPolicy"]), (&json!(1000), &json!("Never")));
    assert_eq!(f.get("pods", "default", "p").await.expect("stored")["spec"]["priority"], 1000);
    let repeated = pod_with("same", json!({"priorityClassName": "high", "priority": 1000}));
    f.create("pods", "default", repeated).await.expect("repeating the class's value is fine");
    let contradicting = pod_with("other", json!({"priorityClassName": "high", "priority": 5}));
    let err = f.create("pods", "default", contradicting).await.expect_err("priority given");
    assert_eq!((err.code(), err.reason()), (403, "Forbidden"));
    assert_eq!(
        err.to_string(),
        "pods \"other\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
    );
    // An update that leaves the admitted fields out keeps them.
    let mut update = pod.clone();
    for f in ["priority", "preemptionPolicy"] {
        update["spec"].as_object_mut().expect("spec").remove(f);
    }
    update["metadata"]["labels"] = json!({"a": "b"});
    let updated = f.update("pods", "default", None, update).await.expect("update");
    assert_eq!((&updated["spec"]["priority"], &updated["metadata"]["labels"]["a"]), (&json!(1000), &json!("b")));
}

#[tokio::test]
async fn a_pod_naming_an_unknown_priority_class_is_forbidden() {
    let f = Fixture::new().await;
    let err = f.create("pods", "default", pod_with("p", json!({"priorityClassName": "nope"}))).await.expect_err("403");
    assert_eq!((err.code(), err.reason()), (403, "Forbidden"));
    assert_eq!(err.to_string(), "pods \"p\" is forbidden: no PriorityClass with name nope was found");
    assert_eq!(f.get("pods", "default", "p").await.expect_err("not stored").code(), 404);
}

#[tokio::test]
async fn pods_naming_no_class_get_the_global_default_or_priority_zero() {
    let f = Fixture::new().await;
    let plain = f.create("pods", "default", pod_with("before", json!({}))).await.expect("pod");
    assert_eq!(
        (&plain["spec"]["priority"], &plain["spec"]["preemptionPolicy"]),
        (&json!(0), &json!("PreemptLowerPriority"))
    );
    assert!(plain["spec"].get("priorityClassName").is_none());

    f.create(PC, "", priority_class("low", 10, json!({"globalDefault": true, "preemptionPolicy": "Never"})))
        .await
        .expect("default class");
    let pod = f.create("pods", "default", pod_with("after", json!({}))).await.expect("pod");
    assert_eq!(pod["spec"]["priorityClassName"], "low");
    assert_eq!((&pod["spec"]["priority"], &pod["spec"]["preemptionPolicy"]), (&json!(10), &json!("Never")));

    let err = f
        .create(PC, "", priority_class("second", 20, json!({"globalDefault": true})))
        .await
        .expect_err("a second default");
    assert_eq!((err.code(), err.reason()), (403, "Forbidden"));
    assert_eq!(
        err.to_string(),
        "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass low is already marked as default. Only one default can exist"
    );
    f.create(PC, "", priority_class("other", 20, json!({}))).await.expect("not a default");
    let err = f.patch(PC, "", "other", PatchKind::Merge, json!({"globalDefault": true})).await.expect_err("update");
    assert_eq!(err.code(), 403);
    let described = f.patch(PC, "", "low", PatchKind::Merge, json!({"description": "d"})).await.expect("same default");
    assert_eq!(described["description"], "d");
}

#[tokio::test]
async fn priority_class_value_and_policy_are_immutable() {
    let f = Fixture::new().await;
    let pc = f.create(PC, "", priority_class("high", 1000, json!({}))).await.expect("class");
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let err = f.patch(PC, "", "high", PatchKind::Merge, json!({"value": 2000})).await.expect_err("value");
    assert_eq!((err.code(), err.reason()), (422, "Invalid"));
    match &err {
        ApiError::Invalid { causes, .. } => assert_eq!(causes[0].field, "value"),
        other => panic!("{other:?}"),
    }
    let err =
        f.patch(PC, "", "high", PatchKind::Merge, json!({"preemptionPolicy": "Never"})).await.expect_err("policy");
    assert!(err.to_string().contains("preemptionPolicy: Invalid value: \"Never\": field is immutable"), "{err}");
    let mut update = pc.clone();
    update["description"] = json!("for the important ones");
    assert_eq!(f.update(PC, "", None, update).await.expect("description")["description"], "for the important ones");
    let err = f.create(PC, "", priority_class("huge", 1_000_000_001, json!({}))).await.expect_err("too high");
    assert_eq!(err.code(), 422);
}

#[tokio::test]
async fn system_priority_classes_exist_and_cannot_be_deleted() {
    let f = Fixture::new().await;
    f.store.create_system_priority_classes().await.expect("created");
    f.store.create_system_priority_classes().await.expect("again: nothing to do");
    let node = f.get(PC, "", "system-node-critical").await.expect("node-critical");
    let cluster = f.get(PC, "", "system-cluster-critical").await.expect("cluster-critical");
    assert_eq!((&node["value"], &cluster["value"]), (&json!(2_000_001_000), &json!(2_000_000_000)));
    assert_eq!(node["preemptionPolicy"], "PreemptLowerPriority");
    assert!(node["description"].as_str().is_some_and(|d| !d.is_empty()));

    let err = f.delete(PC, "", "system-node-critical").await.expect_err("protected");
    assert_eq!((err.code(), err.reason()), (403, "Forbidden"));
    assert_eq!(
        err.to_string(),
        "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
    );
    f.create(PC, "", priority_class("mine", 1, json!({}))).await.expect("user class");
    let info = f.info(PC);
    let gone = f.store.delete_collection(&info, "", &ListOptions::default(), &DeleteOptions::default()).await;
    assert_eq!(gone.expect("deletecollection").iter().map(|o| meta::name(o).to_string()).collect::<Vec<_>>(), ["mine"]);
    let (left, _) = f.list(PC, "", ListOptions::default()).await.expect("list");
    assert_eq!(left, ["system-cluster-critical", "system-node-critical"]);

    let pod = f.create("pods", "kube-system", pod_with("dns", json!({"priorityClassName": "system-cluster-critical"})));
    let err = pod.await.expect_err("no kube-system namespace in this fixture");
    assert_eq!(err.code(), 404);
    let pod = f.create("pods", "default", pod_with("agent", json!({"priorityClassName": "system-node-critical"})));
    assert_eq!(pod.await.expect("pod")["spec"]["priority"], 2_000_001_000);
}

#[tokio::test]
async fn with_the_cache_running_a_class_created_a_moment_ago_is_never_refused() {
    let f = Fixture::new().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (store, s) = (f.store.clone(), shutdown.clone());
    let task = tokio::spawn(async move { store.run_caches(s).await });
    for _ in 0..200 {
        if f.store.priority_classes.read(|_| ()).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f.store.priority_classes.read(|_| ()).is_some(), "the cache synced");
    for i in 0..20 {
        let class = format!("fresh-{i}");
        f.create(PC, "", priority_class(&class, i, json!({}))).await.expect("class");
        let pod = f.create("pods", "default", pod_with(&format!("p-{i}"), json!({"priorityClassName": class})));
        assert_eq!(pod.await.expect("admitted at once")["spec"]["priority"], i);
    }
    shutdown.cancel();
    task.await.expect("caches stop at shutdown");
}
