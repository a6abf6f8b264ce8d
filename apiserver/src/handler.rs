//! Request handling: authentication, routing of every path the API serves, the REST verbs on
//! resources, content negotiation, and watch streaming.
//!
//! Routing follows upstream's request-info rules: `/api/v1/...` and `/apis/<g>/<v>/...`, then
//! `namespaces/<ns>/<resource>[/<name>[/<subresource>]]` or `<resource>[/<name>[/<sub>]]`, with
//! `namespaces/<name>/status|finalize` naming the namespace's own subresources.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::auth::{self, Authenticator, User};
use crate::codec::{self, FieldValidation, MAX_BODY_BYTES};
use crate::discovery;
use crate::error::{ApiError, ApiResult, Cause, Details, success_status};
use crate::http::{self as h, Body, Output, Query};
use crate::meta;
use crate::metrics::Metrics;
use crate::openapi::OpenApiV3;
use crate::resources::{Registry, ResourceInfo};
use crate::rest::subresources::ScaleChange;
use crate::rest::{
    self, DeleteOptions, Deleted, ListOptions, ParsedPatch, PatchKind, Propagation, Store, WatchItem, WatchOptions,
    WriteOptions,
};
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::table::{self, IncludeObject};

/// Everything a request may need, shared by all connections.
pub struct State {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub openapi: OpenApiV3,
    /// `/openapi/v2` in JSON and protobuf, built once.
    pub openapi_v2: (Bytes, Bytes),
    pub auth: Authenticator,
    pub metrics: Metrics,
    /// What `/api` advertises in `serverAddressByClientCIDRs`.
    pub server_address: String,
    /// The default namespaces exist; `/readyz` waits for this.
    pub bootstrapped: AtomicBool,
    /// Watches without `timeoutSeconds` end after this to twice this, like upstream's
    /// `--min-request-timeout`.
    pub min_request_timeout: Duration,
    /// Objects per storage read when streaming a LIST without a limit.
    pub list_chunk: usize,
    /// TLS for connections to kubelets (with the apiserver's client certificate), when one is
    /// configured.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    pub shutdown: CancellationToken,
}

/// A parsed resource path.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub info: Arc<ResourceInfo>,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

#[derive(Debug)]
pub enum Route {
    Version,
    Health {
        endpoint: &'static str,
        check: Option<String>,
    },
    Metrics,
    /// `/.well-known/openid-configuration`: OIDC discovery for the service account issuer.
    OpenIdConfiguration,
    /// `/openid/v1/jwks`: the keys that verify service account tokens.
    Jwks,
    OpenApiV3Index,
    OpenApiV3(String),
    /// `protobuf`: the legacy path that only ever served protobuf.
    OpenApiV2 {
        protobuf: bool,
    },
    Api,
    Apis,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourcePath),
    /// `pods/proxy`, `services/proxy`, `nodes/proxy`: relayed to the backend, any method.
    Proxy(crate::proxy::ProxyPath),
    NotFound,
}

pub fn route(reg: &Registry, path: &str) -> Route {
    // Before the segments are decoded and the trailing slash trimmed: both are relayed as sent.
    if let Some(p) = crate::proxy::proxy_route(reg, path) {
        return Route::Proxy(p);
    }
    let trimmed = path.trim_end_matches('/');
    let segs: Vec<String> = trimmed.split('/').skip(1).map(|s| h::percent_decode(s, false)).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        [e @ ("healthz" | "livez" | "readyz"), rest @ ..] if rest.len() <= 1 => {
            let endpoint = match *e {
                "healthz" => "healthz",
                "livez" => "livez",
                _ => "readyz",
            };
            Route::Health { endpoint, check: rest.first().map(|s| s.to_string()) }
        }
        ["metrics"] => Route::Metrics,
        [".well-known", "openid-configuration"] => Route::OpenIdConfiguration,
        ["openid", "v1", "jwks"] => Route::Jwks,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["openapi", "v2"] => Route::OpenApiV2 { protobuf: false },
        ["swagger-2.0.0.pb-v1"] => Route::OpenApiV2 { protobuf: true },
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v, rest @ ..] => resource_route(reg, "", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(reg, g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(reg: &Registry, group: &str, version: &str, rest: &[&str]) -> Route {
    if reg.versions(group).iter().all(|v| *v != version) {
        return Route::NotFound;
    }
    if rest.is_empty() {
        return Route::GroupVersion(group.to_string(), version.to_string());
    }
    let namespaced_path =
        rest[0] == "namespaces" && rest.len() >= 3 && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, parts) = if namespaced_path { (rest[1], &rest[2..]) } else { ("", rest) };
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Route::NotFound;
    }
    let Some(info) = reg.lookup(group, version, parts[0]) else {
        return Route::NotFound;
    };
    if namespaced_path && !info.namespaced {
        return Route::NotFound;
    }
    // A namespaced resource's objects are only addressable inside a namespace.
    if info.namespaced && namespace.is_empty() && parts.len() > 1 {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        info: info.clone(),
        namespace: namespace.to_string(),
        name: parts.get(1).map(|s| s.to_string()),
        subresource: parts.get(2).map(|s| s.to_string()),
    })
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Entry point for one request.
pub async fn handle(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let span = info_span!("request", verb = %method, path = %path);
    async move {
        let public = auth::is_public_path(&path);
        match state.auth.authenticate(header_str(&req, header::AUTHORIZATION), &state.store).await {
            Some(user) => {
                req.extensions_mut().insert(user);
            }
            None if public => {}
            None => {
                let e = ApiError::Unauthorized("Unauthorized".into());
                state.metrics.observe(method.as_str(), "", 401, start.elapsed().as_secs_f64());
                return h::error_response(&e);
            }
        }
        let route = route(&state.registry, &path);
        let resource = match &route {
            Route::Resource(r) => r.info.plural.to_string(),
            Route::Proxy(p) => crate::proxy::metrics_resource(p),
            _ => String::new(),
        };
        let resp = match dispatch(&state, route, req).await {
            Ok(r) => r,
            Err(e) => {
                if e.code() >= 500 {
                    tracing::warn!(code = e.code(), error = %e, "Request failed");
                } else {
                    debug!(code = e.code(), error = %e, "Request refused");
                }
                h::error_response(&e)
            }
        };
        state.metrics.observe(method.as_str(), &resource, resp.status().as_u16(), start.elapsed().as_secs_f64());
        resp
    }
    .instrument(span)
    .await
}

