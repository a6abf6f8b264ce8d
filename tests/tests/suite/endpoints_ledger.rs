//! sig-network ledger rows on Endpoints, EndpointSlices and hostPorts.
//!
//! C187, C216, C218 and C202 run the endpoint and endpointslice controllers in-process against
//! the in-memory apiserver ([`crate::controllers::harness`]); pods get their IP and readiness by
//! a status patch, as a kubelet would write them. C192 needs real containers: the apiserver,
//! kubelet, scheduler and controller-manager binaries ([`crate::controllers::Cluster`]) with
//! `netexec` pods on published hostPorts, reached from this process on the node's addresses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::eventually;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::controllers::{Cluster, harness};

/// Pod name -> the ports it is listed under, sorted: what upstream's `validateEndpointsPorts`
/// compares.
type PortsByPod = BTreeMap<String, Vec<i32>>;

/// A running, ready pod labelled `labels` with the named container ports, and `ip` as its IP.
async fn ready_pod(pods: &Api<Pod>, name: &str, labels: serde_json::Value, ports: &[(&str, i32)], ip: &str) {
    let ports: Vec<serde_json::Value> =
        ports.iter().map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"})).collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause", "ports": ports}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
}

fn service(name: &str, selector: serde_json::Value, ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"selector": selector, "ports": ports}}))
        .expect("service")
}

/// The ports each pod is listed under in the Service's Endpoints (ready addresses only).
fn endpoints_ports(e: &Endpoints) -> PortsByPod {
    let mut m = PortsByPod::new();
    for s in e.subsets.iter().flatten() {
        for a in s.addresses.iter().flatten() {
            let pod = a.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
            m.entry(pod).or_default().extend(s.ports.iter().flatten().map(|p| p.port));
        }
    }
    m.values_mut().for_each(|v| v.sort());
    m
}

/// The same, from the Service's EndpointSlices.
fn slices_ports(slices: &[EndpointSlice]) -> PortsByPod {
    let mut m = PortsByPod::new();
    for s in slices {
        for e in &s.endpoints {
            let pod = e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
            m.entry(pod).or_default().extend(s.ports.iter().flatten().filter_map(|p| p.port));
        }
    }
    m.values_mut().for_each(|v| v.sort());
    m
}

/// Waits until both the Endpoints and the EndpointSlices of `svc` list exactly `want`.
async fn wait_ports(client: &kube::Client, svc: &str, want: &[(&str, &[i32])]) {
    let want: PortsByPod = want.iter().map(|(p, ports)| (p.to_string(), ports.to_vec())).collect();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let selected = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    eventually(Duration::from_secs(20), &format!("{svc}'s Endpoints and EndpointSlices list {want:?}"), || async {
        let e = endpoints.get_opt(svc).await.ok()??;
        let list = slices.list(&selected).await.ok()?.items;
        // The controller keeps one (empty) slice for a Service that selects nothing.
        (endpoints_ports(&e) == want && slices_ports(&list) == want && !list.is_empty()).then_some(())
    })
    .await;
}

async fn delete_pod(pods: &Api<Pod>, name: &str) {
    pods.delete(name, &DeleteParams::default().grace_period(0)).await.expect("delete pod");
}

