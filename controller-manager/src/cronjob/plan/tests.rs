use super::*;

fn at(s: &str) -> Timestamp {
    s.parse().expect("time")
}

/// A CronJob `cj` created at 10:00:30 whose spec is the defaults overlaid with `spec`.
fn cronjob(spec: serde_json::Value, status: serde_json::Value) -> CronJob {
    let mut s = serde_json::json!({
        "schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"metadata": {"labels": {"app": "report"}, "annotations": {"team": "a"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
    });
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        s[k] = v;
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cj", "namespace": "ns", "uid": "cj-uid", "creationTimestamp": "2026-01-01T10:00:30Z"},
        "spec": s, "status": status,
    }))
    .expect("cronjob")
}

/// A Job of the CronJob; `finished` is ("Complete" | "Failed", when).
fn job(name: &str, started: Option<&str>, finished: Option<(&str, &str)>) -> Arc<Job> {
    let mut status = serde_json::json!({});
    if let Some(s) = started {
        status["startTime"] = serde_json::json!(s);
    }
    if let Some((type_, when)) = finished {
        status["conditions"] = serde_json::json!([{"type": type_, "status": "True", "lastTransitionTime": when}]);
        if type_ == "Complete" {
            status["completionTime"] = serde_json::json!(when);
        }
    }
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "cj", "uid": "cj-uid", "controller": true}]},
            "spec": {"template": {}},
            "status": status,
        }))
        .expect("job"),
    )
}

fn active(names: &[&str]) -> serde_json::Value {
    serde_json::json!(
        names
            .iter()
            .map(|n| serde_json::json!({"kind": "Job", "namespace": "ns", "name": n, "uid": format!("uid-{n}")}))
            .collect::<Vec<_>>()
    )
}

fn run(cj: &CronJob, jobs: &[Arc<Job>], now: &str) -> Plan {
    let schedule = cj.spec.as_ref().map(|s| s.schedule.clone()).unwrap_or_default();
    plan(cj, &schedule, &Observed { jobs, missing: &HashSet::new(), tz: Ok(&TimeZone::UTC), now: at(now) })
}

fn reasons(p: &Plan) -> Vec<&str> {
    p.notes.iter().map(|n| n.reason).collect()
}

fn active_names(p: &Plan) -> Vec<String> {
    p.status.active.iter().flatten().filter_map(|r| r.name.clone()).collect()
}

#[test]
fn a_due_time_creates_the_job_named_for_its_minute_and_requeues_for_the_next() {
    let p = run(&cronjob(serde_json::json!({}), serde_json::json!({})), &[], "2026-01-01T10:05:10Z");
    let (job, scheduled) = p.create.expect("a job");
    assert_eq!(scheduled, at("2026-01-01T10:05:00Z"));
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(format!("cj-{}", at("2026-01-01T10:05:00Z").as_second() / 60).as_str())
    );
    let annotations = job.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations[SCHEDULED_TIMESTAMP], "2026-01-01T10:05:00Z");
    assert_eq!(annotations["team"], "a");
    assert_eq!(job.metadata.labels.as_ref().expect("labels")["app"], "report");
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("CronJob", "cj-uid", Some(true)));
    assert!(job.spec.is_some_and(|s| s.template.spec.is_some()));
    assert_eq!(p.requeue, Some(Duration::from_millis(4 * 60_000 + 50_000 + 100)), "10:10:00.1");
}

#[test]
fn before_the_first_time_nothing_starts_and_the_sync_comes_back_then() {
    let p = run(&cronjob(serde_json::json!({}), serde_json::json!({})), &[], "2026-01-01T10:03:00Z");
    assert!(p.create.is_none());
    assert_eq!(p.requeue, Some(Duration::from_millis(120_100)));
    assert!(p.notes.is_empty());
}

#[test]
fn a_time_already_scheduled_is_not_started_again() {
    let status = serde_json::json!({"lastScheduleTime": "2026-01-01T10:05:00Z"});
    let p = run(&cronjob(serde_json::json!({}), status), &[], "2026-01-01T10:06:00Z");
    assert!(p.create.is_none());
    let name = job_name("cj", at("2026-01-01T10:05:00Z"));
    let listed = run(
        &cronjob(serde_json::json!({}), serde_json::json!({"active": active(&[&name])})),
        &[job(&name, None, None)],
        "2026-01-01T10:06:00Z",
    );
    assert!(listed.create.is_none(), "its Job is in the active list");
}

