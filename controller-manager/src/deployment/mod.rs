//! The Deployment controller, upstream's flat decision ladder: claim the ReplicaSets; a
//! Deployment being deleted only gets its status; a paused one, or one resized (a set's
//! desired-replicas annotation differs from spec.replicas), is scaled proportionally; otherwise
//! one rollout step by its strategy (`rolling`: grow the new set within maxSurge, shrink old
//! ones within maxUnavailable; Recreate: all old pods gone before the new set grows). Each step
//! ends by recomputing status and conditions (`progress`). Old sets beyond
//! revisionHistoryLimit are deleted once the rollout is complete.

pub mod progress;
pub mod revision;
pub mod rolling;

use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::events::{Recorder, reference};
use crate::informer::{Informer, key_of, split_key};
use crate::ownership::{claim_all, controller_of, controller_reference};
use crate::pods;
use crate::selector;
use crate::workqueue::WorkQueue;
use revision::{DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, annotation, equal_ignore_hash, max_revision};
use rolling::Set;

pub struct DeploymentController {
    client: kube::Client,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    pub queue: Arc<WorkQueue>,
    events: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("hash collision: ReplicaSet {0} exists with another template; collisionCount raised")]
    Collision(String),
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn view(rs: &ReplicaSet) -> Set {
    Set {
        name: rs.metadata.name.clone().unwrap_or_default(),
        replicas: spec_replicas(rs),
        available: rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0),
        created: created(rs),
        max_replicas: annotation(&rs.metadata, MAX_REPLICAS).and_then(|v| v.parse().ok()),
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// (maxSurge, maxUnavailable); both zero for Recreate, as upstream.
fn surge_unavailable(d: &Deployment) -> Result<(i32, i32), SyncError> {
    if is_recreate(d) {
        return Ok((0, 0));
    }
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let (s, u) = rolling::fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
    .map_err(SyncError::Invalid)?;
    Ok((s, u.min(replicas(d))))
}

/// The set running the Deployment's current template (the oldest, if several do), and the rest.
pub fn split(d: &Deployment, sets: &[Arc<ReplicaSet>]) -> (Option<Arc<ReplicaSet>>, Vec<Arc<ReplicaSet>>) {
    let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut sorted = sets.to_vec();
    sorted.sort_by(|a, b| created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    let new = sorted
        .iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, &template)))
        .cloned();
    let old = sorted
        .into_iter()
        .filter(|rs| Some(rs.metadata.uid.clone()) != new.as_ref().map(|n| n.metadata.uid.clone()))
        .collect();
    (new, old)
}

impl DeploymentController {
    pub fn new(
        client: kube::Client,
        deployments: &Informer<Deployment>,
        sets: &Informer<ReplicaSet>,
        pods: &Informer<Pod>,
        events: Recorder,
    ) -> Arc<DeploymentController> {
        let c = Arc::new(DeploymentController {
            client,
            deployments: deployments.clone(),
            sets: sets.clone(),
            pods: pods.clone(),
            queue: Arc::new(WorkQueue::default()),
            events,
        });
        let w: Weak<DeploymentController> = Arc::downgrade(&c);
        deployments.on_change(move |old, new| {
            if let (Some(c), Some(o)) = (w.upgrade(), new.or(old)) {
                c.queue.add(key_of(o.as_ref()));
            }
        });
        let w = Arc::downgrade(&c);
        sets.on_change(move |old, new| {
            let Some(c) = w.upgrade() else { return };
            for rs in [old, new].into_iter().flatten() {
                match c.owner_of(&rs.metadata) {
                    Some(d) => c.queue.add(key_of(d.as_ref())),
                    None if controller_of(&rs.metadata).is_none() => {
                        for d in c.selecting(rs) {
                            c.queue.add(key_of(d.as_ref()));
                        }
                    }
                    None => {}
                }
            }
        });
        // A Recreate rollout waits for the old pods to be gone.
        let w = Arc::downgrade(&c);
        pods.on_change(move |old, new| {
            let (Some(c), Some(p), None) = (w.upgrade(), old, new) else { return };
            let Some(r) = controller_of(&p.metadata).filter(|r| r.kind == "ReplicaSet") else { return };
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(rs) = c.sets.get(ns, &r.name)
                && let Some(d) = c.owner_of(&rs.metadata)
                && is_recreate(&d)
            {
                c.queue.add(key_of(d.as_ref()));
            }
        });
        c
    }

