//! A stateful pod's PersistentVolumeClaims, one per `volumeClaimTemplates` entry, named
//! `<template>-<set>-<ordinal>` so a pod that comes back gets its own storage again; and the
//! `persistentVolumeClaimRetentionPolicy`: with `whenDeleted: Delete` the set owns the claims
//! (the garbage collector deletes them with it), with `whenScaled: Delete` a pod removed by a
//! scale-down owns its claims first (so they go with it).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};

fn templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or(&[])
}

fn policy(set: &StatefulSet) -> (bool, bool) {
    let p = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (delete(p.and_then(|p| p.when_deleted.as_ref())), delete(p.and_then(|p| p.when_scaled.as_ref())))
}

pub fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!("{}-{set}-{ordinal}", template.metadata.name.as_deref().unwrap_or_default())
}

fn owner_ref<K: Resource<DynamicType = ()>>(o: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: o.meta().name.clone().unwrap_or_default(),
        uid: o.meta().uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: Some(true),
    }
}

/// The claims `ordinal` needs, as they are created: the template's metadata and spec plus the
/// set's selector labels (upstream's), owned by the set when `whenDeleted` is Delete.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let selector = set.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    let (owned_by_set, _) = policy(set);
    templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(t, set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owned_by_set.then(|| vec![owner_ref(set)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// Points the pod's volumes named after claim templates at its claims.
pub fn attach(spec: &mut PodSpec, set: &StatefulSet, ordinal: i32) {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let ts = templates(set);
    if ts.is_empty() {
        return;
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for t in ts {
        let name = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != name);
        volumes.push(Volume {
            name,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(t, set_name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
}

/// Creates the claims `ordinal` lacks. A claim being deleted is an error: the pod must wait
/// for it to go rather than start on storage about to vanish.
pub async fn ensure(client: &kube::Client, set: &StatefulSet, ordinal: i32) -> Result<(), String> {
    let ns = set.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for claim in new_claims(set, ordinal) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(c)) if c.metadata.deletion_timestamp.is_some() => {
                return Err(format!("PersistentVolumeClaim {name} is being deleted"));
            }
            Ok(Some(_)) => {}
            Ok(None) => match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating PersistentVolumeClaim {name}: {e}")),
            },
            Err(e) => return Err(format!("reading PersistentVolumeClaim {name}: {e}")),
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, hands the claims of a pod a scale-down removes to that pod, so
/// the garbage collector deletes them once the pod is gone.
pub async fn release_to_pod(client: &kube::Client, set: &StatefulSet, pod: &Pod, ordinal: i32) -> Result<(), String> {
    if !policy(set).1 {
        return Ok(());
    }
    let ns = set.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let pod_ref = owner_ref(pod);
    for t in templates(set) {
        let name = claim_name(t, set_name, ordinal);
        let Some(claim) = api.get_opt(&name).await.map_err(|e| format!("reading claim {name}: {e}"))? else {
            continue;
        };
        let mut refs = claim.metadata.owner_references.clone().unwrap_or_default();
        if refs.iter().any(|r| r.uid == pod_ref.uid) {
            continue;
        }
        refs.push(pod_ref.clone());
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": claim.metadata.resource_version}});
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("handing claim {name} to its pod: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(policy: serde_json::Value) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "other", "emptyDir": {}}]}},
                "persistentVolumeClaimRetentionPolicy": policy,
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        }))
        .expect("set")
    }

    #[test]
    fn each_ordinal_gets_its_own_claim_with_the_selector_labels() {
        let s = set(serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        let claims = new_claims(&s, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-web-2"));
        let labels = claims[0].metadata.labels.clone().expect("labels");
        assert_eq!((labels["app"].as_str(), labels["tier"].as_str()), ("web", "db"));
        assert_eq!(claims[0].metadata.owner_references, None, "retained claims have no owner");
    }

    #[test]
    fn when_deleted_delete_makes_the_set_own_its_claims() {
        let s = set(serde_json::json!({"whenDeleted": "Delete", "whenScaled": "Retain"}));
        let refs = new_claims(&s, 0)[0].metadata.owner_references.clone().expect("owner");
        assert_eq!((refs[0].kind.as_str(), refs[0].uid.as_str()), ("StatefulSet", "s1"));
    }

    #[test]
    fn the_template_volume_of_a_claim_name_is_replaced_by_the_claim() {
        let s = set(serde_json::json!({}));
        let mut spec = s.spec.clone().and_then(|s| s.template.spec).expect("spec");
        attach(&mut spec, &s, 1);
        let volumes = spec.volumes.expect("volumes");
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["other", "data"]);
        let claim = volumes[1].persistent_volume_claim.as_ref().expect("claim");
        assert_eq!(claim.claim_name, "data-web-1");
    }
}
