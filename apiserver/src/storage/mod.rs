//! The storage seam: a revisioned key-value store with compare-and-swap writes and ordered watch.
//!
//! [`etcd::EtcdStorage`] is the real thing; [`memory::MemoryStorage`] keeps the same contract in
//! memory for unit and component tests. The contract, which the REST layer relies on:
//!
//! - every write gets a new, strictly increasing revision, shared by all keys (etcd's
//!   revision), and an object's `resourceVersion` is the revision of its last write;
//! - `create` fails if the key exists, `update`/`delete` fail unless the key's revision is the
//!   expected one (optimistic concurrency);
//! - `watch(prefix, after)` delivers every change with a revision above `after`, in revision
//!   order, exactly once, or fails with [`StorageError::Compacted`] if that history is gone.
//!
//! Architecture Invariant: only this module (and through it, only the apiserver) talks to etcd.

pub mod etcd;
pub mod memory;

use bytes::Bytes;
use futures::stream::BoxStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the last write to this key: the object's resourceVersion.
    pub mod_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: i64,
    /// More keys follow the last one returned.
    pub more: bool,
    /// Keys in the whole range read (from its start, ignoring the limit).
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A create (no `prev`) or an update.
    Put { kv: KeyValue, prev: Option<KeyValue> },
    /// `revision` is the deletion's own revision; `prev` the last state before it.
    Delete { key: String, revision: i64, prev: Option<KeyValue> },
    /// Everything up to `revision` has been delivered (answer to a progress request).
    Progress { revision: i64 },
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("key not found")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    /// The key's revision was not the expected one; `current` is what is stored now.
    #[error("revision mismatch")]
    Conflict { current: Option<KeyValue> },
    #[error("required revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("required revision {requested} is newer than the current revision")]
    FutureRevision { requested: i64 },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage request timed out")]
    Timeout,
    #[error("storage error: {0}")]
    Internal(String),
}

/// A running watch. Dropping it cancels the watch.
pub struct Watch {
    pub events: BoxStream<'static, Result<WatchEvent, StorageError>>,
    /// Asks for a [`WatchEvent::Progress`] once the watch has caught up.
    pub progress: tokio::sync::mpsc::Sender<()>,
}

#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError>;

    /// Keys under `prefix` strictly after `after` (all when `None`), in key order, read at
    /// `revision` (0 = latest), at most `limit` of them (0 = no limit).
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> Result<ListPage, StorageError>;

    /// Writes a new key; returns its revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError>;

    /// Replaces `key` if its revision is `expected`; returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StorageError>;

    /// Deletes `key` if its revision is `expected`; returns the deletion's revision.
    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StorageError>;

    /// Every change under `prefix` with a revision above `after`.
    async fn watch(&self, prefix: &str, after: i64) -> Result<Watch, StorageError>;

    async fn current_revision(&self) -> Result<i64, StorageError>;

    /// Fails when the store cannot serve requests right now.
    async fn check_health(&self) -> Result<(), StorageError>;
}

/// The first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