/// Ledger C187: for each Service the controllers write an Endpoints and an IPv4 EndpointSlice
/// holding exactly the selected pod, with its IP, node and reference, and the Service's port
/// resolved to the pod's; deleting the Service takes both away.
#[tokio::test]
async fn c187_endpoints_and_endpoint_slices_are_created_for_the_pods_a_service_selects() {
    let h = harness(&["endpoint", "endpointslice", "garbagecollector"]).await;
    let pods = h.pods();
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(h.client.clone(), "default");
    ready_pod(&pods, "pod1", json!({"svc": "one"}), &[("http", 8080)], "10.244.1.11").await;
    ready_pod(&pods, "pod2", json!({"svc": "two"}), &[("http", 8090)], "10.244.1.12").await;
    for (name, target) in [("one", json!(8080)), ("two", json!("http"))] {
        let ports = json!([{"name": "example", "port": 80, "targetPort": target, "protocol": "TCP"}]);
        services.create(&PostParams::default(), &service(name, json!({"svc": name}), ports)).await.expect("service");
    }
    for (svc, pod, ip, pod_port) in [("one", "pod1", "10.244.1.11", 8080), ("two", "pod2", "10.244.1.12", 8090)] {
        wait_ports(&h.client, svc, &[(pod, &[pod_port])]).await;
        let e = endpoints.get(svc).await.expect("endpoints");
        let subset = &e.subsets.as_ref().expect("subsets")[0];
        let address = &subset.addresses.as_ref().expect("addresses")[0];
        assert_eq!((address.ip.as_str(), address.node_name.as_deref()), (ip, Some("n1")));
        let target = address.target_ref.as_ref().expect("targetRef");
        assert_eq!((target.kind.as_deref(), target.namespace.as_deref()), (Some("Pod"), Some("default")));
        let port = &subset.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("example"), pod_port, Some("TCP"))
        );

        let selected = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let list = slices.list(&selected).await.expect("slices").items;
        assert_eq!(list.len(), 1, "{list:?}");
        let slice = &list[0];
        assert_eq!(slice.address_type, "IPv4");
        let labels = slice.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
        let owner = &slice.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Service", svc));
        let ep = &slice.endpoints[0];
        assert_eq!(ep.addresses, [ip]);
        assert_eq!(ep.node_name.as_deref(), Some("n1"));
        assert_eq!(ep.conditions.as_ref().and_then(|c| c.ready), Some(true));
        let sp = &slice.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (sp.name.as_deref(), sp.port, sp.protocol.as_deref()),
            (Some("example"), Some(pod_port), Some("TCP"))
        );
    }

    for svc in ["one", "two"] {
        services.delete(svc, &DeleteParams::default()).await.expect("delete service");
    }
    eventually(Duration::from_secs(20), "both Services' Endpoints and EndpointSlices gone", || async {
        let left_endpoints = endpoints.list(&ListParams::default()).await.ok()?.items;
        let left_slices = slices.list(&ListParams::default()).await.ok()?.items;
        let ours = |name: Option<&str>| matches!(name, Some("one" | "two"));
        let service_of = |s: &EndpointSlice| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str)
                .map(str::to_owned)
        };
        (!left_endpoints.iter().any(|e| ours(e.metadata.name.as_deref()))
            && !left_slices.iter().any(|s| ours(service_of(s).as_deref())))
        .then_some(())
    })
    .await;
}

/// Ledger C216: a Service's Endpoints start empty, list each matching pod's port as pods come,
/// and are empty again once they are gone (checked on the EndpointSlices too, as upstream does).
#[tokio::test]
async fn c216_service_endpoints_follow_the_pods_as_they_come_and_go() {
    let h = harness(&["endpoint", "endpointslice"]).await;
    let pods = h.pods();
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let ports = json!([{"port": 80, "targetPort": 80, "protocol": "TCP"}]);
    services
        .create(&PostParams::default(), &service("endpoint-test2", json!({"app": "e2e"}), ports))
        .await
        .expect("svc");
    wait_ports(&h.client, "endpoint-test2", &[]).await;
    ready_pod(&pods, "pod1", json!({"app": "e2e"}), &[("http", 80)], "10.244.2.11").await;
    wait_ports(&h.client, "endpoint-test2", &[("pod1", &[80])]).await;
    ready_pod(&pods, "pod2", json!({"app": "e2e"}), &[("http", 80)], "10.244.2.12").await;
    wait_ports(&h.client, "endpoint-test2", &[("pod1", &[80]), ("pod2", &[80])]).await;
    delete_pod(&pods, "pod1").await;
    wait_ports(&h.client, "endpoint-test2", &[("pod2", &[80])]).await;
    delete_pod(&pods, "pod2").await;
    wait_ports(&h.client, "endpoint-test2", &[]).await;
}

