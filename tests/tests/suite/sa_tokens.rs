//! The ServiceAccount token controller against the in-process apiserver (through the controller
//! harness, as the binary runs it): token Secrets are filled, their tokens authenticate as the
//! account until the Secret or the account goes, and Secrets without their account are deleted.
//! Also the event recorder's aggregation of similar events, against the same apiserver.

use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::controllers::{Harness, harness, harness_for};

/// The token controller, signing with the apiserver's own service account key.
async fn start() -> Harness {
    harness_for(&["serviceaccount-token"], |api| {
        let kubeconfig = api.endpoint.kubeconfig.clone();
        let key = kubeconfig.parent().expect("dir").join("pki").join("sa.key");
        controller_manager::app::Flags {
            service_account_private_key_file: Some(key),
            // The root CA comes from the kubeconfig's cluster, as without --root-ca-file.
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        }
    })
    .await
}

async fn account(h: &Harness, name: &str) -> ServiceAccount {
    let api: Api<ServiceAccount> = Api::namespaced(h.client.clone(), "default");
    let sa = serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa");
    api.create(&PostParams::default(), &sa).await.expect("service account")
}

async fn token_secret(h: &Harness, name: &str, annotations: serde_json::Value) -> Secret {
    let api: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let s = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "type": "kubernetes.io/service-account-token",
    }))
    .expect("secret");
    api.create(&PostParams::default(), &s).await.expect("secret")
}

/// The Secret once the controller has put a token in it.
async fn filled(h: &Harness, name: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), &format!("{name} holds a token"), || async {
        let s = api.get_opt(name).await.ok()??;
        s.data.as_ref()?.get("token").filter(|t| !t.0.is_empty())?;
        Some(s)
    })
    .await
}

async fn gone(h: &Harness, name: &str) {
    let api: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), &format!("{name} deleted"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// The apiserver's answer to a SelfSubjectReview made with `token`: status, and user info.
async fn who_am_i(h: &Harness, token: &str) -> (u16, serde_json::Value) {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let r = h.api.client().with_token(token).post("/apis/authentication.k8s.io/v1/selfsubjectreviews", &review).await;
    let status = r.status;
    (status, if status == 201 { r.json()["status"]["userInfo"].clone() } else { json!(null) })
}

fn data(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).unwrap_or_default()).expect("utf8")
}

#[tokio::test]
async fn a_token_secret_is_filled_and_its_token_authenticates_until_the_secret_is_deleted() {
    let h = start().await;
    let sa = account(&h, "robot").await;
    token_secret(&h, "robot-token", json!({"kubernetes.io/service-account.name": "robot"})).await;
    let s = filled(&h, "robot-token").await;
    assert_eq!(data(&s, "namespace"), "default");
    assert_eq!(data(&s, "ca.crt"), h.api.endpoint.ca_pem, "the cluster CA");
    let annotations = s.metadata.annotations.clone().expect("annotations");
    assert_eq!(annotations.get("kubernetes.io/service-account.uid"), sa.metadata.uid.as_ref());

    let token = data(&s, "token");
    let (status, user) = who_am_i(&h, &token).await;
    assert_eq!(status, 201, "the token authenticates");
    assert_eq!(user["username"], "system:serviceaccount:default:robot");
    assert_eq!(user["uid"], json!(sa.metadata.uid));
    let groups: Vec<&str> = user["groups"].as_array().expect("groups").iter().filter_map(|g| g.as_str()).collect();
    assert_eq!(groups, ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]);
    // Any request works with it, not only reviews.
    let list = h.api.client().with_token(&token).get("/api/v1/namespaces/default/configmaps").await;
    assert_eq!(list.status, 200);
    // A forged signature does not.
    let forged = format!("{}AAAA", token.trim_end_matches(|c| c != '.'));
    assert_eq!(who_am_i(&h, &forged).await.0, 401);

    // Deleting the Secret revokes the token.
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    secrets.delete("robot-token", &DeleteParams::default()).await.expect("delete");
    assert_eq!(who_am_i(&h, &token).await.0, 401, "revoked with its Secret");
}

#[tokio::test]
async fn a_token_secret_for_a_missing_or_recreated_service_account_is_deleted() {
    let h = start().await;
    token_secret(&h, "ghost-token", json!({"kubernetes.io/service-account.name": "ghost"})).await;
    gone(&h, "ghost-token").await;
    // Pinned to a uid the account of that name does not have (an earlier one's).
    account(&h, "robot").await;
    let pinned = json!({"kubernetes.io/service-account.name": "robot", "kubernetes.io/service-account.uid": "old"});
    token_secret(&h, "stale-token", pinned).await;
    gone(&h, "stale-token").await;
}

