//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector and owned
//! by the set, as upstream's:
//!
//! - a sync claims the namespace's active pods (keep, adopt orphans, release what no longer
//!   matches), then, unless it still awaits its own earlier writes (expectations), creates or
//!   deletes the difference: at most 500 per sync, creates in slow-start batches of 1, 2, 4, ...
//!   stopping at the first error, deletes in upstream's order (`pods::deletion_order`);
//! - status is recomputed on every sync: replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas (ready for minReadySeconds), observedGeneration and the ReplicaFailure
//!   condition when creating or deleting failed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::events::{Recorder, reference};
use crate::expectations::Expectations;
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::{claim_all, controller_of, controller_reference};
use crate::pods::{self, deletion_order, is_active, is_ready};
use crate::selector;
use crate::workqueue::WorkQueue;

/// Upstream's burstReplicas: the most pods one sync creates or deletes.
pub const BURST: usize = 500;

/// What the controller keeps replicas of: a ReplicaSet, or a ReplicationController (the same
/// controller upstream, with a map for a selector) seen as one.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn as_replica_set(&self) -> ReplicaSet;
}

impl Replicated for ReplicaSet {
    fn as_replica_set(&self) -> ReplicaSet {
        self.clone()
    }
}

impl Replicated for ReplicationController {
    fn as_replica_set(&self) -> ReplicaSet {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
            let labels = spec.remove("selector").unwrap_or_else(|| serde_json::json!({}));
            spec.insert("selector".into(), serde_json::json!({ "matchLabels": labels }));
        }
        v["apiVersion"] = serde_json::json!("apps/v1");
        v["kind"] = serde_json::json!("ReplicaSet");
        serde_json::from_value(v).unwrap_or_default()
    }
}

pub struct ReplicaSetController<K: Replicated = ReplicaSet> {
    client: kube::Client,
    sets: Informer<K>,
    pods: Informer<Pod>,
    pub queue: Arc<WorkQueue>,
    expectations: Expectations,
    events: Recorder,
}

/// What a sync must do about the replica count.
#[derive(Debug, PartialEq)]
pub enum Manage {
    Create(usize),
    /// The pods to delete, first to go first.
    Delete(Vec<Arc<Pod>>),
    Nothing,
}

/// Pure: how many to create, or which to delete, for `want` replicas given the active pods the
/// set owns.
pub fn manage_replicas(want: usize, owned: &[Arc<Pod>]) -> Manage {
    match owned.len() {
        have if have < want => Manage::Create((want - have).min(BURST)),
        have if have > want => {
            let mut pods = owned.to_vec();
            deletion_order(&mut pods);
            pods.truncate((have - want).min(BURST));
            Manage::Delete(pods)
        }
        _ => Manage::Nothing,
    }
}

fn min_ready(rs: &ReplicaSet) -> Duration {
    Duration::from_secs(rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0).max(0) as u64)
}

/// Pure: the status a sync writes. `failure` is (reason, message) when managing replicas failed.
pub fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    failure: Option<(&str, &str)>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_ready(p)).count();
    let available = owned.iter().filter(|p| pods::is_available(p, min_ready(rs), now)).count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> =
        old.conditions.unwrap_or_default().into_iter().filter(|c| c.type_ != "ReplicaFailure").collect();
    if let Some((reason, message)) = failure {
        let previous = rs.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| {
            cs.iter().find(|c| c.type_ == "ReplicaFailure" && c.status == "True" && c.reason.as_deref() == Some(reason))
        });
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: previous.and_then(|c| c.last_transition_time.clone()).or(Some(Time(now))),
        });
    }
    let nonzero = |n: usize| (n > 0).then_some(n as i32);
    ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: nonzero(fully_labeled),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// A pod from the set's template, owned by it, named after it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or_default())),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
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
}

impl<K: Replicated> ReplicaSetController<K> {
    pub fn new(client: kube::Client, sets: &Informer<K>, pods: &Informer<Pod>, events: Recorder) -> Arc<Self> {
        let c = Arc::new(ReplicaSetController {
            client,
            sets: sets.clone(),
            pods: pods.clone(),
            queue: Arc::new(WorkQueue::default()),
            expectations: Expectations::default(),
            events,
        });
        let w: Weak<Self> = Arc::downgrade(&c);
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
        c
    }

    /// The set that controls `pod`, if it is one of ours we know (same kind and UID).
    fn owner_of(&self, pod: &Pod) -> Option<Arc<K>> {
        self.sets.controller_of(&pod.metadata)
    }