async fn dispatch(state: &Arc<State>, route: Route, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let accept = header_str(&req, header::ACCEPT).map(str::to_string);
    let get_only = |m: &Method| {
        if m == Method::GET || m == Method::HEAD { Ok(()) } else { Err(method_not_allowed()) }
    };
    match route {
        Route::Version => {
            get_only(req.method())?;
            Ok(h::respond_value(200, Output::Json, &crate::version::info()))
        }
        Route::Health { endpoint, check } => {
            get_only(req.method())?;
            let query = Query::parse(req.uri().query());
            Ok(health(state, endpoint, check.as_deref(), query.get("verbose").is_some()).await)
        }
        Route::Metrics => {
            get_only(req.method())?;
            Ok(h::respond(200, "text/plain; version=0.0.4; charset=utf-8", state.metrics.encode()))
        }
        Route::OpenIdConfiguration | Route::Jwks => {
            get_only(req.method())?;
            let signer = state.auth.service_accounts.as_ref().ok_or_else(ApiError::path_not_found)?;
            let (doc, content_type) = match route {
                Route::Jwks => (signer.jwks(), "application/jwk-set+json"),
                _ => (signer.openid_configuration(), h::JSON),
            };
            Ok(h::respond(200, content_type, doc.to_string()))
        }
        Route::OpenApiV3Index => {
            get_only(req.method())?;
            Ok(h::respond_value(200, Output::Json, &state.openapi.index()))
        }
        Route::OpenApiV3(p) => {
            get_only(req.method())?;
            let doc = state.openapi.document(&p).ok_or_else(ApiError::path_not_found)?;
            let mut resp = h::respond(200, h::JSON, doc);
            resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("public, immutable"));
            Ok(resp)
        }
        Route::OpenApiV2 { protobuf } => {
            get_only(req.method())?;
            let wants_pb =
                protobuf || accept.as_deref().is_some_and(|a| a.contains("com.github.proto-openapi.spec.v2"));
            Ok(if wants_pb {
                h::respond(200, crate::openapi_v2::PROTOBUF, state.openapi_v2.1.clone())
            } else {
                h::respond(200, h::JSON, state.openapi_v2.0.clone())
            })
        }
        Route::Api => {
            get_only(req.method())?;
            Ok(discovery_response(state, true, accept.as_deref()))
        }
        Route::Apis => {
            get_only(req.method())?;
            Ok(discovery_response(state, false, accept.as_deref()))
        }
        Route::Group(g) => {
            get_only(req.method())?;
            if state.registry.versions(&g).is_empty() {
                return Err(ApiError::path_not_found());
            }
            Ok(h::respond_value(200, Output::Json, &discovery::api_group(&state.registry, &g)))
        }
        Route::GroupVersion(g, v) => {
            get_only(req.method())?;
            let list = discovery::api_resource_list(&state.registry, &g, &v).ok_or_else(ApiError::path_not_found)?;
            Ok(h::respond_value(200, Output::Json, &list))
        }
        Route::Resource(rp) => resource(state, rp, req).await,
        Route::Proxy(pp) => crate::proxy::serve(state, pp, req).await,
        Route::NotFound => Err(ApiError::path_not_found()),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("the server does not allow this method on the requested resource".into())
}

