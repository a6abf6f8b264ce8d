//! The CronJob controller's decisions, pure, in upstream's order:
//!
//! 1. account for the Jobs: a finished Job leaves `status.active` (`SawCompletedJob`), a
//!    succeeded one moves `lastSuccessfulTime` forward, an active entry whose Job is gone from
//!    the apiserver is dropped (`MissingJob`);
//! 2. delete the oldest finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit;
//! 3. unless the CronJob is being deleted, suspended, or its time zone or schedule is wrong (a
//!    warning event each, and no requeue until it changes): find the latest unmet schedule time
//!    since `lastScheduleTime` (or creation), no older than startingDeadlineSeconds;
//! 4. skip it if it is done already, or if a Job runs and the policy is Forbid; with Replace,
//!    delete the running Jobs; then create the Job `<cronjob>-<minutes since the epoch>`;
//! 5. come back at the next schedule time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::schedule::{Missed, Schedule, most_recent_unmet, next_schedule_after};
use crate::job::plan::{Note, finished_condition};
use crate::ownership::controller_reference;

/// The annotation holding the time a Job was scheduled for (RFC 3339 in the CronJob's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// How long after a schedule time the sync runs: the clock must have passed it.
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

pub struct Observed<'a> {
    /// The Jobs the CronJob controls.
    pub jobs: &'a [Arc<Job>],
    /// UIDs of `status.active` entries the apiserver says are gone.
    pub missing: &'a HashSet<String>,
    /// The schedule's time zone, or why it could not be loaded.
    pub tz: Result<&'a TimeZone, String>,
    pub now: Timestamp,
}

/// A Job to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub name: String,
    pub uid: Option<String>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub status: CronJobStatus,
    pub delete: Vec<Delete>,
    /// The Job to create and the time it is for.
    pub create: Option<(Job, Timestamp)>,
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

fn warn(notes: &mut Vec<Note>, reason: &'static str, message: String) {
    notes.push(Note { warning: true, reason, message });
}

