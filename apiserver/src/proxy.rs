//! `pods/proxy`, `services/proxy` and `nodes/proxy`: any HTTP method on
//! `/api/v1/namespaces/<ns>/{pods,services}/<id>/proxy[/<path>]` or
//! `/api/v1/nodes/<id>/proxy[/<path>]` is relayed to the backend the id names, and the backend's
//! answer (status, headers, body) comes back as it is.
//!
//! The id is `[scheme:]name[:port]` as upstream splits it (`SplitSchemeNamePort`): the scheme
//! is `http` (default) or `https`, the port a number or a port name (a container port of the
//! pod, a port of the Service). A pod is reached at its IP; a Service at a ready endpoint of its
//! EndpointSlices (else its Endpoints), picked at random as upstream does; a node at its kubelet
//! with the apiserver's kubelet client certificate, or at another port of its address.
//!
//! Invariants: the rest of the path is relayed as the client sent it (still percent-encoded,
//! trailing slash kept; a bare `proxy` means `/`), the query too; the client's `Authorization`
//! (the apiserver's credential, not the backend's) and hop-by-hop headers are not. ExternalName
//! Services are refused rather than followed: their names point outside the cluster, and test
//! traffic must never leave the machine. A backend that cannot be reached is a 503 `Status`
//! with a one-line message; a malformed id is a 400.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tracing::debug;

use crate::error::{ApiError, ApiResult};
use crate::handler::State;
use crate::http::{Body, BoxError, percent_decode};
use crate::resources::{Registry, ResourceInfo};
use crate::rest::ListOptions;
use crate::selectors::{LabelSelector, Selectors};

/// How long a backend gets to accept the connection (and finish the TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request path that addresses a proxy subresource.
#[derive(Debug, Clone)]
pub struct ProxyPath {
    pub info: Arc<ResourceInfo>,
    /// Empty for nodes.
    pub namespace: String,
    /// The `[scheme:]name[:port]` segment, percent-decoded.
    pub id: String,
    /// What follows `proxy`, raw: `""` for `.../proxy`, `/` for `.../proxy/`, `/a/b` for
    /// `.../proxy/a/b`.
    pub path: String,
    /// The request path up to and including `proxy`: absolute redirects of the backend are
    /// rewritten under it.
    pub prefix: String,
}

/// Recognizes `/api/v1/namespaces/<ns>/{pods,services}/<id>/proxy[/...]` and
/// `/api/v1/nodes/<id>/proxy[/...]`; anything else is left to the ordinary routing.
pub fn proxy_route(reg: &Registry, path: &str) -> Option<ProxyPath> {
    let rest = path.strip_prefix("/api/v1/")?;
    let (namespace, rest) = match rest.strip_prefix("namespaces/") {
        Some(r) => {
            let (ns, r) = r.split_once('/')?;
            (percent_decode(ns, false), r)
        }
        None => (String::new(), rest),
    };
    let (plural, rest) = rest.split_once('/')?;
    match (namespace.is_empty(), plural) {
        (false, "pods" | "services") | (true, "nodes") => {}
        _ => return None,
    }
    let (id, rest) = rest.split_once('/')?;
    let tail = match rest.strip_prefix("proxy") {
        Some(t) if t.is_empty() || t.starts_with('/') => t,
        _ => return None,
    };
    let id = percent_decode(id, false);
    if id.is_empty() {
        return None;
    }
    let info = reg.lookup("", "v1", plural)?.clone();
    Some(ProxyPath { info, namespace, id, path: tail.to_string(), prefix: path[..path.len() - tail.len()].to_string() })
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A proxy id split as upstream's `SplitSchemeNamePort`: `name`, `name:port` or
/// `scheme:name:port`, the scheme empty, `http` or `https`, the name never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `None` when the id gave none.
    pub scheme: Option<Scheme>,
    pub name: String,
    /// Empty when the id gave none.
    pub port: String,
}

pub fn split_scheme_name_port(id: &str) -> Option<Target> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    let scheme = match scheme {
        "" => None,
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some(Target { scheme, name: name.to_string(), port: port.to_string() })
}

/// Where a proxied request goes.
#[derive(Debug, Clone)]
struct Backend {
    scheme: Scheme,
    ip: String,
    port: u16,
    /// TLS with the kubelet client certificate (node proxy to the kubelet).
    kubelet: bool,
    /// What the backend is, for messages: `pod "web-1"`.
    what: String,
}

