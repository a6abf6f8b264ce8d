//! Controller references: which controller owns an object (the ownerReference with
//! `controller: true`), and claiming as upstream's ControllerRefManager does: an owner keeps
//! what it owns and still selects, adopts orphans it selects, and releases what it owns but no
//! longer selects. An owner being deleted adopts and releases nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};

pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// The reference a controller puts on what it creates.
pub fn controller_reference<K: kube::Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let m = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Claim {
    /// Ours and selected.
    Own,
    /// An orphan we select: take it.
    Adopt,
    /// Ours but no longer selected: let it go.
    Release,
    /// Someone else's, or not ours to touch.
    Ignore,
}

pub fn claim(owner: &ObjectMeta, selected: bool, object: &ObjectMeta) -> Claim {
    let owner_deleting = owner.deletion_timestamp.is_some();
    match controller_of(object) {
        Some(r) if Some(&r.uid) != owner.uid.as_ref() => Claim::Ignore,
        Some(_) if selected => Claim::Own,
        Some(_) if owner_deleting => Claim::Own,
        Some(_) => Claim::Release,
        None if selected && !owner_deleting && object.deletion_timestamp.is_none() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// Adds the owner's controller reference to an orphan. The resourceVersion makes it a
/// compare-and-swap: if the object changed meanwhile the adoption fails and the sync retries.
pub async fn adopt<K, O>(api: &Api<K>, owner: &O, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: kube::Resource<DynamicType = ()>,
{
    let m = object.meta();
    let mut refs = m.owner_references.clone().unwrap_or_default();
    refs.push(controller_reference(owner));
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
    api.patch(m.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// Removes the owner's reference from an object it no longer selects.
pub async fn release<K>(api: &Api<K>, owner_uid: &str, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let m = object.meta();
    let refs: Vec<&OwnerReference> = m.owner_references.iter().flatten().filter(|r| r.uid != owner_uid).collect();
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
    match api.patch(m.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Gone already: nothing to release.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Claims each of `candidates` for `owner` (keep, adopt, release, as [`claim`] decides with
/// `selected`) and returns what the owner owns afterwards. An orphan gone meanwhile is skipped;
/// any other failure (a conflict: it changed) fails the sync, which retries.
pub async fn claim_all<K, O>(
    api: &Api<K>,
    owner: &O,
    candidates: Vec<std::sync::Arc<K>>,
    selected: impl Fn(&K) -> bool,
) -> Result<Vec<std::sync::Arc<K>>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: kube::Resource<DynamicType = ()>,
{
    let meta = owner.meta();
    let mut owned = Vec::new();
    for object in candidates {
        match claim(meta, selected(&object), object.meta()) {
            Claim::Own => owned.push(object),
            Claim::Adopt => match adopt(api, owner, object.as_ref()).await {
                Ok(adopted) => owned.push(std::sync::Arc::new(adopted)),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            },
            Claim::Release => release(api, meta.uid.as_deref().unwrap_or_default(), object.as_ref()).await?,
            Claim::Ignore => {}
        }
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).expect("meta")
    }

    #[test]
    fn owners_keep_adopt_and_release_as_upstream() {
        let owner = meta(serde_json::json!({"name": "rs", "uid": "u1"}));
        let deleting =
            meta(serde_json::json!({"name": "rs", "uid": "u1", "deletionTimestamp": "2026-01-01T00:00:00Z"}));
        let ours = meta(serde_json::json!({"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]}));
        let theirs = meta(serde_json::json!({"name": "p", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "u2", "controller": true}]}));
        let orphan = meta(serde_json::json!({"name": "p"}));
        let gc_only = meta(serde_json::json!({"name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u3"}]}));
        assert_eq!(claim(&owner, true, &ours), Claim::Own);
        assert_eq!(claim(&owner, false, &ours), Claim::Release);
        assert_eq!(claim(&deleting, false, &ours), Claim::Own, "a deleting owner releases nothing");
        assert_eq!(claim(&owner, true, &theirs), Claim::Ignore);
        assert_eq!(claim(&owner, true, &orphan), Claim::Adopt);
        assert_eq!(claim(&owner, true, &gc_only), Claim::Adopt, "a non-controller reference is no owner");
        assert_eq!(claim(&deleting, true, &orphan), Claim::Ignore, "a deleting owner adopts nothing");
        assert_eq!(claim(&owner, false, &orphan), Claim::Ignore);
    }
}