#[test]
fn forbid_skips_a_time_while_a_job_runs_allow_starts_another_replace_swaps_it() {
    let running = [job("cj-old", None, None)];
    let status = serde_json::json!({"active": active(&["cj-old"]), "lastScheduleTime": "2026-01-01T10:00:00Z"});
    let now = "2026-01-01T10:05:01Z";

    let forbid = run(&cronjob(serde_json::json!({"concurrencyPolicy": "Forbid"}), status.clone()), &running, now);
    assert!(forbid.create.is_none());
    assert_eq!(reasons(&forbid), ["JobAlreadyActive"]);
    assert_eq!(active_names(&forbid), ["cj-old"]);
    assert!(forbid.requeue.is_some());

    let allow = run(&cronjob(serde_json::json!({"concurrencyPolicy": "Allow"}), status.clone()), &running, now);
    assert!(allow.create.is_some());
    assert!(allow.delete.is_empty());

    let replace = run(&cronjob(serde_json::json!({"concurrencyPolicy": "Replace"}), status), &running, now);
    assert!(replace.create.is_some());
    assert_eq!(replace.delete, [Delete { name: "cj-old".into(), uid: Some("uid-cj-old".into()) }]);
    assert!(active_names(&replace).is_empty());
}

#[test]
fn finished_jobs_leave_the_active_list_and_successes_move_last_successful_time() {
    let jobs = [
        job("cj-a", Some("2026-01-01T09:00:00Z"), Some(("Complete", "2026-01-01T09:01:00Z"))),
        job("cj-b", Some("2026-01-01T09:30:00Z"), Some(("Complete", "2026-01-01T09:31:00Z"))),
        job("cj-c", Some("2026-01-01T09:40:00Z"), Some(("Failed", "2026-01-01T09:41:00Z"))),
        job("cj-d", Some("2026-01-01T09:50:00Z"), None),
    ];
    let status = serde_json::json!({"active": active(&["cj-b", "cj-c", "cj-d"]), "lastScheduleTime": "2026-01-01T10:00:00Z",
        "lastSuccessfulTime": "2026-01-01T09:01:00Z"});
    let p = run(&cronjob(serde_json::json!({}), status), &jobs, "2026-01-01T10:01:00Z");
    assert_eq!(active_names(&p), ["cj-d"]);
    assert_eq!(p.status.last_successful_time, Some(Time(at("2026-01-01T09:31:00Z"))));
    let messages: Vec<&str> = p.notes.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(
        messages,
        ["Saw completed job: cj-b, condition: Complete", "Saw completed job: cj-c, condition: Failed"]
    );
}

#[test]
fn an_active_job_gone_from_the_apiserver_is_dropped() {
    let cj = cronjob(
        serde_json::json!({}),
        serde_json::json!({"active": active(&["cj-gone", "cj-slow"]),
        "lastScheduleTime": "2026-01-01T10:00:00Z"}),
    );
    let missing = HashSet::from(["uid-cj-gone".to_string()]);
    let p = plan(
        &cj,
        "*/5 * * * *",
        &Observed { jobs: &[], missing: &missing, tz: Ok(&TimeZone::UTC), now: at("2026-01-01T10:01:00Z") },
    );
    assert_eq!(active_names(&p), ["cj-slow"], "not in the cache but not confirmed gone: kept");
    assert_eq!(p.notes[0].reason, "MissingJob");
    assert_eq!(p.notes[0].message, "Active job went missing: cj-gone");
}

#[test]
fn finished_jobs_beyond_the_history_limits_are_deleted_oldest_first() {
    let ok = |n: &str, start: &str| job(n, Some(start), Some(("Complete", start)));
    let jobs = [
        ok("cj-1", "2026-01-01T09:01:00Z"),
        ok("cj-2", "2026-01-01T09:02:00Z"),
        ok("cj-3", "2026-01-01T09:03:00Z"),
        ok("cj-4", "2026-01-01T09:04:00Z"),
        job("cj-f1", Some("2026-01-01T09:05:00Z"), Some(("Failed", "2026-01-01T09:06:00Z"))),
        job("cj-f2", None, Some(("Failed", "2026-01-01T09:07:00Z"))),
        job("cj-run", Some("2026-01-01T08:00:00Z"), None),
    ];
    let cj = cronjob(
        serde_json::json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
        serde_json::json!({"lastScheduleTime": "2026-01-01T10:00:00Z"}),
    );
    let p = run(&cj, &jobs, "2026-01-01T10:01:00Z");
    let deleted: Vec<&str> = p.delete.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(deleted, ["cj-1", "cj-2", "cj-f1"], "a Job never started counts as the newest");
}