fn discovery_response(state: &State, core: bool, accept: Option<&str>) -> Response<Body> {
    if let Some(version) = accept.and_then(discovery::aggregated_version) {
        let doc = discovery::aggregated(&state.registry, core, version);
        return h::respond(200, discovery::content_type_for(version), serde_json::to_vec(&doc).unwrap_or_default());
    }
    let doc =
        if core { discovery::api_versions(&state.server_address) } else { discovery::api_group_list(&state.registry) };
    h::respond_value(200, Output::Json, &doc)
}

async fn health(state: &State, endpoint: &str, only: Option<&str>, verbose: bool) -> Response<Body> {
    let mut checks: Vec<(&str, Result<(), String>)> = vec![("ping", Ok(()))];
    if endpoint != "livez" {
        let etcd = match tokio::time::timeout(Duration::from_secs(2), state.store.storage.check_health()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        checks.push(("etcd", etcd));
    }
    if endpoint == "readyz" {
        let ready = state.bootstrapped.load(Ordering::Relaxed);
        checks.push(("poststarthook/bootstrap-namespaces", if ready { Ok(()) } else { Err("not finished".into()) }));
    }
    if let Some(name) = only {
        return match checks.iter().find(|(n, _)| *n == name || n.ends_with(&format!("/{name}"))) {
            Some((_, Ok(()))) => h::respond(200, "text/plain; charset=utf-8", "ok"),
            Some((n, Err(e))) => {
                h::respond(500, "text/plain; charset=utf-8", format!("internal server error: {n} check failed: {e}\n"))
            }
            None => h::error_response(&ApiError::path_not_found()),
        };
    }
    let ok = checks.iter().all(|(_, r)| r.is_ok());
    let mut text = String::new();
    if verbose || !ok {
        for (name, r) in &checks {
            match r {
                Ok(()) => text.push_str(&format!("[+]{name} ok\n")),
                Err(_) => text.push_str(&format!("[-]{name} failed: reason withheld\n")),
            }
        }
        text.push_str(&format!("{endpoint} check {}\n", if ok { "passed" } else { "failed" }));
    } else {
        text.push_str("ok");
    }
    h::respond(if ok { 200 } else { 500 }, "text/plain; charset=utf-8", text)
}

/// The verb a method and path mean, as discovery lists them.
fn verb_of(method: &Method, has_name: bool, has_subresource: bool, watch: bool) -> ApiResult<&'static str> {
    Ok(match (method.as_str(), has_name) {
        ("POST", true) if has_subresource => "create",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) => "get",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(method_not_allowed()),
    })
}

/// Longest `fieldManager` upstream accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// The options of a write; `kind` names them in errors (`CreateOptions`, `PatchOptions`, ...).
fn write_options(q: &Query, user_agent: Option<&str>, kind: &str) -> ApiResult<WriteOptions> {
    let invalid = |field: &str, reason: &'static str, detail: String| ApiError::Invalid {
        message: format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {detail}"),
        details: Details { group: "meta.k8s.io".into(), kind: kind.into(), ..Default::default() },
        causes: vec![Cause { reason, message: detail, field: field.into() }],
    };
    let given = q.get("fieldManager").filter(|m| !m.is_empty());
    if let Some(m) = given {
        if m.len() > MAX_FIELD_MANAGER {
            return Err(invalid(
                "fieldManager",
                "FieldValueTooLong",
                format!("Too long: may not be more than {MAX_FIELD_MANAGER} bytes"),
            ));
        }
        if m.chars().any(char::is_control) {
            return Err(invalid(
                "fieldManager",
                "FieldValueInvalid",
                "Invalid value: must only contain printable characters".into(),
            ));
        }
    }
    // Without a fieldManager, the product part of the user agent names the writer, as upstream.
    let manager = given.map(str::to_string).unwrap_or_else(|| {
        let product = user_agent.unwrap_or_default().split('/').next().unwrap_or_default();
        let product: String = product.chars().filter(|c| !c.is_control()).take(MAX_FIELD_MANAGER).collect();
        if product.is_empty() { "unknown".to_string() } else { product }
    });
    let force = q.optional_flag("force")?;
    Ok(WriteOptions {
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
        dry_run: dry_run(q.all("dryRun"))?,
        field_manager: Some(manager),
        force: force.unwrap_or(false),
    })
}

