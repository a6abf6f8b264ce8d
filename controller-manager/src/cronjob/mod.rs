//! The CronJob controller: creates a Job for each time a CronJob's schedule comes due, as
//! upstream's (controller v2). A sync reads the CronJob and the Jobs it controls from the
//! caches, asks the apiserver about `status.active` entries the cache does not know (a slow
//! watch must not make a running Job look missing), lets [`plan::plan`] decide, then deletes,
//! creates and writes the status, and asks to run again just after the next schedule time.
//!
//! The time zone is `spec.timeZone` (an IANA name looked up in the system's tz database by
//! jiff), else a `TZ=` / `CRON_TZ=` prefix of the schedule (accepted with an
//! `UnsupportedSchedule` warning, as upstream), else UTC. A zone that cannot be loaded stops
//! scheduling with an `UnknownTimeZone` warning until the spec changes.
//!
//! Invariant: a schedule time maps to one Job name; creating it twice fails with
//! AlreadyExists, which adopts the existing Job into `status.active` if it is ours.

pub mod plan;
pub mod schedule;

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::controller_of;
use crate::workqueue::WorkQueue;
use plan::Observed;

pub struct CronJobController {
    client: kube::Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading job {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("creating job: {0}")]
    Create(#[source] kube::Error),
    #[error("deleting job {0}: {1}")]
    Delete(String, #[source] kube::Error),
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),
}

/// Splits an unofficial `TZ=<zone> ` / `CRON_TZ=<zone> ` prefix off a schedule.
pub fn split_zone_prefix(schedule: &str) -> (Option<&str>, &str) {
    let s = schedule.trim();
    for prefix in ["TZ=", "CRON_TZ="] {
        if let Some(rest) = s.strip_prefix(prefix) {
            let (zone, sched) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            return (Some(zone), sched.trim());
        }
    }
    (None, s)
}

impl CronJobController {
    pub fn new(
        client: kube::Client,
        cronjobs: &Informer<CronJob>,
        jobs: &Informer<Job>,
        events: Recorder,
    ) -> Arc<CronJobController> {
        let c = Arc::new(CronJobController {
            client,
            cronjobs: cronjobs.clone(),
            jobs: jobs.clone(),
            queue: Arc::new(WorkQueue::default()),
            events,
        });
        let w: Weak<CronJobController> = Arc::downgrade(&c);
        cronjobs.on_change(move |old, new| {
            if let (Some(c), Some(cj)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(cj.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        jobs.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            for j in [old, new].into_iter().flatten() {
                if let Some(cj) = c.owner_of(j) {
                    c.queue.add(key_of(cj.as_ref()));
                }
            }
        });
        c
    }

    /// The CronJob that controls `job`, if we know it (same UID).
    fn owner_of(&self, job: &Job) -> Option<Arc<CronJob>> {
        self.cronjobs.controller_of(&job.metadata)
    }

    /// Syncs one CronJob; `Ok(Some(d))` asks to be synced again after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        tokio::join!(self.cronjobs.synced(), self.jobs.synced());
        let (ns, name) = split_key(key);
        let Some(cj) = self.cronjobs.get(ns, name) else { return Ok(None) };
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let uid = cj.metadata.uid.as_deref();
        let owned: Vec<Arc<Job>> = self
            .jobs
            .list(ns)
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|r| Some(r.uid.as_str()) == uid))
            .collect();

        let known: HashSet<&str> = owned.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
        let mut missing = HashSet::new();
        for r in cj.status.iter().flat_map(|s| s.active.iter().flatten()) {
            let (Some(job_uid), Some(job_name)) = (r.uid.as_deref(), r.name.as_deref()) else { continue };
            if known.contains(job_uid) {
                continue;
            }
            let live = api.get_opt(job_name).await.map_err(|e| SyncError::Get(job_name.to_string(), e))?;
            if live.is_none_or(|j| j.metadata.uid.as_deref() != Some(job_uid)) {
                missing.insert(job_uid.to_string());
            }
        }

