//! The built-in load-balancer controller in-process against the in-memory apiserver: what
//! `kubectl get service` shows as EXTERNAL-IP for `type: LoadBalancer` Services.

use std::time::Duration;

use e2e::eventually;
use k8s_openapi::api::core::v1::{Event, Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

fn lb(name: &str, extra: serde_json::Value) -> Service {
    let mut spec = serde_json::json!({"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

async fn ingress(services: &Api<Service>, name: &str) -> Option<Vec<String>> {
    let s = services.get(name).await.ok()?;
    let ips = s.status?.load_balancer?.ingress.unwrap_or_default().into_iter().filter_map(|i| i.ip).collect();
    Some(ips)
}

#[tokio::test]
async fn load_balancer_services_get_their_own_pool_address_until_the_pool_runs_out() {
    let flags =
        controller_manager::app::Flags { load_balancer_ip_pool: Some("192.0.2.0/30".into()), ..Default::default() };
    let h = crate::controllers::harness_with(&["service-lb-controller"], flags).await;
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    services.create(&PostParams::default(), &lb("a", serde_json::json!({}))).await.expect("a");
    services
        .create(&PostParams::default(), &lb("b", serde_json::json!({"loadBalancerIP": "192.0.2.2"})))
        .await
        .expect("b");
    eventually(Duration::from_secs(10), "a and b balanced", || async {
        let (a, b) = (ingress(&services, "a").await?, ingress(&services, "b").await?);
        (a == ["192.0.2.1"] && b == ["192.0.2.2"]).then_some(())
    })
    .await;
    // The /30 has two usable addresses: a third Service waits, with an event saying why.
    services.create(&PostParams::default(), &lb("c", serde_json::json!({}))).await.expect("c");
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    eventually(Duration::from_secs(10), "SyncLoadBalancerFailed for c", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.iter()
            .any(|e| {
                e.reason.as_deref() == Some("SyncLoadBalancerFailed") && e.involved_object.name.as_deref() == Some("c")
            })
            .then_some(())
    })
    .await;
    assert_eq!(ingress(&services, "c").await, Some(vec![]));
    // a stops being a LoadBalancer: it loses its address and c gets it.
    let to_cluster_ip = serde_json::json!({"spec": {"type": "ClusterIP"}});
    services.patch("a", &PatchParams::default(), &Patch::Merge(&to_cluster_ip)).await.expect("patch");
    eventually(Duration::from_secs(10), "c gets a's address", || async {
        let (a, c) = (ingress(&services, "a").await?, ingress(&services, "c").await?);
        (a.is_empty() && c == ["192.0.2.1"]).then_some(())
    })
    .await;
    // kubectl shows it as the EXTERNAL-IP.
    let k = e2e::kubectl::Kubectl::new(&h.api.endpoint);
    let out = tokio::task::spawn_blocking(move || k.run(&["get", "service", "c", "--no-headers"]).ok().stdout)
        .await
        .expect("kubectl");
    assert!(out.contains("192.0.2.1"), "{out}");
}

#[tokio::test]
async fn without_a_pool_load_balancers_answer_on_the_ready_nodes() {
    let h = crate::controllers::harness(&["service-lb-controller"]).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    for (name, ip) in [("n1", "10.1.0.1"), ("n2", "10.1.0.2")] {
        let node: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("node");
        nodes.create(&PostParams::default(), &node).await.expect("node");
        let status = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");
    }
    let services: Api<Service> = Api::namespaced(h.client.clone(), "default");
    services.create(&PostParams::default(), &lb("web", serde_json::json!({}))).await.expect("web");
    eventually(Duration::from_secs(10), "both nodes", || async {
        (ingress(&services, "web").await? == ["10.1.0.1", "10.1.0.2"]).then_some(())
    })
    .await;
    // A node going NotReady stops being offered.
    let not_ready = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    nodes.patch_status("n2", &PatchParams::default(), &Patch::Merge(&not_ready)).await.expect("status");
    eventually(Duration::from_secs(10), "only n1", || async {
        (ingress(&services, "web").await? == ["10.1.0.1"]).then_some(())
    })
    .await;
}
