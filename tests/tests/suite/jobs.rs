//! The Job, TTL-after-finished and CronJob controllers in-process against the in-memory
//! apiserver. No kubelet runs: the tests play its part by patching pod status (Running,
//! Succeeded, Failed with exit codes and conditions). Tests named `cNNN_` cover the
//! conformance ledger row of that id as far as it needs no real node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::eventually;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::controllers::{Harness, harness};

impl Harness {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn cronjobs(&self) -> Api<CronJob> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The Job's pods not being deleted, oldest first.
    async fn live_pods(&self, job: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
        let mut pods: Vec<Pod> = self.pods().list(&lp).await.map(|l| l.items).unwrap_or_default();
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name).cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        pods
    }

    /// The Job's unfinished pods, once there are exactly `n`.
    async fn running(&self, job: &str, n: usize) -> Vec<Pod> {
        eventually(Duration::from_secs(20), &format!("{n} unfinished pods of {job}"), || async {
            let pods: Vec<Pod> =
                self.live_pods(job).await.into_iter().filter(|p| !matches!(phase(p), "Succeeded" | "Failed")).collect();
            (pods.len() == n).then_some(pods)
        })
        .await
    }

    /// Marks the pod finished as a kubelet would: its container exited with `code`.
    async fn exit(&self, pod: &Pod, code: i32, conditions: serde_json::Value) {
        let now = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({"status": {
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "conditions": conditions,
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "image": "busybox",
                "imageID": "", "state": {"terminated": {"exitCode": code, "finishedAt": now}}}]}});
        let name = pod.metadata.name.as_deref().expect("name");
        self.pods().patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("pod status");
    }

    async fn wait_job(&self, name: &str, what: &str, check: impl Fn(&Job) -> bool) -> Job {
        eventually(Duration::from_secs(30), &format!("{name}: {what}"), || async {
            let j = self.jobs().get(name).await.ok()?;
            check(&j).then_some(j)
        })
        .await
    }

    /// Waits for an event on `kind/name` with this reason and returns its message.
    async fn event(&self, kind: &str, name: &str, reason: &str) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        eventually(Duration::from_secs(20), &format!("a {reason} event on {kind} {name}"), || async {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            list.into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.kind.as_deref() == Some(kind)
                        && e.involved_object.name.as_deref() == Some(name)
                })
                .and_then(|e| e.message)
        })
        .await
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut s = serde_json::json!({
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default"}, "spec": s}))
        .expect("job")
}

fn condition<'a>(j: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    j.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

fn owned_by(p: &Pod, uid: &str) -> bool {
    p.metadata.owner_references.iter().flatten().any(|r| r.uid == uid && r.controller == Some(true))
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata.finalizers.iter().flatten().any(|f| f == "batch.kubernetes.io/job-tracking")
}

#[tokio::test]
async fn c125_c123_a_job_keeps_parallelism_pods_active_and_completes_three_of_three() {
    let h = harness(&["job"]).await;
    let created = h
        .jobs()
        .create(&PostParams::default(), &job("pi", serde_json::json!({"completions": 3, "parallelism": 2})))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid");
    let first = h.running("pi", 2).await;
    for p in &first {
        assert!(name(p).starts_with("pi-"), "{}", name(p));
        let labels = p.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["job-name"], "pi");
        assert!(has_finalizer(p), "pods are created holding the tracking finalizer");
        let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Job", uid.as_str(), Some(true)));
    }
    let j = h.wait_job("pi", "status.active 2", |j| j.status.as_ref().and_then(|s| s.active) == Some(2)).await;
    assert!(j.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some());

    // C123: /status takes a patch and an update on a running Job, and the controller keeps them.
    let started = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 60).expect("time");
    let patch = serde_json::json!({"status": {"startTime": started.to_string()}});
    let patched =
        h.jobs().patch_status("pi", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch status");
    assert_eq!(patched.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0), Some(started));
    let mut got = h.jobs().get_status("pi").await.expect("get status");
    got.status.get_or_insert_default().ready = Some(0);
    h.jobs().replace_status("pi", &PostParams::default(), &got).await.expect("update status");
    h.wait_job("pi", "the patched startTime kept", |j| {
        j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0) == Some(started)
            && j.status.as_ref().and_then(|s| s.active) == Some(2)
    })
    .await;

    for p in &first {
        h.exit(p, 0, serde_json::json!([])).await;
    }
    let last = h.running("pi", 1).await;
    assert!(!first.iter().any(|p| name(p) == name(&last[0])), "a third pod, not a restarted one");
    h.wait_job("pi", "succeeded 2", |j| j.status.as_ref().and_then(|s| s.succeeded) == Some(2)).await;
    h.exit(&last[0], 0, serde_json::json!([])).await;
    let done = h.wait_job("pi", "Complete", |j| condition(j, "Complete").is_some()).await;
    let s = done.status.as_ref().expect("status");
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(s.active, None);
    assert!(s.completion_time.is_some());
    assert!(condition(&done, "SuccessCriteriaMet").is_some(), "the interim condition stays");
    assert_eq!(condition(&done, "Complete").and_then(|c| c.reason.as_deref()), Some("CompletionsReached"));
    assert_eq!(
        s.uncounted_terminated_pods.as_ref().map(|u| (u.succeeded.is_none(), u.failed.is_none())),
        Some((true, true))
    );
    let pods = h.live_pods("pi").await;
    assert_eq!(pods.len(), 3, "a finished Job keeps its pods");
    assert!(pods.iter().all(|p| !has_finalizer(p)), "every pod was counted and released");
    assert_eq!(h.event("Job", "pi", "Completed").await, "Job completed");
    assert!(h.event("Job", "pi", "SuccessfulCreate").await.starts_with("Created pod: pi-"));
}

