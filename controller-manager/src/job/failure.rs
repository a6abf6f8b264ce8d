//! How a Job judges its failed pods: which pods count as failed, what `podFailurePolicy` says
//! about one (the first matching rule wins: FailJob, FailIndex, Count or Ignore), and how long
//! to wait before replacing failed pods (10 s doubling per failure in a row, at most 6 min).
//!
//! The backoff is computed from the pods themselves (failures since the last success, and when
//! the last of them finished) rather than from a record kept in memory, so a restarted
//! controller waits exactly as long as the one before it would have.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::pods::phase;

/// The first wait after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest wait between failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Count,
    Ignore,
}

/// What the policy made of one failed pod: the action of the rule that matched and, for
/// FailJob, the message the Job's condition carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub message: Option<String>,
}

/// Whether `pod` counts as failed. A pod being deleted before it succeeded counts as failed
/// (an orphan may never reach a phase), unless the Job replaces only pods that reached Failed
/// (`podReplacementPolicy: Failed`, implied by a pod failure policy).
pub fn is_failed(pod: &Pod, only_replace_failed: bool) -> bool {
    match phase(pod) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_replace_failed && pod.metadata.deletion_timestamp.is_some(),
    }
}

fn exit_code_matches(code: i32, req: &PodFailurePolicyOnExitCodesRequirement) -> bool {
    match req.operator.as_str() {
        "In" => req.values.contains(&code),
        "NotIn" => !req.values.contains(&code),
        _ => false,
    }
}

/// The first container (then init container) that terminated with a non-zero code the
/// requirement matches.
fn matching_container<'a>(pod: &'a Pod, req: &PodFailurePolicyOnExitCodesRequirement) -> Option<(&'a str, i32)> {
    let status = pod.status.as_ref()?;
    let lists = [status.container_statuses.as_deref(), status.init_container_statuses.as_deref()];
    lists.into_iter().flatten().flatten().find_map(|c: &ContainerStatus| {
        let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
        let named = req.container_name.as_deref().is_none_or(|n| n == c.name);
        (named && code != 0 && exit_code_matches(code, req)).then_some((c.name.as_str(), code))
    })
}

/// A pattern's status; the API defaults an empty one to "True".
fn pattern_status(s: &str) -> &str {
    if s.is_empty() { "True" } else { s }
}

/// The verdict of the first rule matching the failed `pod`, or `None` when no rule does (the
/// failure then counts toward backoffLimit).
pub fn match_pod_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> Option<Verdict> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    for (i, rule) in policy.rules.iter().enumerate() {
        let action = match rule.action.as_str() {
            "FailJob" => Action::FailJob,
            "FailIndex" => Action::FailIndex,
            "Count" => Action::Count,
            "Ignore" => Action::Ignore,
            _ => continue,
        };
        let what = if let Some(req) = rule.on_exit_codes.as_ref() {
            matching_container(pod, req)
                .map(|(c, code)| format!("Container {c} for pod {ns}/{name} failed with exit code {code}"))
        } else if let Some(patterns) = rule.on_pod_conditions.as_ref() {
            let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
            conditions
                .iter()
                .find(|c| patterns.iter().any(|p| p.type_ == c.type_ && pattern_status(&p.status) == c.status))
                .map(|c| format!("Pod {ns}/{name} has condition {}", c.type_))
        } else {
            None
        };
        if let Some(what) = what {
            let message = (action == Action::FailJob).then(|| format!("{what} matching FailJob rule at index {i}"));
            return Some(Verdict { action, message });
        }
    }
    None
}

/// When the pod finished: its last container's finish, else when it stopped being ready, else
/// when its deletion began, else its creation (a fixed point, so the backoff still ends).
pub fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let finished = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    finished
        .or_else(|| {
            let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
            conditions
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0)
        })
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The wait before replacing a pod after `failures` failures in a row.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.checked_pow(failures - 1).unwrap_or(u32::MAX);
    BACKOFF_BASE.checked_mul(factor).map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