/// Ledger C218: a two-port Service whose target ports are named lists each pod only under the
/// port its container exposes, with that container's port number.
#[tokio::test]
async fn c218_a_two_port_service_lists_each_pod_under_the_port_it_exposes() {
    let h = harness(&["endpoint", "endpointslice"]).await;
    let pods = h.pods();
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let ports = json!([
        {"name": "portname1", "port": 80, "targetPort": "svc1", "protocol": "TCP"},
        {"name": "portname2", "port": 81, "targetPort": "svc2", "protocol": "TCP"}]);
    services
        .create(&PostParams::default(), &service("multi-endpoint-test", json!({"app": "e2e"}), ports))
        .await
        .expect("svc");
    wait_ports(&h.client, "multi-endpoint-test", &[]).await;
    ready_pod(&pods, "pod1", json!({"app": "e2e"}), &[("svc1", 100)], "10.244.3.11").await;
    wait_ports(&h.client, "multi-endpoint-test", &[("pod1", &[100])]).await;
    ready_pod(&pods, "pod2", json!({"app": "e2e"}), &[("svc2", 101)], "10.244.3.12").await;
    wait_ports(&h.client, "multi-endpoint-test", &[("pod1", &[100]), ("pod2", &[101])]).await;

    // Each port is its own subset and its own slice, with the Service port's name.
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), "default");
    let e = endpoints.get("multi-endpoint-test").await.expect("endpoints");
    let mut subsets: Vec<(String, i32, String)> = e
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| {
            let names: Vec<String> =
                s.addresses.iter().flatten().filter_map(|a| a.target_ref.as_ref()?.name.clone()).collect();
            s.ports.iter().flatten().map(move |p| (p.name.clone().unwrap_or_default(), p.port, names.join(",")))
        })
        .collect();
    subsets.sort();
    assert_eq!(subsets, [("portname1".into(), 100, "pod1".into()), ("portname2".into(), 101, "pod2".into())]);

    delete_pod(&pods, "pod1").await;
    wait_ports(&h.client, "multi-endpoint-test", &[("pod2", &[101])]).await;
    delete_pod(&pods, "pod2").await;
    wait_ports(&h.client, "multi-endpoint-test", &[]).await;
}

/// The `q`-quantile (0..=1) of sorted durations, as upstream's nearest-rank percentile.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Ledger C202: over 100 new Services selecting one ready pod, the time from creating each
/// Service to its Endpoints listing the pod stays under 20 s at p50 and 50 s at p90 (upstream's
/// "Service endpoints latency" thresholds; it creates 200 with 15 in flight).
#[tokio::test]
async fn c202_endpoints_of_100_new_services_appear_within_the_latency_thresholds() {
    const SERVICES: usize = 100;
    const IN_FLIGHT: usize = 15;
    let h = harness(&["endpoint", "endpointslice"]).await;
    let pods = h.pods();
    ready_pod(&pods, "latency-svc", json!({"app": "latency"}), &[("http", 80)], "10.244.4.11").await;

    // First time each Endpoints lists an address, as a watch sees it.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let endpoints: Api<Endpoints> = Api::namespaced(h.client.clone(), "default");
    let watching = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = watcher::watcher(endpoints, watcher::Config::default()).boxed();
            while let Some(ev) = events.next().await {
                let objects = match ev {
                    Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => vec![e],
                    _ => continue,
                };
                let now = Instant::now();
                for e in objects {
                    let has_address = e.subsets.iter().flatten().any(|s| s.addresses.iter().flatten().next().is_some());
                    if let (true, Some(name)) = (has_address, e.metadata.name) {
                        seen.lock().expect("seen").entry(name).or_insert(now);
                    }
                }
            }
        }
    });
    // Let the watch start before the first Service.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    let created: Vec<(String, Instant)> = futures::stream::iter(0..SERVICES)
        .map(|i| {
            let services = services.clone();
            async move {
                let name = format!("latency-svc-{i:03}");
                let ports = json!([{"port": 80, "targetPort": 80, "protocol": "TCP"}]);
                let start = Instant::now();
                services
                    .create(&PostParams::default(), &service(&name, json!({"app": "latency"}), ports))
                    .await
                    .expect("svc");
                (name, start)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let latencies: Vec<Duration> = eventually(Duration::from_secs(120), "every Service's Endpoints", || async {
        let seen = seen.lock().expect("seen");
        created.iter().map(|(name, start)| seen.get(name).map(|t| t.saturating_duration_since(*start))).collect()
    })
    .await;
    watching.abort();

    let mut sorted = latencies;
    sorted.sort();
    let (p50, p90, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.9), percentile(&sorted, 0.99));
    println!("C202: endpoints latency over {SERVICES} Services: p50 {p50:?} p90 {p90:?} p99 {p99:?}");
    assert!(p50 < Duration::from_secs(20), "p50 {p50:?}");
    assert!(p90 < Duration::from_secs(50), "p90 {p90:?}");
}

/// `GET /hostname` on `addr`; `None` until something answers 200.
pub(crate) async fn http_hostname(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(b"GET /hostname HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n").await.ok()?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut reply)).await.ok()?.ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.trim().to_string())
}