#[tokio::test]
async fn a_job_past_its_backoff_limit_fails_after_backing_off_between_failures() {
    let h = harness(&["job"]).await;
    h.jobs()
        .create(&PostParams::default(), &job("flaky", serde_json::json!({"backoffLimit": 1})))
        .await
        .expect("create");
    let first = h.running("flaky", 1).await;
    h.exit(&first[0], 1, serde_json::json!([])).await;
    let failed_at = Instant::now();
    let second = h.running("flaky", 1).await;
    assert_ne!(name(&second[0]), name(&first[0]));
    assert!(failed_at.elapsed() >= Duration::from_secs(8), "the replacement waited the 10 s backoff");
    h.exit(&second[0], 1, serde_json::json!([])).await;
    let j = h.wait_job("flaky", "Failed", |j| condition(j, "Failed").is_some()).await;
    let c = condition(&j, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(c.message.as_deref(), Some("Job has reached the specified backoff limit"));
    assert!(condition(&j, "FailureTarget").is_some());
    assert_eq!(j.status.as_ref().and_then(|s| s.failed), Some(2));
    assert_eq!(h.event("Job", "flaky", "BackoffLimitExceeded").await, "Job has reached the specified backoff limit");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.live_pods("flaky").await.len(), 2, "no pod after the Job failed; the failed ones stay");
}

