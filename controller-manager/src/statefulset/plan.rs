//! The pure half of a StatefulSet sync: given the set's policy and the pods it owns, which pod to
//! create, delete or replace next (upstream's `updateStatefulSet` ladder), and the status to
//! report. Nothing here does IO; `super::StatefulSetController::sync` executes the steps.
//!
//! The ladder, as upstream's:
//!
//! 1. replicas (ordinals `start..start+replicas`), lowest first: a failed or succeeded pod is
//!    deleted (to be re-created under the same name); a missing pod is created; with
//!    OrderedReady the walk stops at the first pod it creates or deletes, at a terminating pod
//!    and at a pod not Running, Ready and available, so pod N+1 waits for 0..N; a pod that lost
//!    its identity labels (`pod-name`, `pod-index`) gets them back;
//! 2. condemned pods (ordinals outside the range), highest first: deleted one at a time with
//!    OrderedReady (waiting for each to go, and halting on an unhealthy pod that is not the
//!    first unhealthy one), all at once with Parallel;
//! 3. RollingUpdate, from the highest ordinal down to the partition: the first pod not at the
//!    update revision is deleted (it comes back at the update revision in a later sync), and
//!    the walk stops at any pod that is not healthy, so one pod is replaced at a time.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Pod;

use crate::pods::{self, is_available, is_ready, is_terminating};

/// The label naming a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What the ladder needs to know of a set's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub replicas: i32,
    /// `spec.ordinals.start`.
    pub start: i32,
    /// `podManagementPolicy: Parallel`.
    pub parallel: bool,
    /// `Some(partition)` for the RollingUpdate strategy, `None` for OnDelete.
    pub rolling: Option<i32>,
    /// The partition as the pod factory reads it (also under OnDelete, as upstream does).
    pub partition: i32,
    pub min_ready: Duration,
}

/// Which revision's template a new pod comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    Current,
    Update,
}

/// One write a sync makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create {
        ordinal: i32,
        revision: Revision,
    },
    /// A failed or succeeded pod, deleted to be re-created under its name.
    DeleteFailed(Arc<Pod>),
    /// A pod whose ordinal is out of range (scale down).
    DeleteCondemned(Arc<Pod>),
    /// A pod at an old revision, replaced by the rolling update.
    DeleteForUpdate(Arc<Pod>),
    /// A pod whose identity labels (`pod-name`, `pod-index`) were changed or lost: put back.
    FixIdentity(Arc<Pod>),
}

/// The ordinal in a pod's name `<set>-<ordinal>`, if the pod is a member of the set.
pub fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let suffix = name.strip_prefix(set)?.strip_prefix('-')?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) || (suffix.len() > 1 && suffix.starts_with('0'))
    {
        return None;
    }
    suffix.parse().ok()
}

/// Whether the pod still carries the identity labels of its ordinal.
pub fn identity_matches(pod: &Pod, ordinal: i32) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    label(POD_NAME_LABEL) == pod.metadata.name.as_deref() && label(POD_INDEX_LABEL) == Some(&ordinal.to_string())
}

pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map(String::as_str).unwrap_or("")
}

fn failed(p: &Pod) -> bool {
    matches!(pods::phase(p), "Failed" | "Succeeded")
}

/// Running, Ready for minReadySeconds and not terminating.
pub fn is_healthy(p: &Pod, min_ready: Duration, now: Timestamp) -> bool {
    pods::phase(p) == "Running" && !is_terminating(p) && is_available(p, min_ready, now)
}

