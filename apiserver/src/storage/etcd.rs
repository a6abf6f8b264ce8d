//! [`Storage`] on etcd v3 through `etcd-client`.
//!
//! Writes are single transactions comparing the key's create or mod revision, so concurrent
//! writers can never both win. Each request has a deadline; an unreachable etcd answers
//! [`StorageError::Unavailable`] or [`StorageError::Timeout`] instead of hanging the caller, and the
//! client reconnects by itself when etcd returns.
//!
//! Watches are etcd watches from the requested revision. If the stream breaks (etcd restarted),
//! the pump re-establishes it from the last delivered revision for up to
//! [`EtcdOptions::watch_resume_window`]; past that the watch ends with an error, so a client is
//! never left on a silent stream.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{KeyValue, ListPage, Storage, StorageError, Watch, WatchEvent, prefix_end};

#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// Deadline for one request.
    pub request_timeout: Duration,
    /// How long a broken watch keeps trying to resume before it ends with an error.
    pub watch_resume_window: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            request_timeout: Duration::from_secs(10),
            watch_resume_window: Duration::from_secs(15),
        }
    }
}

#[derive(Clone)]
pub struct EtcdStorage {
    client: Client,
    kv: etcd_client::KvClient,
    opts: EtcdOptions,
}

impl EtcdStorage {
    /// Connects lazily: this succeeds while etcd is down, and requests fail until it is up.
    pub async fn connect(opts: EtcdOptions) -> Result<Self, StorageError> {
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&opts.endpoints, Some(connect)).await.map_err(map_err)?;
        // A LIST of many objects exceeds tonic's default 4 MiB message limit.
        let kv = client.kv_client().max_decoding_message_size(usize::MAX);
        Ok(EtcdStorage { client, kv, opts })
    }

    async fn deadline<T, F>(&self, fut: F) -> Result<T, StorageError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.opts.request_timeout, fut).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(StorageError::Timeout),
        }
    }

    /// Runs a compare-and-swap transaction whose failure branch reads the key back.
    async fn cas(&self, key: &str, compare: Compare, op: TxnOp) -> Result<Result<i64, Option<KeyValue>>, StorageError> {
        let txn = Txn::new().when([compare]).and_then([op]).or_else([TxnOp::get(key, None)]);
        let mut kv = self.kv.clone();
        let resp = self.deadline(kv.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            return Ok(Ok(revision));
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(to_kv),
            _ => None,
        });
        Ok(Err(current))
    }

    /// For tests and maintenance: discard history before `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        let mut kv = self.kv.clone();
        self.deadline(kv.compact(revision, None)).await.map(|_| ())
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        mod_revision: kv.mod_revision(),
    }
}

/// Takes the key and value without copying them (LIST moves many megabytes).
fn into_kv(kv: etcd_client::KeyValue) -> KeyValue {
    let mod_revision = kv.mod_revision();
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: String::from_utf8(key).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        value: Bytes::from(value),
        mod_revision,
    }
}