#[tokio::test]
async fn c124_an_indexed_job_gives_each_pod_its_index_and_reports_completed_indexes() {
    let h = harness(&["job"]).await;
    let spec = serde_json::json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3});
    h.jobs().create(&PostParams::default(), &job("idx", spec)).await.expect("create");
    let pods = h.running("idx", 3).await;
    let mut by_index: BTreeMap<String, Pod> = BTreeMap::new();
    for p in pods {
        let index =
            p.metadata.annotations.as_ref().expect("annotations")["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(p.metadata.labels.as_ref().expect("labels")["batch.kubernetes.io/job-completion-index"], index);
        assert!(name(&p).starts_with(&format!("idx-{index}-")), "{}", name(&p));
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{index}").as_str()));
        let env = spec.containers[0].env.as_ref().expect("env");
        let var = env.iter().find(|e| e.name == "JOB_COMPLETION_INDEX").expect("JOB_COMPLETION_INDEX");
        assert_eq!(
            var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str()),
            Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        by_index.insert(index, p);
    }
    assert_eq!(by_index.keys().map(String::as_str).collect::<Vec<_>>(), ["0", "1", "2"], "unique indexes");
    h.exit(&by_index["0"], 0, serde_json::json!([])).await;
    h.exit(&by_index["2"], 0, serde_json::json!([])).await;
    h.wait_job("idx", "completedIndexes 0,2", |j| {
        j.status.as_ref().and_then(|s| s.completed_indexes.as_deref()) == Some("0,2")
    })
    .await;
    h.exit(&by_index["1"], 0, serde_json::json!([])).await;
    let j = h.wait_job("idx", "Complete", |j| condition(j, "Complete").is_some()).await;
    let s = j.status.as_ref().expect("status");
    assert_eq!((s.completed_indexes.as_deref(), s.succeeded), (Some("0-2"), Some(3)));
}

#[tokio::test]
async fn c126_a_suspended_job_starts_nothing_until_resumed_and_suspending_again_stops_its_pods() {
    let h = harness(&["job"]).await;
    let spec = serde_json::json!({"suspend": true, "parallelism": 2, "completions": 4});
    let mut j = job("sus", spec);
    j.metadata.labels = Some([("batch".to_string(), "c126".to_string())].into());
    h.jobs().create(&PostParams::default(), &j).await.expect("create");
    let j = h.wait_job("sus", "Suspended", |j| condition(j, "Suspended").is_some()).await;
    let c = condition(&j, "Suspended").expect("Suspended");
    assert_eq!((c.reason.as_deref(), c.message.as_deref()), (Some("JobSuspended"), Some("Job suspended")));
    assert!(j.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none(), "no clock while suspended");
    assert!(h.live_pods("sus").await.is_empty());

    // C126: listed by label across namespaces, replaced while suspended.
    let all: Api<Job> = Api::all(h.client.clone());
    let listed = all.list(&ListParams::default().labels("batch=c126")).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    let mut replaced = h.jobs().get("sus").await.expect("get");
    replaced.metadata.annotations = Some([("updated".to_string(), "true".to_string())].into());
    h.jobs().replace("sus", &PostParams::default(), &replaced).await.expect("replace");

    let resume = serde_json::json!({"spec": {"suspend": false}});
    h.jobs().patch("sus", &PatchParams::default(), &Patch::Merge(&resume)).await.expect("resume");
    h.running("sus", 2).await;
    let j = h
        .wait_job("sus", "resumed", |j| {
            j.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Suspended" && c.status == "False" && c.reason.as_deref() == Some("JobResumed"))
            })
        })
        .await;
    assert!(j.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some(), "the clock starts on resume");
    assert_eq!(h.event("Job", "sus", "Resumed").await, "Job resumed");

    let suspend = serde_json::json!({"spec": {"suspend": true}});
    h.jobs().patch("sus", &PatchParams::default(), &Patch::Merge(&suspend)).await.expect("suspend");
    eventually(Duration::from_secs(20), "the suspended Job's pods gone", || async {
        let lp = ListParams::default().labels("batch.kubernetes.io/job-name=sus");
        h.pods().list(&lp).await.ok()?.items.is_empty().then_some(())
    })
    .await;
    h.wait_job("sus", "Suspended again, none active", |j| {
        condition(j, "Suspended").is_some() && j.status.as_ref().and_then(|s| s.active).is_none()
    })
    .await;

    // C126: deleted by collection.
    h.jobs()
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("batch=c126"))
        .await
        .expect("delete");
    eventually(Duration::from_secs(10), "the Job gone", || async {
        h.jobs().get_opt("sus").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_job_past_its_active_deadline_fails_and_its_pods_are_stopped() {
    let h = harness(&["job"]).await;
    h.jobs()
        .create(
            &PostParams::default(),
            &job("slow", serde_json::json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2})),
        )
        .await
        .expect("create");
    h.running("slow", 2).await;
    let j = h.wait_job("slow", "Failed", |j| condition(j, "Failed").is_some()).await;
    let c = condition(&j, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(c.message.as_deref(), Some("Job was active longer than specified deadline"));
    assert_eq!(j.status.as_ref().and_then(|s| s.failed), Some(2), "the stopped pods count as failed");
    assert!(h.live_pods("slow").await.is_empty(), "the active pods were deleted");
    assert_eq!(h.event("Job", "slow", "DeadlineExceeded").await, "Job was active longer than specified deadline");
}

#[tokio::test]
async fn c122_a_fail_job_rule_on_an_exit_code_fails_the_job_at_once() {
    let h = harness(&["job"]).await;
    let spec = serde_json::json!({"parallelism": 2, "completions": 4, "backoffLimit": 6,
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}]}});
    h.jobs().create(&PostParams::default(), &job("pfp", spec)).await.expect("create");
    let pods = h.running("pfp", 2).await;
    h.exit(&pods[0], 42, serde_json::json!([])).await;
    let j = h.wait_job("pfp", "Failed", |j| condition(j, "Failed").is_some()).await;
    let c = condition(&j, "Failed").expect("Failed");
    assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        c.message.clone().unwrap_or_default(),
        format!(
            "Container c for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
            name(&pods[0])
        )
    );
    assert!(h.live_pods("pfp").await.iter().all(|p| name(p) == name(&pods[0])), "the other pod was stopped");
}

