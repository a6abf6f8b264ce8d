use super::*;
use crate::job::indexes::COMPLETION_INDEX;

const NOW: &str = "2026-01-01T00:10:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("time")
}

fn ago(secs: i64) -> String {
    (now() - jiff::SignedDuration::from_secs(secs)).to_string()
}

/// A Job named `pi` whose spec is the defaults overlaid with `spec`, and status `status`.
fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
    let mut s = serde_json::json!({
        "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}},
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pi", "namespace": "ns", "uid": "job-uid"},
        "spec": s,
        "status": status,
    }))
    .expect("job")
}

/// Builds a pod of the Job: pending, holding the tracking finalizer, unless told otherwise.
struct P(serde_json::Value);

fn pod(name: &str) -> P {
    P(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns", "uid": name, "creationTimestamp": ago(600),
            "finalizers": [TRACKING_FINALIZER]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Pending"}
    }))
}

impl P {
    fn phase(mut self, phase: &str) -> P {
        self.0["status"]["phase"] = serde_json::json!(phase);
        self
    }
    fn ready(mut self) -> P {
        self.0["status"]["phase"] = serde_json::json!("Running");
        self.0["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "True"}]);
        self
    }
    fn index(mut self, i: i32) -> P {
        self.0["metadata"]["annotations"][COMPLETION_INDEX] = serde_json::json!(i.to_string());
        self
    }
    fn index_failures(mut self, n: i32) -> P {
        self.0["metadata"]["annotations"][INDEX_FAILURE_COUNT] = serde_json::json!(n.to_string());
        self
    }
    fn untracked(mut self) -> P {
        self.0["metadata"]["finalizers"] = serde_json::json!([]);
        self
    }
    fn deleting(mut self) -> P {
        self.0["metadata"]["deletionTimestamp"] = serde_json::json!(ago(1));
        self
    }
    /// Failed, its container exiting with `code` `secs_ago` seconds ago.
    fn exited(mut self, code: i32, secs_ago: i64) -> P {
        self.0["status"]["phase"] = serde_json::json!(if code == 0 { "Succeeded" } else { "Failed" });
        self.0["status"]["containerStatuses"] = serde_json::json!([{"name": "c", "ready": false, "restartCount": 0,
            "image": "busybox", "imageID": "", "state": {"terminated": {"exitCode": code, "finishedAt": ago(secs_ago)}}}]);
        self
    }
    fn condition(mut self, type_: &str) -> P {
        self.0["status"]["conditions"] = serde_json::json!([{"type": type_, "status": "True"}]);
        self
    }
    fn restarts(mut self, n: i32) -> P {
        self.0["status"]["phase"] = serde_json::json!("Running");
        self.0["status"]["containerStatuses"] = serde_json::json!([{"name": "c", "ready": false, "restartCount": n,
            "image": "busybox", "imageID": ""}]);
        self
    }
    fn build(self) -> Arc<Pod> {
        Arc::new(serde_json::from_value(self.0).expect("pod"))
    }
}

fn run(job: &Job, pods: &[Arc<Pod>]) -> Plan {
    plan(job, &Observed { pods, untracking: &HashSet::new(), may_manage: true, now: now() })
}

fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
    let mut v: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or_default()).collect();
    v.sort();
    v
}

fn conditions(s: &JobStatus) -> Vec<(String, String, String)> {
    s.conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone().unwrap_or_default()))
        .collect()
}

/// Plays the rest of a sync: every untracked pod released, then the terminal condition.
fn after_release(p: &Plan) -> (JobStatus, bool) {
    let released: HashSet<String> = p.untrack.iter().map(|p| uid(p).to_string()).collect();
    let mut s = p.status.clone();
    settle(&mut s, |u| released.contains(u));
    let done = finish(&mut s, p.finish.as_ref(), now());
    (s, done)
}

#[test]
fn a_new_job_starts_parallelism_pods_and_its_clock() {
    let p = run(&job(serde_json::json!({"completions": 3, "parallelism": 2}), serde_json::json!({})), &[]);
    assert_eq!(p.create.len(), 2);
    assert!(p.create.iter().all(|c| c.index.is_none()));
    assert_eq!(p.status.active, Some(2), "pods being created count as active");
    assert_eq!(p.status.start_time, Some(Time(now())));
    assert_eq!(p.status.ready, Some(0));
    assert!(p.finish.is_none() && p.delete.is_empty());
}