#[tokio::test]
async fn deleting_a_service_account_deletes_its_token_secrets_and_revokes_their_tokens() {
    let h = start().await;
    account(&h, "robot").await;
    account(&h, "other").await;
    let names = json!({"kubernetes.io/service-account.name": "robot"});
    token_secret(&h, "robot-a", names.clone()).await;
    token_secret(&h, "robot-b", names.clone()).await;
    token_secret(&h, "other-token", json!({"kubernetes.io/service-account.name": "other"})).await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let opaque = serde_json::from_value(json!({"metadata": {"name": "plain", "annotations": names}})).expect("secret");
    secrets.create(&PostParams::default(), &opaque).await.expect("opaque secret");
    let token = data(&filled(&h, "robot-a").await, "token");
    filled(&h, "robot-b").await;
    filled(&h, "other-token").await;
    assert_eq!(who_am_i(&h, &token).await.0, 201);

    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), "default");
    accounts.delete("robot", &DeleteParams::default()).await.expect("delete");
    assert_eq!(who_am_i(&h, &token).await.0, 401, "revoked with its account");
    gone(&h, "robot-a").await;
    gone(&h, "robot-b").await;
    assert!(secrets.get_opt("other-token").await.expect("get").is_some(), "another account's token stays");
    assert!(secrets.get_opt("plain").await.expect("get").is_some(), "not a token Secret: left alone");
}

#[tokio::test]
async fn many_similar_events_with_different_messages_become_one_combined_event_with_a_rising_count() {
    let h = harness(&[]).await;
    let recorder = controller_manager::events::Recorder::new(h.client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let cm = serde_json::from_value(json!({"metadata": {"name": "flaky"}})).expect("cm");
    let cm = cms.create(&PostParams::default(), &cm).await.expect("configmap");
    for i in 1..=15 {
        let object = controller_manager::events::reference(&cm);
        recorder.warning(object, "FailedSync", format!("attempt {i} failed"));
    }
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let mine = eventually(Duration::from_secs(10), "9 events and one combined with count 6", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let mine: Vec<Event> =
            list.into_iter().filter(|e| e.involved_object.name.as_deref() == Some("flaky")).collect();
        let combined = mine.iter().find(|e| e.message.as_deref().is_some_and(|m| m.starts_with("(combined")))?;
        (mine.len() == 10 && combined.count == Some(6)).then_some(mine)
    })
    .await;
    let combined: Vec<&Event> = mine.iter().filter(|e| e.count != Some(1)).collect();
    assert_eq!(combined.len(), 1, "{mine:?}");
    assert_eq!(combined[0].message.as_deref(), Some("(combined from similar events): attempt 15 failed"));
    assert_eq!(combined[0].reason.as_deref(), Some("FailedSync"));
    for i in 1..=9 {
        let message = format!("attempt {i} failed");
        assert!(mine.iter().any(|e| e.message.as_deref() == Some(message.as_str())), "{message}");
    }
}

#[tokio::test]
async fn the_controller_manager_binary_signs_token_secrets_with_the_apiservers_key() {
    let etcd = e2e::etcd::Etcd::start().await;
    let api = e2e::server::Process::start(&etcd.endpoint(), &[]).await;
    let kc = &api.endpoint.kubeconfig;
    let key = api.dir.path().join("pki").join("sa.key").display().to_string();
    let solo = ["--leader-elect=false", "--controllers", "serviceaccount-token"];
    // Without a key the controller says so once and does not run.
    let keyless = e2e::server::Component::start("controller-manager", kc, &api.dir.path().join("cm-0.log"), &solo);
    let said = || async {
        let log = keyless.log();
        log.contains("Not running: no --service-account-private-key-file").then_some(log)
    };
    let log = eventually(Duration::from_secs(10), "the keyless controller-manager says why", said).await;
    assert_eq!(log.matches("service-account-private-key-file").count(), 1, "{log}");
    drop(keyless);

    let mut flags = solo.to_vec();
    flags.extend(["--service-account-private-key-file", key.as_str()]);
    let _cm = e2e::server::Component::start("controller-manager", kc, &api.dir.path().join("cm.log"), &flags);
    let client = api.endpoint.kube_client().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let sa = serde_json::from_value(json!({"metadata": {"name": "robot"}})).expect("sa");
    accounts.create(&PostParams::default(), &sa).await.expect("service account");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s = serde_json::from_value(json!({
        "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token",
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &s).await.expect("secret");
    let token = eventually(Duration::from_secs(20), "robot-token holds a token", || async {
        let s = secrets.get_opt("robot-token").await.ok()??;
        Some(data(&s, "token")).filter(|t| !t.is_empty())
    })
    .await;
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let r = api
        .endpoint
        .client()
        .with_token(&token)
        .post("/apis/authentication.k8s.io/v1/selfsubjectreviews", &review)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["status"]["userInfo"]["username"], "system:serviceaccount:default:robot");
}

#[tokio::test]
async fn the_controller_manager_refuses_a_service_account_key_it_cannot_sign_with_in_one_line() {
    let dir = e2e::TempDir::new("bad-sa-key").expect("dir");
    let key = dir.path().join("sa.key");
    std::fs::write(&key, "not a key").expect("key");
    let args = ["--kubeconfig", "/nonexistent", "--service-account-private-key-file", key.to_str().expect("utf-8")];
    let out = std::process::Command::new(e2e::binary("controller-manager")).args(args).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--service-account-private-key-file") && err.contains("PKCS#8"), "{err}");
}
