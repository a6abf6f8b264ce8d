//! Pure: which pods back a Service and how, for both API shapes:
//!
//! - core/v1 Endpoints: ready pods in `addresses`, unready ones in `notReadyAddresses`, grouped
//!   into subsets by the ports they resolve to; terminating pods are left out (unless the
//!   Service publishes not-ready addresses);
//! - discovery.k8s.io/v1 EndpointSlices: every pod with an IP, terminating ones included, with
//!   ready/serving/terminating conditions, grouped by resolved ports, at most `max` per slice.
//!
//! A named targetPort resolves against each pod's container ports, so pods of one Service may
//! land in different groups.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// Whether the Service's selector picks the pod (a Service without a selector picks nothing:
/// its endpoints are managed by hand).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The port a service port reaches on `pod`: a number as is, a name through the pod's
/// container ports (same protocol), nothing if the pod has no such port.
pub fn resolve_port(target: Option<&IntOrString>, port: i32, protocol: &str, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(i) => Some(i),
            Err(_) => pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(s.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            }),
        },
    }
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses) == Some(true)
}

fn pod_ip(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty())
}

/// The pod's hostname in the Service's DNS (set when its subdomain is the Service).
fn hostname(svc: &Service, p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    (spec.subdomain.is_some() && spec.subdomain == svc.metadata.name).then(|| spec.hostname.clone()).flatten()
}

fn target_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

/// (name, port, protocol, appProtocol) per service port for this pod, or `None` when a port
/// does not resolve (the pod is left out of that port's group).
fn ports_for(svc: &Service, p: &Pod) -> Vec<(Option<String>, i32, String, Option<String>)> {
    let mut out = Vec::new();
    for sp in svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten() {
        let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
        if let Some(port) = resolve_port(sp.target_port.as_ref(), sp.port, &protocol, p) {
            out.push((sp.name.clone(), port, protocol, sp.app_protocol.clone()));
        }
    }
    out
}

fn eligible(p: &Pod) -> bool {
    pod_ip(p).is_some() && !matches!(pods::phase(p), "Succeeded" | "Failed")
}

/// Ports, ready addresses, not-ready addresses.
type Subset = (Vec<CorePort>, Vec<EndpointAddress>, Vec<EndpointAddress>);

