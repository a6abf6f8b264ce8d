//! ClusterIP and NodePort allocation for Services.
//!
//! Every allocated address and port is its own storage key, written create-if-absent, so two
//! concurrent creates can never get the same one: the loser of the race sees the key exists and
//! tries another. Keys: `/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`;
//! each value names the owning Service and when it was allocated.
//!
//! Allocation happens before the Service is written and is undone if the write fails; release
//! happens after the Service is deleted or stops needing it. A crash in between can leave a key
//! without its Service or a Service without its key; [`Store::repair_allocations`] (run at start
//! and periodically) fixes both, leaving alone keys younger than a minute, which may belong to a
//! create in flight.

use std::net::Ipv4Addr;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use super::Store;
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::resources::ResourceInfo;
use crate::storage::StorageError;

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Random probes before falling back to scanning for a free value.
const RANDOM_TRIES: usize = 32;
/// Allocation keys younger than this may belong to a create in flight; repair leaves them.
const REPAIR_GRACE: Duration = Duration::from_secs(60);

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

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// The first usable address: the `kubernetes` Service's ClusterIP.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }
    /// Usable addresses, without the network and broadcast addresses.
    fn host(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1 + offset)
    }
    fn hosts(&self) -> u32 {
        self.size() - 2
    }
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let (lo, hi) = (u32::from(self.network) + 1, u32::from(self.network) + self.size() - 2);
        (lo..=hi).contains(&u32::from(ip))
    }
}

/// What the Service allocators hand out.
#[derive(Debug, Clone, Copy)]
pub struct Ranges {
    pub service_ips: Cidr,
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges { service_ips: "10.96.0.0/12".parse().expect("literal CIDR"), node_ports: (30000, 32767) }
    }
}

/// Keys created for one Service write, undone if the write does not happen.
#[derive(Debug, Default)]
pub struct Allocated {
    created: Vec<String>,
}

