//! Shared informers: one list+watch per resource, whatever number of controllers read it. Each
//! keeps every object in memory (by namespace, then name) and calls its handlers with
//! `(old, new)` on every change, in order, from the watch task; handlers only map the change to
//! keys and queue them, so they never block the watch.
//!
//! The watch is kube-runtime's watcher: it relists when the apiserver answers 410 Gone (or the
//! watch breaks), and the relisted state replaces the old one here, with a handler call for
//! each object that appeared, changed or went meanwhile.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

type Objects<K> = HashMap<String, HashMap<String, Arc<K>>>;
type Handler<K> = Box<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

pub struct Informer<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer { inner: self.inner.clone() }
    }
}

struct Inner<K> {
    objects: RwLock<Objects<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

pub trait Object: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static> Object for K {}

fn names<K: Object>(o: &K) -> (String, String) {
    let m = o.meta();
    (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
}

impl<K: Object> Default for Informer<K> {
    fn default() -> Self {
        Informer {
            inner: Arc::new(Inner {
                objects: RwLock::default(),
                handlers: RwLock::default(),
                synced: tokio::sync::watch::channel(false).0,
            }),
        }
    }
}

impl<K: Object> Informer<K> {
    /// Called with (old, new) for every change: (None, Some) added, (Some, Some) updated,
    /// (Some, None) deleted. Register before `run`.
    pub fn on_change(&self, handler: impl Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync + 'static) {
        self.inner.handlers.write().unwrap_or_else(|e| e.into_inner()).push(Box::new(handler));
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace).and_then(|m| m.get(name)).cloned()
    }

    /// The objects in one namespace (all of a cluster-scoped kind with "").
    pub fn list(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub fn list_all(&self) -> Vec<Arc<K>> {
        self.read().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// The object of this kind that controls `meta` (its controller reference, same UID).
    pub fn controller_of(&self, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Arc<K>> {
        let r = crate::ownership::controller_of(meta).filter(|r| r.kind == K::kind(&()))?;
        let o = self.get(meta.namespace.as_deref().unwrap_or_default(), &r.name)?;
        (o.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(o)
    }

    /// The objects in `meta`'s namespace whose selector matches its labels (candidates to adopt
    /// an orphan); an empty or missing selector matches nothing.
    pub fn selecting(
        &self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        selector_of: impl Fn(&K) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    ) -> Vec<Arc<K>> {
        let labels = meta.labels.clone().unwrap_or_default();
        self.list(meta.namespace.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|o| {
                selector_of(o).is_some_and(|s| !crate::selector::is_empty(s) && crate::selector::matches(s, &labels))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.inner.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        for h in self.inner.handlers.read().unwrap_or_else(|e| e.into_inner()).iter() {
            h(old, new);
        }
    }

    /// Waits for the first complete list.
    pub async fn synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Lists and watches until the stream ends (never, in practice: errors are retried with
    /// backoff).
    pub async fn run(self, api: Api<K>) {
        use kube::runtime::WatchStreamExt;
        let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relist: Option<Objects<K>> = None;
        while let Some(event) = stream.next().await {
            // managedFields are kept by the apiserver for apply; no controller reads them, and
            // they are often the larger part of an object.
            let event = event.map(|e| {
                e.modify(|o| {
                    o.meta_mut().managed_fields = None;
                })
            });
            match event {
                Ok(Event::Init) => relist = Some(Objects::default()),
                Ok(Event::InitApply(o)) => {
                    let (ns, name) = names(&o);
                    relist.get_or_insert_default().entry(ns).or_default().insert(name, Arc::new(o));
                }
                Ok(Event::InitDone) => {
                    self.replace(relist.take().unwrap_or_default());
                    self.inner.synced.send_replace(true);
                }
                Ok(Event::Apply(o)) => {
                    let (ns, name) = names(&o);
                    let new = Arc::new(o);
                    let old = self.write().entry(ns).or_default().insert(name, new.clone());
                    self.notify(old.as_ref(), Some(&new));
                }
                Ok(Event::Delete(o)) => {
                    let (ns, name) = names(&o);
                    let old = self.write().get_mut(&ns).and_then(|m| m.remove(&name));
                    self.notify(Some(&old.unwrap_or_else(|| Arc::new(o))), None);
                }
                Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "Watch failed; retrying"),
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.inner.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh list replaces what was kept: handlers hear of each difference.
    fn replace(&self, fresh: Objects<K>) {
        let old = std::mem::replace(&mut *self.write(), fresh);
        let rv = |o: &K| o.meta().resource_version.clone();
        let fresh: Vec<Arc<K>> = self.list_all();
        for new in &fresh {
            let (ns, name) = names(new.as_ref());
            match old.get(&ns).and_then(|m| m.get(&name)) {
                Some(before) if rv(before) == rv(new) => {}
                before => self.notify(before, Some(new)),
            }
        }
        for (ns, m) in &old {
            for (name, before) in m {
                if self.get(ns, name).is_none() {
                    self.notify(Some(before), None);
                }
            }
        }
    }

    /// Puts objects in directly (component tests of a controller without an apiserver).
    #[cfg(test)]
    pub fn apply(&self, o: K) {
        let (ns, name) = names(&o);
        let new = Arc::new(o);
        let old = self.write().entry(ns).or_default().insert(name, new.clone());
        self.notify(old.as_ref(), Some(&new));
    }
}

/// `namespace/name`, the key controllers queue.
pub fn key_of<K: kube::Resource>(o: &K) -> String {
    let m = o.meta();
    match m.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        _ => m.name.clone().unwrap_or_default(),
    }
}

/// Splits a key back into namespace and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}