fn parse_target(pp: &ProxyPath) -> ApiResult<Target> {
    split_scheme_name_port(&pp.id).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "invalid {} proxy id \"{}\": want name, name:port or scheme:name:port with scheme http or https",
            pp.info.singular, pp.id
        ))
    })
}

fn parse_port(port: &str, what: &str) -> ApiResult<Option<u16>> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(ApiError::BadRequest(format!("invalid port \"{port}\" for {what}"))),
    }
}

async fn get_object(state: &State, plural: &str, ns: &str, name: &str) -> ApiResult<Value> {
    let info = state
        .registry
        .by_plural("", plural)
        .cloned()
        .ok_or_else(|| ApiError::Internal(format!("{plural} not served")))?;
    let kv = state.store.get(&info, ns, name).await?;
    serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The container port a pod proxy id names: a number as it is, a name looked up in the pod's
/// containers; none given means the first declared port (else 80 / 443), as upstream picks it.
pub fn pod_port(pod: &Value, port: &str, scheme: Scheme) -> ApiResult<u16> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let what = format!("pod \"{name}\"");
    if let Some(p) = parse_port(port, &what)? {
        return Ok(p);
    }
    let declared = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default());
    let mut declared = declared.filter_map(|p| {
        let number = p["containerPort"].as_u64().and_then(|n| u16::try_from(n).ok())?;
        Some((p["name"].as_str().unwrap_or("").to_string(), number))
    });
    if port.is_empty() {
        let default = if scheme == Scheme::Https { 443 } else { 80 };
        return Ok(declared.next().map_or(default, |(_, n)| n));
    }
    declared
        .find(|(n, _)| n == port)
        .map(|(_, p)| p)
        .ok_or_else(|| ApiError::ServiceUnavailable(format!("no container port named \"{port}\" found for {what}")))
}

async fn pod_backend(state: &State, ns: &str, target: &Target) -> ApiResult<Backend> {
    let pod = get_object(state, "pods", ns, &target.name).await?;
    let scheme = target.scheme.unwrap_or(Scheme::Http);
    let what = format!("pod \"{}\"", target.name);
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or("");
    if ip.is_empty() || matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::ServiceUnavailable(format!(
            "no endpoints available for {what}: it is not running (phase {})",
            if phase.is_empty() { "unknown" } else { phase }
        )));
    }
    let port = pod_port(&pod, &target.port, scheme)?;
    Ok(Backend { scheme, ip: ip.to_string(), port, kubelet: false, what })
}

/// The Service port a services proxy id names (its name or number; none given means the only
/// port, or the unnamed one), as `(name, port)`.
pub fn service_port(svc: &Value, port: &str) -> ApiResult<(String, u16)> {
    let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let ports: Vec<(String, u16)> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = p["port"].as_u64().and_then(|n| u16::try_from(n).ok())?;
            Some((p["name"].as_str().unwrap_or("").to_string(), number))
        })
        .collect();
    let found = ports
        .iter()
        .find(|(n, number)| n == port || number.to_string() == port)
        .or_else(|| if port.is_empty() && ports.len() == 1 { ports.first() } else { None });
    found
        .cloned()
        .ok_or_else(|| ApiError::ServiceUnavailable(format!("no service port \"{port}\" found for service \"{name}\"")))
}

/// Ready `(ip, port)` endpoints for the Service port named `port_name` in EndpointSlices.
pub fn slice_endpoints(slices: &[Value], port_name: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice["ports"].as_array().into_iter().flatten().find_map(|p| {
            (p["name"].as_str().unwrap_or("") == port_name)
                .then(|| p["port"].as_u64())?
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            if ep.pointer("/conditions/ready").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            if let Some(ip) = ep["addresses"].as_array().and_then(|a| a.first()).and_then(Value::as_str) {
                out.push((ip.to_string(), port));
            }
        }
    }
    out
}

/// Ready `(ip, port)` endpoints for the Service port named `port_name` in an Endpoints object.
pub fn endpoints_addresses(endpoints: &Value, port_name: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let Some(port) = subset["ports"].as_array().into_iter().flatten().find_map(|p| {
            (p["name"].as_str().unwrap_or("") == port_name)
                .then(|| p["port"].as_u64())?
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for a in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = a["ip"].as_str() {
                out.push((ip.to_string(), port));
            }
        }
    }
    out
}

