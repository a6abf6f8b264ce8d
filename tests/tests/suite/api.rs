//! The API over HTTPS against real etcd: discovery, auth, verbs, errors, Table, watch, paging.

use std::time::Duration;

use e2e::etcd::Etcd;
use e2e::server::InProcess;
use serde_json::{Value, json};

const TABLE_ACCEPT: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async fn cluster() -> (Etcd, InProcess) {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    (etcd, api)
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"k": "v"}})
}

#[tokio::test]
async fn discovery_is_served_aggregated_with_its_exact_content_type_and_legacy() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = c.get_accept("/apis", v2).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"));
    let doc = r.json();
    let groups: Vec<&str> =
        doc["items"].as_array().expect("items").iter().filter_map(|g| g["metadata"]["name"].as_str()).collect();
    for g in ["apps", "batch", "coordination.k8s.io", "discovery.k8s.io", "networking.k8s.io"] {
        assert!(groups.contains(&g), "{g} missing from {groups:?}");
    }
    let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let r = c.get_accept("/api", old).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
    );
    assert_eq!(r.json()["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let legacy = c.get("/api").await.json();
    assert_eq!(legacy["kind"], "APIVersions");
    assert_eq!(legacy["versions"], json!(["v1"]));
    let core = c.get("/api/v1").await.json();
    let pods =
        core["resources"].as_array().and_then(|r| r.iter().find(|r| r["name"] == "pods")).cloned().expect("pods");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(
        pods["verbs"],
        json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"])
    );
    assert_eq!(c.get("/apis/apps").await.json()["preferredVersion"]["groupVersion"], "apps/v1");
    assert_eq!(c.get("/apis/batch/v1").await.json()["groupVersion"], "batch/v1");
    assert_eq!(c.get("/apis/nope/v1").await.status, 404);
}

#[tokio::test]
async fn version_reports_minor_33_without_credentials() {
    let (_etcd, api) = cluster().await;
    let anon = api.client().without_token();
    for path in ["/version", "/version/"] {
        let v = anon.get(path).await;
        assert_eq!(v.status, 200, "{path}");
        assert_eq!((v.json()["major"].as_str(), v.json()["minor"].as_str()), (Some("1"), Some("33")));
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthorized_except_health() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for client in [c.without_token(), c.with_token("wrong")] {
        let r = client.get("/api/v1/namespaces").await;
        assert_eq!(r.status, 401);
        let st = r.json();
        assert_eq!(
            (st["kind"].as_str(), st["reason"].as_str(), st["code"].as_i64()),
            (Some("Status"), Some("Unauthorized"), Some(401))
        );
    }
    assert_eq!(c.without_token().get("/healthz").await.status, 200);
    assert_eq!(c.without_token().get("/readyz").await.text(), "ok");
}

#[tokio::test]
async fn system_namespaces_and_the_kubernetes_service_exist_from_the_first_start() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let r = c.get(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(r.status, 200, "{ns}");
        assert_eq!(r.json()["status"]["phase"], "Active");
        assert_eq!(r.json()["metadata"]["labels"]["kubernetes.io/metadata.name"], ns);
    }
    let svc = c.get("/api/v1/namespaces/default/services/kubernetes").await.json();
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
}

#[tokio::test]
async fn crud_round_trip_with_upstream_status_codes() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let created = c.post(base, &cm("a")).await;
    assert_eq!(created.status, 201);
    let obj = created.json();
    let rv = obj["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let got = c.get(&format!("{base}/a")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), obj);
    // Python-style create: no Content-Type, no apiVersion/kind.
    let r = c
        .request("POST", base, &[], json!({"metadata": {"name": "py"}, "data": {"x": "1"}}).to_string().into_bytes())
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["kind"], "ConfigMap");
    let list = c.get(base).await.json();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
    let mut update = obj.clone();
    update["data"]["k"] = json!("changed");
    let updated = c.put(&format!("{base}/a"), &update).await;
    assert_eq!(updated.status, 200);
    assert_ne!(updated.json()["metadata"]["resourceVersion"], json!(rv));
    let stale = c.put(&format!("{base}/a"), &update).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["reason"], "Conflict");
    let patched = c
        .patch(&format!("{base}/a"), "application/merge-patch+json", &json!({"metadata": {"labels": {"x": "y"}}}))
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json()["metadata"]["labels"]["x"], "y");
    let deleted = c.delete(&format!("{base}/a")).await;
    assert_eq!(deleted.status, 200);
    let st = deleted.json();
    assert_eq!((st["kind"].as_str(), st["status"].as_str()), (Some("Status"), Some("Success")));
    assert_eq!(st["details"]["uid"], obj["metadata"]["uid"]);
    assert_eq!(c.get(&format!("{base}/a")).await.status, 404);
    // deletecollection with a selector.
    c.post(base, &json!({"metadata": {"name": "keep"}})).await;
    c.post(base, &cm("labelled")).await;
    let r = c.request("DELETE", &format!("{base}?labelSelector=app%3Dweb"), &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"][0]["metadata"]["name"], "labelled");
    let names: Vec<String> = c.get(base).await.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["keep", "py"]);
}

