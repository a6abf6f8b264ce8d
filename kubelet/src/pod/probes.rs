//! Probes and lifecycle hooks: exec (through CRI ExecSync), httpGet and tcpSocket against the
//! pod's IP. One prober task per running container instance runs the startup probe until it
//! passes, then liveness and readiness side by side, and reports through [`ProbeResults`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, LifecycleHandler, Pod, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cri::Cri;
use crate::events::Recorder;
use proto::cri as pb;

/// What the probers found, by container ID.
#[derive(Default)]
pub struct ProbeResults {
    pub ready: HashSet<String>,
    pub started: HashSet<String>,
    pub unhealthy: HashSet<String>,
}

pub type SharedResults = Arc<Mutex<ProbeResults>>;

/// The three ways to check a container, shared by probes and hooks.
enum Check<'a> {
    Exec(&'a ExecAction),
    Http(&'a HTTPGetAction),
    Tcp(&'a TCPSocketAction),
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .as_ref()
                .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name)))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in the container"))
        }
    }
}

async fn run_check(
    check: Check<'_>,
    cri: &Cri,
    container_id: &str,
    container: &Container,
    ip: &str,
    timeout: Duration,
) -> Result<String, String> {
    match check {
        Check::Exec(e) => {
            let req = pb::ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: e.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs().max(1) as i64,
            };
            let resp = cri.exec_sync(req).await.map_err(|s| s.message().to_string())?;
            let out = String::from_utf8_lossy(&resp.stdout).into_owned() + &String::from_utf8_lossy(&resp.stderr);
            if resp.exit_code == 0 {
                Ok(out)
            } else {
                Err(format!(
                    "command {:?} exited with {}: {}",
                    e.command.clone().unwrap_or_default(),
                    resp.exit_code,
                    out.trim()
                ))
            }
        }
        Check::Tcp(t) => {
            let port = resolve_port(&t.port, container)?;
            let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
                Ok(Ok(_)) => Ok(String::new()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        }
        Check::Http(h) => {
            let port = resolve_port(&h.port, container)?;
            let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
            let https = h.scheme.as_deref() == Some("HTTPS");
            let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
            let path = if path.starts_with('/') { path } else { format!("/{path}") };
            let url = format!("{}://{host}:{port}{path}", if https { "https" } else { "http" });
            let fut = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| format!("Get {url:?}: dial tcp {host}:{port}: {e}"))?;
                let mut s: Box<dyn Io> = if https {
                    // Like upstream, probes do not verify the container's certificate.
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| format!("Get {url:?}: {e}"))?;
                    let tls = tokio_rustls::TlsConnector::from(insecure_tls())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("Get {url:?}: {e}"))?;
                    Box::new(tls)
                } else {
                    Box::new(tcp)
                };
                let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
                let headers = h.http_headers.clone().unwrap_or_default();
                if !headers.iter().any(|x| x.name.eq_ignore_ascii_case("user-agent")) {
                    req.push_str("User-Agent: kube-probe/1.33\r\n");
                }
                if !headers.iter().any(|x| x.name.eq_ignore_ascii_case("accept")) {
                    req.push_str("Accept: */*\r\n");
                }
                for x in headers {
                    req.push_str(&format!("{}: {}\r\n", x.name, x.value));
                }
                req.push_str("\r\n");
                s.write_all(req.as_bytes()).await.map_err(|e| format!("Get {url:?}: {e}"))?;
                let mut buf = Vec::new();
                let _ = s.take(10 * 1024).read_to_end(&mut buf).await;
                let text = String::from_utf8_lossy(&buf).into_owned();
                let code: u16 = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
                let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
                if (200..400).contains(&code) {
                    Ok(body)
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            };
            tokio::time::timeout(timeout, fut).await.map_err(|_| {
                format!("Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
            })?
        }
    }
}

fn probe_check(p: &Probe) -> Option<Check<'_>> {
    if let Some(e) = &p.exec {
        Some(Check::Exec(e))
    } else if let Some(h) = &p.http_get {
        Some(Check::Http(h))
    } else {
        p.tcp_socket.as_ref().map(Check::Tcp)
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Accepts any server certificate (signatures are still checked), as upstream's probes do.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        Arc::new(cfg)
    })
    .clone()
}

/// Runs a lifecycle hook (postStart or preStop). `Err` carries the message for the event.
pub async fn run_hook(
    handler: &LifecycleHandler,
    cri: &Cri,
    container_id: &str,
    container: &Container,
    ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    let check = if let Some(e) = &handler.exec {
        Check::Exec(e)
    } else if let Some(h) = &handler.http_get {
        Check::Http(h)
    } else if let Some(t) = &handler.tcp_socket {
        Check::Tcp(t)
    } else {
        return Ok(());
    };
    run_check(check, cri, container_id, container, ip, timeout).await.map(|_| ())
}

