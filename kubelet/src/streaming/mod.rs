//! The runtime's streaming server: CRI Exec/Attach/PortForward return a one-time URL here, and
//! the connection that arrives on it (spliced through the apiserver and the kubelet) speaks
//! Kubernetes' streaming protocols:
//!
//! - exec and attach over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`: the first byte of
//!   each binary message names the channel: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize,
//!   255 close) or over SPDY/3.1 (one stream per channel, named by its `streamtype` header);
//! - port-forward over SPDY/3.1, raw or tunnelled in WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`): a `data` and an `error` stream per connection, with the
//!   `port` and `requestid` headers.
//!
//! The exit status goes to the client as a `Status` on the error channel, so `kubectl exec`
//! exits with the command's code.

pub mod spdy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::server::{Body, empty, full as text};

/// Output of a process: (1 stdout | 2 stderr, bytes).
pub type Output = Pin<Box<dyn Stream<Item = (u8, Bytes)> + Send>>;
pub type Stdin = Pin<Box<dyn AsyncWrite + Send>>;

/// A running exec or attach session.
pub struct Process {
    pub stdin: Option<Stdin>,
    pub output: Output,
    /// Identifies the session to `resize` and `exit_code`.
    pub handle: String,
}

/// What a runtime provides for streaming.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    async fn exec(&self, container: &str, cmd: &[String], tty: bool, stdin: bool) -> Result<Process, String>;
    async fn attach(&self, container: &str, tty: bool, stdin: bool) -> Result<Process, String>;
    async fn resize(&self, handle: &str, width: u16, height: u16);
    /// The exit code once the output has ended.
    async fn exit_code(&self, handle: &str) -> Result<i32, String>;
    /// Where a pod's port is reached: its IP.
    async fn pod_address(&self, sandbox: &str) -> Result<std::net::IpAddr, String>;
}