pub fn subsets(svc: &Service, all: &[&Pod]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    let headless_without_ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(|p| p.is_empty());
    for p in all.iter().copied().filter(|p| selects(svc, p) && eligible(p)) {
        if pods::is_terminating(p) && !publish_not_ready(svc) {
            continue;
        }
        let ports = ports_for(svc, p);
        if ports.is_empty() && !headless_without_ports {
            continue;
        }
        let core: Vec<CorePort> = ports
            .iter()
            .map(|(name, port, protocol, app)| CorePort {
                name: name.clone(),
                port: *port,
                protocol: Some(protocol.clone()),
                app_protocol: app.clone(),
            })
            .collect();
        let key = serde_json::to_string(&core).unwrap_or_default();
        let address = EndpointAddress {
            ip: pod_ip(p).unwrap_or_default().to_string(),
            hostname: hostname(svc, p),
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(p)),
        };
        let g = groups.entry(key).or_insert_with(|| (core, vec![], vec![]));
        if pods::is_ready(p) || publish_not_ready(svc) { g.1.push(address) } else { g.2.push(address) }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// One group of a Service's EndpointSlices: the ports and up to `max` endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceContent {
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

pub fn slices(svc: &Service, all: &[&Pod], max: usize) -> Vec<SliceContent> {
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    let has_ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_some_and(|p| !p.is_empty());
    for p in all.iter().copied().filter(|p| selects(svc, p) && eligible(p)) {
        let resolved = ports_for(svc, p);
        if resolved.is_empty() && has_ports {
            continue;
        }
        let ports: Vec<EndpointPort> = resolved
            .into_iter()
            .map(|(name, port, protocol, app)| EndpointPort {
                name,
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: app,
            })
            .collect();
        let terminating = pods::is_terminating(p);
        let ready = pods::is_ready(p);
        let endpoint = Endpoint {
            addresses: vec![pod_ip(p).unwrap_or_default().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready(svc) || (ready && !terminating)),
                serving: Some(publish_not_ready(svc) || ready),
                terminating: Some(terminating),
            }),
            hostname: hostname(svc, p),
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(p)),
            ..Default::default()
        };
        let key = serde_json::to_string(&ports).unwrap_or_default();
        groups.entry(key).or_insert_with(|| (ports, vec![])).1.push(endpoint);
    }
    let mut out = Vec::new();
    for (_, (ports, mut endpoints)) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        for chunk in endpoints.chunks(max.max(1)) {
            out.push(SliceContent { ports: ports.clone(), endpoints: chunk.to_vec() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        let mut s = serde_json::json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        if let (Some(spec), Some(extra)) = (s["spec"].as_object_mut(), v.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(s).expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Pod {
        let mut p = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        if let (Some(m), Some(extra)) = (p["metadata"].as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::from_value(p).expect("pod")
    }

    #[test]
    fn endpoints_split_ready_and_unready_and_leave_terminating_pods_out() {
        let s = svc(serde_json::json!({}));
        let a = pod("a", "10.0.0.2", true, serde_json::json!({}));
        let b = pod("b", "10.0.0.3", false, serde_json::json!({}));
        let gone = pod("c", "10.0.0.4", true, serde_json::json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}));
        let other = pod("d", "10.0.0.5", true, serde_json::json!({"labels": {"app": "db"}}));
        let subsets = subsets(&s, &[&a, &b, &gone, &other]);
        assert_eq!(subsets.len(), 1);
        let ready: Vec<&str> = subsets[0].addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
        let unready: Vec<&str> = subsets[0].not_ready_addresses.iter().flatten().map(|a| a.ip.as_str()).collect();
        assert_eq!((ready, unready), (vec!["10.0.0.2"], vec!["10.0.0.3"]));
        assert_eq!(subsets[0].ports.as_ref().expect("ports")[0].port, 8080, "the named port resolved");
    }

    #[test]
    fn slices_carry_conditions_and_split_at_the_maximum() {
        let s = svc(serde_json::json!({}));
        let a = pod("a", "10.0.0.2", true, serde_json::json!({}));
        let t = pod("t", "10.0.0.9", true, serde_json::json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}));
        let got = slices(&s, &[&a, &t], 100);
        assert_eq!(got.len(), 1);
        let c = |i: usize| got[0].endpoints[i].conditions.clone().expect("conditions");
        assert_eq!((c(0).ready, c(0).serving, c(0).terminating), (Some(true), Some(true), Some(false)));
        assert_eq!((c(1).ready, c(1).serving, c(1).terminating), (Some(false), Some(true), Some(true)));
        let many: Vec<Pod> =
            (0..5).map(|i| pod(&format!("p{i}"), &format!("10.0.1.{i}"), true, serde_json::json!({}))).collect();
        let refs: Vec<&Pod> = many.iter().collect();
        let got = slices(&s, &refs, 2);
        assert_eq!(got.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(), [2, 2, 1]);
    }

    #[test]
    fn a_pod_without_the_named_port_is_left_out_and_hostnames_need_the_subdomain() {
        let s = svc(serde_json::json!({}));
        let mut odd = pod("odd", "10.0.0.7", true, serde_json::json!({}));
        odd.spec.as_mut().expect("spec").containers[0].ports = None;
        assert!(slices(&s, &[&odd], 100).is_empty());
        let mut named = pod("n", "10.0.0.8", true, serde_json::json!({}));
        let spec = named.spec.as_mut().expect("spec");
        spec.hostname = Some("n-0".into());
        spec.subdomain = Some("web".into());
        assert_eq!(slices(&s, &[&named], 100)[0].endpoints[0].hostname.as_deref(), Some("n-0"));
        assert_eq!(subsets(&s, &[&named])[0].addresses.as_ref().expect("a")[0].hostname.as_deref(), Some("n-0"));
    }
}