/// Everything a prober needs for one container instance.
pub struct ProbeTarget {
    pub pod: Pod,
    pub container: Container,
    pub container_id: String,
    pub ip: String,
    pub cri: Cri,
    pub results: SharedResults,
    pub wake: Arc<Notify>,
    pub events: Recorder,
}

impl ProbeTarget {
    fn update(&self, f: impl FnOnce(&mut ProbeResults) -> bool) {
        let changed = {
            let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut r)
        };
        if changed {
            self.wake.notify_one();
        }
    }

    /// Runs `probe` until it settles the way `until` wants (`None`: for ever); calls `on` with
    /// each new verdict after the thresholds.
    async fn run(&self, kind: &str, probe: &Probe, stop_on_success: bool, on: impl Fn(&Self, bool)) {
        let Some(check) = probe_check(probe) else { return };
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
        tokio::time::sleep(Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64)).await;
        let (mut successes, mut failures) = (0, 0);
        let mut verdict: Option<bool> = None;
        loop {
            let check = match &check {
                Check::Exec(e) => Check::Exec(e),
                Check::Http(h) => Check::Http(h),
                Check::Tcp(t) => Check::Tcp(t),
            };
            match run_check(check, &self.cri, &self.container_id, &self.container, &self.ip, timeout).await {
                Ok(_) => {
                    successes += 1;
                    failures = 0;
                    if successes >= success_threshold && verdict != Some(true) {
                        verdict = Some(true);
                        on(self, true);
                        if stop_on_success {
                            return;
                        }
                    }
                }
                Err(msg) => {
                    failures += 1;
                    successes = 0;
                    self.events.warning(&self.pod, "Unhealthy", &format!("{kind} probe failed: {msg}"));
                    if failures >= failure_threshold && verdict != Some(false) {
                        verdict = Some(false);
                        on(self, false);
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}

/// Probes one container instance for as long as the returned task lives.
pub fn spawn_prober(t: ProbeTarget) -> tokio::task::JoinHandle<()> {
    let id = t.container_id.clone();
    let c = t.container.clone();
    // Without a probe the answer is known at once.
    t.update(|r| {
        let mut changed = false;
        if c.startup_probe.is_none() {
            changed |= r.started.insert(id.clone());
        }
        if c.readiness_probe.is_none() {
            changed |= r.ready.insert(id.clone());
        }
        changed
    });
    tokio::spawn(async move {
        if let Some(p) = &c.startup_probe {
            t.run("Startup", p, true, |t, ok| {
                let id = t.container_id.clone();
                t.update(|r| if ok { r.started.insert(id) } else { r.unhealthy.insert(id) });
            })
            .await;
        }
        let liveness = async {
            if let Some(p) = &c.liveness_probe {
                t.run("Liveness", p, false, |t, ok| {
                    if !ok {
                        let id = t.container_id.clone();
                        t.events.normal(
                            &t.pod,
                            "Killing",
                            &format!("Container {} failed liveness probe, will be restarted", t.container.name),
                        );
                        t.update(|r| r.unhealthy.insert(id));
                    }
                })
                .await;
            }
        };
        let readiness = async {
            if let Some(p) = &c.readiness_probe {
                t.run("Readiness", p, false, |t, ok| {
                    let id = t.container_id.clone();
                    t.update(|r| if ok { r.ready.insert(id) } else { r.ready.remove(&id) });
                })
                .await;
            }
        };
        tokio::join!(liveness, readiness);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "ports": [{"name": "web", "containerPort": 1}]}))
            .expect("c")
    }

    /// An HTTPS server with a self-signed certificate answering every request with `status`.
    async fn https_server(status: u16) -> u16 {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("der");
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok").as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn https_probes_do_not_verify_the_certificate_and_judge_the_status() {
        let cri = Cri::new(Arc::new(crate::runtime::fake::FakeRuntime::new()));
        let c = container();
        for (status, ok) in [(204, true), (302, true), (500, false)] {
            let port = https_server(status).await;
            let get = HTTPGetAction {
                scheme: Some("HTTPS".into()),
                port: IntOrString::Int(port as i32),
                path: Some("/healthz".into()),
                ..Default::default()
            };
            let r = run_check(Check::Http(&get), &cri, "", &c, "127.0.0.1", Duration::from_secs(5)).await;
            assert_eq!(r.is_ok(), ok, "{status}: {r:?}");
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let tcp = TCPSocketAction { port: IntOrString::Int(closed as i32), host: None };
        let err =
            run_check(Check::Tcp(&tcp), &cri, "", &c, "127.0.0.1", Duration::from_secs(2)).await.expect_err("closed");
        assert!(err.starts_with("dial tcp 127.0.0.1:"), "{err}");
        let named = TCPSocketAction { port: IntOrString::String("nope".into()), host: None };
        let err = run_check(Check::Tcp(&named), &cri, "", &c, "127.0.0.1", Duration::from_secs(2))
            .await
            .expect_err("unknown name");
        assert_eq!(err, "couldn't find port \"nope\" in the container");
    }
}
