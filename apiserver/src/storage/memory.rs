//! [`Storage`] in memory, with etcd's revision and watch semantics, for unit and component tests
//! (and simulated clusters that need no durability).
//!
//! The whole history since the last [`MemoryStorage::compact`] is kept, so a watch can start at
//! any retained revision, and a compacted one fails exactly as etcd's does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use super::{KeyValue, ListPage, Storage, StorageError, Watch, WatchEvent};

#[derive(Default)]
struct State {
    revision: i64,
    /// Key -> (value, mod revision).
    data: BTreeMap<String, (Bytes, i64)>,
    /// Every change after `compacted`, in revision order.
    history: Vec<WatchEvent>,
    compacted: i64,
    /// Per-key history for reads at an old revision: key -> [(revision, value or None if deleted)].
    versions: BTreeMap<String, Vec<(i64, Option<Bytes>)>>,
}

#[derive(Clone)]
pub struct MemoryStorage {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        // etcd starts at revision 1 for an empty store.
        let state = State { revision: 1, ..Default::default() };
        MemoryStorage { state: Arc::new(Mutex::new(state)), events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget history before `revision`, as etcd compaction does.
    pub fn compact(&self, revision: i64) {
        let mut st = self.lock();
        st.compacted = revision;
        st.history.retain(|e| e.revision() > revision);
    }

    fn record(&self, st: &mut State, event: WatchEvent) {
        let (key, value) = match &event {
            WatchEvent::Put { kv, .. } => (kv.key.clone(), Some(kv.value.clone())),
            WatchEvent::Delete { key, .. } => (key.clone(), None),
            WatchEvent::Progress { .. } => return,
        };
        st.versions.entry(key).or_default().push((event.revision(), value));
        st.history.push(event.clone());
        let _ = self.events.send(event);
    }
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        let st = self.lock();
        Ok(st.data.get(key).map(|(v, r)| KeyValue { key: key.to_string(), value: v.clone(), mod_revision: *r }))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> Result<ListPage, StorageError> {
        let st = self.lock();
        if revision > 0 && revision <= st.compacted {
            return Err(StorageError::Compacted { requested: revision, compacted: st.compacted });
        }
        if revision > st.revision {
            return Err(StorageError::FutureRevision { requested: revision });
        }
        let at = if revision > 0 { revision } else { st.revision };
        let mut items = Vec::new();
        let mut more = false;
        let mut count = 0;
        for (key, versions) in st.versions.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let Some((rev, Some(value))) = versions.iter().rev().find(|(r, _)| *r <= at) else {
                continue;
            };
            count += 1;
            if limit > 0 && items.len() == limit {
                more = true;
                continue;
            }
            items.push(KeyValue { key: key.clone(), value: value.clone(), mod_revision: *rev });
        }
        Ok(ListPage { items, revision: at, more, count })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, StorageError> {
        let mut st = self.lock();
        if st.data.contains_key(key) {
            return Err(StorageError::AlreadyExists);
        }
        st.revision += 1;
        let rev = st.revision;
        let value = Bytes::from(value);
        st.data.insert(key.to_string(), (value.clone(), rev));
        self.record(
            &mut st,
            WatchEvent::Put { kv: KeyValue { key: key.to_string(), value, mod_revision: rev }, prev: None },
        );
        Ok(rev)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StorageError> {
        let mut st = self.lock();
        let Some((old, old_rev)) = st.data.get(key).cloned() else {
            return Err(StorageError::NotFound);
        };
        if old_rev != expected {
            return Err(StorageError::Conflict {
                current: Some(KeyValue { key: key.into(), value: old, mod_revision: old_rev }),
            });
        }
        st.revision += 1;
        let rev = st.revision;
        let value = Bytes::from(value);
        st.data.insert(key.to_string(), (value.clone(), rev));
        let prev = Some(KeyValue { key: key.into(), value: old, mod_revision: old_rev });
        self.record(&mut st, WatchEvent::Put { kv: KeyValue { key: key.to_string(), value, mod_revision: rev }, prev });
        Ok(rev)
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StorageError> {
        let mut st = self.lock();
        let Some((old, old_rev)) = st.data.get(key).cloned() else {
            return Err(StorageError::NotFound);
        };
        if old_rev != expected {
            return Err(StorageError::Conflict {
                current: Some(KeyValue { key: key.into(), value: old, mod_revision: old_rev }),
            });
        }
        st.revision += 1;
        let rev = st.revision;
        st.data.remove(key);
        let prev = Some(KeyValue { key: key.into(), value: old, mod_revision: old_rev });
        self.record(&mut st, WatchEvent::Delete { key: key.to_string(), revision: rev, prev });
        Ok(rev)
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Watch, StorageError> {
        let (backlog, mut live) = {
            let st = self.lock();
            if after < st.compacted {
                return Err(StorageError::Compacted { requested: after, compacted: st.compacted });
            }
            // Subscribe under the lock: nothing can be recorded between the backlog and the feed.
            let live = self.events.subscribe();
            let backlog: Vec<WatchEvent> = st.history.iter().filter(|e| e.revision() > after).cloned().collect();
            (backlog, live)
        };
        let prefix = prefix.to_string();
        let (tx, rx) = mpsc::channel(256);
        let (progress_tx, mut progress_rx) = mpsc::channel::<()>(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let matches = |e: &WatchEvent| match e {
                WatchEvent::Put { kv, .. } => kv.key.starts_with(&prefix),
                WatchEvent::Delete { key, .. } => key.starts_with(&prefix),
                WatchEvent::Progress { .. } => true,
            };
            let mut last = after;
            for e in backlog {
                last = e.revision();
                if matches(&e) && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            let mut progress_open = true;
            loop {
                tokio::select! {
                    e = live.recv() => match e {
                        Ok(e) if e.revision() > last => {
                            last = e.revision();
                            if matches(&e) && tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Err(StorageError::Internal("watcher fell behind".into()))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    p = progress_rx.recv(), if progress_open => match p {
                        Some(()) => {
                            let revision = state.lock().unwrap_or_else(|p| p.into_inner()).revision;
                            // Everything up to `revision` was broadcast before the lock was released;
                            // drain it first so progress never overtakes an event.
                            while let Ok(e) = live.try_recv() {
                                if e.revision() > last {
                                    last = e.revision();
                                    if matches(&e) && tx.send(Ok(e)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            if tx.send(Ok(WatchEvent::Progress { revision: revision.max(last) })).await.is_err() {
                                return;
                            }
                        }
                        None => progress_open = false,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Watch { events: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(), progress: progress_tx })
    }

    async fn current_revision(&self) -> Result<i64, StorageError> {
        Ok(self.lock().revision)
    }

    async fn check_health(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compare_and_swap_rejects_stale_revisions() {
        let s = MemoryStorage::new();
        let r1 = s.create("/a", b"1".to_vec()).await.expect("create");
        assert_eq!(s.create("/a", b"x".to_vec()).await, Err(StorageError::AlreadyExists));
        let r2 = s.update("/a", b"2".to_vec(), r1).await.expect("update");
        assert!(r2 > r1);
        assert!(matches!(s.update("/a", b"3".to_vec(), r1).await, Err(StorageError::Conflict { current: Some(_) })));
        assert!(matches!(s.delete("/a", r1).await, Err(StorageError::Conflict { .. })));
        s.delete("/a", r2).await.expect("delete");
        assert_eq!(s.get("/a").await.expect("get"), None);
        assert_eq!(s.update("/a", b"4".to_vec(), r2).await, Err(StorageError::NotFound));
    }

    #[tokio::test]
    async fn lists_page_in_key_order_at_a_fixed_revision() {
        let s = MemoryStorage::new();
        for k in ["/p/c", "/p/a", "/p/b", "/q/x"] {
            s.create(k, k.as_bytes().to_vec()).await.expect("create");
        }
        let page = s.list("/p/", None, 2, 0).await.expect("list");
        assert_eq!(page.items.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["/p/a", "/p/b"]);
        assert!(page.more);
        assert_eq!(page.count, 3, "the count covers the whole range, not the page");
        s.create("/p/bb", b"late".to_vec()).await.expect("create");
        let next = s.list("/p/", Some("/p/b"), 2, page.revision).await.expect("list");
        assert_eq!(
            next.items.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/p/c"],
            "snapshot excludes later writes"
        );
        assert!(!next.more);
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_and_fails_when_compacted() {
        let s = MemoryStorage::new();
        let r1 = s.create("/p/a", b"1".to_vec()).await.expect("create");
        s.create("/other", b"x".to_vec()).await.expect("create");
        let mut w = s.watch("/p/", r1 - 1).await.expect("watch");
        s.update("/p/a", b"2".to_vec(), r1).await.expect("update");
        let first = w.events.next().await.expect("event").expect("ok");
        assert!(matches!(first, WatchEvent::Put { prev: None, .. }));
        let second = w.events.next().await.expect("event").expect("ok");
        assert!(matches!(second, WatchEvent::Put { prev: Some(_), .. }));
        w.progress.send(()).await.expect("progress");
        let p = w.events.next().await.expect("event").expect("ok");
        assert!(matches!(p, WatchEvent::Progress { revision } if revision >= second.revision()));
        s.compact(second.revision());
        assert!(matches!(s.watch("/p/", r1).await.err(), Some(StorageError::Compacted { .. })));
    }
}
