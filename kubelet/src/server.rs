//! The kubelet's HTTPS API on `--port` (10250): container logs, the node's `/var/log` under
//! `/logs/`, and exec / attach / port-forward
//! handed to the runtime's streaming server (CRI Exec/Attach/PortForward return its URL; the
//! upgraded connection is spliced through). Only clients with a certificate from the cluster CA
//! get in, which in practice is the apiserver.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use proto::cri;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};
use tokio_rustls::TlsAcceptor;

use crate::cri::Cri;
use crate::logs::parse_line;
use crate::pod::spec::{LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE};
use crate::stats::Stats;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed_unsync()
}

/// A plain-text answer.
pub fn full(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.into())).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn prometheus(text: String) -> Response<Body> {
    let mut r = full(StatusCode::OK, text);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

pub struct ServerConfig {
    pub address: String,
    pub port: u16,
    pub node_name: String,
    pub node_ip: String,
    pub pki_dir: PathBuf,
    /// PEM of the CA whose client certificates may connect.
    pub client_ca_pem: String,
}

/// A self-signed serving certificate for the node (kept in `pki_dir` across restarts).
fn serving_cert(
    cfg: &ServerConfig,
) -> anyhow::Result<(Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>)> {
    std::fs::create_dir_all(&cfg.pki_dir)?;
    let (crt, key) = (cfg.pki_dir.join("kubelet.crt"), cfg.pki_dir.join("kubelet.key"));
    if !crt.exists() || !key.exists() {
        let mut names = vec![cfg.node_name.clone(), "localhost".to_string()];
        names.push(cfg.node_ip.clone());
        names.push("127.0.0.1".into());
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        for n in names {
            params.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(n.try_into()?),
            });
        }
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, format!("{}@kubelet", cfg.node_name));
        params.distinguished_name = dn;
        let k = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&k)?;
        std::fs::write(&crt, cert.pem())?;
        std::fs::write(&key, k.serialize_pem())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let chain = rustls_pemfile::certs(&mut &std::fs::read(&crt)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &std::fs::read(&key)?[..])?
        .ok_or_else(|| anyhow::anyhow!("no key in {}", key.display()))?;
    Ok((chain, key))
}