async fn service_backend(state: &State, ns: &str, target: &Target) -> ApiResult<Backend> {
    let svc = get_object(state, "services", ns, &target.name).await?;
    let what = format!("service \"{}\"", target.name);
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Err(ApiError::BadRequest(format!("{what} is of type ExternalName: its name is not proxied")));
    }
    let (port_name, _) = service_port(&svc, &target.port)?;
    let mut candidates = Vec::new();
    if let Some(info) = state.registry.by_plural("discovery.k8s.io", "endpointslices") {
        let opts = ListOptions {
            selectors: Selectors {
                labels: LabelSelector::parse(&format!("kubernetes.io/service-name={}", target.name))?,
                ..Default::default()
            },
            ..Default::default()
        };
        let slices: Vec<Value> = state
            .store
            .list(info, ns, &opts)
            .await?
            .items
            .iter()
            .filter_map(|i| serde_json::from_slice(&i.kv.value).ok())
            .collect();
        candidates = slice_endpoints(&slices, &port_name);
    }
    if candidates.is_empty() {
        match get_object(state, "endpoints", ns, &target.name).await {
            Ok(ep) => candidates = endpoints_addresses(&ep, &port_name),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if candidates.is_empty() {
        return Err(ApiError::ServiceUnavailable(format!("no endpoints available for {what}")));
    }
    let (ip, port) = {
        use rand::Rng;
        candidates.swap_remove(rand::rng().random_range(0..candidates.len()))
    };
    Ok(Backend { scheme: target.scheme.unwrap_or(Scheme::Http), ip, port, kubelet: false, what })
}

async fn node_backend(state: &State, target: &Target) -> ApiResult<Backend> {
    let node = get_object(state, "nodes", "", &target.name).await?;
    let what = format!("node \"{}\"", target.name);
    let (ip, kubelet_port) = crate::podproxy::kubelet_address(&node)
        .ok_or_else(|| ApiError::ServiceUnavailable(format!("{what} reports no address")))?;
    let port = match parse_port(&target.port, &what)? {
        Some(p) => p,
        None if target.port.is_empty() => kubelet_port,
        None => return Err(ApiError::BadRequest(format!("invalid port \"{}\" for {what}", target.port))),
    };
    if port == kubelet_port {
        return Ok(Backend { scheme: Scheme::Https, ip, port, kubelet: true, what });
    }
    Ok(Backend { scheme: target.scheme.unwrap_or(Scheme::Http), ip, port, kubelet: false, what })
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The end-to-end headers of `from`: hop-by-hop ones (and those `Connection` lists) dropped,
/// unless `upgrade`, which keeps `Connection` and `Upgrade` so the backend sees the upgrade.
pub fn end_to_end(from: &HeaderMap, upgrade: bool) -> HeaderMap {
    let listed: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (k, v) in from {
        let name = k.as_str();
        let hop = HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name);
        let kept_for_upgrade = upgrade && (k == header::CONNECTION || k == header::UPGRADE);
        if !hop || kept_for_upgrade {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// A backend's absolute-path redirect, moved under the proxy prefix so the client follows it
/// through the proxy (upstream's proxy transport does the same).
pub fn rewrite_location(location: &str, prefix: &str) -> Option<String> {
    (location.starts_with('/') && !location.starts_with("//")).then(|| format!("{prefix}{location}"))
}

async fn connect(
    backend: &Backend,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, String> {
    let addr = format!("{}:{}", backend.ip, backend.port);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("dial tcp {addr}: connect: {}", e.kind())),
        Err(_) => return Err(format!("dial tcp {addr}: timed out after {}s", CONNECT_TIMEOUT.as_secs())),
    };
    macro_rules! handshake {
        ($io:expr) => {{
            let (sender, conn) = hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new($io))
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok(sender)
        }};
    }
    match tls {
        None => handshake!(tcp),
        Some(tls) => {
            let server_name = ServerName::try_from(backend.ip.clone()).map_err(|e| e.to_string())?;
            let stream = match tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("TLS handshake with {addr}: {e}")),
                Err(_) => return Err(format!("TLS handshake with {addr}: timed out")),
            };
            handshake!(stream)
        }
    }
}