fn map_err(e: etcd_client::Error) -> StorageError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message().to_string();
            match status.code() {
                tonic::Code::OutOfRange if msg.contains("compacted") => {
                    StorageError::Compacted { requested: 0, compacted: 0 }
                }
                tonic::Code::OutOfRange if msg.contains("future revision") => {
                    StorageError::FutureRevision { requested: 0 }
                }
                tonic::Code::Unavailable | tonic::Code::Cancelled => StorageError::Unavailable(msg),
                tonic::Code::DeadlineExceeded => StorageError::Timeout,
                _ => StorageError::Internal(msg),
            }
        }
        E::TransportError(t) => StorageError::Unavailable(t.to_string()),
        E::IoError(io) => StorageError::Unavailable(io.to_string()),
        E::WatchError(w) => StorageError::Unavailable(w),
        other => StorageError::Internal(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Storage for EtcdStorage {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        let mut kv = self.kv.clone();
        let resp = self.deadline(kv.get(key, None)).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> Result<ListPage, StorageError> {
        let start = match after {
            Some(k) => {
                let mut s = k.as_bytes().to_vec();
                s.push(0);
                s
            }
            None => prefix.as_bytes().to_vec(),
        };
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if limit > 0 {
            opts = opts.with_limit(limit as i64);
        }
        if revision > 0 {
            // A read at a fixed revision sees the same data on any member that has it; no need
            // for a quorum round trip (each chunk of a streamed LIST is one).
            opts = opts.with_revision(revision).with_serializable();
        }
        let mut kv = self.kv.clone();
        let mut resp = self.deadline(kv.get(start, Some(opts))).await.map_err(|e| match e {
            StorageError::Compacted { .. } => StorageError::Compacted { requested: revision, compacted: 0 },
            StorageError::FutureRevision { .. } => StorageError::FutureRevision { requested: revision },
            other => other,
        })?;
        let current = resp.header().map_or(0, |h| h.revision());
        Ok(ListPage {
            more: resp.more(),
            count: resp.count(),
            items: resp.take_kvs().into_iter().map(into_kv).collect(),
            revision: if revision > 0 { revision } else { current },
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        match self.cas(key, Compare::create_revision(key, CompareOp::Equal, 0), TxnOp::put(key, value, None)).await? {
            Ok(rev) => Ok(rev),
            Err(_) => Err(StorageError::AlreadyExists),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StorageError> {
        match self
            .cas(key, Compare::mod_revision(key, CompareOp::Equal, expected), TxnOp::put(key, value, None))
            .await?
        {
            Ok(rev) => Ok(rev),
            Err(None) => Err(StorageError::NotFound),
            Err(current) => Err(StorageError::Conflict { current }),
        }
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StorageError> {
        match self.cas(key, Compare::mod_revision(key, CompareOp::Equal, expected), TxnOp::delete(key, None)).await? {
            Ok(rev) => Ok(rev),
            Err(None) => Err(StorageError::NotFound),
            Err(current) => Err(StorageError::Conflict { current }),
        }
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Watch, StorageError> {
        let (tx, rx) = mpsc::channel(256);
        let (progress_tx, progress_rx) = mpsc::channel(4);
        // Open the first stream here, so a compacted start revision is the caller's error and not
        // an event on the stream.
        let stream = open_watch(&self.client, prefix, after, self.opts.request_timeout).await?;
        let pump = WatchPump {
            client: self.client.clone(),
            prefix: prefix.to_string(),
            last: after,
            tx,
            progress: progress_rx,
            progress_open: true,
            opts: self.opts.clone(),
        };
        tokio::spawn(pump.run(stream));
        Ok(Watch { events: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(), progress: progress_tx })
    }

    async fn current_revision(&self) -> Result<i64, StorageError> {
        let mut kv = self.kv.clone();
        let resp = self.deadline(kv.get("/", Some(GetOptions::new().with_count_only()))).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn check_health(&self) -> Result<(), StorageError> {
        // A linearizable read goes through raft: it fails without a quorum, as upstream's check does.
        let mut kv = self.kv.clone();
        self.deadline(kv.get("health", None)).await.map(|_| ())
    }
}

/// An open etcd watch stream and its request half (for progress requests).
struct OpenWatch {
    sender: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
}

async fn open_watch(client: &Client, prefix: &str, after: i64, timeout: Duration) -> Result<OpenWatch, StorageError> {
    let opts = WatchOptions::new().with_range(prefix_end(prefix)).with_prev_key().with_start_revision(after + 1);
    let mut wc = client.watch_client();
    let open = async {
        let stream = wc.watch(prefix, Some(opts)).await.map_err(map_err)?;
        let (sender, mut responses) = stream.split();
        // The first response confirms creation, or says the start revision is compacted.
        match responses.message().await.map_err(map_err)? {
            Some(r) if r.canceled() => {
                if r.compact_revision() > 0 {
                    Err(StorageError::Compacted { requested: after, compacted: r.compact_revision() })
                } else {
                    Err(StorageError::Unavailable(format!("watch canceled: {}", r.cancel_reason())))
                }
            }
            Some(_) => Ok(OpenWatch { sender, responses }),
            None => Err(StorageError::Unavailable("watch stream closed".into())),
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(r) => r,
        Err(_) => Err(StorageError::Timeout),
    }
}

struct WatchPump {
    client: Client,
    prefix: String,
    /// Revision of the last event delivered.
    last: i64,
    tx: mpsc::Sender<Result<WatchEvent, StorageError>>,
    progress: mpsc::Receiver<()>,
    /// False once every progress sender is gone, so the select stops polling a closed channel.
    progress_open: bool,
    opts: EtcdOptions,
}

enum StreamEnd {
    /// The consumer went away.
    Closed,
    /// The etcd stream broke; try to resume.
    Broken(StorageError),
    /// Terminal: report and stop.
    Fatal(StorageError),
}

impl WatchPump {
    async fn run(mut self, first: OpenWatch) {
        let mut stream = first;
        loop {
            match self.pump(&mut stream).await {
                StreamEnd::Closed => return,
                StreamEnd::Fatal(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
                StreamEnd::Broken(e) => {
                    debug!(prefix = %self.prefix, error = %e, "Watch stream broke, resuming");
                    match self.resume().await {
                        Some(Ok(s)) => stream = s,
                        Some(Err(e)) => {
                            warn!(prefix = %self.prefix, error = %e, "Watch could not resume");
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                        None => return,
                    }
                }
            }
        }
    }

    /// Reopens the watch from the last delivered revision, with backoff, within the window.
    async fn resume(&mut self) -> Option<Result<OpenWatch, StorageError>> {
        let deadline = tokio::time::Instant::now() + self.opts.watch_resume_window;
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = open_watch(&self.client, &self.prefix, self.last, self.opts.request_timeout);
            let result = tokio::select! {
                r = attempt => r,
                _ = self.tx.closed() => return None,
            };
            match result {
                Ok(s) => return Some(Ok(s)),
                Err(e @ StorageError::Compacted { .. }) => return Some(Err(e)),
                Err(e) if tokio::time::Instant::now() + backoff > deadline => return Some(Err(e)),
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.tx.closed() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn pump(&mut self, stream: &mut OpenWatch) -> StreamEnd {
        loop {
            tokio::select! {
                msg = stream.responses.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return StreamEnd::Broken(StorageError::Unavailable("watch stream ended".into())),
                        Err(e) => return StreamEnd::Broken(map_err(e)),
                    };
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            return StreamEnd::Fatal(StorageError::Compacted { requested: self.last, compacted: resp.compact_revision() });
                        }
                        return StreamEnd::Broken(StorageError::Unavailable(format!("watch canceled: {}", resp.cancel_reason())));
                    }
                    if resp.events().is_empty() {
                        if resp.created() {
                            continue;
                        }
                        let revision = resp.header().map_or(0, |h| h.revision());
                        if revision > 0 && self.tx.send(Ok(WatchEvent::Progress { revision })).await.is_err() {
                            return StreamEnd::Closed;
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let prev = ev.prev_kv().map(to_kv);
                        let event = match ev.event_type() {
                            etcd_client::EventType::Put => WatchEvent::Put { kv: to_kv(kv), prev },
                            etcd_client::EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                revision: kv.mod_revision(),
                                prev,
                            },
                        };
                        self.last = event.revision();
                        if self.tx.send(Ok(event)).await.is_err() {
                            return StreamEnd::Closed;
                        }
                    }
                }
                req = self.progress.recv(), if self.progress_open => {
                    if req.is_none() {
                        self.progress_open = false;
                    } else if stream.sender.request_progress().await.is_err() {
                        return StreamEnd::Broken(StorageError::Unavailable("watch request channel closed".into()));
                    }
                }
                _ = self.tx.closed() => return StreamEnd::Closed,
            }
        }
    }
}
