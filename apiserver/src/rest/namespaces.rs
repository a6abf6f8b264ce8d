//! Which namespaces exist and which are terminating, kept current from a watch, so that creating
//! an object does not cost a storage read to check its namespace.
//!
//! Only a positive answer ("exists and is active") is trusted; anything else — not synced yet,
//! unknown name, terminating — falls back to reading storage, so a namespace created a moment
//! ago is never refused. A lost watch empties the cache until it has listed again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::codec;
use crate::meta;
use crate::resources::ResourceInfo;
use crate::storage::{KeyValue, Storage, StorageError, WatchEvent};

#[derive(Default)]
pub struct NamespaceCache {
    /// Name -> terminating; `None` while not synced.
    state: RwLock<Option<HashMap<String, bool>>>,
}

/// A namespace object's name and whether it is terminating.
fn entry(kv: &KeyValue) -> Option<(String, bool)> {
    let obj = codec::decode_stored(&kv.value, kv.mod_revision).ok()?;
    let terminating =
        meta::is_deleting(&obj) || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    Some((meta::name(&obj).to_string(), terminating))
}

impl NamespaceCache {
    /// True only when the namespace is known to exist and be active.
    pub fn is_active(&self, name: &str) -> bool {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.as_ref().and_then(|m| m.get(name)) == Some(&false)
    }

    fn set(&self, v: Option<HashMap<String, bool>>) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<String, bool>)) {
        if let Some(m) = self.state.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
            f(m);
        }
    }

    /// Lists and follows namespaces until shutdown, relisting after any failure.
    pub async fn run(self: Arc<Self>, storage: Arc<dyn Storage>, info: Arc<ResourceInfo>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = tokio::select! {
                r = self.sync_and_follow(storage.as_ref(), &info) => r,
                _ = shutdown.cancelled() => return,
            };
            self.set(None);
            if let Err(e) = result {
                debug!(error = %e, "Namespace cache lost its watch, relisting");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn sync_and_follow(&self, storage: &dyn Storage, info: &ResourceInfo) -> Result<(), StorageError> {
        let prefix = info.list_prefix("");
        let page = storage.list(&prefix, None, 0, 0).await?;
        self.set(Some(page.items.iter().filter_map(entry).collect()));
        let mut watch = storage.watch(&prefix, page.revision).await?;
        while let Some(event) = watch.events.next().await {
            match event? {
                WatchEvent::Put { kv, .. } => {
                    if let Some((name, terminating)) = entry(&kv) {
                        self.update(|m| {
                            m.insert(name, terminating);
                        });
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    let name = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                    self.update(|m| {
                        m.remove(&name);
                    });
                }
                WatchEvent::Progress { .. } => {}
            }
        }
        Err(StorageError::Unavailable("namespace watch ended".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn follows_namespaces_as_they_come_terminate_and_go() {
        let mem = MemoryStorage::new();
        let reg = Registry::builtin();
        let info = reg.by_plural("", "namespaces").expect("ns").clone();
        mem.create("/registry/namespaces/a", br#"{"metadata":{"name":"a"},"status":{"phase":"Active"}}"#.to_vec())
            .await
            .expect("a");
        let cache = Arc::new(NamespaceCache::default());
        assert!(!cache.is_active("a"), "nothing is trusted before the first list");
        let shutdown = CancellationToken::new();
        tokio::spawn(cache.clone().run(Arc::new(mem.clone()), info, shutdown.clone()));
        let wait = |name: &'static str, want: bool| {
            let cache = cache.clone();
            async move {
                for _ in 0..200 {
                    if cache.is_active(name) == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{name} never became active={want}");
            }
        };
        wait("a", true).await;
        let rev = mem
            .create("/registry/namespaces/b", br#"{"metadata":{"name":"b"},"status":{"phase":"Active"}}"#.to_vec())
            .await
            .expect("b");
        wait("b", true).await;
        mem.update(
            "/registry/namespaces/b",
            br#"{"metadata":{"name":"b","deletionTimestamp":"2026-01-01T00:00:00Z"},"status":{"phase":"Terminating"}}"#
                .to_vec(),
            rev,
        )
        .await
        .expect("terminating");
        wait("b", false).await;
        let a = mem.get("/registry/namespaces/a").await.expect("get").expect("a");
        mem.delete("/registry/namespaces/a", a.mod_revision).await.expect("delete");
        wait("a", false).await;
        shutdown.cancel();
    }
}
