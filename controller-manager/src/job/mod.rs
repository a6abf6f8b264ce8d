//! The Job controller: runs a Job's pods to completion, as upstream 1.33's.
//!
//! A sync claims the pods (keep its own, adopt orphans its selector matches, release pods it no
//! longer selects), asks [`plan::plan`] what to do, and does it in this order:
//!
//! 1. create pods (slow-start batches 1, 2, 4, ..., at most 500 a sync) or delete them;
//! 2. write the status, with the newly finished pods in `uncountedTerminatedPods`;
//! 3. remove the `batch.kubernetes.io/job-tracking` finalizer from those pods;
//! 4. write the status again with them counted and, if the Job is done, its terminal
//!    condition; then record `Completed` or the failure's reason as an event.
//!
//! Finished pods are tracked with the finalizer, as upstream: every pod is created holding it,
//! so a finished pod cannot vanish (pod GC, `kubectl delete`) before it is counted, and it is
//! counted once (see `plan`). Finished Jobs keep their pods; only the active ones are deleted
//! when a Job fails. A pod still holding the finalizer whose Job is gone or finished is an
//! orphan: it is queued under the key `orphan-pod:<ns>/<name>` and released.
//!
//! The pod re-creation backoff after failures (10 s doubling, capped at 6 min) is read from the
//! finished pods that still exist (failures since the last success, from the last failure's
//! finish), not from memory: a restarted controller keeps waiting where the last one stopped.
//!
//! As upstream: a Job whose `spec.managedBy` names another controller is left alone; pods
//! deleted by a suspension count as failed (unless a pod failure policy or
//! `podReplacementPolicy: Failed` says only pods that reached Failed count, in which case
//! terminating pods also hold back their replacements). Not done: metrics, and upstream's
//! batching of pod-triggered syncs into one per second.

pub mod failure;
pub mod indexes;
pub mod plan;
pub mod template;
pub mod ttl;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::events::{Recorder, reference};
use crate::expectations::Expectations;
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::{Claim, claim, controller_of, controller_reference};
use crate::replicaset::slow_start;
use crate::selector;
use crate::workqueue::WorkQueue;
use plan::{NewPod, Observed, finished_condition, has_tracking_finalizer, uid};
use template::{TRACKING_FINALIZER, pod_from_template};

/// Queue keys of orphaned pods to release start with this (a namespace cannot contain ':').
pub const ORPHAN_PREFIX: &str = "orphan-pod:";
/// The only `spec.managedBy` this controller syncs (unset means the same).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";

pub struct JobController {
    client: kube::Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    pub queue: Arc<WorkQueue>,
    expectations: Expectations,
    /// Pods whose finalizer removal was sent and not yet seen by the informer.
    untracking: Mutex<HashSet<String>>,
    events: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("claiming pods: {0}")]
    Claim(#[source] kube::Error),
    #[error("creating pods: {0}")]
    Create(#[source] kube::Error),
    #[error("deleting pods: {0}")]
    Delete(#[source] kube::Error),
    #[error("removing the tracking finalizer: {0}")]
    Untrack(#[source] kube::Error),
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),
    #[error("reading the Job of an orphaned pod: {0}")]
    Owner(#[source] kube::Error),
}

fn managed_elsewhere(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.managed_by.as_deref()).is_some_and(|m| m != MANAGED_BY)
}

/// The strategic merge patch that drops the tracking finalizer.
fn untrack_patch() -> serde_json::Value {
    serde_json::json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}})
}