#[derive(Clone, Debug)]
pub enum Target {
    Exec { container: String, cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    Attach { container: String, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    PortForward { sandbox: String },
}

pub struct StreamingServer {
    addr: SocketAddr,
    pending: Mutex<HashMap<String, (Instant, Target)>>,
}

/// One-time URLs stay valid this long, as upstream's.
const TOKEN_TTL: Duration = Duration::from_secs(60);

impl StreamingServer {
    /// Listens on a loopback port and serves sessions with `backend`.
    pub async fn start(backend: Arc<dyn Backend>) -> std::io::Result<Arc<StreamingServer>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = Arc::new(StreamingServer { addr: listener.local_addr()?, pending: Mutex::new(HashMap::new()) });
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let s = s.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        let backend = backend.clone();
                        async move { Ok::<_, std::convert::Infallible>(s.handle(backend, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(server)
    }

    /// A one-time URL for `target`.
    pub fn url(&self, target: Target) -> String {
        use rand::Rng;
        let token: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect();
        let kind = match &target {
            Target::Exec { .. } => "exec",
            Target::Attach { .. } => "attach",
            Target::PortForward { .. } => "portforward",
        };
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
        p.insert(token.clone(), (Instant::now(), target));
        format!("http://{}/{kind}/{token}", self.addr)
    }

    fn handle(&self, backend: Arc<dyn Backend>, mut req: Request<Incoming>) -> Response<Body> {
        let token = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        let target = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
        let Some((_, target)) = target.filter(|(at, _)| at.elapsed() < TOKEN_TTL) else {
            return text(StatusCode::NOT_FOUND, "unknown or expired streaming session");
        };
        let header = |name: &str| -> Vec<String> {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
                .collect()
        };
        let upgrade = header("upgrade").first().cloned().unwrap_or_default().to_lowercase();
        let portforward = matches!(target, Target::PortForward { .. });
        if upgrade == "websocket" {
            let offered = header("sec-websocket-protocol");
            let wanted: &[&str] = if portforward {
                &["SPDY/3.1+portforward.k8s.io"]
            } else {
                &["v5.channel.k8s.io", "v4.channel.k8s.io"]
            };
            let Some(proto) = wanted.iter().find(|w| offered.iter().any(|o| o == *w)).map(|s| s.to_string()) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("no supported WebSocket subprotocol in {offered:?}; want one of {wanted:?}"),
                );
            };
            let Some(key) = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
                return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
            let on_upgrade = hyper::upgrade::on(&mut req);
            let v5 = proto == "v5.channel.k8s.io";
            tokio::spawn(async move {
                let Ok(io) = on_upgrade.await else { return };
                let ws =
                    tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
                match target {
                    Target::PortForward { sandbox } => {
                        let io = websocket_bytes(ws);
                        port_forward(io, backend, &sandbox).await;
                    }
                    t => ws_remote_command(ws, backend, t, v5).await,
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header("Sec-WebSocket-Accept", accept)
                .header("Sec-WebSocket-Protocol", proto)
                .body(empty())
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response"));
        }
        if upgrade.starts_with("spdy/3.1") {
            let offered = header("x-stream-protocol-version");
            let wanted: &[&str] = if portforward {
                &["portforward.k8s.io"]
            } else {
                &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
            };
            let chosen = wanted.iter().find(|w| offered.iter().any(|o| o == *w)).map(|s| s.to_string());
            let Some(chosen) = chosen.or_else(|| offered.is_empty().then(|| wanted[wanted.len() - 1].to_string()))
            else {
                return text(StatusCode::FORBIDDEN, format!("no supported stream protocol in {offered:?}"));
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let version = chosen.clone();
            tokio::spawn(async move {
                let Ok(io) = on_upgrade.await else { return };
                match target {
                    Target::PortForward { sandbox } => port_forward(TokioIo::new(io), backend, &sandbox).await,
                    t => spdy_remote_command(TokioIo::new(io), backend, t, &version).await,
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "SPDY/3.1")
                .header("X-Stream-Protocol-Version", chosen)
                .body(empty())
                .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response"));
        }
        text(StatusCode::BAD_REQUEST, "Upgrade request required")
    }
}

/// The `Status` kubectl reads from the error channel when the command ends.
pub fn exit_status(result: &Result<i32, String>) -> Vec<u8> {
    let v = match result {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        Err(e) => serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"}),
    };
    v.to_string().into_bytes()
}

async fn start(backend: &Arc<dyn Backend>, target: &Target) -> Result<Process, String> {
    match target {
        Target::Exec { container, cmd, tty, stdin, .. } => backend.exec(container, cmd, *tty, *stdin).await,
        Target::Attach { container, tty, stdin, .. } => backend.attach(container, *tty, *stdin).await,
        Target::PortForward { .. } => Err("not a command".into()),
    }
}

#[derive(serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

async fn ws_remote_command<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    backend: Arc<dyn Backend>,
    target: Target,
    v5: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let process = match start(&backend, &target).await {
        Ok(p) => p,
        Err(e) => {
            let mut m = vec![3u8];
            m.extend(exit_status(&Err(e)));
            let _ = sink.send(Message::Binary(m.into())).await;
            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000u16.into(), reason: "".into() }))).await;
            return;
        }
    };
    let handle = process.handle.clone();
    let mut stdin = process.stdin;
    let reader_backend = backend.clone();
    let reader_handle = handle.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else { continue };
            match ch {
                0 => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(rest).await.is_err()
                    {
                        stdin = None;
                    }
                }
                4 => {
                    if let Ok(size) = serde_json::from_slice::<Size>(rest) {
                        reader_backend.resize(&reader_handle, size.width, size.height).await;
                    }
                }
                255 if v5 && rest.first() == Some(&0) => {
                    if let Some(mut s) = stdin.take() {
                        let _ = s.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });
    let mut output = process.output;
    while let Some((ch, data)) = output.next().await {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(ch);
        m.extend_from_slice(&data);
        if sink.send(Message::Binary(m.into())).await.is_err() {
            break;
        }
    }
    let code = backend.exit_code(&handle).await;
    let mut m = vec![3u8];
    m.extend(exit_status(&code));
    let _ = sink.send(Message::Binary(m.into())).await;
    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000u16.into(), reason: "".into() }))).await;
    reader.abort();
}

