//! The API's resources as discovery lists them, for the controllers that handle every kind
//! (the garbage collector watches everything that can have owners; the namespace controller
//! empties every namespaced kind).

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

#[derive(Clone, Debug)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// Every top-level resource that can be listed, watched and deleted (subresources excluded).
pub async fn deletable(client: &kube::Client) -> Result<Vec<Resource>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            if usable(&caps) {
                out.push(Resource { namespaced: caps.scope == Scope::Namespaced, api });
            }
        }
    }
    Ok(out)
}

fn usable(caps: &ApiCapabilities) -> bool {
    [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v))
}

/// The resource serving `apiVersion` + `kind`.
pub fn find<'a>(resources: &'a [Resource], api_version: &str, kind: &str) -> Option<&'a Resource> {
    resources.iter().find(|r| r.api.api_version == api_version && r.api.kind == kind)
}