fn normal(notes: &mut Vec<Note>, reason: &'static str, message: String) {
    notes.push(Note { warning: false, reason, message });
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`: the same time always gets the same
/// name, so a Job is never made twice for it.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 as Go writes it: `Z` for a zero offset.
fn rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for the schedule time `scheduled`, from the template, owned by the CronJob.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cj)]),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// Where the schedule search starts: the last schedule time, else creation.
fn earliest(cj: &CronJob) -> Timestamp {
    cj.status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// How long until the sync after the next schedule time (upstream's nextScheduleTimeDuration).
pub fn next_requeue(cj: &CronJob, schedule: &Schedule, tz: &TimeZone, now: Timestamp) -> Option<Duration> {
    // Nothing unmet since `earliest`: the next time after it; otherwise the next after now.
    let base = match most_recent_unmet(schedule, tz, earliest(cj), now) {
        Ok(u) if u.most_recent.is_none() && u.missed == Missed::None => earliest(cj),
        _ => now,
    };
    let next = next_schedule_after(schedule, tz, base)?;
    Some(Duration::try_from(next - now).unwrap_or_default() + NEXT_SCHEDULE_DELTA)
}

fn is_succeeded(j: &Job) -> bool {
    finished_condition(j).is_some_and(|c| c.type_ == "Complete")
}

/// The finished Jobs beyond `limit`, oldest start first (never started last, then by name).
fn beyond_limit(mut jobs: Vec<&Arc<Job>>, limit: Option<i32>) -> Vec<&Arc<Job>> {
    let Some(limit) = limit else { return Vec::new() };
    let surplus = jobs.len().saturating_sub(limit.max(0) as usize);
    let start = |j: &Job| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    jobs.sort_by(|a, b| match (start(a), start(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.metadata.name.cmp(&b.metadata.name),
    });
    jobs.truncate(surplus);
    jobs
}

/// Pure: everything one sync of `cj` must do. `schedule` is the spec's schedule without a
/// `TZ=` prefix.
pub fn plan(cj: &CronJob, schedule: &str, o: &Observed) -> Plan {
    let spec = cj.spec.clone().unwrap_or_default();
    let now = o.now;
    let mut status = cj.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut active = status.active.take().unwrap_or_default();
    let in_active = |active: &[ObjectReference], uid: Option<&String>| active.iter().any(|r| r.uid.as_ref() == uid);

    // 1. What the Jobs say.
    for j in o.jobs {
        let listed = in_active(&active, j.metadata.uid.as_ref());
        let finished = finished_condition(j);
        if listed && let Some(c) = finished {
            active.retain(|r| r.uid != j.metadata.uid);
            let name = j.metadata.name.as_deref().unwrap_or_default();
            normal(&mut notes, "SawCompletedJob", format!("Saw completed job: {name}, condition: {}", c.type_));
        }
        if is_succeeded(j)
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    let known: HashSet<&str> = o.jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    active.retain(|r| {
        let uid = r.uid.as_deref().unwrap_or_default();
        if known.contains(uid) || !o.missing.contains(uid) {
            return true;
        }
        let name = r.name.as_deref().unwrap_or_default();
        normal(&mut notes, "MissingJob", format!("Active job went missing: {name}"));
        false
    });

    // 2. History.
    let mut delete = Vec::new();
    let succeeded: Vec<&Arc<Job>> = o.jobs.iter().filter(|j| is_succeeded(j)).collect();
    let failed: Vec<&Arc<Job>> =
        o.jobs.iter().filter(|j| finished_condition(j).is_some_and(|c| c.type_ == "Failed")).collect();
    for j in beyond_limit(succeeded, spec.successful_jobs_history_limit)
        .into_iter()
        .chain(beyond_limit(failed, spec.failed_jobs_history_limit))
    {
        active.retain(|r| r.uid != j.metadata.uid);
        delete.push(Delete { name: j.metadata.name.clone().unwrap_or_default(), uid: j.metadata.uid.clone() });
    }

    let mut plan = Plan { delete, ..Default::default() };

    // 3. Whether anything may start.
    if cj.metadata.deletion_timestamp.is_some() {
        return done(plan, status, active, notes);
    }
    let tz = match o.tz {
        Ok(tz) => tz,
        Err(ref e) => {
            let zone = spec.time_zone.clone().unwrap_or_default();
            warn(&mut notes, "UnknownTimeZone", format!("invalid timeZone: {zone:?}: {e}"));
            return done(plan, status, active, notes);
        }
    };
    if spec.suspend == Some(true) {
        return done(plan, status, active, notes);
    }
    let sched: Schedule = match schedule.parse() {
        Ok(s) => s,
        Err(e) => {
            warn(&mut notes, "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule));
            return done(plan, status, active, notes);
        }
    };
    let mut from = earliest(cj);
    if let Some(deadline) = spec.starting_deadline_seconds {
        // Nothing older than the deadline will be started: do not even look.
        from = from.max(now - Duration::from_secs(deadline.max(0) as u64));
    }
    let unmet = match most_recent_unmet(&sched, tz, from, now) {
        Ok(u) => u,
        Err(e) => {
            warn(&mut notes, "InvalidSchedule", format!("invalid schedule: {} : {e}", spec.schedule));
            return done(plan, status, active, notes);
        }
    };
    plan.requeue = next_requeue(cj, &sched, tz, now);
    if unmet.missed == Missed::Many {
        let message = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
        warn(&mut notes, "TooManyMissedTimes", message.into());
    }
    let Some(scheduled) = unmet.most_recent else { return done(plan, status, active, notes) };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled + Duration::from_secs(deadline.max(0) as u64) < now
    {
        let when = scheduled.to_zoned(TimeZone::UTC).strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
        warn(&mut notes, "MissSchedule", format!("Missed scheduled time to start a job: {when}"));
        return done(plan, status, active, notes);
    }

    // 4. Start it, unless done already or forbidden.
    let name = job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    if active.iter().any(|r| r.name.as_deref() == Some(name.as_str())) || last == Some(scheduled) {
        return done(plan, status, active, notes);
    }
    if let Some(existing) = o.jobs.iter().find(|j| j.metadata.name.as_deref() == Some(name.as_str())) {
        // Made before, but the status never said so (a crash between the two writes).
        if finished_condition(existing).is_none() {
            active.push(crate::events::reference(existing.as_ref()));
        }
        status.last_schedule_time = Some(Time(scheduled));
        return done(plan, status, active, notes);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
            normal(&mut notes, "JobAlreadyActive", message.into());
            return done(plan, status, active, notes);
        }
        Some("Replace") => {
            for r in active.drain(..) {
                plan.delete.push(Delete { name: r.name.clone().unwrap_or_default(), uid: r.uid.clone() });
            }
        }
        _ => {}
    }
    plan.create = Some((job_from_template(cj, scheduled, tz), scheduled));
    done(plan, status, active, notes)
}

fn done(mut plan: Plan, status: CronJobStatus, active: Vec<ObjectReference>, notes: Vec<Note>) -> Plan {
    plan.status = CronJobStatus { active: (!active.is_empty()).then_some(active), ..status };
    plan.notes = notes;
    plan
}

#[cfg(test)]
mod tests;
