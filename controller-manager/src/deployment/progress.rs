//! A Deployment's status from its ReplicaSets, and its conditions as `kubectl rollout status`
//! reads them: Available (minimum availability) and Progressing (a new set created, progress
//! made, complete, paused, or no progress within progressDeadlineSeconds).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const COMPLETE: &str = "NewReplicaSetAvailable";
pub const UPDATED: &str = "ReplicaSetUpdated";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const CREATED: &str = "NewReplicaSetCreated";
pub const FOUND: &str = "FoundNewReplicaSet";

pub fn condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    }
}

pub fn get<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Sets a condition; one with the same status and reason is left as it is.
pub fn set(s: &mut DeploymentStatus, c: DeploymentCondition) {
    let conditions = s.conditions.get_or_insert_default();
    if let Some(cur) = conditions.iter_mut().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        let keep_transition = cur.status == c.status;
        let transition = cur.last_transition_time.clone();
        *cur = c;
        if keep_transition {
            cur.last_transition_time = transition;
        }
        return;
    }
    conditions.push(c);
}

fn deadline(d: &Deployment) -> Option<Duration> {
    match d.spec.as_ref().and_then(|s| s.progress_deadline_seconds) {
        Some(i32::MAX) => None,
        Some(s) => Some(Duration::from_secs(s.max(0) as u64)),
        None => Some(Duration::from_secs(600)),
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Pure: the counts and the Available condition.
pub fn calculate_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: Timestamp,
) -> DeploymentStatus {
    let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let spec_total: i32 = all.iter().map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)).sum();
    let available: i32 = all.iter().map(|rs| st(rs).available_replicas.unwrap_or(0)).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| st(rs).replicas).sum()),
        updated_replicas: Some(new.map_or(0, |rs| st(rs).replicas)),
        ready_replicas: Some(all.iter().map(|rs| st(rs).ready_replicas.unwrap_or(0)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        conditions: d.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    // Upstream leaves zero counts out of the object.
    for f in [
        &mut s.replicas,
        &mut s.updated_replicas,
        &mut s.ready_replicas,
        &mut s.available_replicas,
        &mut s.unavailable_replicas,
    ] {
        if *f == Some(0) {
            *f = None;
        }
    }
    let c = if available >= replicas(d) - max_unavailable {
        condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), now)
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set(&mut s, c);
    s
}

/// Every replica is the new template's and available, and the spec is observed.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation >= d.metadata.generation
}

/// More new, ready or available replicas than before, or fewer old ones.
fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    n(s.updated_replicas) > n(old.updated_replicas)
        || n(s.replicas) - n(s.updated_replicas) < n(old.replicas) - n(old.updated_replicas)
        || n(s.ready_replicas) > n(old.ready_replicas)
        || n(s.available_replicas) > n(old.available_replicas)
}

