//! Which namespaces exist and which are terminating, kept current from a watch
//! ([`Reflector`]), so that creating an object does not cost a storage read to check its
//! namespace.
//!
//! Only a positive answer ("exists and is active") is trusted; anything else — not synced yet,
//! unknown name, terminating — falls back to reading storage, so a namespace created a moment
//! ago is never refused. A lost watch empties the cache until it has listed again.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::reflector::Reflector;
use crate::meta;
use crate::resources::ResourceInfo;
use crate::storage::Storage;

/// Namespace name -> terminating.
pub struct NamespaceCache(Reflector<bool>);

impl Default for NamespaceCache {
    fn default() -> Self {
        NamespaceCache(Reflector::new("namespaces", is_terminating))
    }
}

fn is_terminating(obj: &Value) -> bool {
    meta::is_deleting(obj) || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

impl NamespaceCache {
    /// True only when the namespace is known to exist and be active.
    pub fn is_active(&self, name: &str) -> bool {
        self.0.get(name) == Some(false)
    }

    /// Lists and follows namespaces until shutdown, relisting after any failure.
    pub async fn run(&self, storage: Arc<dyn Storage>, info: Arc<ResourceInfo>, shutdown: CancellationToken) {
        self.0.run(storage, info.list_prefix(""), shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let (c, storage, s) = (cache.clone(), Arc::new(mem.clone()), shutdown.clone());
        tokio::spawn(async move { c.run(storage, info, s).await });
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