#[tokio::test]
async fn c121_an_indexed_job_ignores_failures_of_disrupted_pods() {
    let h = harness(&["job"]).await;
    let spec = serde_json::json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}});
    h.jobs().create(&PostParams::default(), &job("evict", spec)).await.expect("create");
    let pods = h.running("evict", 2).await;
    let evicted =
        serde_json::json!([{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]);
    h.exit(&pods[0], 137, evicted).await;
    let index =
        |p: &Pod| p.metadata.annotations.as_ref().map(|a| a["batch.kubernetes.io/job-completion-index"].clone());
    let replacement = eventually(Duration::from_secs(20), "a replacement for the evicted index", || async {
        let live = h.live_pods("evict").await;
        live.into_iter().find(|p| name(p) != name(&pods[0]) && index(p) == index(&pods[0]) && phase(p) != "Failed")
    })
    .await;
    h.exit(&replacement, 0, serde_json::json!([])).await;
    h.exit(&pods[1], 0, serde_json::json!([])).await;
    let j = h.wait_job("evict", "Complete", |j| condition(j, "Complete").is_some()).await;
    assert_eq!(j.status.as_ref().and_then(|s| s.failed), None, "the disruption was not counted");
}

#[tokio::test]
async fn c127_a_job_whose_pod_restarted_after_a_failure_still_completes() {
    let h = harness(&["job"]).await;
    let spec = serde_json::json!({"template": {"spec": {"restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox"}]}}});
    h.jobs().create(&PostParams::default(), &job("again", spec)).await.expect("create");
    let pods = h.running("again", 1).await;
    let restarted = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{"name": "c", "ready": true,
        "restartCount": 1, "image": "busybox", "imageID": "", "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 1}}}]}});
    h.pods().patch_status(name(&pods[0]), &PatchParams::default(), &Patch::Merge(&restarted)).await.expect("restart");
    h.exit(&pods[0], 0, serde_json::json!([])).await;
    let j = h.wait_job("again", "Complete", |j| condition(j, "Complete").is_some()).await;
    assert_eq!(j.status.as_ref().map(|s| (s.succeeded, s.failed)), Some((Some(1), None)));
}

