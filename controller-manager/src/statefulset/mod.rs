//! The StatefulSet controller: pods with a stable identity, `<set>-<ordinal>`, created, scaled
//! and updated in order, as upstream's (1.33):
//!
//! - a sync claims the namespace's pods whose names make them members of the set (adopting
//!   orphans it selects, releasing what it no longer selects), runs the ladder of `plan`
//!   (create in order / scale down from the highest / replace failed pods / roll updates down
//!   to the partition), executes its steps and recomputes the status;
//! - each pod carries the template's labels plus `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash`, `spec.hostname` = its name
//!   and `spec.subdomain` = `spec.serviceName` (its DNS name through the headless Service);
//! - a revision is named `<set>-<hash of the template and collisionCount>` and kept as a
//!   ControllerRevision (`history`; `kubectl rollout history`/`undo` read them): a pod that must
//!   come back at the current (old) revision (below a partition) is built from that revision,
//!   or from a surviving pod of it when the revision is gone;
//! - each pod gets the claims of `volumeClaimTemplates` (`claims`), created before the pod,
//!   kept or deleted with the set and on scale-down as the retention policy says;
//! - no expectations, as upstream: the walk is one pod at a time where order matters, and a
//!   create that finds the pod already there (a stale cache) counts as done.
//!
//! Left out: `maxUnavailable` (alpha) is ignored: a rolling update replaces one pod at a time;
//! a retention policy changed after claims exist is not applied to them.

pub mod claims;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use crate::events::{Recorder, reference};
use crate::history::{self, HistoryError};
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::{claim_all, controller_of, controller_reference};
use crate::pods::{self, is_ready};
use crate::selector;
use crate::workqueue::WorkQueue;
use plan::{POD_INDEX_LABEL, POD_NAME_LABEL, Policy, REVISION_LABEL, Revision, Step, ordinal_of, revision_of};

/// Upstream's default for `--concurrent-statefulset-syncs`.
pub const DEFAULT_WORKERS: usize = 5;

pub struct StatefulSetController {
    client: kube::Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("claiming pods: {0}")]
    Claim(#[source] kube::Error),
    #[error("creating pod {0}: {1}")]
    Create(String, #[source] kube::Error),
    #[error("deleting pod {0}: {1}")]
    Delete(String, #[source] kube::Error),
    #[error("updating pod {0}: {1}")]
    Update(String, #[source] kube::Error),
    #[error("updating status: {0}")]
    Status(#[source] kube::Error),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{0}")]
    Claims(String),
}

/// The policy the ladder reads off a set's spec.
pub fn policy_of(set: &StatefulSet) -> Policy {
    let spec = set.spec.clone().unwrap_or_default();
    let strategy = spec.update_strategy.unwrap_or_default();
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition).unwrap_or(0).max(0);
    Policy {
        replicas: spec.replicas.unwrap_or(1).max(0),
        start: spec.ordinals.and_then(|o| o.start).unwrap_or(0).max(0),
        parallel: spec.pod_management_policy.as_deref() == Some("Parallel"),
        rolling: (strategy.type_.as_deref() != Some("OnDelete")).then_some(partition),
        partition,
        min_ready: Duration::from_secs(spec.min_ready_seconds.unwrap_or(0).max(0) as u64),
    }
}

/// The revision name of a set's template: `<set>-<hash>`, the hash's decimal digits spelt in
/// an alphabet without vowels (so no words), as upstream's revision names look.
pub fn revision_name(set: &StatefulSet) -> String {
    let template = set.spec.as_ref().map(|s| &s.template);
    let collisions = set.status.as_ref().and_then(|s| s.collision_count).filter(|c| *c > 0);
    let hash = crate::hash::template_hash(&template, collisions);
    format!("{}-{hash}", set.metadata.name.as_deref().unwrap_or_default())
}

/// A template recovered from a pod of an old revision: its labels, annotations and spec without
/// what the set, the scheduler and the kubelet add per pod.
pub fn template_from_pod(pod: &Pod) -> PodTemplateSpec {
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    for k in [POD_NAME_LABEL, POD_INDEX_LABEL, REVISION_LABEL] {
        labels.remove(k);
    }
    let mut spec = pod.spec.clone().unwrap_or_default();
    spec.node_name = None;
    spec.hostname = None;
    spec.subdomain = None;
    spec.ephemeral_containers = None;
    // The service-account token volume admission adds (upstream's name for it) is added again.
    let injected = |name: &str| name.starts_with("kube-api-access-");
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !injected(&v.name));
    }
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| !injected(&m.name));
        }
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: pod.metadata.annotations.clone(),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

