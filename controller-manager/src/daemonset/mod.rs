//! The DaemonSet controller: one daemon pod on every node the pod template fits, as upstream's:
//!
//! - a node fits when the template's nodeSelector and required node affinity match it and the
//!   pod, with the tolerations every daemon pod gets, tolerates its NoSchedule and NoExecute
//!   taints (`eligibility`);
//! - a sync claims the namespace's pods (keep, adopt orphans, release what no longer matches),
//!   groups them by the node they are on or pinned to, and, unless it awaits its own earlier
//!   writes (expectations), creates the missing pods (slow start) pinned to their node by a
//!   `metadata.name` matchFields node affinity for the scheduler to bind, deletes surplus and
//!   misplaced pods, and deletes failed pods (each node backing off from 1 s to 15 min) so they
//!   are replaced (`plan::manage`);
//! - with nothing else to do, a RollingUpdate DaemonSet replaces pods of old revisions node by
//!   node within maxUnavailable, or with maxSurge a new pod first (`plan::rolling_update`);
//!   OnDelete leaves old pods until someone deletes them;
//! - every template gets a ControllerRevision (`history`), which `kubectl rollout history` and
//!   `undo` use; revisions past `revisionHistoryLimit` that no pod runs are deleted; a hash
//!   collision bumps `status.collisionCount`;
//! - status is recomputed on every sync (`plan::calculate_status`).

pub mod backoff;
pub mod eligibility;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::events::{Recorder, reference};
use crate::expectations::Expectations;
use crate::history::{self, HistoryError};
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::{claim_all, controller_of, controller_reference};
use crate::pods::{self, is_ready};
use crate::replicaset::slow_start;
use crate::selector;
use crate::workqueue::WorkQueue;
use backoff::FailedPodsBackoff;
use eligibility::{pin_to_node, target_node};
use plan::{REVISION_HASH_LABEL, TEMPLATE_GENERATION_LABEL};

/// Upstream's burstReplicas: the most pods one sync creates or deletes.
pub const BURST: usize = 250;

pub struct DaemonSetController {
    client: kube::Client,
    sets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    pub queue: Arc<WorkQueue>,
    expectations: Expectations,
    events: Recorder,
    failed_backoff: Mutex<FailedPodsBackoff>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("claiming pods: {0}")]
    Claim(#[source] kube::Error),
    #[error("creating pods: {0}")]
    Create(#[source] kube::Error),
    #[error("deleting pods: {0}")]
    Delete(#[source] kube::Error),
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The daemon pod for `node`: the template with the daemon tolerations, pinned to the node,
/// labelled with the revision, owned by the DaemonSet.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut spec = plan::daemon_pod_spec(ds);
    pin_to_node(&mut spec, node);
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    if let Some(g) = plan::template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.metadata.name.as_deref().unwrap_or_default())),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Whether a node change can change where daemon pods belong (not just a heartbeat).
fn node_changed(old: &Node, new: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    let spec = |n: &Node| n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable));
    old.metadata.labels != new.metadata.labels || spec(old) != spec(new) || ready(old) != ready(new)
}

