//! What ties a Deployment to its ReplicaSets: the `pod-template-hash` that names each template,
//! the revision annotations `kubectl rollout history|undo` read, and the replica annotations
//! proportional scaling reads.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The template's `pod-template-hash`, with the collision count mixed in.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    crate::hash::template_hash(template, collision_count)
}

fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(|l| l.as_object_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut())
        {
            m.remove("labels");
        }
    }
    v
}

/// Whether two templates are the same apart from the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

pub fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn max_revision(sets: &[&ReplicaSet]) -> i64 {
    sets.iter().map(|rs| revision_of(rs)).max().unwrap_or(0)
}

/// The annotations a ReplicaSet of `d` carries: the Deployment's own (less the ones kept per
/// set), its revision (recording the revisions it had before when it is rolled back to), and,
/// for a set being created, the replica counts (desired, max) proportional scaling reads; an
/// existing set's counts change only when it is scaled.
pub fn replica_set_annotations(
    d: &Deployment,
    rs: &ReplicaSet,
    revision: i64,
    replicas: Option<(i32, i32)>,
) -> BTreeMap<String, String> {
    let mut a = rs.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            a.insert(k.clone(), v.clone());
        }
    }
    let old = revision_of(rs);
    if old != 0 && old < revision {
        let mut history: Vec<String> =
            a.get(REVISION_HISTORY).map(|h| h.split(',').map(str::to_string).collect()).unwrap_or_default();
        history.push(old.to_string());
        a.insert(REVISION_HISTORY.into(), history.join(","));
    }
    if old < revision {
        a.insert(REVISION.into(), revision.to_string());
    }
    if let Some((desired, max)) = replicas {
        a.insert(DESIRED_REPLICAS.into(), desired.to_string());
        a.insert(MAX_REPLICAS.into(), max.to_string());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels = serde_json::json!({"app": "web"});
        if let Some(h) = hash {
            labels[HASH_LABEL] = serde_json::json!(h);
        }
        serde_json::from_value(serde_json::json!({"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .expect("template")
    }

    #[test]
    fn the_hash_is_stable_short_and_changes_with_the_template_and_collisions() {
        let a = pod_template_hash(&template("nginx:1", None), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1", None), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2", None), None));
        assert_ne!(a, pod_template_hash(&template("nginx:1", None), Some(1)));
        assert!(a.len() <= 10 && a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)), "{a}");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        assert!(equal_ignore_hash(&template("nginx:1", Some("abc")), &template("nginx:1", None)));
        assert!(!equal_ignore_hash(&template("nginx:1", Some("abc")), &template("nginx:2", Some("abc"))));
    }

    #[test]
    fn a_set_rolled_back_to_records_its_earlier_revisions() {
        let d: Deployment = serde_json::from_value(serde_json::json!({"metadata": {"name": "d",
            "annotations": {"kubernetes.io/change-cause": "v1", REVISION: "9",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}))
        .expect("d");
        let rs: ReplicaSet =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "r", "annotations": {REVISION: "2"}}}))
                .expect("rs");
        let a = replica_set_annotations(&d, &rs, 5, Some((3, 4)));
        assert_eq!(a[REVISION], "5");
        assert_eq!(a[REVISION_HISTORY], "2");
        assert_eq!(a["kubernetes.io/change-cause"], "v1");
        assert_eq!((a[DESIRED_REPLICAS].as_str(), a[MAX_REPLICAS].as_str()), ("3", "4"));
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(!replica_set_annotations(&d, &rs, 5, None).contains_key(DESIRED_REPLICAS), "only set when created");
    }
}