    fn owner_of(&self, meta: &ObjectMeta) -> Option<Arc<Deployment>> {
        self.deployments.controller_of(meta)
    }

    fn selecting(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        self.deployments.selecting(&rs.metadata, |d| d.spec.as_ref().map(|s| &s.selector))
    }

    /// Syncs one Deployment; `Ok(Some(d))` asks to be synced again after `d`.
    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (ns, name) = split_key(key);
        let Some(d) = self.deployments.get(ns, name) else { return Ok(None) };
        let Some(spec) = d.spec.as_ref() else { return Ok(None) };
        let now = Timestamp::now();
        if selector::is_empty(&spec.selector) {
            self.events.warning(
                reference(d.as_ref()),
                "SelectorRequired",
                "This deployment has an empty selector".into(),
            );
            return Ok(None);
        }
        let sets = self.claim_replica_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            let (new, old) = split(&d, &sets);
            return self.sync_status(&d, new.as_deref(), &old, now, false).await;
        }
        let paused = spec.paused == Some(true);
        if let Some(mut status) = self.paused_condition(&d, paused, now) {
            status.observed_generation = d.metadata.generation;
            self.write_status(&d, status).await?;
            return Ok(None);
        }
        let (new, old) = split(&d, &sets);
        if paused || self.is_scaling_event(&d, new.as_deref(), &old) {
            // Scale (proportionally mid-rollout), no rollout step.
            let new = self.sync_new_replica_set(&d, new, &old, false).await?;
            self.scale(&d, new.as_ref(), &old).await?;
            if paused {
                self.cleanup(&d, &old).await?;
            }
            let (new, old) = split(&d, &self.owned_sets(&d));
            return self.sync_status(&d, new.as_deref(), &old, now, false).await;
        }
        if is_recreate(&d) {
            self.rollout_recreate(&d, new, old, now).await
        } else {
            self.rollout_rolling(&d, new, old, now).await
        }
    }

    /// A paused Deployment says so in Progressing (Unknown, DeploymentPaused), and says when
    /// it is resumed; `Some` when that condition must change now.
    fn paused_condition(&self, d: &Deployment, paused: bool, now: Timestamp) -> Option<DeploymentStatus> {
        if d.spec.as_ref().and_then(|s| s.progress_deadline_seconds) == Some(i32::MAX) {
            return None;
        }
        let mut status = d.status.clone().unwrap_or_default();
        let reason = progress::get(&status, "Progressing").and_then(|c| c.reason.clone());
        let c = match (paused, reason.as_deref()) {
            (true, r) if r != Some(progress::PAUSED) => {
                progress::condition("Progressing", "Unknown", progress::PAUSED, "Deployment is paused".into(), now)
            }
            (false, Some(progress::PAUSED)) => {
                progress::condition("Progressing", "Unknown", progress::RESUMED, "Deployment is resumed".into(), now)
            }
            _ => return None,
        };
        progress::set(&mut status, c);
        Some(status)
    }

    fn owned_sets(&self, d: &Deployment) -> Vec<Arc<ReplicaSet>> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        self.sets
            .list(d.metadata.namespace.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|rs| controller_of(&rs.metadata).is_some_and(|r| r.uid == uid))
            .collect()
    }

    /// The sets the Deployment owns after adopting orphans it selects and releasing sets it no
    /// longer selects.
    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<Arc<ReplicaSet>>, kube::Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let sel = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let selected =
            |rs: &ReplicaSet| selector::matches(&sel, rs.metadata.labels.as_ref().unwrap_or(&Default::default()));
        claim_all(&api, d, self.sets.list(ns), selected).await
    }

    fn is_scaling_event(&self, d: &Deployment, new: Option<&ReplicaSet>, old: &[Arc<ReplicaSet>]) -> bool {
        new.into_iter().chain(old.iter().map(Arc::as_ref)).filter(|rs| spec_replicas(rs) > 0).any(|rs| {
            annotation(&rs.metadata, DESIRED_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .is_some_and(|v| v != replicas(d))
        })
    }

    /// Brings the new set's annotations (revision, replicas) up to date, or creates it when
    /// `create` and there is none. The Deployment's revision annotation follows.
    async fn sync_new_replica_set(
        &self,
        d: &Deployment,
        new: Option<Arc<ReplicaSet>>,
        old: &[Arc<ReplicaSet>],
        create: bool,
    ) -> Result<Option<ReplicaSet>, SyncError> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let olds: Vec<&ReplicaSet> = old.iter().map(Arc::as_ref).collect();
        let max_old = max_revision(&olds);
        let revision = match &new {
            Some(rs) if revision::revision_of(rs) > max_old => revision::revision_of(rs),
            _ => max_old + 1,
        };
        let result = match new {
            Some(rs) => {
                let annotations = revision::replica_set_annotations(d, &rs, revision, None);
                if rs.metadata.annotations.as_ref() != Some(&annotations) {
                    let mut updated = (*rs).clone();
                    updated.metadata.annotations = Some(annotations);
                    Some(
                        api.replace(rs.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &updated)
                            .await?,
                    )
                } else {
                    Some((*rs).clone())
                }
            }
            None if create => Some(self.create_new_replica_set(d, &api, revision, old).await?),
            None => None,
        };
        if let Some(rs) = &result
            && annotation(&d.metadata, REVISION) != annotation(&rs.metadata, REVISION)
        {
            let patch =
                serde_json::json!({"metadata": {"annotations": {REVISION: annotation(&rs.metadata, REVISION)}}});
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
            deployments
                .patch(d.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(result)
    }

    async fn create_new_replica_set(
        &self,
        d: &Deployment,
        api: &Api<ReplicaSet>,
        revision: i64,
        old: &[Arc<ReplicaSet>],
    ) -> Result<ReplicaSet, SyncError> {
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = revision::pod_template_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_default().insert(HASH_LABEL.into(), hash.clone());
        let (surge, _) = surge_unavailable(d)?;
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        // A rolling update starts the new set as large as the surge allows; Recreate at zero.
        let size = if is_recreate(d) {
            0
        } else {
            let all: Vec<Set> = old.iter().map(|rs| view(rs)).collect();
            let fresh = Set { name: name.clone(), replicas: 0, available: 0, created: None, max_replicas: None };
            rolling::new_replicas(replicas(d), surge, &fresh, &all)
        };
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_reference(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(size),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        rs.metadata.annotations =
            Some(revision::replica_set_annotations(d, &rs, revision, Some((replicas(d), replicas(d) + surge))));
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if size > 0 {
                    self.events.normal(
                        reference(d),
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {size}"),
                    );
                }
                let mut status = d.status.clone().unwrap_or_default();
                progress::set(
                    &mut status,
                    progress::condition(
                        "Progressing",
                        "True",
                        progress::CREATED,
                        format!("Created new replica set {name:?}"),
                        Timestamp::now(),
                    ),
                );
                self.write_status(d, status).await?;
                Ok(created)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours already (a write we have not seen yet)? Otherwise the hash collided.
                let existing = api.get(&name).await?;
                let ours = controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    return Ok(existing);
                }
                let mut status = d.status.clone().unwrap_or_default();
                status.collision_count = Some(collisions.unwrap_or(0) + 1);
                self.write_status(d, status).await?;
                Err(SyncError::Collision(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a set's size (and its replica annotations); records ScalingReplicaSet.
    async fn scale_replica_set(&self, d: &Deployment, rs: &ReplicaSet, size: i32) -> Result<bool, SyncError> {
        let (surge, _) = surge_unavailable(d)?;
        let from = spec_replicas(rs);
        let desired = replicas(d).to_string();
        let max = (replicas(d) + surge).to_string();
        let annotations_ok = annotation(&rs.metadata, DESIRED_REPLICAS) == Some(desired.as_str())
            && annotation(&rs.metadata, MAX_REPLICAS) == Some(max.as_str());
        if from == size && annotations_ok {
            return Ok(false);
        }
        let patch = serde_json::json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}, "resourceVersion": rs.metadata.resource_version},
            "spec": {"replicas": size}
        });
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if from != size {
            let direction = if size > from { "up" } else { "down" };
            self.events.normal(
                reference(d),
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {from} to {size}"),
            );
        }
        Ok(from != size)
    }

    /// Resizes the sets for a changed spec.replicas: the only active set (or the newest) takes
    /// it all; in mid-rollout the change is spread in proportion.
    async fn scale(&self, d: &Deployment, new: Option<&ReplicaSet>, old: &[Arc<ReplicaSet>]) -> Result<(), SyncError> {
        let want = replicas(d);
        let mut all: Vec<&ReplicaSet> = new.into_iter().chain(old.iter().map(Arc::as_ref)).collect();
        let active: Vec<&ReplicaSet> = all.iter().copied().filter(|rs| spec_replicas(rs) > 0).collect();
        let only = match active.len() {
            0 => new.or_else(|| {
                all.sort_by_key(|rs| std::cmp::Reverse(created(rs)));
                all.first().copied()
            }),
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(rs) = only {
            self.scale_replica_set(d, rs, want).await?;
            return Ok(());
        }
        let saturated = new.is_some_and(|n| {
            spec_replicas(n) == want
                && annotation(&n.metadata, DESIRED_REPLICAS) == Some(want.to_string().as_str())
                && n.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) == want
        });
        if saturated {
            for rs in old.iter().filter(|rs| spec_replicas(rs) > 0) {
                self.scale_replica_set(d, rs, 0).await?;
            }
            return Ok(());
        }
        if is_recreate(d) {
            return Ok(());
        }
        let (surge, _) = surge_unavailable(d)?;
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let views: Vec<Set> = active.iter().map(|rs| view(rs)).collect();
        for (name, size) in rolling::proportional(want, surge, status_replicas, &views) {
            if let Some(rs) = active.iter().find(|rs| rs.metadata.name.as_deref() == Some(name.as_str())) {
                self.scale_replica_set(d, rs, size).await?;
            }
        }
        Ok(())
    }

    async fn rollout_rolling(
        &self,
        d: &Deployment,
        new: Option<Arc<ReplicaSet>>,
        old: Vec<Arc<ReplicaSet>>,
        now: Timestamp,
    ) -> Result<Option<Duration>, SyncError> {
        let new = self.sync_new_replica_set(d, new, &old, true).await?;
        let (surge, unavailable) = surge_unavailable(d)?;
        let want = replicas(d);
        if let Some(n) = &new {
            let all: Vec<Set> = old.iter().map(|rs| view(rs)).chain([view(n)]).collect();
            let size = if spec_replicas(n) > want { want } else { rolling::new_replicas(want, surge, &view(n), &all) };
            if self.scale_replica_set(d, n, size).await? {
                return self.sync_status(d, Some(n), &old, now, true).await;
            }
        }
        let old_views: Vec<Set> = old.iter().filter(|rs| spec_replicas(rs) > 0).map(|rs| view(rs)).collect();
        let mut scaled = false;
        for (name, size) in rolling::scale_down_old(want, unavailable, new.as_ref().map(view).as_ref(), &old_views) {
            if let Some(rs) = old.iter().find(|rs| rs.metadata.name.as_deref() == Some(name.as_str())) {
                scaled |= self.scale_replica_set(d, rs, size).await?;
            }
        }
        if !scaled {
            let status = progress::calculate_status(d, &self.all(new.as_ref(), &old), new.as_ref(), unavailable, now);
            if progress::complete(d, &status) {
                self.cleanup(d, &old).await?;
            }
        }
        self.sync_status(d, new.as_ref(), &old, now, true).await
    }

    async fn rollout_recreate(
        &self,
        d: &Deployment,
        new: Option<Arc<ReplicaSet>>,
        old: Vec<Arc<ReplicaSet>>,
        now: Timestamp,
    ) -> Result<Option<Duration>, SyncError> {
        let mut scaled = false;
        for rs in old.iter().filter(|rs| spec_replicas(rs) > 0) {
            scaled |= self.scale_replica_set(d, rs, 0).await?;
        }
        if scaled {
            return self.sync_status(d, new.as_deref(), &old, now, true).await;
        }
        // Every old pod must be gone (or finished) before the new ones start.
        let old_uids: Vec<&str> = old.iter().filter_map(|rs| rs.metadata.uid.as_deref()).collect();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let old_running = self.pods.list(ns).iter().any(|p| {
            controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && !matches!(pods::phase(p), "Succeeded" | "Failed")
        });
        if old_running {
            return self.sync_status(d, new.as_deref(), &old, now, true).await;
        }
        let new = self.sync_new_replica_set(d, new, &old, true).await?;
        if let Some(n) = &new {
            self.scale_replica_set(d, n, replicas(d)).await?;
        }
        let status = progress::calculate_status(d, &self.all(new.as_ref(), &old), new.as_ref(), 0, now);
        if progress::complete(d, &status) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, new.as_ref(), &old, now, true).await
    }

    fn all<'a>(&self, new: Option<&'a ReplicaSet>, old: &'a [Arc<ReplicaSet>]) -> Vec<&'a ReplicaSet> {
        new.into_iter().chain(old.iter().map(Arc::as_ref)).collect()
    }

    /// Deletes the oldest empty old sets beyond revisionHistoryLimit (default 10).
    async fn cleanup(&self, d: &Deployment, old: &[Arc<ReplicaSet>]) -> Result<(), SyncError> {
        let limit = d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        let mut empty: Vec<&Arc<ReplicaSet>> = old
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0
                    && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                    && rs.metadata.deletion_timestamp.is_none()
                    && rs.status.as_ref().and_then(|s| s.observed_generation) >= rs.metadata.generation
            })
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|rs| (revision::revision_of(rs), created(rs)));
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        for rs in &empty[..empty.len() - limit] {
            match api.delete(rs.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Recomputes status (and, after a rollout step, the Progressing condition) and writes it
    /// when it changed; asks to look again when a deadline or availability is pending.
    async fn sync_status(
        &self,
        d: &Deployment,
        new: Option<&ReplicaSet>,
        old: &[Arc<ReplicaSet>],
        now: Timestamp,
        rollout: bool,
    ) -> Result<Option<Duration>, SyncError> {
        // Read the sets again: the step just written may have changed them.
        let fresh = self.owned_sets(d);
        let (new_fresh, old_fresh) = split(d, &fresh);
        let new = new_fresh.as_deref().or(new);
        let old: &[Arc<ReplicaSet>] = if fresh.is_empty() { old } else { &old_fresh };
        let (_, unavailable) = surge_unavailable(d)?;
        let mut status = progress::calculate_status(d, &self.all(new, old), new, unavailable, now);
        let again = if rollout { progress::rollout_progress(d, &mut status, new, now) } else { None };
        if d.status.as_ref() != Some(&status) {
            self.write_status(d, status).await?;
        }
        Ok(again)
    }

    async fn write_status(&self, d: &Deployment, status: DeploymentStatus) -> Result<(), kube::Error> {
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let patch = crate::status::status_patch(d.status.as_ref(), &status);
        match Api::<Deployment>::namespaced(self.client.clone(), ns)
            .patch_status(
                d.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
