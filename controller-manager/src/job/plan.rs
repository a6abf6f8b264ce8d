//! The Job controller's decisions, pure: given a Job, the pods it owns and the clock, what the
//! status becomes, which pods to create or delete, which finished pods to release from the
//! tracking finalizer, and whether (and how) the Job finishes. `sync` only carries them out.
//!
//! Counting finished pods, as upstream 1.33, never counts a pod twice, whatever crashes:
//!
//! 1. a finished pod still holding the tracking finalizer is recorded in
//!    `status.uncountedTerminatedPods` (Indexed Jobs record its index in `completedIndexes`
//!    instead) and that status is written;
//! 2. then its finalizer is removed;
//! 3. then [`settle`] moves the UIDs whose finalizer is gone from the uncounted lists into the
//!    `succeeded` / `failed` counters, and that status is written.
//!
//! A pod whose finalizer removal was sent but not yet seen in the cache (`untracking`) is
//! treated as released already.
//!
//! Finishing, as upstream: a reason to fail (a FailJob pod failure policy rule, backoffLimit,
//! activeDeadlineSeconds, failed indexes) or to succeed (completions reached, a success policy
//! rule) is first written as the interim condition `FailureTarget` / `SuccessCriteriaMet`
//! while the active pods are deleted and every pod is released; the terminal `Failed` /
//! `Complete` condition (same reason and message) follows once nothing is uncounted and no
//! pod is terminating. A Job with a terminal condition is never synced again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::failure::{self, Action, backoff_delay, finish_time, is_failed, match_pod_failure_policy};
use super::indexes::{Intervals, index_of};
use super::template::{INDEX_FAILURE_COUNT, TRACKING_FINALIZER};
use crate::pods::{self, deletion_order, is_ready, phase};

/// Upstream's MaxPodCreateDeletePerSync: the most pods one sync creates or deletes.
pub const BURST: usize = 500;
/// Upstream's MaxUncountedPods: the most UIDs the uncounted lists hold, bounding the status.
pub const MAX_UNCOUNTED: usize = 500;

/// What the sync saw.
pub struct Observed<'a> {
    /// The pods the Job owns, finished ones included.
    pub pods: &'a [Arc<Pod>],
    /// UIDs whose finalizer removal was sent but is not in the cache yet.
    pub untracking: &'a HashSet<String>,
    /// Expectations are met and the Job is not being deleted: pods may be created or deleted.
    pub may_manage: bool,
    pub now: Timestamp,
}

/// An event to record about the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// A pod to create: its completion index (Indexed Jobs) and, with backoffLimitPerIndex, how
/// many times that index failed already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewPod {
    pub index: Option<i32>,
    pub index_failures: Option<i32>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// The status to write before any finalizer is removed.
    pub status: JobStatus,
    pub create: Vec<NewPod>,
    pub delete: Vec<Arc<Pod>>,
    /// Pods whose tracking finalizer goes once `status` is written.
    pub untrack: Vec<Arc<Pod>>,
    /// The terminal condition to add once everything is counted and nothing terminates.
    pub finish: Option<JobCondition>,
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

pub fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}

pub fn has_tracking_finalizer(p: &Pod) -> bool {
    p.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

fn is_terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn find<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// The Job's terminal condition (`Complete` or `Failed`), if it has finished.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    find(status, "Complete").or_else(|| find(status, "Failed"))
}

/// Sets the condition of `type_` to the given status, reason and message. A missing condition
/// is added only when `status` is "True". Returns whether anything changed.
pub fn ensure_condition(
    s: &mut JobStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let conditions = s.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status == status && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) {
                return false;
            }
            *c = JobCondition { status: status.into(), ..condition(type_, reason, message, now) };
            true
        }
        None if status == "True" => {
            conditions.push(condition(type_, reason, message, now));
            true
        }
        None => {
            if conditions.is_empty() {
                s.conditions = None;
            }
            false
        }
    }
}

fn nonzero(n: i32) -> Option<i32> {
    (n > 0).then_some(n)
}