/// Pure: the Progressing condition after a rollout step, and when to look again for the
/// deadline.
pub fn rollout_progress(
    d: &Deployment,
    s: &mut DeploymentStatus,
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = deadline(d)?;
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return None;
    }
    let current = get(s, "Progressing").cloned();
    let name = new.and_then(|rs| rs.metadata.name.clone());
    if let Some(n) = &name
        && complete(d, s)
    {
        set(
            s,
            condition("Progressing", "True", COMPLETE, format!("ReplicaSet {n:?} has successfully progressed."), now),
        );
        return None;
    }
    if progressing(d, s) {
        let message = match &name {
            Some(n) => format!("ReplicaSet {n:?} is progressing."),
            None => format!("Deployment {:?} is progressing.", d.metadata.name.as_deref().unwrap_or_default()),
        };
        let mut c = condition("Progressing", "True", UPDATED, message, now);
        if let Some(cur) = &current
            && cur.status == "True"
        {
            c.last_transition_time = cur.last_transition_time.clone();
        }
        // Progress refreshes the condition (its lastUpdateTime starts the deadline again).
        if let Some(cs) = s.conditions.as_mut() {
            cs.retain(|x| x.type_ != "Progressing");
        }
        set(s, c);
        return Some(deadline);
    }
    let cur = current?;
    match cur.reason.as_deref() {
        Some(COMPLETE) | Some(TIMED_OUT) => None,
        _ => {
            let since = cur.last_update_time.as_ref().map(|t| t.0).unwrap_or(now);
            let due = since + deadline;
            if due <= now {
                if let Some(n) = &name {
                    set(
                        s,
                        condition(
                            "Progressing",
                            "False",
                            TIMED_OUT,
                            format!("ReplicaSet {n:?} has timed out progressing."),
                            now,
                        ),
                    );
                }
                None
            } else {
                Some(Duration::try_from(due - now).unwrap_or_default() + Duration::from_millis(100))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(replicas: i32, generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}, "progressDeadlineSeconds": 60},
            "status": status}))
        .expect("deployment")
    }

    fn rs(name: &str, spec: i32, status: serde_json::Value) -> ReplicaSet {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "spec": {"replicas": spec, "selector": {}},
            "status": status}),
        )
        .expect("rs")
    }

    fn now(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn counts_sum_over_the_sets_and_availability_allows_max_unavailable() {
        let dep = d(4, 2, serde_json::json!({}));
        let new = rs("new", 2, serde_json::json!({"replicas": 2, "readyReplicas": 1, "availableReplicas": 1}));
        let old = rs("old", 3, serde_json::json!({"replicas": 3, "readyReplicas": 3, "availableReplicas": 3}));
        let s = calculate_status(&dep, &[&new, &old], Some(&new), 1, now("2026-01-01T00:00:00Z"));
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas),
            (Some(5), Some(2), Some(4), Some(4), Some(1))
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(get(&s, "Available").map(|c| c.status.as_str()), Some("True"), "4 >= 4 - 1");
        let s = calculate_status(&dep, &[&new], Some(&new), 1, now("2026-01-01T00:00:00Z"));
        assert_eq!(get(&s, "Available").and_then(|c| c.reason.as_deref()), Some("MinimumReplicasUnavailable"));
    }

    #[test]
    fn progress_completes_or_times_out() {
        let t0 = now("2026-01-01T00:00:00Z");
        let dep = d(2, 1, serde_json::json!({"updatedReplicas": 1}));
        let new = rs("web-abc", 2, serde_json::json!({}));
        // More updated replicas than before: progressing, deadline armed.
        let mut s = DeploymentStatus { updated_replicas: Some(2), replicas: Some(3), ..Default::default() };
        assert_eq!(rollout_progress(&dep, &mut s, Some(&new), t0), Some(Duration::from_secs(60)));
        let c = get(&s, "Progressing").expect("progressing").clone();
        assert_eq!(
            (c.reason.as_deref(), c.message.as_deref()),
            (Some(UPDATED), Some("ReplicaSet \"web-abc\" is progressing."))
        );
        // No progress for longer than the deadline: timed out.
        let stuck = d(2, 1, serde_json::to_value(&s).expect("json"));
        let mut s2 = s.clone();
        assert!(rollout_progress(&stuck, &mut s2, Some(&new), now("2026-01-01T00:00:30Z")).is_some(), "not yet");
        rollout_progress(&stuck, &mut s2, Some(&new), now("2026-01-01T00:01:01Z"));
        assert_eq!(
            get(&s2, "Progressing").map(|c| (c.status.as_str(), c.reason.as_deref())),
            Some(("False", Some(TIMED_OUT)))
        );
        // All updated and available: complete.
        let mut done = DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..Default::default()
        };
        rollout_progress(&dep, &mut done, Some(&new), t0);
        assert_eq!(get(&done, "Progressing").and_then(|c| c.reason.as_deref()), Some(COMPLETE));
    }
}
