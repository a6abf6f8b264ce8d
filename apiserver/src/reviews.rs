//! Requests answered by computing, not storing: the reviews of authentication.k8s.io
//! (SelfSubjectReview for `kubectl auth whoami`, TokenReview) and authorization.k8s.io
//! (SelfSubjectAccessReview for `kubectl auth can-i`, SelfSubjectRulesReview for
//! `can-i --list`, SubjectAccessReview, LocalSubjectAccessReview), and TokenRequest
//! (`serviceaccounts/<name>/token`, `kubectl create token`).

use serde_json::{Value, json};

use crate::auth::{self, User};
use crate::error::{ApiError, ApiResult, Cause, Details};
use crate::handler::State;
use crate::meta;
use crate::resources::ResourceInfo;
use crate::satoken::TokenClaims;

/// Default and bounds of a requested token's lifetime, as upstream.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;
const MAX_TOKEN_SECONDS: i64 = 1 << 32;

fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
    let summary = match causes.as_slice() {
        [one] => one.summary(),
        many => format!("[{}]", many.iter().map(Cause::summary).collect::<Vec<_>>().join(", ")),
    };
    ApiError::Invalid {
        message: format!("{kind}.{} \"{name}\" is invalid: {summary}", group_of(kind)),
        details: Details { name: name.into(), group: group_of(kind).into(), kind: kind.into(), ..Default::default() },
        causes,
    }
}

fn group_of(kind: &str) -> &'static str {
    match kind {
        "SelfSubjectReview" | "TokenReview" | "TokenRequest" => "authentication.k8s.io",
        _ => "authorization.k8s.io",
    }
}

