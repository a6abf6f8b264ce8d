//! The HorizontalPodAutoscaler controller (autoscaling/v2, CPU `Resource` metrics), as upstream's:
//!
//! - every HPA is synced again each sync period (`--horizontal-pod-autoscaler-sync-period`);
//! - a sync reads the target's `/scale`, selects its pods with the scale's `status.selector`,
//!   reads their CPU usage from `metrics.k8s.io` and recommends a replica count: the usage ratio
//!   (utilization against `averageUtilization`, or the per-pod average against `averageValue`)
//!   times the ready pods with metrics, unchanged within a 10 % tolerance. Pods without metrics
//!   count as at target when scaling down and as idle when scaling up; pods not yet ready are left
//!   out, and counted as idle when the recommendation is to scale up;
//! - the recommendation is stabilized (the highest one in the scale-down window,
//!   `--horizontal-pod-autoscaler-downscale-stabilization` (300 s) unless `spec.behavior.scaleDown`
//!   sets one; the lowest one in the scale-up window, none by default), limited in rate and clamped to
//!   [minReplicas, maxReplicas]: without `spec.behavior` to doubling (at least 4 pods) per sync,
//!   with it by its policies over the scale changes this controller made within their periods
//!   (unset parts default to 4 pods or 100 % per 15 s up, 100 % per 15 s down);
//! - a change is written to the target's `/scale` with a `SuccessfulRescale` event, and status
//!   (replicas, current metrics, lastScaleTime, the AbleToScale, ScalingActive and ScalingLimited
//!   conditions) is recomputed on every sync.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::pods::{is_ready, phase};
use crate::selector;
use crate::workqueue::WorkQueue;

/// Upstream's default tolerance: no scaling while the usage ratio is within 10 % of 1.
pub const TOLERANCE: f64 = 0.1;
/// Upstream's default scale-down stabilization window
/// (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

/// One pod's CPU, in millicores, as the replica calculation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodCpu {
    /// None: no metrics for the pod.
    pub usage: Option<i64>,
    /// The sum of its containers' requests; None when a container requests no CPU.
    pub request: Option<i64>,
    /// Running and Ready; other pods are "unready".
    pub ready: bool,
}

/// What the CPU metric targets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Millicores per pod.
    AverageValue(i64),
}

impl Target {
    /// The metric's name in reasons and conditions.
    pub fn description(self) -> &'static str {
        match self {
            Target::Utilization(_) => "cpu resource utilization (percentage of request)",
            Target::AverageValue(_) => "cpu resource",
        }
    }
}

/// A replica count computed from the metric, with the current value for status.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub replicas: i32,
    /// Percent of request (Utilization targets only).
    pub utilization: Option<i32>,
    /// Average millicores per counted pod.
    pub average: i64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    #[error("missing request for cpu in pod {0}")]
    MissingRequest(usize),
}

/// (usage ratio, utilization percent, average millicores).
pub type Ratio = (f64, Option<i32>, i64);

/// Pure: the usage ratio of `counted` (usage, request) pairs against `target`, with the current
/// utilization (percent) and average (millicores).
pub fn usage_ratio(counted: &[(i64, i64)], target: Target) -> Option<Ratio> {
    if counted.is_empty() {
        return None;
    }
    let usage: i64 = counted.iter().map(|(u, _)| u).sum();
    let average = usage / counted.len() as i64;
    match target {
        Target::Utilization(t) => {
            let requests: i64 = counted.iter().map(|(_, r)| r).sum();
            if requests <= 0 || t <= 0 {
                return None;
            }
            let utilization = (usage * 100 / requests) as i32;
            Some((f64::from(utilization) / f64::from(t), Some(utilization), average))
        }
        Target::AverageValue(t) if t > 0 => Some((average as f64 / t as f64, None, average)),
        Target::AverageValue(_) => None,
    }
}

/// Pure: the replica count the metric asks for, given `current` replicas and the target's pods.
pub fn replicas_for_cpu(current: i32, pods: &[PodCpu], target: Target) -> Result<Recommendation, MetricError> {
    let request = |i: usize, p: &PodCpu| match (target, p.request) {
        (Target::Utilization(_), None | Some(0)) => Err(MetricError::MissingRequest(i)),
        (_, r) => Ok(r.unwrap_or(0)),
    };
    let mut counted = Vec::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        match (p.ready, p.usage) {
            (true, Some(u)) => counted.push((u, request(i, p)?)),
            (true, None) => missing.push(request(i, p)?),
            (false, _) => unready.push(request(i, p)?),
        }
    }
    let (ratio, utilization, average) = usage_ratio(&counted, target).ok_or(MetricError::NoMetrics)?;
    let within = |r: f64| (r - 1.0).abs() <= TOLERANCE;
    let ready_count = counted.len() as f64;
    let recommendation = |replicas| Recommendation { replicas, utilization, average };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within(ratio) {
            return Ok(recommendation(current));
        }
        return Ok(recommendation((ratio * ready_count).ceil() as i32));
    }
    // Fill in the pods left out, against the direction of the scale, and look again.
    let at_target = |r: i64| match target {
        Target::Utilization(_) => r,
        Target::AverageValue(t) => t,
    };
    let mut all = counted.clone();
    for &r in &missing {
        all.push((if ratio < 1.0 { at_target(r) } else { 0 }, r));
    }
    if scale_up_with_unready {
        all.extend(unready.iter().map(|&r| (0, r)));
    }
    let Some((new_ratio, _, _)) = usage_ratio(&all, target) else { return Ok(recommendation(current)) };
    if within(new_ratio) || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return Ok(recommendation(current));
    }
    let replicas = (new_ratio * all.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(recommendation(current));
    }
    Ok(recommendation(replicas))
}