#[tokio::test]
async fn c120_a_job_readopts_an_orphaned_pod_and_releases_a_relabelled_one() {
    let h = harness(&["job"]).await;
    let created = h
        .jobs()
        .create(&PostParams::default(), &job("adopt", serde_json::json!({"parallelism": 2, "completions": 2})))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid");
    let pods = h.running("adopt", 2).await;
    let orphan = name(&pods[0]).to_string();
    let patch = serde_json::json!({"metadata": {"ownerReferences": null}});
    h.pods().patch(&orphan, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("orphan");
    eventually(Duration::from_secs(20), "the orphan adopted again", || async {
        let p = h.pods().get(&orphan).await.ok()?;
        owned_by(&p, &uid).then_some(())
    })
    .await;

    let relabelled = name(&pods[1]).to_string();
    let patch = serde_json::json!({"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "someone-else"}}});
    h.pods().patch(&relabelled, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("relabel");
    eventually(Duration::from_secs(20), "the relabelled pod released", || async {
        let p = h.pods().get(&relabelled).await.ok()?;
        (p.metadata.owner_references.as_ref().is_none_or(|r| r.is_empty()) && !has_finalizer(&p)).then_some(())
    })
    .await;
    let owned = eventually(Duration::from_secs(20), "two pods owned again", || async {
        let pods: Vec<Pod> = h.live_pods("adopt").await.into_iter().filter(|p| owned_by(p, &uid)).collect();
        (pods.len() == 2).then_some(pods)
    })
    .await;
    assert!(owned.iter().any(|p| name(p) == orphan) && !owned.iter().any(|p| name(p) == relabelled), "replaced");
}

#[tokio::test]
async fn ttl_seconds_after_finished_0_deletes_a_job_once_it_completes() {
    let h = harness(&["job", "ttl-after-finished"]).await;
    h.jobs()
        .create(&PostParams::default(), &job("short", serde_json::json!({"ttlSecondsAfterFinished": 0})))
        .await
        .expect("create");
    let pods = h.running("short", 1).await;
    h.exit(&pods[0], 0, serde_json::json!([])).await;
    eventually(Duration::from_secs(20), "the finished Job deleted", || async {
        match h.jobs().get_opt("short").await.ok()? {
            None => Some(()),
            // Foreground deletion: the Job waits for the garbage collector to remove its pods.
            Some(j) => j.metadata.deletion_timestamp.is_some().then_some(()),
        }
    })
    .await;
}

fn cronjob(name: &str, spec: serde_json::Value) -> CronJob {
    let mut s = serde_json::json!({
        "schedule": "* * * * *",
        "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}}
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "default"}, "spec": s}))
        .expect("cronjob")
}

/// The start of the current minute and of three minutes before.
fn minutes() -> (jiff::Timestamp, jiff::Timestamp) {
    let m = jiff::Timestamp::now().as_second().div_euclid(60) * 60;
    (jiff::Timestamp::from_second(m).expect("time"), jiff::Timestamp::from_second(m - 180).expect("time"))
}

impl Harness {
    /// Creates the CronJob and, by hand, an unfinished Job it owns; then makes the CronJob's
    /// status say it last ran three minutes ago with that Job active, so a schedule of every
    /// minute is due at once. Returns the CronJob's UID.
    async fn cronjob_with_running_job(&self, cj: &CronJob) -> String {
        let name = cj.metadata.name.clone().expect("name");
        let created = self.cronjobs().create(&PostParams::default(), cj).await.expect("cronjob");
        let uid = created.metadata.uid.clone().expect("uid");
        let mut manual = job(&format!("{name}-manual"), serde_json::json!({}));
        manual.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let manual = self.jobs().create(&PostParams::default(), &manual).await.expect("job");
        let (_, earlier) = minutes();
        let patch = serde_json::json!({"status": {"lastScheduleTime": earlier.to_string(), "active": [{
            "apiVersion": "batch/v1", "kind": "Job", "namespace": "default",
            "name": manual.metadata.name, "uid": manual.metadata.uid}]}});
        self.cronjobs().patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("status");
        uid
    }

    /// The Jobs the CronJob owns, by name.
    async fn jobs_of(&self, uid: &str) -> BTreeMap<String, Job> {
        let list = self.jobs().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter()
            .filter(|j| j.metadata.owner_references.iter().flatten().any(|r| r.uid == uid))
            .map(|j| (j.metadata.name.clone().unwrap_or_default(), j))
            .collect()
    }

    async fn active_names(&self, name: &str) -> Vec<String> {
        let cj = self.cronjobs().get(name).await.expect("cronjob");
        cj.status.and_then(|s| s.active).unwrap_or_default().into_iter().filter_map(|r| r.name).collect()
    }
}

#[tokio::test]
async fn c098_allow_starts_the_due_job_while_another_runs() {
    let h = harness(&["cronjob"]).await;
    let uid = h.cronjob_with_running_job(&cronjob("allow", serde_json::json!({"concurrencyPolicy": "Allow"}))).await;
    let jobs = eventually(Duration::from_secs(20), "the due Job", || async {
        let jobs = h.jobs_of(&uid).await;
        (jobs.len() == 2).then_some(jobs)
    })
    .await;
    let (due, job) = jobs.iter().find(|(n, _)| n.as_str() != "allow-manual").expect("the new Job");
    let scheduled: jiff::Timestamp =
        job.metadata.annotations.as_ref().expect("annotations")["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .parse()
            .expect("an RFC 3339 time");
    assert_eq!(scheduled.as_second() % 60, 0, "a schedule time is a whole minute");
    assert!(scheduled > minutes().1 && scheduled <= jiff::Timestamp::now(), "the latest due time: {scheduled}");
    assert_eq!(due, &format!("allow-{}", scheduled.as_second() / 60), "named for its minute");
    assert_eq!(job.metadata.labels.as_ref().expect("labels")["cron"], "allow");
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("CronJob", Some(true)));
    eventually(Duration::from_secs(10), "both Jobs active", || async {
        let mut active = h.active_names("allow").await;
        active.sort();
        let mut want = vec!["allow-manual".to_string(), due.clone()];
        want.sort();
        (active == want).then_some(())
    })
    .await;
    let cj = h.cronjobs().get("allow").await.expect("cronjob");
    assert!(cj.status.and_then(|s| s.last_schedule_time).is_some_and(|t| t.0 >= scheduled));
    assert_eq!(h.event("CronJob", "allow", "SuccessfulCreate").await, format!("Created job {due}"));
}

#[tokio::test]
async fn c096_forbid_skips_the_due_job_while_one_runs_and_starts_it_once_that_finished() {
    let h = harness(&["cronjob"]).await;
    let uid = h.cronjob_with_running_job(&cronjob("forbid", serde_json::json!({"concurrencyPolicy": "Forbid"}))).await;
    assert_eq!(
        h.event("CronJob", "forbid", "JobAlreadyActive").await,
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert_eq!(h.jobs_of(&uid).await.len(), 1, "nothing started while the Job runs");
    let now = jiff::Timestamp::now().to_string();
    let done = serde_json::json!({"status": {"startTime": now, "completionTime": now, "conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": now}]}});
    h.jobs().patch_status("forbid-manual", &PatchParams::default(), &Patch::Merge(&done)).await.expect("finish");
    assert_eq!(
        h.event("CronJob", "forbid", "SawCompletedJob").await,
        "Saw completed job: forbid-manual, condition: Complete"
    );
    eventually(Duration::from_secs(20), "the due Job, alone in the active list", || async {
        let active = h.active_names("forbid").await;
        (active.len() == 1 && active[0].starts_with("forbid-") && active[0] != "forbid-manual").then_some(())
    })
    .await;
    let cj = h.cronjobs().get("forbid").await.expect("cronjob");
    assert!(cj.status.and_then(|s| s.last_successful_time).is_some());
}

#[tokio::test]
async fn c097_replace_deletes_the_running_job_and_starts_the_due_one() {
    let h = harness(&["cronjob"]).await;
    let uid = h.cronjob_with_running_job(&cronjob("swap", serde_json::json!({"concurrencyPolicy": "Replace"}))).await;
    eventually(Duration::from_secs(20), "only the due Job", || async {
        let jobs = h.jobs_of(&uid).await;
        (jobs.len() == 1 && !jobs.contains_key("swap-manual")).then_some(())
    })
    .await;
    assert_eq!(h.event("CronJob", "swap", "SuccessfulDelete").await, "Deleted job swap-manual");
    eventually(Duration::from_secs(10), "the new Job active", || async {
        let active = h.active_names("swap").await;
        (active.len() == 1 && active[0] != "swap-manual").then_some(())
    })
    .await;
}

#[tokio::test]
async fn c095_a_suspended_cronjob_creates_no_jobs_until_resumed() {
    let h = harness(&["cronjob"]).await;
    let cj = cronjob("paused", serde_json::json!({"suspend": true}));
    let created = h.cronjobs().create(&PostParams::default(), &cj).await.expect("cronjob");
    let uid = created.metadata.uid.clone().expect("uid");
    let (_, earlier) = minutes();
    let patch = serde_json::json!({"status": {"lastScheduleTime": earlier.to_string()}});
    h.cronjobs().patch_status("paused", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("status");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.jobs_of(&uid).await.is_empty(), "a due time passes while suspended");
    let resume = serde_json::json!({"spec": {"suspend": false}});
    h.cronjobs().patch("paused", &PatchParams::default(), &Patch::Merge(&resume)).await.expect("resume");
    eventually(Duration::from_secs(20), "a Job once resumed", || async {
        (h.jobs_of(&uid).await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cronjob_keeps_only_its_history_limit_of_finished_jobs() {
    let h = harness(&["cronjob"]).await;
    let spec = serde_json::json!({"suspend": true, "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1});
    let created = h.cronjobs().create(&PostParams::default(), &cronjob("hist", spec)).await.expect("cronjob");
    let uid = created.metadata.uid.clone().expect("uid");
    for (i, outcome) in ["Complete", "Complete", "Complete", "Failed"].iter().enumerate() {
        let mut j = job(&format!("hist-{i}"), serde_json::json!({}));
        j.metadata.owner_references = created.metadata.uid.as_ref().map(|u| {
            vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: "hist".into(),
                uid: u.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        });
        h.jobs().create(&PostParams::default(), &j).await.expect("job");
        let at = jiff::Timestamp::from_second(1_700_000_000 + i as i64 * 60).expect("time").to_string();
        let status = serde_json::json!({"status": {"startTime": at, "completionTime": at, "conditions": [
            {"type": outcome, "status": "True", "lastTransitionTime": at}]}});
        h.jobs()
            .patch_status(&format!("hist-{i}"), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }
    eventually(Duration::from_secs(20), "the newest success and the failure kept", || async {
        let names: Vec<String> = h.jobs_of(&uid).await.into_keys().collect();
        (names == ["hist-2", "hist-3"]).then_some(())
    })
    .await;
    assert!(h.event("CronJob", "hist", "SuccessfulDelete").await.starts_with("Deleted job hist-"));
}

#[tokio::test]
async fn a_scheduled_job_runs_to_completion_and_the_cronjob_records_its_success() {
    let h = harness(&["cronjob", "job"]).await;
    let cj = cronjob("nightly", serde_json::json!({}));
    h.cronjobs().create(&PostParams::default(), &cj).await.expect("cronjob");
    let (_, earlier) = minutes();
    let patch = serde_json::json!({"status": {"lastScheduleTime": earlier.to_string()}});
    h.cronjobs().patch_status("nightly", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("status");
    let job_name = eventually(Duration::from_secs(20), "the scheduled Job active", || async {
        h.active_names("nightly").await.into_iter().next()
    })
    .await;
    let pods = h.running(&job_name, 1).await;
    h.exit(&pods[0], 0, serde_json::json!([])).await;
    eventually(Duration::from_secs(20), "the success recorded", || async {
        let cj = h.cronjobs().get("nightly").await.ok()?;
        let s = cj.status?;
        (s.active.is_none_or(|a| a.is_empty()) && s.last_successful_time.is_some()).then_some(())
    })
    .await;
    let j = h.jobs().get(&job_name).await.expect("job");
    assert!(condition(&j, "Complete").is_some());
}
