//! The namespace controller: a namespace being deleted is emptied of every namespaced kind
//! discovery lists, then its `kubernetes` finalizer is removed through `/finalize` and the
//! apiserver deletes it. While content remains, the namespace's conditions say what is left,
//! as upstream's (`NamespaceContentRemaining`, `NamespaceDeletionContentFailure`, ...).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PartialObjectMeta};

use crate::informer::Informer;
use crate::resources::{self, Resource};
use crate::workqueue::WorkQueue;

pub struct NamespaceController {
    client: kube::Client,
    namespaces: Informer<Namespace>,
    pub queue: Arc<WorkQueue>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// Pure: the conditions a namespace being emptied shows, from what is left by resource.
pub fn conditions(remaining: &BTreeMap<String, usize>, failures: &[String], now: &Time) -> Vec<NamespaceCondition> {
    let cond = |type_: &str, ok: bool, reason: &str, message: String| NamespaceCondition {
        type_: type_.into(),
        status: if ok { "False" } else { "True" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    };
    let left: Vec<String> = remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
    vec![
        cond(
            "NamespaceDeletionDiscoveryFailure",
            true,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            true,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if failures.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeletionFailed",
                format!("Failed to delete all resource types, {} remaining: {}", failures.len(), failures.join(", ")),
            )
        },
        if remaining.is_empty() {
            cond("NamespaceContentRemaining", true, "ContentRemoved", "All content successfully removed".into())
        } else {
            cond(
                "NamespaceContentRemaining",
                false,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", left.join(", ")),
            )
        },
        cond(
            "NamespaceFinalizersRemaining",
            true,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        ),
    ]
}

impl NamespaceController {
    pub fn new(client: kube::Client, namespaces: &Informer<Namespace>) -> Arc<NamespaceController> {
        let c = Arc::new(NamespaceController {
            client,
            namespaces: namespaces.clone(),
            queue: Arc::new(WorkQueue::default()),
        });
        let w: Weak<NamespaceController> = Arc::downgrade(&c);
        namespaces.on_change(move |_, new| {
            if let (Some(c), Some(ns)) = (w.upgrade(), new)
                && ns.metadata.deletion_timestamp.is_some()
            {
                c.queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
        c
    }

    pub async fn sync(&self, name: &str) -> Result<Option<Duration>, SyncError> {
        let Some(ns) = self.namespaces.get("", name) else { return Ok(None) };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(None);
        }
        let finalizers: Vec<String> = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if !finalizers.iter().any(|f| f == "kubernetes") {
            return Ok(None);
        }
        // Discovery each time: custom resources come and go.
        let kinds: Vec<Resource> =
            resources::deletable(&self.client).await?.into_iter().filter(|r| r.namespaced).collect();
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        for r in &kinds {
            let api: Api<PartialObjectMeta<DynamicObject>> = Api::namespaced_with(self.client.clone(), name, &r.api);
            let listed = match api.list_metadata(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
                Err(e) => return Err(e.into()),
            };
            if listed.is_empty() {
                continue;
            }
            let plural =
                if r.api.group.is_empty() { r.api.plural.clone() } else { format!("{}.{}", r.api.plural, r.api.group) };
            remaining.insert(plural.clone(), listed.len());
            let all: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, &r.api);
            let dp = DeleteParams::background();
            if let Err(e) = all.delete_collection(&dp, &ListParams::default()).await {
                tracing::warn!(namespace = %name, resource = %plural, error = %e, "Could not delete the namespace's content");
                failures.push(plural);
            }
        }
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        if remaining.is_empty() {
            let mut body = (*ns).clone();
            if let Some(spec) = body.spec.as_mut() {
                spec.finalizers = Some(finalizers.into_iter().filter(|f| f != "kubernetes").collect());
            }
            let req = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default())
                .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
            match self.client.request::<Namespace>(req).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(namespace = %name, "Deleted the namespace's content and finalized it");
            return Ok(None);
        }
        let now = Time(jiff::Timestamp::now());
        let mut body = (*ns).clone();
        let status = body.status.get_or_insert_default();
        let old = status.conditions.clone().unwrap_or_default();
        let mut new = conditions(&remaining, &failures, &now);
        for c in new.iter_mut() {
            if let Some(o) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
        if old != new {
            status.conditions = Some(new);
            match ns_api.replace_status(name, &Default::default(), &body).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Pods with grace periods take a while: look again soon.
        Ok(Some(Duration::from_secs(2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_is_named_in_the_conditions() {
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let left = BTreeMap::from([("pods".to_string(), 2usize)]);
        let cs = conditions(&left, &[], &now);
        let remaining = cs.iter().find(|c| c.type_ == "NamespaceContentRemaining").expect("condition");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.message.as_deref(), Some("Some resources are remaining: pods has 2 resource instances"));
        let done = conditions(&BTreeMap::new(), &[], &now);
        assert!(done.iter().all(|c| c.status == "False"));
    }
}