/// Pure: the recommendation after stabilization: never below the lowest recommendation within
/// `up_window` when scaling up, never below the highest within `down_window` when scaling down.
pub fn stabilize(
    history: &[(Timestamp, i32)],
    now: Timestamp,
    up_window: Duration,
    down_window: Duration,
    current: i32,
    recommendation: i32,
) -> i32 {
    let (mut up, mut down) = (recommendation, recommendation);
    for &(at, r) in history {
        let age = now.duration_since(at).unsigned_abs();
        if age < up_window {
            up = up.min(r);
        }
        if age < down_window {
            down = down.max(r);
        }
    }
    current.max(up).min(down)
}

/// A condition as (status, reason, message).
pub type Cond = (&'static str, &'static str, String);

/// Pure: `desired` limited to the scale-up rate and [min, max], with the ScalingLimited condition.
pub fn limit(current: i32, desired: i32, min: i32, max: i32) -> (i32, Cond) {
    let up_limit = (2 * current).max(4);
    let (ceiling, ceiling_cond) = if up_limit < max {
        (
            up_limit,
            ("True", "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate"),
        )
    } else {
        (max, ("True", "TooManyReplicas", "the desired replica count is more than the maximum replica count"))
    };
    if desired > ceiling {
        (ceiling, (ceiling_cond.0, ceiling_cond.1, ceiling_cond.2.to_string()))
    } else if desired < min {
        (min, ("True", "TooFewReplicas", "the desired replica count is less than the minimum replica count".into()))
    } else {
        (desired, ("False", "DesiredWithinRange", "the desired count is within the acceptable range".into()))
    }
}

/// One direction's scaling rules from `spec.behavior`, upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window: Duration,
    /// (type "Pods" or "Percent", value, period).
    pub policies: Vec<(String, i32, Duration)>,
    /// "Max" (the policy allowing the most change), "Min" or "Disabled".
    pub select: String,
}

/// Pure: the (scale-up, scale-down) rules of a behavior: scaling up by 4 pods or 100 % per 15 s
/// with no stabilization, scaling down by 100 % per 15 s after `down_window` of stabilization
/// (the controller's `--horizontal-pod-autoscaler-downscale-stabilization`), unless the spec says
/// otherwise.
pub fn rules(behavior: &HorizontalPodAutoscalerBehavior, down_window: Duration) -> (Rules, Rules) {
    let fill = |r: Option<&HPAScalingRules>, window: Duration, defaults: &[(&str, i32)]| {
        let policies = r.and_then(|r| r.policies.as_ref()).filter(|p| !p.is_empty()).map_or_else(
            || defaults.iter().map(|(t, v)| (t.to_string(), *v, Duration::from_secs(15))).collect(),
            |ps| {
                ps.iter()
                    .map(|p| (p.type_.clone(), p.value, Duration::from_secs(p.period_seconds.max(0) as u64)))
                    .collect()
            },
        );
        Rules {
            window: r
                .and_then(|r| r.stabilization_window_seconds)
                .map_or(window, |w| Duration::from_secs(w.max(0) as u64)),
            policies,
            select: r.and_then(|r| r.select_policy.clone()).unwrap_or_else(|| "Max".into()),
        }
    };
    (
        fill(behavior.scale_up.as_ref(), Duration::ZERO, &[("Pods", 4), ("Percent", 100)]),
        fill(behavior.scale_down.as_ref(), down_window, &[("Percent", 100)]),
    )
}

/// Pure: the replica count each policy allows from where its period started (the current count
/// less the changes made within the period, `events` being (time, signed change)); the most
/// permissive policy for "Max", the least for "Min", the current count for "Disabled".
pub fn rate_limit(current: i32, events: &[(Timestamp, i32)], rules: &Rules, up: bool, now: Timestamp) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let limits = rules.policies.iter().map(|(kind, value, period)| {
        let changed: i32 =
            events.iter().filter(|(at, _)| now.duration_since(*at).unsigned_abs() < *period).map(|(_, c)| c).sum();
        let start = f64::from(current - changed);
        let value = f64::from(*value);
        match (kind.as_str(), up) {
            ("Pods", true) => (start + value) as i32,
            ("Pods", false) => (start - value) as i32,
            (_, true) => (start * (1.0 + value / 100.0)).ceil() as i32,
            (_, false) => (start * (1.0 - value / 100.0)) as i32,
        }
    });
    // "Max" means the most change: the highest limit up, the lowest down.
    let most_change = (rules.select == "Max") == up;
    let limit = if most_change { limits.max() } else { limits.min() };
    limit.unwrap_or(current)
}