/// Serves one proxy request: resolves the backend, relays the request and streams the answer.
pub async fn serve(state: &Arc<State>, pp: ProxyPath, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let target = parse_target(&pp)?;
    let backend = match pp.info.plural {
        "pods" => pod_backend(state, &pp.namespace, &target).await?,
        "services" => service_backend(state, &pp.namespace, &target).await?,
        _ => node_backend(state, &target).await?,
    };
    let tls = match (backend.kubelet, backend.scheme) {
        (true, _) => Some(state.kubelet_tls.clone().ok_or_else(|| {
            ApiError::ServiceUnavailable(
                "no kubelet client certificate is configured (--kubelet-client-certificate)".into(),
            )
        })?),
        (false, Scheme::Https) => {
            Some(crate::podproxy::insecure_tls().map_err(|e| ApiError::Internal(format!("TLS client config: {e}")))?)
        }
        (false, Scheme::Http) => None,
    };
    let (mut parts, body) = req.into_parts();
    let upgrade = is_upgrade(&parts.headers);
    let path = if pp.path.is_empty() { "/" } else { pp.path.as_str() };
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut headers = end_to_end(&parts.headers, upgrade);
    headers.remove(header::AUTHORIZATION);
    let host = HeaderValue::from_str(&format!("{}:{}", backend.ip, backend.port))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    headers.insert(header::HOST, host);
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid proxy path \"{uri}\": {e}")))?;
    *up.headers_mut() = headers;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    debug!(backend = %backend.what, ip = %backend.ip, port = backend.port, path = %uri, "Relayed proxy request");
    // Upstream's words: clients and scripts match on "error trying to reach service".
    let unreachable = |e: String| {
        debug!(backend = %backend.what, error = %e, "Proxy backend unreachable");
        ApiError::ServiceUnavailable(format!("error trying to reach service: {e}"))
    };
    let mut sender = connect(&backend, tls).await.map_err(unreachable)?;
    let mut resp = sender.send_request(up).await.map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let mut out_headers = end_to_end(resp.headers(), status == StatusCode::SWITCHING_PROTOCOLS);
    if status.is_redirection()
        && let Some(l) = out_headers.get(header::LOCATION).and_then(|v| v.to_str().ok())
        && let Some(moved) = rewrite_location(l, &pp.prefix)
        && let Ok(v) = HeaderValue::from_str(&moved)
    {
        out_headers.insert(header::LOCATION, v);
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        if let Some(client_upgrade) = client_upgrade {
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else { return };
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
            });
        }
    }
    let body = resp.into_body().map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// The name under which `metrics` counts a proxy request: `pods/proxy`.