#[test]
fn never_more_pods_run_than_completions_remain() {
    let j = job(serde_json::json!({"completions": 3, "parallelism": 2}), serde_json::json!({"succeeded": 2}));
    let p = run(&j, &[]);
    assert_eq!(p.create.len(), 1);
    let p = run(&j, &[pod("a").ready().build(), pod("b").ready().build()]);
    assert!(p.create.is_empty());
    assert_eq!(names(&p.delete), ["a"], "one surplus pod goes (the newest first when alike)");
}

#[test]
fn a_finished_pod_is_recorded_uncounted_released_then_counted_once() {
    let j = job(serde_json::json!({"completions": 2}), serde_json::json!({}));
    let done = pod("a").exited(0, 5).build();
    let p = run(&j, std::slice::from_ref(&done));
    let u = p.status.uncounted_terminated_pods.clone().expect("uncounted");
    assert_eq!(u.succeeded.as_deref(), Some(&["a".to_string()][..]));
    assert_eq!(p.status.succeeded, None, "not counted before its finalizer is gone");
    assert_eq!(names(&p.untrack), ["a"]);
    let (s, finished) = after_release(&p);
    assert_eq!(s.succeeded, Some(1));
    assert_eq!(s.uncounted_terminated_pods, Some(UncountedTerminatedPods::default()));
    assert!(!finished);

    // Seen again before the cache shows the finalizer gone: the status is already counted.
    let counted = job(serde_json::json!({"completions": 2}), serde_json::to_value(&s).expect("status"));
    let again = plan(
        &counted,
        &Observed {
            pods: std::slice::from_ref(&done),
            untracking: &HashSet::from(["a".to_string()]),
            may_manage: true,
            now: now(),
        },
    );
    assert_eq!(again.status.succeeded, Some(1));
    assert!(again.untrack.is_empty());
    assert_eq!(again.status.uncounted_terminated_pods, Some(UncountedTerminatedPods::default()));
}

#[test]
fn uncounted_pods_whose_finalizer_is_gone_are_counted_on_the_next_sync() {
    let j = job(
        serde_json::json!({"completions": 5}),
        serde_json::json!({"succeeded": 1, "uncountedTerminatedPods": {"succeeded": ["a"], "failed": ["b"]}}),
    );
    let pods = [pod("a").exited(0, 5).untracked().build(), pod("b").exited(1, 5).build()];
    let p = run(&j, &pods);
    assert_eq!(p.status.succeeded, Some(2), "a's finalizer is gone");
    let u = p.status.uncounted_terminated_pods.clone().expect("uncounted");
    assert_eq!(u.failed.as_deref(), Some(&["b".to_string()][..]), "b still holds it");
    assert_eq!(names(&p.untrack), ["b"], "so its removal is tried again");
}

#[test]
fn completions_reached_set_success_criteria_met_then_complete() {
    let j = job(serde_json::json!({"completions": 3, "parallelism": 2}), serde_json::json!({"succeeded": 2}));
    let p = run(&j, &[pod("c").exited(0, 1).build()]);
    assert!(p.create.is_empty());
    assert_eq!(
        conditions(&p.status),
        [("SuccessCriteriaMet".into(), "True".into(), "CompletionsReached".into())],
        "the interim condition is written with the uncounted pod"
    );
    let (s, finished) = after_release(&p);
    assert!(finished);
    assert_eq!(s.succeeded, Some(3));
    let complete = s.conditions.iter().flatten().find(|c| c.type_ == "Complete").expect("Complete");
    assert_eq!(complete.reason.as_deref(), Some("CompletionsReached"));
    assert_eq!(complete.message.as_deref(), Some("Reached expected number of succeeded pods"));
    assert_eq!(s.completion_time, Some(Time(now())));
}

#[test]
fn a_work_queue_job_completes_once_a_pod_succeeded_and_none_runs() {
    let spec = serde_json::json!({"completions": null, "parallelism": 2});
    let j = job(spec.clone(), serde_json::json!({"succeeded": 1}));
    let p = run(&j, &[pod("a").ready().build()]);
    assert!(p.create.is_empty() && p.delete.is_empty(), "the running pod finishes; no new one starts");
    assert!(p.finish.is_none());
    let p = run(&j, &[]);
    assert_eq!(p.finish.map(|c| c.type_), Some("Complete".into()));
    let fresh = run(&job(spec, serde_json::json!({})), &[]);
    assert_eq!(fresh.create.len(), 2, "no success yet: parallelism pods");
}