pub fn tls_config(cfg: &ServerConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = serving_cert(cfg)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cfg.client_ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Binds the port and prepares TLS; errors here stop the kubelet with a clear message.
pub async fn bind(cfg: &ServerConfig) -> anyhow::Result<(tokio::net::TcpListener, TlsAcceptor)> {
    let tls = TlsAcceptor::from(tls_config(cfg)?);
    let listener = tokio::net::TcpListener::bind((cfg.address.as_str(), cfg.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", cfg.address, cfg.port))?;
    tracing::info!(address = %cfg.address, port = cfg.port, "serving the kubelet API");
    Ok((listener, tls))
}

/// Serves for ever.
pub async fn serve(listener: tokio::net::TcpListener, tls: TlsAcceptor, cri: Cri, stats: Arc<Stats>) {
    let cri = Arc::new(cri);
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let tls = tls.clone();
        let cri = cri.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else { return };
            let svc = hyper::service::service_fn(move |req| {
                let cri = cri.clone();
                let stats = stats.clone();
                async move { Ok::<_, Infallible>(route(&cri, &stats, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(cri: &Cri, stats: &Stats, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let q: HashMap<String, Vec<String>> = query_map(req.uri().query());
    match (req.method().as_str(), parts.as_slice()) {
        ("GET", ["healthz"]) => full(StatusCode::OK, "ok"),
        ("GET", ["stats", "summary"]) => {
            let mut r = full(StatusCode::OK, stats.summary().await.to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        ("GET", ["metrics", "resource"]) => prometheus(stats.resource_metrics().await),
        ("GET", ["metrics"]) => prometheus(stats.kubelet_metrics().await),
        ("GET" | "HEAD", ["logs", ..]) => {
            let rest = path.strip_prefix("/logs").unwrap_or("").trim_start_matches('/');
            crate::node_logs::serve(Path::new(crate::node_logs::LOG_DIR), &path, rest).await
        }
        ("GET", ["containerLogs", ns, pod, container]) => container_logs(cri, ns, pod, container, &q).await,
        (_, [kind @ ("exec" | "attach"), ns, pod, container]) => {
            let (ns, pod, container, kind) = (ns.to_string(), pod.to_string(), container.to_string(), kind.to_string());
            stream_request(cri, &kind, &ns, &pod, Some(&container), &q, req).await
        }
        (_, ["portForward", ns, pod]) => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            stream_request(cri, "portforward", &ns, &pod, None, &q, req).await
        }
        _ => full(StatusCode::NOT_FOUND, format!("404 page not found: {path}")),
    }
}

pub fn query_map(q: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        m.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    m
}

fn flag(q: &HashMap<String, Vec<String>>, k: &str) -> bool {
    q.get(k).and_then(|v| v.first()).is_some_and(|v| v == "true" || v == "1")
}

fn number(q: &HashMap<String, Vec<String>>, k: &str) -> Option<i64> {
    q.get(k).and_then(|v| v.first()).and_then(|v| v.parse().ok())
}

/// The pod's containers (named `name`, when given), newest first.
async fn find_containers(cri: &Cri, ns: &str, pod: &str, name: Option<&str>) -> Result<Vec<cri::Container>, String> {
    let mut selector = HashMap::from([
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
    ]);
    if let Some(n) = name {
        selector.insert(LABEL_CONTAINER_NAME.to_string(), n.to_string());
    }
    let mut list = cri
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter { label_selector: selector, ..Default::default() }),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .containers;
    list.sort_by_key(|c| std::cmp::Reverse((c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), c.created_at)));
    Ok(list)
}

async fn container_logs(
    cri: &Cri,
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, Vec<String>>,
) -> Response<Body> {
    let list = match find_containers(cri, ns, pod, Some(container)).await {
        Ok(l) => l,
        Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let previous = flag(q, "previous");
    let chosen = if previous { list.get(1) } else { list.first() };
    let Some(c) = chosen else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
        };
        return full(StatusCode::BAD_REQUEST, msg);
    };
    let status =
        match cri.container_status(cri::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }).await {
            Ok(s) => s.status.unwrap_or_default(),
            Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
        };
    if status.log_path.is_empty() {
        return full(StatusCode::BAD_REQUEST, format!("container \"{container}\" in pod \"{pod}\" has no log file"));
    }
    let opts = LogOptions {
        follow: flag(q, "follow") && !previous,
        timestamps: flag(q, "timestamps"),
        tail: number(q, "tailLines").filter(|n| *n >= 0).map(|n| n as usize),
        since: number(q, "sinceSeconds")
            .map(|s| jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s))
            .or_else(|| q.get("sinceTime").and_then(|v| v.first()).and_then(|t| t.parse().ok())),
        limit: number(q, "limitBytes").filter(|n| *n > 0).map(|n| n as usize),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    let path = PathBuf::from(status.log_path);
    let cri = cri.clone();
    let id = c.id.clone();
    tokio::spawn(async move {
        if let Err(e) = stream_log(&path, &opts, &cri, &id, &tx).await {
            tracing::debug!(error = %e, "log stream ended");
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(BodyExt::boxed_unsync(body));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    r
}

#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub timestamps: bool,
    pub tail: Option<usize>,
    pub since: Option<jiff::Timestamp>,
    pub limit: Option<usize>,
}

/// One log entry as kubectl shows it, or `None` when filtered out.
fn render(line: &str, opts: &LogOptions) -> Option<Vec<u8>> {
    let l = parse_line(line)?;
    if let Some(since) = opts.since
        && l.time.parse::<jiff::Timestamp>().is_ok_and(|t| t < since)
    {
        return None;
    }
    let mut out = Vec::new();
    if opts.timestamps {
        out.extend_from_slice(l.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(l.text.as_bytes());
    if !l.partial {
        out.push(b'\n');
    }
    Some(out)
}

async fn stream_log(
    path: &Path,
    opts: &LogOptions,
    cri: &Cri,
    id: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> Result<(), BoxError> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut sent = 0usize;
    let send = |chunk: Vec<u8>, sent: &mut usize| {
        let mut chunk = chunk;
        if let Some(limit) = opts.limit {
            if *sent >= limit {
                return None;
            }
            chunk.truncate(limit - *sent);
        }
        *sent += chunk.len();
        Some(Frame::data(Bytes::from(chunk)))
    };
    // Existing content, with tailLines applied.
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut file, &mut text).await?;
    let mut offset = text.len() as u64;
    // A trailing line without its newline is still being written: read it with the rest later.
    let complete = match text.rfind('\n') {
        Some(i) => i + 1,
        None => 0,
    };
    offset -= (text.len() - complete) as u64;
    let rendered: Vec<Vec<u8>> = text[..complete].lines().filter_map(|l| render(l, opts)).collect();
    let start = opts.tail.map(|t| rendered.len().saturating_sub(t)).unwrap_or(0);
    for chunk in rendered.into_iter().skip(start) {
        match send(chunk, &mut sent) {
            Some(f) => tx.send(Ok(f)).await?,
            None => return Ok(()),
        }
    }
    if !opts.follow {
        return Ok(());
    }
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut reader = tokio::io::BufReader::new(file);
    let mut line = String::new();
    let mut idle = 0u32;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n > 0 && line.ends_with('\n') {
            idle = 0;
            if let Some(chunk) = render(line.trim_end_matches('\n'), opts) {
                match send(chunk, &mut sent) {
                    Some(f) => tx.send(Ok(f)).await?,
                    None => return Ok(()),
                }
            }
            continue;
        }
        if n > 0 {
            // Half a line: go back and wait for the rest.
            reader.seek(std::io::SeekFrom::Current(-(n as i64))).await?;
        }
        if tx.is_closed() {
            return Ok(());
        }
        idle += 1;
        if idle.is_multiple_of(10) {
            let running = cri
                .container_status(cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
                .await
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
            if !running {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// exec / attach / portforward: ask the runtime for a streaming URL and splice the client's
/// upgraded connection to it.
async fn stream_request(
    cri: &Cri,
    kind: &str,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    q: &HashMap<String, Vec<String>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let url = match kind {
        "portforward" => {
            let sandboxes = cri
                .list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(cri::PodSandboxFilter {
                        label_selector: HashMap::from([
                            (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
                            (LABEL_POD_NAME.to_string(), pod.to_string()),
                        ]),
                        state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
                        ..Default::default()
                    }),
                })
                .await;
            let Some(sb) = sandboxes.ok().and_then(|s| s.items.into_iter().next()) else {
                return full(StatusCode::NOT_FOUND, format!("pod \"{pod}\" has no running sandbox on this node"));
            };
            let ports = q.get("port").cloned().unwrap_or_default().iter().filter_map(|p| p.parse().ok()).collect();
            cri.port_forward(cri::PortForwardRequest { pod_sandbox_id: sb.id, port: ports }).await.map(|r| r.url)
        }
        _ => {
            let container = container.unwrap_or_default();
            let list = match find_containers(cri, ns, pod, Some(container)).await {
                Ok(l) => l,
                Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            let Some(c) = list.into_iter().find(|c| c.state == cri::ContainerState::ContainerRunning as i32) else {
                return full(StatusCode::BAD_REQUEST, format!("container {container} is not running in pod {pod}"));
            };
            let stdin = flag(q, "stdin") || flag(q, "input");
            let stdout = flag(q, "stdout") || flag(q, "output");
            let stderr = flag(q, "stderr") || flag(q, "error");
            let tty = flag(q, "tty");
            if kind == "exec" {
                let cmd = q.get("command").cloned().unwrap_or_default();
                if cmd.is_empty() {
                    return full(StatusCode::BAD_REQUEST, "you must specify at least one command for the container");
                }
                cri.exec(cri::ExecRequest { container_id: c.id, cmd, tty, stdin, stdout, stderr }).await.map(|r| r.url)
            } else {
                cri.attach(cri::AttachRequest { container_id: c.id, stdin, tty, stdout, stderr }).await.map(|r| r.url)
            }
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) if e.code() == tonic::Code::Unimplemented => {
            return full(StatusCode::NOT_IMPLEMENTED, e.message().to_string());
        }
        Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e.message().to_string()),
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return full(StatusCode::INTERNAL_SERVER_ERROR, format!("the runtime returned a bad URL {url:?}"));
    };
    let addr = format!("{}:{}", uri.host().unwrap_or("127.0.0.1"), uri.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    match crate::splice::proxy_upgrade(req, tokio::net::TcpStream::connect(&addr).await, &path).await {
        Ok(r) => r,
        Err(e) => full(StatusCode::BAD_GATEWAY, format!("streaming server at {addr}: {e}")),
    }
}