/// Pure: the writes this sync makes, in order, for the set named `set`.
pub fn plan(set: &str, policy: &Policy, owned: &[Arc<Pod>], update_revision: &str, now: Timestamp) -> Vec<Step> {
    let monotonic = !policy.parallel;
    let replicas = policy.replicas.max(0);
    let end = policy.start + replicas;
    let mut slots: Vec<Option<&Arc<Pod>>> = vec![None; replicas as usize];
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for p in owned {
        let Some(ord) = ordinal_of(set, p) else { continue };
        if (policy.start..end).contains(&ord) {
            slots[(ord - policy.start) as usize] = Some(p);
        } else {
            condemned.push((ord, p));
        }
    }
    condemned.sort_by_key(|(ord, _)| *ord);
    let healthy = |p: &Pod| is_healthy(p, policy.min_ready, now);
    let mut steps = Vec::new();

    // 1. Replicas, lowest ordinal first.
    for (i, slot) in slots.iter().enumerate() {
        let ordinal = policy.start + i as i32;
        let revision = if (i as i32) < policy.partition { Revision::Current } else { Revision::Update };
        match slot {
            None => {
                steps.push(Step::Create { ordinal, revision });
                if monotonic {
                    return steps;
                }
            }
            Some(p) if failed(p) && !is_terminating(p) => {
                steps.push(Step::DeleteFailed(Arc::clone(p)));
                if monotonic {
                    return steps;
                }
            }
            Some(p) if monotonic && !healthy(p) => return steps,
            Some(p) if !is_terminating(p) && !identity_matches(p, ordinal) => {
                steps.push(Step::FixIdentity(Arc::clone(p)))
            }
            Some(_) => {}
        }
    }

    // 2. Condemned pods, highest ordinal first.
    let first_unhealthy = condemned.iter().find(|(_, p)| !healthy(p)).map(|(ord, _)| *ord);
    for &(ord, p) in condemned.iter().rev() {
        if is_terminating(p) {
            if monotonic {
                return steps;
            }
            continue;
        }
        if monotonic && !healthy(p) && Some(ord) != first_unhealthy {
            return steps;
        }
        steps.push(Step::DeleteCondemned(Arc::clone(p)));
        if monotonic {
            return steps;
        }
    }

    // 3. Rolling update, highest ordinal down to the partition, one pod at a time.
    if let Some(partition) = policy.rolling {
        let low = partition.max(0) as usize;
        for slot in slots.iter().skip(low).rev() {
            let Some(p) = slot else { return steps };
            if revision_of(p) != update_revision && !is_terminating(p) {
                steps.push(Step::DeleteForUpdate(Arc::clone(p)));
                return steps;
            }
            if !healthy(p) {
                return steps;
            }
        }
    }
    steps
}

