//! Pod admission: before a new pod gets a worker, the kubelet checks it against the pods it
//! already runs, as upstream's admit handlers do. A pod the node cannot run is rejected: it gets
//! phase Failed with the check's reason and never starts, so its controller (a StatefulSet, say)
//! can delete it and make another.
//!
//! The one check so far is host ports (upstream's `NodePorts` predicate): the scheduler avoids
//! clashes, but a pod created with `spec.nodeName` set skips the scheduler.

use k8s_openapi::api::core::v1::Pod;

/// A host port a pod's containers publish: (protocol, host IP, port); an empty host IP is
/// every address, as `0.0.0.0`.
pub type HostPort = (String, String, i32);

/// Why a pod was not admitted: the `reason` and `message` written into its status and event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

/// The host ports `pod` asks for: its containers' and its restartable (sidecar) init
/// containers', which run alongside them.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    super::spec::long_running_containers(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p.host_ip.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
            Some((protocol, ip, port))
        })
        .collect()
}

/// Two host ports clash on one protocol and port when their addresses overlap (equal, or
/// either is every address).
fn clash(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

/// Whether a pod asking for `wanted` fits next to pods holding `held`.
pub fn admit<'a>(wanted: &[HostPort], mut held: impl Iterator<Item = &'a HostPort>) -> Result<(), Rejection> {
    if held.any(|h| wanted.iter().any(|w| clash(w, h))) {
        return Err(Rejection {
            reason: "NodePorts".into(),
            message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into(),
        });
    }
    Ok(())
}

/// Whether admission still has to look at `pod`: a pod the node started before (its phase is
/// past Pending), a finished one, or one being deleted was admitted or needs no room.
pub fn needs_admission(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    phase == "Pending" && pod.metadata.deletion_timestamp.is_none()
}

/// Whether `pod` is finished, so that its host ports are free again.
pub fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn with_ports(ports: serde_json::Value) -> Pod {
        pod(serde_json::json!({"containers": [{"name": "c", "ports": ports}]}))
    }

    fn hp(protocol: &str, ip: &str, port: i32) -> HostPort {
        (protocol.into(), ip.into(), port)
    }

    #[test]
    fn host_ports_come_from_containers_and_sidecars_with_defaults() {
        let p = pod(serde_json::json!({
            "initContainers": [
                {"name": "once", "ports": [{"containerPort": 1, "hostPort": 7001}]},
                {"name": "sidecar", "restartPolicy": "Always", "ports": [{"containerPort": 2, "hostPort": 7002}]}],
            "containers": [{"name": "c", "ports": [
                {"containerPort": 80, "hostPort": 8080},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 81}]}]}));
        assert_eq!(
            host_ports(&p),
            [hp("TCP", "0.0.0.0", 8080), hp("UDP", "127.0.0.1", 5353), hp("TCP", "0.0.0.0", 7002)]
        );
        assert!(host_ports(&pod(serde_json::json!({"containers": [{"name": "c"}]}))).is_empty());
    }

    #[test]
    fn the_same_port_and_protocol_on_overlapping_addresses_is_rejected() {
        let held = [hp("TCP", "0.0.0.0", 8080)];
        let rejected =
            admit(&host_ports(&with_ports(serde_json::json!([{"containerPort": 80, "hostPort": 8080}]))), held.iter())
                .expect_err("same port on every address");
        assert_eq!(rejected.reason, "NodePorts");
        assert!(rejected.message.contains("didn't have free ports"), "{}", rejected.message);
        let on_one_ip = [hp("TCP", "10.0.0.1", 8080)];
        assert!(admit(&[hp("TCP", "10.0.0.1", 8080)], on_one_ip.iter()).is_err(), "same address");
        assert!(admit(&[hp("TCP", "0.0.0.0", 8080)], on_one_ip.iter()).is_err(), "every address covers it");
    }

    #[test]
    fn another_port_protocol_or_address_fits() {
        let held = [hp("TCP", "10.0.0.1", 8080)];
        assert!(admit(&[hp("TCP", "10.0.0.1", 8081)], held.iter()).is_ok());
        assert!(admit(&[hp("UDP", "10.0.0.1", 8080)], held.iter()).is_ok());
        assert!(admit(&[hp("TCP", "127.0.0.1", 8080)], held.iter()).is_ok());
        assert!(admit(&[], held.iter()).is_ok());
        assert!(admit(&[hp("TCP", "0.0.0.0", 8080)], [].iter()).is_ok());
    }

    #[test]
    fn only_new_pending_pods_are_looked_at_and_finished_ones_free_their_ports() {
        let mut p = with_ports(serde_json::json!([]));
        assert!(needs_admission(&p));
        p.status = serde_json::from_value(serde_json::json!({"phase": "Running"})).expect("status");
        assert!(!needs_admission(&p) && !terminal(&p));
        for phase in ["Succeeded", "Failed"] {
            p.status = serde_json::from_value(serde_json::json!({"phase": phase})).expect("status");
            assert!(terminal(&p));
        }
        let mut deleting = with_ports(serde_json::json!([]));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!needs_admission(&deleting));
    }
}
