//! What exists from the first start: the namespaces `default`, `kube-system`, `kube-public` and
//! `kube-node-lease`, and the `kubernetes` Service (the first address of the service range) with
//! Endpoints and an EndpointSlice pointing at this apiserver, rewritten when its address or port
//! changed since the last start. Retried until storage answers, so the apiserver can start
//! before etcd; `/readyz` reports not ready until it is done.
//!
//! One apiserver owns the endpoints; several apiservers sharing an etcd would overwrite each
//! other's address (upstream reconciles them through leases; not built yet).

use std::net::{IpAddr, Ipv4Addr};
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

/// An IPv4 CIDR such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (expected a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 30).ok_or_else(|| format!("{s:?}: prefix must be 0..=30"))?;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Ok(Cidr { network: Ipv4Addr::from(u32::from(ip) & mask), prefix })
    }
}

impl Cidr {
    /// The first usable address: the `kubernetes` Service's ClusterIP.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

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
    let opts = WriteOptions { field_validation: FieldValidation::Strict, dry_run: false };
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
        let opts = WriteOptions { field_validation: FieldValidation::Strict, dry_run: false };
        let body = |v| Decoded { value: v, duplicates: Vec::new() };
        let ns = reg.by_plural("", "namespaces").ok_or_else(|| ApiError::Internal("namespaces not served".into()))?;
        for name in SYSTEM_NAMESPACES {
            created_or_exists(store.create(ns, "", body(json!({"metadata": {"name": name}})), &opts).await)?;
        }
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
                    info!("Bootstrapped system namespaces and the kubernetes Service");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_give_the_first_host() {
        let c: Cidr = "10.96.0.0/12".parse().expect("cidr");
        assert_eq!(c.first_host(), Ipv4Addr::new(10, 96, 0, 1));
        let c: Cidr = "10.100.7.9/16".parse().expect("cidr");
        assert_eq!(c.network, Ipv4Addr::new(10, 100, 0, 0));
        assert!("10.96.0.0".parse::<Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/12".parse::<Cidr>().is_err());
    }
}
