//! The TTL-after-finished controller: deletes a finished Job `ttlSecondsAfterFinished` after
//! its terminal condition (`Complete` or `Failed`) was set, as upstream's ttlafterfinished
//! controller. A Job not yet due is requeued for the moment it is.
//!
//! Before deleting, the Job is read again from the apiserver and the TTL judged on that copy
//! (the cache may hold an older TTL); the delete is conditional on its UID and uses foreground
//! propagation, so the Job goes only after the garbage collector removed its pods.

use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use super::plan::finished_condition;
use crate::informer::{Informer, key_of, split_key};
use crate::workqueue::WorkQueue;

pub struct TtlAfterFinishedController {
    client: kube::Client,
    jobs: Informer<Job>,
    pub queue: Arc<WorkQueue>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the Job: {0}")]
    Get(#[source] kube::Error),
    #[error("deleting the Job: {0}")]
    Delete(#[source] kube::Error),
}

/// What to do about a Job's TTL at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No TTL, not finished, or already being deleted.
    Nothing,
    /// Due in this long.
    Wait(Duration),
    Expired,
}

/// Pure: whether the Job's time is up.
pub fn ttl_state(job: &Job, now: Timestamp) -> Ttl {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else { return Ttl::Nothing };
    if job.metadata.deletion_timestamp.is_some() {
        return Ttl::Nothing;
    }
    let Some(finished) = finished_condition(job).and_then(|c| c.last_transition_time.as_ref()) else {
        return Ttl::Nothing;
    };
    let due = finished.0 + Duration::from_secs(ttl.max(0) as u64);
    if due <= now { Ttl::Expired } else { Ttl::Wait(Duration::try_from(due - now).unwrap_or_default()) }
}

impl TtlAfterFinishedController {
    pub fn new(client: kube::Client, jobs: &Informer<Job>) -> Arc<TtlAfterFinishedController> {
        let c =
            Arc::new(TtlAfterFinishedController { client, jobs: jobs.clone(), queue: Arc::new(WorkQueue::default()) });
        let w: Weak<TtlAfterFinishedController> = Arc::downgrade(&c);
        jobs.on_change(move |_, new| {
            if let (Some(c), Some(j)) = (w.upgrade(), new)
                && ttl_state(j, Timestamp::now()) != Ttl::Nothing
            {
                c.queue.add(key_of(j.as_ref()));
            }
        });
        c
    }

    /// Deletes the Job if its TTL expired; otherwise asks to come back when it will.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        self.jobs.synced().await;
        let (ns, name) = split_key(key);
        let Some(job) = self.jobs.get(ns, name) else { return Ok(None) };
        match ttl_state(&job, Timestamp::now()) {
            Ttl::Nothing => return Ok(None),
            Ttl::Wait(d) => return Ok(Some(d)),
            Ttl::Expired => {}
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let Some(fresh) = api.get_opt(name).await.map_err(SyncError::Get)? else { return Ok(None) };
        match ttl_state(&fresh, Timestamp::now()) {
            Ttl::Nothing => return Ok(None),
            Ttl::Wait(d) => return Ok(Some(d)),
            Ttl::Expired => {}
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions { uid: fresh.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(job = %key, "Deleted the Job: its ttlSecondsAfterFinished expired");
                Ok(None)
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(SyncError::Delete(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ttl: Option<i32>, finished_at: Option<&str>, deleting: bool) -> Job {
        let mut v = serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {"template": {}},
        });
        if let Some(t) = ttl {
            v["spec"]["ttlSecondsAfterFinished"] = serde_json::json!(t);
        }
        if let Some(at) = finished_at {
            v["status"] = serde_json::json!({"conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": at}]});
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).expect("job")
    }

    #[test]
    fn a_finished_job_expires_ttl_seconds_after_its_terminal_condition() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        let table = [
            (job(Some(100), Some("2026-01-01T00:00:00Z"), false), Ttl::Wait(Duration::from_secs(40))),
            (job(Some(60), Some("2026-01-01T00:00:00Z"), false), Ttl::Expired),
            (job(Some(0), Some("2026-01-01T00:01:00Z"), false), Ttl::Expired),
            (job(None, Some("2026-01-01T00:00:00Z"), false), Ttl::Nothing),
            (job(Some(0), None, false), Ttl::Nothing),
            (job(Some(0), Some("2026-01-01T00:00:00Z"), true), Ttl::Nothing),
        ];
        for (j, want) in table {
            assert_eq!(ttl_state(&j, now), want, "{:?}", j.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished));
        }
    }
}