/// How long new pods must still wait, given the finished pods: failures after the last
/// success set the delay, counted from the last failure. `failed` are the pods that count
/// as failed (ignored ones excluded by the caller).
pub fn remaining_backoff<'a>(
    succeeded: impl IntoIterator<Item = &'a Pod>,
    failed: impl IntoIterator<Item = &'a Pod>,
    now: Timestamp,
) -> Duration {
    let last_success = succeeded.into_iter().filter_map(finish_time).max();
    let failures: Vec<Timestamp> =
        failed.into_iter().filter_map(finish_time).filter(|t| last_success.is_none_or(|s| *t > s)).collect();
    let Some(last) = failures.iter().max() else { return Duration::ZERO };
    let until = *last + backoff_delay(failures.len() as u32);
    if until > now { Duration::try_from(until - now).unwrap_or_default() } else { Duration::ZERO }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": status
        }))
        .expect("pod")
    }

    fn exited(name: &str, code: i32) -> serde_json::Value {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": code, "finishedAt": "2026-01-01T00:01:00Z"}}})
    }

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(serde_json::json!({"rules": rules})).expect("policy")
    }

    #[test]
    fn the_first_matching_rule_decides_and_fail_job_says_why() {
        let p = policy(serde_json::json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
        ]));
        let failed_42 = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [exited("main", 42)]}));
        assert_eq!(
            match_pod_failure_policy(&p, &failed_42),
            Some(Verdict {
                action: Action::FailJob,
                message: Some(
                    "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into()
                )
            })
        );
        let side_42 = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [exited("side", 42)]}));
        assert_eq!(
            match_pod_failure_policy(&p, &side_42).map(|v| v.action),
            Some(Action::Count),
            "another container's 42 misses the named rule and falls to NotIn [1, 2]"
        );
        let exit_1 = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [exited("main", 1)]}));
        assert_eq!(match_pod_failure_policy(&p, &exit_1), None, "no rule: counted by default");
        let evicted = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [exited("main", 42)],
            "conditions": [{"type": "DisruptionTarget", "status": "True"}]}));
        assert_eq!(match_pod_failure_policy(&p, &evicted).map(|v| v.action), Some(Action::Ignore));
        let zero = pod(serde_json::json!({"phase": "Failed", "containerStatuses": [exited("main", 0)]}));
        let not_in =
            policy(serde_json::json!([{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1]}}]));
        assert_eq!(match_pod_failure_policy(&not_in, &zero), None, "exit code 0 never matches");
    }

    #[test]
    fn init_containers_and_pod_conditions_match_too() {
        let p = policy(serde_json::json!([
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}},
            {"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue", "status": "True"}]},
        ]));
        let init = pod(serde_json::json!({"phase": "Failed", "initContainerStatuses": [exited("setup", 3)]}));
        assert!(match_pod_failure_policy(&p, &init).and_then(|v| v.message).is_some_and(|m| m.contains("setup")));
        let unset =
            policy(serde_json::json!([{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]));
        let evicted =
            pod(serde_json::json!({"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True"}]}));
        assert_eq!(
            match_pod_failure_policy(&unset, &evicted).map(|v| v.action),
            Some(Action::Ignore),
            "status defaults"
        );
        let cond =
            pod(serde_json::json!({"phase": "Failed", "conditions": [{"type": "ConfigIssue", "status": "True"}]}));
        assert_eq!(
            match_pod_failure_policy(&p, &cond).and_then(|v| v.message).as_deref(),
            Some("Pod ns/p has condition ConfigIssue matching FailJob rule at index 1")
        );
    }

    #[test]
    fn deleted_unfinished_pods_count_as_failed_unless_only_failed_pods_are_replaced() {
        let mut deleting = pod(serde_json::json!({"phase": "Running"}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-01-01T00:02:00Z".parse().expect("time")));
        assert!(is_failed(&deleting, false));
        assert!(!is_failed(&deleting, true));
        assert!(is_failed(&pod(serde_json::json!({"phase": "Failed"})), true));
        assert!(!is_failed(&pod(serde_json::json!({"phase": "Succeeded"})), false));
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        let table = [(0, 0), (1, 10), (2, 20), (3, 40), (6, 320), (7, 360), (40, 360)];
        for (failures, secs) in table {
            assert_eq!(backoff_delay(failures), Duration::from_secs(secs), "{failures} failures");
        }
    }

    #[test]
    fn backoff_counts_failures_since_the_last_success_from_the_last_failure() {
        let at = |t: &str| {
            pod(serde_json::json!({"phase": "Failed", "containerStatuses": [{"name": "c", "ready": false,
            "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 1, "finishedAt": t}}}]}))
        };
        let ok = |t: &str| {
            pod(serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": false,
            "restartCount": 0, "image": "i", "imageID": "", "state": {"terminated": {"exitCode": 0, "finishedAt": t}}}]}))
        };
        let now: Timestamp = "2026-01-01T00:00:25Z".parse().expect("time");
        let (f1, f2) = (at("2026-01-01T00:00:10Z"), at("2026-01-01T00:00:20Z"));
        assert_eq!(remaining_backoff([], [&f1, &f2], now), Duration::from_secs(15), "two failures: 20 s after 00:20");
        let s = ok("2026-01-01T00:00:15Z");
        assert_eq!(remaining_backoff([&s], [&f1, &f2], now), Duration::from_secs(5), "one failure since success");
        assert_eq!(remaining_backoff([], [], now), Duration::ZERO);
        let late: Timestamp = "2026-01-01T01:00:00Z".parse().expect("time");
        assert_eq!(remaining_backoff([], [&f1, &f2], late), Duration::ZERO);
    }
}