/// Server-side apply needs a named manager; `force` means nothing to other patches.
fn check_patch_options(q: &Query, kind: &PatchKind, opts: &WriteOptions) -> ApiResult<()> {
    let invalid = |field: &str, reason: &'static str, detail: &str| ApiError::Invalid {
        message: format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}"),
        details: Details { group: "meta.k8s.io".into(), kind: "PatchOptions".into(), ..Default::default() },
        causes: vec![Cause { reason, message: detail.into(), field: field.into() }],
    };
    let named = q.get("fieldManager").is_some_and(|m| !m.is_empty());
    match kind {
        PatchKind::Apply if !named => {
            Err(invalid("fieldManager", "FieldValueRequired", "Required value: is required for apply patch"))
        }
        PatchKind::Apply => Ok(()),
        _ if q.get("force").is_some() && opts.force => {
            Err(invalid("force", "FieldValueForbidden", "Forbidden: may not be specified for non-apply patch"))
        }
        _ => Ok(()),
    }
}

fn dry_run(values: Vec<&str>) -> ApiResult<bool> {
    let mut dry = false;
    for v in values {
        match v {
            "All" => dry = true,
            "" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                )));
            }
        }
    }
    Ok(dry)
}

fn selectors(info: &ResourceInfo, q: &Query) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), info)?,
    })
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(
            ApiError::RequestEntityTooLarge(format!("the request body exceeds the limit of {MAX_BODY_BYTES} bytes")),
        ),
        Err(e) => Err(ApiError::BadRequest(format!("reading the request body: {e}"))),
    }
}

