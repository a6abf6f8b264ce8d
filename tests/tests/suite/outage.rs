//! etcd going away and coming back: requests fail cleanly with 5xx, nothing crashes, the server
//! recovers by itself, and open watches resume or end with an error instead of stalling.

use std::time::{Duration, Instant};

use e2e::etcd::Etcd;
use e2e::eventually;
use e2e::server::InProcess;
use serde_json::json;

fn cm(name: &str) -> serde_json::Value {
    json!({"metadata": {"name": name}, "data": {"k": "v"}})
}

#[tokio::test]
async fn requests_fail_with_5xx_while_etcd_is_down_and_succeed_after_it_returns() {
    let mut etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let c = api.client();
    c.post("/api/v1/namespaces/default/configmaps", &cm("before")).await;
    etcd.stop();
    let started = Instant::now();
    let r = c.get("/api/v1/namespaces/default/configmaps/before").await;
    assert!(r.status >= 500, "got {} {}", r.status, r.text());
    let st = r.json();
    assert_eq!(st["kind"], "Status");
    assert!(matches!(st["reason"].as_str(), Some("ServiceUnavailable" | "Timeout")), "{st}");
    assert!(started.elapsed() < Duration::from_secs(10), "failure must not hang: {:?}", started.elapsed());
    let w = c.post("/api/v1/namespaces/default/configmaps", &cm("during")).await;
    assert!(w.status >= 500, "write while etcd is down: {}", w.status);
    assert_eq!(c.get("/readyz").await.status, 500);
    etcd.restart().await;
    eventually(Duration::from_secs(30), "reads to work again", || {
        let c = c.clone();
        async move { (c.get("/api/v1/namespaces/default/configmaps/before").await.status == 200).then_some(()) }
    })
    .await;
    assert_eq!(c.post("/api/v1/namespaces/default/configmaps", &cm("after")).await.status, 201);
    assert_eq!(c.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn an_open_watch_resumes_across_an_etcd_restart_without_missing_events() {
    let mut etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let c = api.client();
    let base = "/api/v1/namespaces/default/configmaps";
    let mut w = c.stream(&format!("{base}?watch=true&resourceVersion=0"), &[]).await;
    c.post(base, &cm("one")).await;
    let ev = w.expect_event(10).await;
    assert_eq!(ev["object"]["metadata"]["name"], "one");
    etcd.restart().await;
    // Write as soon as etcd answers; the watch must deliver it after resuming.
    eventually(Duration::from_secs(20), "a write after the restart", || {
        let c = c.clone();
        async move { (c.post(base, &cm("two")).await.status == 201).then_some(()) }
    })
    .await;
    let ev = w.expect_event(20).await;
    assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("two")), "{ev}");
}

#[tokio::test]
async fn an_open_watch_ends_with_an_error_when_etcd_stays_down() {
    let mut etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let c = api.client();
    let mut w = c.stream("/api/v1/namespaces/default/configmaps?watch=true", &[]).await;
    assert_eq!(w.status, 200);
    etcd.stop();
    // The test server's resume window is 5 s; the watch must then say why it ends.
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match w.next_event().await {
                Some(ev) if ev["type"] == "ERROR" => return Some(ev),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("the watch did not stall");
    let ev = outcome.expect("an ERROR event before the stream ends");
    assert!(ev["object"]["code"].as_i64().is_some_and(|c| c >= 500), "{ev}");
}

#[tokio::test]
async fn the_apiserver_starts_before_etcd_and_becomes_ready_when_it_appears() {
    let mut etcd = Etcd::start().await;
    let endpoint = etcd.endpoint();
    etcd.stop();
    let started = tokio::spawn(async move { InProcess::start(&endpoint).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!started.is_finished(), "must not be ready without etcd");
    etcd.restart().await;
    let api = tokio::time::timeout(Duration::from_secs(40), started).await.expect("ready in time").expect("task");
    assert_eq!(api.client().get("/api/v1/namespaces/default").await.status, 200);
}