/// The pod for `ordinal` from `template`, at `revision`, owned by the set.
pub fn new_stateful_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let name = format!("{set_name}-{ordinal}");
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    claims::attach(&mut spec, set, ordinal);
    spec.hostname = Some(name.clone());
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

impl StatefulSetController {
    pub fn new(
        client: kube::Client,
        sets: &Informer<StatefulSet>,
        pods: &Informer<Pod>,
        revisions: &Informer<ControllerRevision>,
        events: Recorder,
    ) -> Arc<StatefulSetController> {
        let c = Arc::new(StatefulSetController {
            client,
            sets: sets.clone(),
            pods: pods.clone(),
            revisions: revisions.clone(),
            queue: Arc::new(WorkQueue::default()),
            events,
        });
        let w: Weak<StatefulSetController> = Arc::downgrade(&c);
        sets.on_change(move |old, new| {
            if let (Some(c), Some(o)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(o.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        pods.on_change(move |old, new| {
            if let Some(c) = w.upgrade() {
                c.pod_changed(old.map(Arc::as_ref), new.map(Arc::as_ref));
            }
        });
        let w = Arc::downgrade(&c);
        revisions.on_change(move |old, new| {
            let (Some(c), Some(r)) = (w.upgrade(), new.or(old)) else { return };
            if let Some(set) = c.sets.controller_of(&r.metadata) {
                c.queue.add(key_of(set.as_ref()));
            }
        });
        c
    }

    /// The set that controls `pod`, if it is a StatefulSet we know (same UID).
    fn owner_of(&self, pod: &Pod) -> Option<Arc<StatefulSet>> {
        self.sets.controller_of(&pod.metadata)
    }

    /// Sets whose selector matches an orphan (they may adopt it).
    fn selecting(&self, pod: &Pod) -> Vec<Arc<StatefulSet>> {
        self.sets.selecting(&pod.metadata, |s| s.spec.as_ref().map(|s| &s.selector))
    }

    fn pod_changed(&self, old: Option<&Pod>, new: Option<&Pod>) {
        if let (Some(o), Some(n)) = (old, new)
            && o.metadata.resource_version == n.metadata.resource_version
        {
            return;
        }
        let mut keys = Vec::new();
        for p in old.into_iter().chain(new) {
            match self.owner_of(p) {
                Some(set) => keys.push(key_of(set.as_ref())),
                None if controller_of(&p.metadata).is_none() => {
                    keys.extend(self.selecting(p).iter().map(|s| key_of(s.as_ref())));
                }
                None => {}
            }
        }
        if let (Some(o), Some(n)) = (old, new)
            && !is_ready(o)
            && is_ready(n)
            && let Some(set) = self.owner_of(n)
        {
            // Available minReadySeconds after ready: look again then.
            let min_ready = policy_of(&set).min_ready;
            if !min_ready.is_zero() {
                self.queue.add_after(key_of(set.as_ref()), min_ready + Duration::from_secs(1));
            }
        }
        keys.sort();
        keys.dedup();
        for k in keys {
            self.queue.add(k);
        }
    }

    /// Syncs one set; `Ok(Some(d))` asks to be synced again after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(set) = self.sets.get(ns, name) else { return Ok(None) };
        if set.spec.is_none() {
            return Ok(None);
        }
        let owned = self.claim_pods(&set).await.map_err(SyncError::Claim)?;
        let policy = policy_of(&set);
        let update_revision = revision_name(&set);
        let current_revision = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| update_revision.clone());
        let now = Timestamp::now();
        let mut result = Ok(());
        if set.metadata.deletion_timestamp.is_none() {
            match self.sync_history(&set, &owned, &current_revision, &update_revision).await {
                Err(SyncError::History(HistoryError::Collision(_))) => {
                    let count = set.status.as_ref().and_then(|s| s.collision_count);
                    history::bump_collision_count(&self.client, set.as_ref(), count)
                        .await
                        .map_err(SyncError::Status)?;
                    return Ok(None);
                }
                r => r?,
            }
            let steps = plan::plan(name, &policy, &owned, &update_revision, now);
            result = self.execute(&set, &owned, steps, &current_revision, &update_revision).await;
        }
        let collisions = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let mut status = plan::calculate_status(
            set.metadata.generation,
            &policy,
            &owned,
            &current_revision,
            &update_revision,
            collisions,
            now,
        );
        // The controller sets no conditions; those others set are kept.
        status.conditions = set.status.as_ref().and_then(|s| s.conditions.clone());
        if set.status.as_ref() != Some(&status) {
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            let patch = crate::status::status_patch(set.status.as_ref(), &status);
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(SyncError::Status(e)),
            }
        }
        result?;
        let wait = owned.iter().filter_map(|p| pods::until_available(p, policy.min_ready, now)).min();
        Ok(wait.map(|d| d + Duration::from_millis(100)))
    }

    /// The set's member pods (any phase) after adopting orphans it selects and releasing pods
    /// it no longer selects.
    async fn claim_pods(&self, set: &StatefulSet) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = set.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        // Only pods whose names make them members can be the set's.
        let members: Vec<Arc<Pod>> =
            self.pods.list(ns).into_iter().filter(|p| ordinal_of(set_name, p).is_some()).collect();
        claim_all(&api, set, members, |p| selector::selects(&selector, &p.metadata)).await
    }

