//! Identity through the API: service account tokens (TokenRequest, `kubectl create token`),
//! bearer authentication with them, OIDC discovery, and the reviews `kubectl auth whoami` and
//! `kubectl auth can-i` send (as protobuf from kubectl 1.32).

use e2e::etcd::Etcd;
use e2e::kubectl::Kubectl;
use e2e::server::{InProcess, Process};
use serde_json::{Value, json};

#[tokio::test]
async fn kubectl_create_token_issues_a_token_that_authenticates_as_the_service_account() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    for minor in ["1.27", "1.32", "1.33"] {
        if !Kubectl::available(minor) {
            continue;
        }
        let k = Kubectl::version(minor, &api.endpoint);
        let sa = format!("robot-{}", minor.replace('.', "-"));
        k.run(&["create", "serviceaccount", &sa]).ok();
        let token = k.run(&["create", "token", &sa, "--duration=15m"]).ok().stdout.trim().to_string();
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

        let me = k.run(&["auth", "whoami", "--token", &token, "-o", "json"]);
        if minor != "1.27" {
            // kubectl 1.27 asks for the beta review, which a 1.33 server no longer serves.
            let me: Value = serde_json::from_str(&me.ok().stdout).expect("json");
            let info = &me["status"]["userInfo"];
            assert_eq!(info["username"], format!("system:serviceaccount:default:{sa}"));
            assert_eq!(
                info["groups"],
                json!(["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"])
            );
        }
        let pods = k.run(&["get", "pods", "--token", &token]).ok();
        assert!(pods.stderr.contains("No resources found"), "{}", pods.stderr);
        assert_eq!(k.run(&["auth", "can-i", "create", "deployments", "--token", &token]).ok().stdout.trim(), "yes");

        // The token dies with its service account.
        k.run(&["delete", "serviceaccount", &sa]).ok();
        let refused = k.run(&["get", "pods", "--token", &token]);
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains("Unauthorized"), "{}", refused.stderr);
    }
    let k = Kubectl::new(&api.endpoint);
    let short = k.run(&["create", "token", "default", "--duration=1m"]);
    assert_ne!(short.code, 0);
    assert!(short.stderr.contains("may not specify a duration less than 10 minutes"), "{}", short.stderr);
    let missing = k.run(&["create", "token", "nobody"]);
    assert!(missing.stderr.contains("serviceaccounts \"nobody\" not found"), "{}", missing.stderr);
}

#[tokio::test]
async fn kubectl_auth_whoami_and_can_i_as_the_admin() {
    let etcd = Etcd::start().await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let k = Kubectl::new(&api.endpoint);
    let me: Value = serde_json::from_str(&k.run(&["auth", "whoami", "-o", "json"]).ok().stdout).expect("json");
    let groups = me["status"]["userInfo"]["groups"].as_array().cloned().unwrap_or_default();
    assert!(groups.contains(&json!("system:masters")) && groups.contains(&json!("system:authenticated")), "{me}");
    for minor in ["1.27", "1.33"] {
        if Kubectl::available(minor) {
            let k = Kubectl::version(minor, &api.endpoint);
            assert_eq!(k.run(&["auth", "can-i", "delete", "nodes"]).ok().stdout.trim(), "yes");
            let list = k.run(&["auth", "can-i", "--list"]).ok().stdout;
            assert!(list.contains("*.*") && list.contains("[*]"), "{list}");
        }
    }
}

#[tokio::test]
async fn token_requests_bind_to_pods_and_token_reviews_report_the_identity() {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let c = api.client();
    let sa_path = "/api/v1/namespaces/default/serviceaccounts";
    assert_eq!(c.post(sa_path, &json!({"metadata": {"name": "builder"}})).await.status, 201);
    let pod = c
        .post(
            "/api/v1/namespaces/default/pods",
            &json!({"metadata": {"name": "job"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await
        .json();
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "job", "uid": pod["metadata"]["uid"]}},
    });
    let r = c.post(&format!("{sa_path}/builder/token"), &request).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tr = r.json();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["audiences"], json!(["https://kubernetes.default.svc.cluster.local"]));
    assert!(tr["status"]["expirationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let token = tr["status"]["token"].as_str().expect("token").to_string();

    let review = c
        .post(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}),
        )
        .await;
    assert_eq!(review.status, 201);
    let status = review.json()["status"].clone();
    assert_eq!(status["authenticated"], true);
    assert_eq!(status["user"]["username"], "system:serviceaccount:default:builder");
    assert_eq!(status["user"]["extra"]["authentication.kubernetes.io/pod-name"], json!(["job"]));

    // A wrong uid is a conflict; once the pod is gone, so is the token's validity.
    let mut stale = request.clone();
    stale["spec"]["boundObjectRef"]["uid"] = json!("not-the-uid");
    assert_eq!(c.post(&format!("{sa_path}/builder/token"), &stale).await.status, 409);
    let as_pod = c.with_token(&token);
    assert_eq!(as_pod.get("/api/v1/namespaces/default/configmaps").await.status, 200);
    let gone = c.request("DELETE", "/api/v1/namespaces/default/pods/job?gracePeriodSeconds=0", &[], Vec::new()).await;
    assert_eq!(gone.status, 200);
    assert_eq!(as_pod.get("/api/v1/namespaces/default/configmaps").await.status, 401);
    let review = c.post("/apis/authentication.k8s.io/v1/tokenreviews", &json!({"spec": {"token": token}})).await.json();
    assert_eq!(review["status"]["authenticated"], false);

    // Access reviews answer for any subject, and refuse requests that ask nothing.
    let sar = c
        .post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &json!({"spec": {"user": "alice", "groups": ["system:authenticated"], "resourceAttributes": {"verb": "get", "resource": "pods"}}}),
        )
        .await;
    assert_eq!(sar.status, 201);
    assert_eq!(sar.json()["status"]["allowed"], true);
    let empty = c.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &json!({"spec": {}})).await;
    assert_eq!(empty.status, 422);
    assert_eq!(c.get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").await.status, 405);
}

#[tokio::test]
async fn oidc_discovery_publishes_the_issuer_and_its_key() {
    let etcd = Etcd::start().await;
    let api = InProcess::start(&etcd.endpoint()).await;
    let c = api.client();
    let conf = c.get("/.well-known/openid-configuration").await.json();
    assert_eq!(conf["issuer"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(conf["jwks_uri"], "https://kubernetes.default.svc.cluster.local/openid/v1/jwks");
    let jwks = c.get("/openid/v1/jwks").await;
    assert_eq!(jwks.header("content-type"), Some("application/jwk-set+json"));
    let key = &jwks.json()["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str(), key["crv"].as_str()),
        (Some("EC"), Some("ES256"), Some("P-256"))
    );
    assert_eq!(c.without_token().get("/openid/v1/jwks").await.status, 401);
}
