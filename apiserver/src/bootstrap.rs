//! What exists from the first start: the namespaces `default`, `kube-system`, `kube-public` and
//! `kube-node-lease`, the built-in PriorityClasses (`system-node-critical`,
//! `system-cluster-critical`; created when absent, never changed), and the `kubernetes` Service (the first address of the service range) with
//! Endpoints and an EndpointSlice pointing at this apiserver, rewritten when its address or port
//! changed since the last start. Retried until storage answers, so the apiserver can start
//! before etcd; `/readyz` reports not ready until it is done.
//!
//! One apiserver owns the endpoints; several apiservers sharing an etcd would overwrite each
//! other's address (upstream reconciles them through leases; not built yet).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::codec::{Decoded, FieldValidation};
use crate::error::{ApiError, ApiResult};
use crate::handler::State;
use crate::rest::WriteOptions;

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub use crate::rest::allocator::Cidr;

pub struct Bootstrap {
    pub service_range: Cidr,
    pub advertise_address: IpAddr,
    pub secure_port: u16,
}

fn created_or_exists(r: ApiResult<crate::rest::Written>) -> ApiResult<()> {
    match r {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `obj`, or rewrites the existing object's `fields` when they differ from `obj`'s.
async fn ensure(
    state: &State,
    plural: &str,
    group: &str,
    ns: &str,
    obj: serde_json::Value,
    fields: &[&str],
) -> ApiResult<()> {
    let info =
        state.registry.by_plural(group, plural).ok_or_else(|| ApiError::Internal(format!("{plural} not served")))?;
    let opts = WriteOptions {
        field_validation: FieldValidation::Strict,
        field_manager: Some("kube-apiserver".into()),
        ..Default::default()
    };
    let decoded = |v| Decoded { value: v, duplicates: Vec::new() };
    match state.store.create(info, ns, decoded(obj.clone()), &opts).await {
        Ok(_) => return Ok(()),
        Err(ApiError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let name = crate::meta::name(&obj).to_string();
    let mut current = state.store.get_value(info, ns, &name).await?;
    if fields.iter().all(|f| current.get(*f) == obj.get(*f)) {
        return Ok(());
    }
    for f in fields {
        match obj.get(*f) {
            Some(v) => current[*f] = v.clone(),
            None => {
                if let Some(m) = current.as_object_mut() {
                    m.remove(*f);
                }
            }
        }
    }
    state.store.update(info, ns, &name, None, decoded(current), &opts).await.map(|_| ())
}

impl Bootstrap {
    async fn once(&self, state: &State) -> ApiResult<()> {
        let reg = &state.registry;
        let store = &state.store;
        let opts = WriteOptions {
            field_validation: FieldValidation::Strict,
            field_manager: Some("kube-apiserver".into()),
            ..Default::default()
        };
        let body = |v| Decoded { value: v, duplicates: Vec::new() };
        let ns = reg.by_plural("", "namespaces").ok_or_else(|| ApiError::Internal("namespaces not served".into()))?;
        for name in SYSTEM_NAMESPACES {
            created_or_exists(store.create(ns, "", body(json!({"metadata": {"name": name}})), &opts).await)?;
        }
        store.create_system_priority_classes().await?;
        let svc = reg.by_plural("", "services").ok_or_else(|| ApiError::Internal("services not served".into()))?;
        let service = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.service_range.first_host().to_string(),
                "clusterIPs": [self.service_range.first_host().to_string()],
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.secure_port}],
            },
        });
        created_or_exists(store.create(svc, "default", body(service), &opts).await)?;
        let address = self.advertise_address.to_string();
        let endpoints = json!({
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{
                "addresses": [{"ip": address}],
                "ports": [{"name": "https", "port": self.secure_port, "protocol": "TCP"}],
            }],
        });
        ensure(state, "endpoints", "", "default", endpoints, &["subsets"]).await?;
        let address_type = if self.advertise_address.is_ipv6() { "IPv6" } else { "IPv4" };
        let slice = json!({
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": address_type,
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": self.secure_port, "protocol": "TCP"}],
        });
        ensure(state, "endpointslices", "discovery.k8s.io", "default", slice, &["endpoints", "ports"]).await?;
        Ok(())
    }

    /// Retries until done or shut down.
    pub async fn run(self, state: Arc<State>, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.once(&state).await {
                Ok(()) => {
                    state.bootstrapped.store(true, Ordering::Relaxed);
                    info!("Bootstrapped system namespaces, PriorityClasses and the kubernetes Service");
                    return;
                }
                Err(e) => warn!(error = %e, "Bootstrap not done yet, retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}
