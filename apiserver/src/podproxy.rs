//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the apiserver finds the pod's
//! node and asks that node's kubelet over HTTPS with its client certificate. Logs stream back as
//! chunked text; exec, attach and port-forward are upgrade requests (WebSocket or SPDY) whose
//! connection is spliced through to the kubelet once it answers 101.
//!
//! Like upstream's default, the kubelet's serving certificate is not verified (kubelets make
//! their own); the kubelet verifies the apiserver's client certificate against the cluster CA.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handler::State;
use crate::http::{Body, Query};

/// Accepts any kubelet serving certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS for talking to kubelets with the client certificate in `cert`/`key`.
pub fn kubelet_tls(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let chain = rustls_pemfile::certs(&mut &std::fs::read(cert)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &std::fs::read(key)?[..])?
        .ok_or_else(|| anyhow::anyhow!("no private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// TLS that accepts any server certificate and presents none: `https:` pod and service proxy
/// backends, whose certificates the apiserver has no way to check (upstream skips it too).
pub fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The container a log/exec/attach request means, as upstream picks it.
fn pick_container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let spec = &pod["spec"];
    let app = names(spec.get("containers"));
    let all: Vec<String> = app
        .iter()
        .cloned()
        .chain(names(spec.get("initContainers")))
        .chain(names(spec.get("ephemeralContainers")))
        .collect();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None => {
            if let Some(d) =
                pod.pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container").and_then(Value::as_str)
                && app.iter().any(|n| n == d)
            {
                return Ok(d.to_string());
            }
            match app.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    app.join(" ")
                ))),
            }
        }
    }
}

/// An HTTP/1.1 connection (upgrades allowed) to the kubelet at `ip:port`, over TLS with the
/// apiserver's kubelet client certificate.
pub async fn kubelet_connection(
    tls: Arc<rustls::ClientConfig>,
    ip: &str,
    port: u16,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect((ip, port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    let server_name = ServerName::try_from(ip.to_string()).map_err(|e| e.to_string())?;
    let stream =
        tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// Where the node's kubelet listens: its InternalIP (else first address) and announced port.
pub fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addrs.first())
        .and_then(|a| a["address"].as_str())?
        .to_string();
    let port =
        node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250) as u16;
    Some((ip, port))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn pod_stream(
    state: &Arc<State>,
    ns: &str,
    name: &str,
    kind: &str,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let Some(tls) = state.kubelet_tls.clone() else {
        return Err(ApiError::ServiceUnavailable(
            "no kubelet client certificate is configured (--kubelet-client-certificate)".into(),
        ));
    };
    let pods =
        state.registry.by_plural("", "pods").cloned().ok_or_else(|| ApiError::Internal("pods not served".into()))?;
    let nodes =
        state.registry.by_plural("", "nodes").cloned().ok_or_else(|| ApiError::Internal("nodes not served".into()))?;
    let pod = state.store.get(&pods, ns, name).await?;
    let pod: Value = serde_json::from_slice(&pod.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    }
    let node = state
        .store
        .get(&nodes, "", node_name)
        .await
        .map_err(|_| ApiError::BadRequest(format!("node {node_name} of pod {name} does not exist")))?;
    let node: Value = serde_json::from_slice(&node.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (ip, port) = kubelet_address(&node)
        .ok_or_else(|| ApiError::ServiceUnavailable(format!("node {node_name} reports no address for its kubelet")))?;

    // The query the kubelet gets: everything but `container`, which moves into the path.
    let passthrough: Vec<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("container="))
        .map(str::to_string)
        .collect();
    let query = if passthrough.is_empty() { String::new() } else { format!("?{}", passthrough.join("&")) };
    let path = match kind {
        "portforward" => format!("/portForward/{}/{}{query}", encode(ns), encode(name)),
        _ => {
            let container = pick_container(&pod, name, q.get("container"))?;
            let prefix = if kind == "log" { "containerLogs" } else { kind };
            format!("/{prefix}/{}/{}/{}{query}", encode(ns), encode(name), encode(&container))
        }
    };
    let mut sender = kubelet_connection(tls, &ip, port)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("the kubelet of node {node_name} at {ip}:{port}: {e}")))?;
    let mut req = req;
    let mut up =
        Request::builder().method(req.method().clone()).uri(&path).header(header::HOST, format!("{ip}:{port}"));
    for (k, v) in req.headers() {
        let keep = k == header::CONNECTION
            || k == header::UPGRADE
            || k.as_str().starts_with("sec-websocket-")
            || k.as_str().eq_ignore_ascii_case("x-stream-protocol-version");
        if keep {
            up = up.header(k, v);
        }
    }
    let up = up.body(Empty::new()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = sender
        .send_request(up)
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("kubelet of node {node_name}: {e}")))?;
    let status = resp.status();
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let mut out = Response::builder().status(status);
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else { return };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        return out
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed_unsync())
            .map_err(|e| ApiError::Internal(e.to_string()));
    }
    if !status.is_success() {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status.as_u16() {
            400 => ApiError::BadRequest(message),
            404 => ApiError::NotFound { message, details: None },
            501 | 503 => ApiError::ServiceUnavailable(message),
            _ => ApiError::Internal(message),
        });
    }
    // Logs: stream the kubelet's body through as it comes.
    let body = resp.into_body().map_err(|e| -> crate::http::BoxError { Box::new(e) }).boxed_unsync();
    let mut out = Response::new(body);
    out.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    Ok(out)
}