    /// Sets whose selector matches an orphan (they may adopt it).
    fn selecting(&self, pod: &Pod) -> Vec<Arc<K>> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        self.sets
            .list(pod.metadata.namespace.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|o| {
                o.as_replica_set()
                    .spec
                    .as_ref()
                    .is_some_and(|s| !selector::is_empty(&s.selector) && selector::matches(&s.selector, &labels))
            })
            .collect()
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        match (old, new) {
            (None, Some(p)) => match self.owner_of(p) {
                Some(rs) => {
                    let key = key_of(rs.as_ref());
                    if pods::is_terminating(p) {
                        self.expectations.deletion_observed(&key, &uid(p));
                    } else {
                        self.expectations.creation_observed(&key);
                    }
                    self.queue.add(key);
                }
                None if controller_of(&p.metadata).is_none() => {
                    for rs in self.selecting(p) {
                        self.queue.add(key_of(rs.as_ref()));
                    }
                }
                None => {}
            },
            (Some(o), Some(n)) => {
                if o.metadata.resource_version == n.metadata.resource_version {
                    return;
                }
                let relabeled = o.metadata.labels != n.metadata.labels;
                let old_ref = controller_of(&o.metadata);
                let new_ref = controller_of(&n.metadata);
                if old_ref != new_ref
                    && let Some(rs) = self.owner_of(o)
                {
                    self.queue.add(key_of(rs.as_ref()));
                }
                match self.owner_of(n) {
                    Some(rs) => {
                        let key = key_of(rs.as_ref());
                        if pods::is_terminating(n) {
                            // Deletion has begun: for the set, the pod is gone.
                            self.expectations.deletion_observed(&key, &uid(n));
                        }
                        let min_ready = min_ready(&rs.as_replica_set());
                        if !min_ready.is_zero() && !is_ready(o) && is_ready(n) {
                            self.queue.add_after(key.clone(), min_ready + Duration::from_secs(1));
                        }
                        self.queue.add(key);
                    }
                    None if new_ref.is_none() && (relabeled || old_ref.is_some()) => {
                        for rs in self.selecting(n) {
                            self.queue.add(key_of(rs.as_ref()));
                        }
                    }
                    None => {}
                }
            }
            (Some(p), None) => {
                if let Some(rs) = self.owner_of(p) {
                    let key = key_of(rs.as_ref());
                    self.expectations.deletion_observed(&key, &uid(p));
                    self.queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    /// Syncs one set; `Ok(Some(d))` asks to be synced again after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(obj) = self.sets.get(ns, name) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let rs = obj.as_replica_set();
        let Some(spec) = rs.spec.as_ref() else { return Ok(None) };
        let owned = self.claim_pods(obj.as_ref(), &rs).await.map_err(SyncError::Claim)?;
        let mut failure: Option<(&'static str, SyncError)> = None;
        if self.expectations.satisfied(key) && rs.metadata.deletion_timestamp.is_none() {
            let want = spec.replicas.unwrap_or(1).max(0) as usize;
            if let Err(e) = self.execute(key, obj.as_ref(), &rs, manage_replicas(want, &owned)).await {
                let reason = if matches!(e, SyncError::Create(_)) { "FailedCreate" } else { "FailedDelete" };
                failure = Some((reason, e));
            }
        }
        let now = Timestamp::now();
        let message = failure.as_ref().map(|(_, e)| e.to_string());
        let status = calculate_status(&rs, &owned, failure.as_ref().map(|(r, _)| *r).zip(message.as_deref()), now);
        if rs.status.as_ref() != Some(&status) {
            let api: Api<K> = Api::namespaced(self.client.clone(), ns);
            let patch = crate::status::status_patch(rs.status.as_ref(), &status);
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(SyncError::Status(e)),
            }
        }
        if let Some((_, e)) = failure {
            return Err(e);
        }
        // A ready pod becomes available minReadySeconds later: look again then.
        let wait = owned.iter().filter_map(|p| pods::until_available(p, min_ready(&rs), now)).min();
        Ok(wait.map(|d| d + Duration::from_millis(100)))
    }

    /// The active pods the set owns after adopting orphans it selects and releasing pods it no
    /// longer selects.
    async fn claim_pods(&self, obj: &K, rs: &ReplicaSet) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = rs.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let active: Vec<Arc<Pod>> = self.pods.list(ns).into_iter().filter(|p| is_active(p)).collect();
        claim_all(&api, obj, active, |p| selector::selects(&selector, &p.metadata)).await
    }

    async fn execute(&self, key: &str, obj: &K, rs: &ReplicaSet, plan: Manage) -> Result<(), SyncError> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        match plan {
            Manage::Nothing => Ok(()),
            Manage::Create(n) => {
                self.expectations.expect_creations(key, n);
                let mut template = pod_from_template(rs);
                template.metadata.owner_references = Some(vec![controller_reference(obj)]);
                let (created, error) = slow_start(n, || async {
                    let pod = api.create(&PostParams::default(), &template).await?;
                    self.events.normal(
                        reference(obj),
                        "SuccessfulCreate",
                        format!("Created pod: {}", pod.metadata.name.unwrap_or_default()),
                    );
                    Ok::<(), kube::Error>(())
                })
                .await;
                // Creations that failed or were never tried will not be observed.
                self.expectations.lower_creations(key, n - created);
                match error {
                    None => Ok(()),
                    // The namespace is being deleted: its content goes, nothing to report.
                    Some(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated") => Ok(()),
                    Some(e) => {
                        self.events.warning(reference(obj), "FailedCreate", format!("Error creating: {e}"));
                        Err(SyncError::Create(e))
                    }
                }
            }
            Manage::Delete(victims) => {
                self.expectations.expect_deletions(key, victims.iter().filter_map(|p| p.metadata.uid.clone()));
                let results = join_all(victims.iter().map(|p| {
                    let api = api.clone();
                    async move {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        (p, api.delete(&name, &DeleteParams::default()).await)
                    }
                }))
                .await;
                let mut first_error = None;
                for (p, r) in results {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    match r {
                        Ok(_) => self.events.normal(reference(obj), "SuccessfulDelete", format!("Deleted pod: {name}")),
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            self.expectations.deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default())
                        }
                        Err(e) => {
                            self.expectations.deletion_observed(key, p.metadata.uid.as_deref().unwrap_or_default());
                            self.events.warning(reference(obj), "FailedDelete", format!("Error deleting: {e}"));
                            first_error.get_or_insert(e);
                        }
                    }
                }
                first_error.map_or(Ok(()), |e| Err(SyncError::Delete(e)))
            }
        }
    }
}