/// What a Service holds: its ClusterIP (if any) and node ports.
fn held(svc: &Value) -> (Option<String>, Vec<i64>) {
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(String::from);
    let mut ports: Vec<i64> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).collect())
        .unwrap_or_default();
    ports.extend(svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|p| *p > 0));
    (ip, ports)
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` gets a health-check node port,
/// on which kube-proxy tells load balancers whether the node has endpoints.
fn wants_health_check_port(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
}

fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc.pointer("/spec/type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"))
}

fn owner(svc: &Value) -> String {
    format!("{}/{}", meta::namespace(svc), meta::name(svc))
}

impl Store {
    /// Creates `key` for `svc`, or finds it already held by the same Service (a retried create).
    /// `Ok(true)` when this call created it.
    async fn claim(&self, key: &str, svc: &Value) -> Result<bool, StorageError> {
        let value = json!({"service": owner(svc), "uid": meta::uid(svc), "allocatedAt": meta::now()});
        match self.storage.create(key, serde_json::to_vec(&value).unwrap_or_default()).await {
            Ok(_) => Ok(true),
            Err(StorageError::AlreadyExists) => {
                let same = self
                    .storage
                    .get(key)
                    .await?
                    .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                    .is_some_and(|v| v.get("service").and_then(Value::as_str) == Some(owner(svc).as_str()));
                if same { Ok(false) } else { Err(StorageError::AlreadyExists) }
            }
            Err(e) => Err(e),
        }
    }

    async fn release_key(&self, key: &str) {
        if let Ok(Some(kv)) = self.storage.get(key).await {
            let _ = self.storage.delete(key, kv.mod_revision).await;
        }
    }

    /// Undoes the allocations of a Service write that did not happen.
    pub async fn rollback(&self, allocated: Allocated) {
        for key in allocated.created {
            self.release_key(&key).await;
        }
    }

    /// Gives `svc` the ClusterIP and node ports it needs and does not have under `old`.
    pub async fn allocate_service(
        &self,
        info: &ResourceInfo,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Allocated> {
        let mut allocated = Allocated::default();
        let result = self.allocate_inner(info, svc, old, &mut allocated).await;
        if result.is_err() {
            self.rollback(std::mem::take(&mut allocated)).await;
        }
        result.map(|_| allocated)
    }

    async fn allocate_inner(
        &self,
        info: &ResourceInfo,
        svc: &mut Value,
        old: Option<&Value>,
        allocated: &mut Allocated,
    ) -> ApiResult<()> {
        let ranges = self.ranges;
        let name = meta::name(svc).to_string();
        let invalid = |cause: Cause| ApiError::invalid(info, &name, vec![cause]);
        let storage_err = |e: StorageError| super::storage_error(info, &name, e);
        let (old_ip, old_ports) = old.map(held).unwrap_or_default();
        let external_name = svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
        if !external_name {
            let requested = svc.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
            if requested == "None" {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            } else if requested.is_empty() || Some(&requested) != old_ip.as_ref() {
                let ip = if requested.is_empty() {
                    self.allocate_random_ip(svc, allocated).await.map_err(|e| match e {
                        StorageError::AlreadyExists => ApiError::Internal(format!(
                            "failed to allocate a serviceIP: range {} is full",
                            ranges.service_ips
                        )),
                        e => storage_err(e),
                    })?
                } else {
                    self.allocate_requested_ip(svc, &requested, allocated).await.map_err(|e| match e {
                        Ok(cause) => invalid(cause),
                        Err(e) => storage_err(e),
                    })?
                };
                svc["spec"]["clusterIP"] = json!(ip.to_string());
                svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else if svc.pointer("/spec/clusterIPs").is_none() {
                svc["spec"]["clusterIPs"] = json!([requested]);
            }
            let spec = &mut svc["spec"];
            if spec.get("ipFamilies").is_none() {
                spec["ipFamilies"] = json!(["IPv4"]);
            }
            if spec.get("ipFamilyPolicy").is_none() {
                spec["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        if wants_node_ports(svc) {
            let count = svc.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..count {
                let requested = svc["spec"]["ports"][i].get("nodePort").and_then(Value::as_i64);
                let port = match requested {
                    Some(p) if old_ports.contains(&p) => continue,
                    Some(p) => {
                        let (lo, hi) = ranges.node_ports;
                        if !(i64::from(lo)..=i64::from(hi)).contains(&p) {
                            return Err(invalid(Cause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                p,
                                format!(
                                    "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                                ),
                            )));
                        }
                        let key = format!("{PORT_PREFIX}{p}");
                        match self.claim(&key, svc).await {
                            Ok(true) => allocated.created.push(key),
                            Ok(false) => {}
                            Err(StorageError::AlreadyExists) => {
                                return Err(invalid(Cause::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    p,
                                    "provided port is already allocated",
                                )));
                            }
                            Err(e) => return Err(storage_err(e)),
                        }
                        p
                    }
                    None => self.allocate_random_port(svc, allocated).await.map_err(|e| match e {
                        StorageError::AlreadyExists => {
                            ApiError::Internal("failed to allocate a nodePort: range is full".into())
                        }
                        e => storage_err(e),
                    })?,
                };
                svc["spec"]["ports"][i]["nodePort"] = json!(port);
            }
        }
        if wants_health_check_port(svc) {
            let field = "spec.healthCheckNodePort";
            match svc.pointer("/spec/healthCheckNodePort").and_then(Value::as_i64).filter(|p| *p > 0) {
                Some(p) if old_ports.contains(&p) => {}
                Some(p) => {
                    let (lo, hi) = ranges.node_ports;
                    if !(i64::from(lo)..=i64::from(hi)).contains(&p) {
                        return Err(invalid(Cause::invalid(
                            field,
                            p,
                            format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        )));
                    }
                    let key = format!("{PORT_PREFIX}{p}");
                    match self.claim(&key, svc).await {
                        Ok(true) => allocated.created.push(key),
                        Ok(false) => {}
                        Err(StorageError::AlreadyExists) => {
                            return Err(invalid(Cause::invalid(field, p, "provided port is already allocated")));
                        }
                        Err(e) => return Err(storage_err(e)),
                    }
                }
                None => {
                    let port = self.allocate_random_port(svc, allocated).await.map_err(|e| match e {
                        StorageError::AlreadyExists => {
                            ApiError::Internal("failed to allocate a healthCheckNodePort: range is full".into())
                        }
                        e => storage_err(e),
                    })?;
                    svc["spec"]["healthCheckNodePort"] = json!(port);
                }
            }
        } else if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("healthCheckNodePort");
        }
        Ok(())
    }

    /// A specific address: `Err(Ok(cause))` when it is not available, `Err(Err(_))` when storage failed.
    async fn allocate_requested_ip(
        &self,
        svc: &Value,
        requested: &str,
        allocated: &mut Allocated,
    ) -> Result<Ipv4Addr, Result<Cause, StorageError>> {
        let range = self.ranges.service_ips;
        let Ok(ip) = requested.parse::<Ipv4Addr>() else {
            return Err(Ok(Cause::invalid("spec.clusterIPs[0]", requested, "must be a valid IP address")));
        };
        if !range.contains(ip) {
            return Err(Ok(Cause::invalid(
                "spec.clusterIPs",
                requested,
                format!(
                    "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {range}"
                ),
            )));
        }
        let key = format!("{IP_PREFIX}{ip}");
        match self.claim(&key, svc).await {
            Ok(true) => {
                allocated.created.push(key);
                Ok(ip)
            }
            Ok(false) => Ok(ip),
            Err(StorageError::AlreadyExists) => Err(Ok(Cause::invalid(
                "spec.clusterIPs",
                requested,
                format!("failed to allocate IP {requested}: provided IP is already allocated"),
            ))),
            Err(e) => Err(Err(e)),
        }
    }

    async fn allocate_random_ip(&self, svc: &Value, allocated: &mut Allocated) -> Result<Ipv4Addr, StorageError> {
        let range = self.ranges.service_ips;
        let hosts = range.hosts();
        let start = rand::rng().random_range(0..hosts);
        // Probe random addresses first (cheap while the range is mostly free), then scan.
        for i in 0..hosts.min(RANDOM_TRIES as u32 + 1024) {
            let offset =
                if (i as usize) < RANDOM_TRIES { rand::rng().random_range(0..hosts) } else { (start + i) % hosts };
            let ip = range.host(offset);
            let key = format!("{IP_PREFIX}{ip}");
            match self.claim(&key, svc).await {
                Ok(created) => {
                    if created {
                        allocated.created.push(key);
                    }
                    return Ok(ip);
                }
                Err(StorageError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        let taken = self.storage.list(IP_PREFIX, None, 0, 0).await?;
        let taken: std::collections::HashSet<String> =
            taken.items.into_iter().map(|kv| kv.key.trim_start_matches(IP_PREFIX).to_string()).collect();
        for offset in 0..hosts {
            let ip = range.host(offset);
            if taken.contains(&ip.to_string()) {
                continue;
            }
            let key = format!("{IP_PREFIX}{ip}");
            if let Ok(true) = self.claim(&key, svc).await {
                allocated.created.push(key);
                return Ok(ip);
            }
        }
        Err(StorageError::AlreadyExists)
    }

    async fn allocate_random_port(&self, svc: &Value, allocated: &mut Allocated) -> Result<i64, StorageError> {
        let (lo, hi) = self.ranges.node_ports;
        let size = u32::from(hi - lo) + 1;
        let start = rand::rng().random_range(0..size);
        for i in 0..size {
            let port = i64::from(lo) + i64::from((start + i) % size);
            let key = format!("{PORT_PREFIX}{port}");
            match self.claim(&key, svc).await {
                Ok(true) => {
                    allocated.created.push(key);
                    return Ok(port);
                }
                Ok(false) | Err(StorageError::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::AlreadyExists)
    }

    /// Frees what `old` held and `new` no longer does (`new` is `None` after a delete).
    pub async fn release_service(&self, old: &Value, new: Option<&Value>) {
        let (old_ip, old_ports) = held(old);
        let (new_ip, new_ports) = new.map(held).unwrap_or_default();
        if let Some(ip) = old_ip
            && new_ip.as_ref() != Some(&ip)
        {
            self.release_key(&format!("{IP_PREFIX}{ip}")).await;
        }
        for p in old_ports {
            if !new_ports.contains(&p) || new.is_some_and(|n| !wants_node_ports(n)) {
                self.release_key(&format!("{PORT_PREFIX}{p}")).await;
            }
        }
    }

    /// Makes the allocation keys match the Services: re-creates missing keys and removes keys
    /// (older than a minute) whose Service is gone or no longer holds them.
    pub async fn repair_allocations(&self) -> ApiResult<()> {
        let Some(info) = self.registry.by_plural("", "services").cloned() else { return Ok(()) };
        let services = self.list(&info, "", &Default::default()).await?;
        let mut holds = std::collections::HashMap::new();
        for item in services.items {
            let svc = item.value()?;
            let (ip, ports) = held(&svc);
            if let Some(ip) = ip {
                holds.insert(format!("{IP_PREFIX}{ip}"), svc.clone());
            }
            if wants_node_ports(&svc) {
                for p in ports {
                    holds.insert(format!("{PORT_PREFIX}{p}"), svc.clone());
                }
            }
        }
        for (key, svc) in &holds {
            let _ = self.claim(key, svc).await;
        }
        let now = jiff::Timestamp::now();
        for prefix in [IP_PREFIX, PORT_PREFIX] {
            let keys = self.storage.list(prefix, None, 0, 0).await.map_err(|e| super::storage_error(&info, "", e))?;
            for kv in keys.items {
                if holds.contains_key(&kv.key) {
                    continue;
                }
                let value: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                let age = value
                    .get("allocatedAt")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_time)
                    .map_or(i64::MAX, |t| now.as_second() - t.as_second());
                if age >= REPAIR_GRACE.as_secs() as i64 {
                    tracing::info!(key = %kv.key, "Released an allocation no Service holds");
                    let _ = self.storage.delete(&kv.key, kv.mod_revision).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_bound_their_hosts() {
        let c: Cidr = "10.96.0.0/12".parse().expect("cidr");
        assert_eq!(c.first_host(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 111, 255, 255)), "broadcast");
        assert!(!c.contains(Ipv4Addr::new(10, 96, 0, 0)), "network");
        assert!(!c.contains(Ipv4Addr::new(10, 112, 0, 1)));
        let c: Cidr = "10.100.7.9/16".parse().expect("cidr");
        assert_eq!(c.network, Ipv4Addr::new(10, 100, 0, 0));
        assert!("10.96.0.0".parse::<Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/12".parse::<Cidr>().is_err());
    }
}