async fn resource(state: &Arc<State>, rp: ResourcePath, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let q = Query::parse(req.uri().query());
    let info = rp.info.clone();
    let ns = rp.namespace.as_str();
    let watch = q.flag("watch")?;
    let verb = verb_of(req.method(), rp.name.is_some(), rp.subresource.is_some(), watch)?;
    match &rp.subresource {
        None => {
            if !info.verbs.contains(&verb) {
                return Err(method_not_allowed());
            }
            if info.namespaced && ns.is_empty() && !matches!(verb, "list" | "watch") {
                return Err(method_not_allowed());
            }
        }
        Some(sub) => {
            let Some(s) = info.subresource(sub) else {
                return Err(ApiError::path_not_found());
            };
            if !s.verbs.contains(&verb) {
                return Err(method_not_allowed());
            }
        }
    }
    if info.group == "metrics.k8s.io" {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?;
        let v = crate::metrics_api::serve(state, info.plural, ns, rp.name.as_deref(), &labels).await?;
        return Ok(h::respond_value(200, Output::Json, &v));
    }
    if let Some(kind @ ("log" | "exec" | "attach" | "portforward")) = rp.subresource.as_deref()
        && info.group.is_empty()
        && info.plural == "pods"
    {
        let name = rp.name.clone().unwrap_or_default();
        return crate::podproxy::pod_stream(state, ns, &name, kind, &q, req).await;
    }
    let include = IncludeObject::parse(q.get("includeObject"))?;
    let reads = matches!(verb, "get" | "list" | "watch");
    let output = h::negotiate(header_str(&req, header::ACCEPT), reads, include)?;
    let content_type = header_str(&req, header::CONTENT_TYPE).map(str::to_string);
    let user_agent = header_str(&req, header::USER_AGENT).map(str::to_string);
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.as_deref();
    let store = &state.store;
    if info.ephemeral && verb == "create" {
        let user = req.extensions().get::<User>().cloned().unwrap_or_default();
        let format = codec::object_body_format(content_type.as_deref())?;
        let body = read_body(req).await?;
        let decoded = codec::decode_body(&body, format)?;
        let obj = store.normalize_request(&info, decoded)?;
        let answer = crate::reviews::review(state, &info, ns, obj, &user).await?;
        return Ok(render_object(&info, Output::Json, &answer, 201));
    }
    if sub == Some("token") && verb == "create" {
        let dry_run = write_options(&q, None, "CreateOptions")?.dry_run;
        let format = codec::object_body_format(content_type.as_deref())?;
        let request = codec::decode_body(&read_body(req).await?, format)?.value;
        let answer = crate::reviews::token_request(state, ns, &name, &request, dry_run).await?;
        return Ok(h::respond_value(201, Output::Json, &answer));
    }
    if let Some(acting @ ("scale" | "binding" | "eviction")) = sub {
        return acting_subresource(store, &info, ns, &name, acting, verb, &q, content_type.as_deref(), req).await;
    }
    match verb {
        "get" => {
            let kv = store.get(&info, ns, &name).await?;
            match output {
                Output::Json => Ok(h::respond(200, h::JSON, codec::render_stored(&kv.value, kv.mod_revision)?)),
                _ => {
                    let obj = codec::decode_stored(&kv.value, kv.mod_revision)?;
                    Ok(render_object(&info, output, &obj, 200))
                }
            }
        }
        "list" => {
            let opts = ListOptions {
                selectors: selectors(&info, &q)?,
                limit: q.number("limit")?.unwrap_or(0).max(0) as usize,
                continue_token: q.get("continue").filter(|c| !c.is_empty()).map(str::to_string),
                resource_version: q.get("resourceVersion").map(str::to_string),
                resource_version_match: q.get("resourceVersionMatch").map(str::to_string),
            };
            if output == Output::Json && opts.limit == 0 && opts.continue_token.is_none() {
                return stream_list(state, info, ns, opts).await;
            }
            let result = store.list(&info, ns, &opts).await?;
            render_list(&info, output, &result)
        }
        "watch" => {
            let timeout = match q.number("timeoutSeconds")? {
                Some(t) if t > 0 => Duration::from_secs(t as u64),
                _ => {
                    use rand::Rng;
                    let base = state.min_request_timeout.as_secs_f64();
                    Duration::from_secs_f64(base * rand::rng().random_range(1.0..2.0))
                }
            };
            let opts = WatchOptions {
                selectors: selectors(&info, &q)?,
                resource_version: q.get("resourceVersion").map(str::to_string),
                allow_bookmarks: q.flag("allowWatchBookmarks")?,
                send_initial_events: q.optional_flag("sendInitialEvents")?,
                timeout,
            };
            let rx = store.watch(info.clone(), ns, opts).await?;
            Ok(watch_response(state, info, output, rx))
        }
        "create" => {
            let wo = write_options(&q, user_agent.as_deref(), "CreateOptions")?;
            let format = codec::object_body_format(content_type.as_deref())?;
            let body = read_body(req).await?;
            let decoded = codec::decode_body(&body, format)?;
            let written = store.create(&info, ns, decoded, &wo).await?;
            let mut resp = render_object(&info, output, &written.object, 201);
            h::add_warnings(&mut resp, &written.warnings);
            Ok(resp)
        }
        "update" => {
            let wo = write_options(&q, user_agent.as_deref(), "UpdateOptions")?;
            let format = codec::object_body_format(content_type.as_deref())?;
            let body = read_body(req).await?;
            let decoded = codec::decode_body(&body, format)?;
            let written = store.update(&info, ns, &name, sub, decoded, &wo).await?;
            let mut resp = render_object(&info, output, &written.object, if written.created { 201 } else { 200 });
            h::add_warnings(&mut resp, &written.warnings);
            Ok(resp)
        }
        "patch" => {
            let wo = write_options(&q, user_agent.as_deref(), "PatchOptions")?;
            let kind = patch_kind(content_type.as_deref())?;
            check_patch_options(&q, &kind, &wo)?;
            let body = read_body(req).await?;
            let written = store.patch(&info, ns, &name, sub, rest::Patch { kind, body: &body }, &wo).await?;
            let mut resp = render_object(&info, output, &written.object, if written.created { 201 } else { 200 });
            h::add_warnings(&mut resp, &written.warnings);
            Ok(resp)
        }
        "delete" | "deletecollection" => {
            let body = read_body(req).await?;
            let opts = delete_options(&q, &body)?;
            let warnings: Vec<String> = Vec::new();
            if verb == "delete" {
                let outcome = store.delete(&info, ns, &name, &opts).await?;
                let mut resp = match outcome {
                    Deleted::Gone(obj) if !info.delete_returns_object => {
                        let details =
                            Details { uid: Some(meta::uid(&obj).to_string()), ..Details::for_resource(&info, &name) };
                        h::respond_value(200, Output::Json, &success_status(&details))
                    }
                    Deleted::Gone(obj) | Deleted::Pending(obj) => render_object(&info, Output::Json, &obj, 200),
                };
                h::add_warnings(&mut resp, &warnings);
                Ok(resp)
            } else {
                let list = ListOptions { selectors: selectors(&info, &q)?, ..Default::default() };
                let deleted = store.delete_collection(&info, ns, &list, &opts).await?;
                let mut body = json!({
                    "kind": info.list_kind,
                    "apiVersion": info.api_version(),
                    "metadata": {},
                    "items": deleted,
                });
                if let Ok(rev) = store.storage.current_revision().await {
                    body["metadata"]["resourceVersion"] = json!(rev.to_string());
                }
                let mut resp = h::respond_value(200, Output::Json, &body);
                h::add_warnings(&mut resp, &warnings);
                Ok(resp)
            }
        }
        _ => Err(method_not_allowed()),
    }
}

fn patch_kind(content_type: Option<&str>) -> ApiResult<PatchKind> {
    match codec::media_type(content_type).as_str() {
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply),
        other => Err(codec::unsupported(
            other,
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ],
        )),
    }
}