/// Runs `make` `n` times in batches of 1, 2, 4, ... (each batch concurrently), stopping after
/// the first batch with an error, as upstream's slowStartBatch: a quota or admission error costs
/// one request, not `n`. Returns how many succeeded and the first error.
pub async fn slow_start<F, Fut, E>(n: usize, make: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let (mut done, mut batch) = (0, 1);
    while done < n {
        let size = batch.min(n - done);
        let results = join_all((0..size).map(|_| make())).await;
        let mut error = None;
        for r in results {
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_some() {
            return (done, error);
        }
        batch *= 2;
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::testing::pod;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .expect("rs")
    }

    #[test]
    fn a_replication_controller_is_seen_as_a_replica_set_with_its_labels_as_the_selector() {
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rc", "uid": "u"},
            "spec": {"replicas": 2, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 1, "readyReplicas": 1}
        }))
        .expect("rc");
        let rs = rc.as_replica_set();
        let spec = rs.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels.expect("labels")["app"], "web");
        assert_eq!(rs.status.map(|s| (s.replicas, s.ready_replicas)), Some((1, Some(1))));
    }

    #[test]
    fn creates_the_shortfall_and_deletes_the_surplus_worst_first() {
        let at = Some("2026-01-01T00:00:00Z");
        let pods = vec![pod("a", "Running", "n1", at), pod("b", "Pending", "", None), pod("c", "Running", "n2", None)];
        assert_eq!(manage_replicas(5, &pods), Manage::Create(2));
        assert_eq!(manage_replicas(3, &pods), Manage::Nothing);
        let Manage::Delete(victims) = manage_replicas(1, &pods) else { panic!("delete") };
        let names: Vec<_> = victims.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
        assert_eq!(names, ["b", "c"], "unscheduled, then not ready; the ready one stays");
        assert_eq!(manage_replicas(2000, &[]), Manage::Create(BURST), "at most 500 per sync");
    }

    #[test]
    fn status_counts_labeled_ready_and_available_replicas() {
        let set = rs(3, 10);
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("time");
        let pods = vec![
            pod("old", "Running", "n1", Some("2026-01-01T00:00:00Z")),
            pod("fresh", "Running", "n1", Some("2026-01-01T00:00:25Z")),
            pod("unready", "Running", "n1", None),
        ];
        let s = calculate_status(&set, &pods, None, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, None, "the pods lack tier=front");
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1), "fresh is ready for 5 s of the 10 needed");
        assert_eq!(s.observed_generation, Some(3));
        assert!(s.conditions.is_none());
        let failed = calculate_status(&set, &pods, Some(("FailedCreate", "quota")), now);
        let c = &failed.conditions.expect("conditions")[0];
        assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("ReplicaFailure", Some("FailedCreate")));
    }

    #[test]
    fn pods_come_from_the_template_and_are_owned_by_the_set() {
        let p = pod_from_template(&rs(1, 0));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.labels.expect("labels")["tier"], "front");
        let owner = &p.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("ReplicaSet", "rs-uid", Some(true)));
    }

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_one() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start(10, || async {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            if i == 4 { Err("quota") } else { Ok(()) }
        })
        .await;
        // Batches 1, 2, 4: the 5th call (in the third batch) fails, the batch finishes, no more.
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!((ok, err), (6, Some("quota")));
        let (ok, err) = slow_start(10, || async { Ok::<(), ()>(()) }).await;
        assert_eq!((ok, err), (10, None));
    }
}