/// One `hostname` datagram to `addr` and its answer; `None` after 2 s of silence.
async fn udp_hostname(addr: &str) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.send_to(b"hostname", addr).await.ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// A `netexec` pod publishing container port `container` as `host_ip`:`host_port`/`protocol`.
fn host_port_pod(name: &str, host_ip: &str, host_port: u16, protocol: &str, container: u16) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "netexec", "image": "netexec:1.2",
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": container, "hostPort": host_port, "hostIP": host_ip, "protocol": protocol}]}]}
    }))
    .expect("pod")
}

/// Ledger C192: three pods share one hostPort: TCP on 127.0.0.1, TCP on the node's InternalIP,
/// UDP on the InternalIP. The scheduler puts all three on the one node (no two clash on protocol
/// and address) and each answers on its own address and protocol.
#[tokio::test]
async fn c192_pods_sharing_a_host_port_with_another_host_ip_or_protocol_run_on_one_node_and_each_answers() {
    let c = Cluster::start().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let node = nodes.get(&c.node.name).await.expect("node");
    let node_ip = node
        .status
        .and_then(|s| s.addresses)
        .into_iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .expect("the node's InternalIP");
    assert_ne!(node_ip, "127.0.0.1", "the node needs an address other than loopback");
    let port = e2e::free_port();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let wanted = [
        ("tcp-loopback", "127.0.0.1", "TCP", 8080),
        ("tcp-node-ip", node_ip.as_str(), "TCP", 8080),
        ("udp-node-ip", node_ip.as_str(), "UDP", 8081),
    ];
    for (name, ip, protocol, container) in wanted {
        pods.create(&PostParams::default(), &host_port_pod(name, ip, port, protocol, container)).await.expect("pod");
    }
    for (name, ..) in wanted {
        eventually(Duration::from_secs(90), &format!("{name} running on {}", c.node.name), || async {
            let p = pods.get(name).await.ok()?;
            let on_node = p.spec.as_ref()?.node_name.as_deref() == Some(c.node.name.as_str());
            (on_node && p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    }
    let loopback = format!("127.0.0.1:{port}");
    let on_node_ip = format!("{node_ip}:{port}");
    let answer =
        eventually(Duration::from_secs(30), "tcp-loopback answering on 127.0.0.1", || http_hostname(&loopback)).await;
    assert_eq!(answer, "tcp-loopback");
    let answer =
        eventually(Duration::from_secs(30), "tcp-node-ip answering on the node IP", || http_hostname(&on_node_ip))
            .await;
    assert_eq!(answer, "tcp-node-ip");
    let answer =
        eventually(Duration::from_secs(30), "udp-node-ip answering on the node IP", || udp_hostname(&on_node_ip)).await;
    assert_eq!(answer, "udp-node-ip");
    assert!(udp_hostname(&loopback).await.is_none(), "nothing publishes UDP on 127.0.0.1:{port}");
    c.k.run(&["delete", "pod", "--all", "--timeout=60s"]).ok();
}