/// The response to a create of one of the review kinds, `obj` being the normalized request.
pub async fn review(state: &State, info: &ResourceInfo, ns: &str, mut obj: Value, user: &User) -> ApiResult<Value> {
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match info.kind {
        "SelfSubjectReview" => json!({"userInfo": user.info()}),
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
            if token.is_empty() {
                return Err(invalid(info.kind, "", vec![Cause::required("spec.token")]));
            }
            let audiences: Option<Vec<String>> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect());
            match state.auth.authenticate_token(token, audiences.as_deref(), &state.store).await {
                Some(u) => {
                    let auds = audiences.unwrap_or_else(|| {
                        state.auth.service_accounts.as_ref().map(|s| s.audiences.clone()).unwrap_or_default()
                    });
                    json!({"authenticated": true, "user": u.info(), "audiences": auds})
                }
                None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
            }
        }
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
            let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
            if resource.is_some() == non_resource.is_some() {
                return Err(invalid(
                    info.kind,
                    "",
                    vec![Cause::invalid(
                        "spec.resourceAttributes",
                        "",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            if info.kind == "LocalSubjectAccessReview"
                && let Some(n) = resource.and_then(|r| r.get("namespace")).and_then(Value::as_str)
                && n != ns
            {
                return Err(invalid(
                    info.kind,
                    "",
                    vec![Cause::invalid("spec.resourceAttributes.namespace", n, "must match metadata.namespace")],
                ));
            }
            let subject = if info.kind == "SelfSubjectAccessReview" {
                user.clone()
            } else {
                let s = |f: &str| spec.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                let groups: Vec<String> = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                    .unwrap_or_default();
                if s("user").is_empty() && groups.is_empty() {
                    return Err(invalid(
                        info.kind,
                        "",
                        vec![Cause::invalid("spec.user", "", "at least one of user or group must be specified")],
                    ));
                }
                User { name: s("user"), uid: s("uid"), groups, ..Default::default() }
            };
            let path = non_resource.and_then(|n| n.get("path")).and_then(Value::as_str);
            let (allowed, reason) = auth::allows(&subject, path);
            json!({"allowed": allowed, "reason": reason})
        }
        "SelfSubjectRulesReview" => {
            if spec.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(invalid(info.kind, "", vec![Cause::required("spec.namespace")]));
            }
            let (allowed, _) = auth::allows(user, None);
            let (resource_rules, non_resource_rules) = if allowed {
                (
                    json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
                    json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
                )
            } else {
                (
                    json!([]),
                    json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version"]}]),
                )
            };
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        other => return Err(ApiError::Internal(format!("no review handler for {other}"))),
    };
    obj["status"] = status;
    let m = meta::meta_mut(&mut obj);
    m.insert("creationTimestamp".into(), Value::Null);
    if info.namespaced {
        m.insert("namespace".into(), json!(ns));
    }
    Ok(obj)
}

/// `POST serviceaccounts/<name>/token`: a token for the service account, bound to an object
/// when the request names one. `dry_run` checks everything and signs nothing.
pub async fn token_request(state: &State, ns: &str, name: &str, request: &Value, dry_run: bool) -> ApiResult<Value> {
    let signer = state
        .auth
        .service_accounts
        .as_ref()
        .ok_or_else(|| ApiError::ServiceUnavailable("this apiserver has no service account signing key".into()))?;
    if !request.is_object() {
        return Err(ApiError::BadRequest("the request body must be a TokenRequest object".into()));
    }
    for (field, want) in [("apiVersion", "authentication.k8s.io/v1"), ("kind", "TokenRequest")] {
        if let Some(given) = request.get(field).and_then(Value::as_str).filter(|g| !g.is_empty() && *g != want) {
            return Err(ApiError::BadRequest(format!("the {field} of the request ({given}) must be {want}")));
        }
    }
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_TOKEN_SECONDS,
        Some(v) => {
            v.as_i64().ok_or_else(|| ApiError::BadRequest("spec.expirationSeconds must be an integer".into()))?
        }
    };
    let mut causes = Vec::new();
    if seconds < MIN_TOKEN_SECONDS {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if seconds > MAX_TOKEN_SECONDS {
        causes.push(Cause::invalid(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let bound_ref = spec.get("boundObjectRef").filter(|v| v.is_object());
    if let Some(r) = bound_ref {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "Pod" | "Secret" | "Node") {
            causes.push(Cause::not_supported("spec.boundObjectRef.kind", kind, &["Pod", "Secret", "Node"]));
        }
        if let Some(v) = r.get("apiVersion").and_then(Value::as_str).filter(|v| *v != "v1") {
            causes.push(Cause::not_supported("spec.boundObjectRef.apiVersion", v, &["v1"]));
        }
        if r.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(Cause::required("spec.boundObjectRef.name"));
        }
    }
    if !causes.is_empty() {
        return Err(invalid("TokenRequest", name, causes));
    }
    let reg = &state.registry;
    let get = |plural: &'static str, ns: &str, name: &str| {
        let info = reg.by_plural("", plural).cloned();
        let (ns, name) = (ns.to_string(), name.to_string());
        async move {
            let info = info.ok_or_else(|| ApiError::Internal(format!("{plural} not served")))?;
            state.store.get_value(&info, &ns, &name).await
        }
    };
    let sa = get("serviceaccounts", ns, name).await?;
    let mut claims = TokenClaims {
        namespace: ns.to_string(),
        service_account: name.to_string(),
        service_account_uid: meta::uid(&sa).to_string(),
        bound: None,
        node: None,
        id: meta::new_uid(),
    };
    if let Some(r) = bound_ref {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let bound_name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let plural = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            _ => "nodes",
        };
        let obj = get(plural, if kind == "Node" { "" } else { ns }, bound_name).await?;
        let uid = meta::uid(&obj).to_string();
        if let Some(want) = r.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::Conflict {
                message: format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
                details: None,
            });
        }
        if kind == "Node" {
            claims.node = Some((bound_name.to_string(), uid.clone()));
        } else if kind == "Pod"
            && let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
            && let Ok(n) = get("nodes", "", node).await
        {
            claims.node = Some((node.to_string(), meta::uid(&n).to_string()));
        }
        claims.bound = Some((kind.to_string(), bound_name.to_string(), uid));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| signer.audiences.clone());
    let now = jiff::Timestamp::now();
    let token = if dry_run { String::new() } else { signer.issue(&claims, &audiences, now.as_second(), seconds) };
    let expires = jiff::Timestamp::from_second(now.as_second() + seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta::now()},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound_ref},
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}