fn nonempty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// Moves the uncounted UIDs that `settled` says are released (finalizer gone, or pod gone)
/// into the counters.
pub fn settle(status: &mut JobStatus, settled: impl Fn(&str) -> bool) {
    let u = status.uncounted_terminated_pods.get_or_insert_with(Default::default);
    let (done_s, keep_s): (Vec<String>, Vec<String>) =
        u.succeeded.take().unwrap_or_default().into_iter().partition(|x| settled(x));
    let (done_f, keep_f): (Vec<String>, Vec<String>) =
        u.failed.take().unwrap_or_default().into_iter().partition(|x| settled(x));
    u.succeeded = nonempty(keep_s);
    u.failed = nonempty(keep_f);
    status.succeeded = nonzero(status.succeeded.unwrap_or(0) + done_s.len() as i32);
    status.failed = nonzero(status.failed.unwrap_or(0) + done_f.len() as i32);
}

/// Adds the terminal condition when nothing is left uncounted or terminating; returns whether
/// the Job finished now.
pub fn finish(status: &mut JobStatus, finish: Option<&JobCondition>, now: Timestamp) -> bool {
    let Some(c) = finish else { return false };
    let u = status.uncounted_terminated_pods.clone().unwrap_or_default();
    if u.succeeded.is_some_and(|v| !v.is_empty()) || u.failed.is_some_and(|v| !v.is_empty()) {
        return false;
    }
    if status.terminating.unwrap_or(0) > 0 {
        return false;
    }
    let reason = c.reason.clone().unwrap_or_default();
    let message = c.message.clone().unwrap_or_default();
    ensure_condition(status, &c.type_, "True", &reason, &message, now);
    if c.type_ == "Complete" {
        status.completion_time = Some(Time(now));
    }
    true
}

/// Pods replaced only once they reach Failed (not while terminating).
pub fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_failure_policy.is_some() || spec.pod_replacement_policy.as_deref() == Some("Failed")
}

/// restartPolicy OnFailure: container restarts of unfinished pods count against backoffLimit.
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[Arc<Pod>]) -> bool {
    let on_failure = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 { restarts > 0 } else { restarts >= limit }
}

fn index_failure_count(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0)
        .max(0)
}

/// The first success policy rule the succeeded indexes satisfy, as its position.
pub fn matched_success_rule(spec: &JobSpec, succeeded: &Intervals, completions: i32) -> Option<usize> {
    let rules = &spec.success_policy.as_ref()?.rules;
    rules.iter().position(|r| match (&r.succeeded_indexes, r.succeeded_count) {
        (Some(ix), count) => {
            let wanted = Intervals::parse(ix, completions);
            let done = succeeded.overlap(&wanted);
            match count {
                Some(c) => done >= c,
                None => !wanted.is_empty() && done == wanted.total(),
            }
        }
        (None, Some(c)) => succeeded.total() >= c,
        (None, None) => false,
    })
}

/// An interim condition and whether the status holds it already.
struct Finishing {
    interim: JobCondition,
    recorded: bool,
}

impl Finishing {
    fn new(type_: &str, reason: &str, message: &str, now: Timestamp) -> Option<Finishing> {
        Some(Finishing { interim: condition(type_, reason, message, now), recorded: false })
    }

    fn is_success(&self) -> bool {
        self.interim.type_ == "SuccessCriteriaMet"
    }

    /// The terminal condition that follows the interim one.
    fn terminal(&self, now: Timestamp) -> JobCondition {
        let type_ = if self.is_success() { "Complete" } else { "Failed" };
        let reason = self.interim.reason.as_deref().unwrap_or_default();
        condition(type_, reason, self.interim.message.as_deref().unwrap_or_default(), now)
    }
}

fn soonest(requeue: &mut Option<Duration>, d: Duration) {
    *requeue = Some(requeue.map_or(d, |r| r.min(d)));
}