    /// Brings the set's ControllerRevisions up to date with its template; the current and
    /// update revisions and those live pods run are kept whatever the history limit.
    async fn sync_history(
        &self,
        set: &StatefulSet,
        owned: &[Arc<Pod>],
        current: &str,
        update: &str,
    ) -> Result<(), SyncError> {
        let Some(spec) = set.spec.as_ref() else { return Ok(()) };
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let mut in_use: std::collections::BTreeSet<String> =
            owned.iter().map(|p| revision_of(p).to_string()).filter(|r| !r.is_empty()).collect();
        in_use.insert(current.to_string());
        let hash = update.strip_prefix(set_name).and_then(|h| h.strip_prefix('-')).unwrap_or(update);
        let owner = history::Owner {
            meta: &set.metadata,
            reference: controller_reference(set),
            template: &spec.template,
            hash,
            history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        };
        Ok(history::sync(&self.client, &self.revisions, &owner, &in_use).await?)
    }

    /// The template of the current revision: the set's own when it is the update revision,
    /// else the one its ControllerRevision keeps, else recovered from a pod still at it.
    fn current_template(&self, set: &StatefulSet, owned: &[Arc<Pod>], current: &str, update: &str) -> PodTemplateSpec {
        let own = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        if current == update {
            return own;
        }
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(t) = self.revisions.get(ns, current).and_then(|r| history::template_of(&r)) {
            return t;
        }
        owned.iter().find(|p| revision_of(p) == current).map_or(own, |p| template_from_pod(p))
    }