        let spec = cj.spec.clone().unwrap_or_default();
        let (prefixed_zone, schedule) = split_zone_prefix(&spec.schedule);
        if prefixed_zone.is_some() {
            let message = format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            );
            self.events.warning(reference(cj.as_ref()), "UnsupportedSchedule", message);
        }
        let tz = match spec.time_zone.as_deref().or(prefixed_zone) {
            None => Ok(TimeZone::UTC),
            Some(zone) => TimeZone::get(zone).map_err(|e| e.to_string()),
        };
        let now = Timestamp::now();
        let observed = Observed { jobs: &owned, missing: &missing, tz: tz.as_ref().map_err(Clone::clone), now };
        let plan = plan::plan(&cj, schedule, &observed);
        for n in plan.notes {
            if n.warning {
                self.events.warning(reference(cj.as_ref()), n.reason, n.message);
            } else {
                self.events.normal(reference(cj.as_ref()), n.reason, n.message);
            }
        }

        let mut status = plan.status;
        let mut error = None;
        for d in &plan.delete {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: d.uid.clone().map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&d.name, &params).await {
                Ok(_) => {
                    self.events.normal(reference(cj.as_ref()), "SuccessfulDelete", format!("Deleted job {}", d.name))
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    self.events.warning(reference(cj.as_ref()), "FailedDelete", format!("Deleted job: {e}"));
                    error.get_or_insert(SyncError::Delete(d.name.clone(), e));
                }
            }
        }
        if error.is_none()
            && let Some((job, scheduled)) = plan.create
        {
            match self.create(&api, &cj, &job).await {
                Ok(Some(created)) => {
                    let active = status.active.get_or_insert_with(Vec::new);
                    if !active.iter().any(|r| r.uid == created.metadata.uid) {
                        active.push(reference(&created));
                    }
                    status.last_schedule_time = Some(Time(scheduled));
                }
                Ok(None) => {}
                Err(e) => error = Some(e),
            }
        }
        self.write_status(&cj, status).await?;
        match error {
            Some(e) => Err(e),
            None => Ok(plan.requeue),
        }
    }

    /// Creates the Job; if it exists already and is ours, returns it (to list it as active);
    /// if it exists and is someone else's, returns `None`.
    async fn create(&self, api: &Api<Job>, cj: &CronJob, job: &Job) -> Result<Option<Job>, SyncError> {
        match api.create(&PostParams::default(), job).await {
            Ok(created) => {
                let name = created.metadata.name.clone().unwrap_or_default();
                self.events.normal(reference(cj), "SuccessfulCreate", format!("Created job {name}"));
                Ok(Some(created))
            }
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
                let name = job.metadata.name.clone().unwrap_or_default();
                let existing = api.get(&name).await.map_err(|e| SyncError::Get(name.clone(), e))?;
                let ours = controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
                Ok(ours.then_some(existing))
            }
            Err(e) => {
                self.events.warning(reference(cj), "FailedCreate", format!("Error creating job: {e}"));
                Err(SyncError::Create(e))
            }
        }
    }

    async fn write_status(&self, cj: &CronJob, status: CronJobStatus) -> Result<(), SyncError> {
        if cj.status.as_ref().unwrap_or(&CronJobStatus::default()) == &status {
            return Ok(());
        }
        let mut updated = cj.clone();
        updated.status = Some(status);
        let api: Api<CronJob> =
            Api::namespaced(self.client.clone(), cj.metadata.namespace.as_deref().unwrap_or_default());
        let name = cj.metadata.name.as_deref().unwrap_or_default();
        api.replace_status(name, &PostParams::default(), &updated).await.map_err(SyncError::Status)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tz_prefix_is_split_off_the_schedule() {
        assert_eq!(split_zone_prefix("TZ=Europe/Berlin 0 9 * * *"), (Some("Europe/Berlin"), "0 9 * * *"));
        assert_eq!(split_zone_prefix("CRON_TZ=UTC @daily"), (Some("UTC"), "@daily"));
        assert_eq!(split_zone_prefix(" */5 * * * * "), (None, "*/5 * * * *"));
    }
}