/// Pure: `desired` limited by the behavior's rates and [min, max], with the ScalingLimited
/// condition.
pub fn limit_with_behavior(
    current: i32,
    desired: i32,
    (min, max): (i32, i32),
    (up_limit, down_limit): (i32, i32),
) -> (i32, Cond) {
    if desired > current {
        let up_limit = up_limit.max(current);
        let (ceiling, reason, message) = if up_limit < max {
            (up_limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if desired > ceiling {
            return (ceiling, ("True", reason, message.into()));
        }
    } else if desired < current {
        let down_limit = down_limit.min(current);
        let (floor, reason, message) = if down_limit > min {
            (down_limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if desired < floor {
            return (floor, ("True", reason, message.into()));
        }
    }
    (desired, ("False", "DesiredWithinRange", "the desired count is within the acceptable range".into()))
}

/// Pure: the pods' CPU as the calculation sees it. Pods failed, succeeded or being deleted are
/// left out; `usage` maps pod names to millicores.
pub fn pod_cpu(pods: &[Arc<Pod>], usage: &HashMap<String, i64>) -> Vec<PodCpu> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && matches!(phase(p), "Running" | "Pending"))
        .map(|p| {
            let containers = p.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            let request = containers
                .iter()
                .map(|c| {
                    c.resources
                        .as_ref()
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get("cpu"))
                        .and_then(cpu_milli)
                })
                .sum::<Option<i64>>();
            PodCpu {
                usage: usage.get(p.metadata.name.as_deref().unwrap_or_default()).copied(),
                request,
                ready: phase(p) == "Running" && is_ready(p),
            }
        })
        .collect()
}

/// A CPU quantity in millicores ("250m", "1", "0.5", "12345n", "10u").
pub fn cpu_milli(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let (number, scale) = match s.char_indices().last()? {
        (i, 'n') => (&s[..i], 1e-6),
        (i, 'u') => (&s[..i], 1e-3),
        (i, 'm') => (&s[..i], 1.0),
        (i, 'k') => (&s[..i], 1e6),
        _ => (s, 1e3),
    };
    let v: f64 = number.parse().ok()?;
    Some((v * scale).ceil() as i64)
}

/// A label selector string as `/scale` reports it (`a=b,c!=d,e in (f,g),h notin (i),j,!k`).
pub fn parse_selector(s: &str) -> Option<LabelSelector> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    let req = |key: &str, op: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
        key: key.trim().to_string(),
        operator: op.to_string(),
        values,
    };
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once("!=") {
            expressions.push(req(k, "NotIn", Some(vec![v.trim().to_string()])));
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            labels.insert(k.trim().to_string(), v.trim().to_string());
        } else if let Some((k, rest)) = part.split_once(" notin ").or_else(|| part.split_once(" in ")) {
            let op = if part.contains(" notin ") { "NotIn" } else { "In" };
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            expressions.push(req(k, op, Some(values)));
        } else if let Some(k) = part.strip_prefix('!') {
            expressions.push(req(k, "DoesNotExist", None));
        } else if part.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
            expressions.push(req(part, "Exists", None));
        } else {
            return None;
        }
    }
    Some(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// The CPU target of the HPA's first CPU Resource metric (80 % utilization when none is given,
/// as upstream defaults).
pub fn cpu_target(metrics: Option<&[MetricSpec]>) -> Option<Target> {
    let Some(metrics) = metrics.filter(|m| !m.is_empty()) else { return Some(Target::Utilization(80)) };
    metrics
        .iter()
        .filter(|m| m.type_ == "Resource")
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| match (r.target.type_.as_str(), r.target.average_utilization, &r.target.average_value) {
            ("Utilization", Some(u), _) => Some(Target::Utilization(u)),
            ("AverageValue", _, Some(v)) => cpu_milli(v).map(Target::AverageValue),
            _ => None,
        })
}

/// Pure: `conditions` with `(type, cond)` set, keeping the transition time when the status stays.
pub fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    (status, reason, message): Cond,
    now: Timestamp,
) {
    let since = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != type_);
    conditions.push(HorizontalPodAutoscalerCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(since),
    });
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),
}

pub struct HorizontalController {
    client: kube::Client,
    hpas: Informer<HorizontalPodAutoscaler>,
    pods: Informer<Pod>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
    sync_period: Duration,
    /// The scale-down stabilization window of HPAs whose behavior sets none.
    downscale_stabilization: Duration,
    /// Per HPA key: what this controller remembers between syncs.
    history: Mutex<HashMap<String, History>>,
}

/// An HPA's recent recommendations (stabilization), its recent scale changes (rate limits) and
/// when its periodic resync is due.
#[derive(Default)]
struct History {
    recommendations: Vec<(Timestamp, i32)>,
    scale_events: Vec<(Timestamp, i32)>,
    resync_due: Option<Timestamp>,
}

/// The API resource a `scaleTargetRef` names (Deployment, ReplicaSet, StatefulSet,
/// ReplicationController: the plural is the lowercased kind plus "s").
fn target_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

impl HorizontalController {
    pub fn new(
        client: kube::Client,
        hpas: &Informer<HorizontalPodAutoscaler>,
        pods: &Informer<Pod>,
        events: Recorder,
        sync_period: Duration,
        downscale_stabilization: Duration,
    ) -> Arc<HorizontalController> {
        let c = Arc::new(HorizontalController {
            client,
            hpas: hpas.clone(),
            pods: pods.clone(),
            queue: Arc::new(WorkQueue::default()),
            events,
            sync_period,
            downscale_stabilization,
            history: Mutex::new(HashMap::new()),
        });
        let w: Weak<HorizontalController> = Arc::downgrade(&c);
        hpas.on_change(move |old, new| {
            if let (Some(c), Some(o)) = (w.upgrade(), new.or(old)) {
                let changed = match (old, new) {
                    (Some(o), Some(n)) => o.metadata.generation != n.metadata.generation,
                    _ => true,
                };
                // Status writes come back as updates; the periodic resync covers the rest.
                if changed {
                    c.queue.add(key_of(o.as_ref()));
                }
            }
        });
        c
    }