#[test]
fn a_time_missed_by_more_than_the_starting_deadline_is_skipped_with_a_warning() {
    let cj = cronjob(
        serde_json::json!({"startingDeadlineSeconds": 30}),
        serde_json::json!({"lastScheduleTime": "2026-01-01T10:00:00Z"}),
    );
    let late = run(&cj, &[], "2026-01-01T10:05:40Z");
    assert!(late.create.is_none(), "the deadline window starts after 10:05: nothing to start");
    let in_time = run(&cj, &[], "2026-01-01T10:05:20Z");
    assert!(in_time.create.is_some());
    let cj = cronjob(
        serde_json::json!({"startingDeadlineSeconds": 600}),
        serde_json::json!({"lastScheduleTime": "2026-01-01T10:00:00Z"}),
    );
    assert!(run(&cj, &[], "2026-01-01T10:12:00Z").create.is_some_and(|(_, t)| t == at("2026-01-01T10:10:00Z")));
}

#[test]
fn more_than_a_hundred_missed_times_warn_and_still_start_the_latest() {
    let cj = cronjob(
        serde_json::json!({"schedule": "* * * * *"}),
        serde_json::json!({"lastScheduleTime": "2026-01-01T00:00:00Z"}),
    );
    let p = run(&cj, &[], "2026-01-01T10:00:30Z");
    assert_eq!(reasons(&p), ["TooManyMissedTimes"]);
    assert_eq!(
        p.notes[0].message,
        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
    );
    assert_eq!(p.create.map(|(_, t)| t), Some(at("2026-01-01T10:00:00Z")));
}

#[test]
fn a_suspended_cronjob_starts_nothing_and_does_not_requeue() {
    let p = run(&cronjob(serde_json::json!({"suspend": true}), serde_json::json!({})), &[], "2026-01-01T10:05:10Z");
    assert!(p.create.is_none() && p.requeue.is_none());
}

#[test]
fn wrong_zones_and_schedules_warn_and_wait_for_a_fix() {
    let cj = cronjob(serde_json::json!({"timeZone": "Mars/Olympus"}), serde_json::json!({}));
    let p = plan(
        &cj,
        "*/5 * * * *",
        &Observed {
            jobs: &[],
            missing: &HashSet::new(),
            tz: Err("no such zone".into()),
            now: at("2026-01-01T10:05:10Z"),
        },
    );
    assert!(p.create.is_none() && p.requeue.is_none());
    assert_eq!(p.notes[0].reason, "UnknownTimeZone");
    assert_eq!(p.notes[0].message, "invalid timeZone: \"Mars/Olympus\": no such zone");
    let bad = run(
        &cronjob(serde_json::json!({"schedule": "61 * * * *"}), serde_json::json!({})),
        &[],
        "2026-01-01T10:05:10Z",
    );
    assert_eq!(reasons(&bad), ["UnparseableSchedule"]);
    assert_eq!(bad.notes[0].message, "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59)");
    let never = run(
        &cronjob(serde_json::json!({"schedule": "0 0 30 2 *"}), serde_json::json!({})),
        &[],
        "2026-01-01T10:05:10Z",
    );
    assert_eq!(reasons(&never), ["InvalidSchedule"]);
}

#[test]
fn the_scheduled_annotation_is_written_in_the_cronjobs_zone() {
    let berlin = TimeZone::get("Europe/Berlin").expect("zone");
    let cj = cronjob(serde_json::json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}), serde_json::json!({}));
    let p = plan(
        &cj,
        "0 9 * * *",
        &Observed { jobs: &[], missing: &HashSet::new(), tz: Ok(&berlin), now: at("2026-01-02T08:00:05Z") },
    );
    let (job, scheduled) = p.create.expect("a job");
    assert_eq!(scheduled, at("2026-01-02T08:00:00Z"));
    assert_eq!(job.metadata.annotations.expect("annotations")[SCHEDULED_TIMESTAMP], "2026-01-02T09:00:00+01:00");
}

#[test]
fn a_job_made_before_a_crash_is_listed_instead_of_made_again() {
    let name = job_name("cj", at("2026-01-01T10:05:00Z"));
    let p =
        run(&cronjob(serde_json::json!({}), serde_json::json!({})), &[job(&name, None, None)], "2026-01-01T10:05:10Z");
    assert!(p.create.is_none());
    assert_eq!(active_names(&p), [name]);
    assert_eq!(p.status.last_schedule_time, Some(Time(at("2026-01-01T10:05:00Z"))));
}