/// Pure: everything one sync of `job` must do.
pub fn plan(job: &Job, o: &Observed) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let now = o.now;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let suspended = spec.suspend == Some(true);
    let only_failed = only_replace_failed(&spec);
    let mut status = job.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut requeue = None;

    // Uncounted pods whose finalizer is gone are counted first.
    let tracked: Vec<&Arc<Pod>> =
        o.pods.iter().filter(|p| has_tracking_finalizer(p) && !o.untracking.contains(uid(p))).collect();
    let tracked_uids: HashSet<&str> = tracked.iter().map(|p| uid(p)).collect();
    settle(&mut status, |u| !tracked_uids.contains(u));
    let u = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_succeeded = u.succeeded.unwrap_or_default();
    let mut uncounted_failed = u.failed.unwrap_or_default();

    let verdict = |p: &Pod| spec.pod_failure_policy.as_ref().and_then(|pol| match_pod_failure_policy(pol, p));
    let counts = |p: &Pod| verdict(p).is_none_or(|v| v.action != Action::Ignore);
    let valid_index = |p: &Pod| index_of(p).filter(|i| *i < completions.unwrap_or(0));
    let countable = |p: &Pod| !indexed || valid_index(p).is_some();

    let active: Vec<Arc<Pod>> = o.pods.iter().filter(|p| pods::is_active(p)).cloned().collect();
    let terminating = o.pods.iter().filter(|p| pods::is_terminating(p) && !is_terminal(p)).count();
    let ready = active.iter().filter(|p| is_ready(p)).count();

    let new_succeeded = tracked
        .iter()
        .filter(|p| !indexed && phase(p) == "Succeeded")
        .filter(|p| !uncounted_succeeded.iter().chain(&uncounted_failed).any(|x| x == uid(p)))
        .count() as i32;
    let new_failed = tracked
        .iter()
        .filter(|p| is_failed(p, only_failed) && countable(p) && counts(p))
        .filter(|p| !uncounted_failed.iter().any(|x| x == uid(p)))
        .count() as i32;

    let mut succeeded_indexes =
        Intervals::parse(status.completed_indexes.as_deref().unwrap_or(""), completions.unwrap_or(0));
    if indexed {
        for p in tracked.iter().filter(|p| phase(p) == "Succeeded") {
            if let Some(i) = valid_index(p) {
                succeeded_indexes.insert(i);
            }
        }
    }
    let succeeded = if indexed {
        succeeded_indexes.total()
    } else {
        status.succeeded.unwrap_or(0) + uncounted_succeeded.len() as i32 + new_succeeded
    };
    let failed = status.failed.unwrap_or(0) + uncounted_failed.len() as i32 + new_failed;

    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    // Per-index failures: how often each index failed, when last, and which failed for good.
    let mut failed_indexes = Intervals::parse(status.failed_indexes.as_deref().unwrap_or(""), completions.unwrap_or(0));
    let mut index_failures: BTreeMap<i32, (i32, Option<Timestamp>)> = BTreeMap::new();
    if let Some(limit) = per_index {
        for p in o.pods.iter().filter(|p| is_failed(p, only_failed) && counts(p)) {
            let Some(i) = valid_index(p) else { continue };
            let n = index_failure_count(p) + 1;
            let e = index_failures.entry(i).or_insert((0, None));
            e.0 = e.0.max(n);
            e.1 = e.1.max(finish_time(p));
            let fail_index = verdict(p).is_some_and(|v| v.action == Action::FailIndex);
            if (fail_index || n > limit) && !succeeded_indexes.contains(i) {
                failed_indexes.insert(i);
            }
        }
    }

    // Why the Job finishes, if it does.
    let start = status.start_time.as_ref().map(|t| t.0);
    let deadline = spec
        .active_deadline_seconds
        .filter(|_| !suspended)
        .zip(start)
        .map(|(s, t)| t + Duration::from_secs(s.max(0) as u64));
    let mut finishing: Option<Finishing> = if let Some(c) = find(&status, "FailureTarget") {
        Some(Finishing { interim: c.clone(), recorded: true })
    } else if let Some(c) = find(&status, "SuccessCriteriaMet") {
        Some(Finishing { interim: c.clone(), recorded: true })
    } else if let Some(message) =
        o.pods.iter().filter(|p| is_failed(p, only_failed)).filter_map(|p| verdict(p).and_then(|v| v.message)).next()
    {
        Finishing::new("FailureTarget", "PodFailurePolicy", &message, now)
    } else if (per_index.is_none() && failed > spec.backoff_limit.unwrap_or(6))
        || past_backoff_limit_on_failure(&spec, o.pods)
    {
        Finishing::new("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)
    } else if deadline.is_some_and(|d| now >= d) {
        Finishing::new("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline", now)
    } else {
        if let Some(d) = deadline {
            soonest(&mut requeue, Duration::try_from(d - now).unwrap_or_default());
        }
        None
    };
    if finishing.is_none() && per_index.is_some() {
        let c = completions.unwrap_or(0);
        if spec.max_failed_indexes.is_some_and(|m| failed_indexes.total() > m) {
            let message = "Job has exceeded the specified maximal number of failed indexes";
            finishing = Finishing::new("FailureTarget", "MaxFailedIndexesExceeded", message, now);
        } else if !failed_indexes.is_empty() && succeeded_indexes.total() + failed_indexes.total() >= c {
            finishing = Finishing::new("FailureTarget", "FailedIndexes", "Job has failed indexes", now);
        }
    }
    if finishing.is_none()
        && indexed
        && let Some(rule) = matched_success_rule(&spec, &succeeded_indexes, completions.unwrap_or(0))
    {
        finishing =
            Finishing::new("SuccessCriteriaMet", "SuccessPolicy", &format!("Matched rules at index {rule}"), now);
    }

    // Pods to create or delete.
    let mut create = Vec::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    let mut managed = false;
    if finishing.is_some() {
        delete = active.clone();
        if !o.may_manage {
            // Our own writes are not all seen yet: finish on a later sync.
            finishing = None;
        }
    } else if o.may_manage {
        managed = true;
        let m = Manage {
            indexed,
            completions,
            parallelism,
            suspended,
            only_failed,
            succeeded,
            succeeded_indexes: &succeeded_indexes,
            failed_indexes: &failed_indexes,
            index_failures: &index_failures,
            per_index: per_index.is_some(),
            active: &active,
            pods: o.pods,
            terminating,
            now,
        };
        let (c, d, wait) = m.run(&counts);
        create = c;
        delete = d;
        if let Some(w) = wait {
            soonest(&mut requeue, w);
        }
    }
    delete.truncate(BURST);
    let active_after = (active.len() - delete.len() + create.len()) as i32;

    if finishing.is_none() {
        let complete = match completions {
            None => succeeded > 0 && active_after == 0,
            Some(c) => succeeded >= c && active_after == 0,
        };
        if complete {
            let message = "Reached expected number of succeeded pods";
            finishing = Finishing::new("SuccessCriteriaMet", "CompletionsReached", message, now);
        } else if managed && suspended {
            if ensure_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", now) {
                notes.push(Note { warning: false, reason: "Suspended", message: "Job suspended".into() });
            }
        } else if managed && ensure_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", now) {
            notes.push(Note { warning: false, reason: "Resumed", message: "Job resumed".into() });
            // activeDeadlineSeconds counts time continuously active: it starts over.
            status.start_time = Some(Time(now));
        }
    }

    // Finished pods to record and release.
    let failing = finishing.as_ref().is_some_and(|f| !f.is_success());
    let mut untrack = Vec::new();
    for p in &tracked {
        let ok = phase(p) == "Succeeded";
        let bad = is_failed(p, only_failed);
        if !(ok || bad || finishing.is_some()) {
            continue;
        }
        if uncounted_succeeded.len() + uncounted_failed.len() >= MAX_UNCOUNTED {
            // The rest waits for the next sync, right after this one.
            soonest(&mut requeue, Duration::ZERO);
            break;
        }
        untrack.push(Arc::clone(p));
        let id = uid(p).to_string();
        if ok && !uncounted_failed.contains(&id) {
            if !indexed && !uncounted_succeeded.contains(&id) {
                uncounted_succeeded.push(id);
            }
        } else if (bad || failing) && !uncounted_failed.contains(&id) && countable(p) && counts(p) {
            uncounted_failed.push(id);
        }
    }

    let deleted_ready = delete.iter().filter(|p| is_ready(p)).count();
    status.active = nonzero(active_after);
    status.ready = Some((ready - deleted_ready) as i32);
    status.terminating = Some((terminating + delete.len()) as i32);
    if indexed {
        // Empty is left out, as upstream's omitempty string.
        status.completed_indexes = Some(succeeded_indexes.to_string()).filter(|s| !s.is_empty());
        status.succeeded = nonzero(succeeded_indexes.total());
    }
    if per_index.is_some() {
        status.failed_indexes = Some(failed_indexes.to_string());
    }
    status.uncounted_terminated_pods =
        Some(UncountedTerminatedPods { succeeded: nonempty(uncounted_succeeded), failed: nonempty(uncounted_failed) });
    let finish = finishing.map(|f| {
        if !f.recorded {
            status.conditions.get_or_insert_with(Vec::new).push(f.interim.clone());
        }
        f.terminal(now)
    });
    Plan { status, create, delete, untrack, finish, requeue, notes }
}