/// Pure: the status a sync writes, given the pods it owns and the revisions, counted as
/// upstream does: replicas and readiness over every pod created (terminating ones too), revisions
/// over the pods not terminating. Under RollingUpdate the current revision becomes the update
/// revision once every pod is updated and ready; under OnDelete once every pod is updated
/// (upstream leaves it behind there, a known bug nothing relies on).
pub fn calculate_status(
    generation: Option<i64>,
    policy: &Policy,
    owned: &[Arc<Pod>],
    current_revision: &str,
    update_revision: &str,
    collision_count: i32,
    now: Timestamp,
) -> StatefulSetStatus {
    let count = |f: &dyn Fn(&Pod) -> bool| owned.iter().filter(|p| f(p)).count() as i32;
    let replicas = owned.len() as i32;
    let ready = count(&|p| pods::phase(p) == "Running" && is_ready(p));
    let available = count(&|p| pods::phase(p) == "Running" && is_available(p, policy.min_ready, now));
    let mut current = count(&|p| !is_terminating(p) && revision_of(p) == current_revision);
    let updated = count(&|p| !is_terminating(p) && revision_of(p) == update_revision);
    let done = updated == replicas && (policy.rolling.is_none() || ready == replicas);
    let current_revision = if done || current_revision.is_empty() {
        current = updated;
        update_revision
    } else {
        current_revision
    };
    StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision.to_string()),
        update_revision: Some(update_revision.to_string()),
        observed_generation: generation,
        collision_count: Some(collision_count),
        conditions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:01:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("time")
    }

    /// A pod `web-<ordinal>` at `revision`; `state` is "ready", "running" (not ready),
    /// "pending", "failed" or "terminating".
    fn pod(ordinal: i32, revision: &str, state: &str) -> Arc<Pod> {
        let mut v = serde_json::json!({
            "metadata": {"name": format!("web-{ordinal}"), "namespace": "ns", "uid": format!("uid-{ordinal}"),
                "labels": {"app": "web", REVISION_LABEL: revision,
                    POD_NAME_LABEL: format!("web-{ordinal}"), POD_INDEX_LABEL: ordinal.to_string()}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"}
        });
        match state {
            "ready" => {
                v["status"]["conditions"] = serde_json::json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
            }
            "running" => {}
            "pending" => v["status"]["phase"] = "Pending".into(),
            "failed" => v["status"]["phase"] = "Failed".into(),
            "terminating" => v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:30Z".into(),
            other => panic!("unknown state {other}"),
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn ordered(replicas: i32) -> Policy {
        Policy { replicas, start: 0, parallel: false, rolling: Some(0), partition: 0, min_ready: Duration::ZERO }
    }

    fn parallel(replicas: i32) -> Policy {
        Policy { parallel: true, ..ordered(replicas) }
    }

    /// The steps as short strings: "create 1 update", "delete-failed web-0"...
    fn show(steps: &[Step]) -> Vec<String> {
        let name = |p: &Arc<Pod>| p.metadata.name.clone().unwrap_or_default();
        steps
            .iter()
            .map(|s| match s {
                Step::Create { ordinal, revision } => format!("create {ordinal} {revision:?}").to_lowercase(),
                Step::DeleteFailed(p) => format!("delete-failed {}", name(p)),
                Step::DeleteCondemned(p) => format!("delete {}", name(p)),
                Step::DeleteForUpdate(p) => format!("update {}", name(p)),
                Step::FixIdentity(p) => format!("fix {}", name(p)),
            })
            .collect()
    }

    fn run(policy: &Policy, pods: &[Arc<Pod>]) -> Vec<String> {
        show(&plan("web", policy, pods, "r2", now()))
    }

    #[test]
    fn ordinals_come_from_member_names_only() {
        assert_eq!(ordinal_of("web", &pod(12, "r", "ready")), Some(12));
        let other: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "web-x"}})).expect("pod");
        assert_eq!(ordinal_of("web", &other), None);
        let other: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "webby-1"}})).expect("pod");
        assert_eq!(ordinal_of("web", &other), None);
        let other: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "web-01"}})).expect("pod");
        assert_eq!(ordinal_of("web", &other), None);
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time_after_its_predecessors_are_ready() {
        let p = ordered(3);
        assert_eq!(run(&p, &[]), ["create 0 update"]);
        assert_eq!(run(&p, &[pod(0, "r2", "pending")]), Vec::<String>::new(), "web-0 is not running yet");
        assert_eq!(run(&p, &[pod(0, "r2", "running")]), Vec::<String>::new(), "web-0 is not ready yet");
        assert_eq!(run(&p, &[pod(0, "r2", "ready")]), ["create 1 update"]);
        assert_eq!(run(&p, &[pod(0, "r2", "ready"), pod(1, "r2", "ready")]), ["create 2 update"]);
        assert_eq!(
            run(&p, &[pod(0, "r2", "ready"), pod(1, "r2", "ready"), pod(2, "r2", "ready")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ordered_ready_waits_for_min_ready_seconds() {
        let p = Policy { min_ready: Duration::from_secs(120), ..ordered(2) };
        assert_eq!(run(&p, &[pod(0, "r2", "ready")]), Vec::<String>::new(), "ready 60 s of 120");
        let p = Policy { min_ready: Duration::from_secs(30), ..ordered(2) };
        assert_eq!(run(&p, &[pod(0, "r2", "ready")]), ["create 1 update"]);
    }

    #[test]
    fn ordinals_start_where_the_spec_says() {
        let p = Policy { start: 5, ..parallel(2) };
        assert_eq!(run(&p, &[]), ["create 5 update", "create 6 update"]);
    }

    #[test]
    fn parallel_creates_and_deletes_everything_at_once() {
        assert_eq!(run(&parallel(3), &[pod(1, "r2", "pending")]), ["create 0 update", "create 2 update"]);
        let pods = [pod(0, "r2", "ready"), pod(1, "r2", "running"), pod(2, "r2", "pending"), pod(3, "r2", "ready")];
        assert_eq!(run(&parallel(1), &pods), ["delete web-3", "delete web-2", "delete web-1"]);
    }

    #[test]
    fn ordered_ready_scales_down_from_the_highest_one_at_a_time_while_all_are_healthy() {
        let pods = [pod(0, "r2", "ready"), pod(1, "r2", "ready"), pod(2, "r2", "ready")];
        assert_eq!(run(&ordered(1), &pods), ["delete web-2"]);
        let going = [pod(0, "r2", "ready"), pod(1, "r2", "ready"), pod(2, "r2", "terminating")];
        assert_eq!(run(&ordered(1), &going), Vec::<String>::new(), "web-2 must be gone first");
        let unhealthy = [pod(0, "r2", "running"), pod(1, "r2", "ready"), pod(2, "r2", "ready")];
        assert_eq!(run(&ordered(1), &unhealthy), Vec::<String>::new(), "web-0 is not ready: halt");
        let both = [pod(0, "r2", "ready"), pod(1, "r2", "running"), pod(2, "r2", "running")];
        assert_eq!(run(&ordered(1), &both), Vec::<String>::new(), "web-1 is the first unhealthy, not web-2");
        let top = [pod(0, "r2", "ready"), pod(1, "r2", "ready"), pod(2, "r2", "running")];
        assert_eq!(run(&ordered(1), &top), ["delete web-2"], "the first unhealthy pod may go");
    }

    #[test]
    fn a_failed_pod_is_deleted_to_be_recreated() {
        let pods = [pod(0, "r2", "ready"), pod(1, "r2", "failed"), pod(2, "r2", "ready")];
        assert_eq!(run(&ordered(3), &pods), ["delete-failed web-1"]);
        assert_eq!(run(&ordered(3), &[pod(0, "r2", "ready"), pod(2, "r2", "ready")]), ["create 1 update"]);
        let pods = [pod(0, "r2", "failed"), pod(1, "r2", "failed")];
        assert_eq!(run(&parallel(2), &pods), ["delete-failed web-0", "delete-failed web-1"]);
    }

    #[test]
    fn rolling_update_replaces_from_the_highest_ordinal_one_at_a_time() {
        let old = [pod(0, "r1", "ready"), pod(1, "r1", "ready"), pod(2, "r1", "ready")];
        assert_eq!(run(&ordered(3), &old), ["update web-2"]);
        let waiting = [pod(0, "r1", "ready"), pod(1, "r1", "ready"), pod(2, "r2", "running")];
        assert_eq!(run(&ordered(3), &waiting), Vec::<String>::new(), "the new web-2 must be ready first");
        let next = [pod(0, "r1", "ready"), pod(1, "r1", "ready"), pod(2, "r2", "ready")];
        assert_eq!(run(&ordered(3), &next), ["update web-1"]);
        let missing = [pod(0, "r1", "ready"), pod(1, "r1", "ready")];
        assert_eq!(run(&ordered(3), &missing), ["create 2 update"], "a replaced pod comes back updated");
    }

    #[test]
    fn rolling_update_leaves_ordinals_below_the_partition_at_the_current_revision() {
        let p = Policy { rolling: Some(2), partition: 2, ..ordered(3) };
        let pods = [pod(0, "r1", "ready"), pod(1, "r1", "ready"), pod(2, "r2", "ready")];
        assert_eq!(run(&p, &pods), Vec::<String>::new());
        let pods = [pod(0, "r1", "ready"), pod(2, "r2", "ready")];
        assert_eq!(run(&p, &pods), ["create 1 current"], "a deleted pod below the partition keeps its revision");
        let pods = [pod(0, "r1", "ready"), pod(1, "r1", "ready")];
        assert_eq!(run(&p, &pods), ["create 2 update"]);
    }

    #[test]
    fn lost_identity_labels_are_put_back() {
        let mut stripped = (*pod(1, "r2", "ready")).clone();
        stripped.metadata.labels.as_mut().expect("labels").remove(POD_NAME_LABEL);
        let pods = [pod(0, "r2", "ready"), Arc::new(stripped)];
        assert_eq!(run(&ordered(2), &pods), ["fix web-1"]);
        let mut wrong = (*pod(0, "r2", "ready")).clone();
        wrong.metadata.labels.as_mut().expect("labels").insert(POD_INDEX_LABEL.into(), "7".into());
        assert_eq!(run(&ordered(1), &[Arc::new(wrong)]), ["fix web-0"]);
    }

    #[test]
    fn on_delete_never_deletes_for_an_update() {
        let p = Policy { rolling: None, ..ordered(2) };
        let pods = [pod(0, "r1", "ready"), pod(1, "r1", "ready")];
        assert_eq!(run(&p, &pods), Vec::<String>::new());
        assert_eq!(run(&p, &[pod(0, "r1", "ready")]), ["create 1 update"], "a deleted pod comes back updated");
    }

    #[test]
    fn status_counts_replicas_by_readiness_and_revision() {
        let p = ordered(3);
        let pods = [pod(0, "r1", "ready"), pod(1, "r1", "running"), pod(2, "r2", "ready"), pod(3, "r1", "terminating")];
        let s = calculate_status(Some(4), &p, &pods, "r1", "r2", 0, now());
        assert_eq!(s.replicas, 4, "a terminating pod counts until it is gone");
        assert_eq!((s.ready_replicas, s.available_replicas), (Some(2), Some(2)));
        assert_eq!((s.current_replicas, s.updated_replicas), (Some(2), Some(1)));
        assert_eq!((s.current_revision.as_deref(), s.update_revision.as_deref()), (Some("r1"), Some("r2")));
        assert_eq!((s.observed_generation, s.collision_count), (Some(4), Some(0)));
    }

    #[test]
    fn the_current_revision_catches_up_when_every_replica_is_updated_and_ready() {
        let p = ordered(2);
        let pods = [pod(0, "r2", "running"), pod(1, "r2", "ready")];
        let s = calculate_status(None, &p, &pods, "r1", "r2", 0, now());
        assert_eq!(s.current_revision.as_deref(), Some("r1"), "web-0 is not ready");
        let pods = [pod(0, "r2", "ready"), pod(1, "r2", "ready")];
        let s = calculate_status(None, &p, &pods, "r1", "r2", 0, now());
        assert_eq!((s.current_revision.as_deref(), s.current_replicas), (Some("r2"), Some(2)));
        let s = calculate_status(None, &p, &[], "", "r2", 0, now());
        assert_eq!(s.current_revision.as_deref(), Some("r2"), "a new set starts at its update revision");
    }
}