async fn spdy_remote_command<S>(io: S, backend: Arc<dyn Backend>, target: Target, version: &str)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (writer, mut events, task) = spdy::session(io);
    // With a TTY, stderr is merged into stdout and has no stream of its own.
    let (want_stdin, want_stdout, want_stderr) = match &target {
        Target::Exec { stdin, stdout, stderr, tty, .. } | Target::Attach { stdin, stdout, stderr, tty, .. } => {
            (*stdin, *stdout, *stderr && !*tty)
        }
        Target::PortForward { .. } => return,
    };
    let mut streams: HashMap<String, u32> = HashMap::new();
    let expected = |s: &HashMap<String, u32>| {
        s.contains_key("error")
            && (!want_stdin || s.contains_key("stdin"))
            && (!want_stdout || s.contains_key("stdout"))
            && (!want_stderr || s.contains_key("stderr"))
    };
    // Wait for the client to open its streams (a few seconds at most).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut early: Vec<spdy::Event> = Vec::new();
    while !expected(&streams) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(spdy::Event::Open { id, headers, .. })) => {
                writer.reply(id);
                if let Some(t) = headers.get("streamtype") {
                    streams.insert(t.clone(), id);
                }
            }
            Ok(Some(spdy::Event::Closed)) | Ok(None) | Err(_) => break,
            Ok(Some(other)) => early.push(other),
        }
    }
    let Some(&error_id) = streams.get("error") else {
        task.abort();
        return;
    };
    let process = match start(&backend, &target).await {
        Ok(p) => p,
        Err(e) => {
            writer.data(error_id, &exit_status(&Err(e)), true);
            writer.goaway();
            return;
        }
    };
    let handle = process.handle.clone();
    let stdin_id = streams.get("stdin").copied();
    let mut resize_id = streams.get("resize").copied();
    let mut stdin = process.stdin;
    let reader_backend = backend.clone();
    let reader_handle = handle.clone();
    let reader = tokio::spawn(async move {
        let mut resize_buf = Vec::new();
        let mut pending = early.into_iter();
        loop {
            let ev = match pending.next() {
                Some(e) => e,
                None => match events.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            match ev {
                spdy::Event::Open { headers, id, .. }
                    if headers.get("streamtype").map(String::as_str) == Some("resize") =>
                {
                    resize_id = Some(id);
                }
                spdy::Event::Data { id, data, fin } if Some(id) == stdin_id => {
                    if let Some(s) = stdin.as_mut()
                        && !data.is_empty()
                        && s.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                    if fin && let Some(mut s) = stdin.take() {
                        let _ = s.shutdown().await;
                    }
                }
                spdy::Event::Data { id, data, .. } if Some(id) == resize_id => {
                    resize_buf.extend_from_slice(&data);
                    let mut de = serde_json::Deserializer::from_slice(&resize_buf).into_iter::<Size>();
                    let mut last = 0;
                    while let Some(Ok(size)) = de.next() {
                        last = de.byte_offset();
                        reader_backend.resize(&reader_handle, size.width, size.height).await;
                    }
                    resize_buf.drain(..last);
                }
                spdy::Event::Closed => break,
                _ => {}
            }
        }
    });
    let mut output = process.output;
    while let Some((ch, data)) = output.next().await {
        let id = match ch {
            1 => streams.get("stdout"),
            _ => streams.get("stderr").or(streams.get("stdout")),
        };
        if let Some(&id) = id
            && !writer.data(id, &data, false)
        {
            break;
        }
    }
    for t in ["stdout", "stderr"] {
        if let Some(&id) = streams.get(t) {
            writer.data(id, &[], true);
        }
    }
    let code = backend.exit_code(&handle).await;
    // v1 clients read plain text and only on failure; v2+ read the Status JSON.
    if version == "channel.k8s.io" {
        if let Ok(c) = code
            && c != 0
        {
            writer.data(
                error_id,
                format!("command terminated with non-zero exit code: exit status {c}").as_bytes(),
                true,
            );
        } else {
            writer.data(error_id, &[], true);
        }
    } else {
        writer.data(error_id, &exit_status(&code), true);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.goaway();
    reader.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
}

/// A WebSocket as a byte stream (SPDY tunnelled in binary messages).
fn websocket_bytes<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(msg)) = source.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Binary(_) => {}
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    break;
                }
            }
            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000u16.into(), reason: "".into() }))).await;
        };
        tokio::select! {
            _ = inbound => {}
            _ = outbound => {}
        }
    });
    ours
}