#[test]
fn past_the_backoff_limit_the_job_fails_and_its_active_pods_go() {
    let j = job(serde_json::json!({"completions": 2, "backoffLimit": 1}), serde_json::json!({"failed": 1}));
    let pods = [pod("f").exited(1, 3).build(), pod("r").ready().build()];
    let p = run(&j, &pods);
    assert_eq!(conditions(&p.status), [("FailureTarget".into(), "True".into(), "BackoffLimitExceeded".into())]);
    assert_eq!(names(&p.delete), ["r"]);
    assert_eq!(names(&p.untrack), ["f", "r"], "every pod is released");
    let u = p.status.uncounted_terminated_pods.clone().expect("uncounted");
    assert_eq!(u.failed.map(|v| v.len()), Some(2), "the running pod counts as failed too");
    assert_eq!(p.status.terminating, Some(1));
    let (s, finished) = after_release(&p);
    assert!(!finished, "the deleted pod still terminates");
    assert_eq!(s.failed, Some(3));

    // Next sync: the interim condition is there and nothing is left: Failed.
    let j = job(serde_json::json!({"completions": 2, "backoffLimit": 1}), serde_json::to_value(&s).expect("status"));
    let p = run(&j, &[pod("f").exited(1, 3).untracked().build()]);
    let (s, finished) = after_release(&p);
    assert!(finished);
    let failed = s.conditions.iter().flatten().find(|c| c.type_ == "Failed").expect("Failed");
    assert_eq!(failed.message.as_deref(), Some("Job has reached the specified backoff limit"));
    assert_eq!(s.completion_time, None);
}

#[test]
fn replacements_for_failed_pods_wait_out_the_backoff() {
    let j = job(serde_json::json!({"completions": 1}), serde_json::json!({}));
    let p = run(&j, &[pod("f").exited(1, 4).build()]);
    assert!(p.create.is_empty());
    assert_eq!(p.requeue, Some(Duration::from_secs(6)), "10 s after the failure");
    let p = run(&j, &[pod("f").exited(1, 11).build()]);
    assert_eq!(p.create.len(), 1);
    let twice = [pod("f").exited(1, 15).untracked().build(), pod("g").exited(1, 15).build()];
    let p = run(&job(serde_json::json!({"completions": 1}), serde_json::json!({"failed": 1})), &twice);
    assert_eq!(p.requeue, Some(Duration::from_secs(5)), "two failures in a row: 20 s");
}

#[test]
fn the_active_deadline_fails_the_job_and_is_waited_for_until_then() {
    let spec = serde_json::json!({"completions": 1, "activeDeadlineSeconds": 30});
    let p = run(&job(spec.clone(), serde_json::json!({"startTime": ago(10)})), &[pod("a").ready().build()]);
    assert_eq!(p.requeue, Some(Duration::from_secs(20)));
    assert!(p.finish.is_none());
    let p = run(&job(spec, serde_json::json!({"startTime": ago(31)})), &[pod("a").ready().build()]);
    assert_eq!(conditions(&p.status), [("FailureTarget".into(), "True".into(), "DeadlineExceeded".into())]);
    assert_eq!(p.finish.and_then(|c| c.message), Some("Job was active longer than specified deadline".into()));
    assert_eq!(names(&p.delete), ["a"]);
}

#[test]
fn suspending_deletes_active_pods_and_resuming_restarts_the_clock() {
    let p = run(
        &job(serde_json::json!({"completions": 2, "suspend": true}), serde_json::json!({"startTime": ago(100)})),
        &[pod("a").ready().build()],
    );
    assert_eq!(names(&p.delete), ["a"]);
    assert!(p.create.is_empty());
    assert_eq!(conditions(&p.status), [("Suspended".into(), "True".into(), "JobSuspended".into())]);
    assert_eq!(p.notes, [Note { warning: false, reason: "Suspended", message: "Job suspended".into() }]);
    assert_eq!(p.status.active, None);

    let created_suspended = run(&job(serde_json::json!({"suspend": true}), serde_json::json!({})), &[]);
    assert_eq!(created_suspended.status.start_time, None, "no clock before the first resume");

    let suspended = serde_json::to_value(&p.status).expect("status");
    let p = run(&job(serde_json::json!({"completions": 2, "suspend": false}), suspended), &[]);
    assert_eq!(conditions(&p.status), [("Suspended".into(), "False".into(), "JobResumed".into())]);
    assert_eq!(p.status.start_time, Some(Time(now())));
    assert_eq!(p.notes[0].reason, "Resumed");
    assert_eq!(p.create.len(), 1);
}