/// Subresources that act on their parent instead of storing an object of their own.
#[allow(clippy::too_many_arguments)]
async fn acting_subresource(
    store: &Arc<Store>,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    sub: &str,
    verb: &str,
    q: &Query,
    content_type: Option<&str>,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let user_agent = header_str(&req, header::USER_AGENT).map(str::to_string);
    let opts = write_options(q, user_agent.as_deref(), if verb == "patch" { "PatchOptions" } else { "UpdateOptions" })?;
    let dry_run = opts.dry_run;
    let created = |what: &str| {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201, "details": {"name": name, "kind": what}});
        h::respond_value(201, Output::Json, &status)
    };
    match (sub, verb) {
        ("scale", "get") => Ok(h::respond_value(200, Output::Json, &store.get_scale(info, ns, name).await?)),
        ("scale", "update") => {
            let format = codec::object_body_format(content_type)?;
            let body = codec::decode_body(&read_body(req).await?, format)?.value;
            let scale = store.update_scale(info, ns, name, ScaleChange::Replace(body), &opts).await?;
            Ok(h::respond_value(200, Output::Json, &scale))
        }
        ("scale", "patch") => {
            let kind = patch_kind(content_type)?;
            check_patch_options(q, &kind, &opts)?;
            let body = read_body(req).await?;
            let parsed = ParsedPatch::parse(&rest::Patch { kind, body: &body })?;
            let scale = store.update_scale(info, ns, name, ScaleChange::Patch(parsed), &opts).await?;
            Ok(h::respond_value(200, Output::Json, &scale))
        }
        ("binding", "create") => {
            let format = codec::object_body_format(content_type)?;
            let binding = codec::decode_body(&read_body(req).await?, format)?.value;
            store.bind(info, ns, name, &binding, dry_run).await?;
            Ok(created("binding"))
        }
        ("eviction", "create") => {
            let format = codec::object_body_format(content_type)?;
            let eviction = codec::decode_body(&read_body(req).await?, format)?.value;
            let given = meta::name(&eviction);
            if !given.is_empty() && given != name {
                return Err(ApiError::BadRequest(format!(
                    "name in URL does not match name in Eviction object: {name} != {given}"
                )));
            }
            let opts = parse_delete_options(eviction.get("deleteOptions").unwrap_or(&json!({})), q)?;
            store.evict(info, ns, name, &opts, dry_run).await?;
            Ok(created("eviction"))
        }
        _ => Err(method_not_allowed()),
    }
}

/// DeleteOptions from the body (optional) and the query.
fn delete_options(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("decoding DeleteOptions: {e}")))?
    };
    parse_delete_options(&opts, q)
}

/// A DeleteOptions object (also the `deleteOptions` of an Eviction), with query parameters
/// as fallbacks.
pub fn parse_delete_options(opts: &Value, q: &Query) -> ApiResult<DeleteOptions> {
    let str_at = |p: &str| opts.pointer(p).and_then(Value::as_str).map(str::to_string);
    let mut dry: Vec<String> = opts
        .get("dryRun")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    dry.extend(q.all("dryRun").into_iter().map(String::from));
    let policy =
        str_at("/propagationPolicy").or_else(|| q.get("propagationPolicy").map(String::from)).filter(|p| !p.is_empty());
    let orphan = match opts.get("orphanDependents").and_then(Value::as_bool) {
        Some(b) => Some(b),
        None => q.optional_flag("orphanDependents")?,
    };
    let propagation = match (policy.as_deref(), orphan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "orphanDependents and propagationPolicy cannot both be set; use propagationPolicy".into(),
            ));
        }
        (None, Some(true)) => Propagation::Orphan,
        (None | Some("Background"), _) => Propagation::Background,
        (Some("Foreground"), _) => Propagation::Foreground,
        (Some("Orphan"), _) => Propagation::Orphan,
        (Some(other), _) => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let grace = match opts.get("gracePeriodSeconds") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::Null) | None => q.number("gracePeriodSeconds")?,
        Some(other) => return Err(ApiError::BadRequest(format!("gracePeriodSeconds must be an integer, got {other}"))),
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(ApiError::BadRequest("gracePeriodSeconds must be greater than or equal to 0".into()));
    }
    Ok(DeleteOptions {
        precondition_uid: str_at("/preconditions/uid"),
        precondition_resource_version: str_at("/preconditions/resourceVersion"),
        dry_run: dry_run(dry.iter().map(String::as_str).collect())?,
        grace_period_seconds: grace,
        propagation,
    })
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn render_object(info: &ResourceInfo, output: Output, obj: &Value, status: u16) -> Response<Body> {
    match output {
        Output::Table(include) => {
            let def = table::definition(info);
            let meta = json!({"resourceVersion": meta::meta_str(obj, "resourceVersion")});
            h::respond_value(status, output, &table::table(def, std::slice::from_ref(obj), include, meta))
        }
        Output::PartialMetadata => h::respond_value(status, output, &partial_metadata(obj)),
        other => h::respond_value(status, other, obj),
    }
}