#[tokio::test]
async fn pods_are_returned_on_delete_and_status_subresource_is_separate() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let pod = json!({"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
    let created = c.post("/api/v1/namespaces/default/pods", &pod).await.json();
    assert_eq!(created["status"]["phase"], "Pending");
    let mut status = created.clone();
    status["status"]["phase"] = json!("Running");
    let r = c.put("/api/v1/namespaces/default/pods/solo/status", &status).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"]["phase"], "Running");
    assert_eq!(c.get("/api/v1/namespaces/default/pods/solo/status").await.json()["status"]["phase"], "Running");
    let deleted = c.delete("/api/v1/namespaces/default/pods/solo").await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["kind"], "Pod", "pods answer DELETE with the object");
}

#[tokio::test]
async fn errors_are_status_objects_with_the_right_reason_and_code() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let expect = |r: e2e::client::Resp, code: i64, reason: &str| {
        assert_eq!(r.status as i64, code, "{}", r.text());
        let st = r.json();
        assert_eq!(
            (st["kind"].as_str(), st["code"].as_i64(), st["reason"].as_str()),
            (Some("Status"), Some(code), Some(reason)),
            "{st}"
        );
        st
    };
    expect(c.get("/api/v1/nonsense").await, 404, "NotFound");
    let st = expect(c.get(&format!("{base}/missing")).await, 404, "NotFound");
    assert_eq!(st["message"], "configmaps \"missing\" not found");
    let st = expect(c.get("/apis/apps/v1/namespaces/default/deployments/missing").await, 404, "NotFound");
    assert_eq!(st["message"], "deployments.apps \"missing\" not found");
    c.post(base, &cm("dup")).await;
    expect(c.post(base, &cm("dup")).await, 409, "AlreadyExists");
    let st = expect(c.post(base, &json!({"metadata": {"name": "Not_Valid"}})).await, 422, "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    expect(
        c.request("POST", base, &[("content-type", "application/json")], b"{not json".to_vec()).await,
        400,
        "BadRequest",
    );
    expect(
        c.request("POST", base, &[("content-type", "application/yaml")], b"a: [1, 2".to_vec()).await,
        400,
        "BadRequest",
    );
    expect(
        c.request("POST", base, &[("content-type", "text/plain")], b"x".to_vec()).await,
        415,
        "UnsupportedMediaType",
    );
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(3 * 1024 * 1024 + 10)}});
    expect(c.post(base, &big).await, 413, "RequestEntityTooLarge");
    expect(c.request("POST", &format!("{base}/dup"), &[], b"{}".to_vec()).await, 405, "MethodNotAllowed");
    expect(c.request("DELETE", "/api/v1/namespaces", &[], Vec::new()).await, 405, "MethodNotAllowed");
    expect(c.get_accept(&format!("{base}/dup"), "application/vnd.kubernetes.protobuf").await, 406, "NotAcceptable");
    expect(
        c.post(&format!("{base}?fieldValidation=Strict"), &json!({"metadata": {"name": "x"}, "bogus": 1})).await,
        400,
        "BadRequest",
    );
    expect(c.post("/api/v1/namespaces/nowhere/configmaps", &cm("x")).await, 404, "NotFound");
    // The server survives all of that.
    assert_eq!(c.get(&format!("{base}/dup")).await.status, 200);
}