impl DaemonSetController {
    pub fn new(
        client: kube::Client,
        sets: &Informer<DaemonSet>,
        pods: &Informer<Pod>,
        nodes: &Informer<Node>,
        revisions: &Informer<ControllerRevision>,
        events: Recorder,
    ) -> Arc<DaemonSetController> {
        let c = Arc::new(DaemonSetController {
            client,
            sets: sets.clone(),
            pods: pods.clone(),
            nodes: nodes.clone(),
            revisions: revisions.clone(),
            queue: Arc::new(WorkQueue::default()),
            expectations: Expectations::default(),
            events,
            failed_backoff: Mutex::new(FailedPodsBackoff::default()),
        });
        let w: Weak<DaemonSetController> = Arc::downgrade(&c);
        sets.on_change(move |old, new| {
            if let (Some(c), Some(o)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(o.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        pods.on_change(move |old, new| {
            if let Some(c) = w.upgrade() {
                c.pod_changed(old.map(Arc::as_ref), new.map(Arc::as_ref));
            }
        });
        let w = Arc::downgrade(&c);
        revisions.on_change(move |old, new| {
            let (Some(c), Some(r)) = (w.upgrade(), new.or(old)) else { return };
            if let Some(ds) = c.sets.controller_of(&r.metadata) {
                c.queue.add(key_of(ds.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        nodes.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            if let (Some(o), Some(n)) = (old, new)
                && !node_changed(o, n)
            {
                return;
            }
            for ds in c.sets.list_all() {
                c.queue.add(key_of(ds.as_ref()));
            }
        });
        c
    }

    /// The DaemonSet that controls `pod`, if we know it (same UID).
    fn owner_of(&self, pod: &Pod) -> Option<Arc<DaemonSet>> {
        self.sets.controller_of(&pod.metadata)
    }

    /// DaemonSets whose selector matches an orphan (they may adopt it).
    fn selecting(&self, pod: &Pod) -> Vec<Arc<DaemonSet>> {
        self.sets.selecting(&pod.metadata, |ds| ds.spec.as_ref().map(|s| &s.selector))
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        match (old, new) {
            (None, Some(p)) => match self.owner_of(p) {
                Some(ds) => {
                    let key = key_of(ds.as_ref());
                    if pods::is_terminating(p) {
                        self.expectations.deletion_observed(&key, &uid(p));
                    } else {
                        self.expectations.creation_observed(&key);
                    }
                    self.queue.add(key);
                }
                None if controller_of(&p.metadata).is_none() => {
                    for ds in self.selecting(p) {
                        self.queue.add(key_of(ds.as_ref()));
                    }
                }
                None => {}
            },
            (Some(o), Some(n)) => {
                if o.metadata.resource_version == n.metadata.resource_version {
                    return;
                }
                let old_ref = controller_of(&o.metadata);
                let new_ref = controller_of(&n.metadata);
                if old_ref != new_ref
                    && let Some(ds) = self.owner_of(o)
                {
                    self.queue.add(key_of(ds.as_ref()));
                }
                match self.owner_of(n) {
                    Some(ds) => {
                        let key = key_of(ds.as_ref());
                        if pods::is_terminating(n) {
                            self.expectations.deletion_observed(&key, &uid(n));
                        }
                        let min_ready = plan::min_ready(&ds);
                        if !min_ready.is_zero() && !is_ready(o) && is_ready(n) {
                            self.queue.add_after(key.clone(), min_ready + Duration::from_secs(1));
                        }
                        self.queue.add(key);
                    }
                    None if new_ref.is_none() && (o.metadata.labels != n.metadata.labels || old_ref.is_some()) => {
                        for ds in self.selecting(n) {
                            self.queue.add(key_of(ds.as_ref()));
                        }
                    }
                    None => {}
                }
            }
            (Some(p), None) => {
                if let Some(ds) = self.owner_of(p) {
                    let key = key_of(ds.as_ref());
                    self.expectations.deletion_observed(&key, &uid(p));
                    self.queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    /// Syncs one DaemonSet; `Ok(Some(d))` asks to be synced again after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(ds) = self.sets.get(ns, name) else {
            self.expectations.forget(key);
            self.backoff().forget(key);
            return Ok(None);
        };
        let Some(spec) = ds.spec.as_ref() else { return Ok(None) };
        // Until the first lists arrive, every node would look empty or gone.
        tokio::join!(self.pods.synced(), self.nodes.synced());
        if selector::is_empty(&spec.selector) {
            // An empty selector would claim every pod of the namespace; upstream refuses it.
            let message = "This daemon set is selecting all pods. A non-empty selector is required.";
            self.events.warning(reference(ds.as_ref()), "SelectingAll", message.into());
            return Ok(None);
        }
        let owned = self.claim_pods(&ds).await.map_err(SyncError::Claim)?;
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in owned {
            if let Some(node) = target_node(&p) {
                by_node.entry(node.to_string()).or_default().push(p.clone());
            }
        }
        let nodes = self.nodes.list_all();
        let fits = plan::fits(&ds, &nodes);
        let hash = plan::template_hash(&ds);
        if ds.metadata.deletion_timestamp.is_none() {
            match self.sync_history(&ds, &hash, &by_node).await {
                Err(SyncError::History(HistoryError::Collision(_))) => {
                    let count = ds.status.as_ref().and_then(|s| s.collision_count);
                    history::bump_collision_count(&self.client, ds.as_ref(), count).await.map_err(SyncError::Status)?;
                    return Ok(None);
                }
                r => r?,
            }
        }
        let now = Timestamp::now();
        let mut again: Option<Duration> = None;
        let mut failure = None;
        if self.expectations.satisfied(key) && ds.metadata.deletion_timestamp.is_none() {
            let surge = plan::allows_surge(&ds);
            let manage =
                plan::manage(&fits, &by_node, &hash, plan::template_generation(&ds), surge, plan::min_ready(&ds), now);
            let (mut create, mut delete) = (Vec::new(), Vec::new());
            if manage.is_empty() {
                let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
                    == "RollingUpdate";
                if rolling {
                    let step = plan::rolling_update(&ds, &fits, &by_node, &hash, now);
                    (create, delete) = (step.create, step.delete);
                }
            } else {
                create = manage.create;
                delete = manage.delete;
                for (node, pod) in manage.failed {
                    let wait = self.backoff().next(key, &node, Instant::now());
                    match wait {
                        Some(wait) => again = Some(again.map_or(wait, |a| a.min(wait))),
                        None => {
                            self.events.warning(
                                reference(ds.as_ref()),
                                "FailedDaemonPod",
                                format!(
                                    "Found failed daemon pod {ns}/{} on node {node}, will try to kill it",
                                    pod.metadata.name.as_deref().unwrap_or_default()
                                ),
                            );
                            delete.push(pod);
                        }
                    }
                }
            }
            create.truncate(BURST);
            delete.truncate(BURST);
            if let Err(e) = self.sync_nodes(key, &ds, &hash, create, delete).await {
                failure = Some(e);
            }
        }
        let status = plan::calculate_status(&ds, &fits, &by_node, &hash, now);
        if ds.status.as_ref() != Some(&status) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            let patch = crate::status::status_patch(ds.status.as_ref(), &status);
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(SyncError::Status(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // A ready pod becomes available minReadySeconds later: look again then.
        let min_ready = plan::min_ready(&ds);
        let available = by_node.values().flatten().filter_map(|p| pods::until_available(p, min_ready, now)).min();
        let wait = [again, available.map(|d| d + Duration::from_millis(100))].into_iter().flatten().min();
        Ok(wait)
    }

    /// Brings the DaemonSet's ControllerRevisions up to date with its template.
    async fn sync_history(
        &self,
        ds: &DaemonSet,
        hash: &str,
        by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Result<(), SyncError> {
        let Some(spec) = ds.spec.as_ref() else { return Ok(()) };
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        let in_use = by_node
            .values()
            .flatten()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL).map(|h| format!("{name}-{h}")))
            .collect();
        let owner = history::Owner {
            meta: &ds.metadata,
            reference: controller_reference(ds),
            template: &spec.template,
            hash,
            history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        };
        Ok(history::sync(&self.client, &self.revisions, &owner, &in_use).await?)
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, FailedPodsBackoff> {
        self.failed_backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pods the DaemonSet owns (deleting and finished ones included) after adopting orphans
    /// it selects and releasing pods it no longer selects.
    async fn claim_pods(&self, ds: &DaemonSet) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = ds.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        claim_all(&api, ds, self.pods.list(ns), |p| selector::selects(&selector, &p.metadata)).await
    }

    /// Upstream's syncNodes: deletes `delete` and creates a pod on each node of `create`
    /// (slow start), both under expectations.
    async fn sync_nodes(
        &self,
        key: &str,
        ds: &DaemonSet,
        hash: &str,
        create: Vec<String>,
        delete: Vec<Arc<Pod>>,
    ) -> Result<(), SyncError> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut first_error = None;
        if !create.is_empty() {
            let n = create.len();
            self.expectations.expect_creations(key, n);
            let next = std::sync::atomic::AtomicUsize::new(0);
            let (created, error) = slow_start(n, || async {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let pod = new_pod(ds, &create[i], hash);
                let pod = api.create(&PostParams::default(), &pod).await?;
                self.events.normal(
                    reference(ds),
                    "SuccessfulCreate",
                    format!("Created pod: {}", pod.metadata.name.unwrap_or_default()),
                );
                Ok::<(), kube::Error>(())
            })
            .await;
            self.expectations.lower_creations(key, n - created);
            if let Some(e) = error {
                self.events.warning(reference(ds), "FailedCreate", format!("Error creating: {e}"));
                first_error = Some(SyncError::Create(e));
            }
        }
        if !delete.is_empty() {
            self.expectations.expect_deletions(key, delete.iter().filter_map(|p| p.metadata.uid.clone()));
            let results = join_all(delete.iter().map(|p| {
                let api = api.clone();
                async move {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    (p, api.delete(&name, &DeleteParams::default()).await)
                }
            }))
            .await;
            for (p, r) in results {
                let name = p.metadata.name.clone().unwrap_or_default();
                match r {
                    Ok(_) => self.events.normal(reference(ds), "SuccessfulDelete", format!("Deleted pod: {name}")),
                    Err(e) => {
                        self.expectations.deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default());
                        if !matches!(&e, kube::Error::Api(a) if a.code == 404) {
                            self.events.warning(reference(ds), "FailedDelete", format!("Error deleting: {e}"));
                            first_error.get_or_insert(SyncError::Delete(e));
                        }
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::plan::testing::daemon_set;
    use super::*;

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_labelled_and_owned() {
        let ds = daemon_set(serde_json::json!({}));
        let p = new_pod(&ds, "n3", "abc");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("ds-"));
        let labels = p.metadata.labels.clone().expect("labels");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[REVISION_HASH_LABEL], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "2");
        assert_eq!(target_node(&p), Some("n3"));
        assert!(p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(), "the scheduler binds it");
        let owner = &p.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("DaemonSet", "ds-uid", Some(true)));
        let tolerations = p.spec.and_then(|s| s.tolerations).expect("tolerations");
        assert!(tolerations.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable")));
    }

    #[test]
    fn heartbeats_do_not_count_as_node_changes_but_labels_taints_and_readiness_do() {
        let n = |labels: serde_json::Value, ready: &str, beat: &str| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}}))
            .expect("node")
        };
        let a = n(serde_json::json!({}), "True", "2026-01-01T00:00:00Z");
        assert!(!node_changed(&a, &n(serde_json::json!({}), "True", "2026-01-01T00:00:10Z")));
        assert!(node_changed(&a, &n(serde_json::json!({"x": "y"}), "True", "2026-01-01T00:00:00Z")));
        assert!(node_changed(&a, &n(serde_json::json!({}), "False", "2026-01-01T00:00:00Z")));
    }
}