fn render_list(info: &ResourceInfo, output: Output, result: &rest::ListResult) -> ApiResult<Response<Body>> {
    let mut list_meta = json!({"resourceVersion": result.revision.to_string()});
    if let Some(c) = &result.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(r) = result.remaining_item_count {
        list_meta["remainingItemCount"] = json!(r);
    }
    match output {
        Output::Json => Ok(h::respond(200, h::JSON, rest::list_json(info, result)?)),
        Output::Table(include) => {
            let objs = result.items.iter().map(|i| i.value()).collect::<ApiResult<Vec<_>>>()?;
            Ok(h::respond_value(200, output, &table::table(table::definition(info), &objs, include, list_meta)))
        }
        Output::PartialMetadata => {
            let items =
                result.items.iter().map(|i| i.value().map(|v| partial_metadata(&v))).collect::<ApiResult<Vec<_>>>()?;
            let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items});
            Ok(h::respond_value(200, output, &list))
        }
        Output::Yaml => {
            let items = result.items.iter().map(|i| i.value()).collect::<ApiResult<Vec<_>>>()?;
            let list = json!({"kind": info.list_kind, "apiVersion": info.api_version(), "metadata": list_meta, "items": items});
            Ok(h::respond_value(200, output, &list))
        }
    }
}

/// A JSON LIST without a limit, read from storage in chunks of one snapshot and sent as each
/// chunk arrives: reading the next chunk overlaps encrypting and sending the last, and memory
/// stays at a chunk rather than the whole collection. A storage failure after the first chunk
/// aborts the response rather than ending it early.
async fn stream_list(
    state: &Arc<State>,
    info: Arc<ResourceInfo>,
    ns: &str,
    opts: ListOptions,
) -> ApiResult<Response<Body>> {
    let store = state.store.clone();
    let chunk_size = state.list_chunk.max(1);
    let first = store.list(&info, ns, &ListOptions { limit: chunk_size, ..opts.clone() }).await?;
    let Some(mut token) = first.continue_token.clone() else {
        let whole = rest::ListResult { continue_token: None, remaining_item_count: None, ..first };
        return Ok(h::respond(200, h::JSON, rest::list_json(&info, &whole)?));
    };
    let mut head = rest::list_header(&info, first.revision, None, None);
    rest::render_items(&mut head, &first.items, true)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, h::BoxError>>(2);
    let ns = ns.to_string();
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        loop {
            let page = ListOptions {
                selectors: opts.selectors.clone(),
                limit: chunk_size,
                continue_token: Some(token.clone()),
                ..Default::default()
            };
            let page = match store.list(&info, &ns, &page).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(resource = %info.plural, error = %e, "Streaming list failed after the first chunk");
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            let mut chunk = Vec::with_capacity(page.items.iter().map(|i| i.kv.value.len() + 32).sum::<usize>() + 2);
            if let Err(e) = rest::render_items(&mut chunk, &page.items, false) {
                let _ = tx.send(Err(Box::new(e))).await;
                return;
            }
            match page.continue_token {
                Some(next) => token = next,
                None => {
                    chunk.extend_from_slice(b"]}");
                    let _ = tx.send(Ok(Bytes::from(chunk))).await;
                    return;
                }
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map(Frame::data));
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(h::JSON));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

/// One watch event as a line of the stream.
pub fn encode_watch_item(info: &ResourceInfo, output: Output, item: WatchItem) -> Bytes {
    let event = match item {
        WatchItem::Event(t, obj) => {
            let object = match output {
                Output::Table(include) => {
                    let meta = json!({"resourceVersion": meta::meta_str(&obj, "resourceVersion")});
                    table::table(table::definition(info), std::slice::from_ref(&obj), include, meta)
                }
                Output::PartialMetadata => partial_metadata(&obj),
                _ => obj,
            };
            json!({"type": t.as_str(), "object": object})
        }
        WatchItem::Bookmark { revision, initial_events_end } => {
            let mut metadata = json!({"resourceVersion": revision.to_string()});
            if initial_events_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let object = match output {
                Output::Table(_) => {
                    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": [], "rows": []})
                }
                _ => {
                    json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": metadata})
                }
            };
            json!({"type": "BOOKMARK", "object": object})
        }
        WatchItem::Error(e) => json!({"type": "ERROR", "object": e.to_status()}),
    };
    let mut line = serde_json::to_vec(&event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Decrements the open-watch gauge when the stream is dropped (client gone or watch over).
struct WatchGuard(prometheus_client::metrics::gauge::Gauge);
impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn watch_response(
    state: &Arc<State>,
    info: Arc<ResourceInfo>,
    output: Output,
    rx: tokio::sync::mpsc::Receiver<WatchItem>,
) -> Response<Body> {
    let output = if output == Output::Yaml { Output::Json } else { output };
    state.metrics.watches.inc();
    let guard = WatchGuard(state.metrics.watches.clone());
    let shutdown = state.shutdown.clone();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .take_until(async move { shutdown.cancelled().await })
        .map(move |item| {
            let _ = &guard;
            Ok::<_, h::BoxError>(Frame::data(encode_watch_item(&info, output, item)))
        });
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(output.content_type()));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(route: Route) -> ResourcePath {
        match route {
            Route::Resource(r) => r,
            other => panic!("not a resource route: {other:?}"),
        }
    }

    #[test]
    fn routes_follow_upstream_request_info_rules() {
        let reg = Registry::builtin();
        let r = resource(route(&reg, "/api/v1/namespaces/default/pods/web/status"));
        assert_eq!(
            (r.info.plural, r.namespace.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("pods", "default", Some("web"), Some("status"))
        );
        let r = resource(route(&reg, "/api/v1/namespaces/team-a"));
        assert_eq!((r.info.plural, r.namespace.as_str(), r.name.as_deref()), ("namespaces", "", Some("team-a")));
        let r = resource(route(&reg, "/api/v1/namespaces/team-a/finalize"));
        assert_eq!(
            (r.info.plural, r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("team-a"), Some("finalize"))
        );
        let r = resource(route(&reg, "/api/v1/pods"));
        assert_eq!((r.info.plural, r.namespace.as_str(), r.name.as_deref()), ("pods", "", None));
        let r = resource(route(&reg, "/apis/apps/v1/namespaces/x/deployments/"));
        assert_eq!((r.info.plural, r.namespace.as_str()), ("deployments", "x"));
        let r = resource(route(&reg, "/api/v1/nodes/n1"));
        assert_eq!((r.info.plural, r.name.as_deref()), ("nodes", Some("n1")));
        for p in [
            "/api/v1/pods/web",
            "/api/v1/namespaces/x/nodes",
            "/apis/apps/v2/deployments",
            "/api/v1/widgets",
            "/apis/apps/v1/namespaces/x/deployments/a/b/c",
            "/nope",
        ] {
            assert!(matches!(route(&reg, p), Route::NotFound), "{p}");
        }
        assert!(matches!(route(&reg, "/version/"), Route::Version));
        assert!(matches!(route(&reg, "/readyz/etcd"), Route::Health { endpoint: "readyz", .. }));
        assert!(matches!(route(&reg, "/apis/apps/v1"), Route::GroupVersion(..)));
    }

    #[test]
    fn verbs_from_method_and_shape() {
        assert_eq!(verb_of(&Method::GET, false, false, true).expect("watch"), "watch");
        assert_eq!(verb_of(&Method::DELETE, false, false, false).expect("dc"), "deletecollection");
        assert_eq!(verb_of(&Method::POST, true, false, false).expect_err("405").code(), 405);
        assert_eq!(verb_of(&Method::POST, true, true, false).expect("subresource create"), "create");
    }

    #[test]
    fn delete_options_read_body_and_query() {
        let q = Query::parse(Some("dryRun=All&gracePeriodSeconds=7"));
        let o =
            delete_options(&q, br#"{"propagationPolicy":"Background","preconditions":{"uid":"u1"}}"#).expect("parses");
        assert!(o.dry_run);
        assert_eq!(o.precondition_uid.as_deref(), Some("u1"));
        assert_eq!(o.grace_period_seconds, Some(7), "the query fills what the body leaves out");
        assert_eq!(o.propagation, Propagation::Background);
        let o = delete_options(&Query::default(), br#"{"propagationPolicy":"Foreground","gracePeriodSeconds":0}"#)
            .expect("parses");
        assert_eq!((o.propagation, o.grace_period_seconds), (Propagation::Foreground, Some(0)));
        assert_eq!(
            delete_options(&Query::default(), br#"{"orphanDependents":true}"#).expect("legacy").propagation,
            Propagation::Orphan
        );
        let both = br#"{"orphanDependents":true,"propagationPolicy":"Background"}"#;
        assert_eq!(delete_options(&Query::default(), both).expect_err("both").code(), 400);
        assert_eq!(
            delete_options(&Query::default(), br#"{"gracePeriodSeconds":-1}"#).expect_err("negative").code(),
            400
        );
        assert_eq!(delete_options(&Query::default(), b"{").expect_err("bad").code(), 400);
        assert_eq!(
            delete_options(&Query::default(), br#"{"propagationPolicy":"Sometimes"}"#).expect_err("bad").code(),
            400
        );
    }

    #[test]
    fn watch_lines_carry_kind_and_bookmarks_their_revision() {
        let reg = Registry::builtin();
        let cm = reg.by_plural("", "configmaps").expect("cm");
        let line = encode_watch_item(cm, Output::Json, WatchItem::Bookmark { revision: 42, initial_events_end: true });
        let v: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["kind"], "ConfigMap");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(v["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
        assert_eq!(line.last(), Some(&b'\n'));
        let err = encode_watch_item(cm, Output::Json, WatchItem::Error(ApiError::expired("too old")));
        let v: Value = serde_json::from_slice(&err).expect("json");
        assert_eq!((v["type"].as_str(), v["object"]["code"].as_i64()), (Some("ERROR"), Some(410)));
    }
}