pub fn metrics_resource(pp: &ProxyPath) -> String {
    format!("{}/proxy", pp.info.plural)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(path: &str) -> Option<(String, String, String, String, String)> {
        let reg = Registry::builtin();
        proxy_route(&reg, path).map(|p| (p.info.plural.to_string(), p.namespace, p.id, p.path, p.prefix))
    }

    #[test]
    fn proxy_paths_split_into_object_and_relayed_path() {
        let p = "/api/v1/namespaces/ns/pods/web/proxy";
        assert_eq!(route(p), Some(("pods".into(), "ns".into(), "web".into(), "".into(), p.into())));
        assert_eq!(
            route("/api/v1/namespaces/ns/pods/web/proxy/"),
            Some(("pods".into(), "ns".into(), "web".into(), "/".into(), p.into()))
        );
        let svc = "/api/v1/namespaces/default/services/https:web:tls/proxy";
        assert_eq!(
            route(&format!("{svc}/a/b%2Fc/")),
            Some(("services".into(), "default".into(), "https:web:tls".into(), "/a/b%2Fc/".into(), svc.into()))
        );
        assert_eq!(
            route("/api/v1/nodes/n1/proxy/logs/"),
            Some(("nodes".into(), "".into(), "n1".into(), "/logs/".into(), "/api/v1/nodes/n1/proxy".into()))
        );
        assert_eq!(route("/api/v1/namespaces/ns/pods/web%3A8080/proxy").map(|r| r.2), Some("web:8080".into()));
    }

    #[test]
    fn other_paths_are_not_proxy_routes() {
        for p in [
            "/api/v1/namespaces/ns/pods/web",
            "/api/v1/namespaces/ns/pods/web/log",
            "/api/v1/namespaces/ns/pods/web/proxyx",
            "/api/v1/namespaces/ns/pods//proxy",
            "/api/v1/namespaces/ns/configmaps/x/proxy",
            "/api/v1/nodes",
            "/api/v1/pods/web/proxy",
            "/api/v1/namespaces/ns/nodes/n1/proxy",
            "/apis/apps/v1/namespaces/ns/deployments/d/proxy",
            "/api/v2/nodes/n/proxy",
        ] {
            assert_eq!(route(p), None, "{p}");
        }
    }

    #[test]
    fn ids_split_as_scheme_name_port() {
        let t = |s: Option<Scheme>, n: &str, p: &str| Some(Target { scheme: s, name: n.into(), port: p.into() });
        assert_eq!(split_scheme_name_port("web"), t(None, "web", ""));
        assert_eq!(split_scheme_name_port("web:8080"), t(None, "web", "8080"));
        assert_eq!(split_scheme_name_port("web:http"), t(None, "web", "http"));
        assert_eq!(split_scheme_name_port("https:web:443"), t(Some(Scheme::Https), "web", "443"));
        assert_eq!(split_scheme_name_port("http:web:"), t(Some(Scheme::Http), "web", ""));
        for bad in ["", ":80", "ftp:web:21", "https::443", "a:b:c:d"] {
            assert_eq!(split_scheme_name_port(bad), None, "{bad}");
        }
    }

    fn pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"},
            {"name": "b", "ports": [{"name": "http", "containerPort": 8080}, {"name": "udp", "containerPort": 8081}]}
        ]}})
    }

    #[test]
    fn pod_ports_resolve_by_number_name_or_first_declared() {
        assert_eq!(pod_port(&pod(), "9000", Scheme::Http).ok(), Some(9000));
        assert_eq!(pod_port(&pod(), "udp", Scheme::Http).ok(), Some(8081));
        assert_eq!(pod_port(&pod(), "", Scheme::Http).ok(), Some(8080));
        assert_eq!(pod_port(&json!({"spec": {"containers": [{}]}}), "", Scheme::Https).ok(), Some(443));
        assert!(matches!(pod_port(&pod(), "nope", Scheme::Http), Err(ApiError::ServiceUnavailable(_))));
        assert!(matches!(pod_port(&pod(), "70000", Scheme::Http), Err(ApiError::BadRequest(_))));
        assert!(matches!(pod_port(&pod(), "0", Scheme::Http), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn service_ports_resolve_by_name_number_or_the_only_one() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"name": "http", "port": 80}, {"name": "admin", "port": 81}
        ]}});
        assert_eq!(service_port(&svc, "admin").ok(), Some(("admin".into(), 81)));
        assert_eq!(service_port(&svc, "80").ok(), Some(("http".into(), 80)));
        assert!(service_port(&svc, "").is_err());
        let single = json!({"spec": {"ports": [{"name": "web", "port": 80}]}});
        assert_eq!(service_port(&single, "").ok(), Some(("web".into(), 80)));
        let unnamed = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(service_port(&unnamed, "").ok(), Some(("".into(), 80)));
    }

    #[test]
    fn only_ready_endpoints_of_the_named_port_are_candidates() {
        let slices = vec![
            json!({"ports": [{"name": "http", "port": 8080}], "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.7"]}
            ]}),
            json!({"ports": [{"name": "other", "port": 9}], "endpoints": [{"addresses": ["10.244.0.8"]}]}),
        ];
        assert_eq!(
            slice_endpoints(&slices, "http"),
            vec![("10.244.0.5".to_string(), 8080), ("10.244.0.7".to_string(), 8080)]
        );
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.244.0.9"}], "notReadyAddresses": [{"ip": "10.244.0.10"}],
            "ports": [{"port": 8080}]}]});
        assert_eq!(endpoints_addresses(&ep, ""), vec![("10.244.0.9".to_string(), 8080)]);
        assert!(endpoints_addresses(&ep, "http").is_empty());
    }

    #[test]
    fn hop_by_hop_headers_are_not_relayed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-custom", HeaderValue::from_static("yes"));
        let out = end_to_end(&h, false);
        assert_eq!(out.len(), 2);
        assert!(out.contains_key(header::CONTENT_TYPE) && out.contains_key("x-custom"));
        let mut up = HeaderMap::new();
        up.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        up.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&up));
        assert_eq!(end_to_end(&up, true).len(), 2);
    }

    #[test]
    fn absolute_redirects_stay_under_the_proxy() {
        let prefix = "/api/v1/namespaces/ns/pods/web/proxy";
        assert_eq!(rewrite_location("/login?x=1", prefix), Some(format!("{prefix}/login?x=1")));
        assert_eq!(rewrite_location("http://elsewhere/", prefix), None);
        assert_eq!(rewrite_location("//elsewhere/", prefix), None);
        assert_eq!(rewrite_location("relative", prefix), None);
    }
}