#[test]
fn indexed_jobs_fill_the_lowest_missing_indexes_and_report_completed_ones() {
    let j = job(
        serde_json::json!({"completionMode": "Indexed", "completions": 5, "parallelism": 3}),
        serde_json::json!({}),
    );
    let pods = [
        pod("a").index(0).exited(0, 5).build(),
        pod("b").index(1).exited(0, 5).build(),
        pod("c").index(2).ready().build(),
    ];
    let p = run(&j, &pods);
    assert_eq!(p.create.iter().map(|c| c.index).collect::<Vec<_>>(), [Some(3), Some(4)]);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0,1"));
    assert_eq!(p.status.succeeded, Some(2));
    assert_eq!(p.status.uncounted_terminated_pods, Some(UncountedTerminatedPods::default()), "indexes, not UIDs");
    assert_eq!(names(&p.untrack), ["a", "b"]);

    let all = serde_json::json!({"completedIndexes": "0-3", "succeeded": 4});
    let last = run(
        &job(serde_json::json!({"completionMode": "Indexed", "completions": 5}), all),
        &[pod("e").index(4).exited(0, 1).build()],
    );
    assert_eq!(last.status.completed_indexes.as_deref(), Some("0-4"));
    assert_eq!(last.finish.map(|c| c.type_), Some("Complete".into()));
}

#[test]
fn indexed_jobs_delete_duplicate_and_invalid_index_pods() {
    let j = job(
        serde_json::json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}),
        serde_json::json!({}),
    );
    let pods = [
        pod("a").index(0).ready().build(),
        pod("a2").index(0).build(),
        pod("x").index(7).build(),
        pod("n").build(),
        pod("b").index(1).ready().build(),
    ];
    let p = run(&j, &pods);
    assert_eq!(names(&p.delete), ["a2", "n", "x"], "the ready pod of index 0 stays");
    assert!(p.create.is_empty(), "creation waits for the deletions");
}

#[test]
fn a_fail_job_rule_fails_the_job_at_once_with_the_rule_in_the_message() {
    let spec = serde_json::json!({"completions": 3, "parallelism": 2, "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}]}});
    let p = run(&job(spec, serde_json::json!({})), &[pod("bad").exited(42, 1).build(), pod("r").ready().build()]);
    let c = p.status.conditions.iter().flatten().find(|c| c.type_ == "FailureTarget").expect("FailureTarget");
    assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        c.message.as_deref(),
        Some("Container c for pod ns/bad failed with exit code 42 matching FailJob rule at index 0")
    );
    assert_eq!(names(&p.delete), ["r"]);
    assert_eq!(p.finish.map(|c| c.type_), Some("Failed".into()));
}

#[test]
fn ignored_failures_are_released_uncounted_and_replaced_at_once() {
    let spec = serde_json::json!({"completions": 1, "backoffLimit": 0, "podFailurePolicy": {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}});
    let evicted = pod("ev").phase("Failed").condition("DisruptionTarget").build();
    let p = run(&job(spec, serde_json::json!({})), &[evicted]);
    assert!(p.finish.is_none(), "backoffLimit 0 is not exceeded");
    assert_eq!(names(&p.untrack), ["ev"]);
    assert_eq!(p.status.uncounted_terminated_pods, Some(UncountedTerminatedPods::default()));
    assert_eq!(p.create.len(), 1, "no backoff for an ignored failure");
}

#[test]
fn with_a_pod_failure_policy_terminating_pods_are_not_failures_and_block_replacements() {
    let spec = serde_json::json!({"completions": 1, "podFailurePolicy": {"rules": []}});
    let p = run(&job(spec, serde_json::json!({})), &[pod("t").ready().deleting().build()]);
    assert!(p.untrack.is_empty(), "released only once Failed");
    assert!(p.create.is_empty(), "no replacement while it terminates");
    assert_eq!(p.status.terminating, Some(1));
    let p =
        run(&job(serde_json::json!({"completions": 1}), serde_json::json!({})), &[pod("t").ready().deleting().build()]);
    assert_eq!(p.status.uncounted_terminated_pods.and_then(|u| u.failed).map(|v| v.len()), Some(1), "a failure");
    assert_eq!(names(&p.untrack), ["t"]);
    assert_eq!(p.requeue, Some(Duration::from_secs(9)), "replaced after the backoff, not after it terminates");
}

#[test]
fn an_index_failing_past_its_own_limit_fails_and_the_job_fails_when_no_index_is_left() {
    let spec = serde_json::json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
        "backoffLimitPerIndex": 1, "backoffLimit": 6});
    let first = run(
        &job(spec.clone(), serde_json::json!({})),
        &[pod("a").index(0).exited(1, 20).build(), pod("b").index(1).ready().build()],
    );
    assert_eq!(first.status.failed_indexes.as_deref(), Some(""), "one failure of index 0 is within its limit");
    assert_eq!(first.create, [NewPod { index: Some(0), index_failures: Some(1) }]);

    let second = run(
        &job(spec.clone(), serde_json::json!({})),
        &[
            pod("a").index(0).exited(1, 20).untracked().build(),
            pod("a2").index(0).index_failures(1).exited(1, 5).build(),
            pod("b").index(1).exited(0, 1).build(),
        ],
    );
    assert_eq!(second.status.failed_indexes.as_deref(), Some("0"));
    assert_eq!(second.status.completed_indexes.as_deref(), Some("1"));
    let c = second.status.conditions.iter().flatten().find(|c| c.type_ == "FailureTarget").expect("FailureTarget");
    assert_eq!(c.reason.as_deref(), Some("FailedIndexes"));
    assert_eq!(c.message.as_deref(), Some("Job has failed indexes"));

    let capped = serde_json::json!({"completionMode": "Indexed", "completions": 4, "parallelism": 4,
        "backoffLimitPerIndex": 0, "maxFailedIndexes": 0});
    let p = run(&job(capped, serde_json::json!({})), &[pod("a").index(0).exited(1, 1).build()]);
    let c = p.status.conditions.iter().flatten().find(|c| c.type_ == "FailureTarget").expect("FailureTarget");
    assert_eq!(c.reason.as_deref(), Some("MaxFailedIndexesExceeded"));
}

