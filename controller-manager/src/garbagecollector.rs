//! The garbage collector: deletes objects whose owners are all gone, and carries out the two
//! deletion modes the apiserver leaves to it through finalizers:
//!
//! - `orphan`: the owner's dependents lose their reference to it, then the finalizer goes;
//! - `foregroundDeletion`: the owner's dependents are deleted (in the foreground too) and the
//!   finalizer goes once no dependent that blocks owner deletion is left.
//!
//! It keeps a graph of every object that has or may be an owner (metadata only, from one watch
//! per resource discovery lists). Before deleting a dependent for a missing owner it asks the
//! apiserver for the owner, so a lagging watch never deletes what still has an owner.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use crate::resources::{self, Resource};
use crate::workqueue::WorkQueue;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// An object in the graph.
#[derive(Clone, Debug, Default)]
struct Node {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid -> dependent uids (the owner may not be in `nodes`).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d.clone(), self.nodes.get(d)?.clone())))
            .collect()
    }
}

/// What to do about a dependent, from its owners' states (pure).
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// An owner exists: keep it (dropping references to the owners listed, which are gone or
    /// being deleted in the foreground).
    Keep { drop_refs: Vec<String> },
    /// Every owner is gone: delete it.
    Delete { foreground: bool },
}

/// Owner states: `Some(true)` exists and is being deleted in the foreground, `Some(false)`
/// exists, `None` gone.
pub fn classify(owners: &[(String, Option<bool>)]) -> Verdict {
    let solid: Vec<&String> = owners.iter().filter(|(_, s)| *s == Some(false)).map(|(u, _)| u).collect();
    let waiting: Vec<String> = owners.iter().filter(|(_, s)| *s == Some(true)).map(|(u, _)| u.clone()).collect();
    let dangling: Vec<String> = owners.iter().filter(|(_, s)| s.is_none()).map(|(u, _)| u.clone()).collect();
    if !solid.is_empty() {
        return Verdict::Keep { drop_refs: dangling.into_iter().chain(waiting).collect() };
    }
    // Owned only by owners deleting in the foreground: go in the foreground too, so they wait.
    Verdict::Delete { foreground: !waiting.is_empty() && dangling.is_empty() }
}

pub struct GarbageCollector {
    client: kube::Client,
    resources: Vec<Resource>,
    graph: Mutex<Graph>,
    /// Object uids to look at: delete (a dependent) or finish deleting (an owner).
    queue: Arc<WorkQueue>,
}

