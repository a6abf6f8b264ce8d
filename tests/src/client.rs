//! A raw HTTPS client for tests that check status codes, headers and bodies exactly: one TLS
//! connection per request, trusting the cluster CA, with an optional bearer token.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    pub host: String,
    pub port: u16,
    tls: Arc<rustls::ClientConfig>,
    pub token: Option<String>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("status {} body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A watch response being read line by line.
pub struct Stream {
    pub status: u16,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Stream {
    /// The next newline-terminated JSON event, or `None` when the server ended the stream.
    pub async fn next_event(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(&line)
                        .unwrap_or_else(|e| panic!("bad watch line ({e}): {}", String::from_utf8_lossy(&line))),
                );
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.buf.extend_from_slice(data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Like [`Self::next_event`], failing the test if nothing arrives within `secs`.
    pub async fn expect_event(&mut self, secs: u64) -> Value {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no watch event within {secs}s"))
            .expect("watch stream ended early")
    }
}

impl Client {
    pub fn new(url: &str, ca_pem: &str, token: Option<String>) -> Client {
        let hostport = url.trim_start_matches("https://").trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').expect("url with port");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(ca_pem) {
            roots.add(cert).expect("CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client { host: host.to_string(), port: port.parse().expect("port"), tls: Arc::new(config), token }
    }

    pub fn without_token(&self) -> Client {
        Client { token: None, ..self.clone() }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client { token: Some(token.to_string()), ..self.clone() }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::try_from(self.host.clone()).expect("server name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req =
            Request::builder().method(method).uri(path).header("host", format!("{}:{}", self.host, self.port));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        sender.send_request(req).await.expect("response")
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let resp = self.send(method, path, headers, body).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Resp { status, headers, body }
    }

    /// Like [`Self::request`], but a body that fails to arrive completely is an `Err` with the
    /// reason instead of a panic.
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        let resp = self.send(method, path, headers, body).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp { status, headers, body })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], Vec::new()).await
    }

    pub async fn get_accept(&self, path: &str, accept: &str) -> Resp {
        self.request("GET", path, &[("accept", accept)], Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request("POST", path, &[("content-type", "application/json")], body.to_string().into_bytes()).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request("PUT", path, &[("content-type", "application/json")], body.to_string().into_bytes()).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Resp {
        self.request("PATCH", path, &[("content-type", content_type)], body.to_string().into_bytes()).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, &[], Vec::new()).await
    }

    /// Opens a streaming GET (a watch) and returns once the headers arrived.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> Stream {
        let resp = self.send("GET", path, headers, Vec::new()).await;
        Stream {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}
