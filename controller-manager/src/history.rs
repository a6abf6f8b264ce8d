//! ControllerRevisions: the template history of DaemonSets and StatefulSets, as upstream keeps
//! it, so `kubectl rollout history` lists revisions and `kubectl rollout undo` puts one back.
//!
//! A revision is named `<owner>-<hash>` after its template hash, carries the template's labels
//! plus the hash labels, and holds in `data` the strategic merge patch that restores the
//! template (`{"spec": {"template": {..., "$patch": "replace"}}}`), which is what kubectl's
//! rollback applies. Every template gets one revision: returning to an older template (a
//! rollback) gives that older revision the next number instead of a copy. Revisions beyond
//! `revisionHistoryLimit` that no live pod still runs are deleted, oldest first.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The label DaemonSet pods and revisions carry: the template hash.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label every revision carries: the template hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The patch a revision stores for `template`.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores, if its data holds one.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// What one owner's history needs: who owns it, the template now, its hash.
pub struct Owner<'a> {
    pub meta: &'a ObjectMeta,
    pub reference: OwnerReference,
    pub template: &'a PodTemplateSpec,
    pub hash: &'a str,
    pub history_limit: usize,
}

impl Owner<'_> {
    pub fn revision_name(&self) -> String {
        format!("{}-{}", self.meta.name.as_deref().unwrap_or_default(), self.hash)
    }
}

/// The writes that bring one owner's history up to date.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// A revision to create for the current template.
    pub create: Option<ControllerRevision>,
    /// An existing revision of the current template that becomes the newest: (name, number).
    pub renumber: Option<(String, i64)>,
    /// Old revisions to delete.
    pub delete: Vec<String>,
    /// The current template's revision number once the plan is carried out.
    pub number: i64,
}

/// The plan for `owner` given the revisions it owns and the revision names live pods still run
/// (those are never deleted, nor is anything in `keep`).
pub fn plan(owner: &Owner, owned: &[Arc<ControllerRevision>], in_use: &BTreeSet<String>) -> Plan {
    let data = revision_data(owner.template);
    let name = owner.revision_name();
    let max = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut plan = Plan::default();
    let same = owned.iter().filter(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)).max_by_key(|r| r.revision);
    let current = match same {
        Some(r) => {
            let rname = r.metadata.name.clone().unwrap_or_default();
            if r.revision < max {
                plan.renumber = Some((rname.clone(), max + 1));
                plan.number = max + 1;
            } else {
                plan.number = r.revision;
            }
            rname
        }
        None => {
            let mut labels = owner.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(REVISION_HASH_LABEL.into(), owner.hash.into());
            labels.insert(HASH_LABEL.into(), owner.hash.into());
            plan.create = Some(ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: owner.meta.namespace.clone(),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.reference.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(data)),
                revision: max + 1,
            });
            plan.number = max + 1;
            name
        }
    };
    let mut old: Vec<&Arc<ControllerRevision>> = owned
        .iter()
        .filter(|r| {
            let n = r.metadata.name.as_deref().unwrap_or_default();
            n != current && !in_use.contains(n) && r.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if old.len() > owner.history_limit {
        old.sort_by_key(|r| r.revision);
        let surplus = old.len() - owner.history_limit;
        plan.delete = old[..surplus].iter().filter_map(|r| r.metadata.name.clone()).collect();
    }
    plan
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A revision of that name exists with another template: the owner must bump its
    /// collisionCount so the next hash differs.
    #[error("revision {0} exists with a different template (hash collision)")]
    Collision(String),
    #[error("writing controller revisions: {0}")]
    Api(#[from] kube::Error),
}

/// Carries out `plan`; returns the current revision's number.
pub async fn execute(client: &kube::Client, ns: &str, plan: Plan) -> Result<i64, HistoryError> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    if let Some(rev) = &plan.create {
        match api.create(&PostParams::default(), rev).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Our cache lagged behind our own earlier create, or the name is taken.
                let name = rev.metadata.name.clone().unwrap_or_default();
                let existing = api.get(&name).await?;
                let same_owner = existing.metadata.owner_references.as_ref().is_some_and(|refs| {
                    refs.iter().any(|r| Some(&r.uid) == rev.metadata.owner_references.as_ref().map(|o| &o[0].uid))
                });
                if existing.data != rev.data || !same_owner {
                    return Err(HistoryError::Collision(name));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((name, number)) = &plan.renumber {
        api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"revision": number}))).await?;
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(plan.number)
}