    /// CPU usage in millicores per pod name in `ns`, from metrics.k8s.io.
    async fn pod_usage(&self, ns: &str) -> Result<HashMap<String, i64>, kube::Error> {
        let request = http::Request::get(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"))
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        let list: serde_json::Value = self.client.request(request).await?;
        let mut usage = HashMap::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let Some(name) = item["metadata"]["name"].as_str() else { continue };
            let total = item["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["usage"]["cpu"].as_str())
                .map(|q| cpu_milli(&Quantity(q.to_string())))
                .sum::<Option<i64>>();
            if let Some(total) = total {
                usage.insert(name.to_string(), total);
            }
        }
        Ok(usage)
    }

    /// Syncs one HPA; always asks to be synced again after the sync period.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(hpa) = self.hpas.get(ns, name) else {
            if let Ok(mut h) = self.history.lock() {
                h.remove(key);
            }
            return Ok(None);
        };
        let Some(spec) = hpa.spec.as_ref() else { return Ok(None) };
        let now = Timestamp::now();
        let old = hpa.status.clone().unwrap_or_default();
        let mut status = HorizontalPodAutoscalerStatus {
            observed_generation: hpa.metadata.generation,
            last_scale_time: old.last_scale_time.clone(),
            current_metrics: old.current_metrics.clone(),
            conditions: None,
            current_replicas: old.current_replicas,
            desired_replicas: old.desired_replicas,
        };
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let resource = target_resource(target.api_version.as_deref().unwrap_or("apps/v1"), &target.kind);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        let scale = match api.get_scale(&target.name).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("the HPA controller was unable to get the target's current scale: {e}");
                self.events.warning(reference(hpa.as_ref()), "FailedGetScale", e.to_string());
                set_condition(&mut conditions, "AbleToScale", ("False", "FailedGetScale", msg), now);
                status.conditions = Some(conditions);
                self.write_status(&hpa, status).await?;
                // Recorded in an event and a condition; tried again next period, as upstream.
                tracing::warn!(hpa = %key, error = %e, "Could not get the target's scale");
                return Ok(self.resync(key, now));
            }
        };
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        status.current_replicas = Some(current);
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;

        // Decide: the desired count and why.
        let mut rescale_reason = String::new();
        let desired = if current == 0 && min != 0 {
            let msg = "scaling is disabled since the replica count of the target is zero".to_string();
            set_condition(&mut conditions, "ScalingActive", ("False", "ScalingDisabled", msg), now);
            0
        } else if current > max {
            rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
            max
        } else if current < min {
            rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
            min
        } else {
            match self.recommend(&hpa, &scale, current, &mut status, &mut conditions, now).await {
                None => current,
                Some((recommended, metric)) => {
                    let (stabilized, limited, cond) = self.normalize(key, &hpa, current, recommended, now);
                    set_condition(&mut conditions, "ScalingLimited", cond, now);
                    let able = if stabilized < recommended {
                        (
                            "True",
                            "ScaleUpStabilized",
                            "recent recommendations were lower than current one, applying the lowest recent recommendation".into(),
                        )
                    } else if stabilized > recommended {
                        (
                            "True",
                            "ScaleDownStabilized",
                            "recent recommendations were higher than current one, applying the highest recent recommendation".into(),
                        )
                    } else {
                        ("True", "ReadyForNewScale", "recommended size matches current size".into())
                    };
                    set_condition(&mut conditions, "AbleToScale", able, now);
                    rescale_reason = if limited > current {
                        format!("{metric} above target")
                    } else {
                        "All metrics below target".into()
                    };
                    limited
                }
            }
        };

        // Do: write the scale when it changes.
        if desired != current {
            let patch = serde_json::json!({"spec": {"replicas": desired}});
            match api.patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.events.normal(
                        reference(hpa.as_ref()),
                        "SuccessfulRescale",
                        format!("New size: {desired}; reason: {rescale_reason}"),
                    );
                    let msg = format!("the HPA controller was able to update the target scale to {desired}");
                    set_condition(&mut conditions, "AbleToScale", ("True", "SucceededRescale", msg), now);
                    status.last_scale_time = Some(Time(now));
                    if let Ok(mut h) = self.history.lock() {
                        h.entry(key.to_string()).or_default().scale_events.push((now, desired - current));
                    }
                }
                Err(e) => {
                    self.events.warning(
                        reference(hpa.as_ref()),
                        "FailedRescale",
                        format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
                    );
                    let msg = format!("the HPA controller was unable to update the target scale: {e}");
                    set_condition(&mut conditions, "AbleToScale", ("False", "FailedUpdateScale", msg), now);
                    status.conditions = Some(conditions);
                    status.desired_replicas = current;
                    self.write_status(&hpa, status).await?;
                    tracing::warn!(hpa = %key, error = %e, "Could not update the target's scale");
                    return Ok(self.resync(key, now));
                }
            }
        }
        status.desired_replicas = desired;
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        self.write_status(&hpa, status).await?;
        Ok(self.resync(key, now))
    }

    /// The periodic resync: one timer per HPA, so syncs triggered by spec changes do not start
    /// more of them.
    fn resync(&self, key: &str, now: Timestamp) -> Option<Duration> {
        let Ok(mut all) = self.history.lock() else { return Some(self.sync_period) };
        let h = all.entry(key.to_string()).or_default();
        if h.resync_due.is_some_and(|due| due > now) {
            return None;
        }
        h.resync_due = now.checked_add(self.sync_period).ok();
        Some(self.sync_period)
    }

    /// The metric's recommendation and the metric's description, or None (with ScalingActive
    /// False) when it cannot be computed.
    async fn recommend(
        &self,
        hpa: &HorizontalPodAutoscaler,
        scale: &k8s_openapi::api::autoscaling::v1::Scale,
        current: i32,
        status: &mut HorizontalPodAutoscalerStatus,
        conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
        now: Timestamp,
    ) -> Option<(i32, &'static str)> {
        let ns = hpa.metadata.namespace.as_deref().unwrap_or_default();
        let inactive = |conditions: &mut Vec<_>, reason: &'static str, msg: String| {
            set_condition(conditions, "ScalingActive", ("False", reason, msg), now);
            set_condition(
                conditions,
                "AbleToScale",
                ("True", "SucceededGetScale", "the HPA controller was able to get the target's current scale".into()),
                now,
            );
        };
        let Some(selector_text) = scale.status.as_ref().and_then(|s| s.selector.clone()).filter(|s| !s.is_empty())
        else {
            self.events.warning(reference(hpa), "SelectorRequired", "selector is required".into());
            inactive(conditions, "InvalidSelector", "the HPA target's scale is missing a selector".into());
            return None;
        };
        let Some(sel) = parse_selector(&selector_text) else {
            let msg =
                format!("couldn't convert selector into a corresponding internal selector object: {selector_text}");
            self.events.warning(reference(hpa), "InvalidSelector", msg.clone());
            inactive(conditions, "InvalidSelector", msg);
            return None;
        };
        let Some(target) = cpu_target(hpa.spec.as_ref().and_then(|s| s.metrics.as_deref())) else {
            let msg =
                "the HPA was unable to compute the replica count: only cpu Resource metrics are supported".to_string();
            inactive(conditions, "FailedGetResourceMetric", msg);
            return None;
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list(ns)
            .into_iter()
            .filter(|p| selector::matches(&sel, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
            .collect();
        let result = match self.pod_usage(ns).await {
            Ok(usage) => replicas_for_cpu(current, &pod_cpu(&pods, &usage), target).map_err(|e| e.to_string()),
            Err(e) => Err(format!("unable to get metrics for resource cpu: {e}")),
        };
        match result {
            Err(e) => {
                let msg = format!("the HPA was unable to compute the replica count: {e}");
                self.events.warning(reference(hpa), "FailedGetResourceMetric", e);
                inactive(conditions, "FailedGetResourceMetric", msg);
                None
            }
            Ok(r) => {
                let mut value = MetricValueStatus {
                    average_value: Some(Quantity(format!("{}m", r.average))),
                    ..Default::default()
                };
                value.average_utilization = r.utilization;
                status.current_metrics = Some(vec![MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus { name: "cpu".into(), current: value }),
                    ..Default::default()
                }]);
                let msg =
                    format!("the HPA was able to successfully calculate a replica count from {}", target.description());
                set_condition(conditions, "ScalingActive", ("True", "ValidMetricFound", msg), now);
                Some((r.replicas, target.description()))
            }
        }
    }

    /// Records `recommended` and returns it stabilized, then limited in rate and to
    /// [min, max] with the ScalingLimited condition: upstream's rules without `spec.behavior`,
    /// the behavior's otherwise.
    fn normalize(
        &self,
        key: &str,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        recommended: i32,
        now: Timestamp,
    ) -> (i32, i32, Cond) {
        let spec = hpa.spec.as_ref();
        let (min, max) = (spec.and_then(|s| s.min_replicas).unwrap_or(1), spec.map_or(0, |s| s.max_replicas));
        let behavior = spec.and_then(|s| s.behavior.as_ref()).map(|b| rules(b, self.downscale_stabilization));
        let (up_window, down_window) =
            behavior.as_ref().map_or((Duration::ZERO, self.downscale_stabilization), |(u, d)| (u.window, d.window));
        let Ok(mut all) = self.history.lock() else {
            let (n, cond) = limit(current, recommended, min, max);
            return (recommended, n, cond);
        };
        let h = all.entry(key.to_string()).or_default();
        let keep = up_window.max(down_window);
        h.recommendations.retain(|(at, _)| now.duration_since(*at).unsigned_abs() < keep);
        let stabilized = stabilize(&h.recommendations, now, up_window, down_window, current, recommended);
        h.recommendations.push((now, recommended));
        let Some((up, down)) = behavior else {
            let (n, cond) = limit(current, stabilized, min, max);
            return (stabilized, n, cond);
        };
        let longest = up.policies.iter().chain(&down.policies).map(|(_, _, p)| *p).max().unwrap_or_default();
        h.scale_events.retain(|(at, _)| now.duration_since(*at).unsigned_abs() < longest);
        let limits = (
            rate_limit(current, &h.scale_events, &up, true, now),
            rate_limit(current, &h.scale_events, &down, false, now),
        );
        let (n, cond) = limit_with_behavior(current, stabilized, (min, max), limits);
        (stabilized, n, cond)
    }

    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        status: HorizontalPodAutoscalerStatus,
    ) -> Result<(), SyncError> {
        if hpa.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let ns = hpa.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), ns);
        let patch = crate::status::status_patch(hpa.status.as_ref(), &status);
        let name = hpa.metadata.name.as_deref().unwrap_or_default();
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(SyncError::Status(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(usage: i64, request: i64) -> PodCpu {
        PodCpu { usage: Some(usage), request: Some(request), ready: true }
    }
    fn missing(request: i64) -> PodCpu {
        PodCpu { usage: None, request: Some(request), ready: true }
    }
    fn unready(request: i64) -> PodCpu {
        PodCpu { usage: None, request: Some(request), ready: false }
    }
    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn utilization_is_total_usage_over_total_requests() {
        type Case<'a> = (&'a [(i64, i64)], Target, Option<Ratio>);
        let cases: &[Case] = &[
            (&[(100, 200), (300, 200)], Target::Utilization(50), Some((2.0, Some(100), 200))),
            (&[(50, 100)], Target::Utilization(100), Some((0.5, Some(50), 50))),
            (&[(300, 0), (100, 0)], Target::AverageValue(100), Some((2.0, None, 200))),
            (&[], Target::Utilization(50), None),
            (&[(10, 0)], Target::Utilization(50), None),
        ];
        for (counted, target, want) in cases {
            assert_eq!(usage_ratio(counted, *target), *want, "{counted:?} {target:?}");
        }
    }

    #[test]
    fn replica_count_follows_the_ratio_outside_the_tolerance() {
        let u50 = Target::Utilization(50);
        type Case = (&'static str, i32, Vec<PodCpu>, Target, Result<i32, MetricError>);
        let cases: Vec<Case> = vec![
            ("double usage doubles", 2, vec![ready(100, 100), ready(100, 100)], u50, Ok(4)),
            ("within 10 % stays", 2, vec![ready(54, 100), ready(54, 100)], u50, Ok(2)),
            ("half usage halves", 4, vec![ready(25, 100); 4], u50, Ok(2)),
            ("idle goes to zero before clamping", 3, vec![ready(0, 100); 3], u50, Ok(0)),
            ("average value", 2, vec![ready(300, 0), ready(300, 0)], Target::AverageValue(100), Ok(6)),
            ("no metrics at all", 2, vec![missing(100), unready(100)], u50, Err(MetricError::NoMetrics)),
            ("no pods", 2, vec![], u50, Err(MetricError::NoMetrics)),
            (
                "a pod without request",
                1,
                vec![PodCpu { usage: Some(5), request: None, ready: true }],
                u50,
                Err(MetricError::MissingRequest(0)),
            ),
            // Scaling down: the missing pod counts at 100 % of its request: (0+100)/200 = 50 %.
            ("missing pods hold a scale down back", 2, vec![ready(0, 100), missing(100)], u50, Ok(2)),
            // Scaling up: the missing pod counts as idle: (200+0)/200 = 100 % -> ceil(2 * 2) = 4.
            ("missing pods count idle when scaling up", 2, vec![ready(200, 100), missing(100)], u50, Ok(4)),
            // Unready pods count as idle when scaling up: (300+0+0)/300 = 100 % of 50 -> 6.
            (
                "unready pods count idle when scaling up",
                3,
                vec![ready(300, 100), unready(100), unready(100)],
                u50,
                Ok(6),
            ),
            // Unready pods are left out when scaling down: 10 % of 50 -> ceil(0.2 * 1) = 1.
            (
                "unready pods are left out when scaling down",
                3,
                vec![ready(10, 100), unready(100), unready(100)],
                u50,
                Ok(1),
            ),
            // Filling in flips the direction: no change.
            ("a flipped direction keeps the count", 2, vec![ready(60, 100), unready(100), unready(100)], u50, Ok(2)),
        ];
        for (name, current, pods, target, want) in cases {
            assert_eq!(replicas_for_cpu(current, &pods, target).map(|r| r.replicas), want, "{name}");
        }
    }

    #[test]
    fn recommendations_report_the_current_utilization() {
        let r = replicas_for_cpu(2, &[ready(100, 200), ready(100, 200)], Target::Utilization(50)).expect("ok");
        assert_eq!(r, Recommendation { replicas: 2, utilization: Some(50), average: 100 });
    }

    #[test]
    fn scale_down_takes_the_highest_recommendation_in_the_window() {
        let now = at("2026-01-01T00:10:00Z");
        let history =
            [(at("2026-01-01T00:04:00Z"), 9), (at("2026-01-01T00:06:00Z"), 5), (at("2026-01-01T00:09:00Z"), 3)];
        let w300 = Duration::from_secs(300);
        let cases = [
            ("highest within 300 s", Duration::ZERO, w300, 6, 2, 5),
            ("never above current", Duration::ZERO, w300, 4, 2, 4),
            ("scale up is immediate", Duration::ZERO, w300, 4, 8, 8),
            ("no window", Duration::ZERO, Duration::ZERO, 6, 2, 2),
            ("a scale-up window takes the lowest", w300, w300, 2, 8, 3),
        ];
        for (name, up, down, current, rec, want) in cases {
            assert_eq!(stabilize(&history, now, up, down, current, rec), want, "{name}");
        }
    }

    #[test]
    fn the_desired_count_is_limited_by_rate_and_bounds() {
        let cases = [
            (2, 3, 1, 10, 3, "DesiredWithinRange"),
            (2, 9, 1, 10, 4, "ScaleUpLimit"),
            (10, 50, 1, 15, 15, "TooManyReplicas"),
            (1, 100, 1, 4, 4, "TooManyReplicas"),
            (3, 0, 2, 10, 2, "TooFewReplicas"),
        ];
        for (current, desired, min, max, want, reason) in cases {
            let (n, (_, r, _)) = limit(current, desired, min, max);
            assert_eq!((n, r), (want, reason), "{current} -> {desired} in [{min}, {max}]");
        }
    }

    #[test]
    fn cpu_quantities_are_read_in_millicores() {
        for (q, want) in [
            ("250m", Some(250)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("1500000n", Some(2)),
            ("10u", Some(1)),
            ("x", None),
        ] {
            assert_eq!(cpu_milli(&Quantity(q.into())), want, "{q}");
        }
    }

    #[test]
    fn scale_selectors_are_parsed_into_label_selectors() {
        let labels: BTreeMap<String, String> =
            [("app", "web"), ("tier", "front")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cases = [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app=db", false),
            ("app!=db", true),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("app,!missing", true),
            ("!app", false),
        ];
        for (s, want) in cases {
            let sel = parse_selector(s).expect("parses");
            assert_eq!(selector::matches(&sel, &labels), want, "{s}");
        }
        assert_eq!(parse_selector("tier in front"), None);
    }

    #[test]
    fn only_live_pods_count_and_only_running_ready_ones_are_ready() {
        let pod = |name: &str, phase: &str, ready: bool, request: Option<&str>| -> Arc<Pod> {
            let mut v = serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            });
            if let Some(r) = request {
                v["spec"]["containers"][0]["resources"] = serde_json::json!({"requests": {"cpu": r}});
            }
            Arc::new(serde_json::from_value(v).expect("pod"))
        };
        let pods = [
            pod("a", "Running", true, Some("100m")),
            pod("b", "Running", false, Some("100m")),
            pod("c", "Pending", false, None),
            pod("d", "Failed", false, Some("100m")),
        ];
        let usage: HashMap<String, i64> = [("a".to_string(), 40)].into();
        assert_eq!(
            pod_cpu(&pods, &usage),
            vec![
                PodCpu { usage: Some(40), request: Some(100), ready: true },
                PodCpu { usage: None, request: Some(100), ready: false },
                PodCpu { usage: None, request: None, ready: false },
            ]
        );
    }

    #[test]
    fn the_cpu_target_defaults_to_80_percent() {
        let metric: MetricSpec = serde_json::from_value(serde_json::json!({"type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "200m"}}}))
        .expect("metric");
        assert_eq!(cpu_target(None), Some(Target::Utilization(80)));
        assert_eq!(cpu_target(Some(&[metric])), Some(Target::AverageValue(200)));
        let memory: MetricSpec = serde_json::from_value(serde_json::json!({"type": "Resource",
            "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 50}}}))
        .expect("metric");
        assert_eq!(cpu_target(Some(&[memory])), None);
    }

    #[test]
    fn behavior_defaults_are_upstreams() {
        let (up, down) = rules(&HorizontalPodAutoscalerBehavior::default(), DOWNSCALE_STABILIZATION);
        let s15 = Duration::from_secs(15);
        assert_eq!(
            up,
            Rules {
                window: Duration::ZERO,
                policies: vec![("Pods".into(), 4, s15), ("Percent".into(), 100, s15)],
                select: "Max".into()
            }
        );
        assert_eq!(
            down,
            Rules {
                window: Duration::from_secs(300),
                policies: vec![("Percent".into(), 100, s15)],
                select: "Max".into()
            }
        );
    }

    #[tokio::test]
    async fn the_downscale_stabilization_window_is_the_controllers_unless_the_behavior_sets_one() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().expect("url"))).expect("client");
        let (hpas, pods) = hpa_and_pods();
        let window = Duration::from_secs(3);
        let c = HorizontalController::new(client, &hpas, &pods, Recorder::discard(), Duration::from_secs(1), window);
        let t0 = at("2026-01-01T00:00:00Z");
        let with_behavior = |down: serde_json::Value| -> HorizontalPodAutoscaler {
            let mut h = hpas.get("ns", "web").expect("hpa").as_ref().clone();
            h.spec.as_mut().expect("spec").behavior =
                Some(serde_json::from_value(serde_json::json!({"scaleDown": down})).expect("behavior"));
            h
        };
        let plain = hpas.get("ns", "web").expect("hpa").as_ref().clone();
        let unset = with_behavior(serde_json::json!({"selectPolicy": "Max"}));
        let explicit = with_behavior(serde_json::json!({"stabilizationWindowSeconds": 60}));
        // (hpa, recommendation of 1 after 3 at t0, seconds later, the count it gives)
        let cases = [
            ("no behavior, within the window", &plain, 2, 3),
            ("no behavior, past the window", &plain, 4, 1),
            ("behavior without a window, within it", &unset, 2, 3),
            ("behavior without a window, past it", &unset, 4, 1),
            ("behavior's own window", &explicit, 4, 3),
        ];
        for (i, (name, hpa, later, want)) in cases.into_iter().enumerate() {
            let key = format!("ns/case-{i}");
            c.normalize(&key, hpa, 3, 3, t0);
            let now = t0.checked_add(Duration::from_secs(later)).expect("time");
            let (stabilized, limited, _) = c.normalize(&key, hpa, 3, 1, now);
            assert_eq!((stabilized, limited), (want, want), "{name}");
        }
    }

    #[test]
    fn scaling_policies_limit_the_change_per_period() {
        let now = at("2026-01-01T00:01:00Z");
        let s60 = Duration::from_secs(60);
        let rules = |select: &str, policies: &[(&str, i32)]| Rules {
            window: Duration::ZERO,
            policies: policies.iter().map(|(t, v)| (t.to_string(), *v, s60)).collect(),
            select: select.into(),
        };
        let recent = [(at("2026-01-01T00:00:30Z"), 2)];
        let old = [(at("2026-01-01T00:00:00Z"), 2)];
        type Case<'a> = (&'a str, i32, &'a [(Timestamp, i32)], Rules, bool, i32);
        let cases: Vec<Case> = vec![
            ("up: the larger of 4 pods and 100 %", 10, &[], rules("Max", &[("Pods", 4), ("Percent", 100)]), true, 20),
            ("up: min select takes the smaller", 10, &[], rules("Min", &[("Pods", 4), ("Percent", 100)]), true, 14),
            ("up: changes within the period count", 4, &recent, rules("Max", &[("Pods", 3)]), true, 5),
            ("up: older changes do not", 4, &old, rules("Max", &[("Pods", 3)]), true, 7),
            ("up: percent rounds up", 3, &[], rules("Max", &[("Percent", 50)]), true, 5),
            ("down: 100 % allows zero", 10, &[], rules("Max", &[("Percent", 100)]), false, 0),
            ("down: max select takes the lowest", 10, &[], rules("Max", &[("Pods", 1), ("Percent", 50)]), false, 5),
            ("down: min select takes the highest", 10, &[], rules("Min", &[("Pods", 1), ("Percent", 50)]), false, 9),
            ("disabled", 10, &[], rules("Disabled", &[("Pods", 1)]), false, 10),
        ];
        for (name, current, events, rules, up, want) in cases {
            assert_eq!(rate_limit(current, events, &rules, up, now), want, "{name}");
        }
    }

    #[test]
    fn behavior_limits_name_what_held_the_count_back() {
        let cases = [
            (2, 9, (1, 10), (4, 0), 4, "ScaleUpLimit"),
            (2, 20, (1, 10), (40, 0), 10, "TooManyReplicas"),
            (10, 2, (1, 20), (40, 5), 5, "ScaleDownLimit"),
            (10, 0, (3, 20), (40, 0), 3, "TooFewReplicas"),
            (10, 7, (1, 20), (40, 5), 7, "DesiredWithinRange"),
            (5, 5, (1, 20), (5, 5), 5, "DesiredWithinRange"),
        ];
        for (current, desired, bounds, limits, want, reason) in cases {
            let (n, (_, r, _)) = limit_with_behavior(current, desired, bounds, limits);
            assert_eq!((n, r), (want, reason), "{current} -> {desired}");
        }
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_stays() {
        let t0 = at("2026-01-01T00:00:00Z");
        let t1 = at("2026-01-01T00:01:00Z");
        let mut cs = Vec::new();
        set_condition(&mut cs, "ScalingActive", ("True", "ValidMetricFound", "m".into()), t0);
        set_condition(&mut cs, "ScalingActive", ("True", "ValidMetricFound", "m2".into()), t1);
        assert_eq!(
            (cs.len(), cs[0].last_transition_time.clone(), cs[0].message.as_deref()),
            (1, Some(Time(t0)), Some("m2"))
        );
        set_condition(&mut cs, "ScalingActive", ("False", "FailedGetResourceMetric", "x".into()), t1);
        assert_eq!(cs[0].last_transition_time, Some(Time(t1)));
    }

    /// A fake apiserver on 127.0.0.1:0 answering the HPA controller's requests; records
    /// (method, path, body) of each.
    async fn fake_apiserver(
        replicas: i32,
        cpu: &'static str,
    ) -> (kube::Client, Arc<Mutex<Vec<(String, String, String)>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body) = loop {
                        let n = conn.read(&mut chunk).await.expect("read");
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                                })
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            if body.len() >= len || n == 0 {
                                break (head.to_string(), body.to_string());
                            }
                        }
                    };
                    let mut words = head.split_whitespace();
                    let (method, path) =
                        (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
                    let path = path.split('?').next().unwrap_or("").to_string();
                    let scale = |n: i32| {
                        serde_json::json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": {"name": "web", "namespace": "ns"},
                        "spec": {"replicas": n}, "status": {"replicas": n, "selector": "app=web"}})
                    };
                    let reply = match (method.as_str(), path.as_str()) {
                        ("GET", "/apis/apps/v1/namespaces/ns/deployments/web/scale") => scale(replicas),
                        ("PATCH", "/apis/apps/v1/namespaces/ns/deployments/web/scale") => {
                            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                            scale(v["spec"]["replicas"].as_i64().unwrap_or(0) as i32)
                        }
                        ("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods") => serde_json::json!({"items": [
                            {"metadata": {"name": "a"}, "containers": [{"name": "c", "usage": {"cpu": cpu}}]},
                            {"metadata": {"name": "b"}, "containers": [{"name": "c", "usage": {"cpu": cpu}}]},
                        ]}),
                        _ => serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                            "metadata": {"name": "web", "namespace": "ns"}}),
                    };
                    log.lock().expect("log").push((method, path, body));
                    let reply = reply.to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                        reply.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        let url = format!("http://{addr}").parse().expect("url");
        let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
        (client, seen)
    }

    fn hpa_and_pods() -> (Informer<HorizontalPodAutoscaler>, Informer<Pod>) {
        let hpas = Informer::default();
        hpas.apply(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": "ns", "generation": 1},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 10,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]}
            }))
            .expect("hpa"),
        );
        let pods = Informer::default();
        for name in ["a", "b"] {
            pods.apply(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                }))
                .expect("pod"),
            );
        }
        (hpas, pods)
    }

    #[tokio::test]
    async fn a_busy_target_is_scaled_up_at_most_to_double_and_status_says_why() {
        // Two pods using 200m of 100m requested: 200 % against 50 % asks for 8, limited to 4.
        let (client, seen) = fake_apiserver(2, "200000000n").await;
        let (hpas, pods) = hpa_and_pods();
        let c = HorizontalController::new(
            client,
            &hpas,
            &pods,
            Recorder::discard(),
            Duration::from_secs(15),
            DOWNSCALE_STABILIZATION,
        );
        assert_eq!(c.sync("ns/web").await.expect("sync"), Some(Duration::from_secs(15)));
        let seen = seen.lock().expect("log").clone();
        let scale_patch = seen.iter().find(|(m, p, _)| m == "PATCH" && p.ends_with("/scale")).expect("scale written");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&scale_patch.2).expect("json")["spec"]["replicas"], 4);
        let (_, path, body) = seen.iter().find(|(m, p, _)| m == "PATCH" && p.ends_with("/status")).expect("status");
        assert_eq!(path, "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/web/status");
        let status: serde_json::Value = serde_json::from_str(body).expect("json");
        let status = &status["status"];
        assert_eq!((status["currentReplicas"].as_i64(), status["desiredReplicas"].as_i64()), (Some(2), Some(4)));
        assert_eq!(status["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 200);
        let reason = |t: &str| {
            status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == t).map(|c| c["reason"].clone())
        };
        assert_eq!(reason("AbleToScale"), Some("SucceededRescale".into()));
        assert_eq!(reason("ScalingActive"), Some("ValidMetricFound".into()));
        assert_eq!(reason("ScalingLimited"), Some("ScaleUpLimit".into()));
        assert!(status["lastScaleTime"].is_string());
    }

    #[tokio::test]
    async fn a_target_without_metrics_is_not_scaled() {
        let (client, seen) = fake_apiserver(2, "").await;
        let (hpas, pods) = hpa_and_pods();
        let c = HorizontalController::new(
            client,
            &hpas,
            &pods,
            Recorder::discard(),
            Duration::from_secs(15),
            DOWNSCALE_STABILIZATION,
        );
        c.sync("ns/web").await.expect("sync");
        let seen = seen.lock().expect("log").clone();
        assert!(!seen.iter().any(|(m, p, _)| m == "PATCH" && p.ends_with("/scale")));
        let (_, _, body) = seen.iter().find(|(m, p, _)| m == "PATCH" && p.ends_with("/status")).expect("status");
        let status: serde_json::Value = serde_json::from_str(body).expect("json");
        let active = status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ScalingActive")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (active["status"].as_str(), active["reason"].as_str()),
            (Some("False"), Some("FailedGetResourceMetric"))
        );
        assert_eq!(status["status"]["desiredReplicas"], 2);
    }
}