/// The inputs of `manage_job`: how many pods should run and which.
struct Manage<'a> {
    indexed: bool,
    completions: Option<i32>,
    parallelism: i32,
    suspended: bool,
    only_failed: bool,
    succeeded: i32,
    succeeded_indexes: &'a Intervals,
    failed_indexes: &'a Intervals,
    index_failures: &'a BTreeMap<i32, (i32, Option<Timestamp>)>,
    per_index: bool,
    active: &'a [Arc<Pod>],
    pods: &'a [Arc<Pod>],
    terminating: usize,
    now: Timestamp,
}

impl Manage<'_> {
    /// Upstream's manageJob: pods to create, pods to delete, and how long creation must wait.
    fn run(&self, counts: &dyn Fn(&Pod) -> bool) -> (Vec<NewPod>, Vec<Arc<Pod>>, Option<Duration>) {
        if self.suspended {
            return (Vec::new(), self.active.to_vec(), None);
        }
        let active = self.active.len() as i32;
        let want = match self.completions {
            // Work-queue Jobs: once one pod succeeded, let the rest finish, start no more.
            None if self.succeeded > 0 => active,
            None => self.parallelism,
            Some(c) => (c - self.succeeded).clamp(0, self.parallelism),
        };
        let mut delete = Vec::new();
        let mut kept: Vec<Arc<Pod>> = self.active.to_vec();
        if self.indexed {
            // Pods without a usable index, of a finished index, or a second pod of an index go.
            let c = self.completions.unwrap_or(0);
            let mut by_index: BTreeMap<i32, Vec<Arc<Pod>>> = BTreeMap::new();
            for p in self.active {
                match index_of(p).filter(|i| *i < c) {
                    Some(i) if !self.succeeded_indexes.contains(i) && !self.failed_indexes.contains(i) => {
                        by_index.entry(i).or_default().push(p.clone())
                    }
                    _ => delete.push(p.clone()),
                }
            }
            kept.clear();
            for (_, mut same) in by_index {
                deletion_order(&mut same);
                let best = same.pop();
                delete.extend(same);
                kept.extend(best);
            }
        }
        if kept.len() as i32 > want {
            deletion_order(&mut kept);
            let surplus = kept.len() - want.max(0) as usize;
            delete.extend(kept.drain(..surplus));
        }
        if !delete.is_empty() {
            return (Vec::new(), delete, None);
        }
        let blocking = if self.only_failed { self.terminating as i32 } else { 0 };
        let diff = (want - blocking - active).min(BURST as i32);
        if diff <= 0 {
            return (Vec::new(), Vec::new(), None);
        }
        if !self.per_index {
            let succeeded = self.pods.iter().filter(|p| phase(p) == "Succeeded").map(|p| p.as_ref());
            let failed = self.pods.iter().filter(|p| is_failed(p, self.only_failed) && counts(p)).map(|p| p.as_ref());
            let wait = failure::remaining_backoff(succeeded, failed, self.now);
            if !wait.is_zero() {
                return (Vec::new(), Vec::new(), Some(wait));
            }
        }
        if !self.indexed {
            return (vec![NewPod { index: None, index_failures: None }; diff as usize], Vec::new(), None);
        }
        let c = self.completions.unwrap_or(0);
        let busy: HashSet<i32> = self
            .pods
            .iter()
            .filter(|p| pods::is_active(p) || (self.only_failed && pods::is_terminating(p) && !is_terminal(p)))
            .filter_map(|p| index_of(p))
            .collect();
        let mut wait: Option<Duration> = None;
        let mut create = Vec::new();
        for i in self.succeeded_indexes.missing(c) {
            if create.len() as i32 >= diff {
                break;
            }
            if busy.contains(&i) || self.failed_indexes.contains(i) {
                continue;
            }
            let failures = self.index_failures.get(&i).copied();
            if self.per_index
                && let Some((n, Some(last))) = failures
            {
                let until = last + backoff_delay(n as u32);
                if until > self.now {
                    soonest(&mut wait, Duration::try_from(until - self.now).unwrap_or_default());
                    continue;
                }
            }
            let index_failures = self.per_index.then(|| failures.map_or(0, |(n, _)| n));
            create.push(NewPod { index: Some(i), index_failures });
        }
        (create, Vec::new(), wait)
    }
}

#[cfg(test)]
mod tests;