#[tokio::test]
async fn unknown_fields_are_warned_about_by_default() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let r = c.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "w"}, "bogus": 1})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("warning"), Some("299 - \"unknown field \\\"bogus\\\"\""));
}

#[tokio::test]
async fn yaml_bodies_are_accepted_and_yaml_can_be_requested() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let r = c
        .request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &[("content-type", "application/yaml")],
            yaml.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let y = c.get_accept("/api/v1/namespaces/default/configmaps/from-yaml", "application/yaml").await;
    assert_eq!(y.header("content-type"), Some("application/yaml"));
    assert!(y.text().contains("name: from-yaml"), "{}", y.text());
}

#[tokio::test]
async fn tables_carry_kubectl_columns_and_row_metadata() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let pod = json!({"metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
    c.post("/api/v1/namespaces/default/pods", &pod).await;
    let r = c.get_accept("/api/v1/pods?limit=500", TABLE_ACCEPT).await;
    assert_eq!(r.header("content-type"), Some("application/json;as=Table;v=v1;g=meta.k8s.io"));
    let t = r.json();
    let cols: Vec<&str> =
        t["columnDefinitions"].as_array().expect("cols").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(cols, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]);
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "web-1");
    assert_eq!(row["cells"][1], "0/1");
    assert_eq!(row["cells"][2], "Pending");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["namespace"], "default");
    assert_eq!(row["object"]["metadata"]["labels"]["app"], "web");
    let one = c.get_accept("/api/v1/namespaces/default/pods/web-1", TABLE_ACCEPT).await.json();
    assert_eq!(one["rows"].as_array().map(Vec::len), Some(1));
    let leases = c.get_accept("/apis/coordination.k8s.io/v1/namespaces/default/leases", TABLE_ACCEPT).await.json();
    let cols: Vec<&str> =
        leases["columnDefinitions"].as_array().expect("cols").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(cols, ["Name", "Holder", "Age"]);
    let slices = c.get_accept("/apis/discovery.k8s.io/v1/endpointslices", TABLE_ACCEPT).await.json();
    assert_eq!(slices["kind"], "Table");
}

#[tokio::test]
async fn lists_page_through_limit_and_continue() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    for i in 0..7 {
        c.post("/api/v1/namespaces/default/configmaps", &cm(&format!("cm-{i}"))).await;
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/configmaps?limit=3".to_string();
    let mut pages = 0;
    loop {
        let page = c.get(&path).await.json();
        pages += 1;
        names.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(token) => path = format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    let labelled = c
        .get("/api/v1/namespaces/default/configmaps?labelSelector=app+in+%28web%29&fieldSelector=metadata.name%3Dcm-2")
        .await
        .json();
    assert_eq!(labelled["items"].as_array().map(Vec::len), Some(1));
    let bad = c.get("/api/v1/namespaces/default/configmaps?fieldSelector=spec.nodeName%3Dx").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["message"], "field label not supported: spec.nodeName");
}

