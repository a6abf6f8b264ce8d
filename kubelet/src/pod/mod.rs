//! Running pods: the manager (watch -> one worker per pod), `compute_pod_actions` (plan), the
//! worker (act), status, env, volumes, probes.

pub mod actions;
pub mod admission;
pub mod backoff;
pub mod env;
pub mod manager;
pub mod probes;
pub mod source;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};

/// Pod status and the final delete through the apiserver.
pub struct ApiPods {
    pub client: kube::Client,
}

#[async_trait::async_trait]
impl worker::PodApi for ApiPods {
    async fn update_status(&self, pod: &Pod, status: &PodStatus) -> Result<(), String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        // The UID in the patch makes it fail on a recreated pod of the same name.
        let patch = serde_json::json!({"metadata": {"uid": pod.metadata.uid}, "status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn delete_final(&self, pod: &Pod) -> Result<(), String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // The UID precondition failed: a new pod of the same name; ours is gone.
                tracing::info!(pod = %name, message = %s.message, "final delete: conflict");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