fn node_of(meta: &ObjectMeta, api_version: &str, kind: &str) -> Node {
    Node {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}

/// Whether the collector follows a resource: not events, as upstream's default ignored
/// resources. They are the most numerous objects and rarely owned, and the same objects are
/// served by two groups (core and `events.k8s.io`), which would put each in the graph twice.
fn collected(r: &Resource) -> bool {
    !(r.api.plural == "events" && (r.api.group.is_empty() || r.api.group == "events.k8s.io"))
}

impl GarbageCollector {
    pub async fn new(client: kube::Client) -> Result<Arc<GarbageCollector>, kube::Error> {
        let resources = resources::deletable(&client).await?.into_iter().filter(collected).collect();
        Ok(Arc::new(GarbageCollector {
            client,
            resources,
            graph: Mutex::default(),
            queue: Arc::new(WorkQueue::default()),
        }))
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches every resource into the graph and works the queue until `stop`.
    pub async fn run(self: Arc<Self>, workers: usize, stop: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for r in self.resources.clone() {
            let gc = self.clone();
            tasks.spawn(async move { gc.watch(r).await });
        }
        let gc = self.clone();
        let work = crate::app::work("garbagecollector", self.queue.clone(), workers, stop.clone(), move |uid| {
            let gc = gc.clone();
            async move { gc.process(&uid).await }
        });
        tokio::select! {
            _ = work => {}
            _ = stop.cancelled() => {}
        }
        tasks.shutdown().await;
    }

    async fn watch(&self, r: Resource) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &r.api);
        let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listed = Some(HashSet::new()),
                Ok(Event::InitApply(o)) => {
                    if let Some(uid) = o.metadata.uid.clone() {
                        listed.get_or_insert_default().insert(uid);
                    }
                    self.observe(&o.metadata, &r);
                }
                Ok(Event::InitDone) => {
                    // Objects of this kind the relist no longer has are gone.
                    let seen = listed.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .graph()
                        .nodes
                        .iter()
                        .filter(|(uid, n)| {
                            n.api_version == r.api.api_version && n.kind == r.api.kind && !seen.contains(*uid)
                        })
                        .map(|(uid, _)| uid.clone())
                        .collect();
                    for uid in gone {
                        self.forget(&uid);
                    }
                }
                Ok(Event::Apply(o)) => self.observe(&o.metadata, &r),
                Ok(Event::Delete(o)) => {
                    if let Some(uid) = o.metadata.uid.as_deref() {
                        self.forget(uid);
                    }
                }
                Err(e) => tracing::debug!(resource = %r.api.plural, error = %e, "Watch failed; retrying"),
            }
        }
    }

    fn observe(&self, meta: &ObjectMeta, r: &Resource) {
        let Some(uid) = meta.uid.clone() else { return };
        let node = node_of(meta, &r.api.api_version, &r.api.kind);
        let mut g = self.graph();
        let old_owners: Vec<String> =
            g.nodes.get(&uid).map(|n| n.owners.iter().map(|o| o.uid.clone()).collect()).unwrap_or_default();
        for o in &old_owners {
            if let Some(d) = g.dependents.get_mut(o) {
                d.remove(&uid);
            }
        }
        for o in &node.owners {
            g.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
        }
        let wants_work = !node.owners.is_empty()
            || (node.deleting && node.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND));
        // An owner deleting in the foreground: its dependents must go (and tell it when they have).
        let foreground = node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND);
        let dependents: Vec<String> =
            if foreground { g.dependents.get(&uid).into_iter().flatten().cloned().collect() } else { vec![] };
        g.nodes.insert(uid.clone(), node);
        drop(g);
        if wants_work {
            self.queue.add(uid);
        }
        for d in dependents {
            self.queue.add(d);
        }
    }

    fn forget(&self, uid: &str) {
        let mut g = self.graph();
        let Some(node) = g.nodes.remove(uid) else { return };
        for o in &node.owners {
            if let Some(d) = g.dependents.get_mut(&o.uid) {
                d.remove(uid);
            }
            // An owner waiting in the foreground may be free now.
            if g.nodes.contains_key(&o.uid) {
                self.queue.add(o.uid.clone());
            }
        }
        let dependents: Vec<String> = g.dependents.get(uid).into_iter().flatten().cloned().collect();
        drop(g);
        for d in dependents {
            self.queue.add(d);
        }
    }

    fn api_for(&self, api_version: &str, kind: &str, namespace: &str) -> Option<Api<DynamicObject>> {
        let r = resources::find(&self.resources, api_version, kind)?;
        Some(if r.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &r.api)
        } else {
            Api::all_with(self.client.clone(), &r.api)
        })
    }

    async fn process(&self, uid: &str) -> Result<Option<Duration>, kube::Error> {
        let Some(node) = self.graph().nodes.get(uid).cloned() else { return Ok(None) };
        if node.deleting {
            if node.finalizers.iter().any(|f| f == ORPHAN) {
                return self.orphan_dependents(uid, &node).await;
            }
            if node.finalizers.iter().any(|f| f == FOREGROUND) {
                return self.delete_dependents(uid, &node).await;
            }
            return Ok(None);
        }
        if node.owners.is_empty() {
            return Ok(None);
        }
        let mut states = Vec::new();
        for o in &node.owners {
            states.push((o.uid.clone(), self.owner_state(o, &node.namespace).await?));
        }
        let Some(api) = self.api_for(&node.api_version, &node.kind, &node.namespace) else { return Ok(None) };
        match classify(&states) {
            Verdict::Keep { drop_refs } if drop_refs.is_empty() => Ok(None),
            Verdict::Keep { drop_refs } => {
                let refs: Vec<&OwnerReference> = node.owners.iter().filter(|o| !drop_refs.contains(&o.uid)).collect();
                let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": uid}});
                match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Verdict::Delete { foreground } => {
                let dp = DeleteParams {
                    propagation_policy: Some(if foreground {
                        PropagationPolicy::Foreground
                    } else {
                        PropagationPolicy::Background
                    }),
                    preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
                    ..Default::default()
                };
                tracing::info!(kind = %node.kind, namespace = %node.namespace, name = %node.name, "Deleting an object whose owners are gone");
                match api.delete(&node.name, &dp).await {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// `Some(foreground-deleting)` if the owner exists (asking the apiserver when the graph does
    /// not know it), `None` if it is gone.
    async fn owner_state(&self, owner: &OwnerReference, namespace: &str) -> Result<Option<bool>, kube::Error> {
        let known = self.graph().nodes.get(&owner.uid).cloned();
        if let Some(n) = known {
            return Ok(Some(n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND)));
        }
        let Some(api) = self.api_for(&owner.api_version, &owner.kind, namespace) else {
            // A kind nobody serves cannot own anything.
            return Ok(None);
        };
        match api.get_metadata_opt(&owner.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Ok(Some(
                o.metadata.deletion_timestamp.is_some()
                    && o.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND),
            )),
            _ => Ok(None),
        }
    }

    /// `orphan`: every dependent loses its reference to the owner, then the finalizer goes.
    async fn orphan_dependents(&self, uid: &str, node: &Node) -> Result<Option<Duration>, kube::Error> {
        let dependents = self.graph().dependents_of(uid);
        for (duid, d) in dependents {
            let Some(api) = self.api_for(&d.api_version, &d.kind, &d.namespace) else { continue };
            let refs: Vec<&OwnerReference> = d.owners.iter().filter(|o| o.uid != uid).collect();
            let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": duid}});
            match api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_finalizer(uid, node, ORPHAN).await
    }

    /// `foregroundDeletion`: dependents are deleted (foreground too) unless another owner keeps
    /// them; the finalizer goes when no dependent that blocks owner deletion is left.
    async fn delete_dependents(&self, uid: &str, node: &Node) -> Result<Option<Duration>, kube::Error> {
        let dependents = self.graph().dependents_of(uid);
        let blocking: Vec<&(String, Node)> = dependents
            .iter()
            .filter(|(_, d)| d.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true)))
            .collect();
        if blocking.is_empty() {
            // Non-blocking dependents are collected later as ordinary orphans of a gone owner.
            return self.remove_finalizer(uid, node, FOREGROUND).await;
        }
        // Each dependent is judged by all its owners: one with another live owner only drops
        // its reference to this one; one owned by nothing else is deleted in the foreground.
        for (duid, d) in &dependents {
            if !d.deleting {
                self.queue.add(duid.clone());
            }
        }
        // Dependents going away requeue the owner; look again anyway in case one is stuck.
        Ok(Some(Duration::from_secs(5)))
    }

    async fn remove_finalizer(&self, uid: &str, node: &Node, finalizer: &str) -> Result<Option<Duration>, kube::Error> {
        let Some(api) = self.api_for(&node.api_version, &node.kind, &node.namespace) else { return Ok(None) };
        let Some(current) = api.get_metadata_opt(&node.name).await? else { return Ok(None) };
        if current.metadata.uid.as_deref() != Some(uid) {
            return Ok(None);
        }
        let finalizers: Vec<&String> =
            current.metadata.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": current.metadata.resource_version}});
        match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_either_group_are_not_collected_and_everything_else_is() {
        let r = |group: &str, version: &str, kind: &str, plural: &str| Resource {
            api: kube::discovery::ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced: true,
        };
        assert!(!collected(&r("", "v1", "Event", "events")));
        assert!(!collected(&r("events.k8s.io", "v1", "Event", "events")));
        assert!(collected(&r("", "v1", "Pod", "pods")));
        assert!(collected(&r("example.com", "v1", "Event", "events")), "another group's events are its own");
    }

    #[test]
    fn dependents_follow_their_owners_as_upstream() {
        let s = |u: &str, st: Option<bool>| (u.to_string(), st);
        assert_eq!(classify(&[s("a", Some(false))]), Verdict::Keep { drop_refs: vec![] });
        assert_eq!(classify(&[s("a", Some(false)), s("b", None)]), Verdict::Keep { drop_refs: vec!["b".into()] });
        assert_eq!(classify(&[s("a", Some(false)), s("b", Some(true))]), Verdict::Keep { drop_refs: vec!["b".into()] });
        assert_eq!(classify(&[s("a", None)]), Verdict::Delete { foreground: false });
        assert_eq!(classify(&[s("a", Some(true))]), Verdict::Delete { foreground: true });
        assert_eq!(classify(&[s("a", Some(true)), s("b", None)]), Verdict::Delete { foreground: false });
    }
}