#[test]
fn a_success_policy_rule_ends_an_indexed_job_early() {
    let spec = serde_json::json!({"completionMode": "Indexed", "completions": 5, "parallelism": 5,
        "successPolicy": {"rules": [{"succeededIndexes": "0-2", "succeededCount": 5}, {"succeededIndexes": "0,4"}]}});
    let p = run(
        &job(spec, serde_json::json!({"completedIndexes": "0"})),
        &[pod("e").index(4).exited(0, 1).build(), pod("r").index(2).ready().build()],
    );
    let c = p.status.conditions.iter().flatten().find(|c| c.type_ == "SuccessCriteriaMet").expect("met");
    assert_eq!((c.reason.as_deref(), c.message.as_deref()), (Some("SuccessPolicy"), Some("Matched rules at index 1")));
    assert_eq!(names(&p.delete), ["r"], "the rest is stopped");
    let u = p.status.uncounted_terminated_pods.clone().expect("uncounted");
    assert!(u.failed.is_none(), "pods stopped on success are not failures");
}

#[test]
fn restarts_of_on_failure_pods_count_against_the_backoff_limit() {
    let spec = serde_json::json!({"completions": 1, "backoffLimit": 3,
        "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}});
    let p = run(&job(spec.clone(), serde_json::json!({})), &[pod("a").restarts(2).build()]);
    assert!(p.finish.is_none());
    let p = run(&job(spec, serde_json::json!({})), &[pod("a").restarts(3).build()]);
    assert_eq!(p.finish.and_then(|c| c.reason), Some("BackoffLimitExceeded".into()));
}

#[test]
fn nothing_is_created_or_deleted_while_earlier_writes_are_unseen() {
    let j = job(serde_json::json!({"completions": 3, "parallelism": 2}), serde_json::json!({}));
    let p = plan(&j, &Observed { pods: &[], untracking: &HashSet::new(), may_manage: false, now: now() });
    assert!(p.create.is_empty());
    assert_eq!(p.status.active, None);
    let failing = job(serde_json::json!({"completions": 3, "backoffLimit": 0}), serde_json::json!({}));
    let p = plan(
        &failing,
        &Observed {
            pods: &[pod("f").exited(1, 1).build()],
            untracking: &HashSet::new(),
            may_manage: false,
            now: now(),
        },
    );
    assert!(p.finish.is_none() && p.status.conditions.is_none(), "the failure is declared on a later sync");
}
