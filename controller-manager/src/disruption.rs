//! The disruption controller: each PodDisruptionBudget's status, which the eviction API and the
//! scheduler's preemption read. Pods the budget selects that are ready (and not being deleted)
//! are healthy; how many must stay healthy comes from `minAvailable`, or from `maxUnavailable`
//! against the pods the owning controllers want (a ReplicaSet's, its Deployment's, a
//! StatefulSet's replicas). `disruptionsAllowed` is the healthy surplus, and the
//! DisruptionAllowed condition says whether there is one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::controller_of;
use crate::pods;
use crate::selector;
use crate::workqueue::WorkQueue;

/// Informers the controller reads (ReplicaSets, Deployments and StatefulSets for scales).
#[derive(Clone, Default)]
pub struct Informers {
    pub budgets: Informer<PodDisruptionBudget>,
    pub pods: Informer<Pod>,
    pub replica_sets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub stateful_sets: Informer<StatefulSet>,
}

fn percent(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::String(s) => s.strip_suffix('%')?.parse().ok(),
        IntOrString::Int(_) => None,
    }
}

/// Pure: (expectedPods, desiredHealthy) from the spec, the selected pods and the scale their
/// controllers want (`None` when a controller's scale is unknown).
pub fn expected_and_desired(pdb: &PodDisruptionBudget, pods: usize, scale: Option<i32>) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let need_scale = || scale.ok_or_else(|| "Failed to calculate the number of expected pods".to_string());
    if let Some(max) = &spec.max_unavailable {
        let expected = need_scale()?;
        let unavailable = match (max, percent(max)) {
            (IntOrString::Int(i), _) => *i as i64,
            (_, Some(p)) => (p * expected as i64 + 99) / 100,
            _ => return Err(format!("invalid maxUnavailable {max:?}")),
        };
        return Ok((expected, (expected as i64 - unavailable).max(0) as i32));
    }
    match &spec.min_available {
        Some(IntOrString::Int(i)) => Ok((pods as i32, *i)),
        Some(v) => {
            let p = percent(v).ok_or_else(|| format!("invalid minAvailable {v:?}"))?;
            let expected = need_scale()?;
            Ok((expected, ((p * expected as i64 + 99) / 100) as i32))
        }
        None => Ok((pods as i32, 0)),
    }
}

pub struct DisruptionController {
    client: kube::Client,
    informers: Informers,
    events: Recorder,
    pub queue: Arc<WorkQueue>,
}

impl DisruptionController {
    pub fn new(client: kube::Client, informers: &Informers, events: Recorder) -> Arc<DisruptionController> {
        let c = Arc::new(DisruptionController {
            client,
            informers: informers.clone(),
            events,
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<DisruptionController> = Arc::downgrade(&c);
        informers.budgets.on_change(move |old, new| {
            if let (Some(c), Some(b)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(b.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        informers.pods.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            let Some(ns) = new.or(old).and_then(|p| p.metadata.namespace.clone()) else { return };
            for b in c.informers.budgets.list(&ns) {
                if [old, new].into_iter().flatten().any(|p| selects(&b, p)) {
                    c.queue.add(key_of(b.as_ref()));
                }
            }
        });
        c
    }

    /// The replicas the pods' controllers want, counting each controller once.
    fn scale(&self, pods: &[Arc<Pod>]) -> Option<i32> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for p in pods {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            let r = controller_of(&p.metadata)?;
            if !seen.insert(r.uid.clone()) {
                continue;
            }
            total += match r.kind.as_str() {
                "ReplicaSet" => {
                    let rs = self.informers.replica_sets.get(ns, &r.name)?;
                    // A Deployment's set: the Deployment's size counts.
                    match controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                        Some(d) => {
                            if !seen.insert(d.uid.clone()) {
                                continue;
                            }
                            self.informers.deployments.get(ns, &d.name)?.spec.as_ref()?.replicas.unwrap_or(1)
                        }
                        None => rs.spec.as_ref()?.replicas.unwrap_or(1),
                    }
                }
                "StatefulSet" => self.informers.stateful_sets.get(ns, &r.name)?.spec.as_ref()?.replicas.unwrap_or(1),
                _ => return None,
            };
        }
        Some(total)
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        let Some(pdb) = self.informers.budgets.get(ns, name) else { return Ok(None) };
        let selected: Vec<Arc<Pod>> = self.informers.pods.list(ns).into_iter().filter(|p| selects(&pdb, p)).collect();
        let healthy =
            selected.iter().filter(|p| pods::is_ready(p) && !pods::is_terminating(p) && pods::is_active(p)).count()
                as i32;
        let now = Time(Timestamp::now());
        let old = pdb.status.clone().unwrap_or_default();
        let (expected, desired, allowed, reason, message) = match expected_and_desired(
            &pdb,
            selected.iter().filter(|p| pods::is_active(p)).count(),
            self.scale(&selected),
        ) {
            Ok((expected, desired)) => {
                let allowed = (healthy - desired).max(0);
                let reason = if allowed > 0 { "SufficientPods" } else { "InsufficientPods" };
                (expected, desired, allowed, reason, String::new())
            }
            Err(why) => {
                self.events.warning(reference(pdb.as_ref()), "CalculateExpectedPodCountFailed", why.clone());
                (0, 0, 0, "SyncFailed", why)
            }
        };
        let previous = old.conditions.iter().flatten().find(|c| c.type_ == "DisruptionAllowed");
        let status_word = if allowed > 0 { "True" } else { "False" };
        let transition = previous.filter(|c| c.status == status_word).map_or(now, |c| c.last_transition_time.clone());
        let status = PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: allowed,
            expected_pods: expected,
            observed_generation: pdb.metadata.generation,
            disrupted_pods: old.disrupted_pods.clone(),
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: status_word.into(),
                reason: reason.into(),
                message,
                last_transition_time: transition,
                observed_generation: pdb.metadata.generation,
            }]),
        };
        if pdb.status.as_ref() != Some(&status) {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
            let patch = crate::status::status_patch(pdb.status.as_ref(), &status);
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

fn selects(pdb: &PodDisruptionBudget, p: &Pod) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return false };
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    selector::matches(sel, p.metadata.labels.as_ref().unwrap_or(&EMPTY))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "b"}, "spec": spec})).expect("pdb")
    }

    #[test]
    fn budgets_count_as_upstream() {
        assert_eq!(expected_and_desired(&pdb(serde_json::json!({"minAvailable": 2})), 3, None), Ok((3, 2)));
        assert_eq!(
            expected_and_desired(&pdb(serde_json::json!({"minAvailable": "50%"})), 3, Some(5)),
            Ok((5, 3)),
            "rounds up"
        );
        assert_eq!(expected_and_desired(&pdb(serde_json::json!({"maxUnavailable": 1})), 3, Some(4)), Ok((4, 3)));
        assert_eq!(expected_and_desired(&pdb(serde_json::json!({"maxUnavailable": "30%"})), 3, Some(10)), Ok((10, 7)));
        assert!(
            expected_and_desired(&pdb(serde_json::json!({"maxUnavailable": 1})), 3, None).is_err(),
            "needs the scale"
        );
    }
}