impl JobController {
    pub fn new(
        client: kube::Client,
        jobs: &Informer<Job>,
        pods: &Informer<Pod>,
        events: Recorder,
    ) -> Arc<JobController> {
        let c = Arc::new(JobController {
            client,
            jobs: jobs.clone(),
            pods: pods.clone(),
            queue: Arc::new(WorkQueue::default()),
            expectations: Expectations::default(),
            untracking: Mutex::default(),
            events,
        });
        let w: Weak<JobController> = Arc::downgrade(&c);
        jobs.on_change(move |old, new| {
            if let Some(c) = w.upgrade() {
                c.job_changed(old.map(Arc::as_ref), new.map(Arc::as_ref));
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

    fn untracking(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.untracking.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn job_changed(&self, old: Option<&Job>, new: Option<&Job>) {
        match (old, new) {
            (_, Some(j)) => self.queue.add(key_of(j)),
            (Some(j), None) => {
                self.queue.add(key_of(j));
                // Its pods will not be counted any more: let them go.
                let ns = j.metadata.namespace.as_deref().unwrap_or_default();
                for p in self.pods.list(ns) {
                    if has_tracking_finalizer(&p)
                        && controller_of(&p.metadata).is_some_and(|r| Some(&r.uid) == j.metadata.uid.as_ref())
                    {
                        self.queue.add(format!("{ORPHAN_PREFIX}{}", key_of(p.as_ref())));
                    }
                }
            }
            (None, None) => {}
        }
    }

    /// The Job that controls `pod`, if we know it (same UID).
    fn owner_of(&self, pod: &Pod) -> Option<Arc<Job>> {
        self.jobs.controller_of(&pod.metadata)
    }

    /// Jobs whose selector matches an orphan (they may adopt it).
    fn selecting(&self, pod: &Pod) -> Vec<Arc<Job>> {
        self.jobs.selecting(&pod.metadata, |j| j.spec.as_ref().and_then(|s| s.selector.as_ref()))
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let Some(current) = new.or(old) else { return };
        let id = uid(current).to_string();
        if new.is_none_or(|p| !has_tracking_finalizer(p)) {
            self.untracking().remove(&id);
        }
        if let (Some(o), Some(n)) = (old, new)
            && o.metadata.resource_version == n.metadata.resource_version
        {
            return;
        }
        // A pod that changed owner: its former Job looks again.
        if let (Some(o), Some(n)) = (old, new)
            && controller_of(&o.metadata) != controller_of(&n.metadata)
            && let Some(job) = self.owner_of(o)
        {
            self.queue.add(key_of(job.as_ref()));
        }
        match self.owner_of(current) {
            Some(job) => {
                let key = key_of(job.as_ref());
                match (old, new) {
                    (None, Some(p)) if !crate::pods::is_terminating(p) => self.expectations.creation_observed(&key),
                    (_, Some(p)) if crate::pods::is_terminating(p) => self.expectations.deletion_observed(&key, &id),
                    (Some(_), None) => self.expectations.deletion_observed(&key, &id),
                    _ => {}
                }
                if new.is_some_and(has_tracking_finalizer) && finished_condition(&job).is_some() {
                    self.queue.add(format!("{ORPHAN_PREFIX}{}", key_of(current)));
                }
                self.queue.add(key);
            }
            None => {
                let Some(p) = new else { return };
                // No Job we know counts it: released (an adopting Job puts the finalizer back).
                if has_tracking_finalizer(p) {
                    self.queue.add(format!("{ORPHAN_PREFIX}{}", key_of(p)));
                }
                if controller_of(&p.metadata).is_none() {
                    for job in self.selecting(p) {
                        self.queue.add(key_of(job.as_ref()));
                    }
                }
            }
        }
    }

    /// Syncs one Job (or releases one orphaned pod); `Ok(Some(d))` asks to be synced again
    /// after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        // Acting before both caches are full would recreate pods that exist.
        tokio::join!(self.jobs.synced(), self.pods.synced());
        if let Some(pod_key) = key.strip_prefix(ORPHAN_PREFIX) {
            return self.release_orphan(pod_key).await.map(|()| None);
        }
        let (ns, name) = split_key(key);
        let Some(job) = self.jobs.get(ns, name) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if managed_elsewhere(&job) || finished_condition(&job).is_some() {
            return Ok(None);
        }
        let mut owned = self.claim_pods(&job).await.map_err(SyncError::Claim)?;
        owned.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name).cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        let untracking = self.untracking().clone();
        let may_manage = self.expectations.satisfied(key) && job.metadata.deletion_timestamp.is_none();
        let now = Timestamp::now();
        let mut plan = plan::plan(&job, &Observed { pods: &owned, untracking: &untracking, may_manage, now });
        for n in plan.notes.drain(..) {
            if n.warning {
                self.events.warning(reference(job.as_ref()), n.reason, n.message);
            } else {
                self.events.normal(reference(job.as_ref()), n.reason, n.message);
            }
        }

        let (not_created, not_deleted, manage_error) = self.manage(key, &job, &plan.create, &plan.delete).await;
        let s = &mut plan.status;
        s.active = Some(s.active.unwrap_or(0) - not_created as i32 + not_deleted as i32).filter(|n| *n > 0);
        s.terminating = s.terminating.map(|t| t - not_deleted as i32);

        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let job = self.write_status(&api, job, &plan.status).await?;
        let (released, untrack_error) = self.untrack(ns, &plan.untrack).await;
        let mut status = plan.status.clone();
        plan::settle(&mut status, |u| released.contains(u));
        let finished = plan::finish(&mut status, plan.finish.as_ref(), now);
        let job = self.write_status(&api, job, &status).await?;
        if finished && let Some(c) = plan.finish.as_ref() {
            if c.type_ == "Complete" {
                self.events.normal(reference(job.as_ref()), "Completed", "Job completed".into());
            } else {
                let reason = match c.reason.as_deref() {
                    Some("BackoffLimitExceeded") => "BackoffLimitExceeded",
                    Some("DeadlineExceeded") => "DeadlineExceeded",
                    Some("PodFailurePolicy") => "PodFailurePolicy",
                    Some("MaxFailedIndexesExceeded") => "MaxFailedIndexesExceeded",
                    Some("FailedIndexes") => "FailedIndexes",
                    _ => "Failed",
                };
                self.events.warning(reference(job.as_ref()), reason, c.message.clone().unwrap_or_default());
            }
            // Pods that kept the finalizer (a failed removal) are released as orphans.
            for p in owned.iter().filter(|p| has_tracking_finalizer(p) && !released.contains(uid(p))) {
                self.queue.add(format!("{ORPHAN_PREFIX}{}", key_of(p.as_ref())));
            }
        }
        if let Some(e) = manage_error.or(untrack_error) {
            return Err(e);
        }
        Ok(plan.requeue)
    }

    /// Writes `status` unless the Job has it already; returns the Job as stored.
    async fn write_status(&self, api: &Api<Job>, job: Arc<Job>, status: &JobStatus) -> Result<Arc<Job>, SyncError> {
        if job.status.as_ref() == Some(status) {
            return Ok(job);
        }
        let mut updated = (*job).clone();
        updated.status = Some(status.clone());
        let name = job.metadata.name.as_deref().unwrap_or_default();
        let stored = api.replace_status(name, &PostParams::default(), &updated).await.map_err(SyncError::Status)?;
        Ok(Arc::new(stored))
    }

    /// Creates and deletes pods; returns how many creations and deletions did not happen and
    /// the first error.
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        create: &[NewPod],
        delete: &[Arc<Pod>],
    ) -> (usize, usize, Option<SyncError>) {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut error = None;
        let mut not_deleted = 0;
        if !delete.is_empty() {
            self.expectations.expect_deletions(key, delete.iter().map(|p| uid(p).to_string()));
            let results = futures::future::join_all(delete.iter().map(|p| {
                let api = api.clone();
                async move {
                    (p, api.delete(p.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await)
                }
            }))
            .await;
            for (p, r) in results {
                let name = p.metadata.name.clone().unwrap_or_default();
                match r {
                    Ok(_) => self.events.normal(reference(job), "SuccessfulDelete", format!("Deleted pod: {name}")),
                    Err(kube::Error::Api(e)) if e.code == 404 => self.expectations.deletion_observed(key, uid(p)),
                    Err(e) => {
                        not_deleted += 1;
                        self.expectations.deletion_observed(key, uid(p));
                        self.events.warning(reference(job), "FailedDelete", format!("Error deleting: {e}"));
                        error.get_or_insert(SyncError::Delete(e));
                    }
                }
            }
        }
        let mut not_created = 0;
        if !create.is_empty() {
            self.expectations.expect_creations(key, create.len());
            let next = std::sync::atomic::AtomicUsize::new(0);
            let (created, e) = slow_start(create.len(), || {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let spec = create.get(i).copied().unwrap_or(NewPod { index: None, index_failures: None });
                let api = api.clone();
                async move {
                    let pod = pod_from_template(job, spec.index, spec.index_failures);
                    let pod = api.create(&PostParams::default(), &pod).await?;
                    self.events.normal(
                        reference(job),
                        "SuccessfulCreate",
                        format!("Created pod: {}", pod.metadata.name.unwrap_or_default()),
                    );
                    Ok::<(), kube::Error>(())
                }
            })
            .await;
            not_created = create.len() - created;
            self.expectations.lower_creations(key, not_created);
            if let Some(e) = e {
                self.events.warning(reference(job), "FailedCreate", format!("Error creating: {e}"));
                error.get_or_insert(SyncError::Create(e));
            }
        }
        (not_created, not_deleted, error)
    }

    /// Removes the tracking finalizer from `pods`; returns the UIDs now free of it (or gone)
    /// and the first error.
    async fn untrack(&self, ns: &str, pods: &[Arc<Pod>]) -> (HashSet<String>, Option<SyncError>) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // Recorded before sending, so the informer's event (which clears it) cannot come first.
        self.untracking().extend(pods.iter().map(|p| uid(p).to_string()));
        let targets: Vec<(String, String)> =
            pods.iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), uid(p).to_string())).collect();
        let requests = targets.into_iter().map(|(name, id)| {
            let api = api.clone();
            async move {
                let r = match api.patch(&name, &PatchParams::default(), &Patch::Strategic(untrack_patch())).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                };
                (id, r)
            }
        });
        let results: Vec<(String, Result<(), kube::Error>)> =
            futures::stream::iter(requests).buffer_unordered(50).collect().await;
        let mut released = HashSet::new();
        let mut error = None;
        for (id, r) in results {
            match r {
                Ok(()) => {
                    released.insert(id);
                }
                Err(e) => {
                    self.untracking().remove(&id);
                    error.get_or_insert(SyncError::Untrack(e));
                }
            }
        }
        (released, error)
    }

    /// Releases a pod holding the tracking finalizer whose Job is gone or finished. The Job is
    /// read from the apiserver before concluding it is gone: the cache may be behind.
    async fn release_orphan(&self, pod_key: &str) -> Result<(), SyncError> {
        let (ns, name) = split_key(pod_key);
        let Some(pod) = self.pods.get(ns, name) else { return Ok(()) };
        if !has_tracking_finalizer(&pod) {
            return Ok(());
        }
        if let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "Job") {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
            let live = jobs.get_opt(&r.name).await.map_err(SyncError::Owner)?;
            if let Some(job) = live.filter(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()))
                && finished_condition(&job).is_none()
            {
                // Still running: its own sync counts and releases the pod.
                self.queue.add(key_of(&job));
                return Ok(());
            }
        }
        let (_, error) = self.untrack(ns, &[pod]).await;
        error.map_or(Ok(()), Err)
    }

    /// The pods the Job owns after adopting orphans it selects and releasing pods it no longer
    /// selects, finished ones included.
    async fn claim_pods(&self, job: &Job) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = job.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        let job_uid = job.metadata.uid.clone().unwrap_or_default();
        let mut owned = Vec::new();
        for p in self.pods.list(ns) {
            let selected = !selector::is_empty(&selector)
                && selector::matches(&selector, p.metadata.labels.as_ref().unwrap_or(&Default::default()));
            match claim(&job.metadata, selected, &p.metadata) {
                Claim::Own => owned.push(p),
                Claim::Adopt => {
                    // The resourceVersion makes it a compare-and-swap; the finalizer makes the
                    // pod counted like the Job's own.
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": [controller_reference(job)],
                        "finalizers": [TRACKING_FINALIZER],
                        "uid": p.metadata.uid,
                        "resourceVersion": p.metadata.resource_version,
                    }});
                    let name = p.metadata.name.as_deref().unwrap_or_default();
                    match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                        Ok(adopted) => owned.push(Arc::new(adopted)),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        // Changed meanwhile (maybe released by the orphan path): the sync fails
                        // and is retried, as no further event may come to trigger it.
                        Err(e) => return Err(e),
                    }
                }
                Claim::Release => {
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": [{"$patch": "delete", "uid": job_uid}],
                        "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                        "uid": p.metadata.uid,
                    }});
                    let name = p.metadata.name.as_deref().unwrap_or_default();
                    match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Claim::Ignore => {}
            }
        }
        Ok(owned)
    }
}
