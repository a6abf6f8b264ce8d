//! One resource kept in memory from a list and a watch of storage, so that a hot path answers
//! without a storage read: every create asks whether its namespace is active
//! ([`super::namespaces`]), every pod create which PriorityClass it gets ([`super::priority`]).
//!
//! Each stored object is reduced to the small value its callers need (`T`), keyed by the rest of
//! its storage key after the resource's prefix (the name, for cluster-scoped resources).
//!
//! Architecture Invariant: the map is either absent (not synced: before the first list, and from
//! a lost watch until the next list has finished) or what storage held at one recent revision.
//! It may lag storage by the watch's delay, so callers trust what it knows and read storage for
//! what it does not: a miss must never turn into a refusal of something created a moment ago.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::codec;
use crate::storage::{KeyValue, Storage, StorageError, WatchEvent};

pub struct Reflector<T> {
    /// For the logs: which resource this follows.
    resource: &'static str,
    /// What one stored object is kept as.
    reduce: fn(&Value) -> T,
    /// Key (after the prefix) -> reduced object; `None` while not synced.
    state: RwLock<Option<HashMap<String, T>>>,
}

impl<T: Clone> Reflector<T> {
    pub fn new(resource: &'static str, reduce: fn(&Value) -> T) -> Self {
        Reflector { resource, reduce, state: RwLock::new(None) }
    }

    /// What is known about `name`; `None` when unknown or not synced, which only means "ask
    /// storage".
    pub fn get(&self, name: &str) -> Option<T> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(name).cloned())
    }

    /// `f` over everything known, or `None` when not synced.
    pub fn read<R>(&self, f: impl FnOnce(&HashMap<String, T>) -> R) -> Option<R> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(f)
    }

    fn set(&self, v: Option<HashMap<String, T>>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<String, T>)) {
        if let Some(m) = self.state.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f(m);
        }
    }

    fn entry(&self, prefix: &str, kv: &KeyValue) -> Option<(String, T)> {
        let obj = codec::decode_stored(&kv.value, kv.mod_revision).ok()?;
        Some((kv.key.strip_prefix(prefix).unwrap_or(&kv.key).to_string(), (self.reduce)(&obj)))
    }

    /// Lists and follows everything under `prefix` until shutdown, listing again after any
    /// failure (with backoff); while it has no watch, nothing is known.
    pub async fn run(&self, storage: Arc<dyn Storage>, prefix: String, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = tokio::select! {
                r = self.sync_and_follow(storage.as_ref(), &prefix) => r,
                _ = shutdown.cancelled() => return,
            };
            self.set(None);
            if let Err(e) = result {
                debug!(resource = self.resource, error = %e, "Reflector lost its watch, relisting");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn sync_and_follow(&self, storage: &dyn Storage, prefix: &str) -> Result<(), StorageError> {
        let page = storage.list(prefix, None, 0, 0).await?;
        self.set(Some(page.items.iter().filter_map(|kv| self.entry(prefix, kv)).collect()));
        let mut watch = storage.watch(prefix, page.revision).await?;
        while let Some(event) = watch.events.next().await {
            match event? {
                WatchEvent::Put { kv, .. } => {
                    if let Some((key, value)) = self.entry(prefix, &kv) {
                        self.update(|m| {
                            m.insert(key, value);
                        });
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    let key = key.strip_prefix(prefix).unwrap_or(&key).to_string();
                    self.update(|m| {
                        m.remove(&key);
                    });
                }
                WatchEvent::Progress { .. } => {}
            }
        }
        Err(StorageError::Unavailable(format!("{} watch ended", self.resource)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    fn label(obj: &Value) -> String {
        obj.pointer("/metadata/labels/tier").and_then(Value::as_str).unwrap_or("").to_string()
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never saw {what}");
    }

    #[tokio::test]
    async fn knows_nothing_until_listed_then_follows_puts_and_deletes() {
        let mem = MemoryStorage::new();
        mem.create("/registry/things/a", br#"{"metadata":{"name":"a","labels":{"tier":"1"}}}"#.to_vec())
            .await
            .expect("a");
        let reflector = Arc::new(Reflector::new("things", label));
        assert_eq!(reflector.get("a"), None);
        assert_eq!(reflector.read(|m| m.len()), None, "not synced before the first list");
        let shutdown = CancellationToken::new();
        let (r, storage, s) = (reflector.clone(), Arc::new(mem.clone()), shutdown.clone());
        let task = tokio::spawn(async move { r.run(storage, "/registry/things/".into(), s).await });
        eventually("a listed", || reflector.get("a").as_deref() == Some("1")).await;
        let rev = mem
            .create("/registry/things/b", br#"{"metadata":{"name":"b","labels":{"tier":"2"}}}"#.to_vec())
            .await
            .expect("b");
        eventually("b added", || reflector.get("b").as_deref() == Some("2")).await;
        mem.update("/registry/things/b", br#"{"metadata":{"name":"b","labels":{"tier":"3"}}}"#.to_vec(), rev)
            .await
            .expect("b changed");
        eventually("b changed", || reflector.get("b").as_deref() == Some("3")).await;
        let a = mem.get("/registry/things/a").await.expect("get").expect("a");
        mem.delete("/registry/things/a", a.mod_revision).await.expect("delete");
        eventually("a gone", || reflector.get("a").is_none()).await;
        assert_eq!(reflector.read(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["b".to_string()]));
        shutdown.cancel();
        task.await.expect("stops at shutdown");
    }
}