/// Port-forward: each (data, error) stream pair with the same `requestid` is one TCP connection
/// to the pod's `port`.
async fn port_forward<S>(io: S, backend: Arc<dyn Backend>, sandbox: &str)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (writer, mut events, task) = spdy::session(io);
    let ip = backend.pod_address(sandbox).await;
    // requestid -> (error stream, data stream)
    let mut pairs: HashMap<String, (Option<u32>, Option<u32>)> = HashMap::new();
    let mut conns: HashMap<u32, tokio::sync::mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    while let Some(ev) = events.recv().await {
        match ev {
            spdy::Event::Open { id, headers, .. } => {
                writer.reply(id);
                let rid = headers.get("requestid").cloned().unwrap_or_default();
                let port: u16 = headers.get("port").and_then(|p| p.parse().ok()).unwrap_or(0);
                let entry = pairs.entry(rid.clone()).or_default();
                match headers.get("streamtype").map(String::as_str) {
                    Some("error") => entry.0 = Some(id),
                    Some("data") => entry.1 = Some(id),
                    _ => continue,
                }
                let (Some(error_id), Some(data_id)) = *entry else { continue };
                pairs.remove(&rid);
                let target = match &ip {
                    Ok(ip) => SocketAddr::new(*ip, port),
                    Err(e) => {
                        writer.data(error_id, e.as_bytes(), true);
                        continue;
                    }
                };
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<u8>>>();
                conns.insert(data_id, tx);
                let w = writer.clone();
                tokio::spawn(async move {
                    let tcp =
                        match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(target))
                            .await
                        {
                            Ok(Ok(t)) => t,
                            Ok(Err(e)) => {
                                let msg =
                                    format!("error forwarding port {port} to pod: failed to connect to {target}: {e}");
                                w.data(error_id, msg.as_bytes(), true);
                                w.data(data_id, &[], true);
                                return;
                            }
                            Err(_) => {
                                w.data(
                                    error_id,
                                    format!("error forwarding port {port}: timeout connecting to {target}").as_bytes(),
                                    true,
                                );
                                w.data(data_id, &[], true);
                                return;
                            }
                        };
                    let (mut rd, mut wr) = tcp.into_split();
                    let upload = async {
                        while let Some(chunk) = rx.recv().await {
                            match chunk {
                                Some(d) => {
                                    if wr.write_all(&d).await.is_err() {
                                        break;
                                    }
                                }
                                None => break,
                            }
                        }
                        let _ = wr.shutdown().await;
                    };
                    let download = async {
                        let mut buf = vec![0u8; 32 * 1024];
                        loop {
                            match tokio::io::AsyncReadExt::read(&mut rd, &mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if !w.data(data_id, &buf[..n], false) {
                                        break;
                                    }
                                }
                            }
                        }
                        w.data(data_id, &[], true);
                        w.data(error_id, &[], true);
                    };
                    tokio::join!(upload, download);
                });
            }
            spdy::Event::Data { id, data, fin } => {
                if let Some(tx) = conns.get(&id) {
                    if !data.is_empty() {
                        let _ = tx.send(Some(data));
                    }
                    if fin {
                        let _ = tx.send(None);
                    }
                }
            }
            spdy::Event::Reset { id } => {
                if let Some(tx) = conns.remove(&id) {
                    let _ = tx.send(None);
                }
            }
            spdy::Event::Closed => break,
        }
    }
    task.abort();
}