/// Brings `owner`'s history up to date: the revisions it controls (from the shared informer),
/// planned against `in_use`, then written.
pub async fn sync(
    client: &kube::Client,
    revisions: &crate::informer::Informer<ControllerRevision>,
    owner: &Owner<'_>,
    in_use: &BTreeSet<String>,
) -> Result<(), HistoryError> {
    let ns = owner.meta.namespace.as_deref().unwrap_or_default();
    let uid = owner.meta.uid.as_deref();
    let owned: Vec<Arc<ControllerRevision>> = revisions
        .list(ns)
        .into_iter()
        .filter(|r| crate::ownership::controller_of(&r.metadata).is_some_and(|o| Some(o.uid.as_str()) == uid))
        .collect();
    let plan = plan(owner, &owned, in_use);
    if plan.create.is_some() || plan.renumber.is_some() || !plan.delete.is_empty() {
        execute(client, ns, plan).await?;
    }
    Ok(())
}

/// After a [`HistoryError::Collision`]: one more in the owner's `status.collisionCount`, so
/// its next template hash differs.
pub async fn bump_collision_count<K>(client: &kube::Client, owner: &K, count: Option<i32>) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let m = owner.meta();
    let count = count.unwrap_or(0) + 1;
    tracing::info!(kind = %K::kind(&()), name = ?m.name, count, "Template hash collision");
    let api: Api<K> = Api::namespaced(client.clone(), m.namespace.as_deref().unwrap_or_default());
    let patch = json!({"status": {"collisionCount": count}});
    api.patch_status(m.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(
            json!({"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": image}]}}),
        )
        .expect("template")
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("ds".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        }
    }

    fn owner<'a>(meta: &'a ObjectMeta, t: &'a PodTemplateSpec, hash: &'a str, limit: usize) -> Owner<'a> {
        Owner {
            meta,
            reference: OwnerReference {
                api_version: "apps/v1".into(),
                kind: "DaemonSet".into(),
                name: "ds".into(),
                uid: "u1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            template: t,
            hash,
            history_limit: limit,
        }
    }

    fn rev(name: &str, t: &PodTemplateSpec, number: i64) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(RawExtension(revision_data(t))),
            revision: number,
        })
    }

    #[test]
    fn the_first_template_gets_revision_one_with_hash_labels_and_an_owner() {
        let (m, t) = (meta(), template("a"));
        let p = plan(&owner(&m, &t, "h1", 10), &[], &BTreeSet::new());
        let created = p.create.expect("create");
        assert_eq!(created.metadata.name.as_deref(), Some("ds-h1"));
        assert_eq!(created.revision, 1);
        let labels = created.metadata.labels.expect("labels");
        assert_eq!((labels["app"].as_str(), labels[REVISION_HASH_LABEL].as_str()), ("d", "h1"));
        assert_eq!(created.data.expect("data").0["spec"]["template"]["$patch"], "replace");
        assert_eq!(template_of(&rev("x", &t, 1)), Some(t));
    }

    #[test]
    fn an_unchanged_template_plans_nothing_and_a_new_one_gets_the_next_number() {
        let (m, a, b) = (meta(), template("a"), template("b"));
        let owned = vec![rev("ds-h1", &a, 1)];
        assert_eq!(plan(&owner(&m, &a, "h1", 10), &owned, &BTreeSet::new()), Plan { number: 1, ..Default::default() });
        let p = plan(&owner(&m, &b, "h2", 10), &owned, &BTreeSet::new());
        assert_eq!(p.create.map(|r| r.revision), Some(2));
    }

    #[test]
    fn rolling_back_renumbers_the_old_revision_instead_of_copying_it() {
        let (m, a, b) = (meta(), template("a"), template("b"));
        let owned = vec![rev("ds-h1", &a, 1), rev("ds-h2", &b, 2)];
        let p = plan(&owner(&m, &a, "h1", 10), &owned, &BTreeSet::new());
        assert_eq!((p.create, p.renumber, p.number), (None, Some(("ds-h1".into(), 3)), 3));
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_oldest_first_unless_pods_still_run_it() {
        let m = meta();
        let ts: Vec<PodTemplateSpec> = (0..5).map(|i| template(&format!("i{i}"))).collect();
        let owned: Vec<_> = (0..4).map(|i| rev(&format!("ds-h{i}"), &ts[i], i as i64 + 1)).collect();
        let in_use = BTreeSet::from(["ds-h0".to_string()]);
        let p = plan(&owner(&m, &ts[4], "h4", 1), &owned, &in_use);
        assert_eq!(p.delete, ["ds-h1", "ds-h2"], "ds-h0 runs, ds-h3 is the one kept");
        assert_eq!(p.create.map(|r| r.revision), Some(5));
    }
}