    async fn execute(
        &self,
        set: &StatefulSet,
        owned: &[Arc<Pod>],
        steps: Vec<Step>,
        current: &str,
        update: &str,
    ) -> Result<(), SyncError> {
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut first_error = None;
        for step in steps {
            let r = match step {
                Step::Create { ordinal, revision } => {
                    let (template, rev) = match revision {
                        Revision::Current => (self.current_template(set, owned, current, update), current),
                        Revision::Update => (set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default(), update),
                    };
                    let pod = new_stateful_pod(set, &template, ordinal, rev);
                    let pod_name = pod.metadata.name.clone().unwrap_or_default();
                    if let Err(e) = claims::ensure(&self.client, set, ordinal).await {
                        self.events.warning(
                            reference(set),
                            "FailedCreate",
                            format!("create Claim for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                        );
                        first_error.get_or_insert(SyncError::Claims(e));
                        // Later pods wait: ordered creation must not run ahead of a missing claim.
                        break;
                    }
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {
                            self.events.normal(
                                reference(set),
                                "SuccessfulCreate",
                                format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                            );
                            Ok(())
                        }
                        // Created already; the cache had not seen it yet.
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                        Err(e) => {
                            self.events.warning(
                                reference(set),
                                "FailedCreate",
                                format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                            );
                            Err(SyncError::Create(pod_name, e))
                        }
                    }
                }
                Step::DeleteFailed(p) => {
                    let pod_name = p.metadata.name.clone().unwrap_or_default();
                    self.events.warning(
                        reference(set),
                        "RecreatingFailedPod",
                        format!("StatefulSet {ns}/{set_name} is recreating failed Pod {pod_name}"),
                    );
                    self.delete(&api, set, &p).await
                }
                Step::DeleteCondemned(p) => {
                    let ordinal = ordinal_of(set_name, &p).unwrap_or_default();
                    match claims::release_to_pod(&self.client, set, &p, ordinal).await {
                        Ok(()) => self.delete(&api, set, &p).await,
                        Err(e) => Err(SyncError::Claims(e)),
                    }
                }
                Step::DeleteForUpdate(p) => self.delete(&api, set, &p).await,
                Step::FixIdentity(p) => Self::fix_identity(&api, &p).await,
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Puts back the identity labels of a member pod; the resourceVersion makes it a
    /// compare-and-swap, so a conflict only means the next sync looks again.
    async fn fix_identity(api: &Api<Pod>, pod: &Pod) -> Result<(), SyncError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let set_name = name.rsplit_once('-').map(|(s, _)| s).unwrap_or_default();
        let ordinal = ordinal_of(set_name, pod).unwrap_or_default();
        let patch = serde_json::json!({"metadata": {
            "labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: ordinal.to_string()},
            "resourceVersion": pod.metadata.resource_version}});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(SyncError::Update(name, e)),
        }
    }

    /// Deletes `pod` if it is still the pod we saw (same UID).
    async fn delete(&self, api: &Api<Pod>, set: &StatefulSet, pod: &Pod) -> Result<(), SyncError> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&pod_name, &params).await {
            Ok(_) => {
                self.events.normal(
                    reference(set),
                    "SuccessfulDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            // Gone already, or replaced by another pod of that name: the next sync sees it.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.events.warning(
                    reference(set),
                    "FailedDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(SyncError::Delete(pod_name, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: serde_json::Value) -> StatefulSet {
        let mut base = serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid", "generation": 2},
            "spec": {"replicas": 3, "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
        });
        if let (Some(b), Some(extra)) = (base["spec"].as_object_mut(), v.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).expect("set")
    }

    #[test]
    fn a_stateful_pod_has_its_name_labels_hostname_subdomain_and_owner() {
        let s = set(serde_json::json!({}));
        let template = s.spec.as_ref().expect("spec").template.clone();
        let p = new_stateful_pod(&s, &template, 2, "web-abc");
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let labels = p.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "web-abc");
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-2"), Some("nginx")));
        let owner = &p.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("StatefulSet", "set-uid", Some(true)));
    }

    #[test]
    fn the_revision_follows_the_template_and_comes_back_when_it_is_reverted() {
        let v1 = set(serde_json::json!({}));
        let scaled = set(serde_json::json!({"replicas": 5}));
        let v2 = set(serde_json::json!({"template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}));
        let r1 = revision_name(&v1);
        assert!(r1.starts_with("web-") && r1.len() > 4, "{r1}");
        assert_eq!(r1, revision_name(&scaled), "scaling is no new revision");
        assert_ne!(r1, revision_name(&v2));
        assert_eq!(r1, revision_name(&v1.clone()), "reverting is the old revision again");
    }

    #[test]
    fn a_pod_of_an_old_revision_gives_back_its_template() {
        let s = set(serde_json::json!({}));
        let template = s.spec.as_ref().expect("spec").template.clone();
        let mut p = new_stateful_pod(&s, &template, 0, "web-old");
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some("n1".into());
        }
        let t = template_from_pod(&p);
        let again = new_stateful_pod(&s, &t, 1, "web-old");
        assert_eq!(again.spec.as_ref().and_then(|s| s.node_name.clone()), None);
        assert_eq!(again.metadata.labels.as_ref().expect("labels")[POD_NAME_LABEL], "web-1");
        assert_eq!(t.metadata.and_then(|m| m.labels), template.metadata.and_then(|m| m.labels));
    }

    #[test]
    fn the_policy_reads_the_spec_with_upstream_defaults() {
        let p = policy_of(&set(serde_json::json!({})));
        assert_eq!((p.replicas, p.start, p.parallel, p.rolling, p.partition), (3, 0, false, Some(0), 0));
        let p = policy_of(&set(serde_json::json!({"podManagementPolicy": "Parallel", "ordinals": {"start": 3},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}, "minReadySeconds": 5})));
        assert_eq!((p.start, p.parallel, p.rolling, p.min_ready), (3, true, Some(2), Duration::from_secs(5)));
        let p = policy_of(&set(serde_json::json!({"updateStrategy": {"type": "OnDelete"}})));
        assert_eq!(p.rolling, None);
    }
}