#[tokio::test]
async fn watch_streams_every_change_with_kind_and_bookmarks() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let first = c.post(base, &cm("a")).await.json();
    let rv = first["metadata"]["resourceVersion"].as_str().expect("rv");
    let mut w = c.stream(&format!("{base}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"), &[]).await;
    assert_eq!(w.status, 200);
    c.post(base, &cm("b")).await;
    c.patch(&format!("{base}/b"), "application/merge-patch+json", &json!({"data": {"k": "2"}})).await;
    c.delete(&format!("{base}/b")).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = w.expect_event(10).await;
        if ev["type"] == "BOOKMARK" {
            continue;
        }
        assert_eq!(ev["object"]["kind"], "ConfigMap", "watch objects carry their kind");
        assert_eq!(ev["object"]["apiVersion"], "v1");
        seen.push((
            ev["type"].as_str().unwrap_or("").to_string(),
            ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert_eq!(
        seen,
        [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "b")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Bookmarks keep coming on an idle watch (test server: every second).
    let ev = w.expect_event(10).await;
    assert_eq!(ev["type"], "BOOKMARK");
    assert!(ev["object"]["metadata"]["resourceVersion"].as_str().is_some());
}

#[tokio::test]
async fn watch_honours_timeout_seconds_and_initial_events() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    c.post("/api/v1/namespaces/default/configmaps", &cm("a")).await;
    let mut w = c.stream("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", &[]).await;
    let ev = w.expect_event(5).await;
    assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("a")));
    let end = tokio::time::timeout(Duration::from_secs(10), w.next_event()).await.expect("stream ends by itself");
    assert!(end.is_none());
    let mut w = c
        .stream("/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", &[])
        .await;
    assert_eq!(w.expect_event(5).await["type"], "ADDED");
    let marker = w.expect_event(5).await;
    assert_eq!(marker["type"], "BOOKMARK");
    assert_eq!(marker["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
}

#[tokio::test]
async fn table_watch_sends_one_row_per_event() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let mut w = c.stream("/api/v1/namespaces/default/configmaps?watch=true", &[("accept", TABLE_ACCEPT)]).await;
    c.post("/api/v1/namespaces/default/configmaps", &cm("t")).await;
    let ev = w.expect_event(10).await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"][0]["cells"][0], "t");
    assert!(ev["object"]["columnDefinitions"].as_array().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn watch_from_a_compacted_revision_gets_an_expired_error_event() {
    let (etcd, api) = cluster().await;
    let c = api.client();
    let rv_of = |v: serde_json::Value| -> i64 {
        v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("rv")
    };
    let old = rv_of(c.post("/api/v1/namespaces/default/configmaps", &cm("a")).await.json());
    c.post("/api/v1/namespaces/default/configmaps", &cm("b")).await;
    let latest = rv_of(c.post("/api/v1/namespaces/default/configmaps", &cm("c")).await.json());
    // Watching from `old` needs revision old+1 (b's create), which compaction removes.
    etcd.client().await.compact(latest, None).await.expect("compact");
    let mut w = c.stream(&format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}"), &[]).await;
    assert_eq!(w.status, 200);
    let ev = w.expect_event(10).await;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!((ev["object"]["code"].as_i64(), ev["object"]["reason"].as_str()), (Some(410), Some("Expired")));
    let r =
        c.get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={old}&resourceVersionMatch=Exact")).await;
    assert_eq!(r.status, 410);
}

#[tokio::test]
async fn openapi_v3_documents_let_kubectl_validate_on_the_server() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let index = c.get("/openapi/v3").await.json();
    let url = index["paths"]["api/v1"]["serverRelativeURL"].as_str().expect("core listed").to_string();
    let doc = c.get(&url).await.json();
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
    let v2 = c.get("/openapi/v2").await;
    assert_eq!(v2.header("content-type"), Some("application/json"));
    assert_eq!(v2.json()["swagger"], "2.0");
    let pb = c
        .get_accept("/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json")
        .await;
    assert_eq!(pb.header("content-type"), Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
    assert_eq!(&pb.body[..5], b"\x0a\x032.0", "field 1 (swagger) first");
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let verbose = c.get("/readyz?verbose").await.text();
    assert!(verbose.contains("[+]etcd ok") && verbose.contains("readyz check passed"), "{verbose}");
    assert_eq!(c.get("/livez/ping").await.text(), "ok");
    c.get("/api/v1/namespaces").await;
    let metrics = c.get("/metrics").await.text();
    assert!(
        metrics.contains("apiserver_request_total{verb=\"GET\",resource=\"namespaces\",code=\"200\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_kube_rs_client_lists_creates_and_watches() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use kube::runtime::watcher;
    let (_etcd, api) = cluster().await;
    let client = api.endpoint.kube_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-kube".into());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cms.create(&PostParams::default(), &cm).await.expect("create through kube");
    assert!(
        cms.list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("from-kube"))
    );
    let stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut stream = stream;
    let created = tokio::spawn({
        let cms = cms.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut later = ConfigMap::default();
            later.metadata.name = Some("later".into());
            cms.create(&PostParams::default(), &later).await.expect("create later");
        }
    });
    let saw_later = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(c)) = ev
                && c.metadata.name.as_deref() == Some("later")
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("watcher saw the change in time");
    assert!(saw_later);
    created.await.expect("task");
}

#[tokio::test]
async fn the_namespace_cache_follows_etcd_so_creates_skip_the_namespace_read() {
    let (_etcd, api) = cluster().await;
    let cache = api.running.state.store.namespaces.clone();
    e2e::eventually(Duration::from_secs(10), "default in the namespace cache", || {
        let cache = cache.clone();
        async move { cache.is_active("default").then_some(()) }
    })
    .await;
    let c = api.client();
    c.post("/api/v1/namespaces", &json!({"metadata": {"name": "fresh"}})).await;
    e2e::eventually(Duration::from_secs(10), "a new namespace in the cache", || {
        let cache = cache.clone();
        async move { cache.is_active("fresh").then_some(()) }
    })
    .await;
    c.delete("/api/v1/namespaces/fresh").await;
    e2e::eventually(Duration::from_secs(10), "a terminating namespace to leave the active set", || {
        let cache = cache.clone();
        async move { (!cache.is_active("fresh")).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn large_lists_stream_in_chunks_from_one_snapshot() {
    let etcd = Etcd::start().await;
    let api = InProcess::start_with(&etcd.endpoint(), |c| c.list_chunk = 4).await;
    let c = api.client();
    for i in 0..19 {
        let mut obj = cm(&format!("cm-{i:02}"));
        if i % 3 == 0 {
            obj["metadata"]["labels"] = json!({"every": "third"});
        }
        assert_eq!(c.post("/api/v1/namespaces/default/configmaps", &obj).await.status, 201);
    }
    let list = c.get("/api/v1/namespaces/default/configmaps").await;
    assert_eq!(list.status, 200);
    let list = list.json();
    let names: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, (0..19).map(|i| format!("cm-{i:02}")).collect::<Vec<_>>());
    assert!(list["metadata"].get("continue").is_none(), "an unlimited list has no continue token");
    let every_third = c.get("/api/v1/namespaces/default/configmaps?labelSelector=every%3Dthird").await.json();
    assert_eq!(every_third["items"].as_array().map(Vec::len), Some(7));
    // All items come from the revision the list reports.
    let rv: i64 = list["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
    for item in list["items"].as_array().expect("items") {
        let item_rv: i64 = item["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("item rv");
        assert!(item_rv <= rv);
    }
}

/// Storage whose LISTs start failing after a number of successful ones.
struct FailingLists {
    inner: apiserver::storage::etcd::EtcdStorage,
    lists_left: std::sync::atomic::AtomicI64,
}

#[async_trait::async_trait]
impl apiserver::storage::Storage for FailingLists {
    async fn get(&self, key: &str) -> Result<Option<apiserver::storage::KeyValue>, apiserver::storage::StorageError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> Result<apiserver::storage::ListPage, apiserver::storage::StorageError> {
        if prefix.contains("configmaps") && self.lists_left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            return Err(apiserver::storage::StorageError::Unavailable("injected".into()));
        }
        self.inner.list(prefix, after, limit, revision).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, apiserver::storage::StorageError> {
        self.inner.create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, apiserver::storage::StorageError> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: i64) -> Result<i64, apiserver::storage::StorageError> {
        self.inner.delete(key, expected).await
    }
    async fn watch(
        &self,
        prefix: &str,
        after: i64,
    ) -> Result<apiserver::storage::Watch, apiserver::storage::StorageError> {
        self.inner.watch(prefix, after).await
    }
    async fn current_revision(&self) -> Result<i64, apiserver::storage::StorageError> {
        self.inner.current_revision().await
    }
    async fn check_health(&self) -> Result<(), apiserver::storage::StorageError> {
        self.inner.check_health().await
    }
}

#[tokio::test]
async fn a_list_that_fails_halfway_is_aborted_not_truncated() {
    let etcd = Etcd::start().await;
    let inner = apiserver::storage::etcd::EtcdStorage::connect(apiserver::storage::etcd::EtcdOptions::new(vec![
        etcd.endpoint(),
    ]))
    .await
    .expect("etcd");
    let failing = std::sync::Arc::new(FailingLists { inner, lists_left: std::sync::atomic::AtomicI64::new(i64::MAX) });
    let api = InProcess::start_on(&etcd.endpoint(), Some(failing.clone()), |c| c.list_chunk = 3).await;
    let c = api.client();
    for i in 0..10 {
        c.post("/api/v1/namespaces/default/configmaps", &cm(&format!("cm-{i}"))).await;
    }
    // The first chunk succeeds (headers are sent with 200), the second fails.
    failing.lists_left.store(1, std::sync::atomic::Ordering::SeqCst);
    let outcome = c.try_request("GET", "/api/v1/namespaces/default/configmaps", &[], Vec::new()).await;
    match outcome {
        Err(e) => assert!(!e.is_empty()),
        Ok(r) => panic!("a failed list must not complete: {} {}", r.status, r.text()),
    }
    failing.lists_left.store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.get("/api/v1/namespaces/default/configmaps").await.json()["items"].as_array().map(Vec::len), Some(10));
}

#[tokio::test]
async fn binding_and_eviction_subresources_over_http() {
    let (_etcd, api) = cluster().await;
    let c = api.client();
    let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    c.post("/api/v1/namespaces/default/pods", &pod).await;
    let bind = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}});
    let r = c.post("/api/v1/namespaces/default/pods/p/binding", &bind).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"], "Success");
    assert_eq!(c.get("/api/v1/namespaces/default/pods/p").await.json()["spec"]["nodeName"], "n1");
    assert_eq!(c.post("/api/v1/namespaces/default/pods/p/binding", &bind).await.status, 409);
    // Mark it running, give it a budget that allows nothing, and try to evict it.
    let mut running = c.get("/api/v1/namespaces/default/pods/p").await.json();
    running["status"]["phase"] = json!("Running");
    assert_eq!(c.put("/api/v1/namespaces/default/pods/p/status", &running).await.status, 200);
    let pdb = json!({"metadata": {"name": "budget"}, "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}});
    let created = c.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", &pdb).await.json();
    let mut status = created.clone();
    status["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1});
    assert_eq!(
        c.put("/apis/policy/v1/namespaces/default/poddisruptionbudgets/budget/status", &status).await.status,
        200
    );
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
    let refused = c.post("/api/v1/namespaces/default/pods/p/eviction", &eviction).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["reason"], "TooManyRequests");
    c.delete("/apis/policy/v1/namespaces/default/poddisruptionbudgets/budget").await;
    let evicted = c
        .post(
            "/api/v1/namespaces/default/pods/p/eviction",
            &json!({"metadata": {"name": "p"}, "deleteOptions": {"gracePeriodSeconds": 0}}),
        )
        .await;
    assert_eq!(evicted.status, 201, "{}", evicted.text());
    assert_eq!(c.get("/api/v1/namespaces/default/pods/p").await.status, 404);
    let core = c.get("/api/v1").await.json();
    let names: Vec<&str> = core["resources"].as_array().expect("r").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"pods/binding") && names.contains(&"pods/eviction"), "{names:?}");
    let apps = c.get("/apis/apps/v1").await.json();
    let scale = apps["resources"]
        .as_array()
        .expect("r")
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .cloned()
        .expect("scale listed");
    assert_eq!(
        (scale["group"].as_str(), scale["version"].as_str(), scale["kind"].as_str()),
        (Some("autoscaling"), Some("v1"), Some("Scale"))
    );
}
